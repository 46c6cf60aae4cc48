"""Records and places: where outputs go, how a record is read and written, and the rule that
keeps finished results.

    a record at `path` is replaced only by one that keeps everything it holds
        (same computation, every curve point or estimate of the old one still in the new one)

Every writer of a long computation's output (training results, log p(x) estimates, verify
verdicts, Figure-3 curves, decoder images, calibration and benchmark records) goes through
``existing_record`` before any work and ``write_record`` at every write: a record of another
computation under the same path is refused in one line, a finished one of the same computation
is reused, and a write that would drop something is refused. Writes are atomic (a temporary
file in the same folder, fsynced, then renamed; removed on any failure, Ctrl-C included), and
output folders are checked writable before any compute (``check_output_dir``).

Errors: ``RecordError`` (a ``ValueError``) and its kinds are refusals before work (exit 2 at
the command line); ``RunFailed`` and its kinds are failures after work began (exit 1);
``describe_os_error`` turns an ``OSError`` into one line naming the path and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "results"
CHECKPOINT_DIR = REPO_ROOT / "checkpoints"
FIGURES_DIR = REPO_ROOT / "figures"
# the estimators measured against quadrature on Figure 3's models (``likelihood_studies.ais_calibration``):
# the error every Figure-3 verdict is weighed against, whatever the budget
AIS_CALIBRATION = RESULTS_DIR / "quick" / "ais_calibration.json"


# --- errors -----------------------------------------------------------------------------

class RecordError(ValueError):
    """Refused before any work: nothing was computed and nothing was written."""


class ResultsFileError(RecordError):
    """A record file that is damaged or is not the kind of record asked for."""


class RecordExistsError(RecordError):
    """A record of another computation (or one this write would not keep) is at the path."""


class OutputPathError(RecordError):
    """An output folder or file that cannot be written."""


class RunFailed(RuntimeError):
    """A run that started and then failed (exit 1); what it had written before is intact."""


class WriteFailed(RunFailed):
    """A write that failed (a full disk, a vanished folder): the file's previous version is intact."""


class Interrupted(RunFailed):
    """Ctrl-C or SIGTERM: the run stopped at a consistent point (exit 128 + the signal's number:
    130 for Ctrl-C, 143 for SIGTERM)."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = int(signum)


_ADVICE = {
    errno.ENOSPC: "free some space and rerun",
    errno.EDQUOT: "free some space (disk quota) and rerun",
    errno.EFBIG: "the file system or the process's file-size limit refuses a file this large",
    errno.EACCES: "choose a place you may read and write, or change its permissions",
    errno.EPERM: "choose a place you may read and write, or change its permissions",
    errno.EROFS: "the file system is read-only: choose another folder",
    errno.ENAMETOOLONG: "a name is too long for the file system: choose a shorter name or folder",
    errno.ENOTDIR: "a file stands where a folder is wanted: choose another path or move the file",
    errno.EEXIST: "a file stands where a folder is wanted: choose another path or move the file",
    errno.EISDIR: "a folder stands where a file is wanted: name a file",
    errno.ENOENT: "it does not exist: check the path",
    errno.EIO: "input/output error: the disk may be failing",
}


def describe_os_error(e: OSError) -> str:
    """One line: the path(s), the system's words and what to do."""
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    what = e.strerror or str(e) or type(e).__name__
    advice = _ADVICE.get(e.errno)
    return f"{where + ': ' if where else ''}{what}" + (f" ({advice})" if advice else "")


# --- places -----------------------------------------------------------------------------

def _name_max(directory: Path) -> int:
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def resolve(path, what: str = "path") -> Path:
    """``path`` with ~ expanded and symlinks resolved; a loop or an unknown home is refused in one line."""
    try:
        return Path(path).expanduser().resolve()
    except (RuntimeError, OSError) as e:
        raise OutputPathError(f"{what} {path} cannot be resolved ({e}); pass another") from None


def check_output_dir(directory, what: str = "output folder") -> Path:
    """Create ``directory`` if need be and prove it writable (a probe file), before any compute."""
    d = resolve(directory, what)
    if d.exists() and not d.is_dir():
        raise OutputPathError(f"{what} {d} is a file, not a folder: name a folder (or move the file); nothing was "
                              f"computed")
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=d, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputPathError(f"{what} {d} cannot be written: {describe_os_error(e)}; nothing was computed") from None
    return d


def check_output_file(path, what: str = "output file") -> Path:
    """A file path whose folder is writable and whose name the file system accepts."""
    p = resolve(path, what)
    if p.exists() and not p.is_dir():
        regular_file(p, what)
    if p.is_dir():
        raise OutputPathError(f"{what} {p} is a folder: name a file (e.g. {p / 'record.json'}); nothing was computed")
    check_output_dir(p.parent, f"the folder of the {what}")
    limit = _name_max(p.parent)
    if len(os.fsencode(p.name)) > limit:
        raise OutputPathError(f"{what} name {p.name[:40]}... is {len(os.fsencode(p.name))} bytes, more than the "
                              f"{limit} the file system allows: choose a shorter name; nothing was computed")
    return p


def _run_of(cfg):
    if not all(hasattr(cfg, k) for k in ("name", "results_dir", "checkpoint_dir")):
        raise TypeError(f"cfg={cfg!r} is not allowed: expected a TrainConfig")
    return cfg


def checkpoint_path(cfg) -> Path:
    """A run's checkpoint: ``<checkpoint_dir>/<name>.pt`` (default checkpoints/)."""
    cfg = _run_of(cfg)
    return (Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else CHECKPOINT_DIR) / f"{cfg.name}.pt"


def results_path(cfg) -> Path:
    """A run's results record: ``<results_dir>/<name>.json`` (default results/)."""
    cfg = _run_of(cfg)
    return (Path(cfg.results_dir) if cfg.results_dir else RESULTS_DIR) / f"{cfg.name}.json"


# --- reading ----------------------------------------------------------------------------

MAX_RECORD_BYTES = 256 * 2**20  # a record is a few MB at most; a larger "record" is something else


def regular_file(path, what: str = "file") -> Path:
    """``path`` if it is a regular file of a sane size (not a folder, FIFO, device, or huge)."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise ResultsFileError(f"{what} {path} is not a regular file (a folder, FIFO or device); it was not used: "
                               f"name a file")
    if path.is_file() and path.stat().st_size > MAX_RECORD_BYTES:
        raise ResultsFileError(f"{what} {path} is {path.stat().st_size / 2**20:.0f} MB, too large to be one of this "
                               f"package's records; it was not used")
    return path


def read_json(path):
    """A JSON file; a damaged one (truncated, not JSON) is reported with its path and remedy."""
    path = regular_file(path, "record")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, ValueError) as e:
        e = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise ResultsFileError(f"results file {path} is damaged or not a record ({e}); it was not used (if it is "
                               f"one of this package's records, delete it to recompute it; a run's checkpoint, if "
                               f"present, is reused)") from None


def read_record(path, what: str, required=()) -> dict:
    """A JSON object holding at least the keys ``required``; anything else is refused in one line."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise ResultsFileError(f"{path} is not {what}: it holds a JSON {type(data).__name__}, not an object; it was "
                               f"not used")
    missing = [k for k in required if k not in data]
    if missing:
        raise ResultsFileError(f"{path} is not {what}: it lacks {', '.join(repr(k) for k in missing)}; it was not used")
    return data


TRAINING_RECORD_KEYS = ("name", "algorithm", "config", "lr", "curve", "finished", "samples_seen", "provenance")


def read_training_record(path, algorithms=()) -> dict:
    """A training results file (``results/<run>.json``, as ``train`` writes it); any other JSON
    (``{}``, a list, a record without a curve) is refused in one line naming what it lacks."""
    return check_training_record(read_record(path, "a training results file (results/<run>.json)",
                                             TRAINING_RECORD_KEYS), path, algorithms)


def check_training_record(r: dict, path, algorithms=()) -> dict:
    """The value types of a training record (and, given ``algorithms``, its algorithm's name):
    a wrong one is refused in one line."""
    curve_ok = isinstance(r.get("curve"), list) and r["curve"] and all(
        isinstance(p, dict) and {"samples", "train", "test"} <= set(p) and isinstance(p["samples"], int)
        and all(v is None or (isinstance(v, (int, float)) and math.isfinite(v)) for v in (p["train"], p["test"]))
        for p in r["curve"])
    if not curve_ok:
        raise ResultsFileError(f"{path} is not a training results file: its curve is empty or malformed (each point "
                               f"needs an integer samples and finite numeric train and test); it was not used")
    kinds = {"config": dict, "provenance": dict, "finished": bool, "samples_seen": int, "algorithm": str}
    for key, kind in kinds.items():
        if key in r and not isinstance(r[key], kind):
            raise ResultsFileError(f"{path} is not a training results file: its {key} is {r[key]!r}, not a "
                                   f"{kind.__name__}; it was not used")
    if algorithms and r.get("algorithm") not in algorithms:
        raise ResultsFileError(f"{path}: unknown algorithm {r.get('algorithm')!r}; expected one of {', '.join(algorithms)}")
    return r


# --- writing ----------------------------------------------------------------------------

def _write_all(f, payload: bytes) -> None:
    f.write(payload)


def atomic_write_bytes(path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` whole or not at all; on any failure the temporary file is
    removed and the previous version of ``path`` is untouched."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:64]}.", suffix=".tmp")
    except OSError as e:
        raise WriteFailed(f"could not write {path}: {describe_os_error(e)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            _write_all(f, payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise WriteFailed(f"could not write {path}: {describe_os_error(e)}; its previous version, if any, is "
                              f"intact") from None
        raise


def atomic_write_json(path, obj) -> None:
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=1, default=str) + "\n").encode())


def as_json(obj):
    """``obj`` as a JSON record holds it (tuples as lists, paths as strings)."""
    return json.loads(json.dumps(obj, default=str))


def differences(record: dict, wanted: dict) -> dict:
    """{key: (recorded, wanted)} for each key of ``wanted`` the record holds otherwise."""
    if not isinstance(record, dict):
        return {"record": (type(record).__name__, "an object")}
    want = as_json(wanted)
    return {k: (record.get(k), v) for k, v in want.items() if record.get(k) != v}


def _first(diff: dict) -> str:
    k, (old, new) = next(iter(diff.items()))
    show = lambda v: repr(v) if len(repr(v)) <= 60 else repr(v)[:57] + "..."  # noqa: E731
    more = f" and {len(diff) - 1} more" if len(diff) > 1 else ""
    return f"{k}: recorded {show(old)}, now {show(new)}{more}"


def existing_record(path, what: str, diff: Callable[[dict], dict], remedy: str, required=()) -> dict | None:
    """Before any work: the record at ``path`` if it is of the same computation (``diff(record)``
    empty), to reuse or extend; None when there is none. A record of another computation is
    refused in one line that says it is kept and how to compute elsewhere (``remedy``)."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{path} is a folder where {what} is to be written: name a file; nothing was computed")
    if not path.exists():
        return None
    regular_file(path, what)
    record = read_record(path, what, required)
    d = diff(record)
    if d:
        raise another_computation(path, what, d, remedy)
    return record


def another_computation(path, what: str, diff: dict, remedy: str) -> RecordExistsError:
    """The one-line refusal of a record at ``path`` that holds another computation than this one."""
    return RecordExistsError(f"{path} already holds {what} of another computation ({_first(diff)}); it is kept and "
                             f"nothing was computed: {remedy}")


def write_record(path, record: dict, what: str, keeps: Callable[[dict], bool] | None = None, remedy: str = "") -> None:
    """Write ``record`` atomically unless the record already at ``path`` holds something it would
    lose: ``keeps(old)`` must say the new record keeps all of it (None: only where none exists)."""
    path = Path(path)
    if path.exists():
        old = read_record(path, what)
        if keeps is None or not keeps(old):
            raise RecordExistsError(f"{path} already holds {what} that this write would lose; it is kept and "
                                    f"nothing was written" + (f": {remedy}" if remedy else ""))
    atomic_write_json(path, record)


def save_once(path, record: dict, identity_keys, what: str, log=print) -> dict:
    """Write a one-shot record (a notebook's checks) unless one of the same computation (the same
    ``identity_keys`` values) is already there: that one is kept and returned; one of another
    computation is refused. Returns the record now at ``path``."""
    missing = [k for k in identity_keys if k not in record]
    if missing:
        raise ValueError(f"identity_keys {missing} are not in the record; expected keys of it")
    identity = {k: record[k] for k in identity_keys}
    old = existing_record(path, what, lambda r: differences(r, identity),
                          "write to another output folder (output_dir)")
    if old is not None:
        made = old.get("provenance") if isinstance(old.get("provenance"), dict) else {}
        log(f"kept {path}: it already records this computation (made {made.get('date', '?')})")
        return old
    write_record(path, record, what)
    return as_json(record)


def keeps_points(old_points, new_points) -> bool:
    """Every point of an old curve is in the new one, unchanged."""
    new = {json.dumps(p, sort_keys=True) for p in as_json(new_points)}
    return all(json.dumps(p, sort_keys=True) in new for p in as_json(old_points))


# --- provenance -------------------------------------------------------------------------

def provenance() -> dict:
    """Commit, library versions and machine of this run."""
    import numpy
    import scipy
    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"git_commit": commit, "git_dirty": dirty, "python": sys.version.split()[0],
            "torch": torch.__version__, "numpy": numpy.__version__, "scipy": scipy.__version__,
            "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            **machine(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def machine() -> dict:
    """What decides floating-point results on a CPU: its model and vector capability, the BLAS
    and oneDNN builds torch uses, and the thread count (reductions split differently)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    config = torch.__config__.show()
    blas = next((ln.strip(" -") for ln in config.splitlines() if "Math Kernel Library" in ln or "OpenBLAS" in ln),
                torch.backends.mkl.is_available() and "MKL" or "unknown")
    onednn = next((ln.strip(" -") for ln in config.splitlines() if "DNN v" in ln), "none")
    return {"cpu_model": cpu, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "blas": blas,
            "onednn": onednn, "torch_threads": torch.get_num_threads()}


__all__ = ["REPO_ROOT", "RESULTS_DIR", "CHECKPOINT_DIR", "FIGURES_DIR", "checkpoint_path", "results_path", "RecordError", "ResultsFileError",
           "RecordExistsError", "OutputPathError", "RunFailed", "WriteFailed", "Interrupted", "describe_os_error",
           "check_output_dir", "check_output_file", "read_json", "read_record", "read_training_record", "atomic_write_bytes",
           "atomic_write_json", "existing_record", "write_record", "save_once", "keeps_points", "differences", "provenance",
           "machine"]
