"""Budgets: how much each notebook computes, where its outputs go, and its validated parameters.

The paper trains every model for 1e8 or more "training samples evaluated" (its x axis); on a
2-core CPU that is hours per model. Each notebook therefore takes a ``budget``:

    smoke     every notebook in about two minutes (CI); the numbers only show that it runs
    quick     the whole set in about 30 minutes on 2 cores; still shows each claim of the paper
    standard  1e7 samples per run, the middle of the paper's axes: more than one 3-hour session on 2 cores
    paper     the paper's own sample counts (Figure 2: 2.4e8 MNIST, 1e8 Frey; Figure 3: 6e7)

All knobs that a budget scales are in the table ``BUDGETS`` below, one row per budget.
Each budget writes to its own places (``Places``): ``results/<budget>/`` (its executed
notebooks in ``results/<budget>/notebooks/``), ``figures/<budget>/`` and ``checkpoints/<budget>/``
in the repository, or the same folders under ``output_dir`` when one is given, so a quick run never overwrites
the record of a standard one.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path

from .device import DEVICES, check_device
from .records import REPO_ROOT, resolve

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"


@dataclass(frozen=True)
class Budget:
    name: str
    mnist_samples: float        # Figure 2, MNIST: training samples per run
    frey_samples: float         # Figure 2, Frey Face
    fig3_samples: float         # Figure 3 (Nz = 3, 100 hidden), per run and N_train = 1000
    fig3_samples_50k: float     # Figure 3, N_train = 50,000
    fig3_points: int            # log p(x) is estimated at this many log-spaced points along training
    ll_n: int                   # datapoints per split for log p(x) (the paper: 1000)
    is_samples: int             # importance samples per datapoint (beside Appendix D)
    accuracy_n: int             # estimator-accuracy notebook: datapoints integrated by quadrature
    eval_n: int                 # datapoints of each split on which a training curve is evaluated
    lr_trial_samples: float     # length of each step-size trial of the paper's grid {0.01, 0.02, 0.1}
    lr: float | str             # "auto": the paper's grid; smoke skips it (a fixed step) to stay within CI's minutes
    derivation_repeats: int     # derivation notebook: repeated gradient estimates per variance point
    derivation_mc: int          # derivation notebook: Monte Carlo samples per expectation
    step_check_draws: int       # model-and-algorithm notebook: (minibatch, noise) draws of the checked AEVB step
    first_steps: int            # model-and-algorithm notebook: steps of Algorithm 1 shown per step size


# One row per budget; the only place these numbers live.
BUDGETS = {
    "smoke":    Budget("smoke",    mnist_samples=3e4, frey_samples=3e4, fig3_samples=3e4, fig3_samples_50k=1.1e5,
                       fig3_points=2, ll_n=20, is_samples=100, accuracy_n=4,
                       eval_n=500, lr_trial_samples=2e3, derivation_repeats=100, derivation_mc=20_000, lr=0.01,
                       step_check_draws=3, first_steps=150),
    "quick":    Budget("quick",    mnist_samples=1e6, frey_samples=5e5, fig3_samples=2e6, fig3_samples_50k=2e6,
                       fig3_points=3, ll_n=200, is_samples=1000, accuracy_n=12,
                       eval_n=2000, lr_trial_samples=3e4, derivation_repeats=400, derivation_mc=100_000, lr="auto",
                       step_check_draws=10, first_steps=600),
    "standard": Budget("standard", mnist_samples=1e7, frey_samples=1e7, fig3_samples=1e7, fig3_samples_50k=1e7,
                       fig3_points=5, ll_n=1000, is_samples=5000, accuracy_n=50,
                       eval_n=10_000, lr_trial_samples=1e5, derivation_repeats=1000, derivation_mc=1_000_000, lr="auto",
                       step_check_draws=30, first_steps=2000),
    "paper":    Budget("paper",    mnist_samples=2.4e8, frey_samples=1e8, fig3_samples=6e7, fig3_samples_50k=6.8e7,
                       fig3_points=8, ll_n=1000, is_samples=5000, accuracy_n=100,
                       eval_n=10_000, lr_trial_samples=1e5, derivation_repeats=1000, derivation_mc=1_000_000, lr="auto",
                       step_check_draws=30, first_steps=2000),
}


def get_budget(name) -> Budget:
    if not isinstance(name, str) or name not in BUDGETS:
        raise ValueError(f"budget={name!r} is not a budget; choose one of {', '.join(BUDGETS)}")
    return BUDGETS[name]


@dataclass(frozen=True)
class Places:
    """Where one budget's outputs go."""

    results: Path
    figures: Path
    checkpoints: Path
    notebooks: Path

    @classmethod
    def for_budget(cls, budget: str, output_dir: str | Path | None = None) -> "Places":
        get_budget(budget)
        root, sub = (resolve(output_dir, "output_dir"), "") if output_dir else (REPO_ROOT, budget)
        results = root / "results" / sub
        # executed notebooks are outputs of a run: they live with its results, never beside the sources
        return cls(results, root / "figures" / sub, root / "checkpoints" / sub, results / "notebooks")

    def keeping(self, cfg):
        """``cfg``, the same run, with its results and checkpoint kept in these places."""
        return replace(cfg, results_dir=str(self.results), checkpoint_dir=str(self.checkpoints))

    def make(self) -> "Places":
        """Create the folders, each proven writable before any compute (else one line naming it)."""
        from .records import check_output_dir

        for f in fields(self):
            check_output_dir(getattr(self, f.name), f"{f.name} folder")
        return self


# --- notebook parameters --------------------------------------------------------------

_RULES = {  # value checks shared by every notebook (the type comes from the annotation)
    "budget": (lambda v: v in BUDGETS, f"one of {', '.join(BUDGETS)}"),
    "workers": (lambda v: v >= 0, "0 (one per core) or a positive number of processes"),
    "seed": (lambda v: 0 <= v < 2**63, "an integer in 0..2^63-1"),
    "device": (lambda v: v in DEVICES, "'auto', 'cpu' or 'cuda'"),
}


def _type_ok(value, annotation) -> bool:
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation) if isinstance(annotation, type) else True


@dataclass
class NotebookParameters:
    """The validated parameters of a notebook run, with its budget and places."""

    values: dict
    budget: Budget
    places: Places

    def __getattr__(self, name):
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None


def _injected_names(namespace: dict) -> set[str]:
    """Names assigned by papermill's injected cell (its source starts with '# Parameters'),
    found in IPython's input history ``In``; empty outside papermill."""
    names = set()
    for src in namespace.get("In") or []:
        if isinstance(src, str) and src.lstrip().startswith("# Parameters"):
            try:
                body = ast.parse(src).body
            except SyntaxError:  # the cell itself failed before this check ran
                continue
            for node in body:
                if isinstance(node, ast.Assign):
                    names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def check_parameters(namespace: dict, rules: dict | None = None) -> NotebookParameters:
    """Validate a notebook's parameters in its global ``namespace``; refuse bad ones in one line.

    The ``parameters`` cell declares every knob with a type annotation (``budget: str = "quick"``);
    papermill injects the caller's values after it. An injected name that was not declared is a
    misspelt or unknown parameter (papermill only warns about those); a value of the wrong type,
    or outside what ``rules`` (name -> (predicate, what is allowed)) and the shared rules allow,
    is refused. Raises ``ValueError``/``TypeError`` naming the parameter, the value and what is
    allowed.
    """
    if not isinstance(namespace, dict):
        raise TypeError(f"namespace={type(namespace).__name__} is not allowed: expected the notebook's globals()")
    declared = namespace.get("__annotations__", {})
    if not isinstance(declared, dict) or not declared:
        raise ValueError("the notebook's parameters cell must declare its knobs with type annotations")
    unknown = sorted(_injected_names(namespace) - set(declared))
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r} = {namespace.get(unknown[0], '?')!r}; "
                         f"this notebook's parameters are: {', '.join(declared)}")
    values = {}
    for name, annotation in declared.items():
        if name not in namespace:
            raise ValueError(f"parameter {name!r} is declared without a value; give it a default in the parameters "
                             f"cell (e.g. {name}: {getattr(annotation, '__name__', annotation)} = ...)")
        value = namespace[name]
        if not _type_ok(value, annotation):
            kind = getattr(annotation, "__name__", str(annotation))
            raise TypeError(f"parameter {name}={value!r} has type {type(value).__name__}"
                            f"{' (not finite)' if isinstance(value, float) else ''}; expected {kind}")
        rule = {**_RULES, **(rules or {})}.get(name)
        try:
            ok = not rule or rule[0](value)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"parameter {name}={value!r} is not allowed; expected {rule[1]}")
        values[name] = value
    if "output_dir" in values and values["output_dir"] and not values["output_dir"].strip():
        raise ValueError(f"parameter output_dir={values['output_dir']!r} is not allowed; expected '' (the "
                         f"repository's places) or a folder path")
    if "device" in values:
        check_device(values["device"])  # 'cuda' on a machine without a GPU: refused here, in one line
    budget = get_budget(values.get("budget", "quick"))
    places = Places.for_budget(budget.name, values.get("output_dir") or None).make()
    return NotebookParameters(values, budget, places)


__all__ = ["BUDGETS", "Budget", "Places", "get_budget", "check_parameters", "NotebookParameters"]
