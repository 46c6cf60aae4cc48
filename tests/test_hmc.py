"""Batched HMC against a target whose moments are known exactly."""

import pytest
import torch
from torch.distributions import MultivariateNormal

from vae_utils.hmc import GlobalStepSize, PerChainStepSize, hmc_step, run_chains

MEAN = torch.tensor([1.0, -2.0, 0.5])
COV = torch.tensor([[1.0, 0.9, 0.0], [0.9, 1.0, 0.3], [0.0, 0.3, 0.5]])
TARGET = MultivariateNormal(MEAN, COV, validate_args=False)


def _moments(samples):  # samples (T, C, Z) -> pooled mean and covariance
    flat = samples.reshape(-1, samples.shape[-1])
    return flat.mean(0), torch.cov(flat.T)


@pytest.mark.parametrize("kind", ["global", "per_chain"])
def test_step_size_adaptation_reaches_target_acceptance_and_moments(kind):
    """Global: one step tuned x/÷1.25 (10 leapfrog steps, as MCEM). Per chain: adapted during
    burn-in, then frozen (4 leapfrog steps, as the Appendix-D estimator)."""
    g = torch.Generator().manual_seed(0 if kind == "global" else 1)
    step, n_leapfrog, burn_in, keep, adapt = (
        (GlobalStepSize(initial=0.01, target=0.9), 10, 100, 100, True) if kind == "global"
        else (PerChainStepSize(2000, initial=0.01, target=0.9), 4, 300, 200, False))
    z0 = torch.randn(2000, 3, generator=g) * 3
    _, z, _ = run_chains(TARGET.log_prob, z0, burn_in, n_leapfrog, step, adapt=True, generator=g, keep=False)
    samples, _, acc = run_chains(TARGET.log_prob, z, keep, n_leapfrog, step, adapt=adapt, generator=g)
    mean, cov = _moments(samples)
    print(f"{kind} step size: acceptance {acc.mean():.3f}")
    assert 0.85 < acc.mean() < 0.95
    torch.testing.assert_close(mean, MEAN, atol=0.03, rtol=0)
    torch.testing.assert_close(cov, COV, atol=0.04, rtol=0)


def test_a_fixed_kernel_leaves_the_target_invariant():
    """Chains started at exact draws stay exactly distributed (detailed balance), even with a
    step so large that many proposals are rejected."""
    g = torch.Generator().manual_seed(2)
    torch.manual_seed(20)  # not the generator's seed: momenta must be independent of the draws
    z = TARGET.sample((20_000,))
    for _ in range(10):
        res = hmc_step(TARGET.log_prob, z, 0.125, 3, g)
        z = res.z
    assert 0.05 < res.accepted.float().mean() < 0.95
    torch.testing.assert_close(z.mean(0), MEAN, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(z.T), COV, atol=0.04, rtol=0)


def test_diverging_trajectories_are_rejected_not_propagated():
    g = torch.Generator().manual_seed(3)
    z = torch.zeros(10, 3)
    res = hmc_step(TARGET.log_prob, z, 1e6, 5, g)
    assert not res.accepted.any() and torch.equal(res.z, z) and torch.isfinite(res.log_prob).all()
