"""Figures in the paper's style, and the comparison of our runs with the paper's numbers.

Figure 2: average variational lower bound per datapoint against the number of training
samples evaluated (log axis); AEVB red, wake-sleep green, train solid, test dashed.
The paper's curves, digitized from its bitmaps (shared/reference), are drawn as markers for
comparison only; they are never written into results/.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
FIGURES_DIR = REPO_ROOT / "figures"
RESULTS_DIR = REPO_ROOT / "results"
REFERENCE_ENV = "AEVB_REFERENCE_DIR"
COLORS = {"aevb": "tab:red", "wake_sleep": "tab:green", "mcem": "tab:blue"}
LABELS = {"aevb": "AEVB", "wake_sleep": "Wake-Sleep", "mcem": "MCEM"}


def save_figure(fig, name: str, directory: Path | None = None) -> Path:
    """The one place figures are written: figures/<name>.png at 150 dpi."""
    directory = Path(directory) if directory else FIGURES_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    fig.savefig(path, dpi=150, bbox_inches="tight", metadata={"Software": "vae_utils"})
    plt.close(fig)
    return path


def load_results(pattern: str = "*.json", directory: Path | None = None) -> list[dict]:
    directory = Path(directory) if directory else RESULTS_DIR
    out = []
    for p in sorted(directory.glob(pattern)):
        d = json.loads(p.read_text())
        if "curve" in d:
            out.append(d)
    return out


def load_paper_curves(reference_dir: str | os.PathLike | None = None) -> list[dict]:
    """Rows of aevb_paper_figures_digitized.csv (from the argument or $AEVB_REFERENCE_DIR)."""
    reference_dir = reference_dir or os.environ.get(REFERENCE_ENV)
    if not reference_dir:
        raise FileNotFoundError(f"set {REFERENCE_ENV} (or pass reference_dir) to the folder holding "
                                "aevb_paper_figures_digitized.csv")
    path = Path(reference_dir) / "aevb_paper_figures_digitized.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; {REFERENCE_ENV} must point at the paper's reference folder")
    rows = []
    with open(path) as f:
        for r in csv.DictReader(f):
            r["training_samples"] = float(r["training_samples"])
            r["value"] = float(r["value"])
            r["n_z"] = int(r["n_z"])
            rows.append(r)
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
        r = json.loads(p.read_text())
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
