"""The paper's digitized curves ship with the package."""

import os
from pathlib import Path

from vae_utils.plotting import PAPER_CSV, load_paper_curves


def test_paper_curves_ship_with_the_package():
    rows = load_paper_curves()
    assert PAPER_CSV.is_file() and len(rows) > 150
    ref = os.environ.get("AEVB_REFERENCE_DIR")
    if ref and (Path(ref) / "aevb_paper_figures_digitized.csv").is_file():  # CI: the copy equals the source
        assert PAPER_CSV.read_bytes() == (Path(ref) / "aevb_paper_figures_digitized.csv").read_bytes()
    assert {(r["figure"], r["dataset"]) for r in rows} == {("figure2", "mnist"), ("figure2", "frey_face"),
                                                         ("figure3", "mnist")}


def test_sample_counts_print_in_the_papers_style_in_every_table():
    from vae_utils.plotting import markdown, samples_label

    assert [samples_label(x) for x in (316200, 5e5, 1333300, 1e6, 2.4e8, 31623)] == \
        ["3.16e5", "5e5", "1.33e6", "1e6", "2.4e8", "3.16e4"]
    table = markdown([{"samples": 316200, "train": -120.04}], {"samples": "samples", "train": "train"})
    assert "| 3.16e5 | -120.0 |" in table


# --- Figures 2 and 3 on the paper's axes, with the budget's stop marked ---------------------

def _csv_curves(figure: str) -> dict:
    """The digitized curves read straight from the CSV (not through plotting): {(n_train, method,
    split): sorted [(samples, value)]}."""
    import csv

    out = {}
    with open(PAPER_CSV, encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r["figure"] == figure:
                out.setdefault((r["n_train"], r["method"], r["split"]), []).append(
                    (float(r["training_samples"]), float(r["value"])))
    return {k: sorted(v) for k, v in out.items()}


def _curve_record(alg, n_train, samples):
    """A Figure-3 log p(x) curve record with points at ``samples``."""
    return {"algorithm": alg, "config": {"n_train": n_train},
            "points": [{"samples": s, "train": {"appendix_d": -130.0 + i, "importance": -131.0 + i},
                        "test": {"appendix_d": -140.0 + i}} for i, s in enumerate(samples)]}


def _line(ax, gid):
    lines = [ln for ln in ax.get_lines() if ln.get_gid() == gid]
    assert len(lines) == 1, [ln.get_gid() for ln in ax.get_lines()]
    return lines[0]


def _texts(ax):
    return [t.get_text() for t in ax.texts]


def test_figure3_is_drawn_on_the_papers_axes_with_the_whole_paper_curves_and_the_budget_stop():
    import matplotlib.pyplot as plt

    from vae_utils.plotting import LABELS, plot_figure3

    records = [_curve_record(alg, n, [666_700, 1_333_300, last]) for n, last in ((1000, 2_000_000), (50_000, 2_020_000))
               for alg in ("aevb", "wake_sleep", "mcem")]
    fig = plot_figure3(records, load_paper_curves())
    panels = {1000: fig.axes[0], 50_000: fig.axes[1]}
    # the paper's Figure 3: x from 0 to 6e7 samples (N = 1000) and to 6.8e7 (N = 50,000)
    assert panels[1000].get_xlim() == (0, 6e7) and panels[50_000].get_xlim() == (0, 6.8e7)
    csv_curves = _csv_curves("figure3")
    assert len(csv_curves) == 12  # 3 methods x 2 splits x 2 N_train
    for (n, alg, split), pts in csv_curves.items():
        ax = panels[int(n)]
        drawn = [ln for ln in ax.get_lines() if ln.get_label() == f"{LABELS[alg]} paper ({split})"]
        assert len(drawn) == 1, (n, alg, split)
        line = drawn[0]
        assert line.get_linestyle() not in ("None", "", " ")  # a line, not markers alone
        assert list(zip(line.get_xdata(), line.get_ydata())) == pts  # every digitized point, in order
        assert line.get_color() == [ln for ln in ax.get_lines() if ln.get_label() == f"{LABELS[alg]} (train)"][0].get_color()
        assert line.get_linewidth() < 1.8  # thinner than ours
    for n, last, label in ((1000, 2_000_000, "this budget: 2e6"), (50_000, 2_020_000, "this budget: 2.02e6")):
        stop = _line(panels[n], "budget_stop")
        assert list(stop.get_xdata()) == [last, last]
        assert label in _texts(panels[n])
    plt.close(fig)


def test_figure3_budget_stop_is_the_last_point_of_any_method_in_its_panel():
    import matplotlib.pyplot as plt

    from vae_utils.plotting import plot_figure3

    records = [_curve_record("aevb", 1000, [100_000, 300_000]), _curve_record("mcem", 1000, [100_000, 301_000, 450_000])]
    fig = plot_figure3(records, load_paper_curves())
    assert list(_line(fig.axes[0], "budget_stop").get_xdata()) == [450_000, 450_000]
    assert "this budget: 4.5e5" in _texts(fig.axes[0])
    plt.close(fig)


def test_figure2_marks_where_each_panels_curves_stop():
    import matplotlib.pyplot as plt

    from vae_utils.plotting import plot_figure2

    def run(alg, nz, samples):
        return {"algorithm": alg, "config": {"n_z": nz, "dataset": "mnist"},
                "curve": [{"samples": s, "train": -150.0 + i, "test": -151.0 + i} for i, s in enumerate(samples)]}

    results = [run("aevb", 3, [1e5, 3.16e5, 1e6]), run("wake_sleep", 3, [1e5, 3.16e5, 1_333_300]),
               run("aevb", 10, [3e4, 1e5, 2.4e8])]
    fig = plot_figure2(results, load_paper_curves(), "mnist")
    ax3, ax10 = fig.axes[:2]
    assert list(_line(ax3, "budget_stop").get_xdata()) == [1_333_300, 1_333_300]
    assert "this budget: 1.33e6" in _texts(ax3)
    assert list(_line(ax10, "budget_stop").get_xdata()) == [2.4e8, 2.4e8] and "this budget: 2.4e8" in _texts(ax10)
    assert ax3.get_xlim() == (1e5, 2.5e8)  # the paper's Figure 2 axis for MNIST
    assert not any(t.get_text().startswith("this budget") for t in fig.legends[0].get_texts())  # text, not legend
    plt.close(fig)


def test_figure2_widens_its_axis_leftwards_where_a_short_budget_stops_before_the_papers():
    import matplotlib.pyplot as plt

    from vae_utils.plotting import plot_figure2

    results = [{"algorithm": "aevb", "config": {"n_z": 2, "dataset": "frey_face"},
                "curve": [{"samples": s, "train": 100.0, "test": 90.0} for s in (1e4, 3e4)]}]
    fig = plot_figure2(results, load_paper_curves(), "frey_face")
    lo, hi = fig.axes[0].get_xlim()
    assert lo < 3e4 and hi == 1e8  # the stop at 3e4 is on the axis, not left of it
    assert list(_line(fig.axes[0], "budget_stop").get_xdata()) == [3e4, 3e4]
    plt.close(fig)


def test_a_bar_inside_a_table_cell_is_escaped():
    from vae_utils.plotting import markdown

    table = markdown([{"a": "KL(q ‖ p(z|x))"}], {"a": "p(z|x)"})
    assert table.splitlines()[0] == "| p(z\\|x) |" and table.splitlines()[2] == "| KL(q ‖ p(z\\|x)) |"


def test_the_notebooks_figures_draw_from_their_inputs():
    """The figures moved out of notebooks 01 and 07 draw what they are given (smoke: one call each)."""
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    from vae_utils import plotting as P

    ts = torch.linspace(-1, 1, 5)
    fig = P.plot_bound_vs_perturbation(ts, {"mean": -ts ** 2}, ts[:2], {"mean": [torch.ones(4), torch.zeros(4)]}, 0.0)
    assert [ln.get_ydata()[0] for ln in fig.axes[0].get_lines()][:1] == [0.0]  # log p(x) as the top line
    plt.close(fig)
    fig = P.plot_gradient_variance([1, 10], {m: np.array([2.0, 0.2]) for m in P.GRADIENT_COLORS}, 5)
    assert "5 repeats" in fig._suptitle.get_text()
    plt.close(fig)
    rows = [{"estimator": e, "samples": s, "mean_abs_error": 1.0 / s, "bias": -0.1, "bias_sem": 0.05,
             "seconds_per_1000": float(s)} for e in ("appendix_d", "importance") for s in (10, 100)]
    record = {"algorithm": "aevb", "n_z": 3, "config": {"n_z": 3, "n_hidden": 100, "n_train": 1000}, "rows": rows}
    for fig in (P.plot_error_vs_samples([record], 50), P.plot_error_vs_cost([record])):
        plt.close(fig)
    fig = P.plot_error_vs_latent_size([{**rows[0], "n_z": nz} for nz in (2, 5)], [10], [2, 5])
    assert [list(ln.get_xdata()) for ln in fig.axes[0].get_lines() if ln.get_label() == "L = 10"] == [[2, 5]]
    plt.close(fig)


def test_large_and_small_numbers_print_with_a_short_power_of_ten():
    from vae_utils.plotting import markdown, number

    assert [number(v) for v in (13300.0, 7.1e-14, -3350.0, 0.5)] == ["1.33e4", "7.1e-14", "-3.35e3", "0.5"]
    assert "| 1.15e4 |" in markdown([{"rate": 11512.3}], {"rate": "samples/s"}, digits=0)
