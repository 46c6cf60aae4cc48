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
