"""The tables of the README and docs/, generated from the records in results/.

A table in a document is a block between two markers,

    <!-- table NAME: generated from results/ by `python -m vae_utils tables`; edit the code, not the table -->
    | ... |
    <!-- end table NAME -->

and NAME is a function of ``TABLES`` below: it reads the committed records (results/, the paper's
digitized curves that ship in ``vae_utils/paper``) and returns the block's Markdown, the numbers
and every sentence that states one. ``python -m vae_utils tables`` rewrites every block whose
text is not what its function now gives; ``--check`` only reports them (exit 1), and the test
suite runs the check, so a table cannot be typed by hand or go stale behind its records.
"""

from __future__ import annotations

import functools
import re
import statistics
from pathlib import Path

from . import fidelity as FD
from .benchmark import table as benchmark_table
from .budgets import NotebookParameters, Places, get_budget
from .experiments import DIGITIZATION, FIGURE2_LATENTS, figure2_configs, figure3_configs, figure2_claims, figure3_claims, likelihood_curve_path, read_curve_record
from .experiments import figure3_points, figure3_so_far
from .plotting import LABELS, PAPER_CSV, likelihood_table, method_label, load_paper_curves, load_results, paper_value, samples_label
from .sweep import finished_result
from .train import recorded_results
from .records import AIS_CALIBRATION, REPO_ROOT, RESULTS_DIR, ResultsFileError, atomic_write_bytes, keeps_points, read_json

DOCUMENTS = ("README.md", "docs/results.md", "docs/fidelity.md", "docs/performance.md")
BEGIN = re.compile(r"^<!-- table (?P<name>[a-z0-9_]+): generated from results/ by `python -m vae_utils tables`; "
                   r"edit the code, not the table -->$")
END = "<!-- end table {name} -->"


def _paper() -> list[dict]:
    return load_paper_curves(PAPER_CSV.parent)  # the package's copy, whatever $AEVB_REFERENCE_DIR says


def _f(v, digits: int = 1, sign: bool = False) -> str:
    return "—" if v is None else f"{v:{'+' if sign else ''}.{digits}f}"


def _pair(train, test, digits: int = 1) -> str:
    """'train / test', or one value where both read the same at this precision."""
    a, b = _f(train, digits), _f(test, digits)
    return a if a == b else f"{a} / {b}"


DATASETS = {"mnist": "MNIST", "frey_face": "Frey Face"}
_count = samples_label  # a sample count in the paper's style: 1e6, 3.16e5, 2.4e8


def _claims(rows: list[dict]) -> list[str]:
    """Claim rows (``vae_utils.claims``) as a list: the verdict, the claim, what was measured, the
    margin and the error it was weighed against."""
    mark = {"not held": "**not held**", "—": "no verdict"}
    return [f"- {mark.get(r['verdict'], r['verdict'])}: {r['claim']} ({r['measured']}"
            + (f"; margin {r['margin']}, error {r['error']})" if r["verdict"] != "—" else ")") for r in rows]


def _at(record: dict, samples: float, split: str):
    """A training record's value at ``samples`` (its points fall within 1 % of the paper's ticks)."""
    return FD._at(record["curve"], samples, split)


# --- the README: budgets and each budget's committed record ----------------------------------

def budgets() -> str:
    from .budgets import BUDGETS

    lines = ["| budget | Figure 2 samples per run (MNIST / Frey) | Figure 3 samples per run (N = 1000 / 50,000) "
             "| log p(x) images per split | curve evaluated on | Adagrad step |", "|---|---|---|---|---|---|"]
    for b in BUDGETS.values():
        lr = "the paper's grid" if b.lr == "auto" else f"{b.lr:g} (fixed)"
        lines.append(f"| `{b.name}` | {_count(b.mnist_samples)} / {_count(b.frey_samples)} | {_count(b.fig3_samples)} / "
                     f"{_count(b.fig3_samples_50k)} | {b.ll_n} | {b.eval_n} images per split | {lr} |")
    return "\n".join(lines)


def _budget_runs(budget: str, dataset: str) -> dict | None:
    """A budget's Figure-2 runs of ``dataset`` (the runs notebook 03 or 04 draws), keyed
    (algorithm, Nz), once every one of them has finished at the budget's count; else None."""
    p = NotebookParameters({"budget": budget}, get_budget(budget), Places.for_budget(budget))
    runs = {(c.algorithm, c.n_z): finished_result(c) for c in figure2_configs(p, dataset)}
    return None if None in runs.values() else runs


def _not_run(budget: str, notebook: str) -> str:
    return f"**Not run yet:** `python -m vae_utils reproduce --budget {budget} --only {notebook}`"


def figure2_mnist(budget: str) -> str:
    if (runs := _budget_runs(budget, "mnist")) is None:
        return _not_run(budget, "03")
    paper, nzs, at = _paper(), sorted({nz for _, nz in runs}), get_budget(budget).mnist_samples
    eval_n = sorted({r["config"]["eval_n"] for r in runs.values()})
    lines = [f"**Figure 2, MNIST, at {_count(at)} training samples** (ours from `eval_n` = "
             f"{', '.join(map(str, eval_n))} images per split; the paper's digitized, ±{DIGITIZATION['mnist']:g} nat; train / test; "
             f"— where the paper's curve is below its plot):", "",
             "| Nz | AEVB ours | AEVB paper | wake-sleep ours | wake-sleep paper |", "|---|---|---|---|---|"]
    gaps = {"aevb": [], "wake_sleep": []}
    for nz in nzs:
        cells = []
        for alg in ("aevb", "wake_sleep"):
            ours = [_at(runs[alg, nz], at, s) for s in ("train", "test")]
            theirs = [paper_value(paper, "figure2", "mnist", nz, alg, s, at) for s in ("train", "test")]
            cells += [_pair(*ours), _pair(*theirs)]
            gaps[alg] += [(abs(o - t), nz) for o, t in zip(ours, theirs) if None not in (o, t)]
        lines.append(f"| {nz} | " + " | ".join(cells) + " |")
    worst = {alg: max(g) for alg, g in gaps.items() if g}
    lines += ["", "Where the paper's curve is on its plot, the largest distance to it: " + "; ".join(
        f"{LABELS[alg]} {d:.1f} nats (Nz = {nz})" for alg, (d, nz) in worst.items()) + ". The paper's claims, on "
        "the last point of each curve:", ""]
    lines += _claims(figure2_claims([runs[k] for k in sorted(runs)]))
    return "\n".join(lines)


def figure2_frey(budget: str) -> str:
    if (runs := _budget_runs(budget, "frey_face")) is None:
        return _not_run(budget, "04")
    paper, nzs, at = _paper(), sorted({nz for _, nz in runs}), min(r["curve"][-1]["samples"] for r in runs.values())
    lines = [f"**Figure 2, Frey Face, at {_count(at)} training samples** (train / test; the paper's ±10 nats):", "",
             "| Nz | AEVB ours | AEVB paper | wake-sleep ours | wake-sleep paper |", "|---|---|---|---|---|"]
    for nz in nzs:
        cells = []
        for alg in ("aevb", "wake_sleep"):
            r = runs.get((alg, nz))
            cells += [_pair(_at(r, at, "train"), _at(r, at, "test"), 0) if r else "not run",
                      _pair(*(paper_value(paper, "figure2", "frey_face", nz, alg, s, at) for s in ("train", "test")), 0)]
        lines.append(f"| {nz} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure3(budget: str) -> str:
    paper = _paper()
    # the runs notebook 05 draws at this budget (MCEM: batch; the on-line runs it drew before keep their records)
    p = NotebookParameters({"budget": budget}, get_budget(budget), Places.for_budget(budget))
    configs = figure3_configs(p)
    if not all(likelihood_curve_path(c).is_file() for c in configs):
        return _not_run(budget, "05")
    records = [read_curve_record(likelihood_curve_path(c)) for c in configs]
    order = {"aevb": 0, "mcem": 1, "wake_sleep": 2}
    records.sort(key=lambda r: (r["config"]["n_train"], order[r["algorithm"]]))
    at = {r["points"][-1]["samples"] for r in records}
    ll_n = sorted({r["settings"]["ll_n"] for r in records})
    lines = [f"**Figure 3 at {' / '.join(_count(x) for x in sorted(at))} training samples** (Appendix D on the first "
             f"{', '.join(map(str, ll_n))} images per split; the paper's ±{DIGITIZATION['mnist']:g} nat; — where its curve is off the plot):",
             "", "| N train | method | ours train / test | paper train / test |", "|---|---|---|---|"]
    for r in records:
        c, last = r["config"], r["points"][-1]
        theirs = [paper_value(paper, "figure3", "mnist", c["n_z"], r["algorithm"], s, last["samples"], c["n_train"])
                  for s in ("train", "test")]
        lines.append(f"| {c['n_train']:,} | {LABELS[r['algorithm']]} | "
                     f"{_f(last['train']['appendix_d'])} / {_f(last['test']['appendix_d'])} | "
                     f"{_f(theirs[0])} / {_f(theirs[1])} |")
    lines += ["", "Figure 3's readings, on the last point of each curve:", ""]
    lines += _claims(figure3_claims(records, paper))
    return "\n".join(lines)


def _devices(r: dict) -> str:
    """Where a run trained: 'cpu', 'cpu, cuda from 5e7', or 'cuda with cpu draws' (``draws="cpu"``:
    the CPU generator's minibatches and noise, a way of its own beside the device's)."""
    ds = r.get("devices") or [{"device": "cpu", "from_samples": 0}]
    return ", ".join(d["device"] + (f" with {d['draws']} draws" if d.get("draws") else "")
                     + (f" from {_count(d['from_samples'])}" if d["from_samples"] else "") for d in ds)


PROGRESS_FROM = 3e6  # from where a curve is held to the paper's (earlier, the digitized curves are too coarse)


def paper_progress() -> str:
    """The paper budget's Figure-2 runs trained so far (``results/paper``, trained in pieces): how
    far each has reached against the paper's count, with ours beside the paper's at each decade."""
    b = get_budget("paper")
    places = Places.for_budget("paper")
    p = NotebookParameters({"budget": "paper"}, b, places)
    configs = [c for d in FIGURE2_LATENTS for c in figure2_configs(p, d)]
    records = {r["name"]: r for r in (load_results("*.json", places.results) if places.results.is_dir() else [])}
    runs = [(c, records[c.name]) for c in configs if c.name in records]
    if not runs:
        return (f"**No run of the paper budget yet:** `python -m vae_utils piece --budget paper --start-from standard` "
                f"trains them ({len(configs)} Figure-2 runs).")
    paper, ticks = _paper(), (10 ** 7, 10 ** 7.5, 10 ** 8, 2.4e8)
    lines = ["| run | reached / the paper's | trained on | " + " | ".join(f"{_count(x)}: ours / paper" for x in ticks)
             + f" | farthest from the paper's, from {_count(PROGRESS_FROM)} |", "|---|---|---|" + "---|" * (len(ticks) + 1)]
    done = []
    for c, r in runs:
        split, digits = FD.COMPARED_SPLIT[c.dataset], 0 if c.dataset == "frey_face" else 1
        if r["samples_seen"] >= c.samples:
            done.append(f"{LABELS[c.algorithm]} {DATASETS[c.dataset]} Nz = {c.n_z}")
        cells = [f"{_f(_at(r, x, split), digits)} / {_f(paper_value(paper, 'figure2', c.dataset, c.n_z, c.algorithm, split, x), digits)}"
                 if x <= c.samples else "" for x in ticks]
        gaps = [(abs(pt[split] - v), pt[split] - v, pt["samples"]) for pt in r["curve"] if pt["samples"] >= PROGRESS_FROM
                and (v := paper_value(paper, "figure2", c.dataset, c.n_z, c.algorithm, split, pt["samples"])) is not None]
        far = max(gaps, default=None)
        lines.append(f"| {_describe(r)} | {_count(r['samples_seen'])} / {_count(c.samples)} | {_devices(r)} | "
                     + " | ".join(cells) + f" | {_f(far[1], digits, sign=True) + ' at ' + _count(far[2]) if far else '—'} |")
    lines += ["", f"The {FD.COMPARED_SPLIT['mnist']} bound on MNIST (±{DIGITIZATION['mnist']:g} nat digitization), the "
              f"{FD.COMPARED_SPLIT['frey_face']} bound on Frey Face (±{DIGITIZATION['frey_face']:g}), as Figure 2's gaps are measured "
              f"(`docs/fidelity.md`). {len(done)} of the {len(configs)} Figure-2 runs reach the paper's count"
              + (f" ({', '.join(done)})" if done else "")
              + f"; {len(runs) - len(done)} {'is' if len(runs) - len(done) == 1 else 'are'} on the way, "
                f"{len(configs) - len(runs)} not begun."]
    return "\n".join(lines)


def paper_progress_figure3() -> str:
    """The paper budget's Figure-3 runs trained so far (``experiments.figure3_so_far``): each run's
    log p(x) points estimated against the budget's, and ours beside the paper's at its last point;
    once every run reaches the paper's count, Figure 3's readings on those last points."""
    b = get_budget("paper")
    p = NotebookParameters({"budget": "paper"}, b, Places.for_budget("paper"))
    configs, paper = figure3_configs(p), _paper()
    records = {r["name"]: r for r in figure3_so_far("paper")}
    if not records:
        return (f"**No Figure-3 run of the paper budget yet:** `python -m vae_utils piece --budget paper --figures 3` "
                f"trains them ({len(configs)} runs).")
    lines = ["| N train | method | log p(x) points / the budget's | reached / the paper's | at its last point: ours "
             "train / test | the paper's there | minutes: training + log p(x) |", "|---|---|---|---|---|---|---|"]
    done = []
    for c in configs:
        r, wanted = records.get(c.name), figure3_points(c, b.fig3_points)
        head = f"| {c.n_train:,} | {LABELS[c.algorithm]} | "
        if r is None:
            lines.append(head + f"0 / {len(wanted)} | not begun | | | |")
            continue
        run = recorded_results(c)  # the training record beside the curve (its time; the estimates' own in the curve)
        spent = sum(pt[s].get(k, 0) for pt in r["points"] for s in ("train", "test")
                    for k in ("appendix_d_seconds", "importance_seconds"))
        minutes = f"{run['train_time_s'] / 60:.0f} + {spent / 60:.0f}" if run else "—"
        last = r["points"][-1]
        theirs = [paper_value(paper, "figure3", "mnist", c.n_z, c.algorithm, s, last["samples"], c.n_train)
                  for s in ("train", "test")]
        if last["samples"] >= c.samples:
            done.append(r)
        lines.append(head + f"{len(r['points'])} / {len(wanted)} | {_count(last['samples'])} / {_count(c.samples)} | "
                     f"{_f(last['train']['appendix_d'])} / {_f(last['test']['appendix_d'])} | "
                     f"{_f(theirs[0])} / {_f(theirs[1])} | {minutes} |")
    lines += ["", f"Appendix D on the first {b.ll_n} images per split; the paper's digitized curves ±"
              f"{DIGITIZATION['mnist']:g} nat, — where its curve is off the plot. {len(done)} of the {len(configs)} "
              f"Figure-3 runs reach the paper's count; {len(records) - len(done)} on the way, "
              f"{len(configs) - len(records)} not begun."]
    if len(done) == len(configs):
        lines += ["", "Figure 3's readings, on the last point of each curve:", ""]
        lines += _claims(figure3_claims(done, paper))
    return "\n".join(lines)


SEED_CHECK = ("mnist", 20, "aevb")  # the GPU's check: MNIST AEVB Nz = 20 seeds on each device, against the paper
SEED_TICKS = (10 ** 6.5, 10 ** 7, 10 ** 7.5, 10 ** 8, 10 ** 8.25)


def paper_seeds() -> str:
    """MNIST AEVB Nz = 20, every seed of the paper budget (and the standard budget's seeds, the same
    computation stopped at 1e7): where each trained, ours beside the paper's, and each device's
    runs against the paper's curve from ``PROGRESS_FROM`` on, within the digitization plus twice
    the seed sd of that device's runs at that point (``fidelity.gap_status``'s margin)."""
    dataset, n_z, algorithm = SEED_CHECK
    split, paper = FD.COMPARED_SPLIT[dataset], _paper()
    pattern = f"{algorithm}_{dataset}_nz{n_z}_h500_grey_n50000_seed*.json"
    runs = {("paper", r["config"]["seed"]): r for r in load_results(pattern, Places.for_budget("paper").results)}
    # a standard-budget run continued in the paper budget is its record's start; one on another device is a run apart
    runs |= {("standard", r["config"]["seed"]): r for r in load_results(pattern, Places.for_budget("standard").results)
             if not (("paper", r["config"]["seed"]) in runs
                     and keeps_points(r["curve"], runs[("paper", r["config"]["seed"])]["curve"]))}
    if not any(b == "paper" and _devices(r) != "cpu" for (b, _), r in runs.items()):
        return "**No GPU run yet:** `bash tools/gpu_lease.sh` on a GPU machine trains seeds 1 and 2 (docs/performance.md)."
    lines = ["| run | trained on | reached | samples/s | " + " | ".join(_count(x) for x in SEED_TICKS) + " |",
             "|---|---|---|---|" + "---|" * len(SEED_TICKS),
             "| the paper (digitized) | | | | " + " | ".join(
                 _f(paper_value(paper, "figure2", dataset, n_z, algorithm, split, x)) for x in SEED_TICKS) + " |"]
    kinds: dict[str, list[dict]] = {}
    for (budget, seed), r in sorted(runs.items(), key=lambda kv: (_devices(kv[1]), kv[0][1], kv[0][0])):
        kinds.setdefault(_devices(r), []).append(r)
        gpu = next((s["provenance"]["gpu"] for s in r.get("sessions", []) if s.get("provenance", {}).get("gpu")), "")
        lines.append(f"| seed {seed} ({budget} budget) | {_devices(r)}{f' ({gpu})' if gpu else ''} | "
                     f"{_count(r['samples_seen'])} | {r['samples_per_s']:,.0f} | "
                     + " | ".join(_f(_at(r, x, split), 2) for x in SEED_TICKS) + " |")
    other = "test" if split == "train" else "train"
    return "\n".join(lines + ["", f"Ours − the paper's, {split} bound, from {_count(PROGRESS_FROM)} on: "
                              + "; ".join(_seed_verdicts(kinds, split)) + ".",
                              "", f"The same for the {other} bound (the paper's {other} line, where it is digitized): "
                              + "; ".join(_seed_verdicts(kinds, other)) + "."])


def _seed_verdicts(kinds: dict[str, list[dict]], split: str) -> list[str]:
    """Each device's runs against the paper's ``split`` line from ``PROGRESS_FROM`` on: at how many
    points all lie within the digitization plus twice their sd, and the worst of the others."""
    dataset, n_z, algorithm = SEED_CHECK
    paper, verdicts = _paper(), []
    for kind, rs in kinds.items():
        points = sorted({p["samples"] for r in rs for p in r["curve"] if p["samples"] >= PROGRESS_FROM})
        checked, outside = 0, []
        for x in points:
            theirs = paper_value(paper, "figure2", dataset, n_z, algorithm, split, x)
            ours = [v for r in rs if (v := _at(r, x, split)) is not None]
            if theirs is None or not ours:
                continue
            margin = DIGITIZATION["mnist"] + (2 * statistics.stdev(ours) if len(ours) > 1 else 0.0)
            checked += 1
            worst = max(ours, key=lambda v: abs(v - theirs))
            if abs(worst - theirs) > margin:
                outside.append(f"{worst - theirs:+.2f} at {_count(x)} (margin {margin:.2f})")
        verdicts.append(f"**{kind}** ({len(rs)} run{'s' * (len(rs) > 1)}): within the digitization (±{DIGITIZATION['mnist']:g}) plus twice "
                        f"the seeds' sd at {checked - len(outside)} of {checked} points"
                        + (f"; outside at {', '.join(outside)}" if outside else ""))
    return verdicts


# --- docs/results.md: the engine's long runs ---------------------------------------------------

def _describe(r: dict) -> str:
    c = r["config"]
    data = DATASETS[c["dataset"]]
    return (f"{LABELS[r['algorithm']]}, {data}, Nz = {c['n_z']}, {c['n_hidden']} hidden, "
            f"{c['binarize'] + ' binarisation' if c['binarize'] else 'grey levels'}")


def figure2_long_runs() -> str:
    paper = _paper()
    runs = [r for r in load_results("*_seed0.json", RESULTS_DIR)
            if r["config"]["n_train"] in (50_000, None) and r["algorithm"] != "mcem"]
    lines = ["| run | samples | train | test | paper train / test | Adagrad step | samples/s |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(runs, key=lambda r: (r["config"]["dataset"] != "mnist", r["algorithm"], r["config"]["binarize"] or "")):
        c = r["config"]
        for at in (10 ** 6, 10 ** 7):
            if _at(r, at, "train") is None:
                continue
            theirs = [paper_value(paper, "figure2", c["dataset"], c["n_z"], r["algorithm"], s, at) for s in ("train", "test")]
            lines.append(f"| {_describe(r)} | {_count(at)} | {_f(_at(r, at, 'train'))} | {_f(_at(r, at, 'test'))} | "
                         f"{_pair(*theirs)} | {r['lr']} | {r['samples_per_s']:.0f} |")
    return "\n".join(lines)


def seed_spread() -> str:
    paper = _paper()
    ticks = (10 ** 5, 10 ** 5.5, 10 ** 6)
    lines = ["| run | seeds | " + " | ".join(_count(x) for x in ticks) + f" | range / sd at {_count(ticks[-1])} "
             f"| paper at {_count(ticks[-1])} |", "|---|---|" + "---|" * (len(ticks) + 2)]
    for pattern in ("aevb_mnist_nz20_h500_grey_n50000_seed*.json", "aevb_frey_face_nz20_h200_grey_nall_seed*.json"):
        runs = sorted(load_results(pattern, RESULTS_DIR), key=lambda r: r["config"]["seed"])
        if not runs:
            continue
        digits = 0 if runs[0]["config"]["dataset"] == "frey_face" else 1
        cells = [" / ".join(_f(_at(r, x, "train"), digits) for r in runs) for x in ticks]
        last = [_at(r, ticks[-1], "train") for r in runs]
        c = runs[0]["config"]
        spread = (f"{max(last) - min(last):.2f} / {statistics.stdev(last):.2f}" if len(last) > 1 and None not in last else "—")
        lines.append(f"| {_describe(runs[0])} | {', '.join(str(r['config']['seed']) for r in runs)} | " + " | ".join(cells)
                     + f" | {spread} | {_f(paper_value(paper, 'figure2', c['dataset'], c['n_z'], 'aevb', 'train', ticks[-1]), digits)} |")
    return "\n".join(lines)


def figure3_long_runs() -> str:
    return likelihood_table(_paper(), RESULTS_DIR)


def quadrature() -> str:
    lines = ["| model, split | points | quadrature (truth) | App. D | App. D mean abs. error | IS | IS mean abs. error |",
             "|---|---|---|---|---|---|---|"]
    for p in sorted(RESULTS_DIR.glob("*_likelihood.json")):
        r = read_json(p)
        for split in ("train", "test"):
            q = r[split].get("quadrature")
            if q:
                lines.append(f"| {method_label(r['config'])}, {split} | {q['n']} | {q['exact_mean']:.2f} | "
                             f"{q['hmc_kde_mean']:.2f} | {q['hmc_kde_mean_abs_error']:.2f} | "
                             f"{_f(q.get('importance_mean'), 2)} | {_f(q.get('importance_mean_abs_error'), 2)} |")
    return "\n".join(lines)


def verify_noise() -> str:
    from .verify import VERIFY_TOLERANCE

    record = read_json(RESULTS_DIR / "verify_float_noise.json")
    lines = [f"| run | largest difference, 1 vs 2 threads, {_count(record['samples'])} samples | tolerance |", "|---|---|---|"]
    for r in record["runs"]:
        lines.append(f"| {r['run']} | {r['largest_difference']:.2g} nat | {VERIFY_TOLERANCE[r['algorithm']]:g} |")
    return "\n".join(lines)


TRIAL_VERDICT_BUDGETS = ("quick", "standard", "paper")  # whose records' step-size trials were re-run (docs/results.md)


def trial_verdicts() -> str:
    """The re-run step-size trials (``verify --trial``, verdicts in ``results/<budget>/verify/``):
    per budget, how many chose the record's step again and how many are identical, on any machine
    and on one like the record's; then every trial that is not identical, with the step chosen and
    its value in the record and now."""
    rows = {b: [read_json(p) for p in sorted((RESULTS_DIR / b / "verify").glob("*_trial_verify.json"))]
            for b in TRIAL_VERDICT_BUDGETS}
    same_step = lambda v: v["chosen"]["recorded"] == v["chosen"]["rerun"]  # noqa: E731
    identical = lambda v: v["verdict"] == "identical"  # noqa: E731
    lines = ["| budget | trials re-run | the record's step chosen again | identical | made on a machine like the re-run's: "
             "identical |", "|---|---|---|---|---|"]
    for budget, vs in rows.items():
        alike = [v for v in vs if not v["machine_difference"]]
        lines.append(f"| {budget} | {len(vs)} | {sum(map(same_step, vs))} | {sum(map(identical, vs))} | "
                     f"{sum(map(identical, alike))} of {len(alike)} |")
    lines += ["", "| budget | run | made on | step chosen: record / now | its value: record / now | verdict | "
              "largest difference |", "|---|---|---|---|---|---|---|"]
    for budget, vs in rows.items():
        for v in vs:
            if not identical(v):
                mine = v["comparison"][str(v["chosen"]["recorded"])]  # the recorded step's values
                lines.append(f"| {budget} | {v['run']} | {v['recorded_machine'].get('cpu_model') or 'not recorded'} | "
                             f"{v['chosen']['recorded']:g} / {v['chosen']['rerun']:g} | "
                             f"{_pair(mine['recorded'], mine['rerun'], 2)} | {v['verdict']} | "
                             f"{v['largest_difference']:.2g} nat |")
    return "\n".join(lines)


# --- docs/fidelity.md: the gaps, tested one cause at a time -------------------------------------

def fidelity_frey_face() -> str:
    return FD.markdown(FD.table("frey_face"))


def fidelity_wake_sleep() -> str:
    return FD.markdown(FD.table("wake_sleep"))


def fidelity_wake_sleep_nz200() -> str:
    return FD.markdown(FD.table("wake_sleep_nz200"))


def wake_sleep_nz200_kl() -> str:
    if not FD.LATENT_KL.is_file():
        return "**Not run yet:** `python -m vae_utils fidelity latent-kl --seeds 0,1,2`"
    return FD.latent_kl_markdown(read_json(FD.LATENT_KL))


def mnist_train_blocks() -> str:
    """Per finished paper-budget MNIST run: the curve's train value (the first block of training
    images), the other blocks, the whole training split and the test split, beside the paper's
    end points (``fidelity.train_blocks_study``)."""
    if not FD.TRAIN_BLOCKS.is_file():
        return "**Not run yet:** `python -m vae_utils fidelity train-blocks`"
    paper, block, records = _paper(), f"{FD.TRAIN_BLOCK:,}", Places.for_budget("paper").results
    lines = [f"| run | samples | first {block} (the curve's train) | the next blocks of {block} | whole split | "
             "first − whole | test | the paper's train / test there |", "|---|---|---|---|---|---|---|---|"]
    for r in read_json(FD.TRAIN_BLOCKS)["results"]:
        cfg = read_json(records / f"{r['run']}.json")["config"]  # the run's identity, from its own record
        theirs = [paper_value(paper, "figure2", "mnist", cfg["n_z"], cfg["algorithm"], s, r["samples_seen"])
                  for s in ("train", "test")]
        lines.append(f"| {LABELS[cfg['algorithm']]}, Nz = {cfg['n_z']}, seed {cfg['seed']} | {_count(r['samples_seen'])} | "
                     f"{r['blocks'][0]:.2f} | {' / '.join(f'{b:.2f}' for b in r['blocks'][1:])} | {r['whole']:.2f} | "
                     f"{r['blocks'][0] - r['whole']:+.2f} | {r['test']:.2f} | {_pair(*theirs)} |")
    return "\n".join(lines)


def _mnist_late(e, record_label: str, variant_label: str) -> str:
    """The paper budget's AEVB MNIST Nz = 20 seed-0 run (the record) beside the same run trained
    again with one setting changed (``e``, one of ``fidelity.LATE``: the same seed and so the same
    draws): train, test and the train − test gap of each, their difference, and the paper's."""
    pts, command = FD.late_points(e), "`" + FD.command(e, 2.4e8).replace("<S>", "0") + "`"
    if pts is None:
        return "**Not run yet:** " + command
    variant, record, rows = pts
    if not rows:
        return f"**Begun, no tick reached yet** ({_count(variant['samples_seen'])} samples): " + command
    gap = lambda train, test: None if train is None or test is None else train - test
    lines = [f"| samples | {record_label}: train / test (train − test) | {variant_label}: train / test (train − test) | "
             f"{variant_label} − {record_label}: train / test | the paper's train / test (train − test) |", "|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{r[f'train_{w}']:.2f} / {r[f'test_{w}']:.2f} ({gap(r[f'train_{w}'], r[f'test_{w}']):+.2f})"
                 for w in ("record", "variant")]
        lines.append(f"| {_count(r['samples'])} | {cells[0]} | {cells[1]} | "
                     f"{r['train_variant'] - r['train_record']:+.2f} / {r['test_variant'] - r['test_record']:+.2f} | "
                     f"{_f(r['paper_train'])} / {_f(r['paper_test'])} ({_f(gap(r['paper_train'], r['paper_test']), sign=True)}) |")
    r = rows[-1]
    lines += ["", f"The run {variant_label}: {_count(variant['samples_seen'])} "
              f"({'finished' if variant['finished'] else 'not finished'}), step {variant['lr']} (the run {record_label}: "
              f"{record['lr']}). At {_count(r['samples'])}, train − the paper's train: {r['train_variant'] - r['paper_train']:+.2f} "
              f"{variant_label}, {r['train_record'] - r['paper_train']:+.2f} {record_label}; test − the paper's test: "
              f"{r['test_variant'] - r['paper_test']:+.2f} and {r['test_record'] - r['paper_test']:+.2f}; "
              f"the train − test gap {gap(r['train_variant'], r['test_variant']):+.2f} {variant_label}, "
              f"{gap(r['train_record'], r['test_record']):+.2f} {record_label}, the paper's "
              f"{_f(gap(r['paper_train'], r['paper_test']), sign=True)}."]
    m = FD.at_train_value(variant["curve"], r["train_record"])
    lines[-1] += (f" At equal fit: the run {variant_label} reached {m['train']:.2f} on train at {_count(m['samples'])}, "
                  f"its gap there {gap(m['train'], m['test']):+.2f} (the run {record_label}: {r['train_record']:.2f} at "
                  f"{_count(r['samples'])}, gap {gap(r['train_record'], r['test_record']):+.2f}).")
    return "\n".join(lines)


def mnist_weight_prior() -> str:
    """The record beside the same run trained without the weight prior (``fidelity.NO_PRIOR``)."""
    return _mnist_late(FD.NO_PRIOR, "with the prior", "without the prior")


def mnist_late_step() -> str:
    """The record (its trial picked the step 0.01) beside the same run at the grid's step 0.02
    (``fidelity.LATE_STEP``)."""
    return _mnist_late(FD.LATE_STEP, "at step 0.01", "at step 0.02")


def _way(g0: float, g1: float) -> str:
    """A Frey Face gap from ``g0`` to ``g1``: closes (within 20 nats, twice the digitization),
    narrows (to less than half), or stays."""
    return "closes" if abs(g1) <= 20 else "narrows" if abs(g1) < 0.5 * abs(g0) else "stays"


def frey_long_run() -> str:
    """Today's Frey Face Nz = 20 default trained to the paper's end: ours (mean over the seeds
    run) against the paper at its points from 1e6 on (below about 4e5 its curves are a straight
    line from the initial bound, not measurements), with the mean minibatch bound since the
    previous point (what anglepy logged as its train value) beside the bound on the whole
    training set."""
    long = FD.frey_long_points()
    if long is None:
        return "**Not run yet:** `" + FD.command(FD.FREY_LONG, 1e8).replace("<S>", "0") + "`"
    seeds, runs, rows = long
    lines = ["| samples | seeds | ours train (whole set) | ours train (minibatch mean, as anglepy logged) | ours test | "
             "paper train / test | ours − paper, test |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {_count(p['samples'])} | {p['seeds']} | {_f(p['train'], 0)} | {_f(p['minibatch'], 0)} | "
              f"{_f(p['test'], 0)} | {_pair(p['paper_train'], p['paper_test'], 0)} | {_f(p['gap'], 0, sign=True)}"
              + (f" ± {p['gap_sd']:.0f}" if p["gap_sd"] is not None else "") + " |" for p in rows]
    known = [(p["samples"], p["gap"]) for p in rows if p["gap"] is not None]
    if len(known) >= 2:
        (x0, g0), (x1, g1) = known[0], known[-1]
        state = ", ".join(f"seed {s} {_count(r['samples_seen'])} ({'finished' if r['finished'] else 'still running'})"
                          for s, r in runs.items())
        lines += ["", f"Step {', '.join(sorted({str(r['lr']) for r in runs.values()}))}; {state}. The mean test gap "
                  f"goes from {g0:+.0f} at {_count(x0)} to {g1:+.0f} at {_count(x1)}: it {_way(g0, g1)} "
                  f"(closes: within 20 nats, twice the digitization)."]
    return "\n".join(lines)


def _gap_trend(gaps: list[float]) -> str:
    """'narrows (+346 to +72)': the first gap against the last (``_way``)."""
    return "—" if len(gaps) < 2 else f"{_way(gaps[0], gaps[-1])} ({gaps[0]:+.0f} to {gaps[-1]:+.0f})"


def frey_latents() -> str:
    """Figure 2's Frey Face runs (every latent size, AEVB and wake-sleep, seed 0) trained on past
    the quick budget (each row the longest of results/ and results/paper), against the paper from
    1e6 on: test values (the paper's train curve is the lagging minibatch mean anglepy logged),
    ours − paper; then the candidates tried on wake-sleep's climb (``fidelity``, gap ``wake_sleep_frey``)."""
    paper = _paper()
    ticks = (10 ** 6, 10 ** 6.5, 10 ** 7, 10 ** 8)
    lines = ["| run | samples reached | " + " | ".join(f"test at {_count(x)}: ours / paper (ours − paper)" for x in ticks)
             + " | the gap from 1e6 to the last tick |", "|---|---|" + "---|" * (len(ticks) + 1)]

    def row(label, r, alg, nz):
        cells, gaps = [], []
        for x in ticks:
            ours, theirs = _at(r, x, "test"), paper_value(paper, "figure2", "frey_face", nz, alg, "test", x)
            cells.append("—" if ours is None else f"{ours:.0f} / {_f(theirs, 0)}"
                         + ("" if theirs is None else f" ({ours - theirs:+.0f})"))
            if ours is not None and theirs is not None:
                gaps.append(ours - theirs)
        lines.append(f"| {label} | {_count(r['samples_seen'])} | " + " | ".join(cells) + f" | {_gap_trend(gaps)} |")

    long, paper_budget = FD._results(FD.FREY_LONG), Places.for_budget("paper").results
    for alg in ("aevb", "wake_sleep"):
        for nz in FIGURE2_LATENTS["frey_face"]:
            name = f"{alg}_frey_face_nz{nz}_h200_grey_nall_seed0.json"  # and its paper-budget run, where begun
            runs = load_results(name, RESULTS_DIR) + (load_results(name, paper_budget) if paper_budget.is_dir() else [])
            if alg == "aevb" and nz == FD.BASE["frey_face"]["n_z"] and 0 in long:
                runs.append(long[0])
            if runs:
                row(f"{LABELS[alg]}, Nz = {nz}", max(runs, key=lambda r: r["samples_seen"]), alg, nz)
    for e in FD.experiments("wake_sleep_frey"):
        if not e.default and (r := FD._results(e).get(0)) is not None:
            base = FD.BASE[e.gap]
            row(f"{LABELS[base['algorithm']]}, Nz = {base['n_z']}, {e.short} (`{e.name}`)", r,
                base["algorithm"], base["n_z"])
    return "\n".join(lines)


def mcem_xaxis() -> str:
    record = read_curve_record(likelihood_curve_path(FD.mcem_curve_config(0)))
    return FD.mcem_markdown({split: FD.mcem_xaxis_table(record, split) for split in ("train", "test")})


def mcem_seeds() -> str:
    return FD.mcem_seed_markdown(FD.mcem_seed_table())


def figure3_aevb() -> str:
    return FD.fig3_aevb_markdown(FD.fig3_aevb_table())


def mcem_seeds_n50000() -> str:
    return FD.mcem_seed_markdown(FD.mcem_seed_table(n_train=50_000), 50_000)


def ais_calibration() -> str:
    return FD.ais_markdown(read_json(AIS_CALIBRATION))


def gaps_remaining() -> str:
    """The gap ledger (``fidelity.gap_ledger``): every gap, where it was first measured, where
    it stands with today's defaults, closed / narrowed / open, and the explanation that stands."""
    def cell(r):
        return "—" if r is None else (f"{r.mean:+.1f}" + (f" ± {r.sd:.1f}" if r.sd is not None else "")
                                      + f" ({r.at}; {r.seeds} seed{'s' if r.seeds > 1 else ''})")

    lines = ["| curve | first measured: ours − paper | now: ours − paper | digitization | status | explanation that stands |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['curve']} | {cell(r['first'])} | {cell(r['now'])} | ±{r['digitization']:g} | {r['status']} | "
              f"{r['explanation']} |" for r in FD.gap_ledger()]
    return "\n".join(lines)


# --- docs/performance.md ----------------------------------------------------------------------

def benchmarks() -> str:
    return benchmark_table(read_json(RESULTS_DIR / "benchmarks.json"))


def benchmarks_cuda() -> str:
    path = RESULTS_DIR / "benchmarks_cuda.json"
    if not path.exists():
        return "**Not measured yet:** `bash tools/gpu_check.sh` on a GPU machine writes `results/benchmarks_cuda.json`."
    record = read_json(path)
    p = record["provenance"]
    return (benchmark_table(record) + f" Measured on one {p['gpu']} (CUDA {p['cuda']}, driver {p['driver']}, "
            f"torch {p['torch']}, TF32 {'on' if p['tf32'] else 'off'}), commit {p['git_commit'][:7]}"
            f"{' (dirty tree)' if p['git_dirty'] else ''}, {p['date']}.")


def benchmark_profile() -> str:
    r = read_json(RESULTS_DIR / "benchmarks.json")["results"]["aevb_mnist@1"]
    lines = ["| operator (kernel or call) | ms per step | share |", "|---|---|---|"]
    lines += [f"| `{p['operator'][:60]}` | {p['ms_per_call']:.3f} | {p['share']:.0%} |" for p in r["profile"]]
    return "\n".join(lines)


RECORDED_BUDGETS = ("quick", "standard")  # the budgets whose record the README shows, one section each
BUDGET_TABLES = {f"{b}_{f.__name__}": functools.partial(f, b) for b in RECORDED_BUDGETS
                 for f in (figure2_mnist, figure2_frey, figure3)}
TABLES = BUDGET_TABLES | {f.__name__: f for f in (budgets, figure2_long_runs, seed_spread,
                                   figure3_long_runs, quadrature, verify_noise, trial_verdicts, paper_progress, paper_progress_figure3, paper_seeds, fidelity_frey_face, fidelity_wake_sleep,
                                   fidelity_wake_sleep_nz200, wake_sleep_nz200_kl, mnist_train_blocks, mnist_weight_prior, mnist_late_step,
                                   frey_long_run, frey_latents,
                                   mcem_xaxis, mcem_seeds, mcem_seeds_n50000, figure3_aevb, ais_calibration, gaps_remaining, benchmarks, benchmarks_cuda, benchmark_profile)}


def blocks(text: str, where: str) -> list[tuple[str, int, int]]:
    """(name, first line of the body, line after it) of every generated block in ``text``."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        m = BEGIN.match(lines[i])
        if m is None:
            if lines[i].startswith("<!-- table ") or lines[i].startswith("<!-- end table "):
                raise ResultsFileError(f"{where}, line {i + 1}: a table marker not in the form "
                                       f"'{BEGIN.pattern[1:-1]}' / '{END}': fix the marker")
            i += 1
            continue
        name = m["name"]
        if name not in TABLES:
            raise ResultsFileError(f"{where}, line {i + 1}: unknown table {name!r}; known: {', '.join(TABLES)}")
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("<!-- ") and "table " in lines[j]), None)
        if end is None or lines[end] != END.format(name=name):
            raise ResultsFileError(f"{where}, line {i + 1}: table {name!r} is not closed by '{END.format(name=name)}' "
                                   f"before the next table marker: fix the markers")
        out.append((name, i + 1, end))
        i = end + 1
    return out


def render(name: str) -> str:
    """The Markdown of one table, from the records as they are now."""
    return TABLES[name]().rstrip("\n")


def update(write: bool = True, root: Path | None = None) -> list[str]:
    """Bring every block of every document up to date with its records (``write``) or only list
    the stale ones ('document: name'). Each document is written whole or not at all."""
    root = Path(root) if root else REPO_ROOT
    stale = []
    for doc in DOCUMENTS:
        path = root / doc
        text = path.read_text(encoding="utf-8")
        lines = text.split("\n")
        for name, start, end in reversed(blocks(text, doc)):
            body = render(name).split("\n")
            if lines[start:end] != body:
                stale.append(f"{doc}: {name}")
                lines[start:end] = body
        if write and "\n".join(lines) != text:
            atomic_write_bytes(path, "\n".join(lines).encode("utf-8"))
    return stale
