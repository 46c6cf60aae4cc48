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
    cfgs = [TrainConfig(n_z=nz, n_hidden=50, n_train=2000, samples=400_000, lr=0.02, eval_n=500, eval_from=100_000,
                        adagrad_warmup=10, checkpoint_every_s=0.5, name=f"s{nz}", results_dir=root + "/results",
                        checkpoint_dir=root + "/ckpt") for nz in (3, 5)]
    sweep_runs(cfgs, progress=False)
""")


def _run_sweep(root, script=SCRIPT, **kw):
    return subprocess.Popen([sys.executable, "-c", script, str(root)], env=dict(os.environ, PYTHONHASHSEED="0"), **kw)


# the same sweep, its only checkpoints at its few evaluation points (so that one between them is the stop's), its end
# the CLI's
STOPPABLE = SCRIPT.replace("checkpoint_every_s=0.5", "checkpoint_every_s=3600").replace(
    "\nsweep_runs(cfgs, progress=False)\n", textwrap.dedent("""
    from vae_utils.records import Interrupted
    try:
        sweep_runs(cfgs, progress=False)
    except Interrupted as e:
        print(e, file=sys.stderr)
        sys.exit(128 + e.signum)
    """))
assert "except Interrupted" in STOPPABLE


@pytest.fixture(scope="module")
def whole_sweep(tmp_path_factory, data_dir):
    """The sweep run through, uninterrupted."""
    root = tmp_path_factory.mktemp("whole")
    assert _run_sweep(root).wait(timeout=600) == 0
    return root


def _state(root, name):
    return T.load_checkpoint(root / "ckpt" / f"{name}.pt")["run"]


def test_a_sweep_killed_with_sigkill_resumes_to_the_same_final_states(tmp_path, whole_sweep):
    whole, killed = whole_sweep, tmp_path / "killed"
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


@pytest.mark.parametrize("sig, group", [(signal.SIGINT, True), (signal.SIGINT, False), (signal.SIGTERM, False),
                                        (signal.SIGTERM, True)],
                         ids=["ctrl-c-in-a-terminal", "a-kernel-interrupt", "kill", "a-session-ending"])
def test_a_signal_stops_every_run_of_a_sweep_at_a_checkpoint_and_it_resumes(sig, group, tmp_path, whole_sweep):
    """Ctrl-C in a terminal (SIGINT to the sweep and its workers), a notebook's interrupt (SIGINT to
    the sweep alone), `kill` (SIGTERM to the sweep) or a session's end (SIGTERM to every process):
    each run stops at the end of its step with a checkpoint there (between evaluation points, where
    no other checkpoint is written), the sweep says so in one line and exits 128 + the signal, no
    worker outlives it, and called again it ends where the uninterrupted sweep ends."""
    root = tmp_path / "stopped"
    # its own process group, reached by killpg; Ctrl-C heard even where the suite runs in the background (nohup, `&`)
    proc = _run_sweep(root, STOPPABLE, start_new_session=True, stderr=subprocess.PIPE, text=True,
                      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    ckpts = {nz: root / "ckpt" / f"s{nz}.pt" for nz in (3, 5)}
    deadline = time.time() + 120
    while not all(p.exists() for p in ckpts.values()) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 128 + sig, err
    words = "" if sig == signal.SIGINT else " (SIGTERM)"
    assert lines == [f"runs: interrupted{words}; every run it was training stopped at its checkpoint: call it again "
                     f"to resume"], lines
    for nz, p in ckpts.items():
        ckpt = T.load_checkpoint(p)
        at = ckpt["run"]["samples_seen"]
        assert 0 < at < 400_000 and at not in {point["samples"] for point in ckpt["curve"]}, (nz, at)
        with T.RunLock(p):  # no worker still holds it
            pass
    if sig == signal.SIGTERM and group:  # one case resumed: the checkpoints are those of train's own stop
        assert _run_sweep(root).wait(timeout=600) == 0
        for nz in (3, 5):
            a, b = _state(whole_sweep, f"s{nz}"), _state(root, f"s{nz}")
            assert a["samples_seen"] == b["samples_seen"] == 400_000 and a["steps"] == b["steps"]
            for k in a["model"]:
                assert torch.equal(a["model"][k], b["model"][k]), (nz, k)


def test_a_sweep_in_threads_stops_its_runs_at_their_checkpoints(tmp_path, data_dir):
    """Threads cannot be killed: a failing task asks the runs still training in the sweep's threads
    to stop (``train.request_stop``); each writes its checkpoint and ends before the sweep raises."""
    import threading

    started = threading.Event()

    def fail(report):
        started.wait(60)
        time.sleep(0.3)
        raise ValueError("a task failed")

    def run(cfg, report):
        started.set()
        return T.train(cfg, progress=False, log=lambda *a: None)

    cfg = small_config(tmp_path, n_hidden=50, samples=10_000_000, checkpoint_every_s=3600, name="t")
    tasks = [sweep.Task(fail, (), "fail", work=1.0), sweep.Task(run, (cfg,), "t", work=2.0)]
    t0 = time.time()
    with pytest.raises(ValueError, match="a task failed"):
        sweep.sweep(tasks, executor=ThreadPoolExecutor(2), progress=False)
    assert time.time() - t0 < 60
    ckpt = T.load_checkpoint(tmp_path / "ckpt" / "t.pt")
    assert 0 < ckpt["run"]["samples_seen"] < 10_000_000
    assert not T._LOOPS, "no loop still runs"


def test_a_second_sigterm_does_not_hurry_a_stop_but_a_second_ctrl_c_does():
    """A sweep's parent and a session's end may both send SIGTERM: the second changes nothing while
    the run writes its checkpoint; a person's second Ctrl-C stops at once."""
    flag = {"stop": False}
    heard = signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even in a suite run in the background
    try:
        with T._stop_between_steps(flag):
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)
            assert flag["stop"] == signal.SIGTERM
            assert T.request_stop(signal.SIGINT) == 1 and flag["stop"] == signal.SIGTERM  # the first reason stays
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, heard)
    assert T.request_stop() == 0


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
