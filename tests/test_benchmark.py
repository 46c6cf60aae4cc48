"""The benchmark: its matrix-product limit replays exactly the step's products; its command writes every ratio."""

import torch

from vae_utils.config import TrainConfig
from vae_utils.data import load_dataset
from vae_utils.train import Run


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
    cmd = [sys.executable, "-m", "vae_utils", "benchmark", "--only", "evaluation", "--repeats", "3", "--min-time",
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


def test_the_together_workload_steps_each_run_once_a_call_and_its_limit_is_their_products(data_dir):
    from vae_utils.benchmark import matmul_limit, measure, workload_together

    w = workload_together("wake_sleep", (2, 3), data_dir=str(data_dir), device="cpu")  # no streams on a CPU
    one = Run(TrainConfig(algorithm="wake_sleep", n_z=2, n_hidden=500, lr=0.02, compile=False, data_dir=str(data_dir),
                          samples=10**9), 0.02, load_dataset("mnist", "train", data_dir=data_dir, n_train=1000))
    assert w["limit"].n_matmuls == 2 * matmul_limit(one.step).n_matmuls and w["per_call"] == 200
    r = measure(w, repeats=1, min_time=0.05)
    assert 0 < r["ours_vs_limit"] <= 1.05 and r["ours_vs_baseline"] > 0
