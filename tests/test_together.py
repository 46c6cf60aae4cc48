"""Runs trained side by side in one process (vae_utils.together) are the runs trained alone."""

import json
import time

import pytest
import torch

from conftest import small_config
from vae_utils.records import RunFailed
from vae_utils.together import check_together, train_together
from vae_utils.train import load_checkpoint, train

QUIET = dict(progress=False, log=lambda *a: None)
KEYS = ("samples", "train", "test", "train_minibatch_mean")  # a curve point without its time


def _points(record):
    return [{k: p[k] for k in KEYS} for p in record["curve"]]
CUDA = pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                      reason="needs a CUDA GPU")])


def _pair(root, data_dir, device="cpu", **over):
    """Two runs of other kinds and shapes: AEVB with 5 latents, wake-sleep with 3 and a wider net."""
    common = dict(data_dir=str(data_dir), device=device, samples=30_000, **over)
    return [small_config(root, name="a", algorithm="aevb", n_z=5, seed=0, **common),
            small_config(root, name="w", algorithm="wake_sleep", n_z=3, n_hidden=80, seed=1, **common)]


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_runs_trained_together_are_the_runs_trained_alone(tmp_path, data_dir, device):
    together = train_together(_pair(tmp_path / "t", data_dir, device), **QUIET)
    alone = [train(c, **QUIET) for c in _pair(tmp_path / "s", data_dir, device)]
    for t, a in zip(together, alone):
        assert t["finished"] and t["samples_seen"] == a["samples_seen"] == 30_000
        assert len(t["curve"]) == len(a["curve"]) > 3
        assert abs(t["curve"][-1]["train"] - t["curve"][0]["train"]) > 5  # the runs moved
        if device == "cpu":  # the same arithmetic in the same order: bit for bit
            assert _points(t) == _points(a)
        else:  # the same kernels on another stream (cuBLAS may pick another workspace): rounding, grown by chaos
            assert max(abs(p["train"] - q["train"]) for p, q in zip(t["curve"], a["curve"])) < 0.5
        # the record says it shared the device; the run alone says nothing
        assert t["sessions"][-1]["runs_together"] == 2 and "runs_together" not in a["sessions"][-1]
        on_disk = json.loads((tmp_path / "t" / "results" / f"{t['name']}.json").read_text())
        assert on_disk["curve"] == t["curve"] and on_disk["finished"]
    if device == "cpu":
        for name in ("a", "w"):  # each run drew from its own generator, as alone
            s, t = (load_checkpoint(tmp_path / d / "ckpt" / f"{name}.pt")["run"]["rng"] for d in ("s", "t"))
            assert torch.equal(s, t)
    # finished records: reused as train reuses them, nothing trained again
    assert [r["curve"] for r in train_together(_pair(tmp_path / "t", data_dir, device), **QUIET)] == \
        [r["curve"] for r in together]


def test_a_deadline_stops_every_run_with_its_checkpoint_and_a_second_call_finishes_them(tmp_path, data_dir):
    cfgs = _pair(tmp_path / "t", data_dir)
    first = train_together(cfgs, deadline=time.time() - 1, **QUIET)  # past: each run stops after its first step
    assert first == [None, None]
    for c in cfgs:
        ckpt = load_checkpoint(tmp_path / "t" / "ckpt" / f"{c.name}.pt")
        assert 0 < ckpt["run"]["samples_seen"] < c.samples
    resumed = train_together(cfgs, **QUIET)
    alone = [train(c, **QUIET) for c in _pair(tmp_path / "s", data_dir)]
    assert [_points(r) for r in resumed] == [_points(r) for r in alone]  # resumed bit for bit
    assert [r["samples_seen"] for r in resumed] == [30_000, 30_000]


def test_a_run_that_diverges_stops_alone_and_is_named_at_the_end(tmp_path, data_dir):
    good, bad = _pair(tmp_path, data_dir)
    bad = small_config(tmp_path, name="bad", algorithm="aevb", n_z=5, lr=1e4, data_dir=str(data_dir), samples=30_000)
    with pytest.raises(RunFailed, match="1 of 2 runs trained together failed.*bad: non-finite") as e:
        train_together([good, bad], **QUIET)
    assert "\n" not in str(e.value)
    assert json.loads((tmp_path / "results" / "a.json").read_text())["finished"]  # the other run went on


@pytest.mark.parametrize("cfgs, match", [
    (lambda p: [small_config(p, name="x"), small_config(p, name="x", seed=1)], "distinct names"),
    (lambda p: [], "non-empty list"),
])
def test_runs_that_cannot_be_trained_together_are_refused_in_one_line(tmp_path, cfgs, match):
    with pytest.raises((ValueError, TypeError), match=match) as e:
        check_together(cfgs(tmp_path))
    assert "\n" not in str(e.value)
