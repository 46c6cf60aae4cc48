"""Algorithm 1 of the paper (AEVB), and the loop that wake-sleep and Monte Carlo EM share.

Algorithm 1 (minibatch AEVB), with the paper's settings (Section 5, paper_spec 2):
    repeat
        X^M <- M = 100 datapoints drawn at random (with replacement, as anglepy did)
        eps <- L = 1 draw from N(0, I) per datapoint
        g   <- grad_{theta,phi} [ sum_i L^B(theta, phi; x_i, eps_i) + (M/N) log p(theta) ]
        theta, phi <- Adagrad update with g (ascent)
    until the budget of training samples is spent
The gradient is (M/N) times the gradient of eq. 8 plus the log-prior (approximate MAP);
Adagrad is insensitive to that constant. Adagrad follows anglepy: the accumulator of
squared gradients fills for the first 100 steps before any parameter moves; its global
step is chosen from {0.01, 0.02, 0.1} by the training bound after a short trial run.

The x axis of the paper's curves is "# training samples evaluated": AEVB and wake-sleep
count M per iteration; Monte Carlo EM counts what ``MCEM.step`` says it touched.

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
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.std import tqdm

from . import data as data_mod
from . import checks
from .checks import is_kind
from .estimators import get_estimator, lower_bound
from .models import VAE, build_model

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "results"
CHECKPOINT_DIR = REPO_ROOT / "checkpoints"
ALGORITHMS = ("aevb", "wake_sleep", "mcem")
PAPER_N_TRAIN = {"mnist": 50_000, "frey_face": None}


@dataclass
class TrainConfig:
    # what is trained
    dataset: str = "mnist"
    algorithm: str = "aevb"          # aevb | wake_sleep | mcem
    n_z: int = 20
    n_hidden: int = 500
    n_train: int | None = None       # None: the paper's 50,000 for MNIST, the 1600 split for Frey
    binarize: str | None = None      # None (grey levels) | "static" | "dynamic"
    # AEVB
    estimator: str = "B"             # SGVB estimator, eq. 6 (A) or eq. 7 (B)
    batch_size: int = 100            # M
    n_samples: int = 1               # L
    weight_prior: bool = True        # the N(0, I) prior on weight matrices
    # Adagrad
    lr: float | str = "auto"         # a global step, or "auto": the paper's grid search
    lr_grid: tuple = (0.01, 0.02, 0.1)
    lr_trial_samples: int = 100_000
    adagrad_warmup: int = 100
    adagrad_eps: float = 1e-8
    # budget and evaluation
    samples: int = 1_000_000         # training samples evaluated (the paper's x axis)
    eval_per_decade: int = 4
    eval_from: int = 10_000
    eval_n: int = 10_000             # datapoints of each split used for the curve
    seed: int = 0
    # wake-sleep
    ws_logvar_scale: float = 1.0     # anglepy's recognition net used 0.1
    # Monte Carlo EM
    mcem_leapfrog: int = 10
    mcem_target_accept: float = 0.9
    mcem_init_step: float = 0.01
    mcem_m_steps: int = 5
    mcem_warmup: int = 10
    # bookkeeping (not part of a run's identity)
    name: str | None = None
    threads: int = 1
    checkpoint_every_s: float = 60.0
    data_dir: str | None = None
    results_dir: str | None = None
    checkpoint_dir: str | None = None

    RUNTIME_FIELDS = ("name", "samples", "threads", "checkpoint_every_s", "data_dir", "results_dir", "checkpoint_dir")

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {self.algorithm!r}; valid: {', '.join(ALGORITHMS)}")
        data_mod._check_name(self.dataset, binarize=self.binarize)
        get_estimator(self.estimator)
        if self.binarize is not None and self.dataset != "mnist":
            raise ValueError(f"binarize={self.binarize!r} is not allowed with dataset={self.dataset!r}: binarisation "
                             f"applies to MNIST's Bernoulli decoder only (Frey Face is continuous)")
        if isinstance(self.lr, str) and self.lr != "auto":
            try:
                self.lr = float(self.lr)
            except ValueError:
                raise ValueError(f"lr={self.lr!r} is not allowed: expected 'auto' or a positive number") from None
        for name in ("samples", "lr_trial_samples", "eval_from"):  # counts may be given as 1e6
            v = getattr(self, name)
            if isinstance(v, float) and math.isfinite(v) and v == int(v):
                setattr(self, name, int(v))
        self.lr_grid = tuple(self.lr_grid)
        for name, (kind, ok, allowed) in _CONFIG_RULES.items():
            checks.check(name, getattr(self, name), kind, ok, allowed)
        if self.n_train is None:
            self.n_train = PAPER_N_TRAIN[self.dataset]
        limit = data_mod.TRAIN_SIZE[self.dataset]
        if self.n_train is not None and not (is_kind(self.n_train, int) and 1 <= self.n_train <= limit):
            raise ValueError(f"n_train={self.n_train!r} is not allowed: expected an integer in 1..{limit} for {self.dataset}"
                             f" (or None for the paper's)")
        if self.name is None:
            self.name = (f"{self.algorithm}_{self.dataset}_nz{self.n_z}_h{self.n_hidden}"
                         f"_{self.binarize or 'grey'}_n{self.n_train or 'all'}_seed{self.seed}")
        elif not isinstance(self.name, str) or not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"name={self.name!r} is not allowed: expected a non-empty file name without '/'")

    def identity(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in self.RUNTIME_FIELDS}


# field: (type, check, what is allowed) -- every value of a TrainConfig is refused in one line
_CONFIG_RULES = {
    "n_z": (int, lambda v: v >= 1, "an integer >= 1 (latent dimensions)"),
    "n_hidden": (int, lambda v: v >= 1, "an integer >= 1 (hidden units)"),
    "batch_size": (int, lambda v: v >= 1, "an integer >= 1 (minibatch size M)"),
    "n_samples": (int, lambda v: v >= 1, "an integer >= 1 (samples L per datapoint)"),
    "weight_prior": (bool, lambda v: True, "True or False"),
    "lr": ((str, float, int), lambda v: v == "auto" or (is_kind(v, float) and v > 0), "'auto' or a positive number"),
    "lr_grid": (tuple, lambda v: len(v) > 0 and all(is_kind(x, float) and x > 0 for x in v),
                "a non-empty tuple of positive numbers"),
    "lr_trial_samples": (int, lambda v: v >= 1, "a positive number of training samples"),
    "adagrad_warmup": (int, lambda v: v >= 0, "an integer >= 0 (steps)"),
    "adagrad_eps": (float, lambda v: v > 0, "a positive number"),
    "samples": (int, lambda v: v >= 1, "a positive number of training samples (e.g. 1e6)"),
    "eval_per_decade": (int, lambda v: v >= 1, "an integer >= 1"),
    "eval_from": (int, lambda v: v >= 1, "a positive number of training samples"),
    "eval_n": (int, lambda v: v >= 1, "an integer >= 1 (datapoints per split for the curve)"),
    "seed": (int, lambda v: v >= 0, "an integer >= 0"),
    "ws_logvar_scale": (float, lambda v: v > 0, "a positive number"),
    "mcem_leapfrog": (int, lambda v: v >= 1, "an integer >= 1 (leapfrog steps)"),
    "mcem_target_accept": (float, lambda v: 0 < v < 1, "a number in (0, 1)"),
    "mcem_init_step": (float, lambda v: v > 0, "a positive number"),
    "mcem_m_steps": (int, lambda v: v >= 1, "an integer >= 1"),
    "mcem_warmup": (int, lambda v: v >= 0, "an integer >= 0"),
    "threads": (int, lambda v: v >= 1, "an integer >= 1"),
    "checkpoint_every_s": (float, lambda v: v > 0, "a positive number of seconds"),
}


class TrainingDiverged(RuntimeError):
    pass


class Adagrad:
    """torch.optim.Adagrad with anglepy's warm-up: the accumulator fills for ``warmup`` steps
    before parameters move (the learning rate is held at 0 meanwhile)."""

    def __init__(self, params, lr: float, warmup: int, eps: float):
        self.opt = torch.optim.Adagrad(params, lr=lr, eps=eps)
        self.lr, self.warmup, self.t = lr, warmup, 0

    def ascend(self, objective: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        (-objective).backward()
        for group in self.opt.param_groups:
            group["lr"] = 0.0 if self.t < self.warmup else self.lr
        self.opt.step()
        self.t += 1

    def state_dict(self):
        return {"opt": self.opt.state_dict(), "t": self.t}

    def load_state_dict(self, d):
        self.opt.load_state_dict(d["opt"])
        self.t = d["t"]


class Minibatches:
    """Random minibatches of M indices drawn with replacement (anglepy), binarised per draw
    when dynamic binarisation is on."""

    def __init__(self, X: torch.Tensor, cfg: TrainConfig, rng: torch.Generator):
        self.X, self.M, self.rng = X, cfg.batch_size, rng
        self.dynamic = cfg.binarize == "dynamic"

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return data_mod.binarize_batch(x, self.rng) if self.dynamic else x

    def __next__(self) -> torch.Tensor:
        return self.prepare(self.X[torch.randint(len(self.X), (self.M,), generator=self.rng)])


class AEVB:
    """Algorithm 1: one joint Adagrad ascent step on the SGVB minibatch estimator."""

    metric = "lower bound (SGVB B, L=1)"

    def __init__(self, model: VAE, X: torch.Tensor, cfg: TrainConfig, lr: float, rng: torch.Generator):
        self._setup(model, X, cfg, rng)
        self.estimator = get_estimator(cfg.estimator)
        self.opt = Adagrad(model.parameters(), lr, cfg.adagrad_warmup, cfg.adagrad_eps)

    def _setup(self, model: VAE, X: torch.Tensor, cfg: TrainConfig, rng: torch.Generator) -> None:
        """What every algorithm of the loop holds: model, config, RNG, N and its minibatches."""
        self.model, self.cfg, self.rng, self.N = model, cfg, rng, len(X)
        self.batches = Minibatches(X, cfg, rng)

    def log_prior_term(self, params=None) -> torch.Tensor:
        if not self.cfg.weight_prior:
            return torch.zeros(())
        return self.cfg.batch_size / self.N * self.model.log_weight_prior(params)  # (M/N) log p(theta)

    def step(self) -> tuple[int, float]:
        x = next(self.batches)
        bound = self.estimator(self.model, x, self.cfg.n_samples, self.rng)
        self.opt.ascend(bound.sum() + self.log_prior_term())
        return len(x), bound.mean().item()

    def evaluate(self, X: torch.Tensor | None, split: str) -> float | None:
        return None if X is None else lower_bound(self.model, X, "B", seed=1000)

    def state_dict(self):
        return {"opt": self.opt.state_dict()}

    def load_state_dict(self, d):
        self.opt.load_state_dict(d["opt"])


def get_algorithm(name: str):
    from .baselines import MCEM, WakeSleep

    return {"aevb": AEVB, "wake_sleep": WakeSleep, "mcem": MCEM}[name]


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
        self.algorithm = get_algorithm(cfg.algorithm)(self.model, X_train, cfg, lr, self.rng)
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
    with RunLock(checkpoint_path(cfg)):
        return _train(cfg, checkpoint_path(cfg), progress=progress, log=log, stop_after_steps=stop_after_steps,
                      on_progress=on_progress)


def _train(cfg: TrainConfig, ckpt_path: Path, *, progress, log, stop_after_steps, on_progress) -> dict:
    torch.set_num_threads(cfg.threads)
    session = provenance()  # taken now: the code this process runs is the code at its start
    out_path = results_path(cfg)
    X_train, X_test = load_data(cfg)
    sets = eval_sets(cfg, X_train, X_test)
    schedule = eval_schedule(cfg)

    if ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        if ckpt["config"] != cfg.identity():
            diff = {k: (ckpt["config"].get(k), v) for k, v in cfg.identity().items() if ckpt["config"].get(k) != v}
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
