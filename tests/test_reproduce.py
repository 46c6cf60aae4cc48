"""`reproduce` leaves the committed record as it is: an executed copy carries no clock, so the
same records give the same bytes; a copy that differs is kept unless asked to rewrite it."""

import nbformat
import pytest

from vae_utils import reproduce


def _notebook(folder, body):
    def cell(src, tags=()):
        return nbformat.v4.new_code_cell(src, metadata={"tags": list(tags)})

    nb = nbformat.v4.new_notebook(cells=[cell('budget: str = "smoke"', ["parameters"]), cell(body)],
                                  metadata={"kernelspec": {"name": "python3", "language": "python",
                                                           "display_name": "Python 3"}})
    nbformat.write(nb, folder / "01_nb.ipynb")


@pytest.fixture
def notebooks(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    monkeypatch.setattr(reproduce, "NOTEBOOKS_DIR", src)
    return src


def test_a_rerun_on_the_same_records_gives_the_same_bytes_and_no_clock(tmp_path, notebooks):
    _notebook(notebooks, "print(6 * 7)")
    out = tmp_path / "out"
    first = reproduce.run_notebooks("smoke", output_dir=str(out), log=lambda *a: None)[0]["executed"]
    data = open(first, "rb").read()
    text = data.decode()
    assert "42" in text and not any(k in text for k in ("start_time", "end_time", "duration", "iopub", "shell."))
    second = reproduce.run_notebooks("smoke", output_dir=str(out), log=lambda *a: None)[0]["executed"]
    assert second == first and open(second, "rb").read() == data
    assert sorted(p.name for p in (out / "results" / "notebooks").iterdir()) == ["01_nb.ipynb"]


def test_a_copy_that_differs_is_kept_and_the_new_one_written_beside_it_unless_rewrite(tmp_path, notebooks):
    out = tmp_path / "out"
    _notebook(notebooks, "print('old')")
    dst = reproduce.run_notebooks("smoke", output_dir=str(out), log=lambda *a: None)[0]["executed"]
    _notebook(notebooks, "print('new')")
    lines = []
    beside = reproduce.run_notebooks("smoke", output_dir=str(out), log=lines.append)[0]["executed"]
    assert beside.endswith("01_nb.new.ipynb") and "'old'" in open(dst).read() and "'new'" in open(beside).read()
    assert "differs from the one at" in lines[-1] and "--rewrite replaces it" in lines[-1]
    again = reproduce.run_notebooks("smoke", output_dir=str(out), rewrite=True, log=lambda *a: None)[0]["executed"]
    assert again == dst and "'new'" in open(dst).read()


def test_a_failing_notebook_leaves_the_executed_copy_there_untouched(tmp_path, notebooks):
    out = tmp_path / "out"
    _notebook(notebooks, "print('good')")
    dst = reproduce.run_notebooks("smoke", output_dir=str(out), log=lambda *a: None)[0]["executed"]
    good = open(dst, "rb").read()
    _notebook(notebooks, "raise RuntimeError('boom')")
    with pytest.raises(reproduce.NotebookFailed, match=r"(?s)01_nb failed in cell 3 .*boom.*01_nb\.failed\.ipynb"):
        reproduce.run_notebooks("smoke", output_dir=str(out), rewrite=True, log=lambda *a: None)
    assert open(dst, "rb").read() == good


def test_the_committed_executed_notebooks_read_as_notebooks_not_as_a_machine_ran_them():
    import re

    from vae_utils.records import RESULTS_DIR

    copies = sorted((RESULTS_DIR / "quick" / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert [p.stem for p in copies] == [p.stem for p in reproduce.notebook_paths()]  # one per notebook, no strays
    for path in copies:
        text = path.read_text()
        nb = nbformat.reads(text, 4)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert not [o for o in outputs if o.get("name") == "stderr"], f"{path.name}: a progress bar dumped in it"
        assert not [o for o in outputs if o.output_type == "error"], path.name
        assert not re.search(r"(/tmp/|/work/|/home/|/root/|[A-Z]:\\\\)", text), f"{path.name}: a machine path"
        assert not any(k in text for k in ('"start_time"', '"end_time"', '"iopub.')), f"{path.name}: a clock"
        shown = "".join(str(o.get("text", "")) + str((o.get("data") or {}).get("text/markdown", "")) for o in outputs)
        assert not re.search(r"\de\+0\d", shown), f"{path.name}: a sample count printed as 1e+06, not 1e6"


def test_each_committed_executed_copy_was_made_from_its_notebooks_current_source():
    from vae_utils.records import RESULTS_DIR

    for src in reproduce.notebook_paths():
        ours = nbformat.read(src, 4)
        executed = nbformat.read(RESULTS_DIR / "quick" / "notebooks" / src.name, 4)
        cells = [c for c in executed.cells if "injected-parameters" not in c.metadata.get("tags", [])]
        assert [(c.cell_type, c.source) for c in cells] == [(c.cell_type, c.source) for c in ours.cells], \
            f"{src.name}: re-execute it (python -m vae_utils reproduce --only {src.stem[:2]} --rewrite)"
