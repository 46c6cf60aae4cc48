"""The training loop: any algorithm of ``algorithms.py`` (AEVB, wake-sleep, Monte Carlo EM)
run to a budget of training samples, with its curve, checkpoints, provenance and verification.

The x axis of the paper's curves is "# training samples evaluated": AEVB and wake-sleep
count M per iteration; Monte Carlo EM counts what ``MCEM.step`` says it touched. The curve is
evaluated at log-spaced sample counts (``eval_schedule``). Adagrad's global step is chosen from
{0.01, 0.02, 0.1} by the training value after a short trial run (Section 5: "performance on the
training set in the first few iterations"; ``choose_lr``).

A run is identified by its config; its checkpoint (a dict of tensors and plain values,
written atomically) holds everything needed to continue bit-for-bit, RNG included.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from tqdm.std import tqdm

from . import data as data_mod
from .algorithms import get_algorithm
from .config import TrainConfig, identity_differences  # users import TrainConfig from here too
from .models import VAE, build_model

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "results"
CHECKPOINT_DIR = REPO_ROOT / "checkpoints"
# A run of at least this many optimiser steps compiles its update (compile="auto"): a compile costs
# 2-15 s, the fused update saves about 1 ms per step (the benchmark, results/benchmarks.json).
COMPILE_FROM_STEPS = 20_000


class TrainingDiverged(RuntimeError):
    pass


# --- bookkeeping --------------------------------------------------------------------

def checkpoint_path(cfg: TrainConfig) -> Path:
    return (Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else CHECKPOINT_DIR) / f"{cfg.name}.pt"


def results_path(cfg: TrainConfig) -> Path:
    return (Path(cfg.results_dir) if cfg.results_dir else RESULTS_DIR) / f"{cfg.name}.json"


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name + ".", delete=False) as tmp:
        tmp.write(payload)
        tmp.flush()
        os.fsync(tmp.fileno())
    os.chmod(tmp.name, 0o644)  # NamedTemporaryFile creates 0600
    os.replace(tmp.name, path)


class ResultsFileError(ValueError):
    pass


def read_json(path) -> dict:
    """A results file; a damaged one (truncated, not JSON) is reported with its path and remedy."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultsFileError(f"results file {path} is damaged ({type(e).__name__}: {e}); it was not used. Delete "
                               f"it to recompute it (a run's checkpoint, if present, is reused)") from None


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=1, default=str) + "\n").encode())


def save_checkpoint(path: Path, ckpt: dict) -> None:
    import io

    buf = io.BytesIO()
    torch.save(ckpt, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


class CheckpointError(RuntimeError):
    pass


class RunLockedError(RuntimeError):
    pass


def load_checkpoint(path: Path) -> dict:
    """A checkpoint dict (tensors and plain values only); a damaged file is reported with its path."""
    try:
        ckpt = torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # torch reports truncation as e.g. "failed finding central directory"
        raise CheckpointError(
            f"checkpoint {path} is damaged or truncated ({type(e).__name__}: {str(e).splitlines()[0][:120]}); it was "
            f"not used and nothing was overwritten. Delete it to restart the run from its beginning, or restore a "
            f"good copy") from None
    if not isinstance(ckpt, dict) or not {"config", "run"} <= set(ckpt):
        raise CheckpointError(f"checkpoint {path} is not a vae_utils checkpoint (keys: "
                              f"{sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__}); delete or move it")
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


def provenance() -> dict:
    """Commit, library versions and machine of this run."""
    import numpy
    import scipy

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


def eval_schedule(cfg: TrainConfig) -> list[int]:
    """Log-spaced sample counts (multiples of M) at which the curve is evaluated, plus the end."""
    M = cfg.batch_size
    k0 = math.ceil(round(math.log10(cfg.eval_from) * cfg.eval_per_decade, 6))
    k1 = math.floor(round(math.log10(cfg.samples) * cfg.eval_per_decade, 6))
    points = {max(M, round(10 ** (k / cfg.eval_per_decade) / M) * M) for k in range(k0, k1 + 1)}
    return sorted(p for p in points | {cfg.samples} if p <= cfg.samples)


class Run:
    """Data, model, algorithm and RNG of one training run, created fresh or from a checkpoint."""

    def __init__(self, cfg: TrainConfig, lr: float, X_train: torch.Tensor):
        torch.manual_seed(cfg.seed)  # the model's initial weights
        self.cfg, self.lr = cfg, lr
        self.model = build_model(cfg, X_train.shape[1])
        self.rng = torch.Generator().manual_seed(cfg.seed)
        compile = cfg.compile is True or (cfg.compile == "auto" and cfg.samples // cfg.batch_size >= COMPILE_FROM_STEPS)
        self.algorithm = get_algorithm(cfg.algorithm)(self.model, X_train, cfg, lr, self.rng, compile=compile)
        self.samples_seen, self.steps, self.train_time = 0, 0, 0.0

    def step(self) -> float:
        n, objective = self.algorithm.step()
        self.samples_seen += n
        self.steps += 1
        return objective

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "algorithm": self.algorithm.state_dict(),
                "rng": self.rng.get_state(), "samples_seen": self.samples_seen, "steps": self.steps,
                "train_time": self.train_time}

    def load_state_dict(self, d: dict) -> None:
        self.model.load_state_dict(d["model"])
        self.algorithm.load_state_dict(d["algorithm"])
        self.rng.set_state(d["rng"])
        self.samples_seen, self.steps, self.train_time = d["samples_seen"], d["steps"], d["train_time"]

    def parameters_finite(self) -> bool:
        return all(torch.isfinite(p).all() for p in self.model.parameters())


def load_data(cfg: TrainConfig):
    X_train = data_mod.load_dataset(cfg.dataset, "train", data_dir=cfg.data_dir, n_train=cfg.n_train,
                                    binarize="static" if cfg.binarize == "static" else None)
    X_test = data_mod.load_dataset(cfg.dataset, "test", data_dir=cfg.data_dir,
                                   binarize="static" if cfg.binarize == "static" else None)
    return X_train, X_test


EVAL_BINARIZE_SEED = 4321


def eval_sets(cfg: TrainConfig, X_train, X_test):
    """The first ``eval_n`` points of each split; with dynamic binarisation one seeded draw of
    them, so that every point of a curve scores the same binary images."""
    sets = {"train": X_train[:cfg.eval_n], "test": X_test[:cfg.eval_n]}
    if cfg.binarize == "dynamic":
        g = torch.Generator().manual_seed(EVAL_BINARIZE_SEED)
        sets = {k: data_mod.binarize_batch(v, g) for k, v in sets.items()}
    return sets


def evaluation_images(cfg, split: str, n: int, data_dir=None) -> torch.Tensor:
    """The first ``n`` images of a split of a run's data (``cfg`` a TrainConfig or its dict),
    binarised as its training curve scores them: what log p(x) estimates are computed on."""
    c = cfg if isinstance(cfg, dict) else dataclasses.asdict(cfg)
    X = data_mod.load_dataset(c["dataset"], split, data_dir=data_dir or c.get("data_dir"), n_train=c["n_train"],
                              binarize="static" if c["binarize"] == "static" else None)[:n]
    if c["binarize"] == "dynamic":
        X = data_mod.binarize_batch(X, torch.Generator().manual_seed(EVAL_BINARIZE_SEED))
    return X


def choose_lr(cfg: TrainConfig, X_train, sets, log) -> tuple[float, dict]:
    """The paper's rule: short trial runs with each global step of the grid, keep the one with
    the best training-set value (Section 5: "performance on the training set in the first few
    iterations")."""
    scores = {}
    length = cfg.lr_trial_samples
    if cfg.algorithm == "mcem":  # "the first few iterations": at least 4 E+M iterations past the warm-up
        per_iteration = len(X_train) + cfg.mcem_m_steps * cfg.batch_size
        length = max(length, min((4 + math.ceil(cfg.mcem_warmup / cfg.mcem_m_steps)) * per_iteration, cfg.samples))
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


def train(cfg: TrainConfig, *, progress: bool = True, log=print, stop_after_steps: int | None = None,
          on_progress=None) -> dict:
    """Train (or resume) the run described by ``cfg``; returns and writes its results dict.

    ``stop_after_steps`` ends the session early as a kill would (used by tests); the
    checkpoint then lets a later call continue. ``on_progress(samples_seen)`` is called after
    every step (a sweep's shared progress bar). While it trains, the process holds the run's
    lock (``RunLock``): a second process starting the same run is refused.
    """
    flush = torch.set_flush_denormal(True)  # denormal floats (< 1e-38) slow the update tenfold; their value is nil
    try:
        with RunLock(checkpoint_path(cfg)):
            return _train(cfg, checkpoint_path(cfg), progress=progress, log=log, stop_after_steps=stop_after_steps,
                          on_progress=on_progress)
    finally:
        if flush:
            torch.set_flush_denormal(False)


def _train(cfg: TrainConfig, ckpt_path: Path, *, progress, log, stop_after_steps, on_progress) -> dict:
    torch.set_num_threads(cfg.threads)
    session = provenance()  # taken now: the code this process runs is the code at its start
    out_path = results_path(cfg)
    X_train, X_test = load_data(cfg)
    sets = eval_sets(cfg, X_train, X_test)
    schedule = eval_schedule(cfg)

    if ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        diff = identity_differences(ckpt["config"], cfg)
        if diff:
            raise ValueError(f"checkpoint {ckpt_path} belongs to a different run (field: (checkpoint, now) {diff}); "
                             f"pass another --name or delete the checkpoint")
        lr, lr_trials, curve = ckpt["lr"], ckpt["lr_trials"], ckpt["curve"]
        run = Run(cfg, lr, X_train)
        run.load_state_dict(ckpt["run"])
        log(f"resuming {cfg.name} from {ckpt_path} at {run.samples_seen:,} samples")
    else:
        if cfg.lr == "auto":
            lr, lr_trials = choose_lr(cfg, X_train, sets, log)
            log(f"chosen global step size: {lr}")
        else:
            lr, lr_trials = float(cfg.lr), None
        run, curve = Run(cfg, lr, X_train), []

    def checkpoint():
        if not run.parameters_finite():  # never overwrite the last good checkpoint with NaNs
            raise TrainingDiverged(f"{cfg.name}: non-finite parameters at step {run.steps}; the last good "
                                   f"checkpoint {ckpt_path} is kept. Try a smaller --lr.")
        save_checkpoint(ckpt_path, {"config": cfg.identity(), "lr": lr, "lr_trials": lr_trials, "curve": curve,
                                    "run": run.state_dict()})

    def results(finished: bool) -> dict:
        rate = run.samples_seen / run.train_time if run.train_time else None
        return {"name": cfg.name, "algorithm": cfg.algorithm, "metric": run.algorithm.metric,
                "config": dataclasses.asdict(cfg), "lr": lr, "lr_trials": lr_trials, "seed": cfg.seed,
                "samples_seen": run.samples_seen, "finished": finished, "curve": curve,
                "train_time_s": run.train_time, "samples_per_s": rate, "provenance": session}

    pending = [p for p in schedule if p > (curve[-1]["samples"] if curve else 0)]
    bar = tqdm(total=cfg.samples, initial=run.samples_seen, unit="sample", unit_scale=True, disable=not progress,
               desc=cfg.name, mininterval=1.0 if sys.stderr.isatty() else 30.0, dynamic_ncols=True)
    last_ckpt, steps_this_session, running = time.time(), 0, None
    while run.samples_seen < cfg.samples:
        t0 = time.perf_counter()
        objective = run.step()
        run.train_time += time.perf_counter() - t0
        steps_this_session += 1
        if not math.isfinite(objective):
            bar.close()
            raise TrainingDiverged(
                f"{cfg.name}: non-finite training objective ({objective}) at step {run.steps} "
                f"({run.samples_seen:,} samples, step size {lr}). The last good checkpoint {ckpt_path} is kept "
                f"(curve up to {curve[-1]['samples'] if curve else 0:,} samples); try a smaller --lr.")
        running = objective if running is None else 0.99 * running + 0.01 * objective
        bar.update(run.samples_seen - bar.n)
        if on_progress is not None:
            on_progress(run.samples_seen)
        if pending and run.samples_seen >= pending[0]:
            pending.pop(0)
            point = {"samples": run.samples_seen, "train": run.algorithm.evaluate(sets["train"], "train"),
                     "test": run.algorithm.evaluate(sets["test"], "test"), "train_time_s": round(run.train_time, 2)}
            curve.append(point)
            bar.set_postfix(train=f"{point['train']:.2f}", test=f"{point['test']:.2f}" if point["test"] else "-")
            checkpoint()
            atomic_write_json(out_path, results(finished=False))
            last_ckpt = time.time()
        elif time.time() - last_ckpt > cfg.checkpoint_every_s:
            checkpoint()
            last_ckpt = time.time()
        if stop_after_steps is not None and steps_this_session >= stop_after_steps:
            checkpoint()
            bar.close()
            return results(finished=False)
    bar.close()
    checkpoint()
    out = results(finished=True)
    atomic_write_json(out_path, out)
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
    x_dim = 784 if cfg["dataset"] == "mnist" else 560
    model = build_model(cfg, x_dim)
    model.load_state_dict(ckpt["run"]["model"])
    model.eval()
    return model, ckpt


# Largest curve difference (nats per datapoint) that floating-point noise alone produces when a
# run is repeated with another reduction order, measured by ``measure_float_noise`` (each
# committed run re-run for 2e5 samples at 1 and at 2 threads; results/verify_float_noise.json):
# AEVB 2.7e-5 (MNIST; Frey Face identical), wake-sleep 0.036, MCEM 0.28. The tolerance is ten
# times that. Wake-sleep and MCEM amplify rounding: once one sampled dream pixel or one HMC
# accept decision flips, the trajectories part, so their curves drift by hundredths to tenths of
# a nat while remaining the same computation.
VERIFY_TOLERANCE = {"aevb": 3e-4, "wake_sleep": 0.4, "mcem": 3.0}


def compare_curves(recorded: list[dict], rerun: list[dict], tolerance: float) -> dict:
    """Verdict on two curves: 'identical' (every bit), 'agrees within <tol>' (largest difference
    within the floating-point tolerance) or 'differs'; with the largest difference."""
    old = {p["samples"]: p for p in recorded}
    pairs = [(old[p["samples"]], p) for p in rerun if p["samples"] in old]
    diffs = [abs(a[k] - b[k]) for a, b in pairs for k in ("train", "test") if a[k] is not None and b[k] is not None]
    largest = max(diffs, default=math.inf)
    if not pairs:
        verdict = "differs"
    elif all(a[k] == b[k] for a, b in pairs for k in ("train", "test")):
        verdict = "identical"
    elif largest <= tolerance:
        verdict = f"agrees within {tolerance:g}"
    else:
        verdict = "differs"
    return {"verdict": verdict, "largest_difference": largest, "points_compared": len(pairs), "tolerance": tolerance}


def _rerun(recorded: dict, samples: int, data_dir, threads: int = 1) -> dict:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    c = {k: v for k, v in recorded["config"].items() if k in fields}
    c.setdefault("gradient", "autograd")  # a record from before the by-hand AEVB step: the arithmetic that made it
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(**{**c, "lr": recorded["lr"], "samples": samples, "name": "verify", "threads": threads,
                             "results_dir": tmp, "checkpoint_dir": tmp, "data_dir": data_dir})
        return train(cfg, progress=False, log=lambda *a: None)


def verify_run(results_path, samples: int = 200_000, data_dir=None, log=print) -> dict:
    """Re-run the start of a recorded run with today's code and compare its curve.

    The recorded step size is used (the grid trials start from the same seed, so the
    trajectory is the same). The verdict is 'identical' when every curve point agrees to the
    last bit, 'agrees within X' when the largest difference is within ``VERIFY_TOLERANCE``
    (floating-point noise of another CPU, BLAS build or thread count), else 'differs'.
    """
    results_path = Path(results_path)
    recorded = read_json(results_path)
    rerun = _rerun(recorded, samples, data_dir)
    cmp = compare_curves(recorded["curve"], rerun["curve"], VERIFY_TOLERANCE[recorded["algorithm"]])
    out = {"run": recorded["name"], "recorded_commit": recorded["provenance"]["git_commit"], "samples": samples,
           **cmp, "identical": cmp["verdict"] == "identical",
           "recorded_machine": {k: recorded["provenance"].get(k) for k in ("cpu_model", "blas", "onednn", "torch_threads",
                                                                            "processor")},
           "comparison": [{"samples": p["samples"], "rerun": (p["train"], p["test"])} for p in rerun["curve"]],
           "provenance": rerun["provenance"]}
    atomic_write_json(results_path.with_name(results_path.stem + "_verify.json"), out)
    log(f"{recorded['name']}: {cmp['points_compared']} curve points up to {samples:,} samples: {cmp['verdict']} "
        f"(largest difference {cmp['largest_difference']:.3g} nat) with the code at {rerun['provenance']['git_commit']}")
    return out


def measure_float_noise(results_path, samples: int = 200_000, data_dir=None) -> dict:
    """The same recorded run re-run at 1 and at 2 threads (another reduction order, as another
    CPU or BLAS build would give): the largest curve difference floating-point noise causes."""
    recorded = read_json(results_path)
    one, two = (_rerun(recorded, samples, data_dir, threads) for threads in (1, 2))
    return {"run": recorded["name"], "algorithm": recorded["algorithm"], "samples": samples,
            **compare_curves(one["curve"], two["curve"], math.inf), "provenance": two["provenance"]}
