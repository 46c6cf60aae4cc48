"""Figures in the paper's style, and the comparison of our runs with the paper's numbers.

Figure 2: average variational lower bound per datapoint against the number of training
samples evaluated (log axis), one panel per latent size; AEVB red, wake-sleep green, train
solid, test dashed. Figure 3: marginal log-likelihood (Appendix D) against training samples
(linear axis, millions), N_train = 1000 and 50,000; MCEM blue. Figures 4 and 5: grids of
decoder means.

The paper's curves, digitized from its bitmaps, ship with the package
(``vae_utils/paper/``, about +-0.5 nat for MNIST, +-10 nats for Frey Face); they are drawn for
comparison only (open markers in Figure 2; whole, as thin light lines through every digitized
point, on the paper's axes in Figure 3) and never written into results/. In Figures 2 and 3 a
vertical line marks where this budget's curves stop ("this budget: 1e6"). The figures of the
derivation notebook (01) and of the estimator study (07) are here too, one function each.
Every figure is written by ``save_figure`` (PNG for the screen, PDF for print) in one seaborn
style.
"""

from __future__ import annotations

import csv
import glob
import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import seaborn as sns

from .budgets import BUDGETS
from .config import recorded_value
from .records import (FIGURES_DIR, RESULTS_DIR, ResultsFileError, atomic_write_bytes, check_output_dir,  # noqa: F401
                      read_json, read_training_record)

REFERENCE_ENV = "AEVB_REFERENCE_DIR"
PAPER_CSV = Path(__file__).resolve().parent / "paper" / "aevb_paper_figures_digitized.csv"
COLORS = {"aevb": "tab:red", "wake_sleep": "tab:green", "mcem": "tab:blue"}
LABELS = {"aevb": "AEVB", "wake_sleep": "Wake-Sleep", "mcem": "MCEM"}


STYLE = {"style": "whitegrid", "context": "paper", "font_scale": 1.1}
# Figure 2's axes in the paper: x from 1e5 to these many samples, y over these bounds per datapoint
FIGURE2_XMAX = {"mnist": 2.5e8, "frey_face": 1e8}
FIGURE2_YLIM = {"mnist": (-150, -95), "frey_face": (0, 1600)}
# Figure 3's axes in the paper: x from 0 to these many samples per N_train; y up to these values
FIGURE3_XMAX = {1000: BUDGETS["paper"].fig3_samples, 50_000: BUDGETS["paper"].fig3_samples_50k}
FIGURE3_YTOP = {1000: -100, 50_000: -120}
# the paper's digitized curves in Figure 3: thinner and lighter than ours, in the same colours
PAPER_LINE = {"lw": 1.0, "alpha": 0.5, "ms": 3.5, "mfc": "none"}
BUDGET_STOP = {"color": "0.35", "ls": "-.", "lw": 1.0}  # the line where this budget's curves stop


def use_style() -> None:
    """The one look of every figure (seaborn's whitegrid, paper context)."""
    sns.set_theme(**STYLE)


use_style()


def save_figure(fig, name: str, directory: Path | None = None, *, show: bool = False) -> list[Path]:
    """The one place figures are written: <directory>/<name>.png (150 dpi) and .pdf.

    A figure is drawn from records and holds nothing they do not, so it is redrawn freely; the
    files carry no date, so the same records give the same bytes, and a file whose bytes would
    not change is left alone. Each file is written whole or not at all.
    ``show`` displays the figure in a notebook before it is closed."""
    import io

    directory = check_output_dir(Path(directory) if directory else FIGURES_DIR, "figures folder")
    paths = []
    for ext, kw in (("png", {"dpi": 150, "metadata": {"Software": "vae_utils"}}),
                    ("pdf", {"metadata": {"Creator": "vae_utils", "CreationDate": None}})):
        path = directory / f"{name}.{ext}"
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, bbox_inches="tight", **kw)
        if not (path.is_file() and path.read_bytes() == buf.getvalue()):
            atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    if show:
        from IPython.display import display

        display(fig)
    plt.close(fig)
    return paths


def load_results(pattern: str = "*.json", directory: Path | None = None, validate=None) -> list[dict]:
    """The training results files matching ``pattern`` (relative to ``directory``, default
    results/, or absolute); other records there (log p(x), verdicts) are skipped, and a file that
    looks like training results but is malformed is refused in one line."""
    directory = Path(directory) if directory else RESULTS_DIR
    if not directory.is_dir():
        raise FileNotFoundError(f"results folder {directory} does not exist (or is not a folder): pass the folder "
                                f"holding the results files")
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"pattern={pattern!r} is not allowed: expected a glob such as '*.json'")
    paths = sorted(Path(p) for p in glob.glob(pattern)) if Path(pattern).is_absolute() else sorted(directory.glob(pattern))
    out = []
    for p in paths:
        if not p.is_file():
            continue
        d = read_json(p)
        if isinstance(d, dict) and "curve" in d:
            out.append(read_training_record(p, tuple(LABELS)))
            if validate is not None:
                validate(out[-1], p)
    return out


def load_paper_curves(reference_dir: str | os.PathLike | None = None) -> list[dict]:
    """Rows of the digitized Figure 2/3 curves: the package's copy (``vae_utils/paper``), or the
    aevb_paper_figures_digitized.csv in ``reference_dir`` / $AEVB_REFERENCE_DIR when given."""
    reference_dir = reference_dir or os.environ.get(REFERENCE_ENV)
    path = Path(reference_dir) / "aevb_paper_figures_digitized.csv" if reference_dir else PAPER_CSV
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; {REFERENCE_ENV} must point at a folder holding "
                                "aevb_paper_figures_digitized.csv (or unset it to use the package's copy)")
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for line, r in enumerate(csv.DictReader(f), start=2):
                r["training_samples"] = float(r["training_samples"])
                r["value"] = float(r["value"])
                r["n_z"] = int(r["n_z"])
                rows.append(r)
    except (KeyError, ValueError, TypeError, UnicodeDecodeError, csv.Error) as e:
        where = f" (line {line})" if "line" in locals() else ""
        raise ResultsFileError(f"paper curves file {path} is malformed{where}: {type(e).__name__}: {e}; expected the "
                               f"columns figure, dataset, n_z, method, split, n_train, training_samples, value "
                               f"(the package's copy is {PAPER_CSV})") from None
    if not rows:
        raise ResultsFileError(f"paper curves file {path} holds no curves; it was not used (the package's copy is "
                               f"{PAPER_CSV})")
    return rows


def paper_value(rows, figure, dataset, n_z, method, split, samples, n_train=None) -> float | None:
    """The digitized paper value at ``samples`` (exact abscissa or log-linear interpolation)."""
    pts = sorted((r["training_samples"], r["value"]) for r in rows
                 if r["figure"] == figure and r["dataset"] == dataset and r["n_z"] == n_z
                 and r["method"] == method and r["split"] in (split, "both")
                 and (n_train is None or r["n_train"] == str(n_train)))
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= samples <= x1:
            t = (math.log(samples) - math.log(x0)) / (math.log(x1) - math.log(x0)) if x1 > x0 else 0
            return y0 + t * (y1 - y0)
    return next((y for x, y in pts if x == samples), None)


def value_at(result: dict, samples: int, split: str) -> float | None:
    return next((p[split] for p in result["curve"] if p["samples"] == samples), None)


def plot_bound_curves(results: list[dict], paper_rows=None, title: str = "", ylim=None, ax=None):
    """Figure 2 panel: our train (solid) and test (dashed) curves, the paper's as markers."""
    fig, ax = (None, ax) if ax is not None else plt.subplots(figsize=(5, 4))
    for r in results:
        alg = r["algorithm"]
        xs = [p["samples"] for p in r["curve"]]
        ax.plot(xs, [p["train"] for p in r["curve"]], "-", color=COLORS[alg], label=f"{LABELS[alg]} (train)")
        if any(p["test"] is not None for p in r["curve"]):
            ax.plot(xs, [p["test"] for p in r["curve"]], "--", color=COLORS[alg], label=f"{LABELS[alg]} (test)")
        c = r["config"]
        if paper_rows and (c["dataset"] == "frey_face" or c["n_train"] == 50_000):  # Figure 2's setting only
            pts = [(row["training_samples"], row["value"]) for row in paper_rows
                   if row["figure"] == "figure2" and row["dataset"] == c["dataset"] and row["n_z"] == c["n_z"]
                   and row["method"] == alg and row["split"] in ("train", "both")]
            if pts:
                ax.plot(*zip(*sorted(pts)), "o", mfc="none", color=COLORS[alg], ms=5,
                        label=f"{LABELS[alg]} paper (digitized, train)")
    ax.set_xscale("log")
    ax.set_xlim(left=1e5)  # the paper's axes start at 1e5 samples
    ax.set_xlabel("# training samples evaluated")
    ax.set_ylabel(r"$\mathcal{L}$ per datapoint")
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return fig, ax


def comparison_rows(results: list[dict], paper_rows, at=(10 ** 6, 10 ** 7)) -> list[dict]:
    """Our train/test values at the given sample counts next to the paper's digitized ones."""
    rows = []
    for r in results:
        c = r["config"]
        figure2_setting = c["dataset"] == "frey_face" or c["n_train"] == 50_000
        for n in at:
            if value_at(r, n, "train") is None:
                continue
            fig = "figure2"
            rows.append({"run": r["name"], "samples": n, "train": value_at(r, n, "train"),
                         "test": value_at(r, n, "test"),
                         "paper_train": paper_value(paper_rows, fig, c["dataset"], c["n_z"], r["algorithm"], "train", n)
                         if figure2_setting else None,
                         "paper_test": paper_value(paper_rows, fig, c["dataset"], c["n_z"], r["algorithm"], "test", n)
                         if figure2_setting else None,
                         "samples_per_s": r["samples_per_s"], "lr": r["lr"]})
    return rows


def markdown_table(rows: list[dict]) -> str:
    def f(v):
        return "-" if v is None else f"{v:.1f}"

    lines = ["| run | samples | train | test | paper train | paper test | Adagrad step | samples/s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['samples']:.0e} | {f(r['train'])} | {f(r['test'])} | {f(r['paper_train'])} "
                     f"| {f(r['paper_test'])} | {r['lr']} | {r['samples_per_s']:.0f} |")
    return "\n".join(lines)


def method_label(config: dict) -> str:
    """A recorded run's method in words (``LABELS``); MCEM's earlier on-line variant (minibatch
    M-steps, ``mcem_m_step="minibatch"``) is named apart from batch MCEM, the default."""
    if config["algorithm"] == "mcem" and recorded_value(config, "mcem_m_step") == "minibatch":
        return "MCEM (on-line)"
    return LABELS[config["algorithm"]]


def likelihood_table(paper_rows, directory: Path | None = None) -> str:
    """Appendix-D and importance-sampling estimates of results/*_likelihood.json next to the
    paper's Figure 3 values at the same number of training samples."""
    directory = Path(directory) if directory else RESULTS_DIR
    lines = ["| method | samples | train (App. D) | test (App. D) | paper train | paper test "
             "| train (IS) | test (IS) | s / 1000 points (App. D) |", "|---|---|---|---|---|---|---|---|---|"]
    for p in sorted(directory.glob("*_likelihood.json")):
        r = read_json(p)
        c, n = r["config"], r["samples_seen"]
        paper = [paper_value(paper_rows, "figure3", c["dataset"], c["n_z"], c["algorithm"], s,
                             round(n, -5), c["n_train"]) for s in ("train", "test")]
        tr, te = r["train"], r["test"]

        def f(v, se=None):
            return "-" if v is None else (f"{v:.1f} ± {se:.1f}" if se is not None else f"{v:.1f}")

        secs = (tr["hmc_kde_seconds"] + te["hmc_kde_seconds"]) / 2 * 1000 / r["n"]
        lines.append(f"| {method_label(c)} | {samples_label(n)} | {f(tr['hmc_kde'], tr['hmc_kde_sem'])} "
                     f"| {f(te['hmc_kde'], te['hmc_kde_sem'])} | {f(paper[0])} | {f(paper[1])} "
                     f"| {f(tr.get('importance'))} | {f(te.get('importance'))} | {secs:.0f} |")
    return "\n".join(lines)


# --- the figure notebooks ----------------------------------------------------------------

def _paper_points(rows, figure, dataset, n_z, method, split, n_train=None):
    """The digitized (samples, value) points of one paper curve, sorted (``method`` None: of every method)."""
    return sorted((r["training_samples"], r["value"]) for r in rows
                  if r["figure"] == figure and r["dataset"] == dataset and r["n_z"] == n_z
                  and method in (None, r["method"]) and r["split"] in (split, "both")
                  and (n_train is None or r["n_train"] == str(n_train)))


def mark_budget_stop(ax, samples: float) -> None:
    """Figures 2 and 3: a vertical line at ``samples``, the last sample count this budget's curves
    reached in the panel, labelled "this budget: 1e6" (``samples_label``). The line carries
    ``gid="budget_stop"``; the label is text at its foot (not a legend entry), on the side with room."""
    ax.axvline(samples, gid="budget_stop", zorder=1, **BUDGET_STOP)
    lo, hi = ax.get_xlim()
    scale = (lambda v: math.log10(v)) if ax.get_xscale() == "log" else (lambda v: v)
    right = (scale(samples) - scale(lo)) / (scale(hi) - scale(lo)) < 0.85  # room for the text right of it
    ax.annotate(f"this budget: {samples_label(samples)}", xy=(samples, 0.02), xycoords=("data", "axes fraction"),
                xytext=(3 if right else -3, 0), textcoords="offset points", rotation=90, va="bottom",
                ha="left" if right else "right", fontsize=7, color=BUDGET_STOP["color"], gid="budget_stop_label")


def plot_figure2(results: list[dict], paper_rows, dataset: str, *, so_far: bool = False):
    """Figure 2 for one dataset: a panel per latent size (the paper's layout), log x axis,
    AEVB red / wake-sleep green, train solid / test dashed, the paper's curves as open markers
    (circles train, squares test), and a vertical line where this budget's curves stop. The
    axes are the paper's, widened leftwards or downwards only where a short budget's curves
    would fall outside them. ``so_far``: runs of a budget still being trained
    (``experiments.figure2_so_far``), each curve ending where its run has come, a dot at its
    end and no budget line."""
    by_nz = {}
    for r in results:
        by_nz.setdefault(r["config"]["n_z"], []).append(r)
    nzs = sorted(by_nz)
    fig, axes = plt.subplots(1, len(nzs), figsize=(3.1 * len(nzs), 3.3), squeeze=False)
    ylim, xmax = FIGURE2_YLIM[dataset], FIGURE2_XMAX[dataset]
    for ax, nz in zip(axes[0], nzs):
        for r in sorted(by_nz[nz], key=lambda r: r["algorithm"]):
            alg, xs = r["algorithm"], [p["samples"] for p in r["curve"]]
            ax.plot(xs, [p["train"] for p in r["curve"]], "-", color=COLORS[alg], lw=1.6, label=f"{LABELS[alg]} (train)")
            ax.plot(xs, [p["test"] for p in r["curve"]], "--", color=COLORS[alg], lw=1.6, label=f"{LABELS[alg]} (test)")
            if so_far:  # where this run has come so far
                ax.plot(xs[-1], r["curve"][-1]["train"], "o", color=COLORS[alg], ms=3, gid="run_end")
            for split, marker in (("train", "o"), ("test", "s")):
                pts = [pt for pt in _paper_points(paper_rows, "figure2", dataset, nz, alg, split)
                       if split == "train" or pt not in _paper_points(paper_rows, "figure2", dataset, nz, alg, "train")]
                if pts:
                    ax.plot(*zip(*pts), marker, mfc="none", color=COLORS[alg], ms=4.5, alpha=0.8,
                            label=f"{LABELS[alg]} paper ({split})")
        stop = max(r["curve"][-1]["samples"] for r in by_nz[nz])
        left = min(1e5, stop / 3)  # the paper's axes start at 1e5 samples; a shorter budget widens them
        ax.set_xscale("log")
        ax.set_xlim(left, xmax)
        # the paper's y range, widened downwards where a short budget leaves our curves below it
        ours = [p[k] for r in by_nz[nz] for p in r["curve"] if p["samples"] >= left for k in ("train", "test")
                if p[k] is not None]
        low = min([ylim[0]] + [v - 0.05 * (ylim[1] - ylim[0]) for v in ours])
        ax.set_ylim(max(low, ylim[0] - 3 * (ylim[1] - ylim[0])), ylim[1])
        if not so_far:
            mark_budget_stop(ax, stop)
        ax.set_title(f"$N_z$ = {nz}")
        ax.set_xlabel("# training samples evaluated")
    axes[0][0].set_ylabel(r"$\mathcal{L}$ per datapoint")
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, bbox_to_anchor=(0.5, -0.12), frameon=False)
    fig.suptitle({"mnist": "MNIST (500 hidden units)", "frey_face": "Frey Face (200 hidden units)"}[dataset]
                 + (": each run as far as trained so far" if so_far else ""), y=1.02)
    fig.tight_layout()
    return fig


def figure2_rows(results: list[dict], paper_rows) -> list[dict]:
    """Our train/test bound at the paper's ticks (10^5.5 ... 10^8, up to our last point) beside
    the paper's digitized values; for each run also its last point."""
    rows = []
    for r in sorted(results, key=lambda r: (r["config"]["n_z"], r["algorithm"])):
        c, last = r["config"], r["curve"][-1]
        ticks = [10 ** (k / 2) for k in range(11, 17) if 10 ** (k / 2) <= last["samples"] * 1.001]
        for n in ticks + ([last["samples"]] if last["samples"] not in ticks else []):
            pt = min(r["curve"], key=lambda p: abs(math.log(p["samples"] / n)))
            if abs(math.log(pt["samples"] / n)) > 0.05:
                continue
            rows.append({"n_z": c["n_z"], "method": LABELS[r["algorithm"]], "samples": pt["samples"],
                         "train": pt["train"], "test": pt["test"],
                         "paper_train": paper_value(paper_rows, "figure2", c["dataset"], c["n_z"], r["algorithm"], "train", pt["samples"]),
                         "paper_test": paper_value(paper_rows, "figure2", c["dataset"], c["n_z"], r["algorithm"], "test", pt["samples"])})
    return rows


def samples_label(n: float) -> str:
    """A sample count in the paper's style, as every table and sentence prints one: 1e6, 3.16e5, 2.4e8."""
    if not n > 0:
        return str(n)
    e = math.floor(math.log10(n))
    m = round(n / 10 ** e, 2)
    if m >= 10:
        m, e = m / 10, e + 1
    return f"{m:g}e{e}"


def number(v: float, digits: int = 3) -> str:
    """``v`` to ``digits`` significant digits, a power of ten written short: 1.33e4, 7.1e-14, -3.35e3."""
    return f"{v:.{digits}g}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")


SAMPLE_COLUMNS = ("samples", "target", "x")  # columns ``markdown`` prints as sample counts


def markdown(rows: list[dict], columns: dict[str, str], digits: int = 1) -> str:
    """A markdown table of ``rows`` with ``columns`` (key -> header); None prints as '-', a
    sample count (a column named in ``SAMPLE_COLUMNS``) in the paper's style (``samples_label``),
    and a "|" inside a cell or header (p(z|x)) escaped so that it does not split the column."""
    def f(v, key=None):
        if v is None:
            return "-"
        if key in SAMPLE_COLUMNS and isinstance(v, (int, float)) and not isinstance(v, bool):
            return samples_label(v)
        if isinstance(v, float):
            return number(v) if abs(v) >= 1e4 else f"{v:.{digits}f}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(h.replace("|", "\\|") for h in columns.values()) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(f(r.get(k), k) for k in columns) + " |" for r in rows]
    return "\n".join(lines)


def plot_figure3(records: list[dict], paper_rows, *, paper_axes: bool = True, so_far: bool = False):
    """Figure 3: Appendix-D log p(x) along training, one panel per N_train, on the paper's
    linear x axes (0-6e7 samples for N_train = 1000, 0-6.8e7 for 50,000; ``FIGURE3_XMAX``).

    Ours as far as this budget reached: train solid, test dashed (dots at the estimated
    points), importance sampling dotted, a vertical line where the budget stopped. The paper's
    digitized curves whole, as thin light lines in the same colours through every digitized
    point (circles train, squares test), labelled "paper". ``paper_axes=False`` fits the x axis
    to our points instead (a zoom on a short budget). ``so_far``: runs of a budget still being
    trained (``experiments.figure3_so_far``), each curve ending at its last estimated point, no
    budget line."""
    by_n = {}
    for r in records:
        by_n.setdefault(r["config"]["n_train"], []).append(r)
    ns = sorted(by_n)
    fig, axes = plt.subplots(1, len(ns), figsize=(5.4 * len(ns), 3.9), squeeze=False)
    for ax, n in zip(axes[0], ns):
        values = []
        for r in sorted(by_n[n], key=lambda r: r["algorithm"]):
            alg = r["algorithm"]
            xs = [pt["samples"] for pt in r["points"]]
            for split, ls in (("train", "-"), ("test", "--")):
                ys = [pt[split]["appendix_d"] for pt in r["points"]]
                values += ys
                ax.plot(xs, ys, ls, marker=".", lw=1.8, color=COLORS[alg], label=f"{LABELS[alg]} ({split})")
                if any("importance" in pt[split] for pt in r["points"]):
                    ax.plot(xs, [pt[split].get("importance") for pt in r["points"]], ":", color=COLORS[alg], alpha=0.6,
                            label=f"{LABELS[alg]} IS ({split})")
        for alg in LABELS:
            for split, ls, marker in (("train", "-", "o"), ("test", "--", "s")):
                pts = _paper_points(paper_rows, "figure3", "mnist", 3, alg, split, n)
                if pts:
                    values += [y for _, y in pts]
                    ax.plot(*zip(*pts), ls, marker=marker, color=COLORS[alg], label=f"{LABELS[alg]} paper ({split})",
                            gid="paper", **PAPER_LINE)
        stop = max(pt["samples"] for r in by_n[n] for pt in r["points"])
        paper_x = [x for x, _ in _paper_points(paper_rows, "figure3", "mnist", 3, None, "train", n)] + \
                  [x for x, _ in _paper_points(paper_rows, "figure3", "mnist", 3, None, "test", n)]
        xmax = FIGURE3_XMAX.get(n, max(paper_x + [stop])) if paper_axes else stop * 1.08
        ax.set_xlim(0, xmax)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
        top = max(FIGURE3_YTOP.get(n, -100), max(values) + 2)
        ax.set_ylim(max(min(values) - 5, -260), top)
        if not so_far:
            mark_budget_stop(ax, stop)
        ax.set_title(f"$N_{{train}}$ = {n:,}")
        ax.set_xlabel("# training samples evaluated")
        ax.set_ylabel("marginal log-likelihood")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=COLORS[a], lw=2, label=LABELS[a]) for a in LABELS]
    handles += [Line2D([], [], color="k", ls="-", marker=".", label="ours, train (App. D)"),
                Line2D([], [], color="k", ls="--", marker=".", label="ours, test (App. D)"),
                Line2D([], [], color="k", ls=":", label="ours, importance sampling"),
                Line2D([], [], color="k", ls="-", marker="o", label="paper, train", **PAPER_LINE),
                Line2D([], [], color="k", ls="--", marker="s", label="paper, test", **PAPER_LINE)]
    if not so_far:
        handles.append(Line2D([], [], label="where this budget stopped", **BUDGET_STOP))
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=8, bbox_to_anchor=(0.5, -0.14), frameon=False)
    if so_far:
        fig.suptitle("Figure 3 (MNIST, $N_z$ = 3, 100 hidden units): each run as far as trained so far", y=1.02)
    fig.tight_layout()
    return fig


def figure3_rows(records: list[dict], paper_rows) -> list[dict]:
    rows = []
    for r in sorted(records, key=lambda r: (r["config"]["n_train"], r["algorithm"])):
        c = r["config"]
        for pt in r["points"]:
            rows.append({"n_train": c["n_train"], "method": LABELS[r["algorithm"]], "samples": pt["samples"],
                         "train": pt["train"]["appendix_d"], "test": pt["test"]["appendix_d"],
                         "paper_train": paper_value(paper_rows, "figure3", "mnist", 3, r["algorithm"], "train",
                                                    pt["samples"], c["n_train"]),
                         "paper_test": paper_value(paper_rows, "figure3", "mnist", 3, r["algorithm"], "test",
                                                   pt["samples"], c["n_train"]),
                         "is_train": pt["train"].get("importance"), "is_test": pt["test"].get("importance")})
    return rows


def image_grid(images: np.ndarray, ncol: int, *, invert: bool = False, ax=None, title: str = ""):
    """Tile (n, h, w) images in [0, 1] into one picture with ``ncol`` columns (Figures 4 and 5;
    the paper draws MNIST dark on white, i.e. ``invert``)."""
    n, h, w = images.shape
    nrow = math.ceil(n / ncol)
    canvas = np.full((nrow * h, ncol * w), 0.0 if invert else 1.0)  # empty cells stay white
    for i, img in enumerate(images):
        r, c = divmod(i, ncol)
        canvas[r * h:(r + 1) * h, c * w:(c + 1) * w] = img
    fig, ax = (None, ax) if ax is not None else plt.subplots(figsize=(ncol * w / 40, nrow * h / 40))
    ax.imshow(1 - canvas if invert else canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title)
    return fig, ax


# --- notebook 01: the derivation, checked on the linear-Gaussian model ------------------------

GRADIENT_COLORS = {"score function": "tab:purple", "reparameterised A": "tab:orange", "reparameterised B": "tab:red"}


def plot_bound_vs_perturbation(ts, curves: dict, ts_mc, mc: dict, log_px: float):
    """Eqs. 1-3 (notebook 01, figure ``bound_vs_perturbation``): the bound L(q) of one datapoint as
    q moves away from the true posterior, one panel per kind of shift.

    ``curves``: {shift: closed-form L(q) at each t of ``ts``} (e.g. "mean", "log-variance");
    ``mc``: {shift: [single estimates A at each t of ``ts_mc``]}, drawn as means with ±2
    standard errors; ``log_px``: the exact log p(x), drawn as a line above the bound, the gap
    between them (the KL to the posterior) shaded."""
    fig, axes = plt.subplots(1, len(curves), figsize=(4.75 * len(curves), 3.6), sharey=True, squeeze=False)
    for ax, (which, curve) in zip(axes[0], curves.items()):
        ax.axhline(log_px, color="k", lw=1.2, label="log p(x) (exact)")
        ax.plot(ts, curve, color="tab:red", lw=2, label=r"$\mathcal{L}(q)$ closed form")
        ax.fill_between(ts, curve, log_px, color="tab:red", alpha=0.12, label=r"gap = KL(q ‖ p(z|x))")
        means = [float(m.mean()) for m in mc[which]]
        # ±2 standard errors of a mean of n single estimates: 2 sd / sqrt(n)
        two_se = [2 * float(m.std()) / math.sqrt(len(m)) for m in mc[which]]
        ax.errorbar(ts_mc, means, yerr=two_se, fmt="o", mfc="white", color="tab:blue", ms=5, capsize=2,
                    label="Monte Carlo, estimator A")
        ax.set_xlabel(f"shift t of every {which} of q away from p(z|x)")
        ax.set_title(f"q = p(z|x) with {which}s + t")
    axes[0][0].set_ylabel("nats")
    axes[0][0].legend(loc="lower center", fontsize=8)
    fig.suptitle("The bound lies below log p(x) and touches it at the true posterior (eqs. 1-3)", y=1.02)
    return fig


def plot_gradient_variance(n_samples, variances: dict, repeats: int):
    """Sections 2.2-2.4, eqs. 6-7 (notebook 01, figure ``gradient_variance_vs_L``): the total
    variance of each gradient estimator against the number of samples L, log-log, with the 1/L
    line from its L = 1 value; left the score function against reparameterised B, right
    estimator A against B. ``variances``: {method: total variance at each L of ``n_samples``}."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.9), sharey=True)
    shown = (["score function", "reparameterised B"], ["reparameterised A", "reparameterised B"])
    for ax, methods in zip(axes, shown):
        for m in methods:
            ax.plot(n_samples, variances[m], "o-", color=GRADIENT_COLORS[m], label=f"{m} (measured)")
            # an average of L independent terms: variance(L) = variance(1) / L
            ax.plot(n_samples, variances[m][0] / np.asarray(n_samples, dtype=float), ":", color=GRADIENT_COLORS[m], lw=1)
        ax.plot([], [], "k:", lw=1, label="1/L from L = 1")
        ax.set(xscale="log", yscale="log", xlabel="number of samples L")
        ax.legend(fontsize=8)
    axes[0].set_ylabel(r"total variance of $\hat\nabla_{\mu,\log\sigma^2}\mathcal{L}$")
    axes[0].set_title("score function (Sec. 2.2) vs reparameterisation (Sec. 2.4)")
    axes[1].set_title("estimator A (eq. 6) vs estimator B (eq. 7)")
    fig.suptitle(f"Gradient variance vs L (linear-Gaussian, perturbed q, {repeats} repeats per point)", y=1.02)
    return fig


def plot_score_function_ratio(dims, ratios, log_px):
    """Section 2.2 (notebook 01, figure ``score_function_ratio_vs_dim``): the variance ratio
    score function / reparameterised B at L = 1 against the number of observed dimensions D,
    each point annotated with its log p(x)."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(dims, ratios, "o-", color=GRADIENT_COLORS["score function"])
    for d, r, lp in zip(dims, ratios, log_px):
        ax.annotate(f"log p(x) = {lp:.0f}", (d, r), textcoords="offset points", xytext=(4, -12), fontsize=7)
    ax.set(xscale="log", yscale="log", xlabel="observed dimensions D", ylabel="variance ratio  score function / reparam. B")
    ax.set_title("The score function's excess variance against D (L = 1)")
    return fig


def plot_analytic_kl_and_vae_bound(kl_closed, kl_mc, kl_se, log_px, bound_a, bound_b):
    """Appendix B and eq. 10 (notebook 01, figure ``analytic_kl_and_vae_bound``). Left: the
    closed-form KL(q ‖ N(0, I)) against its Monte Carlo estimate ``kl_mc`` (±2 ``kl_se``) with
    y = x. Right: per datapoint of a VAE, log p(x) by quadrature (``log_px``) and the bound by
    estimators A and B (``bound_a``, ``bound_b``: (samples, points) single estimates, drawn as
    means ±2 standard errors)."""
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8))
    ax = axes[0]
    ax.errorbar(kl_closed, kl_mc, yerr=2 * kl_se, fmt="o", ms=3, color="tab:blue", alpha=0.7, elinewidth=0.8,
                label="Monte Carlo ± 2 s.e.")
    lim = [0, float(kl_closed.max()) * 1.05]
    ax.plot(lim, lim, "k--", lw=1, label="y = x")
    ax.set_xlabel(r"closed form $\frac{1}{2}\sum_j(\mu_j^2+\sigma_j^2-1-\log\sigma_j^2)$")
    ax.set_ylabel(r"Monte Carlo $\mathbb{E}_q[\log q(z)-\log p(z)]$")
    ax.set_title("Appendix B: KL(q ‖ N(0, I))")
    ax.legend(fontsize=8)
    ax = axes[1]
    i = np.arange(len(log_px))
    ax.plot(i, log_px, "k_", ms=22, mew=2, label="log p(x) by quadrature")
    for shift, b, fmt, color, name in ((-0.12, bound_a, "o", "tab:orange", "estimator A (eq. 6)"),
                                       (0.12, bound_b, "s", "tab:red", "estimator B (eq. 10)")):
        ax.errorbar(i + shift, b.mean(0), yerr=2 * b.std(0) / math.sqrt(len(b)), fmt=fmt, color=color,
                    label=f"bound, {name}")
    ax.set_xticks(i)
    ax.set(xlabel="datapoint", ylabel="nats", title="An (untrained) VAE: eq. 10 below log p(x)")
    ax.legend(fontsize=8)
    return fig


# --- notebook 07: the log p(x) estimators against the truth -----------------------------------

ESTIMATOR_LABELS = {"appendix_d": "Appendix D (HMC + KDE)", "importance": "importance sampling (encoder)",
                    "ais": "AIS (annealed importance sampling)"}
ESTIMATOR_COLORS = {"appendix_d": "tab:purple", "importance": "tab:orange", "ais": "tab:green"}
SYMLOG_TICKS = (-30, -10, -3, -1, -0.3, 0, 0.3, 1, 3, 10, 30)  # readable ticks on the bias axes


def model_label(record: dict) -> str:
    """E.g. 'AEVB, Nz = 3, 100 hidden, N = 1000' for a record of the estimator-accuracy study."""
    c = record["config"]
    return f"{LABELS[record['algorithm']]}, Nz = {c['n_z']}, {c['n_hidden']} hidden, N = {c['n_train']}"


def _plain_log_ticks(axis) -> None:
    """Plain numbers at 1-2-5 steps on a log axis."""
    axis.set_major_locator(mticker.LogLocator(base=10, subs=(1, 2, 5)))
    axis.set_major_formatter(mticker.FormatStrFormatter("%g"))
    axis.set_minor_formatter(mticker.NullFormatter())


def _symlog_bias_axis(ax) -> None:
    """A bias axis: linear within ±1 nat, logarithmic beyond, fixed readable ticks, a zero line."""
    ax.axhline(0, color="k", lw=0.8)
    ax.set_yscale("symlog", linthresh=1.0)
    lo, hi = ax.get_ylim()
    ax.yaxis.set_major_locator(mticker.FixedLocator([t for t in SYMLOG_TICKS if lo <= t <= hi]))
    ax.yaxis.set_major_formatter(mticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(mticker.NullFormatter())


def plot_error_vs_samples(records: list[dict], paper_l: int):
    """Appendix D, importance sampling and AIS against quadrature (notebook 07, figure
    ``estimator_accuracy_vs_samples``; the estimator of Figure 3): per model (a column), top the
    mean |error| per datapoint, bottom the bias ±2 standard errors, against L, K or T; a dotted
    line at the paper's L = ``paper_l``."""
    fig, axes = plt.subplots(2, len(records), figsize=(3.6 * len(records), 5.6), sharex=True, squeeze=False)
    for j, r in enumerate(records):
        for est, color in ESTIMATOR_COLORS.items():
            rows = [row for row in r["rows"] if row["estimator"] == est]
            if rows:
                xs = [row["samples"] for row in rows]
                axes[0, j].plot(xs, [row["mean_abs_error"] for row in rows], "o-", color=color, label=ESTIMATOR_LABELS[est])
                axes[1, j].errorbar(xs, [row["bias"] for row in rows], yerr=[2 * (row["bias_sem"] or 0) for row in rows],
                                    fmt="o-", color=color, capsize=3)
        for ax in axes[:, j]:
            ax.set_xscale("log")
            ax.axvline(paper_l, color="0.5", ls=":", lw=1)
        axes[0, j].set_yscale("log")
        _plain_log_ticks(axes[0, j].yaxis)
        _symlog_bias_axis(axes[1, j])
        axes[0, j].set_title(model_label(r).replace(f", {r['config']['n_hidden']} hidden", ""), fontsize=9)
        axes[1, j].set_xlabel("samples per datapoint (L or K) or AIS steps (T)")
    axes[0, 0].set_ylabel("mean |error| (nat)")
    axes[1, 0].set_ylabel("bias (nat), ±2 SE")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_error_vs_cost(records: list[dict]):
    """Notebook 07, figure ``estimator_accuracy_vs_cost``: each estimator's mean |error| against
    its seconds per 1000 datapoints (one thread), log-log, one marker per model, each point
    annotated with its L, K or T."""
    markers = ["o", "s", "^", "D", "v", "P"]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for r, mk in zip(records, markers):
        for est, color in ESTIMATOR_COLORS.items():
            rows = [row for row in r["rows"] if row["estimator"] == est]
            if rows:
                ax.plot([row["seconds_per_1000"] for row in rows], [row["mean_abs_error"] for row in rows], "-",
                        marker=mk, color=color, alpha=0.8)
                for row in rows:
                    ax.annotate(str(row["samples"]), (row["seconds_per_1000"], row["mean_abs_error"]), fontsize=6,
                                xytext=(3, 3), textcoords="offset points")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, label=ESTIMATOR_LABELS[e]) for e, c in ESTIMATOR_COLORS.items()]
    handles += [Line2D([], [], color="0.3", marker=mk, ls="", label=f"{LABELS[r['algorithm']]}, Nz = {r['n_z']}")
                for r, mk in zip(records, markers)]
    ax.set(xscale="log", yscale="log", xlabel="seconds per 1000 datapoints (one thread)", ylabel="mean |error| (nat)")
    for axis in (ax.xaxis, ax.yaxis):
        _plain_log_ticks(axis)
    ax.legend(handles=handles, fontsize=7, loc="best")
    return fig


def plot_error_vs_latent_size(rows: list[dict], l_values, dims, marked_nz: int = 5):
    """The paper's "unreliable above about 5 latent dimensions" (Section 5; notebook 07, figure
    ``estimator_accuracy_vs_latent_size``): the Appendix-D estimator on linear-Gaussian models,
    mean |error| (left) and bias ±2 standard errors (right) against Nz, one line per L, a dotted
    line at Nz = ``marked_nz``. ``rows``: the dimension study's rows (``n_z``, ``samples`` = L)."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for L, c in zip(l_values, ["tab:red", "tab:purple", "tab:blue", "tab:green", "tab:brown"]):
        at_l = [row for row in rows if row["samples"] == L]
        nz = [row["n_z"] for row in at_l]
        axes[0].plot(nz, [row["mean_abs_error"] for row in at_l], "o-", color=c, label=f"L = {L}")
        axes[1].errorbar(nz, [row["bias"] for row in at_l], yerr=[2 * (row["bias_sem"] or 0) for row in at_l],
                         fmt="o-", color=c, capsize=3)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(list(dims), [str(d) for d in dims])
        ax.minorticks_off()
        ax.axvline(marked_nz, color="0.5", ls=":", lw=1)
        ax.set_xlabel("latent dimensions Nz")
    axes[0].set(yscale="log", ylabel="mean |error| (nat)", title="Appendix D on linear-Gaussian models")
    _plain_log_ticks(axes[0].yaxis)
    _symlog_bias_axis(axes[1])
    axes[1].set(ylabel="bias (nat), ±2 SE", title="its bias (symmetric-log axis)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig
