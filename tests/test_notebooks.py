"""The notebooks, executed by papermill at the smoke budget, and the pipeline around them.

Every notebook runs in order into one temporary output folder (as `reproduce` would run them,
so later notebooks reuse the runs of earlier ones); each must finish without error, write
results and figures (PNG and PDF), and every number it records must be finite and in a sane
range for its quantity.
"""

import json
import math
from pathlib import Path

import nbformat
import papermill as pm
import pytest

from vae_utils import budgets, reproduce

NOTEBOOKS = reproduce.notebook_paths()
NAMES = [p.stem for p in NOTEBOOKS]


def _files(root: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} if root.exists() else {}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, data_dir):
    """Execute every notebook at budget=smoke into one folder; per notebook: error, new files."""
    out = tmp_path_factory.mktemp("smoke")
    record = {}
    for src in NOTEBOOKS:
        before = _files(out / "results") | _files(out / "figures")
        params = {k: v for k, v in {"budget": "smoke", "output_dir": str(out)}.items()
                  if k in pm.inspect_notebook(str(src))}
        error = None
        try:
            pm.execute_notebook(str(src), str(out / f"{src.stem}.ipynb"), parameters=params, kernel_name="python3",
                                cwd=str(tmp_path_factory.getbasetemp()), progress_bar=False)
        except pm.PapermillExecutionError as e:
            error = f"cell {e.exec_count}: {e.ename}: {e.evalue}"
        after = _files(out / "results") | _files(out / "figures")
        record[src.stem] = {"error": error, "new": [p for p, t in after.items() if before.get(p) != t],
                            "executed": out / f"{src.stem}.ipynb"}
    return record


def _numbers(obj, path=""):
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return
    if isinstance(obj, (int, float)):
        yield path, float(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}[{i}]")


def test_the_notebook_set_is_complete():
    assert NAMES[:7] == ["01_the_variational_bound", "02_the_model_and_algorithm", "03_mnist_lower_bound",
                         "04_frey_face_lower_bound", "05_marginal_likelihood", "06_manifolds_and_samples",
                         "07_estimator_accuracy"]


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_at_smoke_and_writes_sane_results(smoke_run, name):
    rec = smoke_run[name]
    assert rec["error"] is None, f"{name} failed at smoke: {rec['error']}"
    new = rec["new"]
    pngs = [p for p in new if p.suffix == ".png"]
    assert pngs, f"{name} wrote no figure"
    assert all(p.with_suffix(".pdf") in new for p in pngs), "every figure is saved as PNG and PDF"
    results = [p for p in new if p.parent.name == "results" and p.suffix in (".json", ".npz")]
    assert results, f"{name} wrote no results"
    for p in (r for r in results if r.suffix == ".json"):
        d = json.loads(p.read_text())
        for where, v in _numbers(d):
            assert math.isfinite(v), f"{p.name}{where} = {v}"
        for pt in d.get("curve", []):  # a training curve: a bound per datapoint
            # a bound per datapoint: MNIST starts near -784 log 2 = -543 and early wake-sleep can dip below
            lo, hi = (-1500, 0) if d["config"]["dataset"] == "mnist" else (-3000, 3000)
            assert lo < pt["train"] < hi and (pt["test"] is None or lo < pt["test"] < hi), (p.name, pt)
        for pt in d.get("points", []):  # a likelihood curve: log p(x) of MNIST images
            for split in ("train", "test"):
                assert -800 < pt[split]["appendix_d"] < 0, (p.name, pt)
    nb = nbformat.read(rec["executed"], 4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors


@pytest.mark.parametrize("name", NAMES)
def test_source_notebooks_carry_no_outputs_and_declare_typed_parameters(name):
    nb = nbformat.read(budgets.NOTEBOOKS_DIR / f"{name}.ipynb", 4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit notebooks without outputs"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "budget: str" in params[0].source
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("params, message", [
    ({"budget": "huge"}, "parameter budget='huge' is not allowed; expected one of smoke, quick, standard, paper"),
    ({"budgt": "smoke"}, "unknown parameter 'budgt' = 'smoke'; this notebook's parameters are: budget"),
    ({"budget": "smoke", "workers": -1}, "parameter workers=-1 is not allowed"),
    ({"budget": "smoke", "allow_training": "no"}, "parameter allow_training='no' has type str; expected bool"),
])
def test_a_bad_parameter_fails_the_notebook_with_its_message(tmp_path, params, message):
    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(str(budgets.NOTEBOOKS_DIR / "03_mnist_lower_bound.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters={"output_dir": str(tmp_path), **params}, kernel_name="python3", progress_bar=False)
    assert message in e.value.evalue
    assert not list((tmp_path / "results").glob("*")) if (tmp_path / "results").exists() else True


def test_without_training_a_missing_result_is_an_error_that_names_it(tmp_path, data_dir):
    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(str(budgets.NOTEBOOKS_DIR / "04_frey_face_lower_bound.ipynb"), str(tmp_path / "out.ipynb"),
                            parameters={"budget": "smoke", "output_dir": str(tmp_path), "allow_training": False},
                            kernel_name="python3", progress_bar=False)
    assert e.value.ename == "MissingResultError"
    # the first missing run in the figure's order, whichever worker would have reached its run first
    assert "no finished result for run 'aevb_frey_face_nz2_h200_grey_nall_seed0'" in e.value.evalue
    assert "more: wake_sleep_frey_face_nz2_h200_grey_nall_seed0" in e.value.evalue
    assert "allow_training=True" in e.value.evalue
    assert not list((tmp_path / "checkpoints").glob("*.pt"))


def test_reproduce_stops_at_the_first_failing_notebook_and_names_its_cell(tmp_path, monkeypatch):
    def cell(src, tags=()):
        return nbformat.v4.new_code_cell(src, metadata={"tags": list(tags)})

    for i, body in enumerate(["x = 1", "raise RuntimeError('boom')", "y = 2"], start=1):
        nb = nbformat.v4.new_notebook(cells=[cell('budget: str = "smoke"', ["parameters"]), cell(body)],
                                      metadata={"kernelspec": {"name": "python3", "language": "python",
                                                               "display_name": "Python 3"}})
        nbformat.write(nb, tmp_path / f"0{i}_nb.ipynb")
    monkeypatch.setattr(reproduce, "NOTEBOOKS_DIR", tmp_path)
    with pytest.raises(reproduce.NotebookFailed, match=r"notebook 02_nb failed in cell 3 .*RuntimeError: boom"):
        reproduce.run_notebooks("smoke", output_dir=str(tmp_path / "out"), log=lambda *a: None)
    assert (tmp_path / "out" / "results" / "notebooks" / "01_nb.ipynb").exists()
    assert not (tmp_path / "out" / "results" / "notebooks" / "03_nb.ipynb").exists()


def test_parameters_check_outside_papermill():
    ns = {"__annotations__": {"budget": str, "workers": int, "ratio": float}, "budget": "smoke", "workers": 2,
          "ratio": 1, "In": ["", "# Parameters\nbudget = 'smoke'\nratoi = 0.5\n"], "ratoi": 0.5}
    with pytest.raises(ValueError, match="unknown parameter 'ratoi' = 0.5"):
        budgets.check_parameters(ns)
    del ns["In"], ns["ratoi"]
    p = budgets.check_parameters(ns, rules={"ratio": (lambda v: 0 < v <= 1, "a number in (0, 1]")})
    assert p.budget.name == "smoke" and p.workers == 2 and p.places.results.name == "smoke"
    with pytest.raises(ValueError, match=r"parameter ratio=2 is not allowed; expected a number in \(0, 1\]"):
        budgets.check_parameters({**ns, "ratio": 2}, rules={"ratio": (lambda v: 0 < v <= 1, "a number in (0, 1]")})
    with pytest.raises(TypeError, match="parameter workers=True has type bool; expected int"):
        budgets.check_parameters({**ns, "workers": True})


def test_an_executed_notebook_is_tidied_of_progress_bars_and_machine_paths(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"input_path": "/tmp/x/main/notebooks/02_a.ipynb", "output_path": "/tmp/x/main/r.ipynb"}
    cell = nbformat.v4.new_code_cell("print(p)")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="runs: 50%|#####   | 1/2\n"),
                    nbformat.v4.new_output("stream", name="stdout", text="outputs in /tmp/x/main/results/quick\n"),
                    nbformat.v4.new_output("execute_result", data={"text/plain": "'/home/u/figures/a.png' 1/2"})]
    nb.cells.append(cell)
    path = tmp_path / "02_a.ipynb"
    nbformat.write(nb, path)
    reproduce.tidy_executed(path, root=tmp_path)
    out = nbformat.read(path, 4)
    outputs = out.cells[0].outputs
    assert [o.output_type for o in outputs] == ["stream", "execute_result"] and outputs[0].name == "stdout"
    assert outputs[0].text == "outputs in results/quick\n" and outputs[1].data["text/plain"] == "'figures/a.png' 1/2"
    assert out.metadata["papermill"]["input_path"] == "notebooks/02_a.ipynb"
    assert out.metadata["papermill"]["output_path"] == "02_a.ipynb"
