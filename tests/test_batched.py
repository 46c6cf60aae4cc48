"""Runs batched in one step (vae_utils.batched) are the single runs, up to rounding."""

import json

import pytest
import torch

from conftest import small_config
from vae_utils.batched import BatchedStep, check_batchable, train_batched
from vae_utils.config import TrainConfig
from vae_utils.data import load_dataset
from vae_utils.train import Run, train

STEPS = 300


def _runs(data_dir, dataset="mnist", device="cpu"):
    """Two runs that differ in seed, N (so in the weight decay M/N) and step size."""
    cfgs = [TrainConfig(dataset=dataset, n_z=5, n_hidden=60, n_train=n, lr=lr, seed=seed, adagrad_warmup=20,
                        data_dir=str(data_dir), samples=10**6, name=f"r{seed}", compile=False, device=device)
            for seed, n, lr in ((0, 1000, 0.02), (1, 1500, 0.01))]
    return [Run(c, c.lr, load_dataset(dataset, "train", data_dir=data_dir, n_train=c.n_train).double()) for c in cfgs]


# Frey Face's first steps are chaotic (a rounding difference grows tenfold every few steps once
# the bound climbs, as two thread counts of one step do): it is compared over its first 50 steps,
# 30 of them updates, where the bound rises from -526 to above 500
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU")])])
@pytest.mark.parametrize("dataset, steps", [("mnist", STEPS), ("frey_face", 50)])
def test_two_runs_batched_equal_two_single_runs_in_float64(data_dir, float64, dataset, steps, device):
    singles, batched = _runs(data_dir, dataset, device), _runs(data_dir, dataset, device)
    alone = [[float(run.step()) for _ in range(steps)] for run in singles]  # a captured GPU step: a tensor
    step = BatchedStep(batched)
    together = [step.step() for _ in range(steps)]
    for r, (single, run) in enumerate(zip(singles, batched)):
        bounds = [t[r][1] for t in together]
        assert abs(alone[r][-1] - alone[r][0]) > 5  # the runs moved: not two frozen models compared
        assert max(abs(a - b) for a, b in zip(alone[r], bounds)) < 1e-8
        for p, q in zip(single.model.parameters(), run.model.parameters()):  # the run's own model sees the batch
            torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-10)
        assert run.algorithm.opt.t == single.algorithm.opt.t == steps
    # the two runs drew their own minibatches and noise from their own generators, as alone
    assert [r.rng.get_state().tolist() for r in singles] == [r.rng.get_state().tolist() for r in batched]


def test_batched_runs_write_ordinary_records_that_train_then_reuses(tmp_path, data_dir):
    cfgs = [small_config(tmp_path, name=f"b{s}", seed=s, samples=20_000, data_dir=str(data_dir)) for s in (0, 1)]
    records = train_batched(cfgs, progress=False, log=lambda *a: None)
    alone = train(small_config(tmp_path / "alone", name="b1", seed=1, samples=20_000, data_dir=str(data_dir)),
                  progress=False, log=lambda *a: None)
    for cfg, rec in zip(cfgs, records):
        on_disk = json.loads((tmp_path / "results" / f"{cfg.name}.json").read_text())
        assert on_disk["finished"] and on_disk["samples_seen"] == 20_000 and on_disk["config"]["seed"] == cfg.seed
        assert rec["curve"] == on_disk["curve"] and (tmp_path / "ckpt" / f"{cfg.name}.pt").is_file()
    # float32: the batched product rounds otherwise than the single one; the curves agree closely
    assert [p["samples"] for p in records[1]["curve"]] == [p["samples"] for p in alone["curve"]]
    assert max(abs(a["train"] - b["train"]) for a, b in zip(records[1]["curve"], alone["curve"])) < 0.5
    again = train(cfgs[0], progress=False, log=lambda *a: None)  # an ordinary finished record: reused
    assert again["curve"] == records[0]["curve"]
    # it says it was batched, and verify, which re-runs single runs, says it cannot re-run it
    from vae_utils.verify import verify_run

    assert records[0]["runs_in_batch"] == 2 and "runs_in_batch" not in alone
    with pytest.raises(ValueError, match="trained in one batched step with 1 other runs") as e:
        verify_run(tmp_path / "results" / "b0.json", samples=10_000, log=lambda *a: None)
    assert "\n" not in str(e.value) and not (tmp_path / "results" / "b0_verify.json").exists()


@pytest.mark.parametrize("change, match", [
    ({"n_z": 3}, "differ in n_z"),
    ({"algorithm": "wake_sleep"}, "differ in algorithm"),
    ({"samples": 30_000}, "differ in samples"),
    ({"name": "a0"}, "distinct names"),
])
def test_runs_that_cannot_share_a_step_are_refused_in_one_line(tmp_path, change, match):
    a = small_config(tmp_path, name="a0")
    b = small_config(tmp_path, **{"name": "a1", **change})
    with pytest.raises(ValueError, match=match) as e:
        check_batchable([a, b])
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="only for AEVB with estimator B"):
        check_batchable([small_config(tmp_path, estimator="A", gradient="autograd")])
    with pytest.raises(ValueError, match="only with draws='device'"):
        check_batchable([small_config(tmp_path, name="a0", draws="cpu"), small_config(tmp_path, name="a1")])


def test_ctrl_c_stops_every_batched_run_at_a_checkpoint_and_the_rerun_resumes_them(tmp_path, data_dir, monkeypatch):
    import signal

    from vae_utils import batched
    from vae_utils.records import Interrupted

    def cfgs(root):
        return [small_config(root, name=f"c{s}", seed=s, samples=20_000, data_dir=str(data_dir)) for s in (0, 1)]
    whole = train_batched(cfgs(tmp_path / "whole"), progress=False, log=lambda *a: None)
    real_step, calls = batched.BatchedStep.step, []

    def step_then_ctrl_c(self):
        calls.append(1)
        if len(calls) == 70:
            signal.raise_signal(signal.SIGINT)  # as a user's Ctrl-C: only a flag, read after the step
        return real_step(self)
    monkeypatch.setattr(batched.BatchedStep, "step", step_then_ctrl_c)
    # Ctrl-C as in a terminal, also where this process was started with SIGINT ignored (a background job)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(Interrupted, match=r"2 batched runs interrupted, each at its checkpoint \(c0, c1\)") as caught:
            train_batched(cfgs(tmp_path / "cut"), progress=False, log=lambda *a: None)
        assert caught.value.signum == signal.SIGINT  # the command exits 130
    finally:
        signal.signal(signal.SIGINT, previous)
    assert all((tmp_path / "cut" / "ckpt" / f"c{s}.pt").is_file() for s in (0, 1))
    monkeypatch.setattr(batched.BatchedStep, "step", real_step)
    resumed = train_batched(cfgs(tmp_path / "cut"), progress=False, log=lambda *a: None)
    def values(records):
        return [[(p["samples"], p["train"], p["test"]) for p in r["curve"]] for r in records]
    assert values(resumed) == values(whole)  # bit for bit
