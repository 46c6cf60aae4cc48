"""How fast our code is, against the usual way of writing it and against the hardware.

For each workload, in one process and one run (so that the machine's drift cancels out), the
median rate over interleaved repeats after a warm-up, of three implementations:
  * ours: the library's code as a run uses it;
  * baseline: the same computation written the usual way. For the AEVB and wake-sleep steps
    and the test-set bound, that is pytorch/examples' ``vae/main.py``: a shuffling
    ``DataLoader`` over a ``TensorDataset``, an ``nn.Module``, ``torch.optim.Adagrad``, the
    N(0, I) weight prior as a loss term. For Monte Carlo EM, plain PyTorch HMC (a leapfrog loop
    of ``torch.autograd.grad`` calls) and ``torch.optim.Adagrad``. For the Appendix-D
    estimator, our function called one datapoint at a time, as a transcription of the paper's
    per-datapoint procedure would run;
  * limit: only the matrix products ours performs (recorded from one call with a
    ``TorchDispatchMode``: every mm/addmm/bmm with its shapes and strides, forward and
    backward), replayed on random tensors. No implementation of the same arithmetic can beat
    it on this machine with this BLAS.
And a sweep: two training runs as two single-thread worker processes against the same two
runs one after another with two threads each.

    python -m vae_utils benchmark [--repeats 5] [--only aevb_mnist,sweep] [--quick]

writes ``results/benchmarks.json`` (rates, ratios, torch version, threads, CPU).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from tqdm.std import tqdm

from . import checks
from .algorithms import compiler_available
from .config import TrainConfig
from .data import load_dataset
from .device import check_device, device_provenance
from .estimators import lower_bound
from .records import (RESULTS_DIR, RecordExistsError, ResultsFileError, check_output_file, differences, existing_record, provenance,
                      write_record)
from .train import Run, flush_denormals

aten = torch.ops.aten
MATMULS = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default}


# --- the matrix-multiply limit ---------------------------------------------------------

class _MatmulRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in MATMULS:
            self.calls.append((func, [(a.shape, a.stride(), a.dtype, a.device) if isinstance(a, torch.Tensor) else a
                                      for a in args]))
        return func(*args, **(kwargs or {}))


def matmul_limit(fn):
    """A callable doing only the matrix products one call of ``fn`` does (same shapes, strides and
    device). On a GPU the products are replayed as one captured CUDA graph: the limit of a step
    that is itself one graph."""
    recorder = _MatmulRecorder()
    with recorder:
        fn()
    calls = [(func, [torch.empty_strided(a[0], a[1], dtype=a[2], device=a[3]).normal_() if isinstance(a, tuple) else a
                     for a in args]) for func, args in recorder.calls]
    if not calls:
        raise RuntimeError("the workload performed no matrix product")

    def products():
        for func, args in calls:
            func(*args)
    on_gpu = any(isinstance(a, torch.Tensor) and a.is_cuda for _, args in calls for a in args)
    if on_gpu:
        from .algorithms import CapturedStep

        replay = CapturedStep(products, [])
    else:
        replay = products
    replay.n_matmuls = len(calls)
    return replay


# --- the usual way: pytorch/examples' vae/main.py, with our model's shapes --------------

class ExamplesVAE(nn.Module):
    """pytorch/examples' VAE with the paper's tanh layers and our sizes (Bernoulli or Gaussian)."""

    def __init__(self, x_dim, h_dim, z_dim, gaussian=False):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(x_dim, h_dim), nn.Linear(h_dim, z_dim), nn.Linear(h_dim, z_dim)
        self.fc3, self.fc4 = nn.Linear(z_dim, h_dim), nn.Linear(h_dim, x_dim)
        self.fc5 = nn.Linear(h_dim, x_dim) if gaussian else None
        for p in self.parameters():
            nn.init.normal_(p, 0, 0.01)

    def encode(self, x):
        h = torch.tanh(self.fc1(x))
        return self.fc21(h), self.fc22(h)

    def neg_log_likelihood(self, x, z):
        h = torch.tanh(self.fc3(z))
        if self.fc5 is None:
            return F.binary_cross_entropy_with_logits(self.fc4(h), x, reduction="sum")
        return F.gaussian_nll_loss(torch.sigmoid(self.fc4(h)), x, self.fc5(h).exp(), full=True, reduction="sum")

    def forward(self, x):
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return self.neg_log_likelihood(x, z) + kld

    def weight_penalty(self, scale):
        return scale * 0.5 * sum((p * p).sum() for p in self.parameters() if p.dim() == 2)


def _loader_batches(X, M):
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X), batch_size=M, shuffle=True)
    while True:
        for (x,) in loader:
            yield x


def examples_aevb(X, cfg, device="cpu"):
    """On a GPU as pytorch/examples runs there: the data loader on the CPU, each minibatch moved over."""
    model = ExamplesVAE(X.shape[1], cfg.n_hidden, cfg.n_z, cfg.dataset != "mnist").to(device)
    opt = torch.optim.Adagrad(model.parameters(), lr=0.02)
    batches, scale = _loader_batches(X.cpu(), cfg.batch_size), cfg.batch_size / len(X)

    def step():
        x = next(batches).to(device)
        opt.zero_grad()
        loss = model(x) + model.weight_penalty(scale)
        loss.backward()
        opt.step()
    return step


def examples_wake_sleep(X, cfg, device="cpu"):
    model = ExamplesVAE(X.shape[1], cfg.n_hidden, cfg.n_z).to(device)
    dec = [p for n, p in model.named_parameters() if n[:3] in ("fc3", "fc4")]
    enc = [p for n, p in model.named_parameters() if n[:3] not in ("fc3", "fc4")]
    wake, sleep = torch.optim.Adagrad(dec, lr=0.02), torch.optim.Adagrad(enc, lr=0.02)
    batches, M = _loader_batches(X.cpu(), cfg.batch_size), cfg.batch_size

    def step():
        x = next(batches).to(device)
        with torch.no_grad():
            mu, logvar = model.encode(x)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        wake.zero_grad()
        (model.neg_log_likelihood(x, z) + 0.5 * (z * z).sum()).backward()
        wake.step()
        with torch.no_grad():
            z = torch.randn(M, cfg.n_z, device=device)
            x_dream = torch.bernoulli(torch.sigmoid(model.fc4(torch.tanh(model.fc3(z)))))
        mu, logvar = model.encode(x_dream)
        sleep.zero_grad()
        (0.5 * (logvar + (z - mu) ** 2 / logvar.exp())).sum().backward()
        sleep.step()
    return step


def plain_mcem(X, cfg):
    """Plain PyTorch Monte Carlo EM: a leapfrog loop of autograd.grad calls, torch's Adagrad."""
    model = ExamplesVAE(X.shape[1], cfg.n_hidden, cfg.n_z)
    dec = [model.fc3.weight, model.fc3.bias, model.fc4.weight, model.fc4.bias]
    opt = torch.optim.Adagrad(dec, lr=0.02)
    z, eps, M, N = torch.randn(len(X), cfg.n_z), 0.01, cfg.batch_size, len(X)

    def log_joint(x, z):
        return -0.5 * (z * z).sum(-1) - F.binary_cross_entropy_with_logits(
            model.fc4(torch.tanh(model.fc3(z))), x, reduction="none").sum(-1)

    def grad(z):
        z = z.detach().requires_grad_()
        lp = log_joint(X, z)
        return lp.detach(), torch.autograd.grad(lp.sum(), z)[0]

    def step():
        nonlocal z, eps
        r0 = torch.randn_like(z)
        lp0, g = grad(z)
        zn, r = z, r0 + 0.5 * eps * g
        for i in range(cfg.mcem_leapfrog):
            zn = zn + eps * r
            lp, g = grad(zn)
            r = r + (eps if i < cfg.mcem_leapfrog - 1 else 0.5 * eps) * g
        accept = torch.rand(len(z)) < (lp - 0.5 * (r * r).sum(-1) - lp0 + 0.5 * (r0 * r0).sum(-1)).clamp(max=0).exp()
        z = torch.where(accept[:, None], zn, z)
        eps = eps * 1.25 if accept.float().mean() > 0.9 else eps / 1.25
        for k in range(cfg.mcem_m_steps):
            idx = torch.randint(N, (M,))
            opt.zero_grad()
            (-log_joint(X[idx], z[idx]).sum() + model.weight_penalty(M / N)).backward()
            opt.step()
    return step


def examples_evaluation(X, cfg):
    model = ExamplesVAE(X.shape[1], cfg.n_hidden, cfg.n_z)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X), batch_size=1000)

    @torch.no_grad()
    def evaluate():
        return sum(model(x).item() for (x,) in loader) / len(X)
    return evaluate


# --- the workloads ---------------------------------------------------------------------

FIGURE3_MODEL = dict(dataset="mnist", n_z=3, n_hidden=100)


def _run(cfg: TrainConfig, X, capture: bool = True) -> Run:
    run = Run(cfg, 0.02, X)
    if not capture and getattr(run.algorithm, "captured", None) is not None:
        run.algorithm.captured = None  # kernel by kernel, as a dispatch mode can see them
    for _ in range(3 if cfg.algorithm == "mcem" else 200):  # past the Adagrad warm-up: the full update
        run.step()
    return run


def workload_training(algorithm: str, dataset: str, compile: bool, data_dir=None, device: str = "cpu"):
    cfg = TrainConfig(algorithm=algorithm, dataset=dataset, n_z=20, n_hidden=500 if dataset == "mnist" else 200,
                      lr=0.02, compile=compile, samples=10**9, adagrad_warmup=100, data_dir=data_dir, device=device)
    X = load_dataset(dataset, "train", data_dir=data_dir, n_train=cfg.n_train)
    run = _run(cfg, X)
    # the products are recorded from an eager twin: torch.compile does not compile under a dispatch mode, and a
    # replayed CUDA graph is not dispatched at all
    on_gpu = device == "cuda"
    eager = run if not (compile or on_gpu) else _run(dataclasses.replace(cfg, compile=False), X, capture=False)
    baseline = (examples_aevb if algorithm == "aevb" else examples_wake_sleep)(X, cfg, device)
    # wake-sleep's step before its gradient was written out by hand (autograd, its update compiled), beside it
    autograd = _run(dataclasses.replace(cfg, gradient="autograd"), X).step if algorithm == "wake_sleep" else None
    return {"ours": run.step, "baseline": baseline, "limit": matmul_limit(eager.step),
            "ours (eager)": eager.step if (compile or on_gpu) else None, "ours (autograd)": autograd,
            "unit": "samples", "per_call": cfg.batch_size}


def workload_batched(runs: int = 8, data_dir=None, device: str = "cuda"):
    """``runs`` AEVB runs (MNIST Nz = 20, seeds 0..runs-1) in one batched step (``batched.BatchedStep``)."""
    from .batched import BatchedStep

    X = load_dataset("mnist", "train", data_dir=data_dir, n_train=50_000)

    def batch(capture):
        cfgs = [TrainConfig(n_z=20, n_hidden=500, lr=0.02, compile=False, samples=10**9, seed=s, device=device,
                            data_dir=data_dir, name=f"b{s}") for s in range(runs)]
        step = BatchedStep([Run(c, 0.02, X) for c in cfgs])
        if not capture:
            step.captured = None
        for _ in range(200):
            step.step()
        return step
    ours, eager = batch(True), batch(False)
    cfg = TrainConfig(n_z=20, n_hidden=500, lr=0.02, device=device, data_dir=data_dir)
    return {"ours": ours.step, "baseline": examples_aevb(X, cfg, device), "limit": matmul_limit(eager.step),
            "ours (eager)": eager.step, "unit": "samples", "per_call": runs * cfg.batch_size,
            "baseline_per_call": cfg.batch_size}


def workload_together(algorithm: str = "wake_sleep", latents=(5, 10, 20, 200), data_dir=None, device: str = "cuda"):
    """Figure 2's MNIST runs of ``algorithm`` with ``latents``, one step of each in turn: ours on
    a CUDA stream per run (``together.train_together``), the baseline on one stream, as runs
    trained one after another are; the limit is their products as one graph."""
    from .together import on_stream, run_stream

    X = load_dataset("mnist", "train", data_dir=data_dir, n_train=50_000)

    def runs(capture):
        return [_run(TrainConfig(algorithm=algorithm, n_z=nz, n_hidden=500, lr=0.02, compile=False, samples=10**9,
                                 seed=i, device=device, data_dir=data_dir, name=f"t{nz}"), X, capture=capture)
                for i, nz in enumerate(latents)]

    ours, eager = runs(True), runs(False)
    streams = [run_stream(torch.device(device)) for _ in ours]

    def together():
        for run, stream in zip(ours, streams):
            with on_stream(stream):
                run.step()

    def one_after_another():
        for run in ours:
            run.step()

    def eager_steps():
        for run in eager:
            run.step()
    return {"ours": together, "baseline": one_after_another, "limit": matmul_limit(eager_steps),
            "unit": "samples", "per_call": len(latents) * 100}


def workload_mcem(data_dir=None):
    cfg = TrainConfig(algorithm="mcem", mcem_m_step="minibatch", n_train=50_000, lr=0.02, compile=True, samples=10**12, data_dir=data_dir, device="cpu",
                      **FIGURE3_MODEL)
    X = load_dataset("mnist", "train", data_dir=data_dir, n_train=cfg.n_train)
    run = _run(cfg, X)
    # the products are recorded from an eager twin: torch.compile does not compile under a dispatch mode
    eager = _run(dataclasses.replace(cfg, compile=False), X)
    per_call = len(X) + cfg.mcem_m_steps * cfg.batch_size
    return {"ours": run.step, "baseline": plain_mcem(X, cfg), "limit": matmul_limit(eager.step), "unit": "samples",
            "per_call": per_call}


def workload_appendix_d(n: int = 1000, data_dir=None):
    from .marginal_likelihood import hmc_kde_log_likelihood

    cfg = TrainConfig(n_train=1000, lr=0.02, samples=10**9, data_dir=data_dir, device="cpu", **FIGURE3_MODEL)
    x = load_dataset("mnist", "test", data_dir=data_dir)[:n]
    model = _run(cfg, load_dataset("mnist", "train", data_dir=data_dir, n_train=1000)).model
    g = torch.Generator().manual_seed(0)
    ours = lambda: hmc_kde_log_likelihood(model, x, generator=g)  # noqa: E731
    few = x[:max(1, n // 100)]

    def one_at_a_time():
        for i in range(len(few)):
            hmc_kde_log_likelihood(model, few[i:i + 1], generator=g)
    return {"ours": ours, "baseline": one_at_a_time, "limit": matmul_limit(ours), "unit": "datapoints",
            "per_call": n, "baseline_per_call": len(few)}


def workload_evaluation(data_dir=None):
    cfg = TrainConfig(lr=0.02, samples=10**9, data_dir=data_dir, device="cpu")
    X = load_dataset("mnist", "test", data_dir=data_dir)
    model = Run(cfg, 0.02, X[:100]).model
    ours = lambda: lower_bound(model, X, "B", seed=1000)  # noqa: E731
    return {"ours": ours, "baseline": examples_evaluation(X, cfg), "limit": matmul_limit(ours),
            "unit": "datapoints", "per_call": len(X)}


def profile_ours(fn, calls: int = 100, top: int = 12) -> list[dict]:
    """Where one call of ``fn`` spends its time: torch.profiler's self CPU time per operator
    (milliseconds per call, share of the total), the largest first."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(5):
        fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn()
    events = [(e.key, e.self_cpu_time_total / 1e3 / calls) for e in prof.key_averages()]
    total = sum(ms for _, ms in events)
    events.sort(key=lambda e: -e[1])
    rows = [{"operator": k[:60], "ms_per_call": round(ms, 4), "share": round(ms / total, 3)} for k, ms in events[:top]]
    return rows + [{"operator": "(all)", "ms_per_call": round(total, 4), "share": 1.0}]


def profile_kernels(build, top: int = 16) -> list[dict]:
    """``profile_ours`` of a step built (and so compiled) afresh with inductor's kernel profiling
    on: the compiled step then shows as its kernels and library calls instead of one opaque call."""
    torch._dynamo.reset()
    try:
        with torch._inductor.config.patch({"cpp.enable_kernel_profile": True}):
            return profile_ours(build(), top=top)
    finally:
        torch._dynamo.reset()  # later workloads compile without the profiling hooks


def _sync() -> None:
    """Wait for the GPU's queued work (a GPU runs behind the Python that launches it)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _rate(fn, per_call: int, min_time: float) -> float:
    _sync()
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        if time.perf_counter() - t0 >= min_time:
            _sync()
            return calls * per_call / (time.perf_counter() - t0)


def measure(workload: dict, repeats: int, min_time: float) -> dict:
    """Median rate of each implementation over ``repeats`` interleaved rounds, after one warm-up round."""
    impls = {k: workload[k] for k in ("ours", "ours (eager)", "ours (autograd)", "baseline", "limit")
             if workload.get(k) is not None}
    per = {k: workload.get("baseline_per_call", workload["per_call"]) if k == "baseline" else workload["per_call"]
           for k in impls}
    for k, fn in impls.items():
        _rate(fn, per[k], min_time / 4)
    rates = {k: [] for k in impls}
    for _ in range(repeats):
        for k, fn in impls.items():
            rates[k].append(_rate(fn, per[k], min_time))
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {"unit": f"{workload['unit']}/s", "median": med, "rates": rates,
            "ours_vs_baseline": med["ours"] / med["baseline"], "ours_vs_limit": med["ours"] / med["limit"],
            "matmuls_per_call": workload["limit"].n_matmuls}


# --- the sweep: two 1-thread processes against two runs one after another -------------

def _sweep_configs(root: Path, threads: int, samples: int, data_dir) -> list[TrainConfig]:
    return [TrainConfig(n_z=20, lr=0.02, samples=samples, eval_n=1000, threads=threads, seed=seed, name=f"bench{seed}", device="cpu",
                        results_dir=str(root / "results"), checkpoint_dir=str(root / "ckpt"), data_dir=data_dir)
            for seed in (0, 1)]


def measure_sweep(samples: int, repeats: int, data_dir=None) -> dict:
    from .sweep import sweep_runs
    from .train import train

    walls = {"ours": [], "baseline": []}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            for cfg in _sweep_configs(Path(tmp) / "seq", 2, samples, data_dir):
                train(cfg, progress=False, log=lambda *a: None)
            walls["baseline"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            sweep_runs(_sweep_configs(Path(tmp) / "par", 1, samples, data_dir), progress=False, workers=2)
            walls["ours"].append(time.perf_counter() - t0)
    med = {k: 2 * samples / statistics.median(v) for k, v in walls.items()}
    return {"unit": "samples/s", "median": med, "wall_s": walls, "samples_per_run": samples,
            "ours_vs_baseline": med["ours"] / med["baseline"]}


WORKLOADS = {
    "aevb_mnist": ("AEVB step, MNIST 784-500-20, M=100", (1, 2), lambda d: workload_training("aevb", "mnist", True, d)),
    "aevb_frey_face": ("AEVB step, Frey Face 560-200-20, M=100", (1, 2),
                       lambda d: workload_training("aevb", "frey_face", True, d)),
    "wake_sleep": ("wake-sleep step, MNIST 784-500-20, M=100", (1,),
                   lambda d: workload_training("wake_sleep", "mnist", True, d)),
    "mcem": ("MCEM iteration, 50,000 chains, Figure-3 model 784-100-3", (1,), workload_mcem),
    "appendix_d": ("Appendix-D estimate, 1000 test points, Figure-3 model", (1,),
                   lambda d: workload_appendix_d(data_dir=d)),
    "evaluation": ("test-set bound (SGVB B), 10,000 points, 784-500-20", (1,), workload_evaluation),
    "sweep": ("two AEVB runs (MNIST Nz=20): 2 one-thread processes vs one after another at 2 threads", (2,), None),
}

# On a GPU (``--device cuda``, results/benchmarks_cuda.json): ours is the step as one captured graph,
# the baseline the examples-style loop on the GPU, the limit the step's products as one graph
CUDA_WORKLOADS = {
    "aevb_mnist_cuda": ("AEVB step on the GPU, MNIST 784-500-20, M=100", (1,),
                        lambda d: workload_training("aevb", "mnist", True, d, device="cuda")),
    "aevb_frey_face_cuda": ("AEVB step on the GPU, Frey Face 560-200-20, M=100", (1,),
                            lambda d: workload_training("aevb", "frey_face", True, d, device="cuda")),
    "aevb_mnist_cuda_batched8": ("8 AEVB runs batched on the GPU, MNIST 784-500-20, M=100 each", (1,),
                                 lambda d: workload_batched(8, d, device="cuda")),
    "wake_sleep_cuda": ("wake-sleep step on the GPU, MNIST 784-500-20, M=100", (1,),
                        lambda d: workload_training("wake_sleep", "mnist", False, d, device="cuda")),
    "wake_sleep_cuda_together4": ("4 wake-sleep runs together on the GPU, a stream each (baseline: one stream), "
                                  "MNIST 784-500-Nz, Nz = 5, 10, 20, 200, M=100 each", (1,),
                                  lambda d: workload_together("wake_sleep", (5, 10, 20, 200), d, device="cuda")),
}


def run_benchmark(*, repeats: int = 5, min_time: float = 2.0, only=None, sweep_samples: int = 300_000,
                  data_dir=None, out: Path | None = None, progress: bool = True, resume: bool = False,
                  device: str = "cpu") -> dict:
    """Measure the workloads of ``device`` ('cpu': ``WORKLOADS``, 'cuda': ``CUDA_WORKLOADS``;
    ``only``: a subset) and write the record after each one; with ``resume`` the workloads already
    in ``out`` (same settings) are kept and not measured again."""
    checks.at_least("repeats", repeats)
    checks.positive("min_time", min_time)
    checks.check("device", device, str, lambda v: v in ("cpu", "cuda"), "'cpu' or 'cuda'")
    check_device(device)  # 'cuda' without a GPU: one line, before any work
    workloads = WORKLOADS if device == "cpu" else CUDA_WORKLOADS
    names = list(workloads) if only is None else list(only)
    unknown = [n for n in names if n not in workloads]
    if unknown:
        raise ValueError(f"unknown workload {unknown[0]!r} on {device}; valid: {', '.join(workloads)}")
    out = out or RESULTS_DIR / ("benchmarks.json" if device == "cpu" else "benchmarks_cuda.json")
    settings = {"repeats": repeats, "min_time_s": min_time, "sweep_samples": sweep_samples,
                "compiler_available": compiler_available()}
    results = {}
    def diff(r):  # a damaged record is refused as such, before its settings are compared
        if not (isinstance(r["results"], dict) and all(isinstance(v, dict) and isinstance(v.get("median"), dict)
                                                       for v in r["results"].values())):
            raise ResultsFileError(f"benchmark record {out} is damaged (each result needs a 'median' object); it was "
                                   f"not used or changed: pass --out another file")
        return differences(r, {"settings": settings})

    previous = existing_record(out, "a benchmark record", diff, "pass --out another file to measure with these settings",
                               required=("settings", "results"))
    if previous is not None and not resume:
        raise RecordExistsError(f"{out} already holds a benchmark; it is kept and nothing was measured: pass --resume "
                                f"to add the missing workloads to it, or --out another file")
    if previous is not None:
        results = previous["results"]
    else:
        check_output_file(out, "benchmark record")
    threads_before = torch.get_num_threads()
    jobs = [(n, t) for n in names for t in workloads[n][1] if f"{n}@{t}" not in results]
    session = {**provenance(), **device_provenance(device)}
    with flush_denormals():  # as train() runs
        try:
            for name, threads in tqdm(jobs, desc="benchmark", disable=not progress):
                torch.set_num_threads(threads)
                if name == "sweep":
                    r = measure_sweep(sweep_samples, max(1, math.ceil(repeats / 2)), data_dir)
                else:
                    workload = workloads[name][2](data_dir)
                    slow = name in ("mcem", "appendix_d")  # one call takes 10-40 s: fewer rounds
                    r = measure(workload, max(1, repeats // 2) if slow else repeats, min_time)
                    if name == "aevb_mnist":  # what keeps it from the limit, each compiled kernel named
                        r["profile"] = profile_kernels(lambda: WORKLOADS[name][2](data_dir)["ours"])
                results[f"{name}@{threads}"] = {"workload": name, "description": workloads[name][0], "threads": threads,
                                                **r, "provenance": session}
                write_record(out, {"settings": settings, "results": results, "provenance": session}, "a benchmark record",
                             lambda old: set(old["results"]) <= set(results))
            if "sweep@2" in results and "aevb_mnist@1" in results:  # the same runs' limit: two 1-thread matmul limits
                r = results["sweep@2"]
                r["median"]["limit"] = 2 * results["aevb_mnist@1"]["median"]["limit"]
                r["ours_vs_limit"] = r["median"]["ours"] / r["median"]["limit"]
            if "sweep@2" in results and "aevb_mnist@2" in results:
                # the most two 1-thread processes can gain over one 2-thread process, from the same step's
                # rates in this run (the sweep's short runs train eagerly): 2 r1 / r2, before any contention
                r1, r2 = results["aevb_mnist@1"]["median"], results["aevb_mnist@2"]["median"]
                results["sweep@2"]["two_process_bound"] = 2 * r1.get("ours (eager)", r1["ours"]) / r2.get("ours (eager)", r2["ours"])
        finally:
            torch.set_num_threads(threads_before)
    record = {"settings": settings, "results": results, "provenance": session}
    write_record(out, record, "a benchmark record", lambda old: set(old["results"]) <= set(results))
    return record


def table(record: dict) -> str:
    """The README's table: every workload with its ratios to the baseline and the limit."""
    lines = ["| workload | threads | ours | baseline | limit | ours / baseline | ours / limit |",
             "|---|---|---|---|---|---|---|"]
    for r in record["results"].values():
        m = r["median"]
        limit = f"{m['limit']:,.0f}" if "limit" in m else "—"
        vs_limit = f"{r['ours_vs_limit']:.2f}" if "ours_vs_limit" in r else "—"
        lines.append(f"| {r['description']} | {r['threads']} | {m['ours']:,.0f} | {m['baseline']:,.0f} | {limit} | "
                     f"{r['ours_vs_baseline']:.2f} | {vs_limit} |")
    bound = record["results"].get("sweep@2", {}).get("two_process_bound")
    note = (f" The sweep can gain at most 2 r1 / r2 = {bound:.2f}x here (r1, r2: one run's step at 1 and "
            "2 threads, same run)." if bound else "")
    return "\n".join(lines) + f"\n\nRates in {', '.join(sorted({r['unit'] for r in record['results'].values()}))}.{note}"
