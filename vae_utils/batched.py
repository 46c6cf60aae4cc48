"""Several AEVB runs of one shape trained in one batched step: ``train_batched``.

Runs that differ only in their seed, their training-set size N or their step size have the same
matrix shapes. Their AEVB steps (Algorithm 1 with estimator B, the gradient of eq. 10 written
out by hand: ``algorithms.sgvb_b_ascent``) are then one step of R stacked models,

    sgvb_b_ascent vectorised over runs with torch.func.vmap:  x (R, M, D), eps (R, L, M, Z),
    every weight (R, out, in): each layer's product becomes one batched product (bmm),

so that a GPU, which a single 784-500-20 step leaves mostly idle, does R runs' work at little more
than one run's cost. Each run keeps everything of its own: generator (its minibatches and noise
are drawn as the single run draws them), Adagrad accumulators, weight decay M/N, step size,
curve, checkpoint, lock and results record, written as ``train`` writes them. A batched run is
therefore the single run up to rounding (tested in float64 on the CPU, two runs batched against
two single runs), and any of its runs can be resumed, extended or verified alone.
"""

from __future__ import annotations

import contextlib
import time
from functools import partial

import torch
from torch.func import vmap
from tqdm.std import tqdm

from . import algorithms
from .algorithms import AEVB, CapturedStep, _adagrad_update_plain, sgvb_b_ascent
from .config import TrainConfig
from .train import RunLock, SideBySide, _stop_between_steps, flush_denormals, prepare, session, train

# what every run of a batch must share (their shapes, their schedule and their device); seed, N
# (n_train), the step size and the places may differ
SHARED_FIELDS = ("dataset", "algorithm", "n_z", "n_hidden", "binarize", "estimator", "batch_size", "n_samples",
                 "weight_prior", "adagrad_warmup", "adagrad_eps", "samples", "eval_per_decade", "eval_from", "eval_n",
                 "gradient", "device")


def check_batchable(cfgs: list[TrainConfig]) -> None:
    """Runs can share a batched step only if they are AEVB with estimator B and share
    ``SHARED_FIELDS``; otherwise one line names the first field that differs."""
    if not isinstance(cfgs, (list, tuple)) or not cfgs or not all(isinstance(c, TrainConfig) for c in cfgs):
        raise TypeError(f"cfgs={cfgs!r} is not allowed: expected a non-empty list of TrainConfig")
    first = cfgs[0]
    if first.algorithm != "aevb" or first.estimator != "B" or first.gradient == "autograd":
        raise ValueError(f"runs are batched only for AEVB with estimator B and the gradient by hand; run "
                         f"{first.name!r} is {first.algorithm} with estimator {first.estimator}, gradient {first.gradient}")
    if any(c.draws != "device" for c in cfgs):
        raise ValueError("runs are batched only with draws='device' (the batched step draws on its device); train "
                         "runs with draws='cpu' one by one")
    for c in cfgs[1:]:
        for field in SHARED_FIELDS:
            if getattr(c, field) != getattr(first, field):
                raise ValueError(f"runs {first.name!r} and {c.name!r} differ in {field} ({getattr(first, field)!r} "
                                 f"and {getattr(c, field)!r}); a batch shares {', '.join(SHARED_FIELDS)}: train "
                                 f"them in separate batches")
    names = [c.name for c in cfgs]
    if len(set(names)) != len(names):
        raise ValueError(f"runs of a batch need distinct names; {sorted({n for n in names if names.count(n) > 1})} "
                         f"repeat")


def _one_or_per_run(values: list[float], device):
    """A value shared by every run as a plain number (the single run's arithmetic), else one per run."""
    return values[0] if all(v == values[0] for v in values) else torch.tensor(values, device=device)


class BatchedStep:
    """The AEVB step of R runs at once. The runs' weights and accumulators are moved into stacked
    tensors (R, ...) and each run's own tensors become views of its slice, so that its model,
    evaluation and checkpoint see every update."""

    def __init__(self, runs):
        self.algorithms = algs = [r.algorithm for r in runs]
        if not all(isinstance(a, AEVB) and getattr(a, "by_hand", False) for a in algs):
            raise ValueError("only AEVB runs with the gradient by hand can be batched")
        n = len(algs[0].opt.params)
        with torch.no_grad():
            self.params = [torch.stack([a.opt.params[k].detach() for a in algs]) for k in range(n)]
            self.sums = [torch.stack([a.opt.sums[k] for a in algs]) for k in range(n)]
        for i, a in enumerate(algs):
            for k in range(n):
                a.opt.params[k].data = self.params[k][i]
                a.opt.sums[k] = self.sums[k][i]
            a.captured = None  # a single run's graph points at the storage just replaced: never replay it
        device = self.params[0].device
        self.decays = [_one_or_per_run([a.opt.decays[k] for a in algs], device) for k in range(n)]
        self.lrs = [a.opt.lr for a in algs]
        self.shared_lr = _one_or_per_run(self.lrs, device)
        decay_dims = [None if isinstance(d, float) else 0 for d in self.decays]
        lr_dim = None if isinstance(self.shared_lr, float) else 0
        self.step_fn = vmap(partial(sgvb_b_ascent, update=_adagrad_update_plain),
                            in_dims=(0, 0, [0] * n, [0] * n, decay_dims, lr_dim, None, None))
        self.ada_eps, self.gaussian = algs[0].opt.eps, algs[0].gaussian
        # on a GPU, the batched step after the warm-up is one captured graph, every run's generator registered
        self.captured = (CapturedStep(lambda: self._step(self.shared_lr), [a.rng for a in algs])
                         if device.type == "cuda" and algorithms.CAPTURE_CUDA_GRAPHS else None)

    def step(self) -> list[tuple[int, float]]:
        """One step of every run: (training samples evaluated, mean bound of its minibatch) per run."""
        warm = [a.opt.next_lr() == 0.0 for a in self.algorithms]  # the warm-up: the accumulators fill, weights stay
        if all(warm):
            means = self._step(0.0 if isinstance(self.shared_lr, float) else torch.zeros_like(self.shared_lr))
        else:
            means = self.captured() if self.captured is not None else self._step(self.shared_lr)
        return [(a.cfg.batch_size, m) for a, m in zip(self.algorithms, means.tolist())]  # one synchronisation

    def _step(self, lr) -> torch.Tensor:
        xs, noises = zip(*(a.draw() for a in self.algorithms))  # each run's own draws, as it draws them alone
        with torch.no_grad():
            bound = self.step_fn(torch.stack(xs), torch.stack(noises), self.params, self.sums, self.decays, lr,
                                 self.ada_eps, self.gaussian)
        return bound.mean(1)


def train_batched(cfgs: list[TrainConfig], *, progress: bool = True, log=print) -> list[dict]:
    """Train (or resume) several AEVB runs of one shape in one batched step; returns their
    results dicts in the order given, each written as ``train`` writes it.

    Every run is checked before any work as ``train`` checks it: a finished record is reused, a
    record of another config is refused. Each run's step size is chosen (``lr='auto'``) or its
    checkpoint loaded on its own; runs resumed at different points are first brought level one
    at a time. Ctrl-C (or SIGTERM) stops every run at the end of the current step, each with its checkpoint.
    A run that diverges stops alone (its last good checkpoint kept); the others go on, and
    ``RunFailed`` names it at the end."""
    check_batchable(cfgs)
    prepared = [prepare(c, log) for c in cfgs]
    results: dict[int, dict] = {i: finished for i, (_, _, finished) in enumerate(prepared) if finished is not None}
    todo = [i for i in range(len(cfgs)) if i not in results]
    if len(todo) == 1:  # a batch of one is a single run: trained as one, with its arithmetic
        results[todo[0]] = train(cfgs[todo[0]], progress=progress, log=log)
        todo = []
    stop = {"stop": False}
    both = SideBySide(cfgs, "batched runs")
    both.results.update(results)
    with flush_denormals():  # as train() runs
        with contextlib.ExitStack() as locks:
            for i in todo:
                locks.enter_context(RunLock(prepared[i][0]))
            for i in todo:  # load or start each run, its step-size trials included
                both.start(i, session(cfgs[i], prepared[i][0], prepared[i][1], stop, progress=False, log=log,
                                      runs_in_batch=len(todo)))
            runs = both.runs
            with _stop_between_steps(stop):
                level = max((r.steps for r in runs.values()), default=0)
                for i in list(runs):  # runs resumed behind the others step alone until level
                    while i in runs and runs[i].steps < level:
                        t0 = time.perf_counter()
                        objective = runs[i].step()
                        both.send(i, objective, time.perf_counter() - t0)
                batch = BatchedStep([runs[i] for i in runs]) if runs else None
                members = list(runs)
                bar = tqdm(total=sum(cfgs[i].samples for i in members), initial=sum(runs[i].samples_seen for i in members),
                           unit="sample", unit_scale=True, disable=not progress or not members,
                           desc=f"{len(members)} runs batched")
                while runs:
                    t0 = time.perf_counter()
                    steps = batch.step()
                    seconds = time.perf_counter() - t0
                    for i, (n, objective) in zip(members, steps):
                        if i in runs:  # a run that stopped (diverged) is still stepped, and ignored
                            runs[i].samples_seen += n
                            runs[i].steps += 1
                            bar.update(n)
                            both.send(i, objective, seconds)
                bar.close()
    return both.end(stop["stop"])
