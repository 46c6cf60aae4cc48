"""Exact log p(x), the ground truth the estimators are tested against.

Linear-Gaussian latent model (probabilistic PCA):
    p(z) = N(0, I),  p(x|z) = N(W z + b, s^2 I)   =>   p(x) = N(x; b, W W^T + s^2 I)
    p(z|x) = N(S W^T (x - b) / s^2, S),  S = (I + W^T W / s^2)^{-1}
With orthogonal columns of W the posterior is diagonal, so a diagonal-Gaussian q can equal it
and the bound of eq. 3 is then tight: L = log p(x).

Any model with a latent of up to 3 dimensions: log p(x) = log of the integral of p(x, z) over the plane, by
quadrature on a fine grid placed where the posterior mass is (found on a coarse grid first).
"""

from __future__ import annotations

import math

import torch
from torch.distributions import MultivariateNormal, Normal


class LinearGaussian(torch.nn.Module):
    """p(z) p(x|z) with x = W z + b + s * noise; exposes the same interface as ``VAE``."""

    def __init__(self, W: torch.Tensor, b: torch.Tensor, sigma: float):
        super().__init__()
        self.sigma = float(sigma)
        self.x_dim, self.z_dim = W.shape
        self.has_encoder = True
        W = W.double()
        # buffers, so that .to(device) moves the model
        self.register_buffer("W", W)
        self.register_buffer("b", b.double())
        self.register_buffer("post_cov", torch.linalg.inv(torch.eye(self.z_dim, dtype=torch.float64)
                                                          + W.T @ W / self.sigma ** 2))

    @classmethod
    def random(cls, x_dim: int = 10, z_dim: int = 3, sigma: float = 0.5, seed: int = 0, orthogonal: bool = True):
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(x_dim, z_dim, generator=g, dtype=torch.float64)
        if orthogonal:  # orthogonal columns of differing norms: a diagonal posterior
            Q, _ = torch.linalg.qr(W)
            W = Q * torch.linspace(0.8, 2.0, z_dim, dtype=torch.float64)
        return cls(W, torch.randn(x_dim, generator=g, dtype=torch.float64), sigma)

    def sample_x(self, n: int, seed: int = 1) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)  # on the CPU, wherever the model is: the same data on any device
        z = torch.randn(n, self.z_dim, generator=g, dtype=torch.float64)
        W, b = self.W.cpu(), self.b.cpu()
        return z @ W.T + b + self.sigma * torch.randn(n, self.x_dim, generator=g, dtype=torch.float64)

    def log_prior(self, z):
        return Normal(0.0, 1.0, validate_args=False).log_prob(z).sum(-1)

    def log_likelihood(self, x, z):
        return Normal(z.to(torch.float64) @ self.W.T + self.b, self.sigma, validate_args=False).log_prob(x).sum(-1)

    def log_joint(self, x, z):
        return self.log_prior(z) + self.log_likelihood(x, z)

    def log_marginal(self, x):
        cov = self.W @ self.W.T + self.sigma ** 2 * torch.eye(self.x_dim, dtype=torch.float64, device=self.W.device)
        return MultivariateNormal(self.b, covariance_matrix=cov).log_prob(x)

    def posterior(self, x):
        """(mean (B, Z), covariance (Z, Z)) of the exact p(z|x)."""
        return (x - self.b) @ self.W @ self.post_cov / self.sigma ** 2, self.post_cov

    def encode(self, x):
        """The exact posterior as (mu, logvar): exact when W has orthogonal columns."""
        mu, cov = self.posterior(x)
        return mu, torch.log(torch.diagonal(cov)).expand_as(mu)


# Points per axis of the final and of the first (coarse) grid, by latent dimension: the final
# 3-D grid has 50^3 = 125,000 points, each a pass of the decoder.
QUADRATURE_GRID = {1: 2000, 2: 150, 3: 50}
QUADRATURE_COARSE = {1: 2000, 2: 100, 3: 40}


def quadrature_settings(z_dim: int, n_grid: int | None = None, limit: float = 6.0, width: float = 10.0,
                        n_coarse: int | None = None, refine: int = 2) -> dict:
    """The settings ``quadrature_log_likelihood`` uses for a ``z_dim`` latent, defaults resolved
    (for the record of a result: what "exact" meant there)."""
    return {"n_grid": n_grid or QUADRATURE_GRID[z_dim], "n_coarse": n_coarse or QUADRATURE_COARSE[z_dim],
            "limit": limit, "width": width, "refine": refine}


def _grid_log_joint(model, x: torch.Tensor, z: torch.Tensor, chunk: int) -> torch.Tensor:
    """log p(x, z) for one datapoint x (D,) at grid points z (G, d), in chunks so that memory
    stays at chunk x D whatever the grid size."""
    return torch.cat([model.log_joint(x, z[i:i + chunk]).double() for i in range(0, len(z), chunk)])


def _grid(lo: torch.Tensor, hi: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Midpoints of an n^d grid over the box [lo, hi] and the log volume of one cell."""
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    axes = [lo[j] + (hi[j] - lo[j]) * u for j in range(len(lo))]
    z = torch.cartesian_prod(*axes).reshape(-1, len(lo))
    return z, torch.log(hi - lo).sum() - len(lo) * math.log(n)


@torch.no_grad()
def quadrature_log_likelihood(model, x: torch.Tensor, n_grid: int | None = None, limit: float = 6.0,
                              width: float = 10.0, n_coarse: int | None = None, refine: int = 2,
                              chunk: int = 20_000) -> torch.Tensor:
    """log p(x) = log of the integral of p(x, z) dz for a model with z_dim <= 3, per row of x.

    A coarse grid on [-limit, limit]^d locates each posterior (mean m, std s per axis); the
    box m +- width * s is then gridded again and again, each pass re-centring on the moments
    of the last, until ``refine`` passes in a row have a spacing below half the posterior std
    on every axis; the integral is the midpoint rule on the final grid (spectrally accurate
    for a smooth integrand).
    """
    d = model.z_dim
    if d > 3:
        raise ValueError(f"quadrature is for z_dim <= 3, got {d}")
    n_grid = n_grid or QUADRATURE_GRID[d]
    n_coarse = n_coarse or QUADRATURE_COARSE[d]
    out = []
    for xi in x:
        lo = torch.full((d,), -limit, dtype=torch.float64)
        hi = -lo
        n, resolved, passes = n_coarse, 0, 0
        while resolved < refine and passes < 12:  # zoom until the grid has resolved the posterior
            z, log_cell = _grid(lo, hi, n)
            lj = _grid_log_joint(model, xi, z.float(), chunk)
            w = torch.softmax(lj, 0)
            m = w @ z
            spacing = (hi - lo) / n
            s = torch.sqrt((w @ z ** 2 - m ** 2).clamp(min=0))
            resolved = resolved + 1 if bool((spacing < s / 2).all()) else 0
            s = torch.maximum(s, spacing)
            lo, hi = (m - width * s).clamp(min=-limit - 4), (m + width * s).clamp(max=limit + 4)
            n, passes = n_grid, passes + 1
        out.append(torch.logsumexp(lj, 0) + log_cell)
    return torch.stack(out)


__all__ = ["LinearGaussian", "quadrature_log_likelihood", "quadrature_settings", "QUADRATURE_GRID",
           "QUADRATURE_COARSE"]

