"""A sweep killed mid-way resumes every run where its checkpoint left it, to the same final state."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import torch

from vae_utils import train as T
from vae_utils.records import ResultsFileError

SCRIPT = textwrap.dedent("""
    import sys
    from vae_utils.sweep import sweep_runs
    from vae_utils.train import TrainConfig
    root = sys.argv[1]
    cfgs = [TrainConfig(n_z=nz, n_hidden=50, n_train=2000, samples=400_000, lr=0.02, eval_n=500, eval_from=2_000,
                        adagrad_warmup=10, checkpoint_every_s=0.5, name=f"s{nz}", results_dir=root + "/results",
                        checkpoint_dir=root + "/ckpt") for nz in (3, 5)]
    sweep_runs(cfgs, progress=False)
""")


def _run_sweep(root, **kw):
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(root)], env=dict(os.environ, PYTHONHASHSEED="0"), **kw)


def _state(root, name):
    return T.load_checkpoint(root / "ckpt" / f"{name}.pt")["run"]


def test_a_sweep_killed_with_sigkill_resumes_to_the_same_final_states(tmp_path, data_dir):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert _run_sweep(whole).wait(timeout=600) == 0

    proc = _run_sweep(killed)
    ckpts = [killed / "ckpt" / f"s{nz}.pt" for nz in (3, 5)]
    deadline = time.time() + 120
    while not all(p.exists() for p in ckpts) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)  # the sweep's own process; its workers must die with it
    proc.wait()
    partial = {nz: _state(killed, f"s{nz}")["samples_seen"] for nz in (3, 5)}
    assert all(0 < n < 400_000 for n in partial.values()), partial
    time.sleep(1.0)
    for p in ckpts:  # no orphan worker still holds a run
        with T.RunLock(p):
            pass

    assert _run_sweep(killed).wait(timeout=600) == 0
    for nz in (3, 5):
        a, b = _state(whole, f"s{nz}"), _state(killed, f"s{nz}")
        assert a["samples_seen"] == b["samples_seen"] == 400_000 and a["steps"] == b["steps"]
        assert torch.equal(a["rng"], b["rng"])
        for k in a["model"]:
            assert torch.equal(a["model"][k], b["model"][k]), (nz, k)


def test_a_damaged_results_file_is_reported_with_its_path(tmp_path):
    from vae_utils.sweep import finished_result

    cfg = T.TrainConfig(n_z=3, name="d", results_dir=str(tmp_path))
    (tmp_path / "d.json").write_text('{"name": "d", "curve": [')  # truncated on disk
    try:
        finished_result(cfg)
    except ResultsFileError as e:
        assert f"results file {tmp_path / 'd.json'} is damaged" in str(e) and "delete it to recompute it" in str(e)
    else:
        raise AssertionError("a damaged results file must be reported")
    assert (tmp_path / "d.json").read_text() == '{"name": "d", "curve": ['  # left as it was


def test_the_estimators_and_likelihood_functions_refuse_bad_input_in_one_line():
    import pytest

    from vae_utils.estimators import lower_bound, sgvb_b
    from vae_utils.exact import LinearGaussian
    from vae_utils.likelihood_studies import evaluate_checkpoint
    from vae_utils.marginal_likelihood import hmc_kde_log_likelihood, importance_log_likelihood

    model = LinearGaussian.random(x_dim=10, z_dim=3)
    x = model.sample_x(5)
    cases = [
        (lambda: sgvb_b(model, x, 0), ValueError, "n_samples=0 is not allowed: expected an integer >= 1"),
        (lambda: lower_bound(model, x[:, :7]), ValueError, "X has 7 columns; the model expects 10"),
        (lambda: lower_bound(model, x, batch_size=0), ValueError, "batch_size=0 is not allowed"),
        (lambda: hmc_kde_log_likelihood(model, x, n_samples=2), ValueError, "n_samples=2 is not allowed: expected an integer >= 4"),
        (lambda: hmc_kde_log_likelihood(model, x, n_leapfrog=0), ValueError, "n_leapfrog=0 is not allowed"),
        (lambda: hmc_kde_log_likelihood(model, x, target_accept=1.2), ValueError, "target_accept=1.2 is not allowed"),
        (lambda: hmc_kde_log_likelihood(model, x, n_samples=50.5), TypeError, "n_samples=50.5 is not allowed"),
        (lambda: importance_log_likelihood(model, x, n_samples=0), ValueError, "n_samples=0 is not allowed"),
        (lambda: importance_log_likelihood(model, x[0], 10), ValueError, "x of shape (10,) is not allowed"),
        (lambda: evaluate_checkpoint("nothing", n=0), ValueError, "n=0 is not allowed: expected an integer >= 1"),
    ]
    for call, kind, message in cases:
        with pytest.raises(kind) as e:
            call()
        assert message in str(e.value) and "\n" not in str(e.value), (message, str(e.value))
