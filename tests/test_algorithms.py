"""The fast training step (algorithms.py) against the step it replaced.

The replaced step: torch.optim.Adagrad, lr held at 0 for the warm-up, on the objective
sum_i L^B(x_i) + (M/N) log N(W; 0, I) with the prior summed over every weight at every step.
The new one applies the prior as weight decay and fuses the update; the arithmetic is the
same, so the bound trajectory of one seed must agree within floating-point noise.
"""

import ast
import warnings
from pathlib import Path

import pytest
import torch

from vae_utils import algorithms
from vae_utils.config import TrainConfig
from vae_utils.data import load_dataset
from vae_utils.estimators import sgvb_b
from vae_utils.models import build_model
from vae_utils.train import Run

STEPS = 400


def old_step_trajectory(cfg: TrainConfig, lr: float, X: torch.Tensor, steps: int):
    """The step as it was before the rewrite (commit 1549b21), written out here as the reference."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, X.shape[1])
    rng = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adagrad(model.parameters(), lr=lr, eps=cfg.adagrad_eps)
    M, N, bounds = cfg.batch_size, len(X), []
    for t in range(steps):
        x = X[torch.randint(N, (M,), generator=rng)]
        bound = sgvb_b(model, x, cfg.n_samples, rng)
        objective = bound.sum() + M / N * model.log_weight_prior()
        opt.zero_grad(set_to_none=True)
        (-objective).backward()
        for group in opt.param_groups:
            group["lr"] = 0.0 if t < cfg.adagrad_warmup else lr
        opt.step()
        bounds.append(bound.mean().item())
    return bounds, model


@pytest.fixture
def float64():
    """In float64 rounding is 1e-16 and stays far below what any change of arithmetic moves, even
    through the chaotic first steps (in float32 two thread counts of the old step itself part by
    tens of nats per minibatch around step 150 and by 1.3 nats in the test bound at step 1500)."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


@pytest.mark.parametrize("dataset,compile", [("mnist", False), ("frey_face", False), ("mnist", True)])
def test_the_new_step_follows_the_old_steps_trajectory(data_dir, float64, dataset, compile):
    lr = 0.02
    cfg = TrainConfig(dataset=dataset, lr=lr, n_train=5000 if dataset == "mnist" else None, compile=compile,
                      data_dir=str(data_dir), samples=10**6)
    X = load_dataset(dataset, "train", data_dir=data_dir, n_train=cfg.n_train).double()
    old, old_model = old_step_trajectory(cfg, lr, X, STEPS)
    run = Run(cfg, lr, X)
    new = [run.step() for _ in range(STEPS)]
    assert run.algorithm.opt.t == STEPS > cfg.adagrad_warmup + 100  # the update itself was exercised
    assert abs(new[-1] - new[0]) > 10  # it moved: not a comparison of two frozen models
    # measured: 1.1e-11 (the old step at 1 vs 2 threads: 1.7e-11); without the weight prior: 66 nats
    assert max(abs(a - b) for a, b in zip(old, new)) < 1e-8
    for p, q in zip(run.model.parameters(), old_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-10)


def test_without_a_compiler_the_update_runs_eagerly_with_one_warning(monkeypatch):
    monkeypatch.setattr(algorithms, "compiler_available", lambda: False)
    w = torch.nn.Parameter(torch.ones(3, 2))
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        opt = algorithms.Adagrad([w], lr=0.5, warmup=0, eps=1e-8, weight_decay=0.1, compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.ascend(-(w ** 2).sum() / 2)  # ascent on -|w|^2/2: gradient of the loss is w, plus decay 0.1 w
    g = 1.1
    torch.testing.assert_close(w.detach(), torch.full((3, 2), 1 - 0.5 * g / (g + 1e-8)))


def test_adagrad_matches_torch_optim_adagrad_and_reads_its_checkpoints():
    torch.manual_seed(0)
    a, b = torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))
    ref_a, ref_b = (torch.nn.Parameter(p.detach().clone()) for p in (a, b))
    ours = algorithms.Adagrad([a, b], lr=0.1, warmup=2, eps=1e-8, weight_decay=0.3)
    ref = torch.optim.Adagrad([{"params": [ref_a], "weight_decay": 0.3}, {"params": [ref_b]}], lr=0.1, eps=1e-8)
    targets = torch.randn(6, 4, 3)
    for t, target in enumerate(targets):
        ours.ascend(-((a - target) ** 2).sum() - (b ** 3).sum())
        ref.zero_grad()
        (((ref_a - target) ** 2).sum() + (ref_b ** 3).sum()).backward()
        for group in ref.param_groups:
            group["lr"] = 0.0 if t < 2 else 0.1
        ref.step()
    torch.testing.assert_close(a.detach(), ref_a.detach())
    torch.testing.assert_close(b.detach(), ref_b.detach())
    restored = algorithms.Adagrad([a, b], lr=0.1, warmup=2, eps=1e-8)
    restored.load_state_dict({"opt": ref.state_dict(), "t": 6})  # the format of checkpoints before the rewrite
    for s, p in zip(restored.sums, (ref_a, ref_b)):
        torch.testing.assert_close(s, ref.state[p]["sum"])


def package_imports(module: str) -> set[str]:
    """The vae_utils modules ``module`` imports, directly or through others (read from the source)."""
    root = Path(algorithms.__file__).parent
    seen, todo = set(), [module]
    while todo:
        tree = ast.parse((root / f"{todo.pop()}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module] if node.module else [a.name for a in node.names]
                for name in names:
                    if name not in seen:
                        seen.add(name)
                        todo.append(name)
    return seen


def test_the_algorithms_never_import_the_training_loop():
    below = package_imports("algorithms")
    assert {"config", "models", "estimators", "hmc"} <= below  # the reader sees the real imports
    assert not below & {"train", "sweep", "experiments", "reproduce"}, below
    assert "algorithms" in package_imports("train")


def test_the_benchmarks_matmul_limit_does_exactly_the_steps_matrix_products(data_dir):
    from vae_utils.benchmark import _MatmulRecorder, matmul_limit

    cfg = TrainConfig(lr=0.02, n_train=1000, data_dir=str(data_dir), samples=10**6)
    run = Run(cfg, 0.02, load_dataset("mnist", "train", data_dir=data_dir, n_train=1000))
    D, H, Z, M = 784, 500, 20, 100
    # closed form: forward x->h, h->mu, h->logvar, z->h, h->x; backward twice that, less the input's gradient
    forward = D * H + 2 * H * Z + Z * H + H * D
    expected = 2 * M * (forward + 2 * forward - D * H)
    recorder = _MatmulRecorder()
    with recorder:
        run.step()

    def flops(func, args):
        shapes = [a[0] for a in args if isinstance(a, tuple)][-2:]
        return 2 * shapes[0][-2] * shapes[0][-1] * shapes[1][-1]
    assert sum(flops(f, a) for f, a in recorder.calls) == expected
    limit = matmul_limit(run.step)
    assert limit.n_matmuls == len(recorder.calls)
    limit()  # replays on random tensors of the same shapes


def test_the_benchmark_command_writes_every_ratio_and_refuses_an_unknown_workload(tmp_path, data_dir):
    import json
    import subprocess
    import sys

    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "vae_utils", "benchmark", "--only", "evaluation", "--repeats", "1", "--min-time",
           "0.2", "--out", str(out), "--data-dir", str(data_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(out.read_text())
    r = record["results"]["evaluation@1"]
    assert set(r["median"]) == {"ours", "baseline", "limit"} and r["matmuls_per_call"] == 5 * 10  # 5 layers, 10 batches of 1000
    assert 0 < r["ours_vs_limit"] <= 1.05 and r["ours_vs_baseline"] > 0  # no implementation beats its own matmuls
    assert record["provenance"]["torch"] == torch.__version__ and "cpu_model" in record["provenance"]
    assert "| test-set bound" in done.stdout
    bad = subprocess.run(cmd[:5] + ["nosuch"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "unknown workload 'nosuch'" in bad.stderr
