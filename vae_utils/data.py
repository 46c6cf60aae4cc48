"""The two datasets of the paper (Section 5), loaded as float32 tensors in [0, 1].

* MNIST: 28x28 = 784 grey levels, divided by 255. 60,000 train / 10,000 test images
  (IDX files). The paper trained on N = 50,000 (the deeplearning.net split, whose
  train part is the first 50,000 of the official train set): pass ``n_train=50000``.
* Frey Face: Roweis' ``frey_rawface.mat`` (``ff``, 560 x 1965 uint8), 20x28 pixels,
  divided by 256 as Kingma's anglepy did (x in [0, 255/256]). The paper never gives a
  train/test split; we follow Kingma's later code: a seeded shuffle, the first 1600 for
  training and the remaining 365 for testing (seed ``FREY_SPLIT_SEED``).

Binarisation of MNIST (paper_spec 2.2, item 10.5): ``None`` feeds grey levels to the
Bernoulli decoder as soft targets (what the 2013/14 code most likely did); ``"static"``
draws one seeded Bernoulli sample per pixel here; ``"dynamic"`` is applied by the trainer,
a fresh draw per minibatch (``binarize_batch``).

Every file is verified against the SHA-256 of its *decompressed* content before use,
so gzipped and plain copies both load. A missing file or a checksum mismatch raises
an error that says which file, where we looked, and what to run.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch

from .records import REPO_ROOT, atomic_write_bytes, check_output_dir, resolve

DEFAULT_DATA_DIR = REPO_ROOT / "data"
DATA_DIR_ENV = "AEVB_DATA_DIR"

# SHA-256 of the decompressed files (as in shared/data/SHA256SUMS.raw).
SHA256 = {
    "mnist/train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "mnist/train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "mnist/t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "mnist/t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    "frey_rawface.mat": "265a83a23adb081755cd3de375509828e690324d1d60f076b8ecebc840d59c64",
}

# Where `python -m vae_utils fetch-data` looks, in order. Each mirror holds the files under
# the relative names above, gzipped (.gz) or plain.
MIRRORS = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
    "frey_face": ["https://cs.nyu.edu/~roweis/data/"],
}

FILES = {
    "mnist": {
        "train": ("mnist/train-images-idx3-ubyte", "mnist/train-labels-idx1-ubyte"),
        "test": ("mnist/t10k-images-idx3-ubyte", "mnist/t10k-labels-idx1-ubyte"),
    },
    "frey_face": {"train": ("frey_rawface.mat",), "test": ("frey_rawface.mat",)},
}
DATASETS = tuple(FILES)
SPLITS = ("train", "test")
BINARIZE = (None, "static", "dynamic")
IMAGE_SHAPE = {"mnist": (28, 28), "frey_face": (28, 20)}  # (height, width) for plotting
X_DIM = {name: h * w for name, (h, w) in IMAGE_SHAPE.items()}  # pixels per image: 784, 560
FREY_SPLIT_SEED = 0
FREY_N_TRAIN = 1600
TRAIN_SIZE = {"mnist": 60_000, "frey_face": FREY_N_TRAIN}
STATIC_BINARIZE_SEED = 1234


class DatasetNotFoundError(FileNotFoundError):
    pass


class ChecksumError(ValueError):
    pass


class DamagedDataError(ChecksumError):
    """A gzipped data file that does not decompress (truncated, flipped bytes): fetch-data replaces it."""


def x_dim(name: str) -> int:
    _check_name(name)
    return X_DIM[name]


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The argument, else $AEVB_DATA_DIR, else ``data/`` in the repository."""
    where = f"data_dir={data_dir!r}"
    if data_dir is None and os.environ.get(DATA_DIR_ENV):
        data_dir, where = os.environ[DATA_DIR_ENV], f"${DATA_DIR_ENV}={os.environ[DATA_DIR_ENV]!r}"
    if data_dir is None:
        return DEFAULT_DATA_DIR
    if not isinstance(data_dir, (str, os.PathLike)) or not str(data_dir).strip() or "\0" in str(data_dir):
        raise TypeError(f"{where} is not allowed: expected a folder path (str or Path) or None "
                        f"(then ${DATA_DIR_ENV}, else {DEFAULT_DATA_DIR})")
    path = resolve(data_dir, "data folder")
    if path.exists() and not path.is_dir():
        raise ValueError(f"{where} is a file, not a folder: point it at the folder holding mnist/ and "
                         f"frey_rawface.mat")
    return path


def _check_name(name: str, split: str | None = None, binarize: str | None = None) -> None:
    for what, value, valid in (("dataset", name, DATASETS), ("split", split, SPLITS + (None,)),
                               ("binarize", binarize, BINARIZE)):
        if not (value is None or isinstance(value, str)):
            raise TypeError(f"{what}={value!r} is not allowed: expected one of "
                            f"{', '.join(repr(v) for v in valid if v is not None)}")
    if name not in FILES:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if binarize not in BINARIZE:
        raise ValueError(f"unknown binarize {binarize!r}; valid values: None, 'static', 'dynamic'")


def _sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _decompress(raw: bytes, source="download") -> bytes:
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DamagedDataError(f"data file {source} is damaged: not a valid gzip ({type(e).__name__}: {e}); it was "
                               f"not used: run `python -m vae_utils fetch-data` to replace it") from None


def read_verified(relname: str, directory: Path) -> bytes:
    """The decompressed bytes of ``relname`` (plain or .gz) after checking its SHA-256."""
    candidates = [directory / relname, directory / (relname + ".gz")]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        dataset = "frey_face" if relname.startswith("frey") else "mnist"
        raise DatasetNotFoundError(
            f"data file {relname!r} not found in {directory} (plain or .gz; the folder comes from the data_dir "
            f"argument, else ${DATA_DIR_ENV}, else {DEFAULT_DATA_DIR}): point {DATA_DIR_ENV} at a folder holding it, "
            f"or run `python -m vae_utils fetch-data --dataset {dataset} --data-dir {directory}`")
    raw = _decompress(path.read_bytes(), path)
    actual = _sha256(raw)
    if actual != SHA256[relname]:
        raise ChecksumError(
            f"checksum mismatch for {path}: expected SHA-256 {SHA256[relname]} of the decompressed "
            f"content, got {actual}. The file is corrupt or a different version and was not used; "
            f"delete it and run `python -m vae_utils fetch-data --data-dir {directory}`."
        )
    return raw


def _parse_idx(raw: bytes) -> np.ndarray:
    # IDX: two zero bytes, a type code (0x08 = uint8), the number of dimensions, then
    # big-endian int32 sizes and the data.
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError("not an IDX uint8 file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _frey_raw(directory: Path) -> np.ndarray:
    import scipy.io

    ff = scipy.io.loadmat(io.BytesIO(read_verified("frey_rawface.mat", directory)))["ff"]
    return np.ascontiguousarray(ff.T)  # (1965, 560), row-major 28 rows of 20 pixels


def frey_split() -> tuple[np.ndarray, np.ndarray]:
    """Indices of the seeded 1600/365 Frey Face split (Kingma's later code, paper silent)."""
    perm = np.random.default_rng(FREY_SPLIT_SEED).permutation(1965)
    return perm[:FREY_N_TRAIN], perm[FREY_N_TRAIN:]


def load_raw(name: str, split: str = "train", *, data_dir: str | os.PathLike | None = None):
    """The stored uint8 pixels (N, D) and, for MNIST, the labels (else None)."""
    _check_name(name, split)
    if split is None:
        raise ValueError(f"split=None is not allowed: expected one of {', '.join(repr(s) for s in SPLITS)}")
    directory = resolve_data_dir(data_dir)
    if name == "mnist":
        images_file, labels_file = FILES[name][split]
        images = _parse_idx(read_verified(images_file, directory))
        labels = _parse_idx(read_verified(labels_file, directory))
        return images.reshape(len(images), -1), labels
    pixels = _frey_raw(directory)
    train_idx, test_idx = frey_split()
    return pixels[train_idx if split == "train" else test_idx], None


def load_dataset(name: str, split: str = "train", *, data_dir: str | os.PathLike | None = None,
                 binarize: str | None = None, n_train: int | None = None) -> torch.Tensor:
    """Float32 tensor (N, D) in [0, 1] for ``name`` in ``mnist`` / ``frey_face``.

    ``n_train`` keeps the first n training points (the paper: 50,000 or 1,000 for MNIST).
    ``binarize="static"`` returns one seeded Bernoulli draw; ``"dynamic"`` returns grey
    levels, which the trainer binarises afresh per minibatch (``binarize_batch``).
    """
    _check_name(name, split, binarize)
    if split is None:
        raise ValueError(f"split=None is not allowed: expected one of {', '.join(repr(s) for s in SPLITS)}")
    if binarize is not None and name != "mnist":
        raise ValueError(f"binarize={binarize!r} only applies to mnist (Bernoulli decoder), not {name}")
    if n_train is not None and (isinstance(n_train, bool) or not isinstance(n_train, int)
                                or not 0 < n_train <= TRAIN_SIZE[name]):
        raise ValueError(f"n_train={n_train!r} is not allowed: expected an integer in 1..{TRAIN_SIZE[name]} "
                         f"or None for {name} (it keeps the first n training points; the test split ignores it)")
    pixels, _ = load_raw(name, split, data_dir=data_dir)
    if n_train is not None and split == "train":
        pixels = pixels[:n_train]
    x = torch.from_numpy(pixels.astype(np.float32)) / (255.0 if name == "mnist" else 256.0)
    if binarize == "static":
        g = torch.Generator().manual_seed(STATIC_BINARIZE_SEED + (split == "test"))
        x = torch.bernoulli(x, generator=g)
    return x


def binarize_batch(x: torch.Tensor, generator: torch.Generator | None = None, *, check: bool = True) -> torch.Tensor:
    """Dynamic binarisation: a fresh Bernoulli draw with the grey levels as probabilities.
    ``check=False`` skips the input checks (the trainer's minibatches, drawn from verified data)."""
    if not check:
        return torch.bernoulli(x, generator=generator)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"x is not allowed: expected a floating tensor of grey levels in [0, 1] (got "
                         f"{getattr(x, 'dtype', type(x).__name__)})")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator={generator!r} is not allowed: expected None or a torch.Generator")
    return torch.bernoulli(x, generator=generator)


def fetch_data(names=DATASETS, *, data_dir: str | os.PathLike | None = None,
               mirrors: dict[str, list[str]] | None = None, timeout: float = 60.0, log=print) -> Path:
    """Download missing files from their public homes, verify them, and store them gzipped.

    A file that already verifies is left alone; a download whose checksum does not match is
    discarded (never written under its final name) and the next mirror is tried.
    """
    mirrors = mirrors or MIRRORS
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"names={names!r} is not allowed: expected a list of dataset names, e.g. ['mnist']")
    directory = resolve_data_dir(data_dir)
    checked = False
    for name in names:
        _check_name(name)
        for relname in sorted({f for files in FILES[name].values() for f in files}):
            try:
                read_verified(relname, directory)
                log(f"ok        {relname} (already present, checksum verified)")
                continue
            except DatasetNotFoundError:
                pass
            except ChecksumError as e:
                log(f"replacing {relname}: {e.args[0].splitlines()[0]}")
            errors = []
            if not checked:  # a download is needed: its folder must take it, before any download
                check_output_dir(directory, "data folder")
                checked = True
            for base in mirrors.get(name, ()):
                raw = None
                for suffix in (".gz", ""):
                    url = base.rstrip("/") + "/" + Path(relname).name + suffix
                    try:
                        with urllib.request.urlopen(url, timeout=timeout) as response:
                            raw = _decompress(response.read(), url)
                        break
                    except (urllib.error.URLError, OSError, DamagedDataError) as e:
                        errors.append(f"{url}: {e}")
                if raw is None:
                    continue
                if _sha256(raw) != SHA256[relname]:
                    errors.append(f"{url}: checksum mismatch (expected {SHA256[relname]}, got {_sha256(raw)}); discarded")
                    continue
                target = directory / (relname + ".gz")
                atomic_write_bytes(target, gzip.compress(raw))  # replaces a damaged .gz in one step
                (directory / relname).unlink(missing_ok=True)  # a damaged plain copy would be read first
                log(f"fetched   {relname} from {url} (checksum verified) -> {target}")
                break
            else:
                raise DatasetNotFoundError(
                    f"could not fetch a verified copy of {relname} ({'; '.join(errors)}): copy the file into "
                    f"{directory} by hand (plain or gzipped) and rerun")
    return directory


__all__ = ["load_dataset", "load_raw", "binarize_batch", "fetch_data", "resolve_data_dir", "frey_split",
           "DatasetNotFoundError", "ChecksumError", "DATASETS", "IMAGE_SHAPE"]
