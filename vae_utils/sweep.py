"""Many independent runs at once: one sweep function over any ``concurrent.futures.Executor``.

A figure of the paper is a grid of independent training runs (Figure 2: two algorithms times
five latent sizes). On this 2-core machine two single-thread processes train about 1.4 times
faster than one process with two threads, so the default executor is a pool of one
single-thread worker process per core. Any other ``Executor`` (threads, a cluster's) can be
passed instead, or a ``dask.distributed.Client``: the runs then go to its workers, on this
machine (a ``LocalCluster``) or on many (a scheduler's address; the workers need this package,
the data and the results/checkpoint folders at the same paths).

Every run stays resumable on its own: ``ensure_run`` reuses a finished result of the same
config, else trains, resuming from the run's checkpoint; a sweep that is interrupted (the
kernel restarted, the pool killed) therefore continues where each run left off when called
again, and a finished sweep does no training at all. ``allow_training=False`` forbids
training: figures are then drawn from existing results only, and a missing one is an error
that names it.

Progress: every task reports units of work (training samples) through a queue; the sweep
shows one bar over all tasks, with rate and ETA. On a dask cluster the bar moves as runs finish.

Stopping: Ctrl-C, SIGTERM (a `kill`, a session's end) or a failing task stops every run the
sweep is training at the end of its step, each with its checkpoint: the sweep's worker processes
are sent SIGTERM (they ignore Ctrl-C, which the sweep handles for them) and given
``STOP_GRACE_S`` to write it before they are killed; runs in threads are stopped with
``train.request_stop``. An interrupted sweep raises ``Interrupted``; calling it again resumes.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue as queue_mod
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable

import torch
from tqdm.std import tqdm  # plain text: renders in terminals, Jupyter and saved notebooks alike

from . import checks
from .records import Interrupted
from .train import TimeLimitReached, TrainConfig, recorded_results, request_stop, train

STOP_GRACE_S = 60.0  # how long a stopping sweep waits for its workers' checkpoints before it kills them


class MissingResultError(FileNotFoundError):
    pass


def finished_result(cfg: TrainConfig) -> dict | None:
    """The recorded results of a finished run of the same config with at least ``cfg.samples``
    (None if there are none yet); a record of another config under the name is refused."""
    recorded = recorded_results(cfg)
    ok = recorded is not None and recorded["finished"] is True and recorded["samples_seen"] >= cfg.samples
    return recorded if ok else None


def _missing(cfg: TrainConfig, more: list[str] = ()) -> MissingResultError:
    """The error for ``cfg`` (and ``more`` runs) found unfinished with training off."""
    return MissingResultError(
        f"no finished result for run {cfg.name!r} with {cfg.samples:.3g} samples in {cfg.results_dir}"
        + (f" (nor for {len(more)} more: {', '.join(more)})" if more else "")
        + "; training is off (allow_training=False): rerun with allow_training=True to train it")


def ensure_run(cfg: TrainConfig, allow_training: bool = True, report: Callable[[int], None] | None = None) -> dict:
    """The results of the run ``cfg`` describes: reused when finished, else trained or resumed."""
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg={cfg!r} is not allowed: expected a TrainConfig")
    done = finished_result(cfg)
    if done is not None:
        if report:
            report(cfg.samples)
        return done
    if not allow_training:
        raise _missing(cfg)
    return train(cfg, progress=False, log=lambda *a: None, on_progress=report)


@dataclass
class Task:
    """One unit of a sweep: ``fn(*args, report=...)``; ``work`` is its size in progress units."""

    fn: Callable
    args: tuple
    name: str
    work: float = 1.0
    kwargs: dict = field(default_factory=dict)
    cost: float | None = None  # expected seconds (any unit); the costliest tasks start first


class _Reporter:
    """Sends a task's progress to the sweep's queue, at most twice a second."""

    def __init__(self, q, index: int):
        self.q, self.index, self.last = q, index, 0.0

    def __call__(self, value: float) -> None:
        now = time.monotonic()
        if self.q is not None and now - self.last > 0.5:
            self.last = now
            try:
                self.q.put_nowait((self.index, float(value)))
            except Exception:  # progress is best-effort; never fail a run over it
                pass


_worker = {"own": False, "stopped_by": 0}  # in a worker of ``default_executor``: whether a signal stopped its last run


def _run_task(task: Task, q, index: int):
    if _worker["stopped_by"]:  # a task queued before the sweep stopped
        raise Interrupted(f"{task.name}: not started, the sweep is stopping", signum=_worker["stopped_by"])
    try:
        return task.fn(*task.args, **task.kwargs, report=_Reporter(q, index))
    except Interrupted as e:
        if _worker["own"] and not isinstance(e, TimeLimitReached):
            _worker["stopped_by"] = e.signum
        raise


def _die_with_parent() -> None:
    """Linux: have the kernel kill this process when the process that started it dies, so that
    killing a sweep (a notebook kernel, a terminal) leaves no orphan still training a run whose
    lock would then refuse the resumed sweep."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _single_thread_worker() -> None:
    _die_with_parent()
    torch.set_num_threads(1)
    # Ctrl-C in a terminal reaches the whole process group: the sweep stops its workers itself (SIGTERM)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker["own"] = True


class _Stopped(BaseException):
    """SIGTERM in the process running a sweep (as KeyboardInterrupt is Ctrl-C)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _sigterm_stops():
    """In the main thread, and unless someone else handles SIGTERM, SIGTERM stops the sweep as
    Ctrl-C does; once it has, a further SIGTERM changes nothing while the runs write their
    checkpoints (Ctrl-C then stops at once)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, lambda *_: None)
        raise _Stopped(signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _stop_workers(executor: ProcessPoolExecutor, grace: float) -> None:
    """SIGTERM to each worker process: a worker training a run stops at the end of its step and
    writes its checkpoint, the pool then sends it home; an idle one ends at once. Whatever is left
    after ``grace`` seconds (or at a second Ctrl-C) is killed."""
    processes = list((getattr(executor, "_processes", None) or {}).values())
    for p in processes:
        with contextlib.suppress(OSError):
            os.kill(p.pid, signal.SIGTERM)
    executor.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + grace
    try:
        for p in processes:
            p.join(max(0.0, deadline - time.monotonic()))
    finally:
        for p in processes:
            if p.is_alive():
                p.kill()


def default_executor(workers: int = 0) -> ProcessPoolExecutor:
    """One single-thread worker process per core (or ``workers``), started with 'spawn' so that
    no worker inherits the parent's OpenMP state (forking after torch has run threads can hang)."""
    n = workers or os.cpu_count() or 1
    return ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("spawn"), initializer=_single_thread_worker)


def _dask_executor(executor):
    """A dask.distributed ``Client`` as a concurrent.futures executor (None for anything else)."""
    if isinstance(executor, Executor) or not callable(getattr(executor, "get_executor", None)):
        return None
    if type(executor).__module__.split(".")[0] != "distributed":
        return None
    return executor.get_executor(pure=False)  # pure=False: a rerun of a task is run again, not looked up


def sweep(tasks: list[Task], *, executor=None, workers: int = 0, desc: str = "runs",
          progress: bool = True, unit: str = "sample") -> list:
    """Run every task (in parallel on ``executor``, default ``default_executor(workers)``; a
    ``concurrent.futures.Executor`` or a ``dask.distributed.Client``) and return their results in
    task order. A failing task stops the sweep: the others are cancelled or stopped at their
    checkpoints and its exception is raised; Ctrl-C or SIGTERM stops it so and raises
    ``Interrupted``."""
    checks.check("workers", workers, int, lambda v: v >= 0, "0 (one per core) or a positive number of processes")
    if not tasks:
        return []
    own = executor is None
    dask = _dask_executor(executor)
    if executor is not None and dask is None and not isinstance(executor, Executor):
        raise TypeError(f"executor={executor!r} is not allowed: expected a concurrent.futures.Executor or a "
                        f"dask.distributed.Client")
    executor = dask or executor or default_executor(min(workers or os.cpu_count() or 1, len(tasks)))
    manager = q = None
    if dask is None:  # a cluster's workers cannot reach this machine's queue: its bar moves per finished run
        from multiprocessing.managers import SyncManager

        manager = SyncManager(ctx=mp.get_context("spawn"))
        manager.start(_die_with_parent)
        q = manager.Queue()
    done_work = [0.0] * len(tasks)
    results = [None] * len(tasks)
    interval = 2.0 if sys.stderr.isatty() else 10.0  # a saved notebook keeps every refresh
    bar = tqdm(total=sum(t.work for t in tasks), desc=desc, unit=unit, unit_scale=True, disable=not progress,
               mininterval=interval, smoothing=0.05)
    # longest first, so that no long task starts last while the other workers sit idle
    order = sorted(range(len(tasks)), key=lambda i: -(tasks[i].cost if tasks[i].cost is not None else tasks[i].work))
    futures = {executor.submit(_run_task, tasks[i], q, i): i for i in order}
    pending, finished, last_refresh = set(futures), 0, time.monotonic()
    with _sigterm_stops():
        try:
            while pending:
                just_done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                while q is not None:
                    try:
                        i, value = q.get_nowait()
                    except (queue_mod.Empty, EOFError, OSError):
                        break
                    done_work[i] = min(value, tasks[i].work)
                for f in just_done:
                    i = futures[f]
                    results[i] = f.result()  # raises the task's exception
                    done_work[i], finished = tasks[i].work, finished + 1
                now = time.monotonic()
                if just_done or now - last_refresh >= interval:
                    bar.n, last_refresh = sum(done_work), now
                    bar.set_postfix_str(f"{finished}/{len(tasks)} done", refresh=False)
                    bar.refresh()
        except BaseException as e:
            for f in futures:
                f.cancel()
            bar.close()
            signum = signal.SIGINT if isinstance(e, KeyboardInterrupt) else e.signum if isinstance(e, _Stopped) else None
            if own:
                _stop_workers(executor, STOP_GRACE_S)
            elif isinstance(executor, ThreadPoolExecutor):  # runs in this process's threads, asked until they stop
                deadline = time.monotonic() + STOP_GRACE_S
                while not all(f.done() for f in futures) and time.monotonic() < deadline:
                    request_stop(signum or signal.SIGTERM)
                    wait(futures, timeout=0.2)
            if signum:
                words = "" if signum == signal.SIGINT else f" ({signal.Signals(signum).name})"
                raise Interrupted(f"{desc}: interrupted{words}; every run it was training stopped at its checkpoint: "
                                  f"call it again to resume", signum=signum) from None
            raise
        finally:
            bar.close()
            if own:
                executor.shutdown(wait=True, cancel_futures=True)
            if manager is not None:
                manager.shutdown()
    return results


def sweep_runs(configs: list[TrainConfig], *, allow_training: bool = True, desc: str = "runs", **kw) -> list[dict]:
    """``ensure_run`` for every config, in parallel; results in config order."""
    if isinstance(configs, (str, bytes)) or not all(isinstance(c, TrainConfig) for c in configs):
        raise TypeError(f"configs={configs!r} is not allowed: expected a list of TrainConfig")
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ValueError(f"two runs of the sweep share a name: {sorted(n for n in names if names.count(n) > 1)}")
    if not allow_training:  # every missing run named at once, in config order, before any worker starts
        missing = [c for c in configs if finished_result(c) is None]
        if missing:
            raise _missing(missing[0], [c.name for c in missing[1:]])
    tasks = [Task(ensure_run, (c, allow_training), c.name, c.samples, cost=expected_cost(c)) for c in configs]
    return sweep(tasks, desc=desc, **kw)


def expected_cost(cfg: TrainConfig) -> float:
    """Rough relative cost of a run (measured here: per training sample, minibatch MCEM on 1000
    images costs about 1.6x an AEVB step of the same model, on 50,000 about 6x; batch MCEM counts
    every gradient evaluation, each about half an AEVB sample; cost grows with the hidden layer and
    the image size), used only to start the longest runs first."""
    factor = 1.0
    if cfg.algorithm == "mcem" and cfg.mcem_m_step == "full_batch":
        factor = 0.5
    elif cfg.algorithm == "mcem":
        factor = 6.0 if (cfg.n_train or 0) > 10_000 else 1.6
    return cfg.samples * factor * (cfg.n_hidden + 50) * (784 if cfg.dataset == "mnist" else 560)


__all__ = ["Task", "sweep", "sweep_runs", "ensure_run", "finished_result", "default_executor", "MissingResultError"]
