"""SGVB estimators against closed forms (Appendix B, eqs. 6-7) and the paper's claims."""

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from vae_utils.estimators import gaussian_kl, lower_bound, reparameterize, sgvb_a, sgvb_b
from vae_utils.exact import LinearGaussian


def test_analytic_kl_matches_monte_carlo_and_torch():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(8, 4, generator=g, dtype=torch.float64), torch.randn(8, 4, generator=g, dtype=torch.float64)
    kl = gaussian_kl(mu, logvar)
    q = Normal(mu, torch.exp(0.5 * logvar))
    torch_kl = kl_divergence(q, Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(-1)
    torch.testing.assert_close(kl, torch_kl)
    z = reparameterize(mu, logvar, 200_000, g)
    mc = q.log_prob(z).sum(-1) - Normal(0.0, 1.0).log_prob(z).sum(-1)  # (S, B)
    se = mc.std(0) / math.sqrt(mc.shape[0])
    assert torch.all((mc.mean(0) - kl).abs() < 4 * se + 1e-3), (mc.mean(0), kl, se)


def _per_sample(est, model, x, k, seed):
    """k independent single-sample (L = 1) estimates per datapoint, shape (k, B)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return est(model, x.repeat(k, 1), 1, g).reshape(k, len(x))


def _encoder_gradient_variance(est, model, x, repeats=200, seed=0):
    """Total variance over repeats of the minibatch gradient w.r.t. the encoder parameters."""
    g = torch.Generator().manual_seed(seed)
    grads = []
    for _ in range(repeats):
        model.zero_grad()
        est(model, x, 1, g).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.encoder_parameters()]))
    model.zero_grad()
    return torch.stack(grads).var(0).sum().item()


def test_estimators_a_and_b_agree_in_expectation(trained_vae, mnist_small):
    x = mnist_small[1][:20]
    a = _per_sample(sgvb_a, trained_vae, x, 4000, 1)
    b = _per_sample(sgvb_b, trained_vae, x, 4000, 2)
    se = torch.sqrt(a.var(0) / len(a) + b.var(0) / len(b))
    z_scores = (a.mean(0) - b.mean(0)) / se
    assert z_scores.abs().max() < 4.5, z_scores
    ratio = b.var(0) / a.var(0)  # reported in the README: the value's variance is not lower for B
    print(f"value variance B/A per datapoint: {int((ratio > 1).sum())} of {len(ratio)} above 1, "
          f"range {ratio.min():.2f}-{ratio.max():.2f}")


def test_estimator_b_has_lower_gradient_variance_than_a(trained_vae, mnist_small):
    """The paper's claim (Section 2.3): integrating the KL analytically lowers the variance.

    It holds for the gradient w.r.t. the variational parameters phi, the quantity SGVB uses
    (the decoder gradients of A and B are identical for the same eps). It does not hold for
    the *value* of a trained model's bound, where A's log p(z) - log q(z|x) partly cancels
    the noise of log p(x|z); see the README.
    """
    from vae_utils.models import VAE

    x = mnist_small[1][:100]
    torch.manual_seed(0)
    for model in (VAE(784, 100, 5), trained_vae):  # at initialisation and after training
        var_a = _encoder_gradient_variance(sgvb_a, model, x)
        var_b = _encoder_gradient_variance(sgvb_b, model, x)
        print(f"encoder-gradient variance: A {var_a:.4g}, B {var_b:.4g} (ratio {var_b / var_a:.3f})")
        assert var_b < var_a


def test_bound_is_tight_at_the_true_posterior_and_below_otherwise():
    model = LinearGaussian.random(x_dim=10, z_dim=3, seed=0)
    x = model.sample_x(50)
    exact = model.log_marginal(x)
    g = torch.Generator().manual_seed(0)
    # q = p(z|x): every single-sample estimate A equals log p(x) exactly (zero variance)
    torch.testing.assert_close(sgvb_a(model, x, 1, g), exact, rtol=0, atol=1e-9)
    b = sgvb_b(model, x, 200_000, g)
    assert (b - exact).abs().max() < 0.05

    class Perturbed(LinearGaussian):
        def encode(self, x):
            mu, logvar = super().encode(x)
            return mu + 0.3, logvar + 0.5

    off = Perturbed(model.W, model.b, model.sigma)
    bound = sgvb_b(off, x, 200_000, g)
    # the gap is KL(q || p(z|x)), computable in closed form here
    mu_q, logvar_q = off.encode(x)
    mu_p, cov = model.posterior(x)
    gap = kl_divergence(Normal(mu_q, torch.exp(0.5 * logvar_q)), Normal(mu_p, torch.sqrt(torch.diagonal(cov)))).sum(-1)
    assert torch.all(bound < exact)
    assert (exact - bound - gap).abs().max() < 0.05, (exact - bound - gap)


def test_gradients_through_the_reparameterisation_match_the_closed_form():
    """d/d(mu, logvar) of the sampled bound -> gradient of the exact bound of a linear-Gaussian."""
    model = LinearGaussian.random(x_dim=6, z_dim=2, seed=3, orthogonal=False)
    x = model.sample_x(1)
    mu = torch.tensor([[0.2, -0.4]], dtype=torch.float64, requires_grad=True)
    logvar = torch.tensor([[-0.5, 0.3]], dtype=torch.float64, requires_grad=True)

    class Q(LinearGaussian):
        def encode(self, x_):
            return mu, logvar

    q_model = Q(model.W, model.b, model.sigma)

    def exact_bound(mu, logvar):  # E_q log p(x|z) - KL, for p(x|z) = N(Wz + b, s^2 I)
        s2 = model.sigma ** 2
        resid = x - mu @ model.W.T - model.b
        trace = (model.W ** 2 * logvar.exp()).sum()
        e_loglik = -0.5 * model.x_dim * math.log(2 * math.pi * s2) - ((resid ** 2).sum() + trace) / (2 * s2)
        return e_loglik - gaussian_kl(mu, logvar).sum()

    g_exact = torch.autograd.grad(exact_bound(mu, logvar), (mu, logvar))
    for est in (sgvb_a, sgvb_b):
        g_mc = torch.autograd.grad(est(q_model, x, 200_000, torch.Generator().manual_seed(0)).sum(), (mu, logvar))
        for ge, gm in zip(g_exact, g_mc):
            torch.testing.assert_close(gm, ge, rtol=0.02, atol=0.05)


def test_lower_bound_is_deterministic_and_matches_batched_estimates(trained_vae, mnist_small):
    X = mnist_small[1]
    v1 = lower_bound(trained_vae, X, batch_size=128)
    v2 = lower_bound(trained_vae, X, batch_size=128)
    assert v1 == v2
    full = sgvb_b(trained_vae, X, 1, torch.Generator().manual_seed(5)).mean().item()
    assert abs(v1 - full) < 2.0  # two L=1 estimates of the same average bound over 500 points


# --- the derivation notebook's functions (score function, reparameterisation, eq. 8) ------

from torch.distributions import MultivariateNormal  # noqa: E402

from vae_utils.estimators import (  # noqa: E402
    gradient_variance, kl_to_posterior, linear_gaussian_bound, linear_gaussian_bound_grad, minibatch_estimate,
    monte_carlo_kl, reparameterized_grad, score_function_grad)


def _perturbed_q(model, x):
    mu, logvar = model.encode(x)
    return mu + 0.5, logvar + 0.5


def test_closed_form_bound_gap_and_gradient_of_the_linear_gaussian():
    """log p(x) = KL(q || p(z|x)) + L (eq. 1), against the exact marginal and torch's KL, for a
    non-orthogonal W (full posterior covariance); the gradient against autograd."""
    model = LinearGaussian.random(x_dim=8, z_dim=3, seed=4, orthogonal=False)
    x = model.sample_x(5)
    mu, logvar = _perturbed_q(model, x)
    m, S = model.posterior(x)
    kl = kl_divergence(MultivariateNormal(mu, torch.diag_embed(logvar.exp())), MultivariateNormal(m, S))
    torch.testing.assert_close(kl_to_posterior(model, x, mu, logvar), kl, rtol=0, atol=1e-10)
    torch.testing.assert_close(linear_gaussian_bound(model, x, mu, logvar) + kl, model.log_marginal(x),
                               rtol=0, atol=1e-10)
    mu_, lv_ = mu.clone().requires_grad_(True), logvar.clone().requires_grad_(True)
    auto = torch.cat(torch.autograd.grad(linear_gaussian_bound(model, x, mu_, lv_).sum(), (mu_, lv_)), -1)
    torch.testing.assert_close(linear_gaussian_bound_grad(model, x, mu, logvar), auto, rtol=0, atol=1e-10)
    # and the closed-form bound is what the sampled estimator B averages to (eq. 7)
    class Q(LinearGaussian):
        def encode(self, x_):
            return mu, logvar
    b = sgvb_b(Q(model.W, model.b, model.sigma), x, 100_000, torch.Generator().manual_seed(0))
    assert (b - linear_gaussian_bound(model, x, mu, logvar)).abs().max() < 0.05


def test_score_function_and_reparameterised_gradients_are_unbiased():
    """All three estimators average to the closed-form gradient (z-scores from their own spread)."""
    model = LinearGaussian.random(x_dim=10, z_dim=3, seed=0)
    x = model.sample_x(2)
    mu, logvar = _perturbed_q(model, x)
    exact = linear_gaussian_bound_grad(model, x, mu, logvar)
    g = torch.Generator().manual_seed(1)
    for grads in (score_function_grad(model, x, mu, logvar, 1000, 200, g),
                  reparameterized_grad(model, x, mu, logvar, 100, "A", 200, g),
                  reparameterized_grad(model, x, mu, logvar, 100, "B", 200, g)):
        z = (grads.mean(0) - exact) / (grads.std(0) / math.sqrt(len(grads)))
        assert z.abs().max() < 4.5, z


def test_score_function_variance_is_far_larger_and_b_is_below_a():
    """Section 2.2: the naive estimator's variance is impractical; Section 2.3: B below A.
    Variances of an average of L i.i.d. terms fall as 1/L."""
    model = LinearGaussian.random(x_dim=20, z_dim=3, seed=0)
    x = model.sample_x(1)
    mu, logvar = _perturbed_q(model, x)
    var = {m: [r["total_variance"] for r in gradient_variance(m, model, x, mu, logvar, [1, 100], 400, seed=2)]
           for m in ("score function", "reparameterised A", "reparameterised B")}
    assert var["score function"][0] > 30 * var["reparameterised B"][0], var
    assert var["reparameterised B"][0] < var["reparameterised A"][0], var
    for v in var.values():
        assert 60 < v[0] / v[1] < 160, var  # 100 x fewer variance, within the spread of 400 repeats


def test_monte_carlo_kl_and_minibatch_estimator():
    g = torch.Generator().manual_seed(3)
    mu, logvar = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(6, 4, generator=g, dtype=torch.float64)
    mean, se = monte_carlo_kl(mu, logvar, 100_000, g)
    assert torch.all((mean - gaussian_kl(mu, logvar)).abs() < 4 * se), (mean, gaussian_kl(mu, logvar), se)
    # eq. 8: (N/M) * minibatch sum -> sum of the bound over all N datapoints (exact posterior: L = log p(x))
    model = LinearGaussian.random(x_dim=10, z_dim=3, seed=0)
    X = model.sample_x(500)
    draws = torch.stack([minibatch_estimate(model, X, 50, "A", 1, g) for _ in range(2000)])
    total = model.log_marginal(X).sum()
    assert (draws.mean() - total).abs() < 4 * draws.std() / math.sqrt(len(draws)), (draws.mean(), total)


def test_the_estimators_refuse_bad_input_in_one_line():
    model = LinearGaussian.random(x_dim=10, z_dim=3)
    x = model.sample_x(5)
    cases = [
        (lambda: sgvb_b(model, x, 0), ValueError, "n_samples=0 is not allowed: expected an integer >= 1"),
        (lambda: lower_bound(model, x[:, :7]), ValueError, "X has 7 columns; the model expects 10"),
        (lambda: lower_bound(model, x, batch_size=0), ValueError, "batch_size=0 is not allowed"),
    ]
    for call, kind, message in cases:
        with pytest.raises(kind) as e:
            call()
        assert message in str(e.value) and "\n" not in str(e.value), (message, str(e.value))
