"""The VAE of Appendix C against its written-out formulas."""

import math

import pytest
import torch

from vae_utils.models import VAE


def test_initialisation_follows_anglepy():
    torch.manual_seed(0)
    m = VAE(784, 500, 20, "gaussian")
    assert m.enc_hidden.weight.std().item() == pytest.approx(0.01, rel=0.02)
    assert m.dec_hidden.bias.std().item() == pytest.approx(0.01, rel=0.2)
    for p in (m.enc_logvar.weight, m.enc_logvar.bias, m.dec_out.bias, m.dec_logvar.bias):
        assert torch.count_nonzero(p) == 0
    mu, logvar = m.encode(torch.rand(3, 784))
    assert torch.count_nonzero(logvar) == 0  # q(z|x) starts with sigma = 1


def test_bernoulli_log_likelihood_is_eq_11_with_grey_levels():
    torch.manual_seed(1)
    m = VAE(6, 4, 2)
    x, z = torch.rand(5, 6), torch.randn(5, 2)
    y = torch.sigmoid(m.dec_out(torch.tanh(m.dec_hidden(z))))
    manual = (x * torch.log(y) + (1 - x) * torch.log(1 - y)).sum(-1)
    torch.testing.assert_close(m.log_likelihood(x, z), manual)
    torch.testing.assert_close(m.decode(z), y)


def test_gaussian_log_likelihood_is_eq_12_with_sigmoid_mean():
    torch.manual_seed(2)
    m = VAE(6, 4, 2, "gaussian")
    torch.nn.init.normal_(m.dec_logvar.weight, 0, 1.0)
    x, z = torch.rand(5, 6), torch.randn(5, 2)
    h = torch.tanh(m.dec_hidden(z))
    mu, logvar = torch.sigmoid(m.dec_out(h)), m.dec_logvar(h)
    manual = (-0.5 * math.log(2 * math.pi) - 0.5 * logvar - (x - mu) ** 2 / (2 * logvar.exp())).sum(-1)
    torch.testing.assert_close(m.log_likelihood(x, z), manual)


def test_log_densities_broadcast_over_sample_dimensions():
    m = VAE(6, 4, 3)
    x, z = torch.rand(5, 6), torch.randn(7, 5, 3)
    assert m.log_joint(x, z).shape == (7, 5)
    torch.testing.assert_close(m.log_joint(x, z)[2], m.log_joint(x, z[2]))
    torch.testing.assert_close(m.log_prior(z), -0.5 * (z ** 2).sum(-1) - 1.5 * math.log(2 * math.pi))
    assert m.sample(4).shape == (4, 6)


def test_weight_prior_covers_weight_matrices_only():
    m = VAE(6, 4, 3)
    weights = [m.enc_hidden.weight, m.enc_mu.weight, m.enc_logvar.weight, m.dec_hidden.weight, m.dec_out.weight]
    expected = sum(-0.5 * (w ** 2).sum() - 0.5 * w.numel() * math.log(2 * math.pi) for w in weights)
    torch.testing.assert_close(m.log_weight_prior(), expected)
    with pytest.raises(ValueError, match="unknown likelihood 'poisson'"):
        VAE(6, 4, 3, "poisson")
    with pytest.raises(RuntimeError, match="encoder=False"):
        VAE(6, 4, 3, encoder=False).encode(torch.rand(2, 6))


def test_the_bernoulli_log_likelihood_has_the_bits_of_torch_distributions_bernoulli():
    """log_likelihood negates the summed BCE instead of summing Bernoulli.log_prob's negated BCE:
    negation is exact, so value and gradient are the same to the last bit."""
    from torch.distributions import Bernoulli

    torch.manual_seed(0)
    model = VAE(784, 100, 3)
    for p in model.parameters():
        torch.nn.init.normal_(p, 0.0, 0.3)
    x = torch.rand(50, 784).round()
    for z in (torch.randn(50, 3), torch.randn(4, 50, 3)):
        ours = model.log_likelihood(x, z)
        logits = model.dec_out(torch.tanh(model.dec_hidden(z)))
        truth = Bernoulli(logits=logits, validate_args=False).log_prob(x).sum(-1)
        assert torch.equal(ours, truth)
        g_ours = torch.autograd.grad(ours.sum(), model.decoder_parameters())
        g_truth = torch.autograd.grad(truth.sum(), model.decoder_parameters())
        assert all(torch.equal(a, b) for a, b in zip(g_ours, g_truth))
