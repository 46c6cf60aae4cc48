"""The studies of the estimators (vae_utils.likelihood_studies): checkpoint evaluation, accuracy against a
known truth, the dimension study's record."""

import numpy as np
import pytest
import torch

from conftest import Perturbed, small_config


def test_likelihood_command_writes_every_estimate(tmp_path, data_dir):
    import json

    from vae_utils.likelihood_studies import evaluate_checkpoint
    from vae_utils.train import train

    cfg = small_config(tmp_path, n_z=3, n_hidden=50, samples=20_000, name="ml")
    train(cfg, progress=False, log=lambda *a: None)
    out = tmp_path / "ml_likelihood.json"
    evaluate_checkpoint(tmp_path / "ckpt" / "ml.pt", n=20, is_samples=200, quadrature_n=3, out=out, log=lambda *a: None)
    r = json.loads(out.read_text())
    for split in ("train", "test"):
        e = r[split]
        assert len(e["hmc_kde_per_point"]) == 20 and e["n_degenerate"] == 0
        q = e["quadrature"]
        assert q["importance_mean"] <= q["exact_mean"] + 0.1  # a lower bound, on the same three points
        assert q["hmc_kde_mean_abs_error"] < 2.0 and q["importance_mean_abs_error"] < 2.0
    assert r["provenance"]["torch"] == torch.__version__


def _gaussian_ratio_second_moment(a, s1, b, s2):
    """E_q[(p/q)^2] = integral of N(z; a, s1^2)^2 / N(z; b, s2^2) dz, in closed form (2 s2^2 > s1^2):
    the integrand is exp(-A z^2 + B z + C) times a constant; integral sqrt(pi/A) exp(B^2/4A + C)."""
    A = 1 / s1 ** 2 - 1 / (2 * s2 ** 2)
    B = 2 * a / s1 ** 2 - b / s2 ** 2
    C = -a ** 2 / s1 ** 2 + b ** 2 / (2 * s2 ** 2)
    return s2 / (np.sqrt(2 * np.pi) * s1 ** 2) * np.sqrt(np.pi / A) * np.exp(B ** 2 / (4 * A) + C)


def test_accuracy_statistics_of_known_errors(linear_gaussian):
    """With q(z|x) the exact posterior every importance estimate is log p(x) itself, so against a
    'truth' shifted by c_i the errors are exactly -c_i: every statistic is known in closed form."""
    from vae_utils.likelihood_studies import estimator_accuracy

    model, x, exact = linear_gaussian
    c = np.linspace(-1.0, 2.0, len(x))
    (row,) = estimator_accuracy(model, x, exact + c, l_values=(), k_values=(10,), seed=0, repeats=3)
    assert row["estimator"] == "importance" and row["samples"] == 10 and row["n"] == len(x) and row["repeats"] == 3
    np.testing.assert_allclose(np.array(row["errors"]), np.repeat(-c[:, None], 3, 1), atol=1e-6)
    assert row["bias"] == pytest.approx(-c.mean(), abs=1e-6)
    assert row["bias_sem"] == pytest.approx(c.std(ddof=1) / np.sqrt(len(c)), abs=1e-6)
    assert row["mean_abs_error"] == pytest.approx(np.abs(c).mean(), abs=1e-6)
    assert row["std"] == pytest.approx(np.repeat(c, 3).std(ddof=1), abs=1e-6)
    assert row["mc_std"] == pytest.approx(0.0, abs=1e-6) and row["seconds_per_1000"] > 0
    with pytest.raises(ValueError, match="exact values"):
        estimator_accuracy(model, x, exact[:-1], (), (10,))


def test_accuracy_of_importance_sampling_matches_the_delta_method(linear_gaussian):
    """Imperfect q (mean +0.2, variance x e^0.4 on every axis of a diagonal posterior): the weights
    w/p(x) = p(z|x)/q(z) have a variance V known in closed form, the same for every x, and the
    bias of log-mean-exp over K weights is -V/(2K) to first order. The study must report that
    bias and an error that falls with K."""
    from vae_utils.likelihood_studies import estimator_accuracy

    model, x, exact = linear_gaussian
    off = Perturbed(model.W, model.b, model.sigma)
    s1 = torch.sqrt(torch.diagonal(model.post_cov)).numpy()
    V = np.prod([_gaussian_ratio_second_moment(0.0, s, 0.2, s * np.exp(0.2)) for s in s1]) - 1
    rows = estimator_accuracy(off, x, exact, l_values=(), k_values=(10, 100, 1000), seed=0, repeats=4)
    mae = [r["mean_abs_error"] for r in rows]
    print(f"IS on linear-Gaussian, V = {V:.3f}: " + ", ".join(
        f"K={r['samples']} bias {r['bias']:+.4f} ± {r['bias_sem']:.4f} (delta method {-V / (2 * r['samples']):+.4f})"
        for r in rows))
    assert mae[0] > mae[1] > mae[2]
    assert rows[0]["bias"] < 0  # a stochastic lower bound
    for r in rows[1:]:  # K large enough for the first-order term
        assert abs(r["bias"] + V / (2 * r["samples"])) < 3 * r["bias_sem"] + 1e-3


def test_accuracy_of_appendix_d_improves_with_l(linear_gaussian):
    """L = 10 leaves 5 fitting samples, too few for a KDE in 3-D (the diagonal-Gaussian fallback is
    reported for every point); L = 200 fits a KDE and is accurate against the closed form."""
    from vae_utils.likelihood_studies import estimator_accuracy

    model, x, exact = linear_gaussian
    lo, hi = estimator_accuracy(model, x[:100], exact[:100], l_values=(10, 200), k_values=(), seed=0)
    print(f"Appendix D on linear-Gaussian: L=10 |error| {lo['mean_abs_error']:.3f}, "
          f"L=200 |error| {hi['mean_abs_error']:.3f}, bias {hi['bias']:+.3f} ± {hi['bias_sem']:.3f}")
    assert lo["kde_fallback"] == 1.0 and hi["kde_fallback"] == 0.0
    assert hi["mean_abs_error"] < lo["mean_abs_error"] and hi["mean_abs_error"] < 0.5 and abs(hi["bias"]) < 0.35


def test_dimension_study_job_caches_and_refuses_without_permission(tmp_path):
    import json

    from vae_utils.likelihood_studies import dimension_study_job
    from vae_utils.sweep import MissingResultError

    settings = {"dims": [2], "dims_n": 6, "l_values": [50], "repeats": 1, "seed": 0, "n": 0}
    with pytest.raises(MissingResultError, match="allow_training=False"):
        dimension_study_job(settings, tmp_path, allow_training=False)
    first = dimension_study_job(settings, tmp_path)
    path = tmp_path / "estimator_accuracy_dimensions.json"
    assert json.loads(path.read_text())["rows"][0]["n_z"] == 2 and "torch" in first["provenance"]
    assert dimension_study_job(settings, tmp_path, allow_training=False)["rows"] == first["rows"]  # reused
    from vae_utils.records import RecordExistsError

    for allow in (False, True):  # other settings are another result: the record is kept, never replaced
        with pytest.raises(RecordExistsError, match="of another computation"):
            dimension_study_job({**settings, "dims_n": 7}, tmp_path, allow_training=allow)


def test_evaluate_checkpoint_refuses_bad_input_in_one_line():
    from vae_utils.likelihood_studies import evaluate_checkpoint

    with pytest.raises(ValueError) as e:
        evaluate_checkpoint("nothing", n=0)
    assert "n=0 is not allowed: expected an integer >= 1" in str(e.value) and "\n" not in str(e.value)
