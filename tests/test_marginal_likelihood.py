"""The Appendix-D estimator and importance sampling against exact log p(x).

Ground truths: the closed-form marginal of a linear-Gaussian model, and quadrature over z
for an MLP decoder with a 2-D latent. The errors measured here are printed (pytest -s).
"""

import numpy as np
import pytest
import torch

from conftest import Perturbed, small_config
from vae_utils.exact import LinearGaussian, quadrature_log_likelihood
from vae_utils.marginal_likelihood import fit_kde, hmc_kde_log_likelihood, importance_log_likelihood


def test_kde_recovers_a_gaussian_density():
    rng = np.random.default_rng(0)
    pts = rng.standard_normal((25, 3))
    logpdf = fit_kde(pts)
    grid = rng.standard_normal((200, 3))
    true = -0.5 * (grid ** 2).sum(1) - 1.5 * np.log(2 * np.pi)
    assert np.corrcoef(logpdf(grid), true)[0, 1] > 0.8
    assert fit_kde(np.zeros((25, 3))) is None  # degenerate samples are reported, not a crash


def test_hmc_kde_matches_exact_linear_gaussian(linear_gaussian):
    model, x, exact = linear_gaussian
    ll, var, info = hmc_kde_log_likelihood(model, x.float(), generator=torch.Generator().manual_seed(0))
    err = np.abs(ll - exact)
    print(f"Appendix D (HMC + KDE, 50 samples) on linear-Gaussian: mean |error| {err.mean():.3f} nats, "
          f"bias {np.mean(ll - exact):+.3f}, acceptance {info['acceptance']:.2f}, degenerate {info['n_degenerate']}")
    assert err.mean() < 0.8 and abs(np.mean(ll - exact)) < 0.1  # noisy per point, unbiased on average
    assert np.all(var >= 0) and info["n_degenerate"] == 0 and 0.7 < info["acceptance"] < 0.99


@pytest.mark.parametrize("k, tol", [(10, 0.3), (100, 0.08), (1000, 0.04)])
def test_importance_sampling_matches_exact_linear_gaussian(linear_gaussian, k, tol):
    model, x, exact = linear_gaussian
    off = Perturbed(model.W, model.b, model.sigma)
    ll = importance_log_likelihood(off, x, n_samples=k, chunk=64, generator=torch.Generator().manual_seed(0))
    err = np.abs(ll - exact)
    print(f"importance sampling, K={k}, imperfect q, linear-Gaussian: mean |error| {err.mean():.4f} nats")
    assert err.mean() < tol
    # a stochastic lower bound: on average not above log p(x), beyond Monte Carlo noise
    assert np.mean(ll - exact) <= 3 * np.std(ll - exact) / np.sqrt(len(ll))
    exact_q = importance_log_likelihood(model, x, n_samples=3, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(exact_q, exact, atol=1e-6)  # q = posterior: every weight is p(x)


def test_hmc_kde_survives_degenerate_chains():
    """A target on which HMC never moves: the guard counts the chains and returns finite values."""
    model = LinearGaussian.random(x_dim=5, z_dim=2, sigma=1e-4, seed=1)  # an extremely sharp posterior
    x = model.sample_x(5)
    ll, var, info = hmc_kde_log_likelihood(model, x, n_burnin=2, init_step=10.0, n_init=1,
                                           generator=torch.Generator().manual_seed(0))
    assert info["n_degenerate"] == 5 and np.all(np.isfinite(ll))


@pytest.fixture(scope="module")
def mlp_2d(tmp_path_factory, data_dir):
    from vae_utils import data as D
    from vae_utils.train import load_trained, train

    tmp = tmp_path_factory.mktemp("z2")
    cfg = small_config(tmp, n_z=2, n_hidden=100, samples=100_000, lr=0.05, name="z2")
    train(cfg, progress=False, log=lambda *a: None)
    model, _ = load_trained(tmp / "ckpt" / "z2.pt")
    return model, D.load_dataset("mnist", "test")[:100]


def test_quadrature_is_converged(mlp_2d):
    model, x = mlp_2d
    a = quadrature_log_likelihood(model, x[:10])
    b = quadrature_log_likelihood(model, x[:10], n_grid=300, width=14, n_coarse=200)
    assert (a - b).abs().max() < 1e-3


def test_estimators_match_quadrature_for_a_2d_mlp_decoder(mlp_2d):
    model, x = mlp_2d
    exact = quadrature_log_likelihood(model, x).numpy()
    ll, _, info = hmc_kde_log_likelihood(model, x, generator=torch.Generator().manual_seed(0))
    err_hmc = np.abs(ll - exact)
    print(f"Appendix D on a trained 2-D MLP decoder (MNIST, 100 points): mean |error| {err_hmc.mean():.3f} nats, "
          f"bias {np.mean(ll - exact):+.3f}, acceptance {info['acceptance']:.2f}")
    assert err_hmc.mean() < 0.6 and abs(np.mean(ll - exact)) < 0.2
    for k, tol in ((100, 1.0), (5000, 0.3)):
        iw = importance_log_likelihood(model, x, n_samples=k, generator=torch.Generator().manual_seed(1))
        err = np.abs(iw - exact)
        print(f"importance sampling K={k} on the 2-D MLP decoder: mean |error| {err.mean():.3f} nats")
        assert err.mean() < tol and np.mean(iw) <= np.mean(exact) + 0.01


def test_quadrature_is_exact_for_a_3d_linear_gaussian():
    model = LinearGaussian.random(x_dim=10, z_dim=3, sigma=0.2, seed=4, orthogonal=False)
    x = model.sample_x(3)
    torch.testing.assert_close(quadrature_log_likelihood(model, x), model.log_marginal(x), atol=1e-5, rtol=0)


# --- the accuracy study (notebook 07) ------------------------------------------------------


def test_the_likelihood_estimators_refuse_bad_input_in_one_line():
    model = LinearGaussian.random(x_dim=10, z_dim=3)
    x = model.sample_x(5)
    cases = [
        (lambda: hmc_kde_log_likelihood(model, x, n_samples=2), ValueError, "n_samples=2 is not allowed: expected an integer >= 4"),
        (lambda: hmc_kde_log_likelihood(model, x, n_leapfrog=0), ValueError, "n_leapfrog=0 is not allowed"),
        (lambda: hmc_kde_log_likelihood(model, x, target_accept=1.2), ValueError, "target_accept=1.2 is not allowed"),
        (lambda: hmc_kde_log_likelihood(model, x, n_samples=50.5), TypeError, "n_samples=50.5 is not allowed"),
        (lambda: importance_log_likelihood(model, x, n_samples=0), ValueError, "n_samples=0 is not allowed"),
        (lambda: importance_log_likelihood(model, x[0], 10), ValueError, "x of shape (10,) is not allowed"),
    ]
    for call, kind, message in cases:
        with pytest.raises(kind) as e:
            call()
        assert message in str(e.value) and "\n" not in str(e.value), (message, str(e.value))
