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

Both need only ``model.log_joint(x, z)`` and ``model.z_dim`` (and ``model.encode`` for
importance sampling), so they apply to any model, not only ``VAE``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from scipy import special, stats
from torch.distributions import Normal

from .hmc import PerChainStepSize, run_chains


def fit_kde(samples: np.ndarray):
    """Gaussian KDE (scipy) on (n, d) samples with anglepy's 'kde2' bandwidth search.

    Returns a ``logpdf(points (m, d)) -> (m,)`` callable, or None when the samples are
    degenerate (too few distinct points for a covariance).
    """
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
def _best_prior_draws(log_joint, n_chains: int, z_dim: int, n_init: int, generator) -> torch.Tensor:
    """Per chain, the most probable of ``n_init`` prior draws under log p(x, z): chains start
    near their posterior mode instead of spending the burn-in travelling there."""
    best_z, best_lp = None, None
    for _ in range(0, n_init, 32):  # chunks bound the memory of (draws, chains, pixels)
        z = torch.randn(32, n_chains, z_dim, generator=generator)
        lp = log_joint(z)
        i = lp.argmax(0)
        z, lp = z[i, torch.arange(n_chains)], lp[i, torch.arange(n_chains)]
        if best_z is None:
            best_z, best_lp = z, lp
        else:
            better = lp > best_lp
            best_z, best_lp = torch.where(better[:, None], z, best_z), torch.maximum(lp, best_lp)
    return best_z


def hmc_kde_log_likelihood(model, x: torch.Tensor, *, n_samples: int = 50, n_leapfrog: int = 4,
                           n_burnin: int = 100, n_init: int = 256, init_step: float = 0.05,
                           target_accept: float = 0.9,
                           generator: torch.Generator | None = None, batch_size: int = 1000):
    """Appendix-D estimate of log p(x), one value per row of ``x``.

    Returns (log_px, variance, info): info counts the degenerate chains (samples too
    concentrated for a KDE; a diagonal Gaussian fit is used instead) and the mean acceptance.
    Chains start at the best of ``n_init`` prior draws; the step size is adapted per chain
    during burn-in only, so the kept samples come from a fixed, valid HMC kernel.
    """
    out_ll, out_var, degenerate, acc_all = [], [], 0, []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        log_joint = lambda z: model.log_joint(xb, z)  # noqa: E731
        z0 = _best_prior_draws(log_joint, len(xb), model.z_dim, n_init, generator)
        step = PerChainStepSize(len(xb), init_step, target_accept)
        _, z, _ = run_chains(log_joint, z0, n_burnin, n_leapfrog, step, adapt=True, generator=generator, keep=False)
        samples, _, acc = run_chains(log_joint, z, n_samples, n_leapfrog, step, adapt=False, generator=generator)
        acc_all.append(acc)
        samples = samples.transpose(0, 1)  # (B, S, Z)
        half = n_samples // 2
        with torch.no_grad():
            lj = model.log_joint(xb, samples[:, half:].transpose(0, 1)).transpose(0, 1).double().numpy()  # (B, S')
        zs = samples.double().numpy()
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
    out = []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        mu, logvar = model.encode(xb)
        q = Normal(mu, torch.exp(0.5 * logvar))
        acc = torch.full((len(xb),), -math.inf, dtype=torch.float64)
        for k in range(0, n_samples, chunk):
            kk = min(chunk, n_samples - k)
            z = mu + q.scale * torch.randn((kk, *mu.shape), generator=generator)
            log_w = (model.log_joint(xb, z) - q.log_prob(z).sum(-1)).double()  # (kk, B)
            acc = torch.logaddexp(acc, torch.logsumexp(log_w, 0))
        out.append(acc - math.log(n_samples))
    return torch.cat(out).numpy()


def evaluate_checkpoint(name_or_path, *, n: int = 1000, is_samples: int = 5000, seed: int = 0, threads: int = 1,
                        quadrature_n: int = 0, data_dir=None, out=None, log=print) -> dict:
    """Both estimators on the first ``n`` train and test points of a trained run; writes JSON.

    With ``quadrature_n`` (latents of up to 3 dimensions) the first ``quadrature_n`` points of
    each split are also integrated by quadrature, and each estimator's error on them reported.
    """
    from .exact import quadrature_log_likelihood

    from . import data as data_mod
    from .train import RESULTS_DIR, atomic_write_json, load_trained, provenance

    torch.set_num_threads(threads)
    session = provenance()  # the code this process runs is the code at its start
    model, ckpt = load_trained(name_or_path)
    cfg = ckpt["config"]
    name = Path(str(name_or_path)).stem
    result = {"run": name, "config": cfg, "samples_seen": ckpt["run"]["samples_seen"], "n": n, "seed": seed,
              "hmc_kde": {"n_samples": 50, "n_leapfrog": 4, "n_burnin": 100, "n_init": 256}, "is_samples": is_samples}
    for split in ("train", "test"):
        X = data_mod.load_dataset(cfg["dataset"], split, data_dir=data_dir, n_train=cfg["n_train"],
                                  binarize="static" if cfg["binarize"] == "static" else None)[:n]
        if cfg["binarize"] == "dynamic":  # score one seeded binarisation, as the training curve does
            X = data_mod.binarize_batch(X, torch.Generator().manual_seed(4321))
        g = torch.Generator().manual_seed(seed)
        t0 = time.perf_counter()
        ll, var, info = hmc_kde_log_likelihood(model, X, generator=g)
        t_hmc = time.perf_counter() - t0
        entry = {"hmc_kde": float(ll.mean()), "hmc_kde_sem": float(ll.std() / math.sqrt(len(ll))),
                 "hmc_kde_mean_variance": float(var.mean()), "hmc_kde_seconds": t_hmc, **info}
        if is_samples and model.has_encoder:
            t0 = time.perf_counter()
            iw = importance_log_likelihood(model, X, is_samples, generator=g)
            entry.update({"importance": float(iw.mean()), "importance_seconds": time.perf_counter() - t0})
            entry["importance_per_point"] = iw.tolist()
        entry["hmc_kde_per_point"] = ll.tolist()
        if quadrature_n and model.z_dim <= 3:
            t0 = time.perf_counter()
            exact = quadrature_log_likelihood(model, X[:quadrature_n]).numpy()
            q = {"n": quadrature_n, "seconds": time.perf_counter() - t0, "exact_mean": float(exact.mean()),
                 "hmc_kde_mean": float(ll[:quadrature_n].mean()),
                 "hmc_kde_mean_abs_error": float(np.abs(ll[:quadrature_n] - exact).mean())}
            if "importance" in entry:
                q.update({"importance_mean": float(iw[:quadrature_n].mean()),
                          "importance_mean_abs_error": float(np.abs(iw[:quadrature_n] - exact).mean())})
            entry["quadrature"] = q
        result[split] = entry
        log(f"{name} {split}: " + str({k: v for k, v in entry.items() if not k.endswith("per_point")}))
    result["quadrature_n"] = quadrature_n
    result["provenance"] = session
    atomic_write_json(Path(out) if out else RESULTS_DIR / f"{name}_likelihood.json", result)
    return result
