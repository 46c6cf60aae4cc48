"""The two baselines of Section 5 / Appendix E, plugged into the loop of ``train.py``.

Wake-sleep (Hinton et al. 1995; the paper's Section 4-5, anglepy `step_wakesleep`), with
the same encoder and decoder modules as AEVB, one iteration on a minibatch of M:
    wake:   z ~ q_phi(z|x) (no reparameterisation gradient),
            theta <- Adagrad ascent on  sum_i log p_theta(x_i, z_i) + (M/N) log p(theta)
    sleep:  z ~ p(z), x ~ p_theta(x|z) (M "dreams"),
            phi   <- Adagrad ascent on  sum_i log q_phi(z_i|x_i)   + (M/N) log p(phi)
with separate Adagrad accumulators. Neither objective is a bound; the curve we report is
the same variational lower bound as for AEVB, estimated with SGVB B (eq. 7). anglepy used
estimator A for it; both estimate the same expectation and B has the lower variance.

Monte Carlo EM (Appendix E; anglepy `step_batch_mcem`): no encoder. Persistent chains
z_i ~ p_theta(z|x_i), one per training point, initialised from the prior. One iteration:
    E-step: one HMC transition of every chain, 10 leapfrog steps, a global step size tuned
            toward 90% acceptance (``hmc.GlobalStepSize``), on log p(z) + log p(x|z);
    M-step: 5 Adagrad steps on  sum_{i in batch} log p_theta(x_i, z_i) + (M/N) log p(theta),
            the minibatches of M taken in order, cycling through the training set.
"Training samples evaluated" per iteration = N (every chain's datapoint is used once by the
E-step transition) + 5 M (the M-step's datapoints); the paper does not say how it counted.
"""

from __future__ import annotations

import torch
from torch.distributions import Normal

from .hmc import GlobalStepSize, hmc_step
from .models import sample_x
from .train import AEVB, Adagrad, TrainConfig


class WakeSleep(AEVB):
    metric = "lower bound (SGVB B, L=1)"

    def __init__(self, model, X, cfg: TrainConfig, lr: float, rng: torch.Generator):
        self._setup(model, X, cfg, rng)
        self.wake_opt = Adagrad(model.decoder_parameters(), lr, cfg.adagrad_warmup, cfg.adagrad_eps)
        self.sleep_opt = Adagrad(model.encoder_parameters(), lr, cfg.adagrad_warmup, cfg.adagrad_eps)

    def step(self) -> tuple[int, float]:
        model, M = self.model, self.cfg.batch_size
        x = next(self.batches)
        # wake: fit the generative model to (x, z ~ q(z|x))
        with torch.no_grad():
            mu, logvar = model.encode(x)
            z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=self.rng)
        log_joint = model.log_joint(x, z)
        self.wake_opt.ascend(log_joint.sum() + self.log_prior_term(model.decoder_parameters()))
        # sleep: fit the recognition model to dreams (z, x) ~ p(z) p(x|z)
        with torch.no_grad():
            z_dream = torch.randn(M, model.z_dim, generator=self.rng)
            dream = model.decoder_distribution(z_dream)
            if not torch.isfinite(dream.mean).all():  # the wake step diverged: report it, do not dream from NaN
                return len(x), float("nan")
            x_dream = sample_x(dream, self.rng)
        mu, logvar = model.encode(x_dream)
        log_q = Normal(mu, torch.exp(0.5 * logvar)).log_prob(z_dream).sum(-1)
        self.sleep_opt.ascend(log_q.sum() + self.log_prior_term(model.encoder_parameters()))
        return len(x), log_joint.mean().item()

    def state_dict(self):
        return {"wake": self.wake_opt.state_dict(), "sleep": self.sleep_opt.state_dict()}

    def load_state_dict(self, d):
        self.wake_opt.load_state_dict(d["wake"])
        self.sleep_opt.load_state_dict(d["sleep"])


class MCEM(AEVB):
    metric = "mean log p(x, z) of the persistent HMC chains (train only; not a bound)"

    def __init__(self, model, X, cfg: TrainConfig, lr: float, rng: torch.Generator):
        self._setup(model, X, cfg, rng)  # its minibatches serve only dynamic binarisation
        self.X = X
        self.z = torch.randn(len(X), model.z_dim, generator=rng)  # chains start at prior draws
        self.step_size = GlobalStepSize(cfg.mcem_init_step, cfg.mcem_target_accept)
        self.opt = Adagrad(model.parameters(), lr, cfg.mcem_warmup, cfg.adagrad_eps)
        self.cursor, self.last_accept = 0, float("nan")

    def step(self) -> tuple[int, float]:
        model, M = self.model, self.cfg.batch_size
        x = self.batches.prepare(self.X)
        # E-step: one HMC transition of every chain toward p(z|x)
        result = hmc_step(lambda z: model.log_joint(x, z), self.z, self.step_size.value,
                          self.cfg.mcem_leapfrog, self.rng)
        self.z = result.z
        self.step_size.update(result)
        self.last_accept = result.accepted.float().mean().item()
        # M-step: Adagrad on the complete-data log-likelihood of the current samples
        for _ in range(self.cfg.mcem_m_steps):
            idx = torch.arange(self.cursor, self.cursor + M) % self.N
            self.cursor = (self.cursor + M) % self.N
            self.opt.ascend(model.log_joint(x[idx], self.z[idx]).sum() + self.log_prior_term())
        return self.N + self.cfg.mcem_m_steps * M, result.log_prob.mean().item()

    @torch.no_grad()
    def evaluate(self, X, split: str):
        if split != "train" or X is None:
            return None  # without an encoder there is no cheap test-set value; see marginal_likelihood
        n = min(len(X), len(self.z))
        return self.model.log_joint(self.X[:n], self.z[:n]).mean().item()

    def state_dict(self):
        return {"opt": self.opt.state_dict(), "z": self.z.clone(), "step_size": self.step_size.state_dict(),
                "cursor": self.cursor}

    def load_state_dict(self, d):
        self.opt.load_state_dict(d["opt"])
        self.z = d["z"].clone()
        self.step_size.load_state_dict(d["step_size"])
        self.cursor = d["cursor"]
