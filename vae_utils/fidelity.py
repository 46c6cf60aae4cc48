"""Where our curves part from the paper's, tested one candidate cause at a time.

Each experiment changes one setting of a run, named with its source: the paper's text or
Kingma's code of the time (``dpkingma/anglepy``; file, commit and the quoted line in
``source``). A candidate becomes a default only where a source and a run agree; every run that
did not match is reported as well. Runs go to ``results/fidelity/`` (checkpoints to
``checkpoints/fidelity/``); today's defaults are the engine's runs in ``results/``.

    python -m vae_utils fidelity run --gap wake_sleep [--seeds 0,1,2] [--samples 1e6]
    python -m vae_utils fidelity table              # the README's tables, one per gap

The table gives our value at the sample counts where the paper has a point, the paper's
value there, and the difference; the seed spread of today's default (results/*_seed{0,1,2})
is the yardstick for "within noise".
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from .config import TrainConfig
from .records import RESULTS_DIR, results_path
from .train import recorded_results

FIDELITY_DIR = RESULTS_DIR / "fidelity"
CHECKPOINTS = RESULTS_DIR.parent / "checkpoints" / "fidelity"


@dataclass
class Experiment:
    gap: str
    name: str
    candidate: str
    source: str
    overrides: dict = field(default_factory=dict)
    default: bool = False  # today's default: its runs live in results/ under the engine's names

    @property
    def short(self) -> str:
        return short_name(self.candidate)


def short_name(candidate: str) -> str:
    """A candidate's name without its details (the words before the first ':' or ',')."""
    return candidate.split(":")[0].split(",")[0]


BASE = {
    "frey_face": dict(algorithm="aevb", dataset="frey_face", n_z=20, n_hidden=200),
    "wake_sleep": dict(algorithm="wake_sleep", dataset="mnist", n_z=20, n_hidden=500),
    "wake_sleep_nz200": dict(algorithm="wake_sleep", dataset="mnist", n_z=200, n_hidden=500),
    "wake_sleep_frey": dict(algorithm="wake_sleep", dataset="frey_face", n_z=20, n_hidden=200),
    "mnist_late": dict(algorithm="aevb", dataset="mnist", n_z=20, n_hidden=500),
}

EXPERIMENTS = [
    Experiment("frey_face", "frey_default", "today: the grid {0.01, 0.02, 0.1} after a 1e5-sample trial (picks 0.01)",
               "paper Section 5", default=True),
    Experiment("frey_face", "frey_lr0.02", "global step 0.02", "paper Section 5 (grid)", {"lr": 0.02}),
    Experiment("frey_face", "frey_lr0.1", "global step 0.1",
               "paper Section 5 (grid); anglepy wzoptim.py@55f25be `step_va(..., stepsize=1e-1, warmup=100)`",
               {"lr": 0.1}),
    Experiment("wake_sleep", "ws_default", "today: recognition log-variance W5 h unscaled", "paper: 'same encoder'",
               default=True),
    Experiment("wake_sleep", "ws_logvar0.1", "0.1 x W5 h in the recognition log-variance, step grid re-run",
               "anglepy models/MLBN_Inverse.py@29d7e2e `self.logvar_factor = 1e-1`", {"ws_logvar_scale": 0.1}),
    Experiment("wake_sleep", "ws_dynamic", "dynamic binarisation of the training data: the recognition net trains "
               "on binary dreams, and so is also fed binary images",
               "anglepy MLBN.gen_xz@d49a0fb `np.random.binomial(n=1,p=p)` (binary dreams)", {"binarize": "dynamic"}),
    Experiment("wake_sleep", "ws_trial1e4", "a shorter step-size trial: 1e4 samples per step of the grid instead of 1e5",
               "paper Section 5: the step chosen 'based on performance on the training set in the first few "
               "iterations'", {"lr_trial_samples": 10_000}),
    # Nz = 200: the paper's wake-sleep is as good with 200 latents as with 20 at 1e6; ours is not
    Experiment("wake_sleep_nz200", "ws200_default", "today: recognition log-variance W5 h unscaled",
               "paper: 'same encoder'", default=True),
    Experiment("wake_sleep_nz200", "ws200_logvar0.1", "0.1 x W5 h in the recognition log-variance, step grid re-run",
               "anglepy models/MLBN_Inverse.py@29d7e2e `self.logvar_factor = 1e-1`", {"ws_logvar_scale": 0.1}),
    # the 0.1 factor's grid trial picked the step 0.02 where today's picks 0.01: this control separates the two
    Experiment("wake_sleep_nz200", "ws200_lr0.02", "today's recognition net at the step 0.02 (the one the 0.1 "
               "factor's grid trial picked): the control that separates the factor from the step",
               "paper Section 5 (grid)", {"lr": 0.02}),
    # Frey Face, Nz = 20: the paper's wake-sleep reaches only an independent per-pixel Gaussian's level (about
    # 580) by 1e8; ours climbs far past it by 1e7
    Experiment("wake_sleep_frey", "wsfrey_default", "today: recognition log-variance W5 h unscaled",
               "paper: 'same encoder'", default=True),
    Experiment("wake_sleep_frey", "wsfrey_logvar0.1", "0.1 x W5 h in the recognition log-variance, step grid re-run",
               "anglepy models/MLBN_Inverse.py@29d7e2e `self.logvar_factor = 1e-1`", {"ws_logvar_scale": 0.1}),
]

# today's Frey Face default trained on to the paper's own end, 1e8 samples: a gap that closes by then is a
# matter of early speed, one that stays is a different model
FREY_LONG = Experiment("frey_face", "frey_nz20_to1e8", "today's default, trained to 1e8 samples (the paper's end)",
                       "paper Figure 2 (its x axis ends at 1e8)")


# MNIST at the paper's end: from 1e8 on every AEVB Nz = 20 run's train value lies 0.6-0.8 nats below the paper's
# train line while its test value lies on the paper's test line, so our models overfit less than the paper's. The
# one regulariser the paper names is the weight prior: the paper budget's seed-0 run is trained again without it
# (the same seed, so the same minibatches and noise; the same step-size trial), and the two are read side by side
NO_PRIOR = Experiment("mnist_late", "mnist_nz20_noprior", "no weight prior: the bound alone, without (M/N) log N(w; 0, I)",
                      "paper Section 5: 'plus a small weight decay term corresponding to a prior p(theta) = N(0, I)'; "
                      "anglepy: on the weight matrices, M/N per minibatch (paper_spec 10.2)", {"weight_prior": False})
# the other setting that decides how fast a model fits its training set is the step size: the paper picked it from
# the grid {0.01, 0.02, 0.1} by a short trial whose choice it does not report, and ours picks 0.01; on Figure 3's
# N = 50,000 panel the paper's AEVB curve lies between the steps 0.01 and 0.02. The same seed-0 run at 0.02
LATE_STEP = Experiment("mnist_late", "mnist_nz20_lr0.02", "global step 0.02: the grid's middle step, where the trial picks 0.01",
                       "paper Section 5 (grid {0.01, 0.02, 0.1}, the choice not reported); Figure 3's N = 50,000 "
                       "AEVB curve lies between the steps 0.01 and 0.02 (docs/fidelity.md)", {"lr": 0.02})
LATE_TICKS = (1e6, 10 ** 6.5, 1e7, 10 ** 7.5, 1e8, 10 ** 8.25, 2.4e8)


LATE = (NO_PRIOR, LATE_STEP)  # the paper budget's seed-0 run trained again with one setting changed


def late_points(e: Experiment, seed: int = 0) -> tuple[dict, dict, list[dict]] | None:
    """A run of one of ``LATE``'s experiments beside the paper budget's run of the same seed (the
    record), at ``LATE_TICKS`` both have reached: (the variant's run, the record, rows). A row
    holds the tick, train and test of the record (``_record``) and of the variant (``_variant``),
    the paper's train and test there; None where the variant has not been trained or the record is
    missing."""
    from .budgets import Places
    from .plotting import load_paper_curves, paper_value

    variant = _results(e).get(seed)
    base = BASE[e.gap]
    partner = Places.for_budget("paper").keeping(TrainConfig(**base, seed=seed, samples=1))
    if variant is None or not results_path(partner).is_file():
        return None
    record, paper = recorded_results(partner), load_paper_curves()
    rows = []
    for x in LATE_TICKS:
        values = {f"{split}_{way}": _at(r["curve"], x, split) for split in ("train", "test")
                  for way, r in (("record", record), ("variant", variant))}
        if None in values.values():
            continue
        rows.append({"samples": x, **values, **{f"paper_{split}": paper_value(paper, "figure2", base["dataset"], base["n_z"],
                                                                              base["algorithm"], split, x) for split in ("train", "test")}})
    return variant, record, rows


def at_train_value(curve: list[dict], train: float) -> dict:
    """The point of ``curve`` (one with both splits) whose train value is nearest ``train``: where a
    run fits its training set as far as another does, to read their train − test gaps at equal fit."""
    return min((p for p in curve if p["train"] is not None and p["test"] is not None), key=lambda p: abs(p["train"] - train))


def frey_long_points() -> tuple[list[int], dict[int, dict], list[dict]] | None:
    """The Frey Face runs to 1e8 (``FREY_LONG``, every seed run) at the paper's half-decade ticks
    from 1e6 on: (seeds, records by seed, rows). A row holds the tick, the means over the seeds
    that reached it of the bound on the whole training set, the minibatch mean, the test bound
    and ours − paper on test (with ``gap_sd``, their sd over seeds, None for one seed), the
    paper's train and test values and ``seeds``, how many reached it; None where none has run."""
    from .plotting import load_paper_curves, paper_value

    runs = _results(FREY_LONG)
    if not runs:
        return None
    paper = load_paper_curves()
    rows = []
    for x in (10 ** (k / 2) for k in range(12, 17)):
        pts = [pt for r in runs.values() for pt in r["curve"] if abs(pt["samples"] - x) <= 0.01 * x]
        if not pts:
            continue
        train, test = (paper_value(paper, "figure2", "frey_face", 20, "aevb", s, x) for s in ("train", "test"))
        mean = lambda key: (statistics.fmean(v) if (v := [pt[key] for pt in pts if pt.get(key) is not None]) else None)
        gaps = [pt["test"] - test for pt in pts] if test is not None else []
        rows.append({"samples": x, "train": mean("train"), "minibatch": mean("train_minibatch_mean"),
                     "test": mean("test"), "paper_train": train, "paper_test": test,
                     "gap": statistics.fmean(gaps) if gaps else None,
                     "gap_sd": statistics.stdev(gaps) if len(gaps) > 1 else None, "seeds": len(pts)})
    return sorted(runs), runs, rows


def candidates_said(rows: list[dict], samples: float) -> str:
    """Every candidate of a gap's table at ``samples``: its ours − paper (± sd) and its verdict."""
    return "; ".join(f"{r['candidate']}: {r['ours_minus_paper']:+.1f}" + (f" ± {r['sd']:.1f}" if r["sd"] is not None else "")
                     + f" ({verdict(r, rows)})" for r in rows if not r["default"] and r["samples"] == samples)


FREY_WS_AT = 1e7  # where the Frey Face wake-sleep runs are read (the paper measured Nz = 20 only at 1e8)


def frey_wake_sleep_tested() -> list[tuple[Experiment, list[float], list[float]]]:
    """Each candidate of the Frey Face wake-sleep gap that has run to ``FREY_WS_AT``, with the test
    values there of its seeds and of today's default's."""
    default = next(e for e in experiments("wake_sleep_frey") if e.default)
    at = lambda e: [v for r in _results(e).values() if (v := _at(r["curve"], FREY_WS_AT, "test")) is not None]
    return [(e, vals, at(default)) for e in experiments("wake_sleep_frey") if not e.default and (vals := at(e))]


def _frey_wake_sleep_said() -> str:
    """What the candidates of the Frey Face wake-sleep gap did, in words ('' where none has run)."""
    from .plotting import samples_label

    said = []
    for e, values, default in frey_wake_sleep_tested():
        test = f"test {statistics.fmean(values):.0f}"
        said.append(f"{e.short}: {test}" if not default else
                    f"{e.short} climbs as well ({test} at {samples_label(FREY_WS_AT)}, {len(values)} "
                    f"seed{'s' if len(values) > 1 else ''}, against today's {statistics.fmean(default):.0f})")
    return "; ".join(said)


def known_cause(dataset: str, algorithm: str, n_z: int | None = None, n_train: int | None = None) -> str:
    """What the fidelity experiments found about a gap between one of our curves and the paper's
    (``docs/fidelity.md``), in a sentence whose numbers come from their records."""
    from .plotting import samples_label

    where = "`docs/fidelity.md`"
    if dataset == "frey_face" and algorithm == "aevb":
        long = frey_long_points()
        gaps = [(row["samples"], row["gap"]) for row in (long[2] if long else []) if row["gap"] is not None]
        if len(gaps) >= 2:
            (x0, g0), (x1, g1) = gaps[0], gaps[-1]
            seeds = long[0]
            who = f"seed {seeds[0]}" if len(seeds) == 1 else f"mean over seeds {', '.join(map(str, seeds))}"
            return (f"our Frey Face AEVB rises earlier than the paper's; trained on to the paper's end (Nz = 20, {who}), "
                    f"its test gap goes from {g0:+.0f} nats at {samples_label(x0)} to {g1:+.0f} at {samples_label(x1)}: "
                    f"early speed rather than another model ({where}, \"Frey Face to the paper's end\")")
    if dataset == "frey_face" and algorithm == "wake_sleep" and (n_z or 0) >= 10:
        said = _frey_wake_sleep_said()
        return ("the paper's wake-sleep reaches only an independent per-pixel Gaussian's level (about 580) by 1e8; "
                "ours climbs far past it with 10 or more latents"
                + (f"; tested on Nz = 20: {said}" if said else "") + f"; the cause is open ({where}, \"Frey Face, "
                "every latent size\")")
    if dataset == "mnist" and algorithm == "wake_sleep" and n_z == BASE["wake_sleep"]["n_z"]:
        rows = table("wake_sleep")
        tried = sorted({short_name(r["candidate"]) for r in rows if not r["default"]})
        moved = [r for r in rows if verdict(r, rows).startswith("closer")]
        return (f"{len(tried)} candidates were tried ({'; '.join(tried)}); "
                + ("none moves wake-sleep's curve beyond the seed spread of today's default; the cause is open"
                   if not moved else "closer to the paper beyond the seed spread: "
                   + ", ".join(f"{r['candidate'].split(':')[0]} at {samples_label(r['samples'])}" for r in moved))
                + f" ({where}, \"Wake-sleep, MNIST\")")
    if dataset == "mnist" and algorithm == "wake_sleep" and n_z == BASE["wake_sleep_nz200"]["n_z"]:
        rows = [r for r in table("wake_sleep_nz200") if r["samples"] == 1e6]
        default = next((r for r in rows if r["default"]), None)
        if default is not None and len(rows) > 1:
            said = candidates_said(rows, 1e6)
            return (f"with 200 latents today's wake-sleep is {default['ours_minus_paper']:+.1f} nats from the paper's at "
                    f"1e6 (mean over {len(default['seeds'])} seeds); tested: {said} ({where}, \"Wake-sleep with 200 "
                    f"latents\")")
    if algorithm == "mcem" and n_train in (MCEM_N, 50_000):
        variant = MCEM_DEFAULT if n_train == MCEM_N else f"{MCEM_DEFAULT}_n50000"
        rows = {r["split"]: r for r in mcem_seed_table(n_train=n_train) if r["variant"] == variant}
        worst = {split: max((abs(m) for m, _ in r["ours_minus_paper"].values()), default=None)
                 for split, r in rows.items()}
        if rows and None not in worst.values():
            seeds = len(rows["train"]["seeds"])
            return (f"our MCEM is anglepy's batch MCEM (5 full-batch M-steps per iteration, every gradient evaluation "
                    f"counted on the x axis); trained on past this budget ({seeds} seeds), it runs within "
                    f"{worst['train']:.1f} nats of the paper's N = {n_train:,} train curve and {worst['test']:.1f} of "
                    f"its test curve at the paper's points ({where}, \"Batch MCEM\")")
    if algorithm == "aevb" and n_train == 50_000:
        at = fig3_aevb_at_2e6()
        if {"grid", "lr0.01", "lr0.02"} <= set(at):
            d = {v: statistics.fmean(x for x, _ in rows) for v, rows in at.items()}
            seeds = min(len(rows) for rows in at.values())
            return (f"the step size decides this curve: at 2e6 samples ours is {d['grid']:+.1f} nats from the paper's "
                    f"on train with the grid's step ({', '.join(sorted({str(lr) for _, lr in at['grid']}))}), "
                    f"{d['lr0.02']:+.1f} with 0.02 and {d['lr0.01']:+.1f} with 0.01 (mean over {seeds} seed"
                    f"{'s' if seeds > 1 else ''})"
                    + (": the paper's curve lies between the two smaller steps of its grid, so this gap is training "
                       "(the step size), not the x axis" if d["lr0.01"] < 0 < d["lr0.02"] else "")
                    + f" ({where}, \"Figure 3, AEVB on N = 50,000\")")
    return f"not explained yet ({where} lists what was tested, and on which runs)"


def experiments(gap: str | None = None) -> list[Experiment]:
    gaps = sorted({e.gap for e in EXPERIMENTS})
    if gap is not None and gap not in gaps:
        raise ValueError(f"unknown gap {gap!r}; valid: {', '.join(gaps)}")
    return [e for e in EXPERIMENTS if gap in (None, e.gap)]


def config(e: Experiment, seed: int, samples: int, **runtime) -> TrainConfig:
    if e.default:
        return TrainConfig(**BASE[e.gap], seed=seed, samples=samples, **runtime)
    return TrainConfig(**BASE[e.gap], **e.overrides, seed=seed, samples=samples, name=f"{e.name}_seed{seed}",
                       results_dir=str(FIDELITY_DIR), checkpoint_dir=str(CHECKPOINTS), **runtime)


def command(e: Experiment, samples: float) -> str:
    flags = {"algorithm": "--algorithm", "dataset": "--dataset", "n_z": "--nz", "n_hidden": "--hidden",
             "lr": "--lr", "ws_logvar_scale": "--ws-logvar-scale", "binarize": "--binarize",
             "lr_trial_samples": "--lr-trial-samples", "weight_prior": "--weight-prior"}
    word = lambda v: ("on" if v else "off") if isinstance(v, bool) else v
    args = [f"{flags[k]} {word(v)}" for k, v in {**BASE[e.gap], **e.overrides}.items()]
    where = "" if e.default else f" --name {e.name}_seed<S> --results-dir results/fidelity --checkpoint-dir checkpoints/fidelity"
    return f"python -m vae_utils train {' '.join(args)} --samples {samples:g} --seed <S>{where}"


def _results(e: Experiment) -> dict[int, dict]:
    """The recorded runs of an experiment, by seed."""
    configs = {seed: config(e, seed, 1) for seed in range(10)}
    return {seed: recorded_results(c) for seed, c in configs.items() if results_path(c).is_file()}


def _at(curve: list[dict], samples: float, split: str) -> float | None:
    """The curve's value at ``samples`` (its evaluation points fall within 1% of the paper's)."""
    near = [p for p in curve if abs(p["samples"] - samples) <= 0.01 * samples and p[split] is not None]
    return near[0][split] if near else None


# where the paper's Figure-2 curves are measurements: its Frey Face curves are a straight segment from the
# initial bound to their first logged point (about 4e5 samples), and anglepy logged the train value as the
# mean minibatch bound since the previous point, which lags; so Frey Face compares test values from 1e6 on
PAPER_MEASURED_FROM = {"mnist": 0, "frey_face": 1e6}
COMPARED_SPLIT = {"mnist": "train", "frey_face": "test"}


def table(gap: str, split: str | None = None) -> list[dict]:
    """One row per experiment and paper sample count from ``PAPER_MEASURED_FROM`` on: our value
    (mean and sd over the seeds run), the paper's, the difference; on ``COMPARED_SPLIT`` unless
    ``split`` says otherwise."""
    from .plotting import load_paper_curves, paper_value

    paper = load_paper_curves()
    base = BASE[gap]
    split = split or COMPARED_SPLIT[base["dataset"]]
    points = sorted({r["training_samples"] for r in paper if r["figure"] == "figure2" and r["dataset"] == base["dataset"]
                     and r["n_z"] == base["n_z"] and r["method"] == base["algorithm"] and r["split"] in (split, "both")
                     and r["training_samples"] >= PAPER_MEASURED_FROM[base["dataset"]]})
    rows = []
    for e in experiments(gap):
        runs = _results(e)
        for x in points:
            vals = {s: v for s, r in runs.items() if (v := _at(r["curve"], x, split)) is not None}
            if not vals:
                continue
            p = paper_value(paper, "figure2", base["dataset"], base["n_z"], base["algorithm"], split, x)
            mean = statistics.fmean(vals.values())
            rows.append({"experiment": e.name, "default": e.default, "split": split, "candidate": e.candidate,
                         "source": e.source, "samples": x,
                         "seeds": sorted(vals), "ours": mean,
                         "sd": statistics.stdev(vals.values()) if len(vals) > 1 else None, "paper": p,
                         "ours_minus_paper": mean - p, "lr": sorted({r["lr"] for r in runs.values()})})
    return rows


def run(gap: str, seeds=(0,), samples: int = 1_000_000, names=None, workers: int = 0, progress: bool = True):
    """Train (or reuse, or resume) the experiments of a gap for the given seeds, two at a time."""
    from .sweep import sweep_runs

    chosen = [e for e in experiments(gap) if names is None or e.name in names]
    if names is not None and len(chosen) != len(set(names)):
        raise ValueError(f"unknown experiment among {sorted(names)}; valid: {', '.join(e.name for e in experiments(gap))}")
    configs = [config(e, s, samples) for e in chosen for s in seeds]
    return sweep_runs(configs, desc=f"fidelity {gap}", workers=workers, progress=progress)


def verdict(row: dict, rows: list[dict]) -> str:
    """A candidate against today's default at the same sample count: closer to the paper, or
    further, by more than twice the default's seed sd, or within it."""
    default = next((r for r in rows if r["default"] and r["samples"] == row["samples"]), None)
    if row["default"]:
        return "today's default"
    if default is None or default["sd"] is None:
        return "no default to compare"
    gain = abs(default["ours_minus_paper"]) - abs(row["ours_minus_paper"])
    if abs(gain) <= 2 * default["sd"]:
        return "within 2 sd of the default"
    return f"{'closer to' if gain > 0 else 'further from'} the paper by {abs(gain):.1f}"


def markdown(rows: list[dict]) -> str:
    from .plotting import samples_label

    lines = ["| candidate | source | lr | samples | split | seeds | ours | paper | ours − paper | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sd = f" ± {r['sd']:.1f}" if r["sd"] is not None else ""
        lines.append(f"| {r['candidate']} | {r['source']} | {', '.join(map(str, r['lr']))} | {samples_label(r['samples'])} | "
                     f"{r['split']} | {','.join(map(str, r['seeds']))} | {r['ours']:.1f}{sd} | {r['paper']:.1f} | "
                     f"{r['ours_minus_paper']:+.1f} | {verdict(r, rows)} |")
    return "\n".join(lines)


def commands(gap: str) -> str:
    """The command behind each row of a gap's table (``<S>``: the seed)."""
    samples = max((max(p["samples"] for p in r["curve"]) for e in experiments(gap) for r in _results(e).values()),
                  default=1e6)
    return "\n".join(f"- {e.candidate}: `{command(e, samples)}`" for e in experiments(gap))


# --- Monte Carlo EM: what did the x axis of Figure 3 count? -----------------------------

MCEM_N, MCEM_M, MCEM_STEPS, MCEM_LEAPFROG = 1000, 100, 5, 10
# training samples per MCEM iteration under each reading of "training samples evaluated"
# (the paper does not say; anglepy's loop_mcem hands its hook only the iteration count t)
MCEM_COUNTS = {
    "N + 5M (ours: every datapoint once in the E-step, 5M in the M-step)": MCEM_N + MCEM_STEPS * MCEM_M,
    "5M (the M-step's minibatches only)": MCEM_STEPS * MCEM_M,
    "N (the E-step only)": MCEM_N,
    "(L+1) N + 5M (every gradient evaluation of the E-step)": (MCEM_LEAPFROG + 1) * MCEM_N + MCEM_STEPS * MCEM_M,
}
MCEM_OURS = next(iter(MCEM_COUNTS))  # the count our curves were recorded under
MCEM_CURVE_POINTS = [150_000, 300_000, 600_000, 1_000_500, 2_001_000, 3_000_000, 5_001_000, 10_000_500]


# variant: (run name stem, candidate, source, config overrides); "batch" is today's default (MCEM_DEFAULT),
# "capped" the on-line default before it
MCEM_VARIANTS = {
    "capped": ("mcem_xaxis", "on-line MCEM (5 minibatch M-steps, x axis N + 5M; the default before batch MCEM): "
               "global HMC step x or / 1.25 toward 90% acceptance",
               "anglepy hmc.py@55f25be `factor = min(max_factor, alpha**float(min(100, accept.size)))`",
               {"mcem_m_step": "minibatch"}),
    "uncapped2013": ("mcem_uncapped2013", "on-line MCEM with the step x or / 1.02^N (N = 1000 chains: 4e8), "
                     "which alternates",
                     "anglepy hmc.py@29d7e2e `stepsize[0] /= alpha**float(accept.size)`, alpha = 1.02",
                     {"mcem_step_rule": "uncapped2013", "mcem_m_step": "minibatch"}),
    "batch": ("mcem_batch", "today: batch MCEM, 5 full-batch M-steps (all N, the full prior); x axis (L+1) N + 5 N "
              "per iteration, every gradient evaluation",
              "anglepy wzoptim.py@55f25be `step_batch_mcem` ('Batch MCEM'): `for _ in range(m_steps): "
              "dostep_m(w, z_mcmc)`", {"mcem_m_step": "full_batch"}),
    "batch_n50000": ("mcem_batch_n50000", "today: batch MCEM as above on N = 50,000 (Figure 3's right panel)",
                     "anglepy wzoptim.py@55f25be `step_batch_mcem`; paper Figure 3 (N = 50,000)",
                     {"mcem_m_step": "full_batch", "n_train": 50_000}),
}
MCEM_DEFAULT = "batch"  # TrainConfig's mcem_m_step="full_batch"; its runs are named mcem_batch_* (fidelity and Figure 3)
# each variant's evaluation points, whole iterations under its x-axis count: N + 5M = 1,500 per
# iteration (capped, uncapped2013), 16 N = 16,000 (batch) and 800,000 (batch_n50000); the last reaches
# the paper's 4e7 / 5e7 / 6.8e7 (its MCEM points on N = 50,000) at iterations 50 / 63 / 85
MCEM_BATCH_POINTS = [160_000, 320_000, 592_000, 1_008_000, 2_000_000, 3_008_000, 5_008_000, 10_000_000]
MCEM_POINTS = {"capped": MCEM_CURVE_POINTS, "uncapped2013": MCEM_CURVE_POINTS, "batch": MCEM_BATCH_POINTS,
               "batch_n50000": [2_400_000, 4_800_000, 10_400_000, 20_000_000, 30_400_000, 40_000_000, 50_400_000,
                                68_000_000]}


def mcem_n_train(variant: str) -> int:
    return MCEM_VARIANTS[variant][3].get("n_train", MCEM_N)


def mcem_curve_config(seed: int = 0, samples: int | None = None, variant: str = "capped") -> TrainConfig:
    if variant not in MCEM_VARIANTS:
        raise ValueError(f"unknown MCEM variant {variant!r}; valid: {', '.join(MCEM_VARIANTS)}")
    stem, _, _, overrides = MCEM_VARIANTS[variant]
    return TrainConfig(algorithm="mcem", n_z=3, n_hidden=100, **{"n_train": MCEM_N, **overrides}, seed=seed,
                       samples=samples or MCEM_POINTS[variant][-1], name=f"{stem}_seed{seed}",
                       results_dir=str(FIDELITY_DIR), checkpoint_dir=str(CHECKPOINTS))


def mcem_curve(seed: int = 0, ll_n: int = 200, variant: str = "capped", report=None):
    """MCEM on the variant's N to its last point, Appendix-D log p(x) of 200 train and test images at
    each of its 8 points (``MCEM_POINTS``)."""
    from .experiments import figure3_job

    return figure3_job(mcem_curve_config(seed, variant=variant), MCEM_POINTS[variant], ll_n, 0, report=report)


def run_mcem(variants, seeds=(0,), ll_n: int = 200, workers: int = 0, progress: bool = True) -> list:
    """``mcem_curve`` for every variant and seed, as one-thread processes (two at a time on two cores)."""
    from .sweep import Task, sweep

    unknown = [v for v in variants if v not in MCEM_VARIANTS]
    if unknown:
        raise ValueError(f"unknown MCEM variant {unknown[0]!r}; valid: {', '.join(MCEM_VARIANTS)}")
    tasks = [Task(mcem_curve, (s, ll_n, v), name=f"{MCEM_VARIANTS[v][0]}_seed{s}",
                  work=mcem_curve_config(s, variant=v).samples) for v in variants for s in seeds]
    return sweep(tasks, workers=workers, desc="fidelity mcem", progress=progress)


# --- Figure 3, AEVB on N = 50,000: is ours ahead of the paper by training or by the x axis? ----------

# the step size is the one knob of this run the paper leaves to a trial ("chosen from {0.01, 0.02, 0.1}
# based on performance on the training set in the first few iterations"); our grid picks 0.1 here
FIG3_AEVB_POINTS = [1_000_000, 2_000_000, 5_000_000]
FIG3_AEVB_VARIANTS = {
    "grid": ("fig3_aevb_grid", "today: the step from the paper's grid after a 1e5-sample trial", "paper Section 5", {}),
    "lr0.01": ("fig3_aevb_lr0.01", "global step 0.01", "paper Section 5 (grid)", {"lr": 0.01}),
    "lr0.02": ("fig3_aevb_lr0.02", "global step 0.02", "paper Section 5 (grid)", {"lr": 0.02}),
}


def fig3_aevb_config(seed: int = 0, variant: str = "grid") -> TrainConfig:
    if variant not in FIG3_AEVB_VARIANTS:
        raise ValueError(f"unknown Figure-3 AEVB variant {variant!r}; valid: {', '.join(FIG3_AEVB_VARIANTS)}")
    stem, _, _, overrides = FIG3_AEVB_VARIANTS[variant]
    return TrainConfig(algorithm="aevb", n_z=3, n_hidden=100, n_train=50_000, seed=seed, samples=FIG3_AEVB_POINTS[-1],
                       name=f"{stem}_seed{seed}", results_dir=str(FIDELITY_DIR), checkpoint_dir=str(CHECKPOINTS),
                       **overrides)


def fig3_aevb_curve(seed: int = 0, variant: str = "grid", ll_n: int = 200, report=None):
    """AEVB on N = 50,000 (Figure 3's model) to 5e6 samples, Appendix-D log p(x) of 200 train and
    test images at 1e6, 2e6 and 5e6."""
    from .experiments import figure3_job

    return figure3_job(fig3_aevb_config(seed, variant), FIG3_AEVB_POINTS, ll_n, 0, report=report)


def run_fig3_aevb(variants, seeds=(0,), workers: int = 0, progress: bool = True) -> list:
    from .sweep import Task, sweep

    unknown = [v for v in variants if v not in FIG3_AEVB_VARIANTS]
    if unknown:
        raise ValueError(f"unknown Figure-3 AEVB variant {unknown[0]!r}; valid: {', '.join(FIG3_AEVB_VARIANTS)}")
    tasks = [Task(fig3_aevb_curve, (s, v), name=f"{FIG3_AEVB_VARIANTS[v][0]}_seed{s}", work=FIG3_AEVB_POINTS[-1])
             for v in variants for s in seeds]
    return sweep(tasks, workers=workers, desc="fidelity figure3_aevb", progress=progress)


def fig3_aevb_table(seeds=(0, 1, 2)) -> list[dict]:
    """Per variant, seed and point: its step size, our Appendix-D log p(x) on train and test, the
    paper's there (Figure 3, N = 50,000, AEVB; interpolated on its log axis)."""
    from .experiments import likelihood_curve_path, read_curve_record
    from .plotting import load_paper_curves, paper_value

    paper, rows = load_paper_curves(), []
    for variant, (_, candidate, source, _) in FIG3_AEVB_VARIANTS.items():
        for seed in seeds:
            cfg = fig3_aevb_config(seed, variant)
            path = likelihood_curve_path(cfg)
            if not path.is_file():
                continue
            record, run = read_curve_record(path), recorded_results(cfg)
            for pt in record["points"]:
                rows.append({"variant": variant, "candidate": candidate, "source": source, "seed": seed,
                             "lr": run["lr"] if run else None, "samples": pt["samples"],
                             **{s: pt[s]["appendix_d"] for s in ("train", "test")},
                             **{f"paper_{s}": paper_value(paper, "figure3", "mnist", 3, "aevb", s, pt["samples"], 50_000)
                                for s in ("train", "test")}})
    return rows


def fig3_aevb_at_2e6() -> dict[str, list[tuple[float, float]]]:
    """Per variant of the probe, (ours − paper on train, the step used) at 2e6 samples, one per seed."""
    at = {}
    for r in fig3_aevb_table():
        if r["paper_train"] is not None and r["samples"] == 2_000_000:
            at.setdefault(r["variant"], []).append((r["train"] - r["paper_train"], r["lr"]))
    return at


def fig3_aevb_markdown(rows: list[dict]) -> str:
    from .plotting import samples_label

    lines = ["| candidate | seed | step chosen | samples | ours train / test | paper train / test | ours − paper, train / test |",
             "|---|---|---|---|---|---|---|"]

    def f(v, sign=False):
        return "—" if v is None else f"{v:{'+' if sign else ''}.1f}"

    for r in rows:
        diff = [None if r[f"paper_{s}"] is None else r[s] - r[f"paper_{s}"] for s in ("train", "test")]
        lines.append(f"| {r['candidate']} | {r['seed']} | {r['lr']} | {samples_label(r['samples'])} | {f(r['train'])} / "
                     f"{f(r['test'])} | {f(r['paper_train'])} / {f(r['paper_test'])} | {f(diff[0], True)} / "
                     f"{f(diff[1], True)} |")
    return "\n".join(lines)


def _interp_log(points: list[tuple[float, float]], x: float) -> float | None:
    import math

    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
    return None


def mcem_xaxis_table(record: dict, split: str = "train") -> list[dict]:
    """Our MCEM curve read under each x-axis count, against the paper's at its points."""
    from .plotting import load_paper_curves

    ours_per_iteration = MCEM_COUNTS[MCEM_OURS]
    curve = [(p["samples"], p[split]["appendix_d"]) for p in record["points"]]
    paper = sorted((r["training_samples"], r["value"]) for r in load_paper_curves()
                   if r["figure"] == "figure3" and r["method"] == "mcem" and r["n_train"] == str(MCEM_N)
                   and r["split"] == split)
    rows = []
    for label, per_iteration in MCEM_COUNTS.items():
        diffs = []
        for x, value in paper:
            ours = _interp_log(curve, x * ours_per_iteration / per_iteration)
            if ours is not None:
                diffs.append({"paper_samples": x, "ours": ours, "paper": value, "ours_minus_paper": ours - value})
        rows.append({"count": label, "per_iteration": per_iteration, "points": diffs})
    return rows


def mcem_paper_curve(n_train: int, split: str) -> list[tuple[float, float]]:
    """The paper's Figure-3 MCEM points on ``n_train`` datapoints: (samples, log p(x))."""
    from .plotting import load_paper_curves

    return sorted((r["training_samples"], r["value"]) for r in load_paper_curves()
                  if r["figure"] == "figure3" and r["method"] == "mcem" and r["n_train"] == str(n_train)
                  and r["split"] == split)


def mcem_seed_table(seeds=(0, 1, 2), n_train: int = MCEM_N) -> list[dict]:
    """Per MCEM variant on ``n_train`` datapoints and split: ours − paper at the paper's points
    (2e6 / 5e6 / 1e7 for N = 1000, 4e7 / 5e7 / 6.8e7 for 50,000), each run read under the count it
    was recorded with (N + 5M per iteration today; the batch variants' (L+1) N + 5 N), mean and sd
    over the seeds whose curve is recorded."""
    from .experiments import likelihood_curve_path, read_curve_record

    paper = {split: mcem_paper_curve(n_train, split) for split in ("train", "test")}
    rows = []
    for variant, (_, candidate, source, _) in MCEM_VARIANTS.items():
        if mcem_n_train(variant) != n_train:
            continue
        records = {s: read_curve_record(p) for s in seeds
                   if (p := likelihood_curve_path(mcem_curve_config(s, variant=variant))).is_file()}
        for split in ("train", "test"):
            diffs = {}
            for record in records.values():
                curve = [(p["samples"], p[split]["appendix_d"]) for p in record["points"]]
                for x, value in paper[split]:
                    if (ours := _interp_log(curve, x)) is not None:
                        diffs.setdefault(x, []).append(ours - value)
            rows.append({"variant": variant, "candidate": candidate, "source": source, "split": split,
                         "seeds": sorted(records), "ours_minus_paper": {
                             x: (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else None)
                             for x, v in sorted(diffs.items())}})
    return rows


def mcem_seed_markdown(rows: list[dict], n_train: int = MCEM_N) -> str:
    from .plotting import samples_label

    points = [x for x, _ in mcem_paper_curve(n_train, "train")]
    points = [x for x in points if any(x in r["ours_minus_paper"] for r in rows)] or points  # the reached ones
    head = " | ".join(f"{'ours − paper at ' if i == 0 else 'at '}{samples_label(x)}" for i, x in enumerate(points))
    lines = [f"| variant | source | split | seeds | {head} |", "|---|---|---|---|" + "---|" * len(points)]
    for r in rows:
        cells = []
        for x in points:
            mean, sd = r["ours_minus_paper"].get(x, (None, None))
            cells.append("—" if mean is None else f"{mean:+.1f}" + (f" ± {sd:.1f}" if sd is not None else ""))
        lines.append(f"| {r['candidate']} | {r['source']} | {r['split']} | {','.join(map(str, r['seeds']))} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- the tables of the README ----------------------------------------------------------

def ais_markdown(record: dict) -> str:
    """``ais_calibration``'s record as a table: per model and split, each estimator's mean |error|
    (bias ± its standard error, spread) against quadrature, and seconds per 1000 points."""
    from .likelihood_studies import calibrated_model_label
    lines = ["| model | split | AIS mean abs. error | AIS bias ± se | AIS sd | App. D mean abs. error (bias) | IS mean abs. error (bias) | "
             "s/1000 AIS / App. D / IS | BDMC gap (simulated) |", "|---|---|---|---|---|---|---|---|---|"]
    for m in record["models"]:
        for split, s in m["splits"].items():
            a, d, i = s["ais"], s["appendix_d"], s.get("importance")
            is_err = f"{i['mean_abs_error']:.2f} ({i['bias']:+.2f})" if i else "—"
            is_cost = f"{i['seconds_per_1000']:.0f}" if i else "—"
            gap = f"{m['bdmc']['gap']:+.3f} ± {m['bdmc']['gap_sem']:.3f}" if split == "train" else ""
            lines.append(f"| {calibrated_model_label(m)} | {split} | {a['mean_abs_error']:.3f} | "
                         f"{a['bias']:+.3f} ± {a['bias_sem']:.3f} | {a['std']:.3f} | {d['mean_abs_error']:.2f} "
                         f"({d['bias']:+.2f}) | {is_err} | {a['seconds_per_1000']:.0f} / {d['seconds_per_1000']:.0f} / "
                         f"{is_cost} | {gap} |")
    return "\n".join(lines)


def mcem_markdown(tables: dict[str, list[dict]]) -> str:
    """Rows of ``mcem_xaxis_table`` (per split) as one table: ours − paper at each paper point."""
    lines = ["| x axis counts per iteration | samples/iteration | train: ours − paper at 2e6 / 5e6 / 1e7 | "
             "test: ours − paper at 2e6 / 5e6 / 1e7 |", "|---|---|---|---|"]
    by_split = {split: {r["count"]: r for r in rows} for split, rows in tables.items()}
    for count, row in by_split["train"].items():
        cells = []
        for split in ("train", "test"):
            pts = {p["paper_samples"]: p["ours_minus_paper"] for p in by_split[split][count]["points"]}
            cells.append(" / ".join(f"{pts[x]:+.1f}" if x in pts else "—" for x in (2e6, 5e6, 1e7)))
        lines.append(f"| {count} | {row['per_iteration']:,} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


# --- the gap ledger: every gap, where it was first measured and where it stands ---------------

@dataclass
class Reading:
    """A gap read at one place: ours − paper (mean over seeds, their sd or None) and where."""
    at: str
    mean: float
    sd: float | None
    seeds: int


def _row_reading(at: str, row: dict) -> Reading:
    """A row of ``table`` as a reading."""
    return Reading(at, row["ours_minus_paper"], row["sd"], len(row["seeds"]))


def _reading(at: str, values: list[float]) -> Reading | None:
    return (Reading(at, statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values))
            if values else None)


def gap_status(first: Reading | None, now: Reading, digitization: float) -> str:
    """closed: |ours − paper| within twice its seed sd plus the digitization (a reading of one
    seed borrows the sd of the first reading, and where that has none either the margin is the
    digitization alone); narrowed: smaller than where it was first measured by more than that
    margin of the first reading; else open."""
    borrowed = first.sd if first is not None else None

    def margin(r: Reading) -> float:
        sd = r.sd if r.sd is not None else borrowed
        return digitization + (2 * sd if sd is not None else 0.0)

    if abs(now.mean) <= margin(now):
        return "closed"
    if first is not None and abs(first.mean) - abs(now.mean) > margin(first):
        return f"narrowed by {abs(first.mean) - abs(now.mean):.1f}"
    return "open"


def _figure2_gaps(pattern: str, dataset: str, n_z: int, algorithm: str, split: str, x: float,
                  paper_x: float | None = None) -> list[float]:
    """Ours − paper of the records matching ``pattern`` at ``x`` (the paper's value at ``paper_x``,
    default ``x``), one per record that reached ``x``."""
    from .plotting import load_paper_curves, load_results, paper_value

    theirs = paper_value(load_paper_curves(), "figure2", dataset, n_z, algorithm, split, paper_x or x)
    vals = [v for r in load_results(pattern, RESULTS_DIR) if (v := _at(r["curve"], x, split)) is not None]
    return [] if theirs is None else [v - theirs for v in vals]


def _late_gap_gaps(pattern: str, x: float) -> list[float]:
    """Our train − test gap − the paper's at ``x``, one per paper-budget record matching ``pattern``
    (AEVB MNIST Nz = 20) that reached ``x`` (the paper's gap: its digitized train minus test there)."""
    from .budgets import Places
    from .plotting import load_paper_curves, load_results, paper_value

    base, paper = BASE["mnist_late"], load_paper_curves()
    theirs = [paper_value(paper, "figure2", base["dataset"], base["n_z"], base["algorithm"], split, x) for split in ("train", "test")]
    if None in theirs:
        return []
    ours = [(_at(r["curve"], x, "train"), _at(r["curve"], x, "test"))
            for r in load_results(pattern, Places.for_budget("paper").results)]
    return [(tr - te) - (theirs[0] - theirs[1]) for tr, te in ours if tr is not None and te is not None]


def _late_said() -> str:
    """What each of ``LATE``'s runs says about the train − test gap, from the records: the gap
    change at their last common tick, and the two gaps at equal fit (``at_train_value``)."""
    from .plotting import samples_label

    said = []
    for e in LATE:
        pts = late_points(e)
        if not pts or not pts[2]:
            continue
        variant, _, rows = pts
        r = rows[-1]
        m = at_train_value(variant["curve"], r["train_record"])
        said.append(f"{e.short}: gap {r['train_variant'] - r['test_variant']:+.2f} against "
                    f"{r['train_record'] - r['test_record']:+.2f} at {samples_label(r['samples'])}, at equal fit "
                    f"{m['train'] - m['test']:+.2f} against {r['train_record'] - r['test_record']:+.2f}")
    return "; ".join(said)


def gap_ledger() -> list[dict]:
    """Every gap to the paper found so far: where it was first measured (today's default of the
    first round), where it stands now (today's defaults, as far as they were run), its status
    (``gap_status``) and the explanation that stands, each sentence's numbers from the records."""
    from .plotting import samples_label as lab

    rows = []

    def add(curve, first, now, digitization, why):
        if now is not None:
            rows.append({"curve": curve, "first": first, "now": now, "digitization": digitization,
                         "status": gap_status(first, now, digitization), "explanation": why})

    mnist = "aevb_mnist_nz20_h500_grey_n50000_seed*.json"
    add("MNIST AEVB, Nz = 20, train", _reading("1e6", _figure2_gaps(mnist, "mnist", 20, "aevb", "train", 1e6)),
        _reading("1e7", _figure2_gaps(mnist, "mnist", 20, "aevb", "train", 1e7)), 0.5,
        "early speed: ours rises sooner and meets the paper's curve later in training")
    frey = [r for r in table("frey_face") if r["default"] and r["samples"] == 1e6]
    long = frey_long_points()
    end = [r for r in (long[2] if long else []) if r["gap"] is not None]
    if frey and end:
        seeds = len(long[0])
        add("Frey Face AEVB, Nz = 20, test", _row_reading("1e6", frey[0]),
            Reading(lab(end[-1]["samples"]), end[-1]["gap"], end[-1]["gap_sd"], end[-1]["seeds"]), 10.0,
            f"early speed: no sourced setting differs and no step of the grid matches early, but trained on to the "
            f"paper's end ({end[-1]['seeds']} of {seeds} seeds there so far) ours meets the paper's curve; every other latent "
            f"size narrows the same way by 1e7 (\"Frey Face, every latent size\")")
    # the paper measured its Frey Face wake-sleep with Nz = 20 only at 1e8 (its plateau); ours was run to 1e7
    add("Frey Face wake-sleep, Nz = 20, test", None,
        _reading("ours at 1e7 against the paper's 1e8",
                 _figure2_gaps("wake_sleep_frey_face_nz20_h200_grey_nall_seed*.json", "frey_face", 20, "wake_sleep",
                               "test", 1e7, paper_x=1e8)), 10.0,
            "not explained: the paper's wake-sleep stays at the level of an independent per-pixel Gaussian (about "
            "575) at every Nz, ours sits there at Nz = 2 but climbs far above it with 20 latents"
            + (f"; tested: {said}" if (said := _frey_wake_sleep_said()) else ""))
    ws_rows = table("wake_sleep")
    ws = {lab(r["samples"]): r for r in ws_rows if r["default"]}
    dyn = {lab(r["samples"]): r for r in ws_rows if r["experiment"] == "ws_dynamic"}
    x = "3.16e6"
    if x in ws:
        last = max(ws.values(), key=lambda r: r["samples"])
        d = dyn.get(x)
        add("wake-sleep MNIST, Nz = 20, train", _row_reading(x, ws[x]), _row_reading(lab(last["samples"]), last), 0.5,
            f"not explained: none of the {len({c['experiment'] for c in ws_rows if not c['default']})} "
            f"candidates moves the curve beyond the seed spread"
            + (f" (dynamic binarisation {d['ours_minus_paper']:+.1f} ± {d['sd']:.1f} at {x}, scored on "
               f"binarised images, so confounded)" if d and d["sd"] is not None else ""))
    w200 = table("wake_sleep_nz200")
    r = next((r for r in w200 if r["default"] and r["samples"] == 1e6), None)
    if r is not None:
        said = candidates_said(w200, 1e6)
        add("wake-sleep MNIST, Nz = 200, train", None, _row_reading("1e6", r), 0.5,
            f"tested: {said}" if said else "not tested yet")
    mcem = {n: {(r["variant"], r["split"]): r for r in mcem_seed_table(n_train=n)} for n in (MCEM_N, 50_000)}
    for split in ("train", "test"):  # the left panel
        old, new = mcem[MCEM_N].get(("capped", split)), mcem[MCEM_N].get((MCEM_DEFAULT, split))
        for x in (2e6, 1e7):
            if new and x in new["ours_minus_paper"]:
                o = old["ours_minus_paper"].get(x) if old else None
                add(f"MCEM, Figure 3, N = 1,000, {split}, at {lab(x)}",
                    Reading(f"{lab(x)}, on-line MCEM", o[0], o[1], len(old["seeds"])) if o else None,
                    Reading(f"{lab(x)}, batch MCEM", *new["ours_minus_paper"][x], len(new["seeds"])), 0.5,
                    "batch MCEM (anglepy's step_batch_mcem: full-batch M-steps, every gradient evaluation on the x axis)")
    for split in ("train", "test"):  # the right panel: the on-line MCEM was never run this far
        big = mcem[50_000].get(("batch_n50000", split))
        for x in (4e7, 6.8e7):
            if big and x in big["ours_minus_paper"]:
                add(f"MCEM, Figure 3, N = 50,000, {split}, at {lab(x)}", None,
                    Reading(f"{lab(x)}, batch MCEM", *big["ours_minus_paper"][x], len(big["seeds"])), 0.5,
                    "batch MCEM puts the right panel's MCEM within a few nats; the rest is not explained")
    end = _late_gap_gaps(mnist, 2.4e8)
    if end:
        # a difference of two readings, each within the digitization's ±0.5
        add("MNIST AEVB, Nz = 20, train − test, at 2.4e8", None, _reading("2.4e8", end), 1.0,
            "ours is smaller, by less than the ±1 nat that two readings of ±0.5 allow"
            + (f"; tested: {said}" if (said := _late_said()) else ""))
    aevb = {v: [d for d, _ in rows_] for v, rows_ in fig3_aevb_at_2e6().items()}
    if "grid" in aevb:
        g = _reading("2e6", aevb["grid"])
        add("Figure 3 AEVB, N = 50,000, train, at 2e6", g, g, 0.5,
            "the step size: " + ", ".join(f"{v.replace('lr', 'step ')} {statistics.fmean(d):+.1f}"
                                          for v, d in aevb.items() if v != "grid")
            + " against the grid's pick: the paper's curve lies between its two smaller steps; the paper does not "
              "say which step its trial chose, so the default stays")
    return rows


# --- wake-sleep with 200 latents: where does the bound go? --------------------------------------

LATENT_KL = FIDELITY_DIR / "wake_sleep_nz200_latent_kl.json"
LATENT_KL_N = 2000  # test images averaged over
ACTIVE_SHARE = 0.5  # a latent is read by the decoder if its weight norm is at least this share of the largest
LATENT_KL_LABELS = {"ws200_default": "wake-sleep (today)", "ws200_logvar0.1": "wake-sleep, 0.1 x W5 h",
                    "ws200_lr0.02": "wake-sleep, step 0.02"}


def _aevb_nz200(seed: int, samples: int) -> TrainConfig:
    """The latent-KL study's reference: today's AEVB on the Nz = 200 gap's model."""
    return TrainConfig(**{**BASE["wake_sleep_nz200"], "algorithm": "aevb"}, seed=seed, samples=samples)


def latent_kl(cfg: TrainConfig, n: int = LATENT_KL_N) -> dict:
    """The KL term of the bound of a finished run, KL(q(z|x) || N(0, I)) = sum_j KL_j with
    KL_j = (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2) / 2, averaged over the first ``n`` test images and
    split between the latents the decoder reads (the norm of their column of the decoder's first
    weight matrix at least ``ACTIVE_SHARE`` of the largest) and the rest."""
    import torch

    from .estimators import gaussian_kl
    from .records import checkpoint_path
    from .train import evaluation_images, load_trained

    model, ckpt = load_trained(checkpoint_path(cfg))
    x = evaluation_images(cfg, "test", n)
    with torch.no_grad():
        mu, logvar = model.encode(x)
        # KL_j per image (each latent its own one-dimensional Gaussian), then the mean over images
        kl = gaussian_kl(mu.unsqueeze(-1), logvar.unsqueeze(-1)).mean(0)
        norms = model.dec_hidden.weight.norm(dim=0)
    read = norms >= ACTIVE_SHARE * norms.max()
    return {"run": cfg.name, "algorithm": cfg.algorithm, "ws_logvar_scale": cfg.ws_logvar_scale,
            "samples_seen": ckpt["run"]["samples_seen"], "kl": float(kl.sum()), "latents_read": int(read.sum()),
            "kl_read": float(kl[read].sum()), "kl_unread": float(kl[~read].sum()),
            "unread_mean_mu2": float((mu[:, ~read] ** 2).mean()), "unread_mean_var": float(logvar[:, ~read].exp().mean())}


def latent_kl_study(seeds=(0, 1, 2), samples: int = 1_000_000, out=None, log=print) -> dict:
    """``latent_kl`` of every finished run of the Nz = 200 wake-sleep gap and of AEVB with 200
    latents (today's defaults, the same seeds) at ``samples``, written once to ``LATENT_KL``."""
    from .records import checkpoint_path, provenance, save_once

    configs = [config(e, s, samples) for e in experiments("wake_sleep_nz200") for s in seeds]
    configs += [_aevb_nz200(s, samples) for s in seeds]
    done = [c for c in configs if checkpoint_path(c).is_file() and (r := recorded_results(c)) and r["finished"]]
    rows = [latent_kl(c) for c in done]
    record = {"settings": {"n": LATENT_KL_N, "active_share": ACTIVE_SHARE, "samples": samples},
              "runs": [r["run"] for r in rows], "results": rows, "provenance": provenance()}
    return save_once(out or LATENT_KL, record, ("settings", "runs"), "the latent KL study", log)


def latent_kl_markdown(record: dict) -> str:
    """Per method: the KL term of the bound and its share on latents the decoder does not read,
    mean ± sd over the seeds."""
    labels = {config(e, 0, 1).name.rsplit("_seed", 1)[0]: LATENT_KL_LABELS[e.name] for e in experiments("wake_sleep_nz200")}
    labels[_aevb_nz200(0, 1).name.rsplit("_seed", 1)[0]] = "AEVB (today)"
    groups = {}
    for r in record["results"]:
        groups.setdefault(labels.get(r["run"].rsplit("_seed", 1)[0], r["run"]), []).append(r)

    def ms(v):
        return f"{statistics.fmean(v):.1f}" + (f" ± {statistics.stdev(v):.1f}" if len(v) > 1 else "")

    lines = ["| model (Nz = 200, 1e6 samples) | seeds | latents read | KL term | on latents read | on the rest | "
             "mean mu² / sigma² on the rest |", "|---|---|---|---|---|---|---|"]
    for key, rs in groups.items():
        lines.append(f"| {key} | {len(rs)} | {ms([r['latents_read'] for r in rs])} | {ms([r['kl'] for r in rs])} | "
                     f"{ms([r['kl_read'] for r in rs])} | {ms([r['kl_unread'] for r in rs])} | "
                     f"{statistics.fmean(r['unread_mean_mu2'] for r in rs):.3f} / "
                     f"{statistics.fmean(r['unread_mean_var'] for r in rs):.3f} |")
    return "\n".join(lines)


# --- the train line: which training images the curve's train value reads ------------------------

TRAIN_BLOCKS = FIDELITY_DIR / "mnist_train_blocks.json"
TRAIN_BLOCK = 10_000  # the paper budget's eval_n: a curve's train value is the bound on the first block


def train_blocks(record: dict, data_dir=None, block: int = TRAIN_BLOCK, checkpoints=None) -> dict:
    """A finished paper-budget MNIST run at its last checkpoint, scored as its curve scores it
    (``lower_bound``: SGVB B, L = 1, noise seed 1000) on each block of ``TRAIN_BLOCK`` training
    images in the split's order, on the whole training split and on the test split. The first
    block is the curve's own train value (the same images, noise and arithmetic: a check)."""
    import torch

    from .budgets import Places
    from .estimators import lower_bound
    from .train import evaluation_images, load_trained

    cfg = record["config"]
    where = checkpoints or Places.for_budget("paper").checkpoints
    model, ckpt = load_trained(where / f"{record['name']}.pt", data_dir)
    X = evaluation_images(cfg, "train", cfg["n_train"], data_dir=data_dir)
    with torch.no_grad():
        blocks = [lower_bound(model, X[i:i + block], "B", seed=1000) for i in range(0, len(X), block)]
        whole = lower_bound(model, X, "B", seed=1000)
        test = lower_bound(model, evaluation_images(cfg, "test", block, data_dir=data_dir), "B", seed=1000)
    return {"run": record["name"], "samples_seen": ckpt["run"]["samples_seen"], "blocks": blocks, "whole": whole,
            "test": test}


def train_blocks_study(out=None, data_dir=None, log=print) -> dict:
    """``train_blocks`` of every MNIST Figure-2 run of the paper budget finished at its count whose
    checkpoint is here, written once to ``TRAIN_BLOCKS``."""
    from .budgets import Places
    from .records import provenance, read_json, save_once

    places = Places.for_budget("paper")
    runs = [r for p in sorted(places.results.glob("*_mnist_*_n50000_seed*.json")) if "curve" in (r := read_json(p))
            and r["finished"] and r["samples_seen"] == r["config"]["samples"]
            and (places.checkpoints / f"{r['name']}.pt").is_file()]
    rows = []
    for r in sorted(runs, key=lambda r: r["name"]):
        rows.append(train_blocks(r, data_dir))
        log(f"{r['name']}: blocks {', '.join(f'{b:.2f}' for b in rows[-1]['blocks'])}; whole {rows[-1]['whole']:.2f}")
    record = {"settings": {"block": TRAIN_BLOCK, "noise_seed": 1000}, "runs": [r["run"] for r in rows],
              "results": rows, "provenance": provenance()}
    return save_once(out or TRAIN_BLOCKS, record, ("settings", "runs"), "the training blocks study", log)
