"""The device knob: where a run computes is a runtime choice, recorded, never part of what it computes.

Tests parametrized over ``DEVICES`` run each computation on that device and compare it with the
same computation on the CPU: on a CPU machine (CI) the CUDA cases are skipped; ``tools/gpu_check.sh``
runs them on a GPU machine.
"""

import dataclasses
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import small_config
from vae_utils import device as D
from vae_utils.budgets import check_parameters
from vae_utils.config import TrainConfig
from vae_utils.exact import LinearGaussian
from vae_utils.train import load_checkpoint, train

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (tools/gpu_check.sh on a GPU machine)")
needs_no_cuda = pytest.mark.skipif(HAS_CUDA, reason="checks the refusal on a machine without a GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=[needs_cuda, pytest.mark.cuda])]
QUIET = dict(progress=False, log=lambda *a: None)


# --- the knob, on any machine ---------------------------------------------------------------------

def test_a_device_name_is_checked_where_it_is_given():
    with pytest.raises(ValueError, match=r"device='gpu' is not allowed: expected 'auto', 'cpu' or 'cuda'"):
        TrainConfig(device="gpu")
    assert D.resolve("cpu") == torch.device("cpu")
    assert D.resolve("auto").type == ("cuda" if HAS_CUDA else "cpu")
    cfg = TrainConfig(device="cuda")  # a record made on a GPU is read anywhere: availability is checked at work
    assert "device" not in cfg.identity() and TrainConfig(device="cpu").identity() == cfg.identity()


@needs_no_cuda
def test_cuda_without_a_gpu_is_refused_in_one_line_before_any_work(tmp_path, data_dir):
    cfg = small_config(tmp_path, device="cuda", data_dir=str(data_dir))
    with pytest.raises(ValueError, match=r"device='cuda' is not available here: torch .* finds no CUDA GPU"):
        train(cfg, **QUIET)
    assert not (tmp_path / "results").exists() and not (tmp_path / "ckpt").exists()
    for argv in (["train", "--device", "cuda", "--samples", "1e4", "--results-dir", str(tmp_path / "r")],
                 ["reproduce", "--device", "cuda", "--budget", "smoke", "--output-dir", str(tmp_path / "o")]):
        done = subprocess.run([sys.executable, "-m", "vae_utils", *argv], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert "device='cuda' is not available here" in done.stderr
    assert not (tmp_path / "r").exists() and not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="device='cuda' is not available here"):
        check_parameters({"__annotations__": {"budget": str, "device": str}, "budget": "smoke", "device": "cuda"})


def test_records_say_where_they_were_computed_and_checkpoints_load_anywhere(tmp_path, data_dir):
    cfg = small_config(tmp_path, device="cpu", data_dir=str(data_dir))
    record = train(cfg, **QUIET)
    assert record["provenance"]["device"] == "cpu" and record["devices"] == [{"device": "cpu", "from_samples": 0}]
    ckpt = load_checkpoint(tmp_path / "ckpt" / "t.pt")
    tensors = [v for v in ckpt["run"]["model"].values()] + ckpt["run"]["algorithm"]["opt"]["sums"]
    assert all(t.device.type == "cpu" for t in tensors) and ckpt["run"]["device"] == "cpu"
    # the same run asked with device='auto' is the same run: its finished record is reused
    again = train(dataclasses.replace(cfg, device="auto"), **QUIET)
    assert again["curve"] == record["curve"]


def test_a_run_resumed_on_another_device_goes_on_and_records_it(tmp_path, data_dir):
    cfg = small_config(tmp_path, data_dir=str(data_dir), device="cpu", samples=20_000)
    train(cfg, stop_after_steps=60, **QUIET)
    path = tmp_path / "ckpt" / "t.pt"
    ckpt = load_checkpoint(path)
    other = "cuda" if not HAS_CUDA else "cpu"  # pretend the checkpoint was made on the other kind of device
    here = "cpu" if not HAS_CUDA else "cuda"
    ckpt["run"]["device"], ckpt["run"]["devices"] = other, [{"device": other, "from_samples": 0}]
    torch.save(ckpt, path)
    logs = []
    record = train(dataclasses.replace(cfg, device=here), progress=False, log=logs.append)
    assert record["finished"] and record["samples_seen"] == 20_000
    assert record["devices"] == [{"device": other, "from_samples": 0}, {"device": here, "from_samples": 6000}]
    assert any(f"on {here} (the checkpoint was made on {other}" in line for line in logs)
    from vae_utils.verify import verify_run

    with pytest.raises(ValueError, match=rf"went on from {other} to {here} at 6,000 samples; .* --samples 6000 or fewer"):
        verify_run(tmp_path / "results" / "t.json", samples=10_000, log=lambda *a: None, out_dir=tmp_path / "v")


@pytest.mark.parametrize("device", DEVICES)
def test_a_cpu_run_goes_on_on_a_device_with_its_own_draws(tmp_path, data_dir, device):
    """draws='cpu': a run on any device draws its minibatches and noise from the CPU's generator,
    so a CPU checkpoint goes on with the very stream it had (on the CPU: the run bit for bit; on a
    GPU: within rounding's drift of it), and the record says from where it drew."""
    cfg = small_config(tmp_path, data_dir=str(data_dir), device="cpu", samples=20_000)
    whole = train(dataclasses.replace(cfg, name="whole"), **QUIET)
    train(cfg, stop_after_steps=60, **QUIET)
    assert load_checkpoint(tmp_path / "ckpt" / "t.pt")["run"]["rng_device"] == "cpu"
    logs = []
    record = train(dataclasses.replace(cfg, device=device, draws="cpu"), progress=False, log=logs.append)
    went_on = [] if device == "cpu" else [{"device": device, "from_samples": 6000, "draws": "cpu"}]
    assert record["devices"] == [{"device": "cpu", "from_samples": 0}, *went_on]
    assert record["config"]["draws"] == "cpu"
    pairs = [(p["train"], q["train"]) for p, q in zip(record["curve"], whole["curve"])]
    if device == "cpu":
        assert all(a == b for a, b in pairs)
    else:
        assert any("draws its minibatches and noise from the CPU's generator, its stream going on" in line
                   for line in logs)
        assert all(abs(a - b) < 1.0 for a, b in pairs)


@pytest.mark.parametrize("device", DEVICES)
def test_a_wake_sleep_run_goes_on_on_a_device_with_the_cpus_draws(tmp_path, data_dir, device):
    """draws='cpu' for MNIST's wake-sleep: the minibatch, both noises and the dream's pixels drawn by
    the CPU's generator as its run draws them (the pixels as [u < p], the CPU's Bernoulli draw bit
    for bit), so a CPU checkpoint goes on on a GPU with its own stream, within rounding's drift of
    the CPU run; on the CPU it is the run itself."""
    cfg = small_config(tmp_path, algorithm="wake_sleep", data_dir=str(data_dir), device="cpu", samples=20_000)
    whole = train(dataclasses.replace(cfg, name="whole"), **QUIET)
    train(cfg, stop_after_steps=60, **QUIET)
    record = train(dataclasses.replace(cfg, device=device, draws="cpu"), **QUIET)
    went_on = [] if device == "cpu" else [{"device": device, "from_samples": 6000, "draws": "cpu"}]
    assert record["devices"] == [{"device": "cpu", "from_samples": 0}, *went_on]
    assert record["config"]["gradient"] == "by_hand" and record["config"]["draws"] == "cpu"
    pairs = [(p["train"], q["train"]) for p, q in zip(record["curve"], whole["curve"])]
    assert len(pairs) == len(whole["curve"]) > 3
    if device == "cpu":
        assert all(a == b for a, b in pairs)
    else:
        assert all(abs(a - b) < 1.0 for a, b in pairs), pairs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_dream_drawn_from_uniforms_is_the_cpus_bernoulli_draw(dtype):
    """The wake-sleep step's dream, [u < p] with u drawn from the generator (``WakeSleep.draws``),
    is torch.bernoulli's own draw on the CPU, pixel for pixel, and leaves the generator where
    torch.bernoulli leaves it: the CPU's runs dreamt with torch.bernoulli before."""
    probs = torch.rand(100, 784, generator=torch.Generator().manual_seed(5), dtype=dtype)
    probs[0, :4] = torch.tensor([0.0, 1.0, 0.5, 1e-7], dtype=dtype)
    a, b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    by_uniforms = (torch.rand(probs.shape, generator=a, dtype=dtype) < probs).to(dtype)
    assert torch.equal(by_uniforms, torch.bernoulli(probs, generator=b))
    assert torch.equal(torch.rand(5, generator=a), torch.rand(5, generator=b))


@pytest.mark.parametrize("cfg, message", [
    (dict(algorithm="mcem", draws="cpu"), "draws='cpu' does not apply to algorithm='mcem'"),
    (dict(estimator="A", draws="cpu"), "draws='cpu' is written for the steps with their gradient by hand"),
    (dict(gradient="autograd", draws="cpu"), "draws='cpu' is written for the steps with their gradient by hand"),
    (dict(algorithm="wake_sleep", dataset="frey_face", draws="cpu"),
     "draws='cpu' is written for the steps with their gradient by hand (AEVB with estimator B; wake-sleep on MNIST"),
    (dict(algorithm="wake_sleep", gradient="autograd", draws="cpu"),
     "algorithm='wake_sleep', dataset='mnist', estimator='B', gradient='autograd' needs draws='device'"),
    (dict(binarize="dynamic", draws="cpu"), "draws='cpu' is not allowed with binarize='dynamic'"),
    (dict(draws="gpu"), "draws='gpu' is not allowed: expected 'device' or 'cpu'"),
])
def test_cpu_draws_are_refused_where_they_are_not_written(cfg, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig(**cfg)


@needs_no_cuda
def test_verify_says_it_cannot_rerun_a_gpu_record_here(tmp_path):
    from vae_utils.verify import verify_run

    record = json.loads(_a_record().read_text())
    record["provenance"].update(device="cuda", gpu="NVIDIA H200")
    path = tmp_path / "gpu_run.json"
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"was made on NVIDIA H200; verify re-runs a record on the kind of device"):
        verify_run(path, samples=1000, log=lambda *a: None, out_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_run.json"]


def _a_record():
    from vae_utils.records import RESULTS_DIR

    return RESULTS_DIR / "aevb_mnist_nz3_h100_grey_n1000_seed0.json"


# --- each computation on each device against the CPU's ---------------------------------------------

def _linear_gaussian(device):
    model = LinearGaussian.random(x_dim=10, z_dim=3, sigma=0.5, seed=0)
    x = model.sample_x(100)
    truth = model.log_marginal(x).numpy()
    return model.to(device), x.to(device), truth


@pytest.mark.parametrize("device", DEVICES)
def test_the_likelihood_estimators_on_a_device_match_the_exact_value(device):
    from vae_utils.marginal_likelihood import ais_log_likelihood, hmc_kde_log_likelihood, importance_log_likelihood

    model, x, truth = _linear_gaussian(device)
    g = D.seeded_generator(0, device)
    appendix_d, _, _ = hmc_kde_log_likelihood(model, x, generator=g)
    importance = importance_log_likelihood(model, x, n_samples=1000, generator=g)
    ais = ais_log_likelihood(model, x, num_steps=1000, num_chains=16).cpu().numpy()
    assert abs(appendix_d - truth).mean() < 1.0  # the CPU test's tolerances (test_marginal_likelihood, test_ais)
    assert abs(importance - truth).mean() < 0.1
    assert abs(ais - truth).mean() < 0.1


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("algorithm", ["aevb", "wake_sleep", "mcem"])
def test_each_algorithm_trains_on_a_device_as_on_the_cpu(tmp_path, data_dir, device, algorithm):
    """The same run on the device and on the CPU: other random numbers (each device its own
    generator), the same distribution, so the curves agree within the seed spread of such runs."""
    kw = dict(algorithm=algorithm, data_dir=str(data_dir), samples=30_000 if algorithm != "mcem" else 60_000,
              n_train=2000 if algorithm != "mcem" else 500, lr=0.02)
    ours = train(small_config(tmp_path / device, device=device, **kw), **QUIET)
    assert ours["provenance"]["device"] == device
    first, last = ours["curve"][0]["train"], ours["curve"][-1]["train"]
    assert last > first + 5  # it learned
    if device != "cpu":
        cpu = train(small_config(tmp_path / "cpu", device="cpu", **kw), **QUIET)
        assert abs(last - cpu["curve"][-1]["train"]) < 6.0


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("algorithm", ["aevb", "wake_sleep"])
def test_the_captured_step_is_the_eager_step_on_the_gpu(data_dir, monkeypatch, algorithm):
    from vae_utils import algorithms
    from vae_utils.data import load_dataset
    from vae_utils.train import Run

    cfg = TrainConfig(algorithm=algorithm, lr=0.02, n_train=5000, compile=False, device="cuda", data_dir=str(data_dir),
                      samples=10**6)
    X = load_dataset("mnist", "train", data_dir=data_dir, n_train=5000)
    graphed = Run(cfg, 0.02, X)
    monkeypatch.setattr(algorithms, "CAPTURE_CUDA_GRAPHS", False)
    eager = Run(cfg, 0.02, X)
    assert graphed.algorithm.captured is not None and eager.algorithm.captured is None
    a = [float(graphed.step()) for _ in range(400)]  # a captured step's objective is a tensor on the GPU
    b = [float(eager.step()) for _ in range(400)]
    assert a == b  # the same kernels, the same random numbers: bit for bit
    assert torch.equal(graphed.rng.get_state(), eager.rng.get_state())
    for p, q in zip(graphed.model.parameters(), eager.model.parameters()):
        assert torch.equal(p, q)


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_the_compiled_step_learns_as_the_eager_step_does(data_dir, monkeypatch, device):
    """The step a long run takes (``torch.compile``d; on a GPU also captured as one graph) against
    the plain eager step, from the same weights with the same draws, 1,000 steps (the warm-up's 100
    and 900 updates) of MNIST Nz = 20: only rounding may tell them apart. The first GPU runs were
    10 nats ahead of the CPU's at this point (1e5 samples) and no other test ran the compiled
    step on a GPU."""
    from vae_utils import algorithms
    from vae_utils.data import load_dataset
    from vae_utils.train import Run

    cfg = TrainConfig(lr=0.01, device=device, data_dir=str(data_dir), samples=10**8)
    X = load_dataset("mnist", "train", data_dir=data_dir, n_train=cfg.n_train)
    compiled = Run(dataclasses.replace(cfg, compile=True), 0.01, X)
    monkeypatch.setattr(algorithms, "CAPTURE_CUDA_GRAPHS", False)
    eager = Run(dataclasses.replace(cfg, compile=False), 0.01, X)
    assert eager.algorithm.ascent is algorithms.sgvb_b_ascent and compiled.algorithm.ascent is not algorithms.sgvb_b_ascent
    assert (compiled.algorithm.captured is not None) == (device == "cuda") and eager.algorithm.captured is None
    a = torch.tensor([float(compiled.step()) for _ in range(1000)], dtype=torch.float64)
    b = torch.tensor([float(eager.step()) for _ in range(1000)], dtype=torch.float64)
    assert torch.equal(compiled.rng.get_state(), eager.rng.get_state())  # the same draws
    assert b[-100:].mean() > b[100:200].mean() + 20  # it learned
    # the mean training objective of each 100 steps: equal up to rounding's drift (a few 1e-3 nats)
    assert (a.reshape(10, 100).mean(1) - b.reshape(10, 100).mean(1)).abs().max() < 0.05
    for p, q in zip(compiled.model.parameters(), eager.model.parameters()):
        assert (p - q).abs().max() <= 1e-3 * max(1.0, q.abs().max().item())


# --- the GPU's pace against the CPU's (tools/device_pace.py) ------------------------------------

def _tool(name: str):
    """A script of tools/ as a module."""
    import importlib.util

    from vae_utils.records import REPO_ROOT

    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("device", DEVICES)
def test_the_pace_study_feeds_a_run_the_cpu_runs_draws(data_dir, device):
    """On the CPU, the run fed the CPU generator's draws from outside is the eager run itself, bit
    for bit (past the warm-up's 100 steps, so that the weights moved); on a GPU the same draws with
    the GPU's arithmetic stay within rounding's drift of it."""
    pace = _tool("device_pace").pace
    ticks = (12000, 15000)
    cpu = pace("cpu", "eager", 1, 15000, data_dir, ticks)
    fed = pace(device, "cpu", 1, 15000, data_dir, ticks)
    assert [p["samples"] for p in fed] == [12000, 15000] and cpu[1]["train"] > cpu[0]["train"] + 5
    if device == "cpu":
        assert [p["train"] for p in fed] == [p["train"] for p in cpu]
    else:
        assert all(abs(p["train"] - q["train"]) < 0.5 for p, q in zip(fed, cpu))
    with pytest.raises(ValueError, match="way='fast' is not allowed"):
        pace("cpu", "fast", 1, 15000, data_dir, ticks)


@pytest.mark.parametrize("device", DEVICES)
def test_the_pace_study_checks_the_draws_themselves(device):
    """The draws a run makes (``AEVB.draw``: minibatch indices, then noise), checked for what would
    change a run's pace: the CPU generator's pass, and each kind of broken stream is named. On the
    CPU they are the generator's own sequence; on a GPU the captured graph draws what the eager step does."""
    tool = _tool("device_pace")
    idx, eps = tool.draws_of(device, 1, 2000)
    assert idx.shape == (2000, 100) and eps.shape == (2000, 2000)
    if device == "cpu":
        g = torch.Generator().manual_seed(1)
        for t in range(3):  # the run's order: the minibatch, then its noise
            assert torch.equal(idx[t], torch.randint(50000, (100,), generator=g))
            assert torch.equal(eps[t].float(), torch.randn(2000, generator=g))
    else:
        captured = tool.draws_of(device, 1, 2000, captured=True)
        assert torch.equal(idx, captured[0]) and torch.equal(eps, captured[1])
    stats = tool.draw_statistics(idx, eps, 50000)
    assert stats["suspect"] == [], stats

    def suspect(i=idx, e=eps):
        return tool.draw_statistics(i, e, 50000)["suspect"]
    again = eps.clone()
    again[1::50] = eps[0::50]  # every 50th step's noise is the step before's
    assert "noise_equal_to_earlier_z" in suspect(e=again)
    assert suspect(i=idx % 25000) == ["index_uniformity_z", "index_repeats_z"]  # half the data, more repeats
    same = idx.clone()
    same[1::10] = idx[0::10]  # every 10th minibatch is the one before
    assert "index_repeats_z" in suspect(i=same)
    assert suspect(e=0.97 * eps) == ["noise_variance_z"]
    tied = eps.clone()
    first = tied.view(2000, 100, 20)[:, :, 0]  # each datapoint's first latent dimension, as drawn (L = 1, M, Z)
    first.copy_(0.99 * first + 0.14 * (idx / 50000 - 0.5))  # noise that leans on its datapoint's index
    assert suspect(e=tied) == ["noise_index_z"]
    # within a step: neighbours that cancel; datapoints whose noise cancels over the minibatch; places
    # of other variances (the pooled one still 1); tails cut short
    neighbours = eps.clone()
    neighbours[:, 1::2] = -0.5 * neighbours[:, 0::2] + 0.866 * neighbours[:, 1::2]
    assert suspect(e=neighbours) == ["noise_within_lag1_z"]
    pairs = eps.clone().view(2000, 100, 20)
    pairs[:, 1::2] = -pairs[:, 0::2]
    assert "noise_minibatch_sum_z" in suspect(e=pairs.view(2000, 2000))
    places = eps.clone().view(2000, 100, 20)
    places[:, :, :10] *= 0.9
    places[:, :, 10:] *= (2 - 0.81) ** 0.5
    assert "noise_place_variance_z" in suspect(e=places.view(2000, 2000))
    assert "noise_kurtosis_z" in suspect(e=eps.clamp(-2.5, 2.5) / eps.clamp(-2.5, 2.5).std())
    kept = eps.clone().view(2000, 100, 20)  # each image's first dimension half its own fixed value, every time drawn
    kept[:, :, 0] = 0.6 * kept[:, :, 0] + 0.8 * torch.randn(50000, generator=torch.Generator().manual_seed(9))[idx]
    assert suspect(e=kept.view(2000, 2000)) == ["noise_same_image_z"]
    beyond = idx.clone()
    beyond[5, 7], beyond[9, 3] = 50000, -1
    assert tool.draw_statistics(beyond, eps, 50000)["index_out_of_range"] == 2


@pytest.mark.parametrize("device", DEVICES)
def test_recorded_draws_replay_in_a_cpu_run(tmp_path, data_dir, device):
    """``device_pace.py --record-draws`` keeps a run's draws on ``device`` (the indices of every step,
    the noise of the first steps) as the run draws them; ``--replay`` trains a CPU run on them: on its
    own recorded draws the CPU run itself bit for bit; on another seed's indices or noise another run,
    whose draws past the recorded noise are the CPU run's own."""
    tool = _tool("device_pace")
    drawn = tool.record_draws(device, [1, 2], 15000, noise_steps=40)
    assert drawn["samples"] == 15000 and drawn["noise_steps"] == 40
    idx, eps = tool.draws_of(device, 1, 150, captured=device != "cpu")
    one = drawn["seeds"][1]
    assert one["indices"].dtype == torch.uint16 and one["indices"].shape == (150, 100)
    assert torch.equal(one["indices"].long(), idx) and torch.equal(one["noise"], eps[:40].float())
    ticks = (12000, 15000)
    cpu = tool.pace("cpu", "eager", 1, 15000, data_dir, ticks)
    if device == "cpu":
        mine = tool.pace("cpu", "replay-both", 1, 15000, data_dir, ticks, drawn=one)
        assert [(p["samples"], p["train"]) for p in mine] == [(p["samples"], p["train"]) for p in cpu]
    for what in ("indices", "noise"):
        other = tool.pace("cpu", f"replay-{what}", 1, 15000, data_dir, ticks, drawn=drawn["seeds"][2])
        assert [p["samples"] for p in other] == [12000, 15000]
        assert all(p["train"] != q["train"] for p, q in zip(other, cpu)), what
    with pytest.raises(ValueError, match="replays recorded draws in a CPU run"):
        tool.pace("cpu", "replay-noise", 1, 15000, data_dir, ticks)
    with pytest.raises(ValueError, match="replay='all' is not allowed"):
        tool.pace("cpu", "replay-all", 1, 15000, data_dir, ticks, drawn=one)
    # the command line: a file to replay from, refused in one line where it cannot serve
    path = tmp_path / "draws.pt"
    torch.save(drawn | {"provenance": {}}, path)
    for args, said in ((["--seeds", "3"], "not of [3]"), (["--samples", "2e4"], "fewer than --samples 20,000"),
                       (["--device", "cuda"], "replays run on --device cpu")):
        out = tmp_path / f"pace_{args[0][2:]}.json"
        assert tool.main(["--ways", "replay-indices", "--replay", str(path), "--out", str(out), "--device", "cpu",
                          "--samples", "15000", "--seeds", "1", *args]) == 2
        assert not out.exists()


def test_philox_is_the_published_cipher():
    """tools/cuda_philox.py: Philox4x32-10 gives Random123's known-answer vectors (kat_vectors:
    counter and key zero, all ones, and the digits of pi)."""
    philox = _tool("cuda_philox").philox4x32_10
    for ctr, key, want in (((0, 0, 0, 0), 0, (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
                           ((0xFFFFFFFF,) * 4, 0xFFFFFFFFFFFFFFFF, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
                           ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), 0x299F31D0A4093822,
                            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))):
        assert tuple(int(v) for v in philox(*ctr, key)) == want


def test_the_gpus_draws_are_written_for_a_replay_and_may_be_crossed(tmp_path):
    """``cuda_philox.py --out``: a --replay file of every step's draws; ``--noise-seeds`` gives each
    run the noise of another seed's stream (its indices its own), refused in one line where the
    counts differ; an existing file is not overwritten."""
    emulate = _tool("cuda_philox")
    out = tmp_path / "crossed.pt"
    assert emulate.main(["--seeds", "1,2", "--noise-seeds", "2,1", "--samples", "1000", "--out", str(out)]) == 0
    drawn = torch.load(out)
    assert drawn["samples"] == 1000 and drawn["noise_steps"] == 10 and drawn["noise_seeds"] == {1: 2, 2: 1}
    for seed, other in ((1, 2), (2, 1)):
        assert torch.equal(drawn["seeds"][seed]["indices"].long(), emulate.run_draws(seed, 10)[0])
        assert torch.equal(drawn["seeds"][seed]["noise"], emulate.run_draws(other, 10)[1])
    assert emulate.main(["--seeds", "1,2", "--noise-seeds", "2", "--out", str(tmp_path / "x.pt")]) == 2
    assert emulate.main(["--seeds", "1", "--samples", "1000", "--out", str(out)]) == 2 and torch.load(out)["seeds"].keys() == {1, 2}


@pytest.mark.parametrize("device", DEVICES)
def test_the_gpus_draws_are_computed_on_the_cpu(device):
    """tools/cuda_philox.py: a run's draws on a CUDA generator (its minibatch indices and noise,
    ``AEVB.draw``), computed with numpy: on a GPU they are the generator's own, indices exactly,
    noise to float32's rounding of sin and log; anywhere they pass the draws' statistics."""
    tool, emulate = _tool("device_pace"), _tool("cuda_philox")
    idx, eps = emulate.run_draws(1, 2000)
    assert idx.shape == (2000, 100) and eps.shape == (2000, 2000) and eps.dtype == torch.float32
    assert tool.draw_statistics(idx, eps.double(), 50000)["suspect"] == []
    assert not torch.equal(idx, emulate.run_draws(2, 2000)[0])
    if device == "cuda":
        gpu_idx, gpu_eps = tool.draws_of(device, 1, 2000, captured=True)
        assert torch.equal(gpu_idx, idx)
        assert (gpu_eps - eps.double()).abs().max() < 1e-3  # __sincosf, the fast intrinsic, on the GPU


@pytest.mark.parametrize("device", DEVICES)
def test_a_bound_is_scored_on_the_cpu_with_the_gpus_noise(trained_vae, data_dir, device):
    """tools/gpu_noise_rescore.py: ``lower_bound`` with the noise a CUDA generator of the same seed
    draws (every batch its own generator call), torch.randn restored after; on a GPU it is the
    GPU's own bound, to float32's rounding (another seed's noise moves it by about 0.1)."""
    from vae_utils.data import load_dataset
    from vae_utils.estimators import lower_bound

    tool = _tool("gpu_noise_rescore")
    X = load_dataset("mnist", "test", data_dir=data_dir)[:2500]  # three batches of the bound
    real = torch.randn
    here = tool.gpu_noise_bound(trained_vae, X, 1000)
    assert torch.randn is real  # put back
    cpu = lower_bound(trained_vae, X, "B", seed=1000)
    assert here != cpu and abs(here - cpu) < 2.0  # other noise, the same bound
    if device == "cuda":
        import copy

        assert abs(lower_bound(copy.deepcopy(trained_vae).to(device), X.to(device), "B", seed=1000) - here) < 0.01


@pytest.mark.parametrize("device", DEVICES)
def test_a_checkpoint_is_scored_again_as_its_curve_scored_it(tmp_path, data_dir, device):
    """``device_pace.py --rescore``: a model scored again at its last evaluation point by its curve's
    own bound; on the device that trained it, with the record's seed, the recorded value itself; on
    a GPU, whose generator draws other noise, its mean over ten noise seeds within the noise of the
    CPU's over the same ten (one draw each would not do: the young model's bound moves by sd 0.11
    with the noise, and the second lease's single GPU draw landed 0.55 from the CPU's, the draws
    being 0.28 below and 0.16 above their means: tools/gpu_noise_rescore.py). A checkpoint past its last evaluation point is refused."""
    tool = _tool("device_pace")
    # trained on the CPU, scored on `device`
    cfg = small_config(tmp_path, samples=20_000, eval_n=2000, data_dir=str(data_dir), device="cpu")
    train(cfg, progress=False, log=lambda *a: None)
    seeds = tuple(range(1000, 1010))
    r = tool.rescore(tmp_path / "ckpt" / "t.pt", device, data_dir, seeds=seeds)
    assert r["samples"] == 20_000 and r["trained_on"] == ["cpu"] and r["scored_on"] == device
    cpu = r if device == "cpu" else tool.rescore(tmp_path / "ckpt" / "t.pt", "cpu", data_dir, seeds=seeds)
    for split in ("train", "test"):
        recorded, here, there = r[split]["recorded"], r[split]["here"], cpu[split]["here"]
        assert recorded < -150 and here[0] != here[1]  # a young model; another seed, other noise
        assert there[0] == recorded  # on the CPU, with the record's seed: the recorded value
        # the two means differ by sd sqrt(2 / 10) of a draw's; 5 of those
        allowed = 5 * max(r[split]["here_sd"], cpu[split]["here_sd"]) * (2 / len(seeds)) ** 0.5
        assert abs(r[split]["here_mean"] - cpu[split]["here_mean"]) < allowed, (split, r[split], cpu[split])
    further = dataclasses.replace(cfg, samples=40_000, name="u")
    train(further, progress=False, log=lambda *a: None, stop_after_steps=37)
    with pytest.raises(ValueError, match=r"u.pt is at \d[\d,]* samples, past its last evaluation point"):
        tool.rescore(tmp_path / "ckpt" / "u.pt", device, data_dir)


def test_the_pace_is_judged_against_the_cpu_records():
    """The verdict that gates a lease's Figure-2 pieces: 0 when the compiled step keeps the CPU
    records' pace, 4 when the eager one does, 6 when only the CPU's draws do, 5 when none; the first GPU runs' numbers
    (-120.89 and -122.20 at 1e6, against the CPU's -124.57, -124.26, -123.81) are outside."""
    tool = _tool("device_pace")
    ref = tool.cpu_reference(10**6)
    assert [round(v, 2) for v in ref] == [-124.57, -124.26, -123.81]

    def study(**ways):
        return {"curves": {f"cuda/{w}/{i}": [{"samples": 10**6, "train": v}] for w, vs in ways.items()
                           for i, v in enumerate(vs)}}
    lines = []
    assert tool.judge(study(own=[-124.5, -123.9], eager=[-124.0, -124.3]), log=lines.append) == 0
    assert "own -124.20 over 2 seeds, the CPU's -124.21 over 3: +0.01 (within" in lines[0]
    assert tool.judge(study(own=[-120.89, -122.20], eager=[-124.0, -124.3]), log=lines.append) == 4
    assert tool.judge(study(own=[-120.89, -122.20], eager=[-121.0, -121.5], cpu=[-124.1]), log=lines.append) == 6
    assert "cpu -124.10 over 1 seeds" in lines[-1] and "(within" in lines[-1]
    assert tool.judge(study(own=[-120.89, -122.20], eager=[-121.0, -121.5], cpu=[-121.2]), log=lines.append) == 5
    with pytest.raises(ValueError, match="no CPU records at 1,234 samples"):
        tool.judge({"curves": {"cuda/own/1": [{"samples": 1234, "train": -200.0}]}})


@needs_no_cuda
def test_a_lease_runs_its_gated_pieces_only_as_the_pace_verdict_allows(tmp_path, data_dir):
    """tools/gpu_lease.sh rehearsed on the CPU (its GPU check fails at once, the pace study is
    skipped, the verdict given): 5 leaves a gated piece unbegun, 4 runs it without the compiler,
    6 with the CPU's draws; what comes back is one tarball in parts, the recorded draws in it."""
    import io
    import os
    import shutil
    import tarfile

    from vae_utils.records import REPO_ROOT

    shutil.copytree(REPO_ROOT / "tools", tmp_path / "tools")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "AEVB_DATA_DIR": str(data_dir),
           "BUDGET": "smoke", "DEVICE": "cpu", "CHECK_SECONDS": "30", "PACE_SECONDS": "0", "PACK_SECONDS": "0",
           "OUT": str(tmp_path / "OUT"), "PART_BYTES": "100000", "PACE_SAMPLES": "2000", "PACE_SEEDS": "1"}

    def lease(verdict, out):
        piece = f"gated:--datasets frey_face --algorithms aevb --latents 2 --target 2000 --output-dir {out}"
        done = subprocess.run(["bash", "tools/gpu_lease.sh", "300", piece], cwd=tmp_path, capture_output=True,
                              text=True, env={**env, "PACE_VERDICT": verdict}, timeout=600)
        return done.stdout
    said = lease("5", tmp_path / "five")
    assert "the gated pieces are not begun" in said and "piece 1 (" in said and "not begun: the pace verdict is 5" in said
    assert not list((tmp_path / "five").glob("results/*.json"))
    for verdict, flag, field in (("4", "--compile no", ("compile", False)), ("6", "--draws cpu", ("draws", "cpu"))):
        said = lease(verdict, tmp_path / verdict)
        assert f"the gated pieces are run with {flag}" in said and f"{flag}): exit 0" in said
        (record,) = (tmp_path / verdict).glob("results/aevb_*.json")
        r = json.loads(record.read_text())
        assert r["config"][field[0]] == field[1] and r["samples_seen"] == 2000
    # what comes back is the tarball alone, in parts of PART_BYTES (a call returns at most 8 files of 16 MiB),
    # and it holds the call's own files and the logs (of the last call, its piece run)
    back = sorted(p.name for p in (tmp_path / "OUT").iterdir())
    assert len(back) >= 2 and back == [f"smoke.tar.gz.{i}" for i in range(len(back))], back
    with tarfile.open(fileobj=io.BytesIO(b"".join((tmp_path / "OUT" / n).read_bytes() for n in back))) as tar:
        names = set(tar.getnames())
        draws = torch.load(io.BytesIO(tar.extractfile("draws.pt").read()))  # the pace runs' draws, recorded
    assert {"env.log", "gpu_check.log", "started", "new_checkpoints.txt", "logs/gpu_piece1.log"} <= names, names
    assert draws["device"] == "cpu" and draws["samples"] == 2000 and draws["seeds"][1]["indices"].shape == (20, 100)


@pytest.mark.cuda
@needs_cuda
def test_the_gpu_step_is_the_cpu_step_given_the_same_draws_in_float64(data_dir):
    """sgvb_b_ascent (forward, the gradient by hand, Adagrad) on the GPU and on the CPU, fed the same
    minibatches and noise, in float64: the same arithmetic agrees to rounding over 300 steps."""
    from vae_utils.algorithms import AEVB, sgvb_b_ascent
    from vae_utils.data import load_dataset
    from vae_utils.models import VAE

    X = load_dataset("mnist", "train", data_dir=data_dir, n_train=5000).double()
    torch.manual_seed(0)
    model = VAE(784, 500, 20).double()
    cpu = [p.detach().clone() for n in AEVB.LAYERS if hasattr(model, n) for p in (getattr(model, n).weight,
                                                                                   getattr(model, n).bias)]
    gpu = [p.cuda() for p in cpu]
    sums = {"cpu": [torch.zeros_like(p) for p in cpu], "cuda": [torch.zeros_like(p) for p in gpu]}
    decays = [100 / len(X) if p.dim() == 2 else 0.0 for p in cpu]
    g = torch.Generator().manual_seed(0)
    for step in range(300):
        x = X[torch.randint(len(X), (100,), generator=g)]
        eps = torch.randn((1, 100, 20), generator=g, dtype=torch.float64)
        lr = 0.0 if step < 100 else 0.01
        a = sgvb_b_ascent(x, eps, cpu, sums["cpu"], decays, lr, 1e-8, False)
        b = sgvb_b_ascent(x.cuda(), eps.cuda(), gpu, sums["cuda"], decays, lr, 1e-8, False)
        assert torch.allclose(a, b.cpu(), rtol=1e-9, atol=1e-9)
    for p, q in zip(cpu, gpu):
        assert (p - q.cpu()).abs().max() <= 1e-9 * max(1.0, p.abs().max().item())


@pytest.mark.parametrize("device", DEVICES)
def test_a_diverged_wake_step_is_reported_as_nan_eagerly_and_as_the_gpu_graph_does(data_dir, device):
    """Wake-sleep's step as the graph runs it (``on_device``: no sync mid-step) reports a diverged
    wake update as NaN, as the eager step does, so that the loop stops the run on the same step."""
    from vae_utils.data import load_dataset
    from vae_utils.train import Run

    cfg = TrainConfig(algorithm="wake_sleep", lr=0.02, n_train=500, compile=False, device=device,
                      data_dir=str(data_dir), samples=10**4)
    run = Run(cfg, 0.02, load_dataset("mnist", "train", data_dir=data_dir, n_train=500))
    alg = run.algorithm
    assert isinstance(alg._wake_sleep(0.02, 0.02), torch.Tensor)
    out = alg._wake_sleep(0.02, 0.02, on_device=True)
    assert isinstance(out, torch.Tensor) and torch.isfinite(out)
    with torch.no_grad():
        run.model.dec_out.bias.fill_(float("nan"))  # what a diverged wake update leaves
    eager = alg._wake_sleep(0.0, 0.0)
    assert isinstance(eager, float) and math.isnan(eager)  # returned before any dream was drawn
    graphed = alg._wake_sleep(0.0, 0.0, on_device=True)
    assert isinstance(graphed, torch.Tensor) and torch.isnan(graphed)


def test_a_leases_tarball_installs_only_what_goes_further_than_here(tmp_path):
    """tools/gpu_unpack.py: a record the lease took further is installed with its checkpoint; one
    here that went further meanwhile is kept; a different run under the same name, or a run being
    trained here, is refused in one line and left as it was."""
    import io
    import tarfile

    from vae_utils.records import REPO_ROOT
    from vae_utils.train import RunLock

    tool = _tool("gpu_unpack")
    full = json.loads((REPO_ROOT / "results/paper/aevb_mnist_nz20_h500_grey_n50000_seed1.json").read_text())

    def record(name, points, shift=0.0):
        r = json.loads(json.dumps(full))
        r["name"], r["curve"] = name, r["curve"][:points]
        r["samples_seen"] = r["curve"][-1]["samples"]
        for p in r["curve"]:
            p["train"] += shift
        return json.dumps(r).encode()

    here, lease = tmp_path / "repo", tmp_path / "lease1"
    (here / "results/paper").mkdir(parents=True)
    local = {"further": record("further", 10), "went_on_here": record("went_on_here", 12),
             "other_run": record("other_run", 10), "locked": record("locked", 10)}
    for name, data in local.items():
        (here / f"results/paper/{name}.json").write_bytes(data)
    files = {"results/paper/further.json": record("further", 14), "checkpoints/paper/further.pt": b"state 1",
             "results/paper/went_on_here.json": record("went_on_here", 11), "checkpoints/paper/went_on_here.pt": b"old",
             "results/paper/other_run.json": record("other_run", 14, shift=0.5),
             "results/paper/locked.json": record("locked", 14), "checkpoints/paper/locked.pt": b"state 2",
             "results/paper/new.json": record("new", 14), "logs/gpu_piece1.log": b"piece 1"}
    files["pace.json"] = b"{}"  # the call's own files, packed beside the logs
    lease.mkdir()
    with tarfile.open(lease / "paper.tar.gz", "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert tool.parts(lease / "paper.tar.gz") == [lease / "paper.tar.gz"]  # a tarball whole, as the first lease's
    whole = (lease / "paper.tar.gz").read_bytes()  # in parts, as gpu_lease.sh now returns it
    (lease / "paper.tar.gz").unlink()
    for i in range(3):
        (lease / f"paper.tar.gz.{i}").write_bytes(whole[i * len(whole) // 3:(i + 1) * len(whole) // 3])
    assert tool.parts(lease) == tool.parts(lease / "paper.tar.gz.0") == [lease / f"paper.tar.gz.{i}" for i in range(3)]
    with pytest.raises(FileNotFoundError, match="no such tarball"):
        tool.parts(lease / "paper.tar.gz")
    lines = []
    with RunLock(here / "checkpoints/paper/locked.pt"):
        refused = tool.unpack(lease, root=here, log=lines.append)
    assert refused == 2 and len(lines) == 4 and all("\n" not in line for line in lines)
    got = lambda p: (here / p).read_bytes() if (here / p).exists() else None  # noqa: E731
    assert got("results/paper/further.json") == files["results/paper/further.json"]
    assert got("checkpoints/paper/further.pt") == b"state 1"
    assert got("results/paper/went_on_here.json") == local["went_on_here"] and got("checkpoints/paper/went_on_here.pt") is None
    assert got("results/paper/other_run.json") == local["other_run"]
    assert any("other_run: the tarball's record and the one here are different runs" in line for line in lines)
    assert got("results/paper/locked.json") == local["locked"] and got("checkpoints/paper/locked.pt") is None
    assert any("locked: run locked is already being trained" in line for line in lines)
    assert got("results/paper/new.json") == files["results/paper/new.json"]
    assert got("logs/lease1/gpu_piece1.log") == b"piece 1" and got("logs/lease1/pace.json") == b"{}"
    # the same tarball again: the run no longer being trained is installed now, the other run still refused
    lines.clear()
    assert tool.unpack(lease / "paper.tar.gz.0", root=here, log=lines.append) == 1 and len(lines) == 2


def test_a_lease_is_prepared_here_and_refused_before_any_device_time_when_it_would_not_fit(tmp_path):
    """tools/gpu_prepare.py: data/ and .gitcopy (a shallow clone of HEAD, excluded from git) are
    made, the carry list names them and the checkpoints; a missing checkpoint, one outside the
    checkout or a carry over the limit is refused in one line, and nothing is made then."""
    import subprocess

    tool = _tool("gpu_prepare")
    root, data = tmp_path / "repo", tmp_path / "data"
    (root / "checkpoints/paper").mkdir(parents=True)
    data.mkdir()
    (data / "mnist.idx").write_bytes(b"x" * 1000)
    (root / "README.md").write_text("tree\n")
    (root / ".gitignore").write_text("checkpoints/\ndata/\n")
    (root / "checkpoints/paper/run.pt").write_bytes(b"w" * 5000)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run([*git, "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "c"], cwd=root, check=True)
    (root / "notes.txt").write_text("untracked, not ignored: it travels too\n")
    (tmp_path / "elsewhere.pt").write_bytes(b"w")

    for ckpts, limit, words in (([Path("checkpoints/paper/gone.pt")], tool.LIMIT, "no checkpoint checkpoints/paper/gone.pt"),
                                ([tmp_path / "elsewhere.pt"], tool.LIMIT, "is outside the checkout"),
                                ([Path("checkpoints/paper/run.pt")], 6000, "more than the 0 MiB it may: name fewer")):
        with pytest.raises((ValueError, FileNotFoundError), match=words) as e:
            tool.prepare(root, data, ckpts, limit=limit)
        assert "\n" not in str(e.value) and not (root / "data").exists() and not (root / ".gitcopy").exists()
    with pytest.raises(FileNotFoundError, match="pass --data-dir or set AEVB_DATA_DIR"):
        tool.prepare(root, None, [])

    carry, total = tool.prepare(root, data, [Path("checkpoints/paper/run.pt")])
    assert carry == ["data", ".gitcopy", "checkpoints/paper/run.pt"]
    assert (root / "data/mnist.idx").read_bytes() == b"x" * 1000
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout
    copied = subprocess.run(["git", "--git-dir", str(root / ".gitcopy"), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout
    assert copied == head and "/.gitcopy/" in (root / ".git/info/exclude").read_text().splitlines()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True).stdout
    assert ".gitcopy" not in status and "notes.txt" in status  # the copy is not part of the tree
    assert total >= 1000 + 5000 + len("tree\n") + len("untracked, not ignored: it travels too\n")
    # prepared again (a later commit): made afresh, the exclude line once
    tool.prepare(root, data, [])
    assert (root / ".git/info/exclude").read_text().splitlines().count("/.gitcopy/") == 1
