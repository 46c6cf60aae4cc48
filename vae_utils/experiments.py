"""The paper's experiments as runs: which models each figure trains, and what is measured on them.

    Figure 2  lower bound vs training samples; AEVB and wake-sleep; MNIST Nz in {3, 5, 10, 20, 200}
              with 500 hidden units, Frey Face Nz in {2, 5, 10, 20} with 200 (Section 5)
    Figure 3  marginal log-likelihood (Appendix D) along training; AEVB, wake-sleep and MCEM;
              MNIST, Nz = 3, 100 hidden units, N_train in {1000, 50000} (Section 5, App. E)
    Figure 4  learned 2-D manifolds: decoder means on a grid z = Phi^-1((k + 0.5)/n), MNIST 20x20
              and Frey Face 10x10 (Appendix A)
    Figure 5  random samples (decoder means, z ~ N(0, I)) of MNIST models with Nz in {2, 5, 10, 20}

Every config is built from a notebook's validated parameters (budget, seed, places), so the
same figure at the same budget always names the same runs: Figure 5's Nz = 5, 10, 20 models
are Figure 2's MNIST runs, and Figure 4's Frey model is Figure 2's Frey Nz = 2 run, reused.
The jobs below are sweep tasks (``sweep.Task``): each reuses what is finished and resumes
what is not.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from . import data as data_mod
from .algorithms import mcem_samples_per_iteration
from .budgets import NotebookParameters
from .sweep import MissingResultError, ensure_run, finished_result
from .config import ALGORITHMS, DRAWS, cpu_draws_written, identity_differences, recorded_value
from .device import device_provenance, seeded_generator
from .device import resolve as resolve_device
from .marginal_likelihood import APPENDIX_D, hmc_kde_log_likelihood, importance_log_likelihood
from . import checks
from .claims import claim, every, unjudged
from .records import (AIS_CALIBRATION, RESULTS_DIR, RecordExistsError, ResultsFileError, another_computation,
                      atomic_write_bytes, check_output_file, checkpoint_path, differences, existing_record, keeps_points, provenance, read_record,
                      regular_file, results_path, write_record)
from .train import TrainConfig, evaluation_images, load_trained, recorded_results, train

FIGURE2_LATENTS = {"mnist": (3, 5, 10, 20, 200), "frey_face": (2, 5, 10, 20)}
FIGURE2_HIDDEN = {"mnist": 500, "frey_face": 200}
FIGURE3_N_TRAIN = (1000, 50_000)
FIGURE5_LATENTS = (2, 5, 10, 20)
MANIFOLD_GRID = {"mnist": 20, "frey_face": 10}


def run_config(p: NotebookParameters, **kw) -> TrainConfig:
    """A TrainConfig with the budget's evaluation settings and the budget's places."""
    base = dict(eval_n=p.budget.eval_n, lr_trial_samples=int(p.budget.lr_trial_samples), lr=p.budget.lr,
                seed=p.values.get("seed", 0), device=p.values.get("device", "auto"),
                results_dir=str(p.places.results), checkpoint_dir=str(p.places.checkpoints))
    return TrainConfig(**{**base, **kw})


def figure2_configs(p: NotebookParameters, dataset: str, latents=None) -> list[TrainConfig]:
    samples = p.budget.mnist_samples if dataset == "mnist" else p.budget.frey_samples
    return [run_config(p, dataset=dataset, algorithm=alg, n_z=nz, n_hidden=FIGURE2_HIDDEN[dataset],
                       samples=int(samples))
            for nz in (latents or FIGURE2_LATENTS[dataset]) for alg in ("aevb", "wake_sleep")]


def figure3_configs(p: NotebookParameters, n_trains=FIGURE3_N_TRAIN) -> list[TrainConfig]:
    return [run_config(p, dataset="mnist", algorithm=alg, n_z=3, n_hidden=100, n_train=n,
                       samples=int(p.budget.fig3_samples if n == 1000 else p.budget.fig3_samples_50k))
            for n in n_trains for alg in ALGORITHMS]


def figure5_configs(p: NotebookParameters) -> list[TrainConfig]:
    """AEVB on MNIST with 500 hidden units for Nz = 2, 5, 10, 20 (Nz >= 3 are Figure 2's runs)."""
    return figure2_configs(p, "mnist", FIGURE5_LATENTS)[::2]


def likelihood_points(total: int, n_points: int, batch: int = 100) -> list[int]:
    """``n_points`` evenly spaced sample counts ending at ``total`` (Figure 3's x axis is linear)."""
    return sorted({max(batch, round(total * k / n_points / batch) * batch) for k in range(1, n_points + 1)})


def figure3_points(cfg: TrainConfig, n_points: int) -> list[int]:
    """A Figure-3 run's log p(x) points: ``likelihood_points``, for batch MCEM rounded up to whole
    iterations ((L + 1) N + 5 N samples each: 800,000 on N = 50,000), where its curve can stop."""
    points = likelihood_points(cfg.samples, n_points)
    if cfg.algorithm == "mcem" and cfg.mcem_m_step == "full_batch":
        step = mcem_samples_per_iteration(cfg, cfg.n_train)
        points = sorted({math.ceil(t / step) * step for t in points})
    return points


def trained_model(cfg: TrainConfig, allow_training: bool = True, report=None):
    """The model of a finished run (trained first if need be and allowed), in eval mode."""
    ensure_run(cfg, allow_training, report)
    path = checkpoint_path(cfg)
    if not path.is_file():  # a committed record without its weights: never deleted to retrain it
        raise MissingResultError(f"run {cfg.name!r} has finished results but no checkpoint at {path}, and its "
                                 f"weights are needed here; the record is kept: restore the checkpoint, or compute "
                                 f"in another output folder (output_dir), where the run is trained afresh")
    return load_trained(path)[0]


# --- the yardsticks a verdict is weighed against (vae_utils.claims) ----------------------------

# the paper's curves read off its figure (vae_utils/paper/README.md): a difference smaller is no difference
DIGITIZATION = {"mnist": 0.5, "frey_face": 10.0}


def seed_spread_dirs() -> tuple[Path, ...]:
    """Where the three-seed runs of Nz = 20 are looked for, in this order: the engine's long runs
    (``results/``), then the standard budget's record (which trains seeds 1 and 2 beside its own).
    Only finished runs count."""
    from .budgets import Places

    return RESULTS_DIR, Places.for_budget("standard").results


def seed_spread(dataset: str, samples: float, quantity: str = "train") -> tuple[float | None, str]:
    """The spread over seeds of a Figure-2 ``quantity`` near ``samples`` ('train', 'test', or
    'gap': train - test): the sd over the committed three-seed runs of Nz = 20 (``seed_spread_dirs``;
    for each seed the point nearest ``samples``, the first folder's on a tie), the largest over
    the methods that have them, with the words saying where it was measured. (None, why) where
    no two seeds reach that far."""
    def read(pt):
        if quantity == "gap":
            return None if pt["test"] is None else pt["train"] - pt["test"]
        return pt[quantity]

    def distance(pt):
        return abs(math.log10(pt["samples"] / samples))

    sds = {}
    for alg in ("aevb", "wake_sleep"):
        values = []
        for seed in (0, 1, 2):
            points = []
            for folder in seed_spread_dirs():
                cfg = TrainConfig(dataset=dataset, algorithm=alg, n_z=20, n_hidden=FIGURE2_HIDDEN[dataset], seed=seed,
                                  results_dir=str(folder))
                # finished runs only: a run still training here must not change what a table says
                if results_path(cfg).is_file() and (record := recorded_results(cfg)) and record.get("finished"):
                    points.append(min(record["curve"], key=distance))
            pt = min(points, key=distance, default=None)  # min keeps the first of equals: results/ before a budget's
            if pt is not None and distance(pt) <= 0.3 and read(pt) is not None:
                values.append(read(pt))
        if len(values) >= 2:
            sds[alg] = statistics.stdev(values)
    if not sds:
        return None, "no two committed seeds reach this far"
    alg = max(sds, key=sds.get)
    from .plotting import LABELS, samples_label

    what = "train − test" if quantity == "gap" else quantity
    return sds[alg], f"seed sd of {LABELS[alg]} Nz = 20 {what} near {samples_label(samples)}, 3 seeds"


@functools.lru_cache(maxsize=4)
def _appendix_d_errors(path, version) -> dict:
    """{(algorithm, n_train, split): Appendix D's mean |error|} of a calibration record, read once
    per ``version`` (its modification time) of the file."""
    record = read_record(path, "the AIS calibration record", ("models",))
    return {(m["algorithm"], m["n_train"], split): s["appendix_d"]["mean_abs_error"]
            for m in record["models"]  # MCEM: the default (batch); the on-line runs calibrated before lack the field
            if m["algorithm"] != "mcem" or recorded_value(m, "mcem_m_step") == TrainConfig.mcem_m_step
            for split, s in m["splits"].items()}


def appendix_d_error(algorithm: str, n_train: int, split: str) -> float | None:
    """The Appendix-D estimate's mean absolute error against quadrature on a Figure-3 model of
    this kind (``AIS_CALIBRATION``; MCEM: the default, batch), or None where that record lacks it."""
    if not AIS_CALIBRATION.is_file():
        return None
    return _appendix_d_errors(AIS_CALIBRATION, AIS_CALIBRATION.stat().st_mtime_ns).get((algorithm, n_train, split))


def seed_claim(text: str, measured: str, margin: float, dataset: str, samples: float,
               quantity: str = "train") -> dict:
    """A claim about one run per setting, its ``margin`` weighed against twice the seed sd of
    ``quantity`` near ``samples`` (``seed_spread``); where no two seeds reach that far the row has
    no verdict (``unjudged``), never a zero error."""
    sd, where = seed_spread(dataset, samples, quantity)
    return claim(text, measured, margin, 2 * sd, f"2 x {where}") if sd is not None else unjudged(text, measured, where)


def figure2_claims(results: list[dict]) -> list[dict]:
    """The paper's Figure-2 claims, checked on the last point of our curves (``claims`` rows):
    AEVB reaches a higher bound than wake-sleep at every Nz, on train and test; and (MNIST)
    superfluous latents do not cause overfitting: with Nz = 200, train - test stays below 2
    nats (the paper's own end points differ by about 2). Each margin is weighed against twice
    the seed sd measured at that sample count (``seed_spread``); where no two seeds reach it,
    the row has no verdict (``unjudged``), never a zero error."""
    last = {(r["config"]["n_z"], r["algorithm"]): r["curve"][-1] for r in results}
    if not last:
        return []
    dataset = results[0]["config"]["dataset"]
    x = max(pt["samples"] for pt in last.values())

    def judged(text, measured, margin, quantity="train"):
        return seed_claim(text, measured, margin, dataset, x, quantity)

    rows = []
    for nz in sorted({k[0] for k in last}):
        a, w = last.get((nz, "aevb")), last.get((nz, "wake_sleep"))
        if a and w:
            # the claim holds by the smaller of its two margins, train and test
            rows.append(judged(f"AEVB above wake-sleep, Nz = {nz}",
                               f"train {a['train']:.1f} vs {w['train']:.1f}, test {a['test']:.1f} vs {w['test']:.1f}",
                               min(a["train"] - w["train"], a["test"] - w["test"])))
    big = last.get((200, "aevb"))
    if dataset == "mnist" and big:
        gap = big["train"] - big["test"]
        rows.append(judged("Nz = 200 does not overfit (AEVB): train − test < 2 nats",
                           f"train {big['train']:.1f}, test {big['test']:.1f}, gap {gap:+.2f}", 2.0 - gap, "gap"))
    return rows


# --- Figure 3: log p(x) along training --------------------------------------------------

def likelihood_curve_path(cfg: TrainConfig) -> Path:
    """Where ``figure3_job`` keeps a run's log p(x) curve."""
    return Path(cfg.results_dir) / f"{cfg.name}_likelihood_curve.json"


def figure3_job(cfg: TrainConfig, points: list[int], ll_n: int, is_samples: int, allow_training: bool = True,
                report=None, deadline: float | None = None) -> dict:
    """Train ``cfg`` and estimate log p(x) of the first ``ll_n`` train and test images at each of
    ``points`` (Appendix D; importance sampling with q(z|x) beside it where an encoder exists), on
    the run's device.

    Writes ``<run>_likelihood_curve.json`` after every point; a rerun skips the points done.
    ``deadline`` (a ``time.time()`` value) stops the training at a checkpoint (``TimeLimitReached``).
    """
    checks.at_least("ll_n", ll_n)
    checks.at_least("is_samples", is_samples, 0)
    checks.check("points", points, (list, tuple), lambda v: len(v) > 0 and all(checks.is_kind(t, int) and t > 0
                                                                               for t in v),
                 "a non-empty list of positive sample counts")
    path = likelihood_curve_path(cfg)
    settings = {"ll_n": ll_n, "is_samples": is_samples, "estimator": "appendix_d",
                "hmc_kde": APPENDIX_D}
    what = f"the log p(x) curve of run {cfg.name!r}"
    record = existing_record(path, what, lambda r: {**differences(r, {"settings": settings}),
                                                    **_config_differences(r, cfg)},
                             "compute these settings in another output folder (output_dir)",
                             required=("settings", "config", "points"))
    if record is not None:
        check_curve_record(record, path)
    record = record or {"name": cfg.name, "algorithm": cfg.algorithm, "config": cfg.as_record(),
                        "settings": settings, "points": []}
    have = {pt["target"] for pt in record["points"]}
    todo = [t for t in points if t not in have]
    if todo and not allow_training:
        raise MissingResultError(f"{path} lacks log p(x) at {todo} samples; training is off (allow_training=False)")
    device = resolve_device(cfg.device)
    splits = {s: evaluation_images(cfg, s, ll_n).to(device) for s in ("train", "test")} if todo else {}
    for target in todo:
        step_cfg = dataclasses.replace(cfg, samples=target)
        if finished_result(step_cfg) is None:
            train(step_cfg, progress=False, log=lambda *a: None, on_progress=report, deadline=deadline)
        model, ckpt = load_trained(checkpoint_path(cfg))
        model = model.to(device)
        point = {"target": target, "samples": ckpt["run"]["samples_seen"]}
        for split, X in splits.items():
            g = seeded_generator(cfg.seed, device)
            t0 = time.perf_counter()
            ll, _, info = hmc_kde_log_likelihood(model, X, generator=g)
            point[split] = {"appendix_d": float(ll.mean()), "appendix_d_sem": float(ll.std() / math.sqrt(len(ll))),
                            "appendix_d_seconds": round(time.perf_counter() - t0, 2), **info}
            if model.has_encoder and is_samples:
                t0 = time.perf_counter()
                iw = importance_log_likelihood(model, X, is_samples, generator=g)
                point[split].update({"importance": float(iw.mean()),
                                     "importance_seconds": round(time.perf_counter() - t0, 2)})
        record["points"].append(point)
        record["points"].sort(key=lambda pt: pt["target"])
        record["provenance"] = {**provenance(), **device_provenance(device)}
        write_record(path, record, what, lambda old: keeps_points(old["points"], record["points"]))
    run = ensure_run(cfg, allow_training, report)
    return {**record, "run": run}


def check_curve_record(record: dict, path, resumable: bool = True) -> dict:
    """A Figure-3 log p(x) curve record's points: each a sample count (with the integer target it
    was trained to, where ``figure3_job`` resumes the record) and per split a finite Appendix-D
    value; anything else is refused in one line naming the file."""
    def point_ok(p):
        return (isinstance(p, dict) and checks.is_kind(p.get("samples"), float)
                and (not resumable or (checks.is_kind(p.get("target"), int) and checks.is_kind(p["samples"], int)))
                and all(isinstance(p.get(s), dict) and checks.is_kind(p[s].get("appendix_d"), float)
                        for s in ("train", "test")))
    if not isinstance(record.get("points"), list) or not all(point_ok(p) for p in record["points"]):
        raise ResultsFileError(f"log p(x) curve {path} is malformed (each point needs its samples"
                               f"{', an integer target' if resumable else ''} and a finite appendix_d per split); it "
                               f"was not used: delete it to recompute it")
    return record


def read_curve_record(path) -> dict:
    """A log p(x) curve record to read (tables): its points checked, as ``check_curve_record``."""
    return check_curve_record(read_record(path, "a log p(x) curve record", ("points",)), path, resumable=False)


def _pair_error(n: int, split: str, *algorithms) -> tuple[float, str]:
    """The error of a difference between Appendix-D estimates of these methods' models: the sum
    of their mean absolute errors against quadrature (``appendix_d_error``)."""
    errors = [appendix_d_error(a, n, split) for a in algorithms]
    if None in errors:
        return 0.0, "no quadrature calibration of this model"
    return sum(errors), "Appendix D against quadrature"


def figure3_claims(records: list[dict], paper_rows) -> list[dict]:
    """Figure 3's readings, checked on our last point (``claims`` rows): with N_train = 1000 every
    method overfits (train above test) and wake-sleep is worst; with 50,000 AEVB is best and MCEM
    last (both true along the paper's whole curves); and, stricter, per N_train and split, every
    pair of methods the paper orders at the same number of training samples (by more than its
    digitization) is ordered so by ours. Each margin is weighed against the Appendix-D
    estimator's measured error on those models (``appendix_d_error``)."""
    from .plotting import LABELS, paper_value, samples_label

    rows, last = [], {(r["config"]["n_train"], r["algorithm"]): r["points"][-1] for r in records}
    value = lambda n, a, split: last[(n, a)][split]["appendix_d"]
    small = [a for (n, a) in last if n == 1000]
    for a in small:
        margin = value(1000, a, "train") - value(1000, a, "test")
        error = sum(e for s in ("train", "test") if (e := appendix_d_error(a, 1000, s)) is not None)
        rows.append(claim(f"N = 1,000: {LABELS[a]} overfits (train above test)",
                          f"train {value(1000, a, 'train'):.1f}, test {value(1000, a, 'test'):.1f}", margin, error,
                          "Appendix D against quadrature"))
    # the readings that hold along the paper's whole curves: the worst method for N = 1000, and
    # for N = 50,000 AEVB best and MCEM (not an online algorithm) far behind
    for n, first, worst in ((1000, None, "wake_sleep"), (50_000, "aevb", "mcem")):
        algs = [a for (m, a) in last if m == n]
        if worst not in algs or (first and first not in algs):
            continue
        for split in ("train", "test"):
            pairs = [(a, worst) for a in algs if a != worst] + ([(first, a) for a in algs if a not in (first, worst)]
                                                                if first else [])
            rows.append(_ordered(f"N = {n:,}, {split}: " + (f"{LABELS[first]} highest, " if first else "")
                                 + f"{LABELS[worst]} lowest (the paper's at every x)", pairs, n, split, value, algs))
    for n in sorted({k[0] for k in last}):
        algs = [a for (m, a) in last if m == n]
        for split in ("train", "test"):
            x = max(last[(n, a)]["samples"] for a in algs)
            theirs = {a: paper_value(paper_rows, "figure3", "mnist", 3, a, split, x, n) for a in algs}
            # a paper curve below the plotted range counts as last
            known = {a: (v if v is not None else -math.inf) for a, v in theirs.items()}
            pairs = [(a, b) for a in algs for b in algs if known[a] - known[b] > DIGITIZATION["mnist"]]
            text = f"N = {n:,}, {split}: the methods ordered as the paper's at {samples_label(x)} samples"
            if all(v is None for v in theirs.values()) or not pairs:
                rows.append(unjudged(text, "the paper has no curve here" if all(v is None for v in theirs.values())
                                     else "the paper's curves meet here", "—"))
                continue
            # the paper's order as its figure resolves it: "≈" joins curves within its digitization
            order = sorted(algs, key=lambda a: -known[a])
            paper_order = LABELS[order[0]] + "".join(
                (" > " if known[a] - known[b] > DIGITIZATION["mnist"] else " ≈ ") + LABELS[b] for a, b in zip(order, order[1:]))
            rows.append(_ordered(text, pairs, n, split, value, algs, f"; paper {paper_order}"))
    return rows


def _ordered(text: str, pairs, n: int, split: str, value, algs, note: str = "") -> dict:
    """One claim that every (higher, lower) pair is so ordered (``claims.every``: its worst pair decides)."""
    from .plotting import LABELS

    items, sources = [], set()
    for hi, lo in pairs:
        error, source = _pair_error(n, split, hi, lo)
        items.append((f"{LABELS[hi]} > {LABELS[lo]}", value(n, hi, split) - value(n, lo, split), error))
        sources.add(source)
    ours = sorted(algs, key=lambda a: -value(n, a, split))
    measured = ", ".join(f"{LABELS[a]} {value(n, a, split):.1f}" for a in ours) + note
    return every(text, measured, items, "; ".join(sorted(sources)))


def figure3_tasks(p: NotebookParameters, n_trains=FIGURE3_N_TRAIN) -> list:
    """Figure 3's sweep: one ``figure3_job`` per run (``figure3_configs``), at the budget's
    evaluation points, image count and importance samples, given by name."""
    from .sweep import Task, expected_cost

    b = p.budget
    return [Task(figure3_job, (c,), c.name, c.samples, cost=expected_cost(c),
                 kwargs=dict(points=figure3_points(c, b.fig3_points), ll_n=b.ll_n,
                             is_samples=b.is_samples, allow_training=p.allow_training))
            for c in figure3_configs(p, n_trains)]


# --- a budget trained in pieces (a GPU machine without papermill) ------------------------

FIGURES = ("2", "3")


def train_piece(budget: str, figures=FIGURES, target: int | None = None, *, device: str = "auto",
                output_dir=None, seed: int = 0, datasets=None, max_minutes: float | None = None,
                algorithms=None, latents=None, start_from: str | None = None, compile: bool | str = "auto",
                draws: str = "device", together: bool = False, threads: int = 1, progress: bool = True,
                log=print) -> dict:
    """One piece of a budget's training: every run of Figures 2 and 3 (the runs the notebooks
    draw, with the budget's settings and places) trained, on ``device``, up to ``target`` training
    samples (default: the budget's own counts; Figure 3 to its last log p(x) point at or below the
    target, with those points estimated). A run already there is reused; a later piece with a
    larger target extends it from its checkpoint, keeping every point. With ``max_minutes`` the
    piece stops at that time with a checkpoint (``TimeLimitReached`` inside, not an error here):
    rerun the same command to continue. The notebooks then draw the figures with
    ``allow_training=False`` once every run reached the budget's own counts.

    ``algorithms`` and ``latents`` narrow the piece to those runs (default: all), e.g. to train
    the runs that matter most first on a slow machine. ``compile`` is ``TrainConfig.compile`` for
    every run of the piece (a runtime knob: the same runs, compiled or not), ``draws``
    ``TrainConfig.draws`` (runs whose step has its gradient by hand: AEVB, MNIST's wake-sleep),
    ``threads`` ``TrainConfig.threads`` (another runtime knob: one run left on a 2-core machine goes
    on with both; each session records its own; a regain re-runs on the record's, ``start_threads``).
    ``together``: the piece's Figure-2 runs are trained side by side in this process, after its
    Figure-3 runs (``together.train_together``: on a GPU each on its own CUDA stream, so that
    their small steps overlap; the same runs, bit for bit on a CPU).

    A run whose record is here but whose checkpoint is not (checkpoints are not in a fresh clone),
    of Figure 2 or a Figure-3 run stopped between its log p(x) points, is first re-run from its
    start to regain the checkpoint, checked against the record (``verify.restore_checkpoint``), and
    then goes on.

    ``start_from`` (a smaller budget's name, or an output folder as ``output_dir`` makes): a
    Figure-2 run not yet begun here starts from that place's finished record of the same run
    (``train.adopt_run``: the same computation, so its first samples are not trained twice; the
    record's sessions say so). Figure 3's runs always start here: their log p(x) points differ
    between budgets.

    Returns {"finished": [run names], "remaining": [run names], "time_limit": bool}."""
    from .budgets import Places, get_budget
    from .device import check_device
    from .train import TimeLimitReached, adopt_run
    from .verify import restore_checkpoint

    b = get_budget(budget)
    check_device(device)
    chosen = [f for f in FIGURES if f in figures]
    if not chosen or len(chosen) != len(set(figures)):
        raise ValueError(f"figures={figures!r} is not allowed: expected a non-empty selection of {', '.join(FIGURES)}")
    if target is not None:
        checks.at_least("target", target)
    if max_minutes is not None:
        checks.positive("max_minutes", max_minutes)
    if draws not in DRAWS:
        raise ValueError(f"draws={draws!r} is not allowed: expected {' or '.join(map(repr, DRAWS))}")
    names = tuple(FIGURE2_LATENTS) if datasets is None else tuple(datasets)
    if not names or any(d not in FIGURE2_LATENTS for d in names):
        raise ValueError(f"datasets={datasets!r} is not allowed: expected some of {', '.join(FIGURE2_LATENTS)}")
    if algorithms is not None and (not algorithms or any(a not in ALGORITHMS for a in algorithms)):
        raise ValueError(f"algorithms={algorithms!r} is not allowed: expected some of {', '.join(ALGORITHMS)}")
    if latents is not None and (not latents or any(isinstance(z, bool) or not isinstance(z, int) or z < 1
                                                   for z in latents)):
        raise ValueError(f"latents={latents!r} is not allowed: expected some latent dimensions (integers >= 1)")
    here = Places.for_budget(budget, output_dir)
    source = _source_places(budget, here, start_from)
    p = NotebookParameters({"budget": budget, "seed": seed, "device": device}, b, here)
    wanted = lambda c: ((algorithms is None or c.algorithm in algorithms)  # noqa: E731
                        and (latents is None or c.n_z in latents))
    jobs = []  # (config, Figure-3 points or None)
    if "2" in chosen:
        for dataset in names:
            jobs += [(dataclasses.replace(c, samples=min(c.samples, target or c.samples)), None)
                     for c in figure2_configs(p, dataset) if wanted(c)]
    if "3" in chosen:
        for c in filter(wanted, figure3_configs(p)):
            points = [t for t in figure3_points(c, b.fig3_points) if target is None or t <= target]
            if points:
                jobs.append((dataclasses.replace(c, samples=max(points)), points))
    if not jobs:
        raise ValueError(f"no run of Figures {', '.join(chosen)} has algorithms={algorithms!r} and latents={latents!r}")
    unwritten = [c.name for c, _ in jobs if not cpu_draws_written(c)]
    if draws != "device" and unwritten:
        raise ValueError(f"draws={draws!r} is written for the steps with their gradient by hand (AEVB; wake-sleep on "
                         f"MNIST), and this piece has runs without one ({', '.join(unwritten[:3])}"
                         f"{', ...' if len(unwritten) > 3 else ''}): narrow it with algorithms= and datasets=")
    jobs = [(dataclasses.replace(c, compile=compile, draws=draws, threads=threads), points) for c, points in jobs]
    here.make()
    deadline = time.time() + 60 * max_minutes if max_minutes else None
    finished, remaining, side_by_side = [], [], []
    for cfg, points in jobs:
        if deadline is not None and time.time() >= deadline:
            remaining.append(cfg.name)
            continue
        log(f"piece: {cfg.name} to {cfg.samples:,} samples on {device}")
        try:
            if points is None and source is not None:
                adopt_run(cfg, source.keeping(cfg), log=log)
            # a record whose checkpoint is lost (a fresh clone): regained by a checked re-run (either figure's runs)
            restore_checkpoint(cfg, deadline=deadline, progress=progress, log=log)
            if points is None:
                if together:
                    side_by_side.append(cfg)
                    continue
                train(cfg, progress=progress, log=log, deadline=deadline)
            else:
                figure3_job(cfg, points, b.ll_n, b.is_samples, deadline=deadline)
            finished.append(cfg.name)
        except TimeLimitReached as stopped:
            log(f"piece: {stopped}")
            remaining.append(cfg.name)
    if side_by_side:
        from .together import train_together

        log(f"piece: {len(side_by_side)} Figure-2 runs together on {device}")
        for cfg, done in zip(side_by_side, train_together(side_by_side, progress=progress, log=log, deadline=deadline)):
            (finished if done is not None else remaining).append(cfg.name)
    return {"finished": finished, "remaining": remaining, "time_limit": bool(remaining)}


def _source_places(budget: str, here, start_from, holding: str = "checkpoints"):
    """The places a piece's runs start from (``train_piece(start_from=...)``): a budget's name, or
    an output folder with ``holding`` (its checkpoints to train on, its results to draw); None for
    none. Refused in one line where it is ``here``."""
    from .budgets import BUDGETS, Places

    if start_from is None:
        return None
    source = Places.for_budget(start_from) if start_from in BUDGETS else Places.for_budget(budget, start_from)
    if source.results.resolve() == here.results.resolve():
        raise ValueError(f"start_from={str(start_from)!r} is not allowed: it is this budget's own place; name another "
                         f"budget ({', '.join(k for k in BUDGETS if k != budget)}) or output folder")
    where = getattr(source, holding)
    if not where.is_dir() and start_from in BUDGETS:  # a fresh clone has no checkpoints
        from .records import REPO_ROOT
        raise ValueError(f"start_from={start_from!r} is not allowed: the {start_from} budget has no {holding} here "
                         f"({where.relative_to(REPO_ROOT) if where.is_relative_to(REPO_ROOT) else where} is missing), so "
                         f"no run can start from it: leave out --start-from to train from the start")
    if not where.is_dir():
        raise ValueError(f"start_from={str(start_from)!r} is not allowed: it is neither a budget "
                         f"({', '.join(BUDGETS)}) nor an output folder with {holding}")
    return source


def figure2_so_far(budget: str, dataset: str, *, output_dir=None, start_from: str | None = None) -> list[dict]:
    """A budget's Figure-2 runs of ``dataset`` as far as each has been trained, for a figure drawn
    before every run reaches the budget's count: a run's record in the budget's place (finished at
    a piece's target, or stopped on the way), else ``start_from``'s finished record of the same
    computation (where a piece run continues from, so it is that run's beginning); a run in
    neither, or there only as another computation (another budget's settings), is left out.
    Records are read, never trained or written; checkpoints are not needed."""
    from .budgets import Places, get_budget

    if dataset not in FIGURE2_LATENTS:
        raise ValueError(f"dataset={dataset!r} is not allowed: expected one of {', '.join(FIGURE2_LATENTS)}")
    here = Places.for_budget(budget, output_dir)
    source = _source_places(budget, here, start_from, "results")
    p = NotebookParameters({"budget": budget}, get_budget(budget), here)
    found = []
    for cfg in figure2_configs(p, dataset):
        record = recorded_results(cfg)
        if record is None and source is not None:
            try:
                record = recorded_results(source.keeping(cfg))
            except RecordExistsError:  # that name there is another computation: not this run's beginning
                record = None
            record = record if record and record["finished"] else None
        if record is not None and record["curve"]:
            found.append(record)
    return found


def figure3_so_far(budget: str, *, output_dir=None) -> list[dict]:
    """A budget's Figure-3 log p(x) curves as far as each run has come (``figure3_job`` writes a
    run's curve after every point): the runs notebook 05 draws that have a point in the budget's
    place and are this budget's computation (a curve there of other settings is left out). Records
    are read, never trained or written. Figure 3's runs always start in their own budget (their
    points differ between budgets), so there is no ``start_from``."""
    from .budgets import Places, get_budget

    here = Places.for_budget(budget, output_dir)
    p = NotebookParameters({"budget": budget}, get_budget(budget), here)
    found = []
    for cfg in figure3_configs(p):
        if (path := likelihood_curve_path(cfg)).is_file():
            record = read_curve_record(path)
            if record["points"] and not _config_differences(record, cfg):
                found.append(record)
    return found


# --- Figures 4 and 5: images from the decoder --------------------------------------------

def manifold_latents(n: int) -> torch.Tensor:
    """The n x n grid z = (Phi^-1(u_i), Phi^-1(u_j)), u_k = (k + 0.5)/n (Appendix A; Kingma's code),
    row-major with z_2 decreasing down the rows, as images of a plane are read."""
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    g = torch.distributions.Normal(0.0, 1.0).icdf(u).float()
    zz1, zz2 = torch.meshgrid(g, g.flip(0), indexing="xy")
    return torch.stack([zz1.reshape(-1), zz2.reshape(-1)], 1)


def decoder_images_job(cfg: TrainConfig, kind: str, n: int, allow_training: bool = True, report=None) -> dict:
    """Decoder means of a trained run: ``kind="manifold"`` on the n x n grid (Nz = 2, Figure 4) or
    ``kind="samples"`` for n draws z ~ N(0, I) (Figure 5). Stored as ``<run>_<kind>.npz`` (images as
    uint8, with the config and provenance as JSON) so figures can be redrawn without weights."""
    if kind not in ("manifold", "samples"):
        raise ValueError(f"kind={kind!r}; expected 'manifold' or 'samples'")
    checks.at_least("n", n)
    path = Path(cfg.results_dir) / f"{cfg.name}_{kind}.npz"
    done = finished_result(cfg)
    if path.is_file():
        meta, images = _read_images(path)
        want = {"n": n, "samples_seen": done["samples_seen"] if done else None}
        diff = {**differences(meta, want), **_config_differences(meta, cfg)}
        if not diff:
            return {"images": images, **meta}
        raise another_computation(path, f"decoder images of run {cfg.name!r}", diff,
                                  "delete it to redraw from the run as it is now, or use another output folder "
                                  "(output_dir)")
    check_output_file(path, "decoder images")
    model = trained_model(cfg, allow_training, report)
    with torch.no_grad():
        if kind == "manifold":
            if model.z_dim != 2:
                raise ValueError(f"a manifold needs a 2-D latent; run {cfg.name} has Nz = {model.z_dim}")
            x = model.decode(manifold_latents(n))
        else:
            x = model.decode(torch.randn(n, model.z_dim, generator=torch.Generator().manual_seed(cfg.seed)))
    images = x.clamp(0, 1).reshape(-1, *data_mod.IMAGE_SHAPE[cfg.dataset]).numpy()
    meta = {"name": cfg.name, "kind": kind, "n": n, "config": cfg.as_record(),
            "samples_seen": finished_result(cfg)["samples_seen"], "provenance": provenance()}  # trained by now
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, images=np.round(images * 255).astype(np.uint8), meta=json.dumps(meta, default=str))
    if path.exists():  # another process drew them meanwhile: theirs are kept
        raise RecordExistsError(f"{path} appeared while these images were drawn; it is kept and nothing was written")
    atomic_write_bytes(path, buf.getvalue())
    return {"images": images, **meta}


def decoder_images_task(cfg: TrainConfig, *, kind: str, n: int, allow_training: bool = True):
    """``decoder_images_job`` as a sweep task, its settings given by name."""
    from .sweep import Task

    return Task(decoder_images_job, (cfg,), cfg.name, cfg.samples, kwargs=dict(kind=kind, n=n,
                                                                               allow_training=allow_training))


def _read_images(path: Path) -> tuple[dict, np.ndarray]:
    """The metadata and images (floats in [0, 1]) of a ``decoder_images_job`` file; a damaged one is refused."""
    import zipfile
    import zlib

    regular_file(path, "decoder images")
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            raw = f["images"]
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError, TypeError, AttributeError, OSError, zlib.error) as e:
        raise ResultsFileError(f"decoder images {path} are damaged ({type(e).__name__}); they were not used: delete "
                               f"the file to redraw them (the run's checkpoint is needed)") from None
    if not isinstance(meta, dict) or raw.dtype != np.uint8 or raw.ndim != 3 or not len(raw):
        raise ResultsFileError(f"decoder images {path} are malformed (expected uint8 images of shape (n, height, "
                               f"width) and a metadata object); they were not used: delete the file to redraw them")
    return meta, raw.astype(np.float32) / 255.0


def _config_differences(record: dict, cfg: TrainConfig) -> dict:
    """Where a record's run config differs from ``cfg``'s identity (a record without one differs)."""
    config = record.get("config")
    return identity_differences(config, cfg) if isinstance(config, dict) else {"config": (config, cfg.name)}


def rms_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise root-mean-square pixel differences between image sets a (n, ...) and b (m, ...)."""
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T
    return np.sqrt(np.maximum(d2, 0) / a.shape[1])


def sharpness(images: np.ndarray) -> float:
    """Mean |2x - 1|: 1 for pure black/white pixels, 0 for uniform grey."""
    return float(np.abs(2 * images - 1).mean())


def coverage(images: np.ndarray, test_images: np.ndarray) -> float:
    """Mean distance from each test image to its nearest image of the set, over the mean distance
    of the test images to their average image: below 1 when the set describes the test images
    better than one average image does."""
    return float(rms_distances(test_images, images).min(1).mean()
                 / rms_distances(test_images, test_images.mean(0, keepdims=True)).mean())


def neighbour_ratio(images: np.ndarray, n: int) -> float:
    """For an n x n grid: mean distance between adjacent cells over that between random pairs
    (well below 1: nearby latent points give similar images, Figure 4's smoothness)."""
    g = images.reshape(n, n, -1)
    near = np.concatenate([np.sqrt(((g[1:] - g[:-1]) ** 2).mean(-1)).ravel(),
                           np.sqrt(((g[:, 1:] - g[:, :-1]) ** 2).mean(-1)).ravel()])
    d = rms_distances(images, images)
    return float(near.mean() / d[~np.eye(len(d), dtype=bool)].mean())


# --- the errors Figure 4/5's claims are weighed against (vae_utils.claims) ------------------------

def two_se(values) -> float:
    """Two standard errors of the mean of independent values: 2 sd / sqrt(n)."""
    values = np.asarray(values, dtype=float)
    return float(2 * values.std(ddof=1) / np.sqrt(len(values)))


def fold_error(statistic, images: np.ndarray, folds: int = 5) -> float:
    """Two standard errors of ``statistic(images)``, from its spread over ``folds`` equal parts
    of the images (e.g. the test images a coverage is measured against)."""
    return two_se([statistic(part) for part in np.array_split(images, folds)])


def quadrant_error(images: np.ndarray, n: int) -> float:
    """Two standard errors of an n x n grid's ``neighbour_ratio``, from its spread over the grid's
    four quadrants."""
    g, h = images.reshape(n, n, *images.shape[1:]), n // 2
    return two_se([neighbour_ratio(g[i:i + h, j:j + h].reshape(-1, *images.shape[1:]), h)
                   for i in (0, h) for j in (0, h)])


__all__ = ["two_se", "fold_error", "quadrant_error", "rms_distances", "sharpness", "coverage", "neighbour_ratio", "figure3_claims", "figure2_claims", "seed_claim", "figure3_tasks", "decoder_images_task", "seed_spread", "figure2_configs", "figure2_so_far", "figure3_configs", "figure3_points", "figure5_configs", "figure3_job", "decoder_images_job",
           "likelihood_points", "trained_model", "manifold_latents", "run_config"]
