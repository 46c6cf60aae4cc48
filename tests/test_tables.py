"""The documents' tables are generated from results/, never typed (vae_utils.tables)."""

import re
import shutil

import pytest

from vae_utils import tables as T
from vae_utils.__main__ import main
from vae_utils.records import REPO_ROOT, ResultsFileError

# tables that hold no results: lists of files, notebooks, settings and choices, written by hand
NOT_RESULTS = ("| notebook | what |", "| topic | the paper | what we do | why |", "| check | test |",
               "| the paper | module | function or class |", "| path | what |")


def _copy_documents(tmp_path):
    for doc in T.DOCUMENTS:
        (tmp_path / doc).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / doc, tmp_path / doc)
    return tmp_path


def test_every_table_in_the_documents_is_what_its_records_give():
    assert T.update(write=False) == []
    assert main(["tables", "--check"]) == 0


def test_every_table_of_numbers_is_generated():
    docs = list(T.DOCUMENTS) + [p.relative_to(REPO_ROOT).as_posix() for p in sorted((REPO_ROOT / "docs").glob("*.md"))]
    typed = []
    for doc in dict.fromkeys(docs):
        text = (REPO_ROOT / doc).read_text(encoding="utf-8")
        lines, inside = text.split("\n"), set()
        for _, start, end in T.blocks(text, doc):
            inside |= set(range(start, end))
        for i, line in enumerate(lines):
            starts_table = line.startswith("|") and (i == 0 or not lines[i - 1].startswith("|"))
            if starts_table and i not in inside and not line.startswith(NOT_RESULTS):
                typed.append(f"{doc}:{i + 1}: {line[:60]}")
    assert typed == [], "tables typed outside a generated block (add a function to vae_utils.tables)"
    assert len(T.TABLES) >= 10 and all(T.render(name).startswith(("|", "**")) for name in T.TABLES)


def test_a_typed_or_stale_table_is_found_and_rewritten_and_the_prose_kept(tmp_path):
    root = _copy_documents(tmp_path)
    readme = root / "README.md"
    text = readme.read_text(encoding="utf-8")
    typed = "-12.345"  # a value no table or prose holds
    assert typed not in text
    edited = text.replace("| 20 | -123.3 / -124.4 |", f"| 20 | {typed} / -124.4 |", 1)
    edited = edited.replace("## Further reading", "## Further reading, edited by hand", 1)
    assert edited.count(typed) == 1 and "edited by hand" in edited
    readme.write_text(edited, encoding="utf-8")
    assert T.update(write=False, root=root) == ["README.md: quick_figure2_mnist"]
    assert readme.read_text(encoding="utf-8") == edited  # --check writes nothing
    assert T.update(write=True, root=root) == ["README.md: quick_figure2_mnist"]
    now = readme.read_text(encoding="utf-8")
    assert typed not in now and "| 20 | -123.3 / -124.4 |" in now and "edited by hand" in now
    assert T.update(write=False, root=root) == []


@pytest.mark.parametrize("damage, match", [
    (lambda t: t.replace("<!-- table budgets:", "<!-- table no_such_table:", 1), "unknown table 'no_such_table'"),
    (lambda t: t.replace("<!-- end table budgets -->", "", 1), "table 'budgets' is not closed"),
    (lambda t: t.replace("<!-- end table budgets -->", "<!-- end table quick_figure3 -->", 1), "is not closed"),
    (lambda t: t.replace("<!-- table budgets: generated", "<!-- table budgets generated", 1), "a table marker not in the form"),
])
def test_damaged_markers_are_refused_in_one_line_and_nothing_is_written(tmp_path, damage, match):
    root = _copy_documents(tmp_path)
    readme = root / "README.md"
    damaged = damage(readme.read_text(encoding="utf-8"))
    readme.write_text(damaged, encoding="utf-8")
    with pytest.raises(ResultsFileError, match=re.escape(match)) as e:
        T.update(write=True, root=root)
    assert "\n" not in str(e.value) and "README.md, line" in str(e.value)
    assert readme.read_text(encoding="utf-8") == damaged


def test_sample_counts_read_as_the_paper_writes_them():
    assert [T._count(x) for x in (1e6, 10 ** 5.5, 2.4e8, 5e5, 2_020_000, 9.999e6)] == \
        ["1e6", "3.16e5", "2.4e8", "5e5", "2.02e6", "1e7"]
    assert T._pair(-1.04, -1.0) == "-1.0" and T._pair(-1.0, None) == "-1.0 / —"


def test_a_budgets_figure2_table_waits_for_every_run_of_its_notebook(tmp_path, monkeypatch):
    quick, results = REPO_ROOT / "results" / "quick", tmp_path / "results"
    table = T.render("quick_figure2_frey")  # from the committed quick record
    monkeypatch.setattr(T.Places, "for_budget", classmethod(lambda cls, budget, output_dir=None: cls(
        results, tmp_path / "figures", tmp_path / "checkpoints", results / "notebooks")))
    results.mkdir()
    records = sorted(quick.glob("*_frey_face_*_seed0.json"))
    assert len(records) == 8  # AEVB and wake-sleep at Nz = 2, 5, 10, 20
    for p in records[:-1]:
        shutil.copy(p, results / p.name)
    assert T.figure2_frey("quick") == "**Not run yet:** `python -m vae_utils reproduce --budget quick --only 04`"
    shutil.copy(records[-1], results / records[-1].name)
    assert T.figure2_frey("quick") == table and "| 20 |" in table


def test_the_seed_table_holds_each_devices_runs_to_the_papers_curve(tmp_path, monkeypatch):
    """Runs placed on the paper's digitized curve (+0 and +0.3 on the GPU, -1 on the CPU): the GPU's
    are within 0.5 + 2 sd at every point, the CPU's outside at every point."""
    import json

    from vae_utils.plotting import paper_value

    template = json.loads((REPO_ROOT / "results/paper/aevb_mnist_nz20_h500_grey_n50000_seed1.json").read_text())
    places = {b: tmp_path / b for b in ("paper", "standard")}
    monkeypatch.setattr(T.Places, "for_budget", classmethod(lambda cls, budget, output_dir=None: cls(
        places[budget], tmp_path / "figures", tmp_path / "checkpoints", places[budget] / "notebooks")))
    for p in places.values():
        p.mkdir()
    paper = T._paper()
    theirs = lambda x, split="train": paper_value(paper, "figure2", "mnist", 20, "aevb", split, x)  # noqa: E731

    def write(seed, device, shift, **draws):
        r = json.loads(json.dumps(template))
        r["config"]["seed"], r["name"] = seed, f"aevb_mnist_nz20_h500_grey_n50000_seed{seed}"
        r["devices"] = [{"device": device, "from_samples": 0, **draws}]
        for pt in r["curve"]:
            for split in ("train", "test"):
                v = theirs(pt["samples"], split)
                pt[split] = pt[split] if v is None else v + shift
        (places["paper"] / f"{r['name']}.json").write_text(json.dumps(r))

    def verdict(table, split):  # the train line's verdicts, or the test line's below it
        return next(line for line in table.splitlines() if f", {split} bound," in line or f"the {split} bound" in line)

    write(0, "cpu", -1.0)
    assert T.paper_seeds().startswith("**No GPU run yet:**")
    write(1, "cuda", 0.0)
    write(2, "cuda", 0.3)
    table = T.paper_seeds()
    points = sum(1 for pt in template["curve"] if pt["samples"] >= T.PROGRESS_FROM and theirs(pt["samples"]) is not None)
    tested = sum(1 for pt in template["curve"] if pt["samples"] >= T.PROGRESS_FROM
                 and theirs(pt["samples"], "test") is not None)
    assert points >= 7 and tested >= 5
    for split, n in (("train", points), ("test", tested)):
        line = verdict(table, split)
        assert line.endswith(f"**cuda** (2 runs): within the digitization (±0.5) plus twice the seeds' sd at {n} of "
                             f"{n} points.")  # nothing outside
        assert f"**cpu** (1 run): within the digitization (±0.5) plus twice the seeds' sd at 0 of {n} points; " \
               f"outside at -1.00 at" in line and line.count("(margin 0.50)") == n
    reached = f"{template['samples_seen']:.3g}".replace("e+0", "e")  # the record the runs are written from
    assert f"| seed 1 (paper budget) | cuda (NVIDIA H200) | {reached} |" in table
    # a GPU run on the CPU's draws (draws="cpu") is a way of its own: held to the paper apart from the GPU's own
    write(3, "cuda", -1.0, draws="cpu")
    table = T.paper_seeds()
    assert f"**cuda** (2 runs): within the digitization (±0.5) plus twice the seeds' sd at {points} of {points} " \
           f"points;" in table and "| seed 3 (paper budget) | cuda with cpu draws (NVIDIA H200) |" in table
    assert f"**cuda with cpu draws** (1 run): within the digitization (±0.5) plus twice the seeds' sd at 0 of " \
           f"{points} points; outside at -1.00 at" in table


def test_the_paper_budgets_figure3_progress_counts_each_runs_points_and_reads_the_figure_only_when_all_are_there(
        tmp_path, monkeypatch):
    """The standard budget's six log p(x) curves, stretched onto the paper budget's points: first
    none, then five runs part of the way (one not begun), then all six at the paper's count."""
    import dataclasses
    import json

    from vae_utils.experiments import figure3_points, likelihood_curve_path

    paper = tmp_path / "paper"
    paper.mkdir()
    monkeypatch.setattr(T.Places, "for_budget", classmethod(lambda cls, budget, output_dir=None: cls(
        paper, tmp_path / "figures", tmp_path / "checkpoints", paper / "notebooks")))
    b = T.get_budget("paper")
    configs = T.figure3_configs(T.NotebookParameters({"budget": "paper"}, b, T.Places.for_budget("paper")))
    assert len(configs) == 6 and T.paper_progress_figure3().startswith("**No Figure-3 run of the paper budget yet:**")

    def write(c, n_points):  # the standard record's last points at the paper budget's first n_points targets
        r = json.loads((REPO_ROOT / "results/standard" / likelihood_curve_path(c).name).read_text())
        targets = figure3_points(c, b.fig3_points)[:n_points]
        r["config"], r["points"] = dataclasses.asdict(c), [
            {**pt, "target": t, "samples": t} for pt, t in zip((r["points"] * 4)[-n_points:], targets)]
        likelihood_curve_path(c).write_text(json.dumps(r))

    for c in configs[:5]:
        write(c, 3)
    table = T.paper_progress_figure3()
    rows = [line for line in table.splitlines() if line.startswith("| 1,000 |") or line.startswith("| 50,000 |")]
    assert len(rows) == 6 and sum("| 3 / 8 |" in row for row in rows) == 5 and rows[-1].endswith("| 0 / 8 | not begun | | | |")
    assert all(row.endswith("| — |") for row in rows[:5])  # no training record beside these curves: no time
    assert "0 of the 6 Figure-3 runs reach the paper's count; 5 on the way, 1 not begun." in table
    assert "readings" not in table
    for c in configs:
        write(c, 8)
    table = T.paper_progress_figure3()
    assert "6 of the 6 Figure-3 runs reach the paper's count; 0 on the way, 0 not begun." in table
    assert "Figure 3's readings, on the last point of each curve:" in table and "- held: N = 1,000: AEVB overfits" in table
