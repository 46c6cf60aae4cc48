"""What a training run is: its config, one visible block of knobs (nanoGPT-style).

Every field is checked when the config is made (``_CONFIG_RULES``); a bad value is refused in
one line naming the field and what is allowed. A run is identified by ``identity()``: every
field except the runtime ones (name, budget, threads, compilation, device, paths), which change how
and where a run is computed but not what it computes, and except the knobs of another algorithm
(``APPLIES_TO``). A record written before a field existed counts as the value the code then had
(``RECORDED_BEFORE``), which is the default unless the default changed since.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

from . import checks
from . import data as data_mod
from .checks import is_kind
from .device import DEVICES
from .estimators import get_estimator
from .records import REPO_ROOT

ALGORITHMS = ("aevb", "wake_sleep", "mcem")
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed and numpy take seeds below 2^64; JSON and papermill any int
MAX_NAME_BYTES = 200  # a run's files add up to 13 bytes ("<name>.json.<8>.tmp") to the file system's 255
MAX_LR = 1e6  # Adagrad's global step: far above any useful one (the paper's grid is {0.01, 0.02, 0.1}) and finite in float32
MAX_THREADS = os.cpu_count() or 1  # more threads than cores only slow a run (and a million of them crash OpenMP)
PAPER_N_TRAIN = {"mnist": 50_000, "frey_face": None}


# the folders a run reads and writes: runtime fields, written relative to the repository in records (as_record)
PATH_FIELDS = ("data_dir", "results_dir", "checkpoint_dir")


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
    eval_n: int = 10_000             # datapoints of each split used for the curve (at most: a smaller split is used whole)
    seed: int = 0
    # wake-sleep
    ws_logvar_scale: float = 1.0     # anglepy's recognition net used 0.1
    # Monte Carlo EM
    mcem_leapfrog: int = 10
    mcem_target_accept: float = 0.9
    mcem_init_step: float = 0.01
    mcem_m_steps: int = 5
    mcem_warmup: int = 10
    mcem_step_rule: str = "capped"   # step x or / 1.25 (anglepy 2014) | "uncapped2013": 1.02 ** N (anglepy 2013)
    mcem_m_step: str = "full_batch"  # anglepy's step_batch_mcem: 5 Adagrad steps on all N | "minibatch": on minibatches of M
    # bookkeeping (not part of a run's identity)
    name: str | None = None
    threads: int = 1
    compile: bool | str = "auto"     # torch.compile the optimiser update: True | False | "auto" (long runs)
    gradient: str = "auto"           # "by_hand" | "autograd" | "auto" (by hand where written: AEVB with estimator B,
                                     # MNIST wake-sleep; algorithms.gradient_of)
    checkpoint_every_s: float = 60.0
    device: str = "auto"             # "cpu" | "cuda" | "auto" (the GPU when torch finds one)
    draws: str = "device"            # the step's draws (minibatches, noise; wake-sleep's dreams) from the device's
                                     # generator, or "cpu": from the CPU's (on a GPU the CPU run's very draws, copied
                                     # over; a CPU checkpoint goes on); steps with their gradient by hand only
    data_dir: str | None = None
    results_dir: str | None = None
    checkpoint_dir: str | None = None

    RUNTIME_FIELDS = ("name", "samples", "threads", "compile", "gradient", "checkpoint_every_s", "device", "draws",
                      "data_dir", "results_dir", "checkpoint_dir")

    def __post_init__(self):
        if not isinstance(self.algorithm, str) or self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {self.algorithm!r}; valid: {', '.join(ALGORITHMS)}")
        data_mod._check_name(self.dataset, binarize=self.binarize)
        get_estimator(self.estimator)
        if self.binarize is not None and self.dataset != "mnist":
            raise ValueError(f"binarize={self.binarize!r} is not allowed with dataset={self.dataset!r}: binarisation "
                             f"applies to MNIST's Bernoulli decoder only (Frey Face is continuous)")
        if self.gradient == "by_hand" and self.estimator != "B":
            raise ValueError(f"gradient='by_hand' is written for estimator B only; estimator={self.estimator!r} "
                             f"needs gradient='autograd' or 'auto'")
        if isinstance(self.lr, str) and self.lr != "auto":
            try:
                self.lr = float(self.lr)
            except ValueError:
                raise ValueError(f"lr={self.lr!r} is not allowed: expected 'auto' or a positive number") from None
        for name in ("samples", "lr_trial_samples", "eval_from"):  # counts may be given as 1e6
            v = getattr(self, name)
            if isinstance(v, float) and math.isfinite(v) and v == int(v):
                setattr(self, name, int(v))
        if not isinstance(self.lr_grid, (tuple, list)):
            raise TypeError(f"lr_grid={self.lr_grid!r} is not allowed: expected a non-empty tuple of positive numbers "
                            f"(the global step sizes tried, e.g. (0.01, 0.02, 0.1))")
        self.lr_grid = tuple(self.lr_grid)
        for name, (kind, ok, allowed) in _CONFIG_RULES.items():
            checks.check(name, getattr(self, name), kind, ok, allowed)
        for name, algorithms in APPLIES_TO.items():  # a knob of another algorithm is refused, not ignored
            default = _DEFAULTS[name]
            if self.algorithm not in algorithms and getattr(self, name) != default:
                raise ValueError(f"{name}={getattr(self, name)!r} does not apply to algorithm={self.algorithm!r} "
                                 f"(only to {' and '.join(algorithms)}); leave it at its default {default!r}")
        if self.gradient == "by_hand" and self.algorithm == "wake_sleep" and not written_by_hand(self):
            raise ValueError(f"gradient='by_hand' is written for wake-sleep with MNIST's Bernoulli decoder and "
                             f"ws_logvar_scale=1 only (here dataset={self.dataset!r}, ws_logvar_scale="
                             f"{self.ws_logvar_scale!r}); use gradient='autograd' or 'auto'")
        if self.draws == "cpu" and (self.gradient == "autograd" or not written_by_hand(self)):
            raise ValueError(f"draws='cpu' is written for the steps with their gradient by hand (AEVB with estimator "
                             f"B; wake-sleep on MNIST with ws_logvar_scale=1); algorithm={self.algorithm!r}, dataset="
                             f"{self.dataset!r}, estimator={self.estimator!r}, gradient={self.gradient!r} needs "
                             f"draws='device'")
        if self.draws == "cpu" and self.binarize == "dynamic":
            raise ValueError("draws='cpu' is not allowed with binarize='dynamic' (the binarisation draws on the run's "
                             "device); use draws='device' or binarize=None or 'static'")
        if self.n_train is None:
            self.n_train = PAPER_N_TRAIN[self.dataset]
        limit = data_mod.TRAIN_SIZE[self.dataset]
        if self.n_train is not None and not (is_kind(self.n_train, int) and 1 <= self.n_train <= limit):
            raise ValueError(f"n_train={self.n_train!r} is not allowed: expected an integer in 1..{limit} for {self.dataset}"
                             f" (or None for the paper's)")
        if self.name is None:  # batch MCEM (the default) is named apart from the online variant's earlier runs
            stem = "mcem_batch" if self.algorithm == "mcem" and self.mcem_m_step == "full_batch" else self.algorithm
            self.name = (f"{stem}_{self.dataset}_nz{self.n_z}_h{self.n_hidden}"
                         f"_{self.binarize or 'grey'}_n{self.n_train or 'all'}_seed{self.seed}")
        elif (not isinstance(self.name, str) or not self.name or self.name.startswith(".")
              or any(c in self.name for c in "/\\") or not self.name.isprintable() or self.name != self.name.strip()
              or len(self.name.encode()) > MAX_NAME_BYTES):
            raise ValueError(f"name={self.name!r} is not allowed: expected a file name of 1-{MAX_NAME_BYTES} bytes, "
                             f"printable, without '/', '\\', a leading '.' or surrounding spaces")
        for name in PATH_FIELDS:
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (str, os.PathLike)) or not str(v).strip()
                                  or any(c in str(v) for c in "\0\n\r")):
                raise TypeError(f"{name}={v!r} is not allowed: expected a folder path (a non-empty str or Path "
                                f"without NUL or line breaks) or None")

    def as_record(self) -> dict:
        """Every field, as a record holds it: a folder inside the repository written relative to it
        (``results/paper``), so that a committed record names no machine's paths (``config_of_record``
        reads it back against the repository); one outside it kept as given."""
        fields = dataclasses.asdict(self)
        for k in PATH_FIELDS:
            if fields[k] is not None and Path(fields[k]).is_absolute():
                inside = Path(fields[k]).resolve()
                fields[k] = inside.relative_to(REPO_ROOT).as_posix() if inside.is_relative_to(REPO_ROOT) else str(fields[k])
        return fields

    def identity(self) -> dict:
        """What the run computes: every field but the runtime ones and the knobs of other algorithms."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k not in self.RUNTIME_FIELDS and self.algorithm in APPLIES_TO.get(k, (self.algorithm,))}


# field: (type, check, what is allowed) -- every value of a TrainConfig is refused in one line
# where a run draws its minibatches and noise (TrainConfig.draws)
DRAWS = ("device", "cpu")

_CONFIG_RULES = {
    "n_z": (int, lambda v: v >= 1, "an integer >= 1 (latent dimensions)"),
    "n_hidden": (int, lambda v: v >= 1, "an integer >= 1 (hidden units)"),
    "batch_size": (int, lambda v: v >= 1, "an integer >= 1 (minibatch size M)"),
    "n_samples": (int, lambda v: v >= 1, "an integer >= 1 (samples L per datapoint)"),
    "weight_prior": (bool, lambda v: True, "True or False"),
    "lr": ((str, float, int), lambda v: v == "auto" or (is_kind(v, float) and 0 < v <= MAX_LR),
           f"'auto' or a positive number up to {MAX_LR:g}"),
    "lr_grid": (tuple, lambda v: len(v) > 0 and all(is_kind(x, float) and 0 < x <= MAX_LR for x in v),
                f"a non-empty tuple of positive numbers up to {MAX_LR:g}"),
    "lr_trial_samples": (int, lambda v: v >= 1, "a positive number of training samples"),
    "adagrad_warmup": (int, lambda v: v >= 0, "an integer >= 0 (steps)"),
    "adagrad_eps": (float, lambda v: v > 0, "a positive number"),
    "samples": (int, lambda v: v >= 1, "a positive number of training samples (e.g. 1e6)"),
    "eval_per_decade": (int, lambda v: v >= 1, "an integer >= 1"),
    "eval_from": (int, lambda v: v >= 1, "a positive number of training samples"),
    "eval_n": (int, lambda v: v >= 1, "an integer >= 1 (datapoints per split for the curve)"),
    "seed": (int, lambda v: 0 <= v <= MAX_SEED, "an integer in 0..2^63-1"),
    "ws_logvar_scale": (float, lambda v: v > 0, "a positive number"),
    "mcem_leapfrog": (int, lambda v: v >= 1, "an integer >= 1 (leapfrog steps)"),
    "mcem_target_accept": (float, lambda v: 0 < v < 1, "a number in (0, 1)"),
    "mcem_init_step": (float, lambda v: v > 0, "a positive number"),
    "mcem_m_steps": (int, lambda v: v >= 1, "an integer >= 1"),
    "mcem_warmup": (int, lambda v: v >= 0, "an integer >= 0"),
    "mcem_step_rule": (str, lambda v: v in ("capped", "uncapped2013"), "'capped' or 'uncapped2013'"),
    "mcem_m_step": (str, lambda v: v in ("minibatch", "full_batch"), "'minibatch' or 'full_batch'"),
    "threads": (int, lambda v: 1 <= v <= MAX_THREADS, f"an integer in 1..{MAX_THREADS} (this machine's cores)"),
    "compile": ((bool, str), lambda v: v in (True, False, "auto"), "True, False or 'auto'"),
    "gradient": (str, lambda v: v in ("auto", "by_hand", "autograd"), "'auto', 'by_hand' or 'autograd'"),
    "checkpoint_every_s": (float, lambda v: v > 0, "a positive number of seconds"),
    "device": (str, lambda v: v in DEVICES, "'auto', 'cpu' or 'cuda'"),
    "draws": (str, lambda v: v in DRAWS, "'device' or 'cpu'"),
}


# knobs of one algorithm: any other algorithm refuses a value other than the default
APPLIES_TO = {"estimator": ("aevb",), "n_samples": ("aevb",), "gradient": ("aevb", "wake_sleep"),
              "draws": ("aevb", "wake_sleep"),
              "ws_logvar_scale": ("wake_sleep",),
              **{f.name: ("mcem",) for f in dataclasses.fields(TrainConfig) if f.name.startswith("mcem_")}}
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}

# a field whose default changed: a record without it was made before it existed, with the value the code had
RECORDED_BEFORE = {**_DEFAULTS, "mcem_m_step": "minibatch"}  # MCEM's M-step was minibatch-only until batch MCEM


def written_by_hand(cfg) -> bool:
    """Whether ``cfg``'s step has its gradient written out by hand (``algorithms.gradient_of``): AEVB
    with estimator B (``sgvb_b_ascent``); wake-sleep with MNIST's Bernoulli decoder and the paper's
    encoder, ws_logvar_scale = 1 (``wake_ascent``, ``sleep_ascent``)."""
    return (cfg.algorithm == "aevb" and cfg.estimator == "B") or (
        cfg.algorithm == "wake_sleep" and cfg.dataset == "mnist" and cfg.ws_logvar_scale == 1.0)


def cpu_draws_written(cfg) -> bool:
    """Whether a run of ``cfg`` may take ``draws='cpu'``: a step with its gradient by hand (not forced
    to autograd), without dynamic binarisation (which draws on the run's device)."""
    return written_by_hand(cfg) and cfg.gradient != "autograd" and cfg.binarize != "dynamic"


def recorded_value(recorded: dict, field: str):
    """A config field as a record holds it, or the value it had before records carried it."""
    return recorded.get(field, RECORDED_BEFORE[field])


def config_of_record(recorded: dict, **overrides) -> TrainConfig:
    """The ``TrainConfig`` a record's config (results file or checkpoint) describes, with
    ``overrides``: fields it lacks take the value they had before they existed (``RECORDED_BEFORE``),
    knobs of other algorithms and unknown keys are dropped. A bad value raises as ``TrainConfig`` does."""
    if not isinstance(recorded, dict):
        raise TypeError(f"a run's config must be a JSON object of its fields, not {type(recorded).__name__}")
    algorithm = overrides.get("algorithm", recorded.get("algorithm", _DEFAULTS["algorithm"]))
    fields = {k: recorded.get(k, RECORDED_BEFORE[k]) for k in _DEFAULTS
              if k not in TrainConfig.RUNTIME_FIELDS and algorithm in APPLIES_TO.get(k, (algorithm,))}
    # a folder a record names relative to the repository (TrainConfig.as_record), read back against it, never the cwd
    fields.update({k: str(REPO_ROOT / v) if k in PATH_FIELDS and isinstance(v, str) and not Path(v).is_absolute() else v
                   for k, v in recorded.items() if k in TrainConfig.RUNTIME_FIELDS})
    return TrainConfig(**{**fields, **overrides})


def identity_differences(recorded: dict, cfg: TrainConfig) -> dict:
    """Fields where a recorded run's identity (a checkpoint's or results file's config) differs
    from ``cfg``'s, as {field: (recorded, now)}. A field the record lacks was added to the config
    later: it counts as the value the code had then (``RECORDED_BEFORE``). Knobs of another algorithm
    are not compared (``identity``)."""
    import json

    as_json = lambda d: json.loads(json.dumps(d, default=str))  # as a JSON record holds it (tuples as lists)
    now, old, before = as_json(cfg.identity()), as_json(recorded), as_json(RECORDED_BEFORE)
    return {k: (old.get(k, before.get(k)), v) for k, v in now.items() if old.get(k, before.get(k)) != v}
