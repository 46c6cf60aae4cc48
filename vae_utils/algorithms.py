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
AEVB with estimator B goes further: ``sgvb_b_ascent`` is the whole step (forward, gradient
written out by hand, update) as one function, so the compiler fuses all of it.

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
With MNIST's Bernoulli decoder each phase is one function with its gradient written out
(``wake_ascent``, ``sleep_ascent``; ``gradient_of``), compiled on long runs: the autograd step's
draws in its order and its arithmetic up to rounding (docs/performance.md has its speed).

Monte Carlo EM (Appendix E; anglepy ``step_batch_mcem``): no encoder. Persistent chains
z_i ~ p_theta(z|x_i), one per training point, initialised from the prior. One iteration:
    E-step: one HMC transition of every chain, 10 leapfrog steps, a global step size tuned
            toward 90% acceptance (``hmc.GlobalStepSize``), on log p(z) + log p(x|z);
    M-step: 5 Adagrad steps on  sum_{i=1..N} log p_theta(x_i, z_i) + log p(theta),
            each on the whole training set with the full prior (wzoptim.py@55f25be:
            ``for _ in range(m_steps): dostep_m(w, z_mcmc)``; the paper: "not an on-line algorithm").
"Training samples evaluated" per iteration: every gradient evaluation, (L + 1) N in the E-step
(L leapfrog steps and the first gradient) + 5 N in the M-step; the paper does not say how it
counted (``docs/fidelity.md`` weighs the readings). ``mcem_m_step="minibatch"`` is our earlier
on-line variant: 5 Adagrad steps on  sum_{i in batch} log p_theta(x_i, z_i) + (M/N) log p(theta),
minibatches of M taken in order, counted as N + 5 M per iteration.
"""

from __future__ import annotations

import math
import os
import shutil
import warnings

import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Normal

from . import data as data_mod
from .config import TrainConfig, written_by_hand
from .device import moved
from .estimators import get_estimator, lower_bound
from .hmc import GlobalStepSize, hmc_step
from .models import VAE, sample_x


# --- the optimiser ---------------------------------------------------------------------

def _adagrad_update(params, grads, sums, decays, lr: float, eps: float) -> None:
    """torch.optim.Adagrad's arithmetic (weight decay, then s += g^2, w -= lr g / (sqrt s + eps))."""
    for w, g, s, decay in zip(params, grads, sums, decays):
        if decay:
            # not g.add(w, alpha=decay): torch 2.13's inductor turns mm(...).add(w, alpha=c) into
            # addmm(w, ...) and drops c (pytorch/pytorch#167313), which broke the compiled AEVB step
            g = g + decay * w
        s.addcmul_(g, g)
        w.addcdiv_(g, s.sqrt().add_(eps), value=-lr)


def _adagrad_update_plain(params, grads, sums, decays, lr, eps: float) -> None:
    """The same update in plain tensor operations, for runs batched with ``torch.func.vmap`` (which
    has batching rules for these, not for addcmul_/addcdiv_); ``lr`` and a decay may be one value
    per run. Equal to ``_adagrad_update`` up to rounding."""
    for w, g, s, decay in zip(params, grads, sums, decays):
        if isinstance(decay, torch.Tensor) or decay:
            g = g + decay * w
        s.add_(g * g)
        w.sub_(lr * g / (s.sqrt() + eps))


def compiler_available() -> bool:
    """Whether torch.compile's CPU backend can build its C++ kernels here."""
    from torch._inductor import config as inductor_config

    cxx = inductor_config.cpp.cxx
    candidates = [c for c in (cxx if isinstance(cxx, (tuple, list)) else (cxx,)) if c] or ["g++"]
    return any(shutil.which(c) for c in candidates)


class _CompiledOrEager:
    """``torch.compile(fn)`` where a C++ compiler is present; otherwise, or when compiling
    fails, ``fn`` itself with one warning (the results are the same up to rounding)."""

    def __init__(self, fn, options: dict | None = None):
        self.fn, self.compiled = fn, None
        if compiler_available():
            # one compiled variant per optimiser shape set: a sweep worker trains many runs in turn,
            # more than dynamo's default of 8 variants per function, after which it stops compiling
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 256)
            self.compiled = torch.compile(fn, fullgraph=True, dynamic=False, options=options)
        else:
            warnings.warn("no C++ compiler found for torch.compile: the optimiser update runs in eager mode",
                          RuntimeWarning, stacklevel=3)

    def __call__(self, *args):
        if self.compiled is None:
            return self.fn(*args)
        try:
            return self.compiled(*args)
        except Exception as e:  # the compiler failed before running: nothing was updated yet
            if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
                raise  # inside a CUDA graph capture an eager fallback would corrupt the capture: CapturedStep reports it
            warnings.warn(f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); the "
                          f"optimiser update runs in eager mode", RuntimeWarning, stacklevel=2)
            self.compiled = None
            return self.fn(*args)


class CapturedStep:
    """A step on a CUDA GPU as one captured CUDA graph: every kernel of ``body`` (the minibatch
    gather, binarisation, noise, forward, gradient and Adagrad update) launched at once, where
    eagerly each is its own launch and launches, not arithmetic, are what a 784-500-20 step costs.

    The graph's static buffers are the run's own tensors (weights, accumulators, training data),
    updated in place, and the run's generators, registered with the graph so that every replay
    draws the next minibatch and noise as an eager step would. The first ``WARM_UP`` calls run
    ``body`` eagerly on a side stream (real steps, during which cuBLAS, the allocator and
    ``torch.compile`` settle); the next captures it (capturing runs nothing) and replays it, and
    every later call replays it. ``body`` returns a tensor, the graph's output, overwritten by
    each replay. A capture that fails is reported in one line (the run's checkpoint is kept):
    AEVB_CUDA_GRAPHS=0 runs the step eagerly instead. A captured step's objective stays on the GPU:
    the training loop reads them in batches (``train.READ_EVERY_STEPS``), so that the CPU does not
    wait for the GPU at every step."""

    WARM_UP = 3

    def __init__(self, body, generators, feed=None):
        self.body, self.graph, self.out, self.calls, self.feed = body, None, None, 0, feed
        generators = [generators] if isinstance(generators, torch.Generator) else list(generators)
        self.generators = [g for g in generators if g.device.type == "cuda"]  # a CPU generator draws outside (feed)

    def __call__(self) -> torch.Tensor:
        if self.feed is not None:  # outside the graph: what the CPU draws, into the buffers the graph reads
            self.feed()
        if self.graph is None and self.calls < self.WARM_UP:
            self.calls += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self.body()
            torch.cuda.current_stream().wait_stream(side)
            return out
        if self.graph is None:
            graph = torch.cuda.CUDAGraph()
            for g in self.generators:
                graph.register_generator_state(g)
            try:
                with torch.cuda.graph(graph):
                    self.out = self.body()
            except Exception as e:
                raise RuntimeError(f"capturing the training step as a CUDA graph failed ({type(e).__name__}: "
                                   f"{(str(e).splitlines() or [''])[0][:200]}); set AEVB_CUDA_GRAPHS=0 to run it "
                                   f"eagerly (the run resumes from its checkpoint)") from None
            self.graph = graph
        self.graph.replay()
        return self.out


def fill(buffers, drawn) -> None:
    """Queue the copy of what the CPU drew into the GPU buffers a captured step reads (draws="cpu"),
    from pinned memory: the CPU does not wait for the GPU."""
    for buffer, d in zip(buffers, drawn):
        buffer.copy_(d.pin_memory(), non_blocking=True)


# The AEVB step on a CUDA device runs as one captured graph (AEVB_CUDA_GRAPHS=0: eagerly, kernel by kernel)
CAPTURE_CUDA_GRAPHS = os.environ.get("AEVB_CUDA_GRAPHS", "1") != "0"


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

    def ascend(self, objective: torch.Tensor, lr: float | None = None) -> None:
        """One ascent step on ``objective``, with step size ``lr`` (default: ``next_lr()``, counted)."""
        for p in self.params:
            p.grad = None  # autograd then hands over its gradient buffers instead of adding into ours
        (-objective).backward()
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in self.params]
        lr = self.next_lr() if lr is None else lr
        with torch.no_grad():
            (_adagrad_update if lr == 0.0 else self.update)(self.params, grads, self.sums, self.decays, lr, self.eps)

    def next_lr(self) -> float:
        """The step size of the coming update, counting it: 0 during the warm-up, when the
        accumulator fills and the parameters stay (w - 0 * finite = w). The warm-up runs eagerly:
        a compiled call with lr = 0 would compile the update a second time."""
        self.t += 1
        return 0.0 if self.t <= self.warmup else self.lr

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

def gradient_of(cfg: TrainConfig) -> str:
    """The gradient a run of ``cfg`` takes, 'by_hand' or 'autograd' (``cfg.gradient`` 'auto': by
    hand where it is written): AEVB with estimator B (``sgvb_b_ascent``); wake-sleep with MNIST's
    Bernoulli decoder and the paper's encoder, ws_logvar_scale = 1 (``wake_ascent``,
    ``sleep_ascent``); otherwise autograd. (Wake-sleep records made before its by-hand step say
    'auto' and were made with autograd: ``train.recorded_gradient`` reads them so.)"""
    if cfg.gradient == "autograd":
        return "autograd"
    return "by_hand" if written_by_hand(cfg) else "autograd"


class Minibatches:
    """Random minibatches of M indices drawn with replacement (anglepy), binarised per draw
    when dynamic binarisation is on."""

    def __init__(self, X: torch.Tensor, cfg: TrainConfig, rng: torch.Generator):
        self.X, self.M, self.rng = X, cfg.batch_size, rng
        self.dynamic = cfg.binarize == "dynamic"

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return data_mod.binarize_batch(x, self.rng, check=False) if self.dynamic else x

    def indices(self) -> torch.Tensor:
        """The next minibatch's M indices, on the generator's device."""
        return torch.randint(len(self.X), (self.M,), generator=self.rng, device=self.rng.device)

    def __next__(self) -> torch.Tensor:
        return self.prepare(self.X.index_select(0, moved(self.indices(), self.X.device)))


def _tanh(a: torch.Tensor) -> torch.Tensor:
    """tanh a = expm1(2a) / (expm1(2a) + 2), within a unit of rounding of torch.tanh: compiled, it
    runs 4x faster than the compiler's own tanh. |a| <= 20 keeps expm1 finite; tanh(20) = 1 in
    float64."""
    e = torch.expm1(2.0 * a.clamp(-20.0, 20.0))
    return e / (e + 2.0)


def sgvb_b_ascent(x, eps, params, sums, decays, lr: float, ada_eps: float, gaussian: bool,
                  update=_adagrad_update) -> torch.Tensor:
    """One Adagrad ascent step on sum_i L^B(theta, phi; x_i, eps_i) (eq. 10), its gradient written
    out by hand; returns L^B per datapoint (before the update). ``eps`` is (L, B, Z).

    Forward (App. C, as ``models.VAE``), with rows of x the datapoints:
        h = tanh(x W1' + b1),  mu = h Wm' + bm,  lv = h Wl' + bl,  s = exp(lv / 2),  z = mu + s eps,
        g = tanh(z W3' + b3),  a = g W4' + b4,
        Bernoulli: log p(x|z) = sum x a - softplus(a);
        Gaussian:  m = sigmoid(a), v = g W5' + b5, log p(x|z) = -1/2 sum log 2pi + v + (x - m)^2 e^-v
        L^B = mean_l log p(x|z_l) - KL,  KL = 1/2 sum mu^2 + s^2 - 1 - lv.
    Backward of  -sum_i L^B_i  (each row's d(...)/d(pre-activation), then dW = d' input):
        Bernoulli: da = (sigmoid(a) - x) / L;   Gaussian: da = -(x - m) e^-v m (1 - m) / L,
                                                          dv = (1 - (x - m)^2 e^-v) / (2 L)
        dg3 = (da W4 [+ dv W5]) (1 - g^2),  dz = dg3 W3,
        dmu = sum_l dz + mu,  dlv = 1/2 (s sum_l dz eps + s^2 - 1),
        dh1 = (dmu Wm + dlv Wl) (1 - h^2).
    One function for the whole step, so that ``torch.compile`` fuses its forty elementwise
    operations into a few loops around the matrix products (the autograd version runs each as
    its own kernel); tests check it against autograd and against the old step's trajectory."""
    W1, b1, Wm, bm, Wl, bl, W3, b3, W4, b4 = params[:10]
    L = eps.shape[0]
    # products then bias adds, not addmm: the compiler fuses each add into the next elementwise loop
    h = _tanh(x @ W1.t() + b1)
    mu, lv = h @ Wm.t() + bm, h @ Wl.t() + bl
    s = torch.exp(0.5 * lv)
    z = (mu + s * eps).reshape(-1, mu.shape[1])                  # (L B, Z)
    xs = x if L == 1 else x.expand(L, *x.shape).reshape(-1, x.shape[1])
    g = _tanh(z @ W3.t() + b3)
    a = g @ W4.t() + b4
    kl = 0.5 * (mu * mu + s * s - 1.0 - lv).sum(1)
    if gaussian:
        W5, b5 = params[10:]
        m, scale = torch.sigmoid(a), torch.exp(0.5 * (g @ W5.t() + b5))
        r, var = xs - m, scale * scale
        # torch.distributions.Normal.log_prob's arithmetic, so that the bound rounds as the model's does
        log_px = (-(r * r) / (2 * var) - scale.log() - math.log(math.sqrt(2 * math.pi))).sum(1)
        da = (-r / var * m * (1.0 - m)) / L
        dv = (0.5 - 0.5 * (r * r) / var) / L
        dg3 = (da @ W4 + dv @ W5) * (1.0 - g * g)
    else:
        log_px = -F.binary_cross_entropy_with_logits(a, xs, reduction="none").sum(1)
        da = (torch.sigmoid(a) - xs) / L
        dg3 = (da @ W4) * (1.0 - g * g)
    bound = log_px.reshape(L, -1).mean(0) - kl
    dz = (dg3 @ W3).reshape(eps.shape)
    dmu = dz.sum(0) + mu
    dlv = 0.5 * (s * (dz * eps).sum(0) + s * s - 1.0)
    dh1 = (dmu @ Wm + dlv @ Wl) * (1.0 - h * h)
    grads = [dh1.t() @ x, dh1.sum(0), dmu.t() @ h, dmu.sum(0), dlv.t() @ h, dlv.sum(0),
             dg3.t() @ z, dg3.sum(0), da.t() @ g, da.sum(0)]
    if gaussian:
        grads += [dv.t() @ g, dv.sum(0)]
    update(params, grads, sums, decays, lr, ada_eps)
    return bound


def wake_ascent(x, eps, z_dream, enc, dec, sums, decays, lr: float, ada_eps: float,
                update=_adagrad_update) -> tuple[torch.Tensor, torch.Tensor]:
    """The wake phase of a wake-sleep step (Bernoulli decoder), its gradient by hand, then the
    dream's pixel probabilities from the updated decoder; returns (log p(x, z) per datapoint before
    the update, p(x|z_dream)). ``enc`` and ``dec`` are the encoder's and decoder's parameters in
    ``VAE`` order; ``eps`` and ``z_dream`` are (M, Z).

    Forward, z from q(z|x) held fixed (no reparameterisation gradient):
        h = tanh(x W1' + b1),  mu = h Wm' + bm,  lv = h Wl' + bl,  z = mu + exp(lv / 2) eps,
        g = tanh(z W3' + b3),  a = g W4' + b4,
        log p(x, z) = -1/2 |z|^2 - Z/2 log 2pi + sum x a - softplus(a).
    Backward of  -sum_i log p(x_i, z_i)  over the decoder's parameters:
        da = sigmoid(a) - x,  dg3 = (da W4) (1 - g^2),  dW4 = da' g,  dW3 = dg3' z."""
    W1, b1, Wm, bm, Wl, bl = enc
    W3, b3, W4, b4 = dec
    h = _tanh(x @ W1.t() + b1)
    mu, lv = h @ Wm.t() + bm, h @ Wl.t() + bl
    z = mu + torch.exp(0.5 * lv) * eps
    g = _tanh(z @ W3.t() + b3)
    a = g @ W4.t() + b4
    log_joint = (-0.5 * (z * z).sum(1) - z.shape[1] * math.log(math.sqrt(2 * math.pi))
                 - F.binary_cross_entropy_with_logits(a, x, reduction="none").sum(1))
    da = torch.sigmoid(a) - x
    dg3 = (da @ W4) * (1.0 - g * g)
    update(dec, [dg3.t() @ z, dg3.sum(0), da.t() @ g, da.sum(0)], sums, decays, lr, ada_eps)
    # the dream's probabilities, from the decoder just updated
    return log_joint, torch.sigmoid(_tanh(z_dream @ W3.t() + b3) @ W4.t() + b4)


def sleep_ascent(x_dream, z_dream, enc, sums, decays, lr: float, ada_eps: float, update=_adagrad_update) -> None:
    """The sleep phase of a wake-sleep step, its gradient by hand: one Adagrad ascent on
    sum_i log q(z_i|x_i) over the encoder's parameters, (z, x) dreamt from p(z) p(x|z).
        log q(z|x) = -1/2 sum log 2pi + lv + (z - mu)^2 e^-lv      (h, mu, lv as in ``wake_ascent``)
    Backward of  -sum_i log q(z_i|x_i):
        dmu = -(z - mu) e^-lv,  dlv = 1/2 (1 - (z - mu)^2 e^-lv),  dh1 = (dmu Wm + dlv Wl) (1 - h^2)."""
    W1, b1, Wm, bm, Wl, bl = enc
    h = _tanh(x_dream @ W1.t() + b1)
    mu, lv = h @ Wm.t() + bm, h @ Wl.t() + bl
    r, iv = z_dream - mu, torch.exp(-lv)
    dmu = -r * iv
    dlv = 0.5 - 0.5 * r * r * iv
    dh1 = (dmu @ Wm + dlv @ Wl) * (1.0 - h * h)
    update(enc, [dh1.t() @ x_dream, dh1.sum(0), dmu.t() @ h, dmu.sum(0), dlv.t() @ h, dlv.sum(0)],
           sums, decays, lr, ada_eps)


class AEVB:
    """Algorithm 1: one joint Adagrad ascent step on the SGVB minibatch estimator.

    With estimator B (the paper's for the VAE) the step is ``sgvb_b_ascent``, gradient by hand;
    with estimator A, or ``gradient="autograd"``, it is autograd through ``estimators``. The two
    are the same arithmetic up to rounding (float32 runs part by rounding alone where training
    is chaotic, as Frey Face's first 1e5 samples are; ``verify`` re-runs records made before the
    by-hand step with autograd)."""

    metric = "lower bound (SGVB B, L=1)"
    LAYERS = ("enc_hidden", "enc_mu", "enc_logvar", "dec_hidden", "dec_out", "dec_logvar")

    def __init__(self, model: VAE, X: torch.Tensor, cfg: TrainConfig, lr: float, rng: torch.Generator,
                 compile: bool = False):
        self._setup(model, X, cfg, rng, compile)
        self.estimator = get_estimator(cfg.estimator, checked=False)  # the data were checked when loaded
        self.opt = self._adagrad(model.parameters(), lr, cfg.adagrad_warmup)
        self.by_hand = gradient_of(cfg) == "by_hand"
        if self.by_hand:
            layers = [getattr(model, n) for n in self.LAYERS if hasattr(model, n)]
            assert [id(p) for p in self.opt.params] == [id(p) for l in layers for p in (l.weight, l.bias)]
            # without inductor's pattern matcher (either device): it folds the weight decay c w into the
            # gradient's product as addmm(w, ..., beta=c), which first copies w (1.6 MB) into the output
            # (+10 % on the CPU); on the CPU with its C++ wrapper, which calls the kernels without Python
            # in between (+3 %)
            on_gpu = X.device.type == "cuda"
            options = {"pattern_matcher": False} if on_gpu else {"pattern_matcher": False, "cpp_wrapper": True}
            self.ascent = _CompiledOrEager(sgvb_b_ascent, options) if compile else sgvb_b_ascent
            self.gaussian = model.likelihood == "gaussian"
            # on a GPU, the step after the warm-up is one captured graph (its step size is then fixed)
            self.captured = None
            if on_gpu and CAPTURE_CUDA_GRAPHS and rng.device.type == "cpu":  # draws="cpu": fed to the graph
                fed = [torch.zeros(cfg.batch_size, dtype=torch.long, device=X.device),
                       torch.zeros((cfg.n_samples, cfg.batch_size, model.z_dim), device=X.device)]

                def feed():  # the CPU draws the step's indices and noise, in draw's order, and queues their copy
                    fill(fed, (self.batches.indices(), self.noise()))
                self.captured = CapturedStep(lambda: self._by_hand_step(self.opt.lr, (X.index_select(0, fed[0]),
                                                                                     fed[1])), rng, feed)
            elif on_gpu and CAPTURE_CUDA_GRAPHS:
                self.captured = CapturedStep(lambda: self._by_hand_step(self.opt.lr), rng)

    def _setup(self, model: VAE, X: torch.Tensor, cfg: TrainConfig, rng: torch.Generator, compile: bool) -> None:
        """What every algorithm holds: model, config, RNG, N and its minibatches."""
        self.model, self.cfg, self.rng, self.N, self.compile = model, cfg, rng, len(X), compile
        self.batches = Minibatches(X, cfg, rng)

    def _adagrad(self, params, lr: float, warmup: int) -> Adagrad:
        decay = self.cfg.batch_size / self.N if self.cfg.weight_prior else 0.0  # (M/N) log N(w; 0, I)
        return Adagrad(params, lr, warmup, self.cfg.adagrad_eps, decay, self.compile)

    def step(self) -> tuple[int, float]:
        if not self.by_hand:
            x = next(self.batches)
            bound = self.estimator(self.model, x, self.cfg.n_samples, self.rng)
            self.opt.ascend(bound.sum())
            return len(x), bound.mean().item()
        lr = self.opt.next_lr()
        if lr != 0.0 and self.captured is not None:  # on the GPU: the mean as a tensor, read by the loop later
            return self.cfg.batch_size, self.captured().mean()
        return self.cfg.batch_size, self._by_hand_step(lr).mean().item()

    def draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next minibatch and its noise eps (L, M, Z), from the run's generator in this order."""
        x = next(self.batches)
        return x, moved(self.noise(), x.device)

    def noise(self) -> torch.Tensor:
        """A minibatch's noise eps (L, M, Z) on the generator's device: the same draw, from the same
        generator, as estimators.reparameterize."""
        return torch.randn((self.cfg.n_samples, self.cfg.batch_size, self.model.z_dim), generator=self.rng,
                           dtype=self.batches.X.dtype, device=self.rng.device)

    def _by_hand_step(self, lr: float, drawn: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """One ascent step with the gradient by hand (``sgvb_b_ascent``) on the next minibatch (or on
        ``drawn``, a minibatch and its noise drawn already); the bound per datapoint."""
        x, eps = self.draw() if drawn is None else drawn
        opt = self.opt
        with torch.no_grad():
            return (sgvb_b_ascent if lr == 0.0 else self.ascent)(x, eps, opt.params, opt.sums, opt.decays, lr,
                                                                 opt.eps, self.gaussian)

    def evaluate(self, X: torch.Tensor | None, split: str) -> float | None:
        return None if X is None else lower_bound(self.model, X, "B", seed=1000)

    def state_dict(self):
        return {"opt": self.opt.state_dict()}

    def load_state_dict(self, d):
        self.opt.load_state_dict(d["opt"])


class WakeSleep(AEVB):
    """Wake-sleep (module docstring). With a Bernoulli decoder and ``gradient`` resolved to by hand
    (``gradient_of``) each phase is one function, its gradient written out (``wake_ascent``,
    ``sleep_ascent``; compiled on long runs), drawing what the autograd step draws in the same
    order: the two differ by rounding only."""

    metric = "lower bound (SGVB B, L=1)"

    def __init__(self, model, X, cfg: TrainConfig, lr: float, rng: torch.Generator, compile: bool = False):
        self._setup(model, X, cfg, rng, compile)
        self.wake_opt = self._adagrad(model.decoder_parameters(), lr, cfg.adagrad_warmup)
        self.sleep_opt = self._adagrad(model.encoder_parameters(), lr, cfg.adagrad_warmup)
        self.by_hand = gradient_of(cfg) == "by_hand"
        if self.by_hand:
            assert model.likelihood == "bernoulli" and model.logvar_scale == 1.0
            options = {"pattern_matcher": False} if X.device.type == "cuda" else {"pattern_matcher": False,
                                                                                  "cpp_wrapper": True}
            self.wake = _CompiledOrEager(wake_ascent, options) if compile else wake_ascent
            self.sleep = _CompiledOrEager(sleep_ascent, options) if compile else sleep_ascent
        # on a GPU, the step after the warm-up is one captured graph (the by-hand phases, or autograd's
        # backward), its step sizes then fixed; the check for a diverged wake step stays on the GPU (no sync)
        self.captured = None
        if X.device.type == "cuda" and CAPTURE_CUDA_GRAPHS and rng.device.type == "cpu":  # draws="cpu" (by hand)
            M, Z = cfg.batch_size, model.z_dim
            fed = [torch.zeros(M, dtype=torch.long, device=X.device), torch.zeros((M, Z), device=X.device),
                   torch.zeros((M, Z), device=X.device), torch.zeros((M, X.shape[1]), device=X.device)]

            def feed():  # the CPU draws the step (the minibatch's indices), and queues the copy
                fill(fed, self.draws(gather=False))
            self.captured = CapturedStep(lambda: self._by_hand_wake_sleep(
                self.wake_opt.lr, self.sleep_opt.lr, on_device=True, drawn=(X.index_select(0, fed[0]), *fed[1:])),
                rng, feed)
        elif X.device.type == "cuda" and CAPTURE_CUDA_GRAPHS:
            self.captured = CapturedStep(lambda: self._wake_sleep(self.wake_opt.lr, self.sleep_opt.lr, on_device=True),
                                         rng)

    def step(self) -> tuple[int, float]:
        wake_lr, sleep_lr = self.wake_opt.next_lr(), self.sleep_opt.next_lr()
        if self.captured is not None and wake_lr != 0.0 and sleep_lr != 0.0:
            return self.cfg.batch_size, self.captured().clone()  # the graph's output, kept from the next replay
        objective = self._wake_sleep(wake_lr, sleep_lr)
        return self.cfg.batch_size, objective if isinstance(objective, float) else objective.item()

    def _wake_sleep(self, wake_lr: float, sleep_lr: float, on_device: bool = False) -> torch.Tensor | float:
        """One wake and one sleep update; the mean log p(x, z) of the wake phase (before its
        update), or NaN where the wake update diverged: then no dream is drawn from its NaN
        decoder (``on_device``: the sleep update runs regardless, the NaN is still returned,
        so that nothing waits for the GPU mid-step; the loop stops the run on it either way)."""
        if self.by_hand:
            return self._by_hand_wake_sleep(wake_lr, sleep_lr, on_device)
        model, M = self.model, self.cfg.batch_size
        x = next(self.batches)
        # wake: fit the generative model to (x, z ~ q(z|x))
        with torch.no_grad():
            mu, logvar = model.encode(x)
            z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=self.rng, device=mu.device)
        log_joint = model.log_joint(x, z)
        self.wake_opt.ascend(log_joint.sum(), wake_lr)
        # sleep: fit the recognition model to dreams (z, x) ~ p(z) p(x|z)
        with torch.no_grad():
            z_dream = torch.randn(M, model.z_dim, generator=self.rng, device=x.device)
            dream = model.decoder_distribution(z_dream)
            finite = torch.isfinite(dream.mean).all()
            if not on_device and not finite:  # the wake step diverged: report it, do not dream from NaN
                return float("nan")
            if on_device and isinstance(dream, Bernoulli):  # the GPU's bernoulli asserts 0 <= p <= 1 (a NaN
                dream = Bernoulli(probs=torch.where(finite, dream.probs, 0.5), validate_args=False)  # would kill it)
            x_dream = sample_x(dream, self.rng)
        mu, logvar = model.encode(x_dream)
        log_q = Normal(mu, torch.exp(0.5 * logvar), validate_args=False).log_prob(z_dream).sum(-1)
        self.sleep_opt.ascend(log_q.sum(), sleep_lr)
        objective = log_joint.detach().mean()
        return torch.where(finite, objective, torch.nan) if on_device else objective

    def draws(self, gather: bool = True) -> tuple[torch.Tensor, ...]:
        """A by-hand step's draws from the run's generator, on its device, in this order on every
        device: the minibatch (``gather=False``: only its indices), q's noise and the dream's z
        (M x Z each), and one uniform per pixel of the dream, which is x = [u < p]: on the CPU
        ``torch.bernoulli(p)``'s own draw, the same uniform per pixel in the same order (tested),
        so that a GPU run with draws="cpu" dreams what the CPU run dreams."""
        g, shape = self.rng, (self.cfg.batch_size, self.model.z_dim)
        first = next(self.batches) if gather else self.batches.indices()
        eps, z_dream = (torch.randn(shape, generator=g, device=g.device) for _ in range(2))
        pixels = (self.cfg.batch_size, self.batches.X.shape[1])
        return first, eps, z_dream, torch.rand(pixels, generator=g, dtype=self.wake_opt.params[0].dtype, device=g.device)

    def _by_hand_wake_sleep(self, wake_lr: float, sleep_lr: float, on_device: bool = False,
                            drawn: tuple | None = None) -> torch.Tensor | float:
        """``_wake_sleep`` with each phase's gradient by hand; the same draws from the run's
        generator in the same order (``draws``), or ``drawn``: the minibatch, both noises and the
        uniforms of the dream's pixels, drawn already (draws="cpu" on a GPU: by the CPU)."""
        if drawn is None:
            x, *rest = self.draws()
            eps, z_dream, uniforms = (moved(t, x.device) for t in rest)  # draws="cpu", eagerly on a GPU: copied
        else:
            x, eps, z_dream, uniforms = drawn
        wake, sleep = (self.wake, self.sleep) if wake_lr != 0.0 and sleep_lr != 0.0 else (wake_ascent, sleep_ascent)
        w, s = self.wake_opt, self.sleep_opt  # the warm-up (step size 0) runs uncompiled, as AEVB's
        with torch.no_grad():
            log_joint, probs = wake(x, eps, z_dream, s.params, w.params, w.sums, w.decays, wake_lr, w.eps)
            finite = torch.isfinite(probs).all()
            if not on_device and not finite:  # the wake step diverged: report it, do not dream from NaN
                return float("nan")
            if on_device:  # the GPU's bernoulli asserts 0 <= p <= 1 (a NaN would kill it)
                probs = torch.where(finite, probs, 0.5)
            x_dream = (uniforms < probs).to(probs.dtype)  # x ~ Bernoulli(p)
            sleep(x_dream, z_dream, s.params, s.sums, s.decays, sleep_lr, s.eps)
        objective = log_joint.mean()
        return torch.where(finite, objective, torch.nan) if on_device else objective

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
        self.z = torch.randn(len(X), model.z_dim, generator=rng, device=X.device)  # chains start at prior draws
        # anglepy's autotune multiplies or divides the step by 1.02 ** (number of chains): capped at
        # 1.25 in 2014 (hmc.py@55f25be), uncapped in 2013 (hmc.py@29d7e2e), where with N chains it jumps
        # by 1.02 ** N (4e8 for N = 1000) and so alternates between two values instead of tuning
        factor = 1.25 if cfg.mcem_step_rule == "capped" else 1.02 ** len(X)
        self.step_size = GlobalStepSize(cfg.mcem_init_step, cfg.mcem_target_accept, factor)
        self.full_batch = cfg.mcem_m_step == "full_batch"
        if self.full_batch:  # the whole training set per M-step: the full prior, (N/N) log p(theta)
            self.opt = Adagrad(model.parameters(), lr, cfg.mcem_warmup, cfg.adagrad_eps,
                               1.0 if cfg.weight_prior else 0.0, compile)
        else:
            self.opt = self._adagrad(model.parameters(), lr, cfg.mcem_warmup)
        self.per_iteration = mcem_samples_per_iteration(cfg, len(X))
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
            if self.full_batch:
                self.opt.ascend(model.log_joint(x, self.z).sum())
                continue
            idx = torch.arange(self.cursor, self.cursor + M, device=x.device) % self.N
            self.cursor = (self.cursor + M) % self.N
            self.opt.ascend(model.log_joint(x[idx], self.z[idx]).sum())
        return self.per_iteration, result.log_prob.mean().item()

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
        self.z = d["z"].to(self.X.device, copy=True)
        self.step_size.load_state_dict(d["step_size"])
        self.cursor = d["cursor"]


def mcem_samples_per_iteration(cfg: TrainConfig, n: int) -> int:
    """Training samples one MCEM iteration counts on the x axis (see the module docstring)."""
    if cfg.mcem_m_step == "full_batch":
        return (cfg.mcem_leapfrog + 1) * n + cfg.mcem_m_steps * n
    return n + cfg.mcem_m_steps * cfg.batch_size


ALGORITHM_CLASSES = {"aevb": AEVB, "wake_sleep": WakeSleep, "mcem": MCEM}


def get_algorithm(name: str):
    return ALGORITHM_CLASSES[name]
