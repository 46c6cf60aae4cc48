"""Marginal log-likelihood log p(x) of a trained generative model (Figure 3, Appendix D).

Appendix D (the paper's estimator, as Kingma's anglepy `hmc.ll_estimator` ran it):
  1. draw L samples z_l ~ p(z|x) with HMC (chains start at the best of 256 prior draws,
     100 burn-in transitions adapt a step per chain toward 90% acceptance, then one sample per
     transition with the step fixed, 4 leapfrog steps each; L = 50 per datapoint, Appendix E);
  2. fit a density q(z) to the first half: scipy's Gaussian KDE, its bandwidth factor chosen
     among Scott * exp((i - 5) / 2), i = 0..9, by the held-out log-density of half of
     those samples, then refit on all of them;
  3. with the second half, importance-sample 1/p(x):
        1/p(x) ~ (1/L') sum_l q(z_l) / (p(z_l) p(x|z_l))
     i.e. log p(x) = -logmeanexp_l [log q(z_l) - log p(x, z_l)].
  The variance of log p(x) is estimated by the delta method, Var[w] / (L' mean(w)^2),
  w_l = q(z_l) / p(x, z_l).

Importance sampling with the encoder as proposal (Burda et al.'s IWAE bound):
        log p(x) ~ logmeanexp_k [log p(x, z_k) - log q(z_k|x)],  z_k ~ q(z|x)
  a stochastic lower bound that tightens as K grows.

Annealed importance sampling (AIS; Neal 2001, as Wu et al. 2017 evaluate decoder-based models):
K chains per datapoint start at z_0 ~ p(z) = N(0, I) and pass through f_t(z) = p(z) p(x|z)^beta_t,
0 = beta_0 < ... < beta_T = 1 (a sigmoidal schedule), one HMC transition leaving f_t invariant each:
        log p(x) ~ logmeanexp_k sum_t (beta_t - beta_{t-1}) log p(x|z_{k,t-1})
  a stochastic lower bound (E[w] = p(x)). Bidirectional Monte Carlo (Grosse et al. 2015) runs
  the same chain backwards from an exact posterior sample of simulated data, z* ~ p(z),
  x ~ p(x|z*), for a stochastic upper bound; the gap between the two bounds the error of AIS
  on simulated data. ``likelihood_studies.ais_calibration`` measures AIS against quadrature on Figure 3's models.

All of them need only ``model.log_joint(x, z)`` and ``model.z_dim`` (and ``model.encode`` for
importance sampling), so they apply to any model, not only ``VAE``.

Their accuracy against the truth is measured in ``likelihood_studies`` (notebook 07).
Cost model: Appendix D runs (n_burnin + L) HMC transitions of n_leapfrog + 1 gradient
evaluations each, plus one KDE per point (10 bandwidths tried); importance sampling runs one
encoder pass and K decoder passes per point.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import special, stats
from torch.distributions import Normal

from . import checks
from .device import generator_for, model_device, seeded_generator
from .hmc import PerChainStepSize, hmc_step, run_chains
from .models import sample_x

# Appendix D as the paper ran it (Appendix E: L = 50 posterior samples per datapoint, 4 leapfrog steps;
# anglepy's 100 burn-in transitions from the best of 256 prior draws): every caller uses this block
APPENDIX_D = {"n_samples": 50, "n_leapfrog": 4, "n_burnin": 100, "n_init": 256}
PAPER_L = APPENDIX_D["n_samples"]


def fit_kde(samples: np.ndarray):
    """Gaussian KDE (scipy) on (n, d) samples with anglepy's 'kde2' bandwidth search.

    Returns a ``logpdf(points (m, d)) -> (m,)`` callable, or None when the samples are
    degenerate (too few distinct points for a covariance).
    """
    if not isinstance(samples, np.ndarray) or samples.ndim != 2 or len(samples) < 4 or not np.isfinite(samples).all():
        raise ValueError(f"samples of shape {getattr(samples, 'shape', type(samples).__name__)} are not allowed: expected "
                         f"a finite (n, d) numpy array with n >= 4 (half fits the density, half scores it)")
    n, d = samples.shape
    half = n // 2
    try:
        scott = half ** (-1.0 / (d + 4))
        best, best_score = None, -np.inf
        for i in range(10):
            factor = scott * math.exp((i - 5) / 2)
            kde = stats.gaussian_kde(samples[:half].T, bw_method=factor)
            score = kde.logpdf(samples[half:].T).mean()
            if score > best_score:
                best, best_score = factor, score
        # Scott's factor scales with n^(-1/(d+4)); carry the chosen multiple over to all n samples
        kde = stats.gaussian_kde(samples.T, bw_method=best * (n / half) ** (-1.0 / (d + 4)))
        return lambda pts: kde.logpdf(pts.T)
    except (np.linalg.LinAlgError, ValueError):
        return None


def _diag_gaussian_logpdf(samples: np.ndarray):
    mu, sd = samples.mean(0), np.maximum(samples.std(0), 1e-3)
    return lambda pts: stats.norm.logpdf(pts, mu, sd).sum(-1)


@torch.no_grad()
def _best_prior_draws(log_joint, n_chains: int, z_dim: int, n_init: int, generator, device) -> torch.Tensor:
    """Per chain, the most probable of ``n_init`` prior draws under log p(x, z): chains start
    near their posterior mode instead of spending the burn-in travelling there."""
    best_z, best_lp = None, None
    for _ in range(0, n_init, 32):  # chunks bound the memory of (draws, chains, pixels)
        z = torch.randn(32, n_chains, z_dim, generator=generator, device=device)
        lp = log_joint(z)
        i, chains = lp.argmax(0), torch.arange(n_chains, device=device)
        z, lp = z[i, chains], lp[i, chains]
        if best_z is None:
            best_z, best_lp = z, lp
        else:
            better = lp > best_lp
            best_z, best_lp = torch.where(better[:, None], z, best_z), torch.maximum(lp, best_lp)
    return best_z


def hmc_kde_log_likelihood(model, x: torch.Tensor, *, n_samples: int = APPENDIX_D["n_samples"],
                           n_leapfrog: int = APPENDIX_D["n_leapfrog"], n_burnin: int = APPENDIX_D["n_burnin"],
                           n_init: int = APPENDIX_D["n_init"], init_step: float = 0.05,
                           target_accept: float = 0.9,
                           generator: torch.Generator | None = None, batch_size: int = 1000):
    """Appendix-D estimate of log p(x), one value per row of ``x``.

    Returns (log_px, variance, info): info counts the degenerate chains (samples too
    concentrated for a KDE; a diagonal Gaussian fit is used instead) and the mean acceptance.
    Chains start at the best of ``n_init`` prior draws; the step size is adapted per chain
    during burn-in only, so the kept samples come from a fixed, valid HMC kernel.
    """
    checks.model("model", model, ("log_joint",))
    checks.datapoints("x", x, model)
    checks.generator("generator", generator)
    checks.at_least("n_samples", n_samples, 4)  # half fits the density, half enters the estimate
    checks.at_least("n_leapfrog", n_leapfrog)
    checks.at_least("n_burnin", n_burnin, 0)
    checks.at_least("n_init", n_init)
    checks.at_least("batch_size", batch_size)
    checks.positive("init_step", init_step)
    checks.check("target_accept", target_accept, float, lambda v: 0 < v < 1, "a number in (0, 1)")
    out_ll, out_var, degenerate, acc_all = [], [], 0, []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        log_joint = lambda z: model.log_joint(xb, z)  # noqa: E731
        z0 = _best_prior_draws(log_joint, len(xb), model.z_dim, n_init, generator, x.device)
        step = PerChainStepSize(len(xb), init_step, target_accept, device=x.device)
        _, z, _ = run_chains(log_joint, z0, n_burnin, n_leapfrog, step, adapt=True, generator=generator, keep=False)
        samples, _, acc = run_chains(log_joint, z, n_samples, n_leapfrog, step, adapt=False, generator=generator)
        acc_all.append(acc)
        samples = samples.transpose(0, 1)  # (B, S, Z)
        half = n_samples // 2
        with torch.no_grad():
            lj = model.log_joint(xb, samples[:, half:].transpose(0, 1)).transpose(0, 1).double().cpu().numpy()  # (B, S')
        zs = samples.double().cpu().numpy()
        for i in range(len(xb)):
            fit, held = zs[i, :half], zs[i, half:]
            logq = fit_kde(fit) if len(np.unique(fit, axis=0)) > model.z_dim + 1 else None
            if logq is None:
                degenerate += 1
                logq = _diag_gaussian_logpdf(fit)
            log_w = logq(held) - lj[i]  # log [q(z) / p(x, z)]
            out_ll.append(math.log(len(log_w)) - special.logsumexp(log_w))
            w = np.exp(log_w - log_w.max())
            out_var.append(w.var() / (len(w) * w.mean() ** 2))
    info = {"n_degenerate": degenerate, "acceptance": torch.cat(acc_all).mean().item()}
    return np.array(out_ll), np.array(out_var), info


@torch.no_grad()
def importance_log_likelihood(model, x: torch.Tensor, n_samples: int = 5000, chunk: int = 500,
                              generator: torch.Generator | None = None, batch_size: int = 500) -> np.ndarray:
    """log (1/K) sum_k p(x, z_k) / q(z_k|x), z_k ~ q(z|x); one value per row of ``x``."""
    checks.model("model", model, ("encode", "log_joint"))
    checks.datapoints("x", x, model)
    checks.generator("generator", generator)
    checks.at_least("n_samples", n_samples)
    checks.at_least("chunk", chunk)
    checks.at_least("batch_size", batch_size)
    if not model.has_encoder:
        raise ValueError("importance sampling needs an encoder q(z|x); this model has none (Monte Carlo EM): "
                         "use hmc_kde_log_likelihood")
    out = []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        mu, logvar = model.encode(xb)
        q = Normal(mu, torch.exp(0.5 * logvar))
        acc = torch.full((len(xb),), -math.inf, dtype=torch.float64, device=x.device)
        for k in range(0, n_samples, chunk):
            kk = min(chunk, n_samples - k)
            z = mu + q.scale * torch.randn((kk, *mu.shape), generator=generator, device=mu.device)
            log_w = (model.log_joint(xb, z) - q.log_prob(z).sum(-1)).double()  # (kk, B)
            acc = torch.logaddexp(acc, torch.logsumexp(log_w, 0))
        out.append(acc - math.log(n_samples))
    return torch.cat(out).cpu().numpy()


# --- annealed importance sampling and bidirectional Monte Carlo ---------------------------------

AIS_SCHEDULES = ("sigmoid", "linear")


def ais_schedule(num_steps: int, schedule: str = "sigmoid", delta: float = 4.0) -> torch.Tensor:
    """The inverse temperatures 0 = beta_0 < beta_1 < ... < beta_T = 1 (float64, T + 1 values).

    ``"sigmoid"`` (Grosse et al. 2015; Wu et al. 2017): beta_t = (s_t - s_0) / (s_T - s_0) with
    s_t = sigmoid(delta (2t/T - 1)): dense steps near both ends, where log p(x|z)^beta changes
    fastest relative to the distribution's width. ``"linear"``: beta_t = t/T.
    """
    checks.at_least("num_steps", num_steps)
    checks.check("schedule", schedule, str, lambda v: v in AIS_SCHEDULES, f"one of {', '.join(AIS_SCHEDULES)}")
    checks.positive("delta", delta)
    t = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    if schedule == "linear":
        return t
    s = torch.sigmoid(delta * (2 * t - 1))
    return (s - s[0]) / (s[-1] - s[0])


def _check_model(model) -> None:
    if not (callable(getattr(model, "log_joint", None)) and checks.is_kind(getattr(model, "z_dim", None), int)):
        raise TypeError(f"model={type(model).__name__} is not allowed: expected a model with log_joint(x, z) and an "
                        f"integer z_dim")


def check_ais_settings(num_steps=1000, num_chains=24, n_leapfrog=2, seed=0, schedule="sigmoid", delta=4.0,
                       tune_chains=4, init_step=0.5, target_accept=0.65, adapt_rate=0.5, batch_size=100) -> None:
    """AIS settings refused in one line when out of range; the defaults are ``ais_log_likelihood``'s."""
    checks.at_least("num_steps", num_steps)
    checks.at_least("num_chains", num_chains)
    checks.at_least("n_leapfrog", n_leapfrog)
    checks.seed("seed", seed)
    checks.check("schedule", schedule, str, lambda v: v in AIS_SCHEDULES, f"one of {', '.join(AIS_SCHEDULES)}")
    checks.positive("delta", delta)
    checks.at_least("tune_chains", tune_chains)
    checks.positive("init_step", init_step)
    checks.check("target_accept", target_accept, float, lambda v: 0 < v < 1, "a number in (0, 1)")
    checks.positive("adapt_rate", adapt_rate)
    checks.at_least("batch_size", batch_size)


def _log_prior(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I), summed over the last axis."""
    return -0.5 * (z * z).sum(-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


def _anneal(model, x: torch.Tensor, z: torch.Tensor, betas: torch.Tensor, n_leapfrog: int, generator, *,
            steps: torch.Tensor | None = None, adapt: PerChainStepSize | None = None):
    """One AIS pass along ``betas`` (increasing: forward; decreasing: reverse) of the chains
    ``z`` (K, B, Z) for the datapoints ``x`` (B, D): log weights (K, B), float64,
    sum_t (beta_t - beta_{t-1}) log p(x|z_{t-1}); the mean HMC acceptance probability (B,); and
    the log step sizes used by the T - 1 transitions, (T - 1, K, B).

    Transition t (at beta_t, t = 1..T-1; the one after beta_T is skipped: no weight depends on
    it) takes its step from ``steps`` (T - 1, B), one per datapoint, fixed in advance; or, when
    tuning, from ``adapt`` (one per chain, adapted after every transition). The K x B chains
    are one batch of HMC chains: row k B + b is chain k of datapoint b.
    """
    K, B, Z = z.shape

    def log_lik(zf):  # log p(x|z) = log p(x, z) - log p(z) for flat chains (K B, Z) -> (K B,)
        zz = zf.reshape(K, B, Z)
        return (model.log_joint(x, zz) - _log_prior(zz)).reshape(-1)

    z = z.reshape(K * B, Z)
    T = len(betas) - 1
    log_w = torch.zeros(K * B, dtype=torch.float64, device=z.device)
    acc = torch.zeros(K * B, dtype=torch.float64, device=z.device)
    used = torch.zeros(max(T - 1, 0), K * B, device=z.device)
    with torch.no_grad():
        ll = log_lik(z)
    for t in range(1, T + 1):
        log_w += (betas[t] - betas[t - 1]) * ll.double()
        if t == T:
            break
        beta = float(betas[t])
        step = adapt.value if adapt is not None else steps[t - 1].repeat(K)
        used[t - 1] = step.log()
        res = hmc_step(lambda zf: _log_prior(zf) + beta * log_lik(zf), z, step, n_leapfrog, generator)
        if adapt is not None:
            adapt.update(res)
        z = res.z
        acc += res.accept_prob.double()
        # one decoder pass for the next weight: exact, where recovering log p(x|z) from HMC's
        # log f_t = log p(z) + beta_t log p(x|z) would divide float32 rounding by a small beta
        with torch.no_grad():
            ll = log_lik(z)
    return log_w.reshape(K, B), (acc / max(T - 1, 1)).reshape(K, B).mean(0), used.reshape(-1, K, B)


def _tune_steps(model, x, betas, n_leapfrog, generator, *, tune_chains, init_step, target_accept, adapt_rate):
    """The step size of every transition, per datapoint (T - 1, B), from a pilot forward pass
    whose ``tune_chains`` chains adapt one step each toward ``target_accept``: the geometric
    mean over the pilot chains of the step each used at that transition. The pilot's weights
    are discarded; see ``ais_log_likelihood`` for why the estimate needs fixed steps."""
    z0 = torch.randn(tune_chains, len(x), model.z_dim, generator=generator, device=x.device)
    adapt = PerChainStepSize(tune_chains * len(x), init_step, target_accept, adapt_rate, device=x.device)
    _, _, used = _anneal(model, x, z0, betas, n_leapfrog, generator, adapt=adapt)
    return used.mean(1).exp()


def _ais_chunks(model, x: torch.Tensor, *, num_steps, num_chains, n_leapfrog, schedule, delta, tune_chains,
                init_step, target_accept, adapt_rate, batch_size, generator, z_post: torch.Tensor | None = None):
    """AIS over chunks of ``batch_size`` datapoints: per chunk a pilot pass fixes the steps
    (``_tune_steps``), then forward AIS from fresh prior draws and, with ``z_post`` (B, Z) exact
    posterior samples, reverse AIS from them with the same steps in reverse order.
    Returns (forward log weights (K, B), reverse log weights (K, B) or None, acceptance {pass: (B,)})."""
    betas = ais_schedule(num_steps, schedule, delta).to(x.device)
    fwd, rev, acc = [], [], {"forward": [], "reverse": []}
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        steps = _tune_steps(model, xb, betas, n_leapfrog, generator, tune_chains=tune_chains, init_step=init_step,
                            target_accept=target_accept, adapt_rate=adapt_rate)
        z0 = torch.randn(num_chains, len(xb), model.z_dim, generator=generator, device=x.device)
        w, a, _ = _anneal(model, xb, z0, betas, n_leapfrog, generator, steps=steps)
        fwd.append(w)
        acc["forward"].append(a)
        if z_post is not None:
            z0 = z_post[start:start + batch_size].float().expand(num_chains, -1, -1)
            w, a, _ = _anneal(model, xb, z0, betas.flip(0), n_leapfrog, generator, steps=steps.flip(0))
            rev.append(w)
            acc["reverse"].append(a)
    return (torch.cat(fwd, 1), torch.cat(rev, 1) if rev else None,
            {k: torch.cat(v) for k, v in acc.items() if v})


def ais_log_likelihood(model, x: torch.Tensor, *, num_steps: int = 1000, num_chains: int = 24, n_leapfrog: int = 2,
                       seed: int = 0, schedule: str = "sigmoid", delta: float = 4.0, tune_chains: int = 4,
                       init_step: float = 0.5, target_accept: float = 0.65, adapt_rate: float = 0.5,
                       batch_size: int = 100) -> torch.Tensor:
    """Annealed importance sampling (AIS) estimate of log p(x), one value per row of ``x`` (B,).

    Neal (2001), "Annealed importance sampling"; the evaluation protocol of Wu et al. (2017),
    "On the quantitative analysis of decoder-based generative models". For each datapoint x,
    intermediate unnormalised densities between the prior and the posterior,
        f_t(z) = p(z) p(x|z)^beta_t,   0 = beta_0 < beta_1 < ... < beta_T = 1   (``ais_schedule``),
    so that f_0 = p(z) = N(0, I) (normalised) and f_T = p(x, z) (normalising constant p(x)).
    Each of K chains starts at z_0 ~ p(z) and, for t = 1..T,
        log w += log f_t(z_{t-1}) - log f_{t-1}(z_{t-1}) = (beta_t - beta_{t-1}) log p(x|z_{t-1}),
        z_t ~ T_t(. | z_{t-1}),   an HMC transition that leaves f_t invariant.
    E[w] = p(x) (Neal 2001), so the estimate log (1/K) sum_k w_k is, by Jensen's inequality, a
    stochastic lower bound: E[log p^(x)] <= log p(x), with a gap that shrinks as T (and K) grow.

    HMC (``hmc.hmc_step``): ``n_leapfrog`` leapfrog steps per transition; step sizes fixed in
    advance, one per datapoint and transition. E[w] = p(x) needs each T_t to be a fixed kernel
    given the past of its chain; a step adapted from the chain's own acceptances is not (chains
    that sit at high density see more rejections, take smaller steps and stay there), and on a
    linear-Gaussian model (x_dim 10, z_dim 3) it put the estimate 0.17 nat above log p(x), at
    T = 200 as at T = 1000.
    So a pilot pass of ``tune_chains`` chains per datapoint, each adapting its step after every
    transition toward ``target_accept`` (0.65, Wu et al.) in log space at ``adapt_rate``
    (``hmc.PerChainStepSize``), records the steps; the K chains of the estimate then use the
    geometric mean of the pilot's steps at each transition, and the pilot's weights are discarded.

    The chains of ``batch_size`` datapoints run as one batch (memory ~ K x batch_size x D). All
    randomness comes from one ``torch.Generator`` seeded with ``seed``: the same arguments give
    the same result. Cost per datapoint: (K + tune_chains) (T - 1) (n_leapfrog + 1) gradient
    evaluations of log p(x, z), plus (K + tune_chains) T forward passes for the weights.

    The defaults are the settings ``ais_calibration`` chose for Figure 3's Nz = 3 MNIST models
    (mean |error| 0.06-0.17 nat against quadrature on every model and split, about 0.8 s per
    datapoint at one thread): there, more intermediate distributions with fewer leapfrog steps
    beat Wu et al.'s 10 leapfrog steps at equal cost (AEVB, N = 1000, 24 points, K = 8: T = 1000
    with 2 steps 0.23 nat, T = 250 with 11 steps 0.65 nat): the spacing of the betas, not the
    mixing of the chains, limits the accuracy there.

    Needs only ``model.log_joint(x (B, D), z (S, B, Z)) -> (S, B)`` and ``model.z_dim``; the
    prior must be N(0, I) (log p(x|z) is log p(x, z) - log N(z; 0, I)).
    """
    _check_model(model)
    check_ais_settings(num_steps, num_chains, n_leapfrog, seed, schedule, delta, tune_chains, init_step,
                        target_accept, adapt_rate, batch_size)
    checks.datapoints("x", x, model)
    checks.finite("x", x)
    g = generator_for(seed, x)
    log_w, _, _ = _ais_chunks(model, x, num_steps=num_steps, num_chains=num_chains, n_leapfrog=n_leapfrog,
                              schedule=schedule, delta=delta, tune_chains=tune_chains, init_step=init_step,
                              target_accept=target_accept, adapt_rate=adapt_rate, batch_size=batch_size, generator=g)
    return torch.logsumexp(log_w, 0) - math.log(num_chains)


@torch.no_grad()
def _simulate(model, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(x (n, D), z (n, Z)) drawn from the model's joint: z ~ N(0, I), x ~ p(x|z) (a ``VAE``'s
    ``decoder_distribution``); each z is then an exact draw from p(z|x) of its x."""
    if not callable(getattr(model, "decoder_distribution", None)):
        raise TypeError(f"model={type(model).__name__} is not allowed without data: bdmc simulates x ~ p(x|z) with "
                        f"model.decoder_distribution; pass data=(x, z) drawn from the model's joint instead")
    z = torch.randn(n, model.z_dim, generator=generator, device=generator.device)
    return sample_x(model.decoder_distribution(z), generator), z


def bdmc(model, n: int = 100, *, data: tuple[torch.Tensor, torch.Tensor] | None = None, num_steps: int = 1000,
         num_chains: int = 24, n_leapfrog: int = 2, seed: int = 0, schedule: str = "sigmoid", delta: float = 4.0,
         tune_chains: int = 4, init_step: float = 0.5, target_accept: float = 0.65, adapt_rate: float = 0.5,
         batch_size: int = 100) -> dict:
    """Bidirectional Monte Carlo (Grosse, Ghahramani & Adams 2015, "Sandwiching the marginal
    likelihood using bidirectional Monte Carlo"; Wu et al. 2017): stochastic lower and upper
    bounds on log p(x) for data simulated from the model, whose gap bounds the error of AIS.

    Simulated data: z* ~ p(z), x ~ p(x|z*) (``n`` pairs; or ``data=(x, z*)`` drawn from the
    model's joint by the caller, ``n`` then unused), so z* is an exact sample of p(z|x). Then
      * forward AIS (``ais_log_likelihood``, the same settings) gives L(x), E[L] <= log p(x);
      * reverse AIS runs the same transitions backwards, beta from 1 to 0, from z_T = z* (all
        K chains of x start there):
            log w_rev = sum_{t=T..1} (beta_{t-1} - beta_t) log p(x|z_t),  z_{t-1} ~ T_t(.|z_t),
        with E[w_rev] = Z_0 / Z_T = 1/p(x), so U(x) = -log (1/K) sum_k w_rev,k has
        E[U] >= log p(x) (Jensen): a stochastic upper bound.
    The gap U - L bounds the expected error of either bound on simulated data; Grosse et al.
    and Wu et al. use it as a proxy for the error of AIS on real data, which is fair when real
    data resemble the model's own samples. Both directions use the steps of one pilot pass
    (``ais_log_likelihood``), the reverse in reverse order.

    Returns {"lower": (n,), "upper": (n,) float64 tensors, "gap": mean(U - L), "gap_sem",
    "acceptance_forward", "acceptance_reverse", "x", "z"}. One generator seeded with ``seed``
    draws the data, then runs the pilot, forward and reverse chains.
    """
    _check_model(model)
    check_ais_settings(num_steps, num_chains, n_leapfrog, seed, schedule, delta, tune_chains, init_step,
                        target_accept, adapt_rate, batch_size)
    if data is None:
        checks.at_least("n", n)
        g = seeded_generator(seed, model_device(model))
        x, z = _simulate(model, n, g)
    else:
        if not (isinstance(data, (tuple, list)) and len(data) == 2):
            raise TypeError(f"data of type {type(data).__name__} is not allowed: expected a pair (x (B, D), z (B, Z))")
        x, z = data
        checks.datapoints("data[0] (x)", x, model)
        checks.finite("data[0] (x)", x)
        if not (isinstance(z, torch.Tensor) and tuple(z.shape) == (len(x), model.z_dim)):
            shape = tuple(z.shape) if hasattr(z, "shape") else type(z).__name__
            raise ValueError(f"data[1] (z) of shape {shape} is not allowed: expected ({len(x)}, {model.z_dim}), "
                             f"one latent per row of x")
        checks.finite("data[1] (z)", z)
        g = seeded_generator(seed, x.device)
    log_w, log_w_rev, acc = _ais_chunks(model, x, num_steps=num_steps, num_chains=num_chains, n_leapfrog=n_leapfrog,
                                        schedule=schedule, delta=delta, tune_chains=tune_chains, init_step=init_step,
                                        target_accept=target_accept, adapt_rate=adapt_rate, batch_size=batch_size,
                                        generator=g, z_post=z)
    lower = torch.logsumexp(log_w, 0) - math.log(num_chains)
    upper = -(torch.logsumexp(log_w_rev, 0) - math.log(num_chains))
    gap = (upper - lower).cpu().numpy()
    return {"lower": lower, "upper": upper, "gap": float(gap.mean()),
            "gap_sem": float(gap.std(ddof=1) / math.sqrt(len(gap))) if len(gap) > 1 else None,
            "acceptance_forward": float(acc["forward"].mean()), "acceptance_reverse": float(acc["reverse"].mean()),
            "x": x, "z": z}


# --- accuracy against exact log p(x) (notebook 07) ---------------------------------------------
