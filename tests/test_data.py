"""Dataset loading against the facts in shared/data/README.md, and every error path."""

import gzip
import http.server
import shutil
import threading
from functools import partial

import numpy as np
import pytest
import torch

from vae_utils import data as D


def test_mnist_facts(data_dir):
    images, labels = D.load_raw("mnist", "train")
    assert images.shape == (60_000, 784) and images.dtype == np.uint8
    assert list(np.bincount(labels)) == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert list(labels[:10]) == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert images.mean() == pytest.approx(33.318, abs=1e-3)
    test_images, test_labels = D.load_raw("mnist", "test")
    assert test_images.shape == (10_000, 784)
    assert list(np.bincount(test_labels)) == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_tensor_and_options(data_dir):
    x = D.load_dataset("mnist", "train")
    assert x.shape == (60_000, 784) and x.dtype == torch.float32
    assert x.min() == 0.0 and x.max() == 1.0
    assert x.mean().item() * 255 == pytest.approx(33.318, abs=1e-2)
    x50 = D.load_dataset("mnist", "train", n_train=50_000)
    assert torch.equal(x50, x[:50_000])
    xs = D.load_dataset("mnist", "test", binarize="static")
    assert set(xs.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(xs, D.load_dataset("mnist", "test", binarize="static"))  # seeded
    assert abs(xs.mean().item() - D.load_dataset("mnist", "test").mean().item()) < 2e-3
    with pytest.raises(ValueError, match="n_train=70000 is not allowed: expected an integer in 1..60000"):
        D.load_dataset("mnist", "train", n_train=70_000)


def test_frey_face_facts_and_split(data_dir):
    tr, _ = D.load_raw("frey_face", "train")
    te, _ = D.load_raw("frey_face", "test")
    assert tr.shape == (1600, 560) and te.shape == (365, 560)
    allpix = np.concatenate([tr, te])
    assert allpix.min() == 8 and allpix.max() == 238
    assert allpix.mean() == pytest.approx(154.46, abs=0.01)
    a, b = D.frey_split()
    assert len(set(a) | set(b)) == 1965 and not set(a) & set(b)
    x = D.load_dataset("frey_face", "train")
    assert x.shape == (1600, 560) and x.max().item() == pytest.approx(238 / 256)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="unknown dataset 'cifar'; valid names: mnist, frey_face"):
        D.load_dataset("cifar")
    with pytest.raises(ValueError, match="unknown split 'valid'; valid splits: train, test"):
        D.load_dataset("mnist", "valid")
    with pytest.raises(ValueError, match="unknown binarize 'yes'"):
        D.load_dataset("mnist", binarize="yes")


def test_missing_file_says_which_where_and_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv(D.DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(D.DatasetNotFoundError) as e:
        D.load_dataset("mnist", "test")
    msg = str(e.value)
    assert "mnist/t10k-images-idx3-ubyte" in msg and str(tmp_path) in msg
    assert "python -m vae_utils fetch-data" in msg and D.DATA_DIR_ENV in msg


def test_checksum_mismatch_is_refused(tmp_path, data_dir):
    (tmp_path / "mnist").mkdir()
    for f in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        raw = gzip.decompress((data_dir / "mnist" / (f + ".gz")).read_bytes())
        (tmp_path / "mnist" / f).write_bytes(raw)  # plain (not gzipped) copies load too
    assert D.load_dataset("mnist", "test", data_dir=tmp_path).shape == (10_000, 784)
    labels = tmp_path / "mnist" / "t10k-labels-idx1-ubyte"
    raw = bytearray(labels.read_bytes())
    raw[100] ^= 1
    labels.write_bytes(bytes(raw))
    with pytest.raises(D.ChecksumError) as e:
        D.load_dataset("mnist", "test", data_dir=tmp_path)
    msg = str(e.value)
    assert D.SHA256["mnist/t10k-labels-idx1-ubyte"] in msg and D._sha256(bytes(raw)) in msg and str(labels) in msg


@pytest.fixture
def http_mirror(tmp_path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_fetch_data_verifies_downloads(tmp_path, data_dir, http_mirror):
    root, url = http_mirror
    (root / "good").mkdir()
    (root / "bad").mkdir()
    for f in (data_dir / "mnist").glob("*.gz"):
        shutil.copy(f, root / "good" / f.name)
        (root / "bad" / f.name).write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"corrupt"))
    shutil.copy(data_dir / "frey_rawface.mat", root / "good" / "frey_rawface.mat")
    target = tmp_path / "fetched"
    # a mirror serving corrupted files: nothing is written, the error names each failure
    with pytest.raises(D.DatasetNotFoundError, match="checksum mismatch") as e:
        D.fetch_data(["mnist"], data_dir=target, mirrors={"mnist": [f"{url}/bad/"]}, log=lambda *a: None)
    assert "copy the file into" in str(e.value)
    assert not list(target.rglob("*ubyte*"))
    # the corrupted mirror first, then a good one: the good copy is kept, verified
    lines = []
    D.fetch_data(["mnist", "frey_face"], data_dir=target, log=lines.append,
                 mirrors={"mnist": [f"{url}/bad/", f"{url}/good/"], "frey_face": [f"{url}/good/"]})
    assert sum(line.startswith("fetched") for line in lines) == 5
    assert D.load_dataset("mnist", "test", data_dir=target).shape == (10_000, 784)
    assert D.load_dataset("frey_face", data_dir=target).shape == (1600, 560)
    # a second call finds everything present and downloads nothing
    lines.clear()
    D.fetch_data(["mnist"], data_dir=target, mirrors={"mnist": [f"{url}/missing/"]}, log=lines.append)
    assert all(line.startswith("ok") for line in lines) and len(lines) == 4


def test_frey_faces_scaled_by_256_put_a_per_pixel_gaussian_on_the_papers_wake_sleep_plateau(data_dir):
    """An independent Gaussian per pixel, fitted to the training faces (x / 256), scores about 575 nats
    per image on train and 584 on test: the level where the paper's Frey Face wake-sleep curves sit from
    1e6 samples on, within its ±10-nat digitization. A check of the data's scale and split that needs no
    model: a VAE that learns nothing beyond the pixel marginals reaches exactly this."""
    import math

    from vae_utils.plotting import load_paper_curves, paper_value

    train = D.load_dataset("frey_face", "train", data_dir=data_dir).double()
    test = D.load_dataset("frey_face", "test", data_dir=data_dir).double()
    mean, var = train.mean(0), train.var(0, unbiased=False)

    def per_image(x):
        return (-0.5 * ((x - mean) ** 2 / var + torch.log(2 * math.pi * var))).sum(1).mean().item()
    assert abs(per_image(train) - 575.2) < 0.5 and abs(per_image(test) - 584.3) < 0.5
    paper = load_paper_curves()
    plateau = [paper_value(paper, "figure2", "frey_face", 2, "wake_sleep", "train", x) for x in (1e6, 1e7, 1e8)]
    assert all(abs(v - per_image(train)) <= 10 for v in plateau), plateau
