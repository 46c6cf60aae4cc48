"""Batched Hamiltonian Monte Carlo: many independent chains at once, one per datapoint.

Used by Monte Carlo EM (Appendix E: "10 HMC leapfrog steps with an automatically tuned
stepsize such that the acceptance rate was 90%") and by the marginal-likelihood estimator
of Appendix D (4 leapfrog steps per posterior sample).

Target: a batched log-density log pi(z) for z of shape (C, Z), returning (C,), with
gradients from autograd. Unit mass matrix, momentum r ~ N(0, I), H(z, r) = -log pi(z) + |r|^2/2.
Leapfrog with step e (per chain, shape (C,) or scalar), n steps:
    r <- r + e/2 grad log pi(z);  n-1 times { z <- z + e r;  r <- r + e grad log pi(z) };
    z <- z + e r;  r <- r + e/2 grad log pi(z)
then a Metropolis test per chain: accept with probability min(1, exp(H_old - H_new)).

Step-size adaptation, the two forms of Kingma's anglepy (paper_spec 5.2 and 6):
  * ``GlobalStepSize``: one scalar, divided by 1.25 after a transition whose mean acceptance
    is below the target (default 0.9) and multiplied by 1.25 otherwise (`hmc_step_autotune`).
  * ``PerChainStepSize``: one step per chain, moved in log space toward the target
    acceptance: log e_c += rate * (a_c - target), a_c the chain's acceptance probability.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _log_prob_and_grad(log_prob, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        lp = log_prob(z)
        (grad,) = torch.autograd.grad(lp.sum(), z)
    return lp.detach(), grad


@dataclass
class HMCStep:
    z: torch.Tensor          # (C, Z) the chains after the transition
    log_prob: torch.Tensor   # (C,) log pi at z
    accept_prob: torch.Tensor  # (C,) min(1, exp(-dH))
    accepted: torch.Tensor   # (C,) bool


def hmc_step(log_prob, z: torch.Tensor, step_size, n_leapfrog: int = 10,
             generator: torch.Generator | None = None, current_log_prob: torch.Tensor | None = None) -> HMCStep:
    """One HMC transition of every chain in ``z`` (C, Z)."""
    step = torch.as_tensor(step_size, dtype=z.dtype, device=z.device)
    step = step.reshape(-1, 1) if step.dim() == 1 else step
    r0 = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
    lp0, grad = _log_prob_and_grad(log_prob, z)
    if current_log_prob is not None:
        lp0 = current_log_prob
    z_new = z.detach()
    r = r0 + 0.5 * step * grad
    for i in range(n_leapfrog):
        z_new = z_new + step * r
        lp_new, grad = _log_prob_and_grad(log_prob, z_new)
        r = r + (step if i < n_leapfrog - 1 else 0.5 * step) * grad
    log_ratio = (lp_new - 0.5 * (r * r).sum(-1)) - (lp0 - 0.5 * (r0 * r0).sum(-1))
    log_ratio = torch.nan_to_num(log_ratio, nan=-float("inf"))  # a diverged trajectory is rejected
    accept_prob = log_ratio.clamp(max=0.0).exp()
    accepted = torch.rand(accept_prob.shape, generator=generator, dtype=z.dtype, device=z.device) < accept_prob
    z_out = torch.where(accepted[:, None], z_new, z.detach())
    lp_out = torch.where(accepted, lp_new, lp0)
    return HMCStep(z_out, lp_out, accept_prob, accepted)


class GlobalStepSize:
    """One scalar step tuned multiplicatively toward a target acceptance (anglepy autotune)."""

    def __init__(self, initial: float = 0.01, target: float = 0.9, factor: float = 1.25):
        self.value, self.target, self.factor = float(initial), target, factor

    def update(self, result: HMCStep) -> None:
        rate = result.accepted.float().mean().item()
        self.value = self.value / self.factor if rate < self.target else self.value * self.factor

    def state_dict(self):
        return {"value": self.value}

    def load_state_dict(self, d):
        self.value = float(d["value"])


class PerChainStepSize:
    """One step per chain, adapted in log space toward the target acceptance probability."""

    def __init__(self, n_chains: int, initial: float = 0.01, target: float = 0.9, rate: float = 1.0,
                 device: torch.device | str = "cpu"):
        self.value = torch.full((n_chains,), float(initial), device=device)
        self.target, self.rate = target, rate

    def update(self, result: HMCStep) -> None:
        self.value = self.value * torch.exp(self.rate * (result.accept_prob - self.target))

    def state_dict(self):
        return {"value": self.value.clone()}

    def load_state_dict(self, d):
        self.value = d["value"].to(self.value.device, copy=True)


def run_chains(log_prob, z0: torch.Tensor, n_transitions: int, n_leapfrog: int, step_size,
               adapt: bool = True, generator: torch.Generator | None = None, keep: bool = True):
    """``n_transitions`` transitions from ``z0``; returns (samples (T, C, Z) or None, final z,
    mean acceptance per chain). The step-size object adapts only while ``adapt``."""
    z, lp = z0, None
    samples, acc = [], torch.zeros(z0.shape[0], device=z0.device)
    for _ in range(n_transitions):
        result = hmc_step(log_prob, z, step_size.value, n_leapfrog, generator, lp)
        z, lp = result.z, result.log_prob
        acc += result.accepted.float()
        if adapt:
            step_size.update(result)
        if keep:
            samples.append(z)
    return (torch.stack(samples) if keep else None), z, acc / max(n_transitions, 1)
