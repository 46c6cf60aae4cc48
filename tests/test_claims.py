"""A verdict is 'within error' exactly when the margin is no larger than the measurement's error."""

import pytest

from vae_utils import claims


@pytest.mark.parametrize("margin, error, expected", [
    (3.0, 1.0, "held"), (-3.0, 1.0, "not held"), (0.5, 1.0, "within error"), (-1.0, 1.0, "within error"),
    (0.01, 0.0, "held"), (0.0, 0.0, "within error"),
])
def test_a_verdict_weighs_the_margin_against_the_error(margin, error, expected):
    assert claims.verdict(margin, error) == expected


def test_a_tie_far_inside_the_estimators_error_is_not_a_failure():
    # the case that prompted three values: MCEM -123.7 against AEVB -123.7, estimator error about 1 nat
    row = claims.claim("AEVB above MCEM", "AEVB -123.7, MCEM -123.7", -0.02, 1.1, "Appendix D vs quadrature")
    assert row["verdict"] == "within error" and row["error"] == "±1.10 (Appendix D vs quadrature)"


@pytest.mark.parametrize("margin, error", [(float("nan"), 1.0), (1.0, -0.1), (1.0, float("inf"))])
def test_a_verdict_without_a_finite_margin_and_error_is_refused(margin, error):
    with pytest.raises(ValueError, match="finite margin and a finite error"):
        claims.verdict(margin, error)


def test_the_tally_counts_each_verdict():
    rows = [{"verdict": v} for v in ("held", "held", "within error", "—")]
    assert claims.tally(rows) == "2 held, 0 not held, 1 within error"


def test_a_claim_over_many_takes_the_verdict_of_the_one_that_decides_it():
    row = claims.every("c", "m", [("a", 3.0, 1.0), ("b", 0.5, 1.0), ("c", -2.0, 1.0)], "src")
    assert row["verdict"] == "not held" and row["margin"] == "-2.00" and "decided by c" in row["error"]
    row = claims.every("c", "m", [("a", 3.0, 1.0), ("b", 0.5, 1.0)], "src")
    assert row["verdict"] == "within error" and "decided by b" in row["error"]
    assert claims.every("c", "m", [("a", 0.1, 0.0), ("b", 5.0, 1.0)], "src")["verdict"] == "held"
