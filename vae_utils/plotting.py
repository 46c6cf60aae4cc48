"""Figures in the paper's style, and the comparison of our runs with the paper's numbers.

Figure 2: average variational lower bound per datapoint against the number of training
samples evaluated (log axis), one panel per latent size; AEVB red, wake-sleep green, train
solid, test dashed. Figure 3: marginal log-likelihood (Appendix D) against training samples
(linear axis, millions), N_train = 1000 and 50,000; MCEM blue. Figures 4 and 5: grids of
decoder means.

The paper's curves, digitized from its bitmaps, ship with the package
(``vae_utils/paper/``, about +-0.5 nat for MNIST, +-10 nats for Frey Face); they are drawn as
open markers for comparison only and never written into results/. Every figure is written
by ``save_figure`` (PNG for the screen, PDF for print) in one seaborn style.
"""

from __future__ import annotations

import csv
import glob
import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from .records import (FIGURES_DIR, RESULTS_DIR, ResultsFileError, atomic_write_bytes, check_output_dir,  # noqa: F401
                      read_json, read_training_record)

REFERENCE_ENV = "AEVB_REFERENCE_DIR"
PAPER_CSV = Path(__file__).resolve().parent / "paper" / "aevb_paper_figures_digitized.csv"
COLORS = {"aevb": "tab:red", "wake_sleep": "tab:green", "mcem": "tab:blue"}
LABELS = {"aevb": "AEVB", "wake_sleep": "Wake-Sleep", "mcem": "MCEM"}


STYLE = {"style": "whitegrid", "context": "paper", "font_scale": 1.1}


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
        lines.append(f"| {LABELS[c['algorithm']]} | {n:.3g} | {f(tr['hmc_kde'], tr['hmc_kde_sem'])} "
                     f"| {f(te['hmc_kde'], te['hmc_kde_sem'])} | {f(paper[0])} | {f(paper[1])} "
                     f"| {f(tr.get('importance'))} | {f(te.get('importance'))} | {secs:.0f} |")
    return "\n".join(lines)


# --- the figure notebooks ----------------------------------------------------------------

def _paper_points(rows, figure, dataset, n_z, method, split, n_train=None):
    return sorted((r["training_samples"], r["value"]) for r in rows
                  if r["figure"] == figure and r["dataset"] == dataset and r["n_z"] == n_z and r["method"] == method
                  and r["split"] in (split, "both") and (n_train is None or r["n_train"] == str(n_train)))


def plot_figure2(results: list[dict], paper_rows, dataset: str):
    """Figure 2 for one dataset: a panel per latent size (the paper's layout), log x axis,
    AEVB red / wake-sleep green, train solid / test dashed, the paper's curves as open markers
    (circles train, squares test)."""
    by_nz = {}
    for r in results:
        by_nz.setdefault(r["config"]["n_z"], []).append(r)
    nzs = sorted(by_nz)
    fig, axes = plt.subplots(1, len(nzs), figsize=(3.1 * len(nzs), 3.3), squeeze=False)
    ylim = {"mnist": (-150, -95), "frey_face": (0, 1600)}[dataset]
    xmax = {"mnist": 2.5e8, "frey_face": 1e8}[dataset]
    for ax, nz in zip(axes[0], nzs):
        for r in sorted(by_nz[nz], key=lambda r: r["algorithm"]):
            alg, xs = r["algorithm"], [p["samples"] for p in r["curve"]]
            ax.plot(xs, [p["train"] for p in r["curve"]], "-", color=COLORS[alg], lw=1.6, label=f"{LABELS[alg]} (train)")
            ax.plot(xs, [p["test"] for p in r["curve"]], "--", color=COLORS[alg], lw=1.6, label=f"{LABELS[alg]} (test)")
            for split, marker in (("train", "o"), ("test", "s")):
                pts = [pt for pt in _paper_points(paper_rows, "figure2", dataset, nz, alg, split)
                       if split == "train" or pt not in _paper_points(paper_rows, "figure2", dataset, nz, alg, "train")]
                if pts:
                    ax.plot(*zip(*pts), marker, mfc="none", color=COLORS[alg], ms=4.5, alpha=0.8,
                            label=f"{LABELS[alg]} paper ({split})")
        ax.set_xscale("log")
        ax.set_xlim(1e5, xmax)
        # the paper's y range, widened downwards where a short budget leaves our curves below it
        ours = [p[k] for r in by_nz[nz] for p in r["curve"] if p["samples"] >= 1e5 for k in ("train", "test")]
        low = min([ylim[0]] + [v - 0.05 * (ylim[1] - ylim[0]) for v in ours])
        ax.set_ylim(max(low, ylim[0] - 3 * (ylim[1] - ylim[0])), ylim[1])
        ax.set_title(f"$N_z$ = {nz}")
        ax.set_xlabel("# training samples evaluated")
    axes[0][0].set_ylabel(r"$\mathcal{L}$ per datapoint")
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, bbox_to_anchor=(0.5, -0.12), frameon=False)
    fig.suptitle({"mnist": "MNIST (500 hidden units)", "frey_face": "Frey Face (200 hidden units)"}[dataset], y=1.02)
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


SAMPLE_COLUMNS = ("samples", "target", "x")  # columns ``markdown`` prints as sample counts


def markdown(rows: list[dict], columns: dict[str, str], digits: int = 1) -> str:
    """A markdown table of ``rows`` with ``columns`` (key -> header); None prints as '-', a
    sample count (a column named in ``SAMPLE_COLUMNS``) in the paper's style (``samples_label``)."""
    def f(v, key=None):
        if v is None:
            return "-"
        if key in SAMPLE_COLUMNS and isinstance(v, (int, float)) and not isinstance(v, bool):
            return samples_label(v)
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) >= 1e4 else f"{v:.{digits}f}"
        return str(v)

    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(f(r.get(k), k) for k in columns) + " |" for r in rows]
    return "\n".join(lines)


def plot_figure3(records: list[dict], paper_rows):
    """Figure 3: Appendix-D log p(x) along training, one panel per N_train (linear x axis in
    millions, as the paper); train solid, test dashed; importance sampling dotted; the paper's
    curves as open markers."""
    by_n = {}
    for r in records:
        by_n.setdefault(r["config"]["n_train"], []).append(r)
    ns = sorted(by_n)
    fig, axes = plt.subplots(1, len(ns), figsize=(5.2 * len(ns), 3.8), squeeze=False)
    for ax, n in zip(axes[0], ns):
        for r in sorted(by_n[n], key=lambda r: r["algorithm"]):
            alg = r["algorithm"]
            xs = [pt["samples"] / 1e6 for pt in r["points"]]
            for split, ls in (("train", "-"), ("test", "--")):
                ax.plot(xs, [pt[split]["appendix_d"] for pt in r["points"]], ls, marker=".", color=COLORS[alg],
                        label=f"{LABELS[alg]} ({split})")
                if any("importance" in pt[split] for pt in r["points"]):
                    ax.plot(xs, [pt[split].get("importance") for pt in r["points"]], ":", color=COLORS[alg], alpha=0.6,
                            label=f"{LABELS[alg]} IS ({split})")
                pts = _paper_points(paper_rows, "figure3", "mnist", 3, alg, split, n)
                if pts:
                    ax.plot([x / 1e6 for x, _ in pts], [y for _, y in pts], "o" if split == "train" else "s",
                            mfc="none", color=COLORS[alg], ms=4.5, alpha=0.8, label=f"{LABELS[alg]} paper ({split})")
        ax.set_title(f"$N_{{train}}$ = {n}")
        ax.set_xlabel("# training samples evaluated (millions)")
        ax.set_ylabel("marginal log-likelihood")
        # our budget sets the x range: the paper's curves go on to 6e7 (its values are in the table)
        ours = max(pt["samples"] for r in by_n[n] for pt in r["points"]) / 1e6
        ax.set_xlim(0, ours * 1.08)
        lo = min(min(pt[s]["appendix_d"] for pt in r["points"] for s in ("train", "test")) for r in by_n[n])
        ax.set_ylim(max(lo - 5, -260), -100 if n == 1000 else -120)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=COLORS[a], lw=2, label=LABELS[a]) for a in ("aevb", "wake_sleep", "mcem")]
    handles += [Line2D([], [], color="k", ls="-", label="train (App. D)"), Line2D([], [], color="k", ls="--", label="test (App. D)"),
                Line2D([], [], color="k", ls=":", label="importance sampling"),
                Line2D([], [], color="k", marker="o", mfc="none", ls="", label="paper, train"),
                Line2D([], [], color="k", marker="s", mfc="none", ls="", label="paper, test")]
    fig.legend(handles=handles, loc="lower center", ncol=8, fontsize=8, bbox_to_anchor=(0.5, -0.08), frameon=False)
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
