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

from conftest import signal_after_first_checkpoint, small_config
from vae_utils import train as T
from vae_utils.algorithms import AEVB
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
    # batch MCEM counts 16 N = 4,800 samples per iteration on N = 300: 63 iterations
    kw = dict(algorithm=algorithm, samples=30_000) | ({"n_train": 300, "samples": 300_000} if algorithm == "mcem" else {})
    T.train(small_config(tmp_path / "a", **kw), progress=False, log=lambda *a: None)
    cfg = small_config(tmp_path / "b", **kw)
    partial = T.train(cfg, progress=False, log=lambda *a: None, stop_after_steps=37)
    assert not partial["finished"] and 0 < partial["samples_seen"] < kw["samples"]
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
    signal_after_first_checkpoint(proc, ckpt, signal.SIGKILL)
    proc.wait()
    killed_at = T.load_checkpoint(ckpt)["run"]["samples_seen"]
    assert 0 < killed_at < 300_000, "the run should have been killed part-way"
    out = subprocess.run(cmd(tmp_path / "b"), check=True, env=env, capture_output=True, text=True)
    assert "resuming k" in out.stdout
    _assert_same_state(_final_state(tmp_path / "a", "k")[0], _final_state(tmp_path / "b", "k")[0])
    res = json.loads((tmp_path / "b" / "results" / "k.json").read_text())
    assert res["finished"] and res["samples_seen"] >= 300_000


def test_each_session_of_a_run_keeps_its_provenance_from_where_it_began(tmp_path, data_dir):
    cfg = small_config(tmp_path, samples=30_000)
    T.train(cfg, progress=False, log=lambda *a: None, stop_after_steps=37)
    path = tmp_path / "ckpt" / "t.pt"
    assert [s["from_samples"] for s in T.load_checkpoint(path)["sessions"]] == [0]
    # a checkpoint from before the list (only its record kept its last session's provenance)
    old = T.load_checkpoint(path)
    del old["sessions"]
    T.save_checkpoint(path, old)
    recorded = json.loads((tmp_path / "results" / "t.json").read_text())["provenance"]
    res = T.train(cfg, progress=False, log=lambda *a: None)
    assert [s["from_samples"] for s in res["sessions"]] == [None, 3_700]
    assert res["sessions"][0]["provenance"] == recorded and res["sessions"][1]["provenance"] == res["provenance"]
    assert json.loads((tmp_path / "results" / "t.json").read_text())["sessions"] == res["sessions"]


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, data_dir, monkeypatch):
    cfg = small_config(tmp_path)
    T.train(cfg, progress=False, log=lambda *a: None, stop_after_steps=50)
    path = tmp_path / "ckpt" / "t.pt"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    original = AEVB.step

    def poisoned(self):
        out = original(self)
        with torch.no_grad():
            self.model.dec_out.weight[0, 0] = float("nan")
        return out

    monkeypatch.setattr(AEVB, "step", poisoned)
    with pytest.raises(T.TrainingDiverged, match="non-finite .* last good checkpoint") as e:
        T.train(cfg, progress=False, log=lambda *a: None)
    assert "smaller --lr" in str(e.value)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert all(torch.isfinite(v).all() for v in T.load_checkpoint(path)["run"]["model"].values())


def _objectives_left_on_the_device(monkeypatch, nan_at_step=None):
    """AEVB's step handing back its objective as a tensor, as a captured GPU step does (the loop
    reads those in batches), with a NaN objective at ``nan_at_step`` when given."""
    original, steps = AEVB.step, [0]

    def step(self):
        n, objective = original(self)
        steps[0] += 1
        value = float("nan") if steps[0] == nan_at_step else objective
        return n, torch.tensor(value, dtype=torch.float64)  # the float's value exactly
    monkeypatch.setattr(AEVB, "step", step)


def test_objectives_read_in_batches_make_the_record_they_make_read_one_by_one(tmp_path, data_dir, monkeypatch):
    """200 steps, stopped at step 150 (mid-batch: the checkpoint reads what is unread) and resumed:
    every point, minibatch means included, equal to the run whose objectives were read at once."""
    quiet = dict(progress=False, log=lambda *a: None)
    plain = T.train(small_config(tmp_path / "plain"), **quiet)
    _objectives_left_on_the_device(monkeypatch)
    T.train(small_config(tmp_path / "batched"), stop_after_steps=150, **quiet)
    batched = T.train(small_config(tmp_path / "batched"), **quiet)
    drop = lambda curve: [{k: v for k, v in p.items() if k != "train_time_s"} for p in curve]  # noqa: E731
    assert drop(batched["curve"]) == drop(plain["curve"]) and len(plain["curve"]) >= 5
    assert all(p["train_minibatch_mean"] is not None for p in batched["curve"][1:])


@pytest.mark.parametrize("read", ["at_once", "in_batches"])
def test_a_non_finite_objective_stops_the_run_at_its_step_however_it_is_read(tmp_path, data_dir, monkeypatch, read):
    cfg = small_config(tmp_path, eval_from=15_000)  # no curve point between the first checkpoint and step 130
    T.train(cfg, progress=False, log=lambda *a: None, stop_after_steps=50)
    path = tmp_path / "ckpt" / "t.pt"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if read == "in_batches":
        _objectives_left_on_the_device(monkeypatch, nan_at_step=80)
    else:
        original, steps = AEVB.step, [0]

        def step(self):
            n, objective = original(self)
            steps[0] += 1
            return n, float("nan") if steps[0] == 80 else objective
        monkeypatch.setattr(AEVB, "step", step)
    with pytest.raises(T.TrainingDiverged) as e:
        T.train(cfg, progress=False, log=lambda *a: None)
    assert str(e.value).startswith("t: non-finite training objective (nan) at step 130 (13,000 samples, step size 0.02).")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest  # the last good checkpoint, untouched


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


BAD_CONFIGS = [  # (TrainConfig fields, the one-line message) -- the CLI prints the same line, exit 2
    ({"n_hidden": 0}, "n_hidden=0 is not allowed: expected an integer >= 1 (hidden units)"),
    ({"mcem_step_rule": "2013"}, "mcem_step_rule='2013' is not allowed: expected 'capped' or 'uncapped2013'"),
    ({"compile": "always"}, "compile='always' is not allowed: expected True, False or 'auto'"),
    ({"gradient": "manual"}, "gradient='manual' is not allowed: expected 'auto', 'by_hand' or 'autograd'"),
    ({"n_z": 0}, "n_z=0 is not allowed: expected an integer >= 1 (latent dimensions)"),
    ({"n_z": -3}, "n_z=-3 is not allowed: expected an integer >= 1"),
    ({"n_z": 2.5}, "n_z=2.5 is not allowed: expected an integer >= 1"),
    ({"samples": -5}, "samples=-5 is not allowed: expected a positive number of training samples"),
    ({"samples": 0}, "samples=0 is not allowed"),
    ({"eval_n": 0}, "eval_n=0 is not allowed: expected an integer >= 1"),
    ({"dataset": "frey_face", "binarize": "dynamic"}, "binarize='dynamic' is not allowed with dataset='frey_face'"),
    ({"lr": "fast"}, "lr='fast' is not allowed: expected 'auto' or a positive number"),
    ({"lr": -0.1}, "lr=-0.1 is not allowed"),
    ({"lr_grid": ()}, "lr_grid=() is not allowed: expected a non-empty tuple of positive numbers"),
    ({"n_train": 0}, "n_train=0 is not allowed: expected an integer in 1..60000 for mnist"),
    ({"dataset": "frey_face", "n_train": 2000}, "n_train=2000 is not allowed: expected an integer in 1..1600"),
    ({"batch_size": 0}, "batch_size=0 is not allowed"),
    ({"n_samples": 0}, "n_samples=0 is not allowed"),
    ({"threads": 0}, "threads=0 is not allowed"),
    ({"seed": -1}, "seed=-1 is not allowed"),
    ({"mcem_target_accept": 1.5}, "mcem_target_accept=1.5 is not allowed: expected a number in (0, 1)"),
    ({"mcem_leapfrog": 0}, "mcem_leapfrog=0 is not allowed"),
    ({"weight_prior": "yes"}, "weight_prior='yes' is not allowed: expected True or False"),
    ({"name": "../x"}, "name='../x' is not allowed"),
]


@pytest.mark.parametrize("fields, message", BAD_CONFIGS, ids=[m.split(" is")[0] for _, m in BAD_CONFIGS])
def test_bad_config_is_refused_in_one_line(fields, message):
    with pytest.raises((ValueError, TypeError)) as e:
        T.TrainConfig(**fields)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("args, message", [
    (["--hidden", "0"], "n_hidden=0 is not allowed"),
    (["--nz", "-3"], "n_z=-3 is not allowed"),
    (["--samples", "-5"], "argument --samples: '-5' is not allowed: expected a whole positive count"),
    (["--eval-n", "0"], "eval_n=0 is not allowed"),
    (["--dataset", "frey_face", "--binarize", "dynamic"], "binarize='dynamic' is not allowed with dataset='frey_face'"),
])
def test_cli_refuses_bad_values_without_a_traceback(tmp_path, args, message):
    out = subprocess.run([sys.executable, "-m", "vae_utils", "train", *args, "--checkpoint-dir", str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr
    assert not list(tmp_path.iterdir()), "nothing is written for a refused run"


@pytest.mark.parametrize("args, message", [
    (["likelihood", "--checkpoint", "nothing"], "no checkpoint 'nothing'"),
    (["likelihood", "--checkpoint", "nothing", "--n", "0"], "n=0 is not allowed: expected an integer >= 1"),
    (["verify", "results/nothing.json"], "No such file or directory"),
    (["reproduce", "--only", "99"], "--only '99' names no notebook"),
])
def test_other_commands_refuse_bad_input_without_a_traceback(args, message):
    out = subprocess.run([sys.executable, "-m", "vae_utils", *args], capture_output=True, text=True)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_a_damaged_checkpoint_is_reported_and_kept(tmp_path, data_dir):
    cfg = small_config(tmp_path)
    T.train(cfg, progress=False, log=lambda *a: None, stop_after_steps=20)
    path = tmp_path / "ckpt" / "t.pt"
    path.write_bytes(path.read_bytes()[:2000])  # truncated on disk
    damaged = path.read_bytes()
    with pytest.raises(T.CheckpointError, match=r"checkpoint .*t\.pt is damaged or truncated .*nothing was overwritten"):
        T.train(cfg, progress=False, log=lambda *a: None)
    assert path.read_bytes() == damaged


def test_one_writer_per_run(tmp_path, data_dir):
    """A second process starting a run that another process is training is refused, naming the first;
    once the first process is killed (its lock dies with it) the run resumes."""
    cmd = [sys.executable, "-m", "vae_utils", "train", "--nz", "3", "--hidden", "20", "--n-train", "1000",
           "--samples", "2e6", "--lr", "0.02", "--eval-n", "200", "--name", "w", "--no-progress",
           "--checkpoint-dir", str(tmp_path / "ckpt"), "--results-dir", str(tmp_path / "results")]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not (tmp_path / "ckpt" / "w.pt").exists() and time.time() < deadline:
            time.sleep(0.1)
        second = subprocess.run(cmd, capture_output=True, text=True)
        assert second.returncode == 2
        assert f"run w is already being trained by pid {first.pid}" in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    with pytest.raises(T.RunLockedError):  # the same process cannot start the run twice either
        with T.RunLock(tmp_path / "ckpt" / "w.pt"), T.RunLock(tmp_path / "ckpt" / "w.pt"):
            pass
    cfg = T.TrainConfig(n_z=3, n_hidden=20, n_train=1000, samples=2_000_000, lr=0.02, eval_n=200, name="w",
                        checkpoint_dir=str(tmp_path / "ckpt"), results_dir=str(tmp_path / "results"))
    resumed = T.train(cfg, progress=False, log=lambda *a: None, stop_after_steps=10)
    assert resumed["samples_seen"] > 1000


def test_a_record_without_a_field_added_later_counts_as_its_default():
    from vae_utils.config import identity_differences

    cfg = T.TrainConfig(algorithm="mcem", n_z=3, n_hidden=100, n_train=1000)
    old = {k: v for k, v in cfg.identity().items() if k != "mcem_step_rule"}  # written before the field existed
    assert identity_differences(old, cfg) == {}
    variant = T.TrainConfig(algorithm="mcem", n_z=3, n_hidden=100, n_train=1000, mcem_step_rule="uncapped2013")
    assert identity_differences(old, variant) == {"mcem_step_rule": ("capped", "uncapped2013")}
    assert identity_differences({**old, "n_z": 5}, cfg) == {"n_z": (5, 3)}
    # a tuple field (the step-size grid) the record lacks compares as JSON holds it, a list: no difference
    assert identity_differences({k: v for k, v in old.items() if k != "lr_grid"}, cfg) == {}


def test_batch_mcem_is_the_default_and_records_made_before_keep_their_meaning():
    """MCEM's M-step became batch (anglepy's step_batch_mcem) after records of the on-line
    variant were written: a record without the field is the minibatch run it was, the two are
    named apart, and the knob is no part of another algorithm's identity."""
    import json
    from pathlib import Path

    from vae_utils.config import config_of_record, identity_differences

    batch = T.TrainConfig(algorithm="mcem", n_z=3, n_hidden=100, n_train=1000)
    online = T.TrainConfig(algorithm="mcem", n_z=3, n_hidden=100, n_train=1000, mcem_m_step="minibatch")
    assert batch.mcem_m_step == "full_batch"
    assert batch.name == "mcem_batch_mnist_nz3_h100_grey_n1000_seed0"
    assert online.name == "mcem_mnist_nz3_h100_grey_n1000_seed0"  # the earlier runs' name
    before = {k: v for k, v in online.identity().items() if k != "mcem_m_step"}  # a record of before the field
    assert identity_differences(before, online) == {}
    assert identity_differences(before, batch) == {"mcem_m_step": ("minibatch", "full_batch")}
    assert config_of_record(before).mcem_m_step == "minibatch"
    aevb = T.TrainConfig(algorithm="aevb")
    assert not any(k.startswith("mcem_") for k in aevb.identity())
    recorded = {**aevb.identity(), "mcem_m_step": "minibatch", "mcem_step_rule": "capped"}  # as AEVB records hold it
    assert identity_differences(recorded, aevb) == {} and config_of_record(recorded).identity() == aevb.identity()
    with pytest.raises(ValueError, match="mcem_m_step"):
        T.TrainConfig(algorithm="aevb", mcem_m_step="minibatch")  # a knob of another algorithm is still refused
    # every committed training record still reads as the run it is
    root = Path(T.__file__).resolve().parent.parent / "results"
    records = [json.loads(p.read_text()) for p in root.rglob("*.json")]
    records = [r for r in records if isinstance(r, dict) and isinstance(r.get("config"), dict) and "curve" in r]
    assert len(records) > 30
    for r in records:
        cfg = config_of_record(r["config"])
        assert identity_differences(r["config"], cfg) == {}, r["config"].get("name")


def test_a_record_names_its_folders_relative_to_the_repository_and_reads_them_back_against_it(tmp_path, monkeypatch,
                                                                                               data_dir):
    """A committed record names no machine's paths: a folder inside the repository is written relative to
    it, one outside as given; read back, a relative one is the repository's, whatever the cwd."""
    import json

    from vae_utils import config as C

    repo = tmp_path / "repo"
    monkeypatch.setattr(C, "REPO_ROOT", repo)
    inside = T.TrainConfig(results_dir=str(repo / "results" / "paper"), checkpoint_dir=repo / "checkpoints" / "paper",
                           data_dir=str(tmp_path / "data"))
    held = inside.as_record()
    assert (held["results_dir"], held["checkpoint_dir"], held["data_dir"]) == ("results/paper", "checkpoints/paper",
                                                                               str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path / "..")  # another cwd: the record's folders are still the repository's
    back = C.config_of_record(held)
    assert (back.results_dir, back.checkpoint_dir, back.data_dir) == (str(repo / "results" / "paper"),
                                                                      str(repo / "checkpoints" / "paper"), str(tmp_path / "data"))
    assert C.config_of_record(T.TrainConfig(results_dir="/elsewhere/results").as_record()).results_dir == "/elsewhere/results"
    # a run trained into the repository's folders writes its record so
    monkeypatch.setattr(C, "REPO_ROOT", tmp_path)
    cfg = small_config(tmp_path, samples=2_000, eval_from=1_000)
    T.train(cfg, progress=False, log=lambda *a: None)
    record = json.loads((tmp_path / "results" / f"{cfg.name}.json").read_text())
    assert (record["config"]["results_dir"], record["config"]["checkpoint_dir"]) == ("results", "ckpt")
