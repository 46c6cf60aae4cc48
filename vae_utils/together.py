"""Several runs of any kind trained side by side in one process: ``train_together``.

A 784-500-Nz step on a GPU is a few hundred small kernels; even captured as one CUDA graph
(``algorithms.CapturedStep``) it fills a fraction of an H200's 132 multiprocessors, and the
next step of the same run must wait for it. Runs that share no tensor need not wait for each
other: each run steps on its own CUDA stream,

    for each round:  for each run r:  (on stream r) replay r's step; r's loop does its bookkeeping

so that the GPU executes the steps of R runs at once, where ``batched.train_batched`` needs R
runs of one shape (AEVB only) stacked into one product. Nothing of a run's arithmetic changes:
its generator, step, curve, checkpoint, lock and results record are its own, exactly as
``train.train`` makes them, so a run trained together is the run trained alone (bit for bit on
the CPU, where the streams are absent and the runs simply take turns: tested), and it can be
resumed, extended or verified alone. Its record's session says how many runs shared the device
(``runs_together``): its ``samples_per_s`` counts the time it waited for the others' steps too.
"""

from __future__ import annotations

import contextlib
import time

import torch
from tqdm.std import tqdm

from .config import TrainConfig
from .device import resolve as resolve_device
from .train import RunLock, SideBySide, _stop_between_steps, flush_denormals, prepare, session


def check_together(cfgs: list[TrainConfig]) -> None:
    """Runs can be trained together when they are on one device and have distinct names; otherwise one line."""
    if not isinstance(cfgs, (list, tuple)) or not cfgs or not all(isinstance(c, TrainConfig) for c in cfgs):
        raise TypeError(f"cfgs={cfgs!r} is not allowed: expected a non-empty list of TrainConfig")
    devices = {resolve_device(c.device) for c in cfgs}
    if len(devices) > 1:
        raise ValueError(f"runs trained together share one device; these ask for {', '.join(sorted(map(str, devices)))}: "
                         f"train them in separate calls")
    names = [c.name for c in cfgs]
    if len(set(names)) != len(names):
        raise ValueError(f"runs trained together need distinct names; {sorted({n for n in names if names.count(n) > 1})} "
                         f"repeat")


def run_stream(device: torch.device):
    """A run's own CUDA stream on a GPU; on a CPU none (the runs take turns)."""
    return torch.cuda.Stream(device) if device.type == "cuda" else None


def on_stream(stream):
    """Work queued inside this block goes to ``stream`` (``run_stream``); with None, where it goes anyway."""
    return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()


def train_together(cfgs: list[TrainConfig], *, progress: bool = True, log=print,
                   deadline: float | None = None) -> list[dict | None]:
    """Train (or resume) several runs side by side, one step of each in turn, each on its own
    CUDA stream on a GPU; returns their results dicts in the order given, each written as
    ``train`` writes it, and None for a run stopped at ``deadline`` (a ``time.time()`` value;
    its checkpoint written: call again to continue).

    Every run is checked before any work as ``train`` checks it: a finished record is reused, a
    record of another config is refused. Each run's step size is chosen (``lr='auto'``) or its
    checkpoint loaded on its own, one run after another. Ctrl-C (or SIGTERM) stops every run at
    the end of its current step, each with its checkpoint. A run that diverges stops alone (its
    last good checkpoint kept); the others go on, and ``RunFailed`` names it at the end."""
    check_together(cfgs)
    prepared = [prepare(c, log) for c in cfgs]
    results: dict[int, dict | None] = {i: done for i, (_, _, done) in enumerate(prepared) if done is not None}
    todo = [i for i in range(len(cfgs)) if i not in results]
    stop = {"stop": False}
    both = SideBySide(cfgs, "runs trained together")
    both.results.update(results)
    with flush_denormals(), contextlib.ExitStack() as locks:
        for i in todo:
            locks.enter_context(RunLock(prepared[i][0]))
        streams = {i: run_stream(resolve_device(cfgs[i].device)) for i in todo}
        for i in todo:  # load or start each run (its step-size trials included) on its own stream
            with on_stream(streams[i]):
                both.start(i, session(cfgs[i], prepared[i][0], prepared[i][1], stop, progress=False, log=log,
                                      deadline=deadline, runs_together=len(todo)))
        runs = both.runs
        bar = tqdm(total=sum(cfgs[i].samples for i in runs), initial=sum(r.samples_seen for r in runs.values()),
                   unit="sample", unit_scale=True, disable=not progress or not runs, desc=f"{len(runs)} runs together")
        with _stop_between_steps(stop):
            while runs:
                for i in list(runs):
                    with on_stream(streams[i]):
                        before = runs[i].samples_seen
                        t0 = time.perf_counter()
                        objective = runs[i].step()
                        bar.update(runs[i].samples_seen - before)
                        both.send(i, objective, time.perf_counter() - t0)
        bar.close()
    stopped = [cfgs[i].name for i in todo if i in both.results and both.results[i] is None]
    if stopped:
        log(f"{len(stopped)} runs trained together reached the time limit, each with its checkpoint "
            f"({', '.join(stopped)}): rerun the same command to continue")
    return both.end(stop["stop"])
