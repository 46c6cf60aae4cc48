"""The training loop: any algorithm of ``algorithms.py`` (AEVB, wake-sleep, Monte Carlo EM)
run to a budget of training samples, with its curve, checkpoints, provenance and verification.

The x axis of the paper's curves is "# training samples evaluated": AEVB and wake-sleep
count M per iteration; Monte Carlo EM counts what ``MCEM.step`` says it touched. The curve is
evaluated at log-spaced sample counts (``eval_schedule``). Adagrad's global step is chosen from
{0.01, 0.02, 0.1} by the training value after a short trial run (Section 5: "performance on the
training set in the first few iterations"; ``choose_lr``).

Each curve point holds the train and test values on the evaluation subsets at the current
parameters and ``train_minibatch_mean``: the mean of the algorithm's own training objective over
the minibatches since the previous point (AEVB: the minibatch bound; wake-sleep: the wake phase's
log p(x, z); MCEM: the chains' log p(x, z)), which is what anglepy's ``loop_va`` logged as its
train value, so it lags the parameters.

A run is identified by its config; its checkpoint (a dict of tensors and plain values,
written atomically) holds everything needed to continue bit-for-bit, RNG included.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import torch
from tqdm.std import tqdm

from . import data as data_mod
from .algorithms import get_algorithm, gradient_of, mcem_samples_per_iteration
from .config import APPLIES_TO, ALGORITHMS, TrainConfig, config_of_record, identity_differences  # users import TrainConfig from here too
from .device import device_provenance, seeded_generator, to_cpu
from .device import resolve as resolve_device
from .models import VAE, build_model
from .records import (CHECKPOINT_DIR, REPO_ROOT, TRAINING_RECORD_KEYS, Interrupted, RecordExistsError, ResultsFileError,
                      RunFailed, atomic_write_bytes, check_output_dir, check_training_record, checkpoint_path, existing_record, keeps_points,
                      provenance, results_path, write_record)

# A run of at least this many optimiser steps compiles its update (compile="auto"): a compile costs
# 2-15 s, the fused update saves about 1 ms per step (the benchmark, results/benchmarks.json).
COMPILE_FROM_STEPS = 20_000

# A captured GPU step hands back its objective as a tensor on the GPU: reading each at once would make
# the CPU wait for the GPU at every step, so the loop reads them together every this many steps, and
# before any evaluation, checkpoint or end (the values, their order and the stop at the first
# non-finite one are those of reading each at once)
READ_EVERY_STEPS = 100


class TrainingDiverged(RunFailed):
    """Non-finite parameters or objective: the run stopped; its last good checkpoint is kept."""


# --- bookkeeping --------------------------------------------------------------------

def save_checkpoint(path: Path, ckpt: dict) -> None:
    import io

    buf = io.BytesIO()
    torch.save(ckpt, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


class CheckpointError(ValueError):
    """A checkpoint that is damaged, not a checkpoint, or of another run: refused before any work."""


class RunLockedError(RuntimeError):
    pass


CHECKPOINT_KEYS = ("config", "lr", "lr_trials", "curve", "run")
RUN_STATE_KEYS = ("model", "algorithm", "rng", "samples_seen", "steps", "train_time")


def load_checkpoint(path: Path) -> dict:
    """A checkpoint dict (tensors and plain values only); a damaged file, a file that is not a
    checkpoint (a results record, say) and one lacking a part are each reported in one line."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder: name a run or its .pt file")
    if path.exists() and not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a regular file (a FIFO or device); it was not used")
    with open(path, "rb") as f:  # OSError (unreadable, missing) reported by the caller
        head = f.read(4)
    if head[:1] in (b"{", b"[") or path.suffix == ".json":
        raise CheckpointError(f"{path} is a JSON record, not a checkpoint: pass the run's name or its "
                              f"checkpoints/<run>.pt file (the file was not used or changed)")
    try:
        ckpt = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # torch reports truncation as e.g. "failed finding central directory"
        first = (str(e).splitlines() or [""])[0][:120]
        why = "an empty file" if path.stat().st_size == 0 else first or "unreadable"
        raise CheckpointError(
            f"checkpoint {path} is damaged or truncated ({type(e).__name__}: {why}); it was "
            f"not used and nothing was overwritten. If it is this run's checkpoint, delete it to restart the run "
            f"from its beginning, or restore a good copy") from None
    if not isinstance(ckpt, dict) or not set(CHECKPOINT_KEYS) <= set(ckpt):
        have = sorted(map(str, ckpt)) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"checkpoint {path} is not a vae_utils checkpoint (it lacks "
                              f"{[k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]}; "
                              f"it holds {have}); it was not used: move it away or pass another")
    missing = [k for k in RUN_STATE_KEYS if not isinstance(ckpt["run"], dict) or k not in ckpt["run"]]
    if missing or not isinstance(ckpt["config"], dict) or "dataset" not in ckpt["config"]:
        raise CheckpointError(f"checkpoint {path} is incomplete (its run state lacks {missing or 'nothing'}, its "
                              f"config {'is' if isinstance(ckpt['config'], dict) else 'is not'} a dict); it was not "
                              f"used: move it away or pass another")
    run, curve = ckpt["run"], ckpt["curve"]
    wrong = [name for name, ok in (
        ("lr", isinstance(ckpt["lr"], (int, float)) and not isinstance(ckpt["lr"], bool) and math.isfinite(ckpt["lr"])
         and ckpt["lr"] > 0),
        ("curve", isinstance(curve, list) and all(isinstance(p, dict) and isinstance(p.get("samples"), int)
                                                  for p in curve)),
        ("run.samples_seen", isinstance(run["samples_seen"], int) and run["samples_seen"] >= 0),
        ("run.steps", isinstance(run["steps"], int) and run["steps"] >= 0),
        ("run.train_time", isinstance(run["train_time"], (int, float))),
        ("run.model", isinstance(run["model"], dict) and all(isinstance(v, torch.Tensor) for v in run["model"].values())),
        ("sessions", isinstance(ckpt.get("sessions", []), list) and all(isinstance(e, dict) and "from_samples" in e
                                                                        for e in ckpt.get("sessions", []))),
    ) if not ok]
    if wrong:
        raise CheckpointError(f"checkpoint {path} holds a malformed {wrong[0]}; it was not used: move it away to "
                              f"restart the run, or restore a good copy")
    return ckpt


class RunLock:
    """One writer per run: an exclusive ``flock`` on ``<checkpoint>.lock``, held while a process
    trains the run. The kernel drops it when the process ends, however it ends, so a killed
    run can always be resumed; a second process that starts the same run is refused with a
    message naming the first."""

    def __init__(self, ckpt_path: Path):
        self.path = Path(str(ckpt_path) + ".lock")
        self.fd = None

    def __enter__(self):
        import fcntl
        import socket

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 500).decode(errors="replace").strip() or "unknown process"
            os.close(fd)
            raise RunLockedError(f"run {self.path.name[:-8]} is already being trained by {holder}; wait for it to "
                                 f"finish (or stop it: the run resumes from its checkpoint)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # releases the lock
            self.fd = None


def eval_schedule(cfg: TrainConfig) -> list[int]:
    """Log-spaced sample counts (multiples of M) at which the curve is evaluated, plus the end."""
    M = cfg.batch_size
    k0 = math.ceil(round(math.log10(cfg.eval_from) * cfg.eval_per_decade, 6))
    k1 = math.floor(round(math.log10(cfg.samples) * cfg.eval_per_decade, 6))
    points = {max(M, round(10 ** (k / cfg.eval_per_decade) / M) * M) for k in range(k0, k1 + 1)}
    return sorted(p for p in points | {cfg.samples} if p <= cfg.samples)


class Run:
    """Data, model, algorithm and RNG of one training run, created fresh or from a checkpoint.

    Everything lives on the run's device (``cfg.device``): the model, the training data (moved
    there once), the generator. The initial weights are drawn on the CPU, so a run starts from the
    same weights on any device; its minibatches and noise come from the device's own generator."""

    def __init__(self, cfg: TrainConfig, lr: float, X_train: torch.Tensor):
        torch.manual_seed(cfg.seed)  # the model's initial weights
        self.cfg, self.lr, self.device = cfg, lr, resolve_device(cfg.device)
        self.model = build_model(cfg, X_train.shape[1]).to(self.device)
        # draws="cpu": the CPU's generator, on any device (on a GPU the CPU run's very draws, copied over)
        self.rng = seeded_generator(cfg.seed, "cpu" if cfg.draws == "cpu" else self.device)
        X_train = X_train.to(self.device)
        compile = cfg.compile is True or (cfg.compile == "auto" and cfg.samples // cfg.batch_size >= COMPILE_FROM_STEPS)
        self.algorithm = get_algorithm(cfg.algorithm)(self.model, X_train, cfg, lr, self.rng, compile=compile)
        self.samples_seen, self.steps, self.train_time = 0, 0, 0.0
        self.devices = [self._where(0)]

    def step(self) -> float | torch.Tensor:
        """One step; its training objective (a tensor on the GPU from a captured step, not yet read)."""
        n, objective = self.algorithm.step()
        self.samples_seen += n
        self.steps += 1
        return objective

    def state_dict(self) -> dict:
        """The run's state with every tensor on the CPU: a checkpoint loads on either device."""
        return to_cpu({"model": self.model.state_dict(), "algorithm": self.algorithm.state_dict(),
                       "rng": self.rng.get_state(), "rng_device": self.rng.device.type, "device": self.device.type,
                       "devices": self.devices,
                       "samples_seen": self.samples_seen, "steps": self.steps, "train_time": self.train_time})

    def load_state_dict(self, d: dict) -> None:
        self.model.load_state_dict(d["model"])
        self.algorithm.load_state_dict(d["algorithm"])
        self.samples_seen, self.steps, self.train_time = d["samples_seen"], d["steps"], d["train_time"]
        saved_on = d.get("device", "cpu")  # checkpoints before the device knob were all made on a CPU
        self.devices = list(d.get("devices", [{"device": saved_on, "from_samples": 0}]))
        if d.get("rng_device", saved_on) == self.rng.device.type:  # (before draws= the generator was the device's)
            self.rng.set_state(d["rng"])
        else:  # another device's generator state means nothing here: a new stream, seeded from the run and the point
            self.rng.manual_seed((self.cfg.seed * 1_000_003 + self.samples_seen) % 2**63)
        where = self._where(self.samples_seen)
        if (where["device"], where.get("draws")) != (self.devices[-1]["device"], self.devices[-1].get("draws")):
            self.devices.append(where)  # another device, or another generator: recorded from here on

    def _where(self, samples: int) -> dict:
        """The run's device from ``samples`` on, and where it draws when that is not the device itself."""
        draws = {"draws": self.rng.device.type} if self.rng.device.type != self.device.type else {}
        return {"device": self.device.type, "from_samples": samples, **draws}

    def parameters_finite(self) -> bool:
        return all(torch.isfinite(p).all() for p in self.model.parameters())


def _drawing(run: Run) -> str:
    """Whose generator a resumed run draws from, in words."""
    if run.rng.device.type != run.device.type:
        return "the CPU's generator" + (", its stream going on" if run.devices[-2].get("draws", run.devices[-2]["device"])
                                        == "cpu" else "")
    return "this device's generator"


def load_data(cfg: TrainConfig):
    X_train = data_mod.load_dataset(cfg.dataset, "train", data_dir=cfg.data_dir, n_train=cfg.n_train,
                                    binarize="static" if cfg.binarize == "static" else None)
    X_test = data_mod.load_dataset(cfg.dataset, "test", data_dir=cfg.data_dir,
                                   binarize="static" if cfg.binarize == "static" else None)
    return X_train, X_test


EVAL_BINARIZE_SEED = 4321


def eval_sets(cfg: TrainConfig, X_train, X_test):
    """The first ``eval_n`` points of each split (a split with fewer is used whole: Frey Face's
    test split, MNIST's N_train = 1000); with dynamic binarisation one seeded draw of them, so
    that every point of a curve scores the same binary images."""
    sets = {"train": X_train[:cfg.eval_n], "test": X_test[:cfg.eval_n]}
    if cfg.binarize == "dynamic":
        g = torch.Generator().manual_seed(EVAL_BINARIZE_SEED)
        sets = {k: data_mod.binarize_batch(v, g) for k, v in sets.items()}
    return sets


def data_on_device(cfg: TrainConfig, device) -> tuple[torch.Tensor, dict]:
    """A run's training images and its curve's evaluation sets (``eval_sets``), on ``device``."""
    X_train, X_test = load_data(cfg)
    sets = {split: X.to(device) for split, X in eval_sets(cfg, X_train, X_test).items()}
    return X_train.to(device), sets


def evaluation_images(cfg, split: str, n: int, data_dir=None) -> torch.Tensor:
    """The first ``n`` images of a split of a run's data (``cfg`` a TrainConfig or its dict),
    binarised as its training curve scores them: what log p(x) estimates are computed on."""
    c = cfg if isinstance(cfg, dict) else dataclasses.asdict(cfg)
    X = data_mod.load_dataset(c["dataset"], split, data_dir=data_dir or c.get("data_dir"), n_train=c["n_train"],
                              binarize="static" if c["binarize"] == "static" else None)[:n]
    if c["binarize"] == "dynamic":
        X = data_mod.binarize_batch(X, torch.Generator().manual_seed(EVAL_BINARIZE_SEED))
    return X


MCEM_TRIAL_PAST_WARMUP = 1  # E+M iterations of MCEM's step-size trial after Adagrad's warm-up (docs/fidelity.md)


def mcem_trial_length(cfg: TrainConfig, n: int) -> int:
    """Training samples of each MCEM step-size trial on ``n`` points: the iterations of Adagrad's
    warm-up (``mcem_warmup`` M-steps, in which the weights do not move and every step of the grid
    scores alike), then ``MCEM_TRIAL_PAST_WARMUP`` more, and at least ``lr_trial_samples``:
    3 iterations, 2.4e6 samples on N = 50,000; 1e5 on N = 1000 at 16,000 per iteration."""
    iterations = math.ceil(cfg.mcem_warmup / cfg.mcem_m_steps) + MCEM_TRIAL_PAST_WARMUP
    return max(cfg.lr_trial_samples, iterations * mcem_samples_per_iteration(cfg, n))


def choose_lr(cfg: TrainConfig, X_train, sets, log) -> tuple[float, dict]:
    """The paper's rule: short trial runs with each global step of the grid, keep the one with
    the best training-set value (Section 5: "performance on the training set in the first few
    iterations"). The trial's length is fixed by the run's identity (``lr_trial_samples``; MCEM
    ``mcem_trial_length``), never by how far this session trains (``cfg.samples``)."""
    scores = {}
    length = mcem_trial_length(cfg, len(X_train)) if cfg.algorithm == "mcem" else cfg.lr_trial_samples
    for lr in cfg.lr_grid:
        trial = Run(dataclasses.replace(cfg, samples=length), lr, X_train)
        diverged = False
        while trial.samples_seen < length and not diverged:
            diverged = not math.isfinite(trial.step())
        score = math.nan if diverged else trial.algorithm.evaluate(sets["train"], "train")
        scores[str(lr)] = score if math.isfinite(score) else None
        log(f"lr trial {lr}: training value {score:.2f} after {trial.samples_seen} samples")
    finite = {float(k): v for k, v in scores.items() if v is not None}
    if not finite:
        raise TrainingDiverged(f"every step size of the grid {cfg.lr_grid} diverged in the trial runs")
    return max(finite, key=finite.get), scores


def rerun_trial(cfg: TrainConfig, log=print) -> tuple[float, dict]:
    """``cfg``'s step-size trial run again from its seed, on its data, device and gradient as
    ``train`` sets them up, nothing written: (the step chosen, each step's training value), what
    ``verify --trial`` compares with a record's ``lr`` and ``lr_trials``."""
    torch.set_num_threads(cfg.threads)
    X_train, sets = data_on_device(cfg, resolve_device(cfg.device))
    if cfg.algorithm in APPLIES_TO["gradient"]:
        cfg = dataclasses.replace(cfg, gradient=gradient_of(cfg))
    return choose_lr(cfg, X_train, sets, log)


def run_config_of(record: dict, path, error=ResultsFileError, **overrides) -> TrainConfig:
    """The run a record (results file or checkpoint) describes, with ``overrides``; a config that
    is not a valid run is refused as ``error`` naming the file."""
    try:
        return config_of_record(record["config"], **overrides)
    except (ValueError, TypeError) as e:
        raise error(f"{path}: its config is not a valid run ({e}); it was not used") from None


def recorded_gradient(algorithm: str, stored: str | None, missing: str = "autograd") -> str:
    """The gradient a record or checkpoint was made with, from the value its config (a record) or
    its ``gradient`` (a checkpoint) stores. Since the by-hand wake-sleep step both store the one
    taken, 'by_hand' or 'autograd'. Before it a record stored what was asked: AEVB 'auto' (by hand
    for estimator B; a record older still stores none and was made with autograd), wake-sleep 'auto'
    (then always autograd); a checkpoint stored none (``missing``: AEVB went on as asked)."""
    if stored in ("by_hand", "autograd"):
        return stored
    if algorithm == "wake_sleep":
        return "autograd"
    if algorithm == "aevb":
        return missing if stored is None else stored
    return "auto"


def recorded_results(cfg: TrainConfig) -> dict | None:
    """The results file of ``cfg``'s name if it records the same run (None if there is none);
    one of another config under that name is refused in one line."""
    path = results_path(cfg)
    record = existing_record(path, f"the results of run {cfg.name!r}",
                             lambda r: identity_differences(r["config"], cfg) if isinstance(r["config"], dict)
                             else {"config": (r["config"], cfg.identity())},
                             "pass another --name, or another --results-dir to train this config there",
                             required=TRAINING_RECORD_KEYS)
    return None if record is None else check_training_record(record, path, ALGORITHMS)


def _keeps_results(cfg: TrainConfig, curve: list) -> callable:
    """A new results record of ``cfg`` may replace an old one only if it is the same run and
    keeps every point of the old curve."""
    return lambda old: (isinstance(old.get("config"), dict) and not identity_differences(old["config"], cfg)
                        and keeps_points(old.get("curve") or [], curve))


class TimeLimitReached(Interrupted):
    """A run stopped at its deadline (``train(deadline=...)``) with a checkpoint: rerun to continue."""


def train(cfg: TrainConfig, *, progress: bool = True, log=print, stop_after_steps: int | None = None,
          on_progress=None, on_point=None, deadline: float | None = None) -> dict:
    """Train (or resume) the run described by ``cfg``; returns and writes its results dict.

    Before any work: a finished results record of the same run at or beyond ``cfg.samples`` is
    returned as it is (nothing is trained or written); a record of another config under the
    name, or one whose checkpoint is gone (it could not be extended without losing it), is
    refused in one line; the output folders are checked writable. A finished record is never
    overwritten except by the same run extended (every curve point kept).

    ``stop_after_steps`` ends the session early as a kill would (used by tests); the
    checkpoint then lets a later call continue. ``on_progress(samples_seen)`` is called after
    every step (a sweep's shared progress bar); ``on_point(point)`` after every curve point, once its
    checkpoint and record are written (a regain checks each point as it comes; what it raises stops
    the run there, nothing lost). While it trains, the process holds the run's
    lock (``RunLock``): a second process starting the same run is refused. Ctrl-C (or SIGTERM) stops at the
    end of the current step, writes a checkpoint and raises ``Interrupted``; so does reaching
    ``deadline`` (a ``time.time()`` value), with ``TimeLimitReached``.
    """
    ckpt_path, recorded, finished = prepare(cfg, log)
    if finished is not None:
        if on_progress is not None:
            on_progress(cfg.samples)
        return finished
    with flush_denormals(), RunLock(ckpt_path):
        stop = {"stop": False}
        return drive(session(cfg, ckpt_path, recorded, stop, progress=progress, log=log,
                             stop_after_steps=stop_after_steps, on_progress=on_progress, on_point=on_point,
                             deadline=deadline), stop)


@contextlib.contextmanager
def flush_denormals():
    """The CPU flushes denormal floats (< 1e-38) to zero while training: they slow the update
    tenfold and their value is nil (no effect on a GPU)."""
    flush = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if flush:
            torch.set_flush_denormal(False)


def prepare(cfg: TrainConfig, log=print) -> tuple[Path, dict | None, dict | None]:
    """The checks before any work on a run: its device exists, its records allow it (see
    ``train``), its folders are writable. Returns (checkpoint path, its results record or None,
    that record when it is finished at or beyond ``cfg.samples``, to be reused as it is)."""
    resolve_device(cfg.device)  # device='cuda' without a GPU: refused in one line before any work
    ckpt_path, out_path = checkpoint_path(cfg), results_path(cfg)
    recorded = recorded_results(cfg)
    if recorded is not None and recorded["finished"] is True and recorded["samples_seen"] >= cfg.samples:
        log(f"{cfg.name}: reusing the finished record {out_path} ({recorded['samples_seen']:,} samples, at or beyond "
            f"the {cfg.samples:,} asked); nothing was trained. To train it again, pass another --results-dir")
        return ckpt_path, recorded, recorded
    if recorded is not None and not ckpt_path.is_file():
        state = "finished" if recorded["finished"] else "unfinished"
        raise RecordExistsError(
            f"{out_path} records run {cfg.name} ({state}, {recorded['samples_seen']:,} samples); continuing it to "
            f"{cfg.samples:,} needs its checkpoint {ckpt_path}, which is missing: restore the checkpoint (a `piece` of "
            f"its budget regains it by re-running the run, checked against the record), or train the run afresh "
            f"elsewhere with another --results-dir (the record is kept)")
    check_output_dir(out_path.parent, "results folder")
    check_output_dir(ckpt_path.parent, "checkpoint folder")
    return ckpt_path, recorded, None


def sessions_of(ckpt: dict, record: dict | None) -> list[dict]:
    """A checkpoint's sessions: each session that trained the run (its code, machine and device),
    from the sample count it started at. A checkpoint from before this list knew only its last
    session's provenance, kept in its record: that one, from an unknown count."""
    return list(ckpt.get("sessions", [{"from_samples": None, "provenance": (record or {}).get("provenance")}]))


def adopt_run(cfg: TrainConfig, source: TrainConfig, log=print) -> int | None:
    """Start run ``cfg`` from the finished run ``source``: the same computation (identity equal)
    kept elsewhere, e.g. another budget's record of it, shorter than ``cfg.samples``. Its
    checkpoint (curve, step size, RNG: everything to continue bit for bit) is copied to ``cfg``'s
    place with a line in its sessions saying where it came from; the source is only read. Only
    where ``cfg`` has neither a checkpoint nor a record (an existing run goes on from its own).
    Returns the samples adopted, or None (with the reason logged) where nothing was adopted."""
    ckpt_path, src_out = checkpoint_path(cfg), results_path(source)
    if ckpt_path.exists() or results_path(cfg).exists():
        return None
    why, record, ckpt = _adoptable(cfg, source)
    if why is not None:
        log(f"{cfg.name}: not started from {src_out}: {why}; it trains from the start")
        return None
    at, where = ckpt["run"]["samples_seen"], src_out.resolve()
    ckpt["sessions"] = sessions_of(ckpt, record)
    ckpt["sessions"].append({"from_samples": at, "adopted_from": str(where.relative_to(REPO_ROOT)
                                                                     if where.is_relative_to(REPO_ROOT) else where)})
    with RunLock(ckpt_path):
        if ckpt_path.exists():  # another process got here first: its run goes on
            return None
        save_checkpoint(ckpt_path, ckpt)
    log(f"{cfg.name}: starts from {src_out} at {at:,} samples (its checkpoint copied; the source is kept as it is)")
    return at


def _adoptable(cfg: TrainConfig, source: TrainConfig) -> tuple[str | None, dict | None, dict | None]:
    """(why ``source`` cannot start ``cfg``, or None; its record; its checkpoint)."""
    src_ckpt, src_out = checkpoint_path(source), results_path(source)
    try:
        record = recorded_results(source)
    except RecordExistsError:  # a record of another computation under this name
        return f"{src_out} is of another computation", None, None
    if record is None or not record["finished"] or not src_ckpt.is_file():
        return f"{src_out} is not a finished record with its checkpoint", record, None
    if record["samples_seen"] >= cfg.samples:
        return f"{src_out} already reaches {record['samples_seen']:,} samples (reuse it there)", record, None
    with RunLock(src_ckpt):  # not while another process writes it
        ckpt = load_checkpoint(src_ckpt)
    diff = identity_differences(ckpt["config"], cfg)
    if diff:
        return f"its checkpoint is of another computation ({diff})", record, None
    if not keeps_points(record["curve"], ckpt["curve"]):
        return "its checkpoint is behind its record", record, None
    return None, record, ckpt


def drive(run_session, stop: dict) -> dict:
    """Step one run's ``session`` to its end; returns its results. The session prepares the run
    (checkpoint, step-size trials: Ctrl-C there interrupts at once, nothing is lost), then asks for
    one step at a time; while it steps, Ctrl-C or SIGTERM only sets ``stop`` (``_stop_between_steps``)."""
    try:
        run = next(run_session)
        with _stop_between_steps(stop):
            while True:
                t0 = time.perf_counter()
                objective = run.step()
                run = run_session.send((objective, time.perf_counter() - t0))
    except StopIteration as done:
        return done.value


class SideBySide:
    """The sessions of several runs driven by one loop (``batched.train_batched``,
    ``together.train_together``): ``start`` loads or starts a run, ``send`` hands it a finished
    step; a run that finishes, diverges, reaches its deadline or is interrupted leaves ``runs``
    and the others go on; ``end`` gives the results in the order given, or says in one line which
    runs were interrupted (each at its checkpoint) or failed."""

    def __init__(self, cfgs: list[TrainConfig], words: str):
        self.cfgs, self.words = cfgs, words  # words: 'batched runs', 'runs trained together'
        self.sessions, self.runs, self.results = {}, {}, {}
        self.failed: dict[str, str] = {}
        self.interrupted: list[str] = []

    def start(self, i: int, run_session) -> None:
        try:
            self.runs[i], self.sessions[i] = next(run_session), run_session
        except StopIteration as done:
            self.results[i] = done.value

    def send(self, i: int, objective, seconds: float) -> None:
        try:
            self.runs[i] = self.sessions[i].send((objective, seconds))
        except StopIteration as done:
            self.results[i] = done.value
            del self.runs[i]
        except TrainingDiverged as e:
            self.failed[self.cfgs[i].name] = str(e)
            del self.runs[i]
        except TimeLimitReached:  # its checkpoint written: None for now (before Interrupted, which it is a kind of)
            self.results[i] = None
            del self.runs[i]
        except Interrupted:  # Ctrl-C or SIGTERM: every run writes its checkpoint before we stop
            self.interrupted.append(self.cfgs[i].name)
            del self.runs[i]

    def end(self, signum) -> list:
        failed = self.failed
        if self.interrupted:
            also = f"; {len(failed)} failed: " + "; ".join(failed.values()) if failed else ""
            raise Interrupted(f"{len(self.interrupted)} {self.words} interrupted, each at its checkpoint "
                              f"({', '.join(self.interrupted)}): rerun the same command to resume them{also}",
                              signum=signum)
        if failed:
            raise RunFailed(f"{len(failed)} of {len(self.cfgs)} {self.words} failed (the others went on): "
                            + "; ".join(failed.values()))
        return [self.results[i] for i in range(len(self.cfgs))]


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C; `kill`, a scheduler or a session ending the job
_LOOPS: list[dict] = []  # the stop flags of the training loops this process runs now (``request_stop``)


def request_stop(signum: int = signal.SIGTERM) -> int:
    """Stop every training loop this process runs now as the signal ``signum`` would, without
    sending one: each at the end of its step, with its checkpoint (a sweep so stops runs it trains
    in threads, where no signal reaches). Returns how many loops were running."""
    for flag in list(_LOOPS):
        flag["stop"] = flag["stop"] or signum
    return len(_LOOPS)


@contextlib.contextmanager
def _stop_between_steps(flag: dict):
    """While the loop runs, Ctrl-C (SIGINT) or SIGTERM only sets ``flag["stop"]`` to the signal's
    number, which the loop reads after each step, so that a step is never cut in half and the
    checkpoint at the interrupt resumes bit for bit. A second Ctrl-C interrupts at once (a person
    who will not wait); SIGTERM while the stop is under way changes nothing (a sweep's parent and
    a session's end may both send one; SIGKILL is what stops at once). A signal the process
    ignores stays ignored (SIGINT in a background job, nohup). Outside the main thread no
    handler is set; ``request_stop`` still reaches the loop."""
    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS} if main else {}
    caught = [s for s, h in previous.items() if h is not None and h is not signal.SIG_IGN]

    def handler(signum, frame):
        if flag["stop"] and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag["stop"] = flag["stop"] or signum

    for s in caught:
        signal.signal(s, handler)
    _LOOPS.append(flag)
    try:
        yield flag
    finally:
        _LOOPS.remove(flag)
        for s in caught:
            signal.signal(s, previous[s])


def stopped_by(flag: dict) -> str:
    """The words for the signal that set ``flag["stop"]``: '' for Ctrl-C, ' (SIGTERM)' for a kill."""
    return "" if flag["stop"] == signal.SIGINT else f" ({signal.Signals(flag['stop']).name})"


def session(cfg: TrainConfig, ckpt_path: Path, recorded: dict | None, interrupt: dict, *, progress=False, log=print,
            stop_after_steps=None, on_progress=None, on_point=None, deadline=None, runs_in_batch: int = 1,
            runs_together: int = 1):
    """One run's training as a generator: it loads or starts the run, then yields the ``Run``
    whenever it needs a step and is sent back ``(objective, seconds)`` once the step is done (by
    ``drive``, or by a batched driver that steps several runs at once); between steps it keeps
    the curve, the checkpoints and the results record. Returns the results dict. The caller
    holds the run's lock and checked its records (``train``). ``runs_in_batch`` and
    ``runs_together`` say how many runs shared its step (``batched``) or its device (``together``)."""
    torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    session = {**provenance(), **device_provenance(device)}  # taken now: the code this process runs is the code at its start
    out_path = results_path(cfg)
    ckpt = load_checkpoint(ckpt_path) if ckpt_path.exists() else None
    if ckpt is not None:
        diff = identity_differences(ckpt["config"], cfg)
        if diff:
            raise CheckpointError(f"checkpoint {ckpt_path} belongs to a different run (field: (checkpoint, now) "
                                  f"{diff}); pass another --name or --checkpoint-dir (the checkpoint is kept)")
        if recorded is not None and not keeps_points(recorded["curve"], ckpt["curve"]):
            raise RecordExistsError(
                f"checkpoint {ckpt_path} is behind the record {out_path} (curve to "
                f"{ckpt['curve'][-1]['samples'] if ckpt['curve'] else 0:,} samples against "
                f"{recorded['samples_seen']:,}); resuming from it would lose recorded points: restore the run's "
                f"latest checkpoint, or train elsewhere with another --results-dir (both files are kept)")
    X_train, sets = data_on_device(cfg, device)  # once: every trial and the run use this copy
    schedule = eval_schedule(cfg)

    if ckpt is not None and cfg.gradient == "auto":  # a run goes on with the gradient it was made with
        cfg = dataclasses.replace(cfg, gradient=recorded_gradient(cfg.algorithm, ckpt.get("gradient"), missing="auto"))
    if cfg.algorithm in APPLIES_TO["gradient"]:  # 'auto' resolved: the record and checkpoint say which gradient
        cfg = dataclasses.replace(cfg, gradient=gradient_of(cfg))
    sessions = sessions_of(ckpt, recorded) if ckpt is not None else []
    if ckpt is not None:
        lr, lr_trials, curve = ckpt["lr"], ckpt["lr_trials"], ckpt["curve"]
        run = Run(cfg, lr, X_train)
        try:
            run.load_state_dict(ckpt["run"])
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise CheckpointError(f"checkpoint {ckpt_path} does not fit run {cfg.name} ({type(e).__name__}: "
                                  f"{(str(e).splitlines() or [''])[0][:160]}); it was not used and is kept: move it "
                                  f"away to restart the run") from None
        log(f"resuming {cfg.name} from {ckpt_path} at {run.samples_seen:,} samples"
            + (f" on {device.type} (the checkpoint was made on {run.devices[-2]['device']}: from here the run draws "
               f"its minibatches and noise from {_drawing(run)})" if run.devices[-1]["from_samples"] == run.samples_seen
               and len(run.devices) > 1 else ""))
    else:
        if cfg.lr == "auto":
            lr, lr_trials = choose_lr(cfg, X_train, sets, log)
            log(f"chosen global step size: {lr}")
        else:
            lr, lr_trials = float(cfg.lr), None
        run, curve = Run(cfg, lr, X_train), []
    # as plain values (torch's version string is a str subclass, which a weights-only checkpoint refuses to load)
    sessions.append({"from_samples": run.samples_seen, "provenance": json.loads(json.dumps(session, default=str)),
                     # trained beside other runs on one device (together.train_together): its time counts theirs too
                     **({"runs_together": runs_together} if runs_together > 1 else {})})

    unread = []  # (objective, step, samples) of the steps whose objective is still a tensor on the GPU

    def diverged(objective: float, step: int, samples: int):
        bar.close()
        raise TrainingDiverged(
            f"{cfg.name}: non-finite training objective ({objective}) at step {step} "
            f"({samples:,} samples, step size {lr}). The last good checkpoint {ckpt_path} is kept "
            f"(curve up to {curve[-1]['samples'] if curve else 0:,} samples); try a smaller --lr.")

    def read(objective: float, step: int, samples: int):
        """A step's objective into the window of the next curve point, or the run stops on it."""
        if not math.isfinite(objective):
            diverged(objective, step, samples)
        window[0], window[1] = window[0] + objective, window[1] + 1

    def read_unread():
        """The objectives still on the GPU, read at once (one wait, counted as training time)."""
        if unread:
            t0 = time.perf_counter()
            values = torch.stack([o for o, _, _ in unread]).tolist()
            run.train_time += time.perf_counter() - t0
            steps = [(step, samples) for _, step, samples in unread]
            unread.clear()
            for v, (step, samples) in zip(values, steps):
                read(v, step, samples)

    def checkpoint():
        read_unread()  # a run that diverged since the last read stops here, before anything is written
        if not run.parameters_finite():  # never overwrite the last good checkpoint with NaNs
            raise TrainingDiverged(f"{cfg.name}: non-finite parameters at step {run.steps}; the last good "
                                   f"checkpoint {ckpt_path} is kept. Try a smaller --lr.")
        save_checkpoint(ckpt_path, {"config": cfg.identity(), "gradient": cfg.gradient, "lr": lr, "lr_trials": lr_trials,
                                    "curve": curve,
                                    "run": run.state_dict(), "window": window, "sessions": sessions})

    def results(finished: bool) -> dict:
        rate = run.samples_seen / run.train_time if run.train_time else None
        return {"name": cfg.name, "algorithm": cfg.algorithm, "metric": run.algorithm.metric,
                "config": cfg.as_record(), "lr": lr, "lr_trials": lr_trials, "seed": cfg.seed,
                "samples_seen": run.samples_seen, "finished": finished, "curve": curve,
                "train_time_s": run.train_time, "samples_per_s": rate, "devices": run.devices,
                # MCEM's x axis: what one iteration counts (the paper does not say; algorithms.mcem_samples_per_iteration)
                **({"samples_per_iteration": run.algorithm.per_iteration} if cfg.algorithm == "mcem" else {}),
                **({"runs_in_batch": runs_in_batch} if runs_in_batch > 1 else {}),  # batched.train_batched
                "provenance": session, "sessions": sessions}

    def write_results(record: dict) -> None:
        write_record(out_path, record, f"the results of run {cfg.name!r}", _keeps_results(cfg, curve),
                     "another process wrote a different run under this name; pass another --name or --results-dir")

    pending = [p for p in schedule if p > (curve[-1]["samples"] if curve else 0)]
    bar = tqdm(total=cfg.samples, initial=run.samples_seen, unit="sample", unit_scale=True, disable=not progress,
               desc=cfg.name, mininterval=1.0 if sys.stderr.isatty() else 30.0, dynamic_ncols=True)
    last_ckpt, steps_this_session = time.time(), 0
    # the training objective's minibatch values since the last curve point, summed and counted: their mean is
    # what anglepy's loop_va logged as the train value (L += _L.mean(); n += 1 ... L /= n), a lagging average;
    # kept in the checkpoint (one from before this field starts the window at the resume)
    window = list(ckpt.get("window", [0.0, 0])) if ckpt is not None else [0.0, 0]
    while run.samples_seen < cfg.samples:
        objective, seconds = yield run
        run.train_time += seconds
        steps_this_session += 1
        if isinstance(objective, torch.Tensor):
            unread.append((objective, run.steps, run.samples_seen))
            if len(unread) >= READ_EVERY_STEPS:
                read_unread()
        else:
            read(objective, run.steps, run.samples_seen)
        bar.update(run.samples_seen - bar.n)
        if on_progress is not None:
            on_progress(run.samples_seen)
        if pending and run.samples_seen >= pending[0]:
            read_unread()
            pending.pop(0)
            point = {"samples": run.samples_seen, "train": run.algorithm.evaluate(sets["train"], "train"),
                     "test": run.algorithm.evaluate(sets["test"], "test"), "train_time_s": round(run.train_time, 2),
                     "train_minibatch_mean": window[0] / window[1] if window[1] else None}
            window[0], window[1] = 0.0, 0
            curve.append(point)
            bar.set_postfix(train=f"{point['train']:.2f}", test=f"{point['test']:.2f}" if point["test"] else "-")
            checkpoint()
            write_results(results(finished=False))
            last_ckpt = time.time()
            if on_point is not None:
                try:
                    on_point(point)
                except BaseException:
                    bar.close()
                    raise
        elif time.time() - last_ckpt > cfg.checkpoint_every_s:
            checkpoint()
            last_ckpt = time.time()
        if stop_after_steps is not None and steps_this_session >= stop_after_steps:
            checkpoint()
            bar.close()
            return results(finished=False)
        if interrupt["stop"]:
            bar.close()
            checkpoint()
            raise Interrupted(f"{cfg.name}: interrupted{stopped_by(interrupt)} at {run.samples_seen:,} samples; checkpoint "
                              f"{ckpt_path} written: rerun the same command to resume", signum=interrupt["stop"])
        if deadline is not None and time.time() >= deadline:
            bar.close()
            checkpoint()
            raise TimeLimitReached(f"{cfg.name}: time limit reached at {run.samples_seen:,} samples; checkpoint "
                                   f"{ckpt_path} written: rerun the same command to continue")
    bar.close()
    checkpoint()
    out = results(finished=True)
    write_results(out)
    log(f"{cfg.name}: {run.samples_seen:,} samples in {run.train_time:.0f} s "
        f"({out['samples_per_s']:.0f} samples/s); final train {curve[-1]['train']:.2f}, test {curve[-1]['test']}")
    return out


def load_trained(name_or_path, data_dir=None) -> tuple[VAE, dict]:
    """The model of a checkpoint, with its config (for evaluation and plotting)."""
    path = Path(name_or_path)
    if not path.exists():
        path = CHECKPOINT_DIR / f"{name_or_path}.pt"
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint {name_or_path!r} (looked for it as a path and in {CHECKPOINT_DIR})")
    ckpt = load_checkpoint(path)
    cfg = ckpt["config"]
    run_config_of(ckpt, f"checkpoint {path}", CheckpointError)
    try:
        model = build_model(cfg, data_mod.x_dim(cfg["dataset"]))
        model.load_state_dict(ckpt["run"]["model"])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path} does not hold a model this code can build ({type(e).__name__}: "
                              f"{(str(e).splitlines() or [''])[0][:160]}); it was not used") from None
    if not all(torch.isfinite(v).all() for v in ckpt["run"]["model"].values() if v.is_floating_point()):
        raise CheckpointError(f"checkpoint {path} holds non-finite (NaN or infinite) weights; it was not used")
    model.eval()
    return model, ckpt
