"""verify: a recorded run's start re-run with today's code, its curve compared bit for bit."""

import json

import pytest
import torch

from conftest import small_config
from vae_utils import train as T
from vae_utils.verify import compare_curves, compare_trials, machine_difference, verify_run, verify_trial


def test_verify_verdicts_separate_float_noise_from_a_real_difference():
    rec = [{"samples": 100, "train": -150.0, "test": -151.0}, {"samples": 200, "train": -140.0, "test": -141.0}]
    same = compare_curves(rec, [dict(p) for p in rec], 1e-3)
    assert same["verdict"] == "identical" and same["largest_difference"] == 0.0
    noisy = compare_curves(rec, [dict(p, train=p["train"] + 2e-5) for p in rec], 1e-3)
    assert noisy["verdict"] == "agrees within 0.001" and abs(noisy["largest_difference"] - 2e-5) < 1e-9
    real = compare_curves(rec, [dict(p, test=p["test"] - 0.5) for p in rec], 1e-3)
    assert real["verdict"] == "differs" and abs(real["largest_difference"] - 0.5) < 1e-9
    assert compare_curves(rec, [], 1e-3)["verdict"] == "differs"


def test_verify_reruns_each_record_with_the_gradient_that_made_it(tmp_path, data_dir):
    """A record from before the by-hand AEVB step (no ``gradient`` in its config) is re-run with
    autograd, a new one with the by-hand step: both identical to the last bit on Frey Face,
    whose early training parts the two arithmetics by tens of nats (measured: the first record
    re-run by hand differs by 38 nats)."""
    verdicts = {}
    for gradient in ("autograd", "auto"):
        cfg = small_config(tmp_path, dataset="frey_face", n_z=5, n_hidden=200, n_train=None, samples=30_000,
                           eval_from=5_000, lr=0.02, gradient=gradient, name=gradient)
        T.train(cfg, progress=False, log=lambda *a: None)
        path = tmp_path / "results" / f"{gradient}.json"
        record = json.loads(path.read_text())
        if gradient == "autograd":
            del record["config"]["gradient"]  # as the records written before the field existed
            path.write_text(json.dumps(record))
        verdicts[gradient] = verify_run(path, samples=30_000, data_dir=data_dir, log=lambda *a: None)["verdict"]
    assert verdicts == {"autograd": "identical", "auto": "identical"}
    with pytest.raises(ValueError, match="gradient='by_hand' is written for estimator B only"):
        T.Run(T.TrainConfig(estimator="A", gradient="by_hand", n_train=200, data_dir=str(data_dir)), 0.02,
              torch.zeros(200, 784))


def test_a_wake_sleep_run_keeps_the_gradient_it_was_made_with(tmp_path, data_dir):
    """Wake-sleep's records from before its by-hand step say gradient 'auto' and were made with
    autograd, and its checkpoints then stored none: verify re-runs such a record with autograd and
    a resumed checkpoint goes on with it, while a new run takes the gradient by hand and its record
    and checkpoint say so. Each verifies identical; the two arithmetics' curves are not."""
    import dataclasses

    quiet = dict(progress=False, log=lambda *a: None)
    old = T.train(small_config(tmp_path, algorithm="wake_sleep", gradient="autograd", name="old"), **quiet)
    path = tmp_path / "results" / "old.json"
    record = json.loads(path.read_text())
    assert record["config"]["gradient"] == "autograd"
    record["config"]["gradient"] = "auto"  # as the wake-sleep records before the by-hand step
    path.write_text(json.dumps(record))
    assert verify_run(path, samples=20_000, data_dir=data_dir, log=lambda *a: None)["verdict"] == "identical"

    new = T.train(small_config(tmp_path, algorithm="wake_sleep", name="new"), **quiet)
    assert new["config"]["gradient"] == "by_hand"
    assert T.load_checkpoint(tmp_path / "ckpt" / "new.pt")["gradient"] == "by_hand"
    assert verify_run(tmp_path / "results" / "new.json", samples=20_000, data_dir=data_dir,
                      log=lambda *a: None)["verdict"] == "identical"
    assert [p["train"] for p in new["curve"]] != [p["train"] for p in old["curve"]]

    part = small_config(tmp_path, algorithm="wake_sleep", gradient="autograd", name="resumed")
    T.train(part, stop_after_steps=60, **quiet)
    ckpt_path = tmp_path / "ckpt" / "resumed.pt"
    ckpt = T.load_checkpoint(ckpt_path)
    del ckpt["gradient"]  # as the checkpoints before the by-hand step
    T.save_checkpoint(ckpt_path, ckpt)
    resumed = T.train(dataclasses.replace(part, gradient="auto"), **quiet)
    assert resumed["config"]["gradient"] == "autograd"
    assert [(p["train"], p["test"]) for p in resumed["curve"]] == [(p["train"], p["test"]) for p in old["curve"]]


def test_trial_verdicts_need_the_same_steps_values_and_choice():
    rec = {"0.01": -200.0, "0.02": -190.0, "0.1": None}  # 0.1 diverged
    assert compare_trials(rec, dict(rec), 0.02, 0.02, 1e-3)["verdict"] == "identical"
    near = compare_trials(rec, {**rec, "0.01": -200.0 + 2e-4}, 0.02, 0.02, 1e-3)
    assert near["verdict"] == "agrees within 0.001" and abs(near["largest_difference"] - 2e-4) < 1e-9
    assert compare_trials(rec, {**rec, "0.02": -189.0}, 0.02, 0.02, 1e-3)["verdict"] == "differs"
    assert compare_trials(rec, dict(rec), 0.02, 0.01, 1e-3)["verdict"] == "differs"  # another step chosen
    assert compare_trials(rec, {**rec, "0.1": -300.0}, 0.02, 0.02, 1e-3)["verdict"] == "differs"  # it did not diverge
    assert compare_trials(rec, {"0.01": -200.0, "0.02": -190.0}, 0.02, 0.02, 1e-3)["verdict"] == "differs"  # a step fewer


@pytest.mark.parametrize("algorithm", ["aevb", "mcem"])
def test_verify_trial_reruns_a_records_step_size_trial(tmp_path, data_dir, algorithm):
    """A run that chose its step by the trial: the trial re-run with today's code is identical to
    the record's ``lr_trials`` and choice (MCEM's length fixed by the run, train.mcem_trial_length);
    one value of the record moved by 5 nats is found, and on a record said to come from
    another CPU the one-line message says so; a run at a given step has no trial to verify."""
    extra = dict(n_train=1000, n_z=3, n_hidden=50, mcem_m_step="full_batch") if algorithm == "mcem" else {}
    cfg = small_config(tmp_path, algorithm=algorithm, lr="auto", lr_trial_samples=3_000, samples=20_000, **extra)
    done = T.train(cfg, progress=False, log=lambda *a: None)
    path = tmp_path / "results" / "t.json"
    quiet = lambda *a: None  # noqa: E731
    first = verify_trial(path, data_dir=data_dir, log=quiet, out_dir=tmp_path / "v1")
    assert first["verdict"] == "identical" and first["chosen"] == {"recorded": done["lr"], "rerun": done["lr"]}
    assert (tmp_path / "v1" / "t_trial_verify.json").exists() and not first["machine_difference"]

    record = json.loads(path.read_text())
    step = next(k for k, v in record["lr_trials"].items() if v is not None)
    record["lr_trials"][step] += 5.0  # beyond every algorithm's tolerance (MCEM's is 3 nats)
    record["provenance"]["cpu_model"] = "Another CPU"
    moved = tmp_path / "moved.json"
    moved.write_text(json.dumps(record))
    said = []
    verdict = verify_trial(moved, data_dir=data_dir, log=said.append, out_dir=tmp_path / "v2")
    assert verdict["verdict"] == "differs" and abs(verdict["largest_difference"] - 5.0) < 1e-3
    assert verdict["machine_difference"]["cpu_model"][0] == "Another CPU"
    assert len(said) == 1 and "made on another machine (cpu_model Another CPU there" in said[0]

    T.train(small_config(tmp_path, algorithm=algorithm, lr=0.02, samples=5_000, name="fixed", **extra),
            progress=False, log=quiet)
    with pytest.raises(ValueError, match=r"fixed.json was trained at a given step size \(0.02\), without a step-size "
                                         r"trial: there is no trial to verify"):
        verify_trial(tmp_path / "results" / "fixed.json", data_dir=data_dir, log=quiet, out_dir=tmp_path / "v3")
    assert not (tmp_path / "v3" / "fixed_trial_verify.json").exists()


def test_machine_difference_names_what_decides_rounding():
    here = {"cpu_model": "AMD EPYC", "cpu_capability": "AVX512", "blas": "MKL", "onednn": "v3", "torch": "2.13.0"}
    assert machine_difference(dict(here), here) == {}
    old = {k: v for k, v in here.items() if k != "cpu_model"}  # a record from before the field was kept
    assert machine_difference(old, here) == {"cpu_model": (None, "AMD EPYC")}
    assert machine_difference({**here, "torch_threads": 2, "date": "x"}, here) == {}  # threads: the tolerance's part
