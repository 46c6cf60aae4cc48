"""Exact log p(x), the ground truth the estimators are tested against.

Linear-Gaussian latent model (probabilistic PCA):
    p(z) = N(0, I),  p(x|z) = N(W z + b, s^2 I)   =>   p(x) = N(x; b, W W^T + s^2 I)
    p(z|x) = N(S W^T (x - b) / s^2, S),  S = (I + W^T W / s^2)^{-1}
With orthogonal columns of W the posterior is diagonal, so a diagonal-Gaussian q can equal it
and the bound of eq. 3 is then tight: L = log p(x).

Any model with a 2-D latent: log p(x) = log of the integral of p(x, z) over the plane, by
quadrature on a fine grid placed where the posterior mass is (found on a coarse grid first).
"""

from __future__ import annotations

import torch
from torch.distributions import MultivariateNormal, Normal


class LinearGaussian(torch.nn.Module):
    """p(z) p(x|z) with x = W z + b + s * noise; exposes the same interface as ``VAE``."""

    def __init__(self, W: torch.Tensor, b: torch.Tensor, sigma: float):
        super().__init__()
        self.W, self.b, self.sigma = W.double(), b.double(), float(sigma)
        self.x_dim, self.z_dim = W.shape
        self.has_encoder = True
        S = torch.linalg.inv(torch.eye(self.z_dim, dtype=torch.float64) + self.W.T @ self.W / self.sigma ** 2)
        self.post_cov = S

    @classmethod
    def random(cls, x_dim: int = 10, z_dim: int = 3, sigma: float = 0.5, seed: int = 0, orthogonal: bool = True):
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(x_dim, z_dim, generator=g, dtype=torch.float64)
        if orthogonal:  # orthogonal columns of differing norms: a diagonal posterior
            Q, _ = torch.linalg.qr(W)
            W = Q * torch.linspace(0.8, 2.0, z_dim, dtype=torch.float64)
        return cls(W, torch.randn(x_dim, generator=g, dtype=torch.float64), sigma)

    def sample_x(self, n: int, seed: int = 1) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.z_dim, generator=g, dtype=torch.float64)
        return z @ self.W.T + self.b + self.sigma * torch.randn(n, self.x_dim, generator=g, dtype=torch.float64)

    def log_prior(self, z):
        return Normal(0.0, 1.0, validate_args=False).log_prob(z).sum(-1)

    def log_likelihood(self, x, z):
        return Normal(z.to(torch.float64) @ self.W.T + self.b, self.sigma, validate_args=False).log_prob(x).sum(-1)

    def log_joint(self, x, z):
        return self.log_prior(z) + self.log_likelihood(x, z)

    def log_marginal(self, x):
        cov = self.W @ self.W.T + self.sigma ** 2 * torch.eye(self.x_dim, dtype=torch.float64)
        return MultivariateNormal(self.b, covariance_matrix=cov).log_prob(x)

    def posterior(self, x):
        """(mean (B, Z), covariance (Z, Z)) of the exact p(z|x)."""
        return (x - self.b) @ self.W @ self.post_cov / self.sigma ** 2, self.post_cov

    def encode(self, x):
        """The exact posterior as (mu, logvar): exact when W has orthogonal columns."""
        mu, cov = self.posterior(x)
        return mu, torch.log(torch.diagonal(cov)).expand_as(mu)


def _logsumexp_over_grid(model, x: torch.Tensor, z: torch.Tensor, chunk: int) -> torch.Tensor:
    """logsumexp over grid points of log p(x, z) for one datapoint x (D,) and z (G, 2),
    in chunks so that memory stays at chunk x D whatever the grid size."""
    parts = [model.log_joint(x, z[i:i + chunk]).double() for i in range(0, len(z), chunk)]
    return torch.logsumexp(torch.cat(parts), 0)


@torch.no_grad()
def quadrature_log_likelihood(model, x: torch.Tensor, n_grid: int = 150, limit: float = 6.0,
                              width: float = 10.0, n_coarse: int = 100, chunk: int = 20_000) -> torch.Tensor:
    """log p(x) for a model with z_dim = 2, one value per row of ``x``.

    A coarse n_coarse x n_coarse grid on [-limit, limit]^2 locates each posterior (mean m, std s per
    axis); the integral is then a midpoint rule (spectrally accurate for a smooth integrand) on an n_grid x n_grid grid over m +- width * s.
    """
    if model.z_dim != 2:
        raise ValueError(f"quadrature needs z_dim = 2, got {model.z_dim}")
    c = torch.linspace(-limit, limit, n_coarse)
    coarse = torch.cartesian_prod(c, c)
    u = (torch.arange(n_grid, dtype=torch.float64) + 0.5) / n_grid
    out = []
    for xi in x:
        lj = torch.cat([model.log_joint(xi, coarse[i:i + chunk]).double() for i in range(0, len(coarse), chunk)])
        w = torch.softmax(lj, 0)
        m = w @ coarse.double()
        s = torch.sqrt((w @ coarse.double() ** 2) - m ** 2).clamp(min=2 * limit / n_coarse)
        lo, hi = (m - width * s).clamp(min=-limit - 4), (m + width * s).clamp(max=limit + 4)
        fine = torch.cartesian_prod(lo[0] + (hi - lo)[0] * u, lo[1] + (hi - lo)[1] * u).float()
        cell = (hi - lo).prod() / n_grid ** 2
        out.append(_logsumexp_over_grid(model, xi, fine, chunk) + torch.log(cell))
    return torch.stack(out)


__all__ = ["LinearGaussian", "quadrature_log_likelihood"]

