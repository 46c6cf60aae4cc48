"""SGVB estimators of the variational lower bound (Section 2.3, eqs. 6-10, Appendix B).

For one datapoint,  log p(x) >= L(theta, phi; x) = E_q[log p(x, z) - log q(z|x)]
                                                = -KL(q(z|x) || p(z)) + E_q[log p(x|z)].   (eqs. 2-3)
Reparameterisation (Section 2.4, eq. 10): z_l = mu + sigma * eps_l, eps_l ~ N(0, I).

    estimator A (eq. 6):  (1/L) sum_l [log p(x, z_l) - log q(z_l|x)]
    estimator B (eq. 7):  -KL(q || p) + (1/L) sum_l log p(x|z_l),  with the KL in closed form:
    -KL = 1/2 sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2)           (App. B, used in eq. 10)

Each estimator returns one value per datapoint; the minibatch estimator of eq. 8 is
(N/M) times their sum, which the trainer forms.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Normal

from . import checks
from .device import generator_for

ESTIMATORS = ("A", "B")


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) per datapoint, Appendix B."""
    checks.same_shape(mu=mu, logvar=logvar)
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, n_samples: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """z = g_phi(eps, x) = mu + sigma * eps of shape (L, B, Z), eps ~ N(0, I) (eq. 10)."""
    checks.at_least("n_samples", n_samples)
    checks.same_shape(mu=mu, logvar=logvar)
    checks.generator("generator", generator)
    eps = torch.randn((n_samples, *mu.shape), generator=generator, dtype=mu.dtype, device=mu.device)
    return mu + torch.exp(0.5 * logvar) * eps


def sgvb_a(model, x: torch.Tensor, n_samples: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """Generic SGVB estimator L^A, eq. 6."""
    checks.model("model", model, ("encode", "log_joint"))
    checks.at_least("n_samples", n_samples)
    checks.datapoints("x", x, model)
    return _sgvb_a(model, x, n_samples, generator)


def _sgvb_a(model, x, n_samples, generator):
    mu, logvar = model.encode(x)
    z = reparameterize(mu, logvar, n_samples, generator)
    log_q = Normal(mu, torch.exp(0.5 * logvar)).log_prob(z).sum(-1)
    return (model.log_joint(x, z) - log_q).mean(0)


def sgvb_b(model, x: torch.Tensor, n_samples: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """Second SGVB estimator L^B, eq. 7 (eq. 10 for the VAE): analytic KL, sampled likelihood."""
    checks.model("model", model, ("encode", "log_likelihood"))
    checks.at_least("n_samples", n_samples)
    checks.datapoints("x", x, model)
    return _sgvb_b(model, x, n_samples, generator)


def _sgvb_b(model, x, n_samples, generator):
    mu, logvar = model.encode(x)
    z = reparameterize(mu, logvar, n_samples, generator)
    return -gaussian_kl(mu, logvar) + model.log_likelihood(x, z).mean(0)


def get_estimator(name: str, checked: bool = True):
    """``sgvb_a`` or ``sgvb_b``; ``checked=False`` gives the same estimator without the per-call input
    checks, for callers that checked their data once (the training step, ``lower_bound``'s batches)."""
    if not isinstance(name, str) or name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; valid: {', '.join(ESTIMATORS)}")
    if checked:
        return sgvb_a if name == "A" else sgvb_b
    return _sgvb_a if name == "A" else _sgvb_b


@torch.no_grad()
def lower_bound(model, X: torch.Tensor, estimator: str = "B", n_samples: int = 1, batch_size: int = 1000,
                seed: int = 0) -> float:
    """Average bound per datapoint over a whole dataset (the paper's Figure 2 y axis).

    A fixed seed makes repeated evaluations of one model identical, so a training curve
    moves only because the model does.
    """
    fn = get_estimator(estimator, checked=False)  # X is checked once here, not once per batch
    checks.model("model", model, ("encode", "log_joint", "log_likelihood"))
    checks.at_least("n_samples", n_samples)
    checks.at_least("batch_size", batch_size)
    checks.seed("seed", seed)
    checks.datapoints("X", X, model)
    g = generator_for(seed, X)
    total = 0.0
    for i in range(0, len(X), batch_size):
        total += fn(model, X[i:i + batch_size], n_samples, g).sum().item()
    return total / len(X)


# --- the derivation, checked: closed forms, gradient estimators and their variance --------
#
# The functions below serve the derivation notebook (01) and its tests. They take the
# variational parameters (mu, logvar) of q(z|x) = N(mu, diag exp(logvar)) directly, one row
# per datapoint, so that the gradient of the bound w.r.t. phi = (mu, log sigma^2) can be
# estimated and compared with the closed form of the linear-Gaussian model
# (``exact.LinearGaussian``): p(z) = N(0, I), p(x|z) = N(W z + b, s^2 I).

# Monte Carlo sizes of the derivation notebook per budget: repeats of each gradient estimate
# (its variance is measured over them), samples of the large-L checks, datapoints of eq. 8.
def derivation_sizes(budget: str) -> dict:
    """The Monte Carlo sizes of the derivation notebook for a budget name (``budgets.BUDGETS``)."""
    from .budgets import get_budget

    b = get_budget(budget)
    return {"repeats": b.derivation_repeats, "n_mc": b.derivation_mc, "minibatch_repeats": 5 * b.derivation_repeats}


class FixedPosterior(torch.nn.Module):
    """``model`` with its encoder replaced by given variational parameters (mu, logvar).

    ``encode`` ignores x and returns (mu, logvar), so ``sgvb_a``/``sgvb_b`` evaluate the bound
    of this q and autograd gives d/d(mu, logvar). mu may carry leading repeat dimensions,
    e.g. (R, B, Z): the estimators broadcast over them (R independent estimates at once).
    """

    def __init__(self, model, mu: torch.Tensor, logvar: torch.Tensor):
        super().__init__()
        self.model, self.mu, self.logvar = model, mu, logvar

    def encode(self, x):
        return self.mu, self.logvar

    def log_prior(self, z):
        return self.model.log_prior(z)

    def log_likelihood(self, x, z):
        return self.model.log_likelihood(x, z)

    def log_joint(self, x, z):
        return self.model.log_joint(x, z)


def diagonal_log_q(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log q(z|x) = log N(z; mu, diag sigma^2), eq. 9, summed over the latent dimensions."""
    return Normal(mu, torch.exp(0.5 * logvar), validate_args=False).log_prob(z).sum(-1)


def linear_gaussian_bound(model, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """The bound L(phi; x) of eqs. 2-3 in closed form for a linear-Gaussian model, per datapoint.

        E_q log p(x|z) = -D/2 log(2 pi s^2) - (|x - W mu - b|^2 + sum_j |W_j|^2 sigma_j^2) / (2 s^2)
        L = E_q log p(x|z) - KL(q || p(z))          (the KL of Appendix B)
    """
    s2 = model.sigma ** 2
    resid = x - mu @ model.W.T - model.b
    trace = (logvar.exp() * (model.W ** 2).sum(0)).sum(-1)
    e_loglik = -0.5 * model.x_dim * math.log(2 * math.pi * s2) - ((resid ** 2).sum(-1) + trace) / (2 * s2)
    return e_loglik - gaussian_kl(mu, logvar)


def linear_gaussian_bound_grad(model, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Closed-form gradient of ``linear_gaussian_bound`` w.r.t. (mu, logvar), shape (B, 2Z):

        dL/dmu       = W^T (x - W mu - b) / s^2 - mu
        dL/dlogvar_j = 1/2 - sigma_j^2 (1 + |W_j|^2 / s^2) / 2
    """
    s2 = model.sigma ** 2
    d_mu = (x - mu @ model.W.T - model.b) @ model.W / s2 - mu
    d_logvar = 0.5 - 0.5 * logvar.exp() * (1.0 + (model.W ** 2).sum(0) / s2)
    return torch.cat([d_mu, d_logvar], -1)


def kl_to_posterior(model, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || p(z|x)) in closed form: the gap log p(x) - L of eq. 1, per datapoint.

    With p(z|x) = N(m, S) (``model.posterior``, full covariance) and q = N(mu, diag sigma^2):
        KL = 1/2 [tr(S^-1 diag sigma^2) + (m - mu)^T S^-1 (m - mu) - Z + log det S - sum log sigma^2]
    """
    m, S = model.posterior(x)
    S_inv = torch.linalg.inv(S)
    d = m - mu
    return 0.5 * ((torch.diagonal(S_inv) * logvar.exp()).sum(-1) + ((d @ S_inv) * d).sum(-1)
                  - mu.shape[-1] + torch.logdet(S) - logvar.sum(-1))


def _repeat_chunks(repeats: int, n_samples: int, batch: int, budget: int = 400_000):
    """Split ``repeats`` so that one chunk holds about ``budget`` sampled z (bounded memory)."""
    size = max(1, budget // max(1, n_samples * batch))
    return [min(size, repeats - i) for i in range(0, repeats, size)]


def reparameterized_grad(model, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, n_samples: int = 1,
                         estimator: str = "B", repeats: int = 1,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """SGVB gradient (Section 2.4, z = mu + sigma * eps, eq. 10) of estimator A (eq. 6) or B (eq. 7).

    The gradient w.r.t. (mu, logvar) of the L-sample estimator, by autograd through the
    reparameterisation; ``repeats`` independent estimates, shape (repeats, B, 2Z).
    """
    fn = get_estimator(estimator)
    out = []
    for r in _repeat_chunks(repeats, n_samples, len(x)):
        m = mu.detach().expand(r, *mu.shape).clone().requires_grad_(True)
        lv = logvar.detach().expand(r, *logvar.shape).clone().requires_grad_(True)
        est = fn(FixedPosterior(model, m, lv), x, n_samples, generator)  # (r, B)
        out.append(torch.cat(torch.autograd.grad(est.sum(), (m, lv)), -1))
    return torch.cat(out)


@torch.no_grad()
def score_function_grad(model, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, n_samples: int = 1,
                        repeats: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """The naive Monte Carlo (score-function, REINFORCE) gradient of Section 2.2, shape (repeats, B, 2Z).

        grad_phi E_q[f(z)] = E_q[f(z) grad_phi log q(z|x)] ~ (1/L) sum_l f(z_l) grad_phi log q(z_l|x)

    with f(z) = log p(x, z) - log q(z|x), the integrand of the bound (eq. 2). (The term
    E_q[grad_phi f] = -E_q[grad_phi log q] that f's own dependence on phi adds is zero.)
    For the diagonal Gaussian of eq. 9, with z = mu + sigma * eps:
        d log q / d mu = eps / sigma,   d log q / d logvar = (eps^2 - 1) / 2.
    No baseline or control variate: the estimator as the paper dismisses it.
    """
    out = []
    sigma = torch.exp(0.5 * logvar)
    for r in _repeat_chunks(repeats, n_samples, len(x)):
        m, lv = mu.expand(r, *mu.shape), logvar.expand(r, *logvar.shape)
        z = reparameterize(m, lv, n_samples, generator)              # (L, r, B, Z)
        eps = (z - m) / sigma
        f = (model.log_joint(x, z) - diagonal_log_q(z, m, lv)).unsqueeze(-1)  # (L, r, B, 1)
        out.append(torch.cat([(f * eps / sigma).mean(0), (f * 0.5 * (eps ** 2 - 1)).mean(0)], -1))
    return torch.cat(out)


GRADIENT_METHODS = {
    "score function": lambda model, x, mu, logvar, L, R, g: score_function_grad(model, x, mu, logvar, L, R, g),
    "reparameterised A": lambda model, x, mu, logvar, L, R, g: reparameterized_grad(model, x, mu, logvar, L, "A", R, g),
    "reparameterised B": lambda model, x, mu, logvar, L, R, g: reparameterized_grad(model, x, mu, logvar, L, "B", R, g),
}


def gradient_variance(method: str, model, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                      n_samples: list[int], repeats: int, seed: int = 0) -> list[dict]:
    """Mean and variance of a gradient estimator of the bound over ``repeats`` independent runs,
    for each number of samples L in ``n_samples`` (``method``: a key of ``GRADIENT_METHODS``:
    the score function of Section 2.2, or the reparameterised estimators A/B of eqs. 6-7).

    Per L: ``mean`` and ``variance`` per coordinate of (mu, logvar) (flattened over the
    datapoints), ``total_variance`` = the sum of the per-coordinate variances, and ``se`` the
    standard error of the mean. The variance of an average of L i.i.d. terms is var/L.
    """
    if method not in GRADIENT_METHODS:
        raise ValueError(f"unknown gradient method {method!r}; valid: {', '.join(GRADIENT_METHODS)}")
    g = generator_for(seed, x)
    rows = []
    for L in n_samples:
        grads = GRADIENT_METHODS[method](model, x, mu, logvar, int(L), repeats, g).reshape(repeats, -1)
        var = grads.var(0)
        rows.append({"method": method, "n_samples": int(L), "repeats": repeats, "mean": grads.mean(0).tolist(),
                     "variance": var.tolist(), "total_variance": var.sum().item(),
                     "se": (var / repeats).sqrt().tolist()})
    return rows


@torch.no_grad()
def monte_carlo_kl(mu: torch.Tensor, logvar: torch.Tensor, n_samples: int,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte Carlo KL(q || N(0, I)) = E_q[log q(z) - log p(z)] per datapoint, and its standard error:
    the sampled counterpart of Appendix B's closed form (``gaussian_kl``)."""
    checks.at_least("n_samples", n_samples, 2)  # a standard error needs two samples
    z = reparameterize(mu, logvar, n_samples, generator)
    d = diagonal_log_q(z, mu, logvar) - Normal(0.0, 1.0).log_prob(z).sum(-1)
    return d.mean(0), d.std(0) / math.sqrt(n_samples)


@torch.no_grad()
def minibatch_estimate(model, X: torch.Tensor, batch_size: int, estimator: str = "B", n_samples: int = 1,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """The minibatch estimator of eq. 8: L(theta, phi; X) ~ (N/M) sum_{i in minibatch} L~(x_i),
    with M indices drawn uniformly with replacement (as the trainer does); one draw, a scalar."""
    checks.at_least("batch_size", batch_size)
    checks.datapoints("X", X, model)
    checks.generator("generator", generator)
    idx = torch.randint(len(X), (batch_size,), generator=generator, device=X.device)
    return len(X) / batch_size * get_estimator(estimator)(model, X[idx], n_samples, generator).sum()


@torch.no_grad()
def bound_samples(model, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, n: int, estimator: str = "A",
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """n independent single-sample (L = 1) estimates of the bound, estimator A (eq. 6) or B
    (eq. 7), for q = N(mu, diag exp(logvar)); shape (n, B). Their mean estimates L(phi; x),
    their variance is the variance of the estimator's value."""
    fn = get_estimator(estimator)
    checks.at_least("n", n)
    checks.same_shape(mu=mu, logvar=logvar)
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or mu.dim() != 2 or len(mu) != len(x):
        raise ValueError(f"x {tuple(getattr(x, 'shape', ()))} and mu {tuple(mu.shape)} do not fit: expected x of "
                         f"(datapoints, pixels) and mu, logvar of (datapoints, latents), one row per datapoint")
    out = [fn(FixedPosterior(model, mu.expand(r, *mu.shape), logvar.expand(r, *logvar.shape)), x, 1, generator)
           for r in _repeat_chunks(n, 1, len(x))]
    return torch.cat(out)


class ShiftedPosterior(FixedPosterior):
    """``model`` whose encoder output is shifted: q(z|x) = N(mu(x) + d_mu, diag exp(logvar(x) + d_logvar)).

    With ``model`` a ``LinearGaussian`` (whose encoder is the exact posterior) this is a
    perturbed q for every datapoint, as eq. 8 needs when minibatches are drawn."""

    def __init__(self, model, d_mu: float = 0.0, d_logvar: float = 0.0):
        super().__init__(model, None, None)
        self.d_mu, self.d_logvar = d_mu, d_logvar

    def encode(self, x):
        mu, logvar = self.model.encode(x)
        return mu + self.d_mu, logvar + self.d_logvar
