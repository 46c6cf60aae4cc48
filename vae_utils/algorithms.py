"""The three learning algorithms of Section 5 and the optimiser they share.

This module is the floor the training loop stands on: it imports the model, the estimators,
HMC and the config, and never the loop (``train.py``), which drives any algorithm through
``step() -> (training samples evaluated, objective)``, ``evaluate(X, split)`` and
``state_dict()``.

Adagrad (Duchi et al. 2011), as in anglepy, for the ascent on an objective f:
    g <- -grad f + lambda * w        lambda = M/N on weight matrices, 0 on biases
    s <- s + g^2
    w <- w - lr * g / (sqrt(s) + eps)      (not in the first ``warmup`` steps: s only fills)
The lambda * w term is the N(0, I) weight prior's (M/N) log p(theta) of Algorithm 1, applied as
weight decay: its gradient is -(M/N) w, so nothing is summed over every weight at every step.
The update is one pass over the parameters; ``compile=True`` fuses it with ``torch.compile``
(one C++ loop instead of four kernels), falling back to eager PyTorch where no compiler works.

Algorithm 1 (AEVB), one step:  X^M <- M random datapoints (with replacement, as anglepy);
eps ~ N(0, I); Adagrad ascent on  sum_i L^B(theta, phi; x_i, eps_i) + (M/N) log p(theta).
(That is (M/N) times eq. 8 plus the log-prior, approximate MAP; Adagrad ignores the factor.)

Wake-sleep (Hinton et al. 1995; anglepy ``step_wakesleep``), same encoder and decoder:
    wake:   z ~ q_phi(z|x) (no reparameterisation gradient),
            theta <- Adagrad ascent on  sum_i log p_theta(x_i, z_i) + (M/N) log p(theta)
    sleep:  z ~ p(z), x ~ p_theta(x|z) (M "dreams"),
            phi   <- Adagrad ascent on  sum_i log q_phi(z_i|x_i)   + (M/N) log p(phi)
with separate accumulators. Neither objective is a bound; the curve reports the variational
lower bound with SGVB B (eq. 7), as for AEVB (anglepy used estimator A: same expectation).

Monte Carlo EM (Appendix E; anglepy ``step_batch_mcem``): no encoder. Persistent chains
z_i ~ p_theta(z|x_i), one per training point, initialised from the prior. One iteration:
    E-step: one HMC transition of every chain, 10 leapfrog steps, a global step size tuned
            toward 90% acceptance (``hmc.GlobalStepSize``), on log p(z) + log p(x|z);
    M-step: 5 Adagrad steps on  sum_{i in batch} log p_theta(x_i, z_i) + (M/N) log p(theta),
            the minibatches of M taken in order, cycling through the training set.
"Training samples evaluated" per iteration = N (the E-step touches every datapoint) + 5 M
(the M-step's); the paper does not say how it counted.
"""

from __future__ import annotations

import shutil
import warnings

import torch
from torch.distributions import Normal

from . import data as data_mod
from .config import TrainConfig
from .estimators import get_estimator, lower_bound
from .hmc import GlobalStepSize, hmc_step
from .models import VAE, sample_x


# --- the optimiser ---------------------------------------------------------------------

def _adagrad_update(params, grads, sums, decays, lr: float, eps: float) -> None:
    """torch.optim.Adagrad's arithmetic (weight decay, then s += g^2, w -= lr g / (sqrt s + eps))."""
    for w, g, s, decay in zip(params, grads, sums, decays):
        if decay:
            g = g.add(w, alpha=decay)
        s.addcmul_(g, g)
        w.addcdiv_(g, s.sqrt().add_(eps), value=-lr)


def compiler_available() -> bool:
    """Whether torch.compile's CPU backend can build its C++ kernels here."""
    from torch._inductor import config as inductor_config

    cxx = inductor_config.cpp.cxx
    candidates = [c for c in (cxx if isinstance(cxx, (tuple, list)) else (cxx,)) if c] or ["g++"]
    return any(shutil.which(c) for c in candidates)


class _CompiledOrEager:
    """``torch.compile(fn)`` where a C++ compiler is present; otherwise, or when compiling
    fails, ``fn`` itself with one warning (the results are the same up to rounding)."""

    def __init__(self, fn):
        self.fn, self.compiled = fn, None
        if compiler_available():
            # one compiled variant per optimiser shape set: a sweep worker trains many runs in turn,
            # more than dynamo's default of 8 variants per function, after which it stops compiling
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 256)
            self.compiled = torch.compile(fn, fullgraph=True, dynamic=False)
        else:
            warnings.warn("no C++ compiler found for torch.compile: the optimiser update runs in eager mode",
                          RuntimeWarning, stacklevel=3)

    def __call__(self, *args):
        if self.compiled is None:
            return self.fn(*args)
        try:
            return self.compiled(*args)
        except Exception as e:  # the compiler failed before running: nothing was updated yet
            warnings.warn(f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); the "
                          f"optimiser update runs in eager mode", RuntimeWarning, stacklevel=2)
            self.compiled = None
            return self.fn(*args)


class Adagrad:
    """Adagrad with anglepy's warm-up and the weight prior as weight decay (see the module
    docstring); ``ascend(objective)`` does one ascent step."""

    def __init__(self, params, lr: float, warmup: int, eps: float, weight_decay: float = 0.0,
                 compile: bool = False):
        self.params = list(params)
        self.decays = [weight_decay if p.dim() == 2 else 0.0 for p in self.params]  # weights only, not biases
        self.sums = [torch.zeros_like(p) for p in self.params]
        self.lr, self.warmup, self.eps, self.t = lr, warmup, eps, 0
        self.update = _CompiledOrEager(_adagrad_update) if compile else _adagrad_update

    def ascend(self, objective: torch.Tensor) -> None:
        for p in self.params:
            p.grad = None  # autograd then hands over its gradient buffers instead of adding into ours
        (-objective).backward()
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in self.params]
        with torch.no_grad():
            if self.t < self.warmup:  # the accumulator fills, the parameters stay (w - 0 * finite = w)
                _adagrad_update(self.params, grads, self.sums, self.decays, 0.0, self.eps)
            else:
                self.update(self.params, grads, self.sums, self.decays, self.lr, self.eps)
        self.t += 1

    def state_dict(self):
        return {"sums": [s.clone() for s in self.sums], "t": self.t}

    def load_state_dict(self, d):
        if "opt" in d:  # a checkpoint of the torch.optim.Adagrad version (before the fused update)
            sums = [d["opt"]["state"][i]["sum"] for i in range(len(self.params))]
        else:
            sums = d["sums"]
        for s, saved in zip(self.sums, sums):
            s.copy_(saved)
        self.t = d["t"]


# --- the algorithms --------------------------------------------------------------------

class Minibatches:
    """Random minibatches of M indices drawn with replacement (anglepy), binarised per draw
    when dynamic binarisation is on."""

    def __init__(self, X: torch.Tensor, cfg: TrainConfig, rng: torch.Generator):
        self.X, self.M, self.rng = X, cfg.batch_size, rng
        self.dynamic = cfg.binarize == "dynamic"

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return data_mod.binarize_batch(x, self.rng) if self.dynamic else x

    def __next__(self) -> torch.Tensor:
        return self.prepare(self.X.index_select(0, torch.randint(len(self.X), (self.M,), generator=self.rng)))


class AEVB:
    """Algorithm 1: one joint Adagrad ascent step on the SGVB minibatch estimator."""

    metric = "lower bound (SGVB B, L=1)"

    def __init__(self, model: VAE, X: torch.Tensor, cfg: TrainConfig, lr: float, rng: torch.Generator,
                 compile: bool = False):
        self._setup(model, X, cfg, rng, compile)
        self.estimator = get_estimator(cfg.estimator)
        self.opt = self._adagrad(model.parameters(), lr, cfg.adagrad_warmup)

    def _setup(self, model: VAE, X: torch.Tensor, cfg: TrainConfig, rng: torch.Generator, compile: bool) -> None:
        """What every algorithm holds: model, config, RNG, N and its minibatches."""
        self.model, self.cfg, self.rng, self.N, self.compile = model, cfg, rng, len(X), compile
        self.batches = Minibatches(X, cfg, rng)

    def _adagrad(self, params, lr: float, warmup: int) -> Adagrad:
        decay = self.cfg.batch_size / self.N if self.cfg.weight_prior else 0.0  # (M/N) log N(w; 0, I)
        return Adagrad(params, lr, warmup, self.cfg.adagrad_eps, decay, self.compile)

    def step(self) -> tuple[int, float]:
        x = next(self.batches)
        bound = self.estimator(self.model, x, self.cfg.n_samples, self.rng)
        self.opt.ascend(bound.sum())
        return len(x), bound.mean().item()

    def evaluate(self, X: torch.Tensor | None, split: str) -> float | None:
        return None if X is None else lower_bound(self.model, X, "B", seed=1000)

    def state_dict(self):
        return {"opt": self.opt.state_dict()}

    def load_state_dict(self, d):
        self.opt.load_state_dict(d["opt"])


class WakeSleep(AEVB):
    metric = "lower bound (SGVB B, L=1)"

    def __init__(self, model, X, cfg: TrainConfig, lr: float, rng: torch.Generator, compile: bool = False):
        self._setup(model, X, cfg, rng, compile)
        self.wake_opt = self._adagrad(model.decoder_parameters(), lr, cfg.adagrad_warmup)
        self.sleep_opt = self._adagrad(model.encoder_parameters(), lr, cfg.adagrad_warmup)

    def step(self) -> tuple[int, float]:
        model, M = self.model, self.cfg.batch_size
        x = next(self.batches)
        # wake: fit the generative model to (x, z ~ q(z|x))
        with torch.no_grad():
            mu, logvar = model.encode(x)
            z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=self.rng)
        log_joint = model.log_joint(x, z)
        self.wake_opt.ascend(log_joint.sum())
        # sleep: fit the recognition model to dreams (z, x) ~ p(z) p(x|z)
        with torch.no_grad():
            z_dream = torch.randn(M, model.z_dim, generator=self.rng)
            dream = model.decoder_distribution(z_dream)
            if not torch.isfinite(dream.mean).all():  # the wake step diverged: report it, do not dream from NaN
                return len(x), float("nan")
            x_dream = sample_x(dream, self.rng)
        mu, logvar = model.encode(x_dream)
        log_q = Normal(mu, torch.exp(0.5 * logvar)).log_prob(z_dream).sum(-1)
        self.sleep_opt.ascend(log_q.sum())
        return len(x), log_joint.mean().item()

    def state_dict(self):
        return {"wake": self.wake_opt.state_dict(), "sleep": self.sleep_opt.state_dict()}

    def load_state_dict(self, d):
        self.wake_opt.load_state_dict(d["wake"])
        self.sleep_opt.load_state_dict(d["sleep"])


class MCEM(AEVB):
    metric = "mean log p(x, z) of the persistent HMC chains (train only; not a bound)"

    def __init__(self, model, X, cfg: TrainConfig, lr: float, rng: torch.Generator, compile: bool = False):
        self._setup(model, X, cfg, rng, compile)  # its minibatches serve only dynamic binarisation
        self.X = X
        self.z = torch.randn(len(X), model.z_dim, generator=rng)  # chains start at prior draws
        # anglepy's autotune multiplies or divides the step by 1.02 ** (number of chains): capped at
        # 1.25 in 2014 (hmc.py@55f25be), uncapped in 2013 (hmc.py@29d7e2e), where with N chains it jumps
        # by 1.02 ** N (4e8 for N = 1000) and so alternates between two values instead of tuning
        factor = 1.25 if cfg.mcem_step_rule == "capped" else 1.02 ** len(X)
        self.step_size = GlobalStepSize(cfg.mcem_init_step, cfg.mcem_target_accept, factor)
        self.opt = self._adagrad(model.parameters(), lr, cfg.mcem_warmup)
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
            self.opt.ascend(model.log_joint(x[idx], self.z[idx]).sum())
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


ALGORITHM_CLASSES = {"aevb": AEVB, "wake_sleep": WakeSleep, "mcem": MCEM}


def get_algorithm(name: str):
    return ALGORITHM_CLASSES[name]
