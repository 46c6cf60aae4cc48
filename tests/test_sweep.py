"""Sweeps: runs in parallel equal runs one after another, on processes or a dask cluster; a sweep killed mid-way
resumes every run where its checkpoint left it, to the same final state."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import pytest

import torch

from conftest import small_config
from vae_utils import sweep
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


def _curves(results):
    return [[(p["samples"], p["train"], p["test"]) for p in r["curve"]] for r in results]


def test_sweep_in_parallel_equals_runs_one_after_another_and_reruns_do_no_training(tmp_path, data_dir):
    cfgs = [small_config(tmp_path / "seq", name=f"r{i}", n_z=3 + i, samples=10_000) for i in range(2)]
    sequential = [sweep.ensure_run(c) for c in cfgs]
    par = [small_config(tmp_path / "par", name=f"r{i}", n_z=3 + i, samples=10_000) for i in range(2)]
    parallel = sweep.sweep_runs(par, progress=False)
    assert _curves(parallel) == _curves(sequential)
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "par").rglob("*.pt")}
    again = sweep.sweep_runs(par, executor=ThreadPoolExecutor(2), progress=False)
    assert _curves(again) == _curves(parallel)
    assert stamps == {p: p.stat().st_mtime_ns for p in (tmp_path / "par").rglob("*.pt")}, "a finished sweep retrains nothing"
    with pytest.raises(sweep.MissingResultError, match="no finished result for run 'r0'.*allow_training=True"):
        sweep.ensure_run(small_config(tmp_path / "none", name="r0"), allow_training=False)


def test_a_sweep_on_a_dask_cluster_equals_a_local_sweep(tmp_path, data_dir):
    distributed = pytest.importorskip("distributed")
    local = [small_config(tmp_path / "local", name=f"r{i}", n_z=3 + i, samples=10_000, data_dir=str(data_dir))
             for i in range(2)]
    on_dask = [small_config(tmp_path / "dask", name=f"r{i}", n_z=3 + i, samples=10_000, data_dir=str(data_dir))
               for i in range(2)]
    expected = sweep.sweep_runs(local, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        client.wait_for_workers(2)
        got = sweep.sweep_runs(on_dask, executor=client, progress=False)
        # the workers' hosts asked of the workers themselves (scheduler_info() may be a cached snapshot)
        workers = {urlparse(address).hostname for address in client.run(lambda: None)}
    assert workers == {"127.0.0.1"} and _curves(got) == _curves(expected)
    assert all(r["finished"] and r["provenance"]["torch_threads"] == 1 for r in got)
    with pytest.raises(TypeError, match="expected a concurrent.futures.Executor or a dask.distributed.Client"):
        sweep.sweep_runs(on_dask, executor="tcp://127.0.0.1:8786", progress=False)
