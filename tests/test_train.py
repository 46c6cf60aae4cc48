"""The trainer: resumable bit-for-bit, guarded against NaN, and really learning on MNIST."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import small_config
from vae_utils import train as T
from vae_utils.estimators import lower_bound


def _final_state(tmp_path, name="t"):
    ckpt = T.load_checkpoint(tmp_path / "ckpt" / f"{name}.pt")
    return ckpt["run"], ckpt["curve"]


def _assert_same_state(a, b):
    assert a["samples_seen"] == b["samples_seen"] and a["steps"] == b["steps"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert torch.equal(a["rng"], b["rng"])


@pytest.mark.parametrize("algorithm", ["aevb", "wake_sleep", "mcem"])
def test_interrupted_run_resumes_bit_for_bit(tmp_path, data_dir, algorithm):
    kw = dict(algorithm=algorithm, samples=30_000) | ({"n_train": 300} if algorithm == "mcem" else {})
    T.train(small_config(tmp_path / "a", **kw), progress=False, log=lambda *a: None)
    cfg = small_config(tmp_path / "b", **kw)
    partial = T.train(cfg, progress=False, log=lambda *a: None, stop_after_steps=37)
    assert not partial["finished"] and 0 < partial["samples_seen"] < 30_000
    T.train(cfg, progress=False, log=lambda *a: None)
    (run_a, curve_a), (run_b, curve_b) = _final_state(tmp_path / "a"), _final_state(tmp_path / "b")
    _assert_same_state(run_a, run_b)
    assert curve_a == [dict(p, train_time_s=q["train_time_s"]) for p, q in zip(curve_b, curve_a)]


@pytest.mark.parametrize("algorithm", ["aevb", "wake_sleep", "mcem"])
def test_killed_process_resumes_bit_for_bit(tmp_path, data_dir, algorithm):
    def cmd(d):
        return [sys.executable, "-m", "vae_utils", "train", "--algorithm", algorithm, "--nz", "5", "--hidden", "50",
                "--n-train", "500" if algorithm == "mcem" else "2000", "--samples", "3e5", "--lr", "0.02",
                "--eval-n", "500", "--name", "k", "--no-progress",
                "--results-dir", str(d / "results"), "--checkpoint-dir", str(d / "ckpt")]

    env = dict(os.environ, PYTHONHASHSEED="0")
    subprocess.run(cmd(tmp_path / "a"), check=True, env=env, capture_output=True)
    proc = subprocess.Popen(cmd(tmp_path / "b"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "b" / "ckpt" / "k.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = T.load_checkpoint(ckpt)["run"]["samples_seen"]
    assert 0 < killed_at < 300_000, "the run should have been killed part-way"
    out = subprocess.run(cmd(tmp_path / "b"), check=True, env=env, capture_output=True, text=True)
    assert "resuming k" in out.stdout
    _assert_same_state(_final_state(tmp_path / "a", "k")[0], _final_state(tmp_path / "b", "k")[0])
    res = json.loads((tmp_path / "b" / "results" / "k.json").read_text())
    assert res["finished"] and res["samples_seen"] >= 300_000


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, data_dir, monkeypatch):
    cfg = small_config(tmp_path)
    T.train(cfg, progress=False, log=lambda *a: None, stop_after_steps=50)
    path = tmp_path / "ckpt" / "t.pt"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    original = T.AEVB.step

    def poisoned(self):
        out = original(self)
        with torch.no_grad():
            self.model.dec_out.weight[0, 0] = float("nan")
        return out

    monkeypatch.setattr(T.AEVB, "step", poisoned)
    with pytest.raises(T.TrainingDiverged, match="non-finite .* last good checkpoint") as e:
        T.train(cfg, progress=False, log=lambda *a: None)
    assert "smaller --lr" in str(e.value)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert all(torch.isfinite(v).all() for v in T.load_checkpoint(path)["run"]["model"].values())


def test_checkpoint_of_another_run_is_not_silently_reused(tmp_path, data_dir):
    T.train(small_config(tmp_path), progress=False, log=lambda *a: None, stop_after_steps=5)
    with pytest.raises(ValueError, match="different run.*n_z"):
        T.train(small_config(tmp_path, n_z=7), progress=False, log=lambda *a: None)


def test_lr_auto_runs_the_paper_grid_and_records_it(tmp_path, data_dir):
    logs = []
    res = T.train(small_config(tmp_path, lr="auto", lr_trial_samples=5_000, samples=10_000),
                  progress=False, log=logs.append)
    assert res["lr"] in (0.01, 0.02, 0.1)
    assert set(res["lr_trials"]) == {"0.01", "0.02", "0.1"}
    assert res["lr_trials"][str(res["lr"])] == max(v for v in res["lr_trials"].values() if v is not None)
    saved = json.loads((tmp_path / "results" / "t.json").read_text())
    assert saved["lr"] == res["lr"] and saved["provenance"]["torch"] == torch.__version__


def test_eval_schedule_is_log_spaced_and_hits_the_papers_ticks():
    s = T.eval_schedule(T.TrainConfig(samples=10 ** 7))
    assert 10 ** 6 in s and 10 ** 7 in s and 10 ** 5 in s and s == sorted(set(s))
    assert all(p % 100 == 0 for p in s)


def test_config_rejects_unknown_values():
    with pytest.raises(ValueError, match="unknown algorithm 'vi'"):
        T.TrainConfig(algorithm="vi")
    with pytest.raises(ValueError, match="unknown dataset"):
        T.TrainConfig(dataset="svhn")
    with pytest.raises(ValueError, match="unknown estimator 'C'"):
        T.TrainConfig(estimator="C")
    with pytest.raises(TypeError):
        T.TrainConfig(n_latent=3)  # a misspelt knob is an error, not ignored


def test_cli_reports_bad_arguments():
    out = subprocess.run([sys.executable, "-m", "vae_utils", "train", "--dataset", "cifar"], capture_output=True, text=True)
    assert out.returncode == 2 and "invalid choice: 'cifar'" in out.stderr
    out = subprocess.run([sys.executable, "-m", "vae_utils", "train", "--latents", "3"], capture_output=True, text=True)
    assert out.returncode == 2 and "unrecognized arguments: --latents" in out.stderr


def test_real_mnist_run_improves_the_bound(tmp_path, data_dir):
    """The paper's model (784-500-20, M = 100, Adagrad 0.02) on the 50,000 MNIST images."""
    cfg = small_config(tmp_path, n_z=20, n_hidden=500, n_train=50_000, samples=200_000, eval_n=2000,
                       adagrad_warmup=100, eval_from=10_000)
    res = T.train(cfg, progress=False, log=lambda *a: None)
    first, last = res["curve"][0], res["curve"][-1]
    print(f"MNIST bound {first['train']:.1f} at {first['samples']} -> {last['train']:.1f} at {last['samples']} samples")
    assert last["train"] > first["train"] + 100 and last["train"] > -175
    assert abs(last["test"] - last["train"]) < 5  # no overfitting this early


def test_real_frey_face_run_improves_the_bound(tmp_path, data_dir):
    cfg = small_config(tmp_path, dataset="frey_face", n_z=5, n_hidden=200, n_train=None, samples=50_000,
                       eval_from=5_000)
    res = T.train(cfg, progress=False, log=lambda *a: None)
    assert res["curve"][-1]["train"] > res["curve"][0]["train"] + 50
    model, _ = T.load_trained(tmp_path / "ckpt" / "t.pt")
    x = model.sample(4)
    assert x.shape == (4, 560) and 0 <= x.min() and x.max() <= 1  # sigmoid means (Section 5)
    assert res["curve"][-1]["train"] == pytest.approx(lower_bound(model, T.load_data(cfg)[0][:cfg.eval_n], seed=1000), abs=1e-3)
