"""A claim of the paper checked on our numbers: held, not held, or within error.

A claim compares two measured values ("AEVB's bound above wake-sleep's") or a value with a
threshold ("train - test below 2 nats"). With d the margin by which the claim holds (a - b, or
threshold - value) and e the error it is measured with (the estimator's error measured against
quadrature, or the spread of a value over seeds),

    held          d >  e
    not held      d < -e
    within error  |d| <= e        (the numbers cannot tell)

Every row states d and e and where e comes from, so a reader sees how far from the line a
verdict fell. Nothing here knows a figure; ``experiments`` and ``likelihood_studies`` build the
rows.
"""

from __future__ import annotations

import math

HELD, NOT_HELD, WITHIN_ERROR = "held", "not held", "within error"
VERDICTS = (HELD, NOT_HELD, WITHIN_ERROR)


def verdict(margin: float, error: float) -> str:
    """``margin``: by how much the claim holds (negative: by how much it fails); ``error``: the
    size of a difference the measurement cannot resolve (>= 0)."""
    if not (math.isfinite(margin) and math.isfinite(error)) or error < 0:
        raise ValueError(f"a verdict needs a finite margin and a finite error >= 0, got margin={margin!r}, "
                         f"error={error!r}")
    if abs(margin) <= error:
        return WITHIN_ERROR
    return HELD if margin > 0 else NOT_HELD


def claim(text: str, measured: str, margin: float, error: float, error_source: str) -> dict:
    """One row of a claims table: the claim, what was measured, the margin by which it holds, the
    error that margin is weighed against (and where that error was measured), the verdict."""
    return {"claim": text, "measured": measured, "margin": f"{margin:+.2f}",
            "error": f"±{error:.2f} ({error_source})", "verdict": verdict(margin, error)}


def every(text: str, measured: str, items, error_source: str) -> dict:
    """A claim that must hold for every item (label, margin, error), as one ``claim`` row.

    Its verdict is the worst item's: ``verdict`` depends on margin / error alone (held
    above 1, not held below -1), so the item with the lowest ratio decides, and the row shows
    that item's margin and error and names it."""
    def ratio(item):
        _, m, e = item
        return m / e if e > 0 else (math.copysign(math.inf, m) if m else 0.0)

    items = list(items)
    label, margin, error = min(items, key=ratio)
    return claim(text, measured, margin, error, f"{error_source}; decided by {label}" if len(items) > 1 else error_source)


def unjudged(text: str, measured: str, why: str) -> dict:
    """A row for a claim our numbers cannot judge (e.g. the paper has no curve at that x)."""
    return {"claim": text, "measured": measured, "margin": "—", "error": why, "verdict": "—"}


COLUMNS = {"claim": "claim", "measured": "measured", "margin": "margin", "error": "error", "verdict": "verdict"}


def tally(rows: list[dict]) -> str:
    """'3 held, 0 not held, 1 within error' over the rows with a verdict."""
    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    return ", ".join(f"{counts[v]} {v}" for v in VERDICTS)
