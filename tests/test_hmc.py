"""Batched HMC against a target whose moments are known exactly."""

import torch
from torch.distributions import MultivariateNormal

from vae_utils.hmc import GlobalStepSize, PerChainStepSize, hmc_step, run_chains

MEAN = torch.tensor([1.0, -2.0, 0.5])
COV = torch.tensor([[1.0, 0.9, 0.0], [0.9, 1.0, 0.3], [0.0, 0.3, 0.5]])
TARGET = MultivariateNormal(MEAN, COV, validate_args=False)


def _moments(samples):  # samples (T, C, Z) -> pooled mean and covariance
    flat = samples.reshape(-1, samples.shape[-1])
    return flat.mean(0), torch.cov(flat.T)


def test_global_step_size_reaches_target_acceptance_and_moments():
    g = torch.Generator().manual_seed(0)
    step = GlobalStepSize(initial=0.01, target=0.9)
    z0 = torch.randn(2000, 3, generator=g) * 3
    _, z, _ = run_chains(TARGET.log_prob, z0, 100, 10, step, adapt=True, generator=g, keep=False)
    samples, _, acc = run_chains(TARGET.log_prob, z, 100, 10, step, adapt=True, generator=g)
    mean, cov = _moments(samples)
    print(f"global step {step.value:.3f}, acceptance {acc.mean():.3f}")
    assert 0.85 < acc.mean() < 0.95
    torch.testing.assert_close(mean, MEAN, atol=0.03, rtol=0)
    torch.testing.assert_close(cov, COV, atol=0.04, rtol=0)


def test_per_chain_step_sizes_reach_target_acceptance_and_moments():
    g = torch.Generator().manual_seed(1)
    step = PerChainStepSize(2000, initial=0.01, target=0.9)
    z0 = torch.randn(2000, 3, generator=g) * 3
    _, z, _ = run_chains(TARGET.log_prob, z0, 300, 4, step, adapt=True, generator=g, keep=False)
    samples, _, acc = run_chains(TARGET.log_prob, z, 200, 4, step, adapt=False, generator=g)
    mean, cov = _moments(samples)
    print(f"per-chain steps median {step.value.median():.3f}, acceptance {acc.mean():.3f}")
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
