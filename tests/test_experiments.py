"""A budget trained in pieces (experiments.train_piece): what the notebooks then draw without training."""

import re

import papermill as pm
import pytest

from vae_utils import reproduce
from vae_utils.experiments import train_piece

QUIET = dict(progress=False, log=lambda *a: None)


def _mtimes(root):
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and p.suffix in (".json", ".pt")}


def test_a_piece_stops_at_its_time_limit_then_the_notebook_draws_what_the_next_piece_finished(tmp_path, data_dir):
    first = train_piece("smoke", ["2"], device="cpu", output_dir=tmp_path, datasets=["frey_face"], max_minutes=1e-4,
                        **QUIET)
    assert first["time_limit"] and len(first["remaining"]) >= 7  # stopped at the first step's end, checkpoint kept
    assert list((tmp_path / "checkpoints").glob("*.pt"))
    second = train_piece("smoke", ["2"], device="cpu", output_dir=tmp_path, datasets=["frey_face"], **QUIET)
    assert not second["time_limit"] and len(second["finished"]) == 8
    before = _mtimes(tmp_path)
    src = next(p for p in reproduce.notebook_paths() if p.stem.startswith("03_"))
    pm.execute_notebook(str(src), str(tmp_path / "03.ipynb"), kernel_name="python3", progress_bar=False,
                        parameters={"budget": "smoke", "output_dir": str(tmp_path), "allow_training": False})
    assert _mtimes(tmp_path) == before  # every run was there: nothing trained, nothing rewritten
    again = train_piece("smoke", ["2"], device="cpu", output_dir=tmp_path, datasets=["frey_face"], **QUIET)
    assert again["finished"] == second["finished"] and _mtimes(tmp_path) == before


@pytest.mark.parametrize("kw, match", [
    ({"figures": ["4"]}, "figures=['4'] is not allowed"),
    ({"target": 0}, "target=0 is not allowed"),
    ({"datasets": ["cifar"]}, "datasets=['cifar'] is not allowed"),
    ({"budget": "huge"}, "budget='huge' is not a budget"),
    ({"device": "tpu"}, "device='tpu' is not allowed"),
    ({"max_minutes": -1}, "max_minutes=-1 is not allowed"),
])
def test_a_bad_piece_is_refused_in_one_line_before_any_work(tmp_path, kw, match):
    args = {"budget": "smoke", "figures": ["2"], "output_dir": tmp_path / "out", **kw}
    with pytest.raises((ValueError, TypeError), match=re.escape(match)) as e:
        train_piece(args.pop("budget"), args.pop("figures"), **args, **QUIET)
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()
