"""Wake-sleep and Monte Carlo EM increase the objectives they optimise (Section 4, Appendix E)."""

import torch
from torch.distributions import Normal

from conftest import small_config
from vae_utils.algorithms import MCEM, WakeSleep
from vae_utils.models import VAE


def _wake_objective(model, x, eps):
    """E_{q(z|x)} log p(x, z) with fixed noise: what the wake phase ascends."""
    with torch.no_grad():
        mu, logvar = model.encode(x)
        return model.log_joint(x, mu + torch.exp(0.5 * logvar) * eps).mean().item()


def _sleep_objective(model, z, u):
    """E_{p(z) p(x|z)} log q(z|x) with fixed noise: what the sleep phase ascends."""
    with torch.no_grad():
        probs = model.decoder_distribution(z).probs
        x = (u < probs).float()
        mu, logvar = model.encode(x)
        return Normal(mu, torch.exp(0.5 * logvar)).log_prob(z).sum(-1).mean().item()


def test_wake_sleep_steps_increase_both_objectives(mnist_small, tmp_path):
    X = mnist_small[0][:500]
    cfg = small_config(tmp_path, algorithm="wake_sleep", n_z=5, n_hidden=50, n_train=500)
    torch.manual_seed(0)
    model = VAE(784, 50, 5)
    alg = WakeSleep(model, X, cfg, lr=0.02, rng=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    eps, z, u = torch.randn(500, 5, generator=g), torch.randn(500, 5, generator=g), torch.rand(500, 784, generator=g)
    wake0, sleep0 = _wake_objective(model, X, eps), _sleep_objective(model, z, u)
    for _ in range(300):
        alg.step()
    wake1, sleep1 = _wake_objective(model, X, eps), _sleep_objective(model, z, u)
    print(f"wake objective {wake0:.1f} -> {wake1:.1f}; sleep objective {sleep0:.2f} -> {sleep1:.2f}")
    assert wake1 > wake0 + 50 and sleep1 > sleep0 + 0.2
    # the wake phase never touches the encoder, the sleep phase never the decoder
    enc = [p.clone() for p in model.encoder_parameters()]
    alg.wake_opt.ascend(model.log_joint(X[:10], torch.randn(10, 5)).sum())
    assert all(torch.equal(a, b) for a, b in zip(enc, model.encoder_parameters()))


def test_mcem_iterations_increase_the_complete_data_likelihood(mnist_small, tmp_path):
    """The on-line variant (minibatch M-steps); batch MCEM, the default, is tested below."""
    X = mnist_small[0][:300]
    cfg = small_config(tmp_path, algorithm="mcem", n_z=3, n_hidden=50, n_train=300, mcem_m_step="minibatch")
    torch.manual_seed(0)
    model = VAE(784, 50, 3, encoder=False)
    alg = MCEM(model, X, cfg, lr=0.05, rng=torch.Generator().manual_seed(0))
    start = alg.evaluate(X, "train")
    accept = []
    for _ in range(150):
        n, _ = alg.step()
        accept.append(alg.last_accept)
    assert n == 300 + 5 * 100  # samples counted per iteration: N for the E-step, 5 M for the M-step
    end = alg.evaluate(X, "train")
    late = sum(accept[-50:]) / 50
    print(f"MCEM mean log p(x, z): {start:.1f} -> {end:.1f}; acceptance over the last 50 iterations {late:.2f}")
    assert end > start + 50
    assert 0.75 < late < 0.98  # the global step is tuned toward 90 % acceptance
    assert alg.evaluate(X, "test") is None


def test_a_diverging_step_size_trial_is_scored_as_diverged_not_a_crash(tmp_path, data_dir):
    """Wake-sleep at a huge step size produces NaN decoder probabilities; its trial of the paper's
    grid must be recorded as diverged (None) and the grid go on, not crash on sampling dreams."""
    from conftest import small_config
    from vae_utils.train import train

    cfg = small_config(tmp_path, algorithm="wake_sleep", n_z=20, lr="auto", lr_grid=(0.01, 1e4),
                       lr_trial_samples=5_000, samples=6_000)
    res = train(cfg, progress=False, log=lambda *a: None)
    assert res["lr"] == 0.01 and res["lr_trials"]["10000.0"] is None and res["lr_trials"]["0.01"] is not None


def test_batch_mcem_takes_its_m_steps_on_every_point_with_the_full_prior(mnist_small, tmp_path):
    """anglepy's step_batch_mcem: each of the 5 M-steps is one Adagrad step on sum_i log p(x_i, z_i)
    over all N points plus log p(theta) (the full prior), and an iteration counts every gradient
    evaluation, (L + 1) N + 5 N."""
    from vae_utils.algorithms import Adagrad

    X = mnist_small[0][:300]
    cfg = small_config(tmp_path, algorithm="mcem", n_z=3, n_hidden=50, n_train=300, mcem_warmup=0)
    assert cfg.mcem_m_step == "full_batch"  # the default
    torch.manual_seed(0)
    model = VAE(784, 50, 3, encoder=False)
    alg = MCEM(model, X, cfg, lr=0.05, rng=torch.Generator().manual_seed(0))
    assert alg.opt.decays == [1.0 if p.dim() == 2 else 0.0 for p in model.parameters()]
    # the M-step by hand, from the same state: five full-batch Adagrad steps at the chains' z after the E-step
    twin = VAE(784, 50, 3, encoder=False)
    twin.load_state_dict(model.state_dict())
    twin_opt = Adagrad(twin.parameters(), 0.05, 0, cfg.adagrad_eps, weight_decay=1.0)
    rng = torch.Generator().manual_seed(0)
    rng.set_state(alg.rng.get_state())
    from vae_utils.hmc import hmc_step

    z = hmc_step(lambda z: twin.log_joint(X, z), alg.z, alg.step_size.value, cfg.mcem_leapfrog, rng).z
    n, _ = alg.step()
    for _ in range(5):
        twin_opt.ascend(twin.log_joint(X, z).sum())
    assert n == (10 + 1) * 300 + 5 * 300
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    start = alg.evaluate(X, "train")
    for _ in range(100):
        alg.step()
    assert alg.evaluate(X, "train") > start + 50


def test_the_mcem_step_size_trial_is_fixed_by_the_run_not_by_how_far_a_session_trains(tmp_path, data_dir):
    """MCEM's grid trial spans Adagrad's warm-up iterations and one more (2 + 1 here: 10 warm-up M-steps of
    5 per iteration), at least ``lr_trial_samples``. A Figure-3 run is trained to each log p(x) point in
    turn, so its first session's ``samples`` is the first point: that must not change the trial (it did
    when the trial stopped at ``samples``, and the paper budget's MCEM run chose another step than the
    standard's). Two runs of one config, trained first to 1 iteration and to 5, score the same trial."""
    from conftest import small_config
    from vae_utils.train import mcem_samples_per_iteration, mcem_trial_length, train

    kw = dict(algorithm="mcem", n_z=3, n_hidden=20, n_train=100, lr="auto", lr_trial_samples=1_000, eval_n=100)
    per_iteration = mcem_samples_per_iteration(small_config(tmp_path, **kw), 100)
    assert per_iteration == (10 + 1) * 100 + 5 * 100  # (L + 1) N + 5 N
    assert mcem_trial_length(small_config(tmp_path, **kw), 100) == 3 * per_iteration
    assert mcem_trial_length(small_config(tmp_path, **{**kw, "lr_trial_samples": 10 ** 5}), 100) == 10 ** 5
    trials, logs = [], []
    for i, samples in enumerate((per_iteration, 5 * per_iteration)):
        cfg = small_config(tmp_path / str(i), **kw, samples=samples)
        trials.append(train(cfg, progress=False, log=logs.append)["lr_trials"])
    assert trials[0] == trials[1] and len(set(trials[0].values())) == 3  # past the warm-up the steps score apart
    assert sum(f"after {3 * per_iteration} samples" in line for line in logs) == 6
