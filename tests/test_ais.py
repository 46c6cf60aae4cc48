"""Annealed importance sampling and bidirectional Monte Carlo against exact log p(x).

Ground truths: the closed-form marginal of a linear-Gaussian model, and quadrature over z for
an MLP decoder with a 2-D latent whose posterior is far from the prior. The errors measured
here are printed (pytest -s).
"""

import numpy as np
import pytest
import torch

from vae_utils.exact import LinearGaussian, quadrature_log_likelihood
from vae_utils.marginal_likelihood import ais_log_likelihood, ais_schedule, bdmc
from vae_utils.models import VAE, sample_x


@pytest.fixture(scope="module")
def linear_gaussian():
    model = LinearGaussian.random(x_dim=10, z_dim=3, sigma=0.5, seed=0)
    x = model.sample_x(100)
    return model, x, model.log_marginal(x).numpy()


@pytest.fixture(scope="module")
def random_decoder():
    """A 40-20-2 Bernoulli decoder with N(0, 1) weights (not the 0.01 of training): a posterior
    far from the prior (log p(x) is > 10 nats above E_prior log p(x|z)), possibly several modes.
    Data are drawn from the model; the truth is quadrature."""
    torch.manual_seed(0)
    model = VAE(40, 20, 2, encoder=False, init_std=1.0).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        x = sample_x(model.decoder_distribution(torch.randn(30, 2, generator=g)), g)
    return model, x, quadrature_log_likelihood(model, x).numpy()


def _bias_bound(e):
    return 3 * np.std(e, ddof=1) / np.sqrt(len(e))


def test_schedule_is_the_rescaled_sigmoid():
    b = ais_schedule(100)
    s = torch.sigmoid(4 * (2 * torch.arange(101, dtype=torch.float64) / 100 - 1))
    torch.testing.assert_close(b, (s - s[0]) / (s[-1] - s[0]))
    assert b[0] == 0 and b[-1] == 1 and b[50] == pytest.approx(0.5) and bool((b.diff() > 0).all())
    torch.testing.assert_close(ais_schedule(4, "linear"), torch.tensor([0, 0.25, 0.5, 0.75, 1], dtype=torch.float64))


def test_ais_matches_exact_linear_gaussian(linear_gaussian):
    model, x, exact = linear_gaussian
    est = ais_log_likelihood(model, x, num_steps=1000, num_chains=16, n_leapfrog=2)
    assert est.shape == (len(x),)
    e = est.numpy() - exact
    print(f"AIS (T=1000, K=16) on linear-Gaussian: mean |error| {np.abs(e).mean():.3f} nats, "
          f"bias {e.mean():+.3f} ± {_bias_bound(e) / 3:.3f}")
    assert np.abs(e).mean() < 0.1
    assert e.mean() <= _bias_bound(e)  # a stochastic lower bound: not above log p(x) beyond noise


def test_more_chains_tighten_the_bound(linear_gaussian):
    """log of the mean of K weights: E[log w] (K = 1) is the loosest bound, and it tightens
    toward log p(x) as K grows (Burda et al.'s argument, applied to AIS weights)."""
    model, x, exact = linear_gaussian
    bias = {K: np.mean(ais_log_likelihood(model, x, num_steps=10, num_chains=K).numpy() - exact) for K in (1, 64)}
    print("AIS (T=10) bias by number of chains: " + ", ".join(f"K={k} {v:+.3f}" for k, v in bias.items()))
    assert bias[1] < -1 and abs(bias[64]) < abs(bias[1]) / 5


def test_ais_matches_quadrature_for_a_random_2d_decoder(random_decoder):
    model, x, exact = random_decoder
    with torch.no_grad():  # the posterior is not the prior: a large Jensen gap under prior draws
        prior_ll = model.log_likelihood(x, torch.randn(2000, len(x), 2, generator=torch.Generator().manual_seed(2)))
    assert (exact - prior_ll.mean(0).numpy()).mean() > 10
    e = ais_log_likelihood(model, x, num_steps=500, num_chains=16, n_leapfrog=2).numpy() - exact
    print(f"AIS (T=500, K=16) on a random 2-D MLP decoder: mean |error| {np.abs(e).mean():.3f} nats, "
          f"bias {e.mean():+.3f}, max |error| {np.abs(e).max():.2f}")
    assert np.abs(e).mean() < 0.15 and e.mean() <= _bias_bound(e)
    worse = ais_log_likelihood(model, x, num_steps=5, num_chains=2, n_leapfrog=2).numpy() - exact
    assert np.abs(worse).mean() > 3 * np.abs(e).mean()  # the budget matters: the comparison can fail


def test_bdmc_sandwiches_exact_linear_gaussian_and_its_gap_shrinks(linear_gaussian):
    model, _, _ = linear_gaussian
    g = torch.Generator().manual_seed(5)  # x and z drawn together: z is an exact posterior sample
    z = torch.randn(100, model.z_dim, generator=g, dtype=torch.float64)
    x = z @ model.W.T + model.b + model.sigma * torch.randn(100, model.x_dim, generator=g, dtype=torch.float64)
    exact = model.log_marginal(x).numpy()
    gaps = {}
    for T in (10, 100):
        r = bdmc(model, data=(x, z), num_steps=T, num_chains=4)
        lo, up = r["lower"].numpy() - exact, r["upper"].numpy() - exact
        gaps[T] = r["gap"]
        print(f"BDMC T={T}: lower {lo.mean():+.3f}, upper {up.mean():+.3f} around exact, gap {r['gap']:.3f}")
        assert lo.mean() <= _bias_bound(lo) and up.mean() >= -_bias_bound(up)
        assert r["gap"] == pytest.approx(np.mean(up - lo))
        # the reverse chain runs the forward chain's transitions (its tuned steps) in reverse order
        assert abs(r["acceptance_reverse"] - r["acceptance_forward"]) < 0.1
    assert gaps[10] > 1.0 and gaps[100] < gaps[10] / 3


def test_bdmc_on_data_simulated_from_a_vae(random_decoder):
    model, _, _ = random_decoder
    r = {T: bdmc(model, n=20, num_steps=T, num_chains=4, seed=3) for T in (10, 200)}
    print("BDMC gap on the random 2-D decoder: " + ", ".join(f"T={T} {v['gap']:.2f}" for T, v in r.items()))
    assert r[10]["x"].shape == (20, 40) and set(r[10]["x"].unique().tolist()) <= {0.0, 1.0}  # x ~ p(x|z) Bernoulli
    assert torch.equal(r[10]["x"], r[200]["x"])  # same seed: the same simulated data
    exact = quadrature_log_likelihood(model, r[200]["x"]).numpy()
    lo, up = r[200]["lower"].numpy() - exact, r[200]["upper"].numpy() - exact
    assert lo.mean() <= _bias_bound(lo) and up.mean() >= -_bias_bound(up)
    assert r[10]["gap"] > 0 and 0 <= r[200]["gap"] < r[10]["gap"] / 3


def test_same_seed_same_result(linear_gaussian):
    model, x, _ = linear_gaussian
    kw = dict(num_steps=20, num_chains=3, batch_size=40)  # several chunks: one stream across them
    a, b = ais_log_likelihood(model, x, **kw, seed=7), ais_log_likelihood(model, x, **kw, seed=7)
    assert torch.equal(a, b)
    assert not torch.equal(a, ais_log_likelihood(model, x, **kw, seed=8))
    r1, r2 = bdmc(model, data=(x[:5], torch.zeros(5, 3)), **kw, seed=1), bdmc(model, data=(x[:5], torch.zeros(5, 3)),
                                                                            **kw, seed=1)
    assert torch.equal(r1["upper"], r2["upper"]) and torch.equal(r1["lower"], r2["lower"])


def _nan_x(x):
    x = x.clone()
    x[3, 2] = float("nan")
    return x


BAD = [
    ({"num_steps": 0}, ValueError, "num_steps=0"),
    ({"num_steps": 2.5}, TypeError, "num_steps=2.5"),
    ({"num_chains": 0}, ValueError, "num_chains=0"),
    ({"n_leapfrog": 0}, ValueError, "n_leapfrog=0"),
    ({"seed": -1}, ValueError, "seed=-1"),
    ({"schedule": "cosine"}, ValueError, "schedule='cosine'.*sigmoid, linear"),
    ({"target_accept": 1.5}, ValueError, "target_accept=1.5"),
    ({"x": lambda x: x[0]}, ValueError, r"x of shape \(10,\)"),
    ({"x": lambda x: x[:, :4]}, ValueError, "x has 4 columns; the model expects 10"),
    ({"x": _nan_x}, ValueError, r"x has 1 NaN or infinite values \(rows \[3\]\)"),
    ({"model": object()}, TypeError, "model=object"),
]


@pytest.mark.parametrize("bad, exc, match", BAD, ids=[str(b) for b, *_ in BAD])
def test_bad_input_is_refused_in_one_line(linear_gaussian, bad, exc, match):
    model, x, _ = linear_gaussian
    kw = {"num_steps": 5, "num_chains": 2, **bad}
    x = kw.pop("x")(x) if "x" in kw else x
    model = kw.pop("model", model)
    with pytest.raises(exc, match=match) as info:
        ais_log_likelihood(model, x, **kw)
    assert "\n" not in str(info.value)


def test_bdmc_refuses_bad_simulated_data(linear_gaussian):
    model, x, _ = linear_gaussian
    with pytest.raises(ValueError, match=r"data\[1\] \(z\) of shape \(100, 2\)"):
        bdmc(model, data=(x, torch.zeros(100, 2)), num_steps=5)
    with pytest.raises(TypeError, match="data of type Tensor"):
        bdmc(model, data=x, num_steps=5)
    with pytest.raises(TypeError, match="decoder_distribution"):  # no p(x|z) to simulate from: pass data
        bdmc(model, n=5, num_steps=5)
    with pytest.raises(ValueError, match="n=0"):
        bdmc(VAE(4, 3, 2), n=0, num_steps=5)
