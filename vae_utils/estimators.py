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

import torch
from torch.distributions import Normal

ESTIMATORS = ("A", "B")


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) per datapoint, Appendix B."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, n_samples: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """z = g_phi(eps, x) = mu + sigma * eps of shape (L, B, Z), eps ~ N(0, I) (eq. 10)."""
    eps = torch.randn((n_samples, *mu.shape), generator=generator, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


def sgvb_a(model, x: torch.Tensor, n_samples: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """Generic SGVB estimator L^A, eq. 6."""
    mu, logvar = model.encode(x)
    z = reparameterize(mu, logvar, n_samples, generator)
    log_q = Normal(mu, torch.exp(0.5 * logvar)).log_prob(z).sum(-1)
    return (model.log_joint(x, z) - log_q).mean(0)


def sgvb_b(model, x: torch.Tensor, n_samples: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """Second SGVB estimator L^B, eq. 7 (eq. 10 for the VAE): analytic KL, sampled likelihood."""
    mu, logvar = model.encode(x)
    z = reparameterize(mu, logvar, n_samples, generator)
    return -gaussian_kl(mu, logvar) + model.log_likelihood(x, z).mean(0)


def get_estimator(name: str):
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; valid: {', '.join(ESTIMATORS)}")
    return sgvb_a if name == "A" else sgvb_b


@torch.no_grad()
def lower_bound(model, X: torch.Tensor, estimator: str = "B", n_samples: int = 1, batch_size: int = 1000,
                seed: int = 0) -> float:
    """Average bound per datapoint over a whole dataset (the paper's Figure 2 y axis).

    A fixed seed makes repeated evaluations of one model identical, so a training curve
    moves only because the model does.
    """
    fn = get_estimator(estimator)
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for i in range(0, len(X), batch_size):
        total += fn(model, X[i:i + batch_size], n_samples, g).sum().item()
    return total / len(X)
