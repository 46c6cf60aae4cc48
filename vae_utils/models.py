"""The variational auto-encoder of Section 3 and Appendix C.

Generative model (decoder), prior p(z) = N(0, I):
    Bernoulli MLP (App. C.1, eq. 11):  y = sigmoid(W2 tanh(W1 z + b1) + b2),
        log p(x|z) = sum_i x_i log y_i + (1 - x_i) log(1 - y_i)
    Gaussian MLP (App. C.2, eq. 12, with the Section-5 sigmoid on the mean):
        h = tanh(W3 z + b3), mu = sigmoid(W4 h + b4), log sigma^2 = W5 h + b5,
        log p(x|z) = log N(x; mu, diag sigma^2)
Recognition model (encoder), App. C.2 with x and z swapped:
    h = tanh(W3 x + b3), mu = W4 h + b4, log sigma^2 = W5 h + b5,   q(z|x) = N(mu, diag sigma^2)

Initialisation (Section 5 "N(0, 0.01)", read as anglepy did: standard deviation 0.01) with
anglepy's zeros on the encoder log-variance layer and the decoder output/log-variance biases.
The weight-decay prior p(theta) = N(0, I) is on weight matrices only (paper_spec 10.2).

Every log-density broadcasts over leading sample dimensions: x of shape (B, D) and z of
shape (S, B, Z) give (S, B).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, Normal

LIKELIHOODS = ("bernoulli", "gaussian")


class VAE(nn.Module):
    def __init__(self, x_dim: int, h_dim: int, z_dim: int, likelihood: str = "bernoulli", *,
                 encoder: bool = True, logvar_scale: float = 1.0, init_std: float = 0.01):
        """``encoder=False`` builds the generative model alone (Monte Carlo EM has none).
        ``logvar_scale`` multiplies W5 h in the encoder (anglepy's wake-sleep used 0.1)."""
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; valid: {', '.join(LIKELIHOODS)}")
        self.x_dim, self.h_dim, self.z_dim, self.likelihood = x_dim, h_dim, z_dim, likelihood
        self.logvar_scale = logvar_scale
        self.has_encoder = encoder
        if encoder:
            self.enc_hidden = nn.Linear(x_dim, h_dim)
            self.enc_mu = nn.Linear(h_dim, z_dim)
            self.enc_logvar = nn.Linear(h_dim, z_dim)
        self.dec_hidden = nn.Linear(z_dim, h_dim)
        self.dec_out = nn.Linear(h_dim, x_dim)  # Bernoulli logits, or the pre-sigmoid mean
        if likelihood == "gaussian":
            self.dec_logvar = nn.Linear(h_dim, x_dim)
        self.reset_parameters(init_std)

    def reset_parameters(self, std: float = 0.01) -> None:
        for p in self.parameters():
            nn.init.normal_(p, 0.0, std)
        zeros = [self.dec_out.bias]
        if self.has_encoder:
            zeros += [self.enc_logvar.weight, self.enc_logvar.bias]  # q starts with sigma = 1
        if self.likelihood == "gaussian":
            zeros.append(self.dec_logvar.bias)
        for p in zeros:
            nn.init.zeros_(p)

    # --- parameter groups (wake-sleep updates them separately) -------------------------
    def encoder_parameters(self):
        return [p for n, p in self.named_parameters() if n.startswith("enc_")]

    def decoder_parameters(self):
        return [p for n, p in self.named_parameters() if n.startswith("dec_")]

    def log_weight_prior(self, params=None) -> torch.Tensor:
        """log N(w; 0, I) summed over the weight matrices (biases carry no prior)."""
        params = self.parameters() if params is None else params
        weights = [p for p in params if p.dim() == 2]
        return sum(-0.5 * (w * w).sum() - 0.5 * w.numel() * math.log(2 * math.pi) for w in weights)

    # --- recognition model q(z|x) -----------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log sigma^2) of q(z|x), App. C.2."""
        if not self.has_encoder:
            raise RuntimeError("this model was built with encoder=False (Monte Carlo EM); it has no q(z|x)")
        h = torch.tanh(self.enc_hidden(x))
        logvar = self.logvar_scale * F.linear(h, self.enc_logvar.weight) + self.enc_logvar.bias
        return self.enc_mu(h), logvar

    # --- generative model p(z) p(x|z) -------------------------------------------------
    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        return Normal(0.0, 1.0, validate_args=False).log_prob(z).sum(-1)

    def decoder_distribution(self, z: torch.Tensor):
        """p(x|z) as a torch distribution over pixels (event dims not yet summed)."""
        h = torch.tanh(self.dec_hidden(z))
        if self.likelihood == "bernoulli":
            # validate_args=False: grey-level x in [0, 1] is a valid soft target (paper_spec 2.2)
            return Bernoulli(logits=self.dec_out(h), validate_args=False)
        return Normal(torch.sigmoid(self.dec_out(h)), torch.exp(0.5 * self.dec_logvar(h)), validate_args=False)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) summed over pixels (eq. 11 / eq. 12)."""
        if self.likelihood == "bernoulli":
            # Bernoulli(logits).log_prob(x) is -BCE per pixel; summing first and negating the sum gives
            # the same bits with one pass fewer over every pixel, forward and backward (MCEM: -15 %)
            logits = self.dec_out(torch.tanh(self.dec_hidden(z)))
            return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
        return self.decoder_distribution(z).log_prob(x).sum(-1)

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.log_prior(z) + self.log_likelihood(x, z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean of p(x|z): what the paper's Figures 4 and 5 display."""
        return self.decoder_distribution(z).mean

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, mean: bool = True) -> torch.Tensor:
        """n draws x ~ p(x|z), z ~ p(z); decoder means when ``mean`` (as in Figure 5)."""
        z = torch.randn(n, self.z_dim, generator=generator, device=self.dec_hidden.weight.device)
        return self.decode(z) if mean else sample_x(self.decoder_distribution(z), generator)


def sample_x(dist, generator: torch.Generator | None = None) -> torch.Tensor:
    """A draw from p(x|z) with an explicit generator (torch distributions take none)."""
    if isinstance(dist, Bernoulli):
        return torch.bernoulli(dist.probs, generator=generator)
    return dist.loc + dist.scale * torch.randn(dist.loc.shape, generator=generator, device=dist.loc.device)


def build_model(cfg_or_dict, x_dim: int) -> VAE:
    """The model a run's config describes (used by the trainer and when loading checkpoints)."""
    c = cfg_or_dict if isinstance(cfg_or_dict, dict) else vars(cfg_or_dict)
    return VAE(x_dim, c["n_hidden"], c["n_z"],
               "bernoulli" if c["dataset"] == "mnist" else "gaussian",
               encoder=c["algorithm"] != "mcem", logvar_scale=c.get("ws_logvar_scale", 1.0)
               if c["algorithm"] == "wake_sleep" else 1.0)
