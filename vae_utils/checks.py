"""One rule for bad input: refuse it before any work, in one line that names the parameter,
the value and what is allowed (``TypeError`` for a wrong type, ``ValueError`` for a value out
of range). Used by the config, the estimators and the likelihood functions alike."""

from __future__ import annotations

import math


def is_kind(value, kind) -> bool:
    """``int`` excludes bool; ``float`` accepts ints and excludes NaN and infinities."""
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if isinstance(kind, tuple):
        return any(is_kind(value, k) for k in kind)
    return isinstance(value, kind)


def check(name: str, value, kind, ok=lambda v: True, allowed: str = "") -> None:
    if not is_kind(value, kind):
        raise TypeError(f"{name}={value!r} is not allowed: expected {allowed}")
    if not ok(value):
        raise ValueError(f"{name}={value!r} is not allowed: expected {allowed}")


def at_least(name: str, value, minimum: int = 1) -> None:
    check(name, value, int, lambda v: v >= minimum, f"an integer >= {minimum}")


MAX_SEED = 2**63 - 1  # what torch.Generator.manual_seed, numpy and JSON all take


def seed(name: str, value) -> None:
    check(name, value, int, lambda v: 0 <= v <= MAX_SEED, "an integer in 0..2^63-1")


def positive(name: str, value) -> None:
    check(name, value, float, lambda v: v > 0, "a positive number")


def datapoints(name: str, x, model) -> None:
    """x must be a (B, D) floating tensor of finite values with the model's D, B >= 1."""
    import torch

    if not isinstance(x, torch.Tensor) or x.dim() != 2 or len(x) == 0:
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"{name} of shape {shape} is not allowed: expected a (datapoints, pixels) tensor with at "
                         f"least one row")
    if not x.is_floating_point():
        raise TypeError(f"{name} has dtype {x.dtype}; expected a floating tensor (pixels in [0, 1])")
    want = getattr(model, "x_dim", None)
    if want is not None and x.shape[1] != want:
        raise ValueError(f"{name} has {x.shape[1]} columns; the model expects {want} (its x_dim)")
    params = getattr(model, "parameters", None)
    p = next(iter(params()), None) if callable(params) else None
    if p is not None and p.dtype != x.dtype:
        raise TypeError(f"{name} has dtype {x.dtype}; the model's parameters are {p.dtype}: convert one to the other")
    finite(name, x)
    if getattr(model, "likelihood", None) == "bernoulli" and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"{name} holds values outside [0, 1] ({float(x.min()):.3g}..{float(x.max()):.3g}); a "
                         f"Bernoulli decoder takes pixel intensities in [0, 1]")


def model(name: str, value, needs=("log_joint",)) -> None:
    """A model with the methods an estimator calls (``log_joint``, ``encode``, ...)."""
    missing = [m for m in needs if not callable(getattr(value, m, None))]
    if missing:
        raise TypeError(f"{name}={type(value).__name__} is not allowed: expected a model with "
                        f"{', '.join(m + '()' for m in needs)} (it lacks {', '.join(missing)})")


def generator(name: str, value) -> None:
    """None or a ``torch.Generator`` (a seeded stream of random numbers)."""
    import torch

    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(f"{name}={value!r} is not allowed: expected None or a torch.Generator, e.g. "
                        f"torch.Generator().manual_seed(0)")


def finite(name: str, x) -> None:
    """No NaN or infinity in the (datapoints, ...) tensor x; else one line naming the rows."""
    import torch

    bad = ~torch.isfinite(x)
    if bad.any():
        rows = torch.nonzero(bad.reshape(len(x), -1).any(1)).flatten().tolist()
        raise ValueError(f"{name} has {int(bad.sum())} NaN or infinite values (rows {rows[:5]}"
                         f"{' ...' if len(rows) > 5 else ''}): expected finite pixels")


def same_shape(**tensors) -> None:
    """Tensors that an equation combines elementwise: one shape for all, else one line naming them."""
    import torch

    shapes = {k: tuple(v.shape) if hasattr(v, "shape") else type(v).__name__ for k, v in tensors.items()}
    if not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise TypeError("expected tensors: " + ", ".join(f"{k} is {type(v).__name__}" for k, v in tensors.items()))
    if len(set(shapes.values())) > 1:
        raise ValueError("shapes differ: " + ", ".join(f"{k} {s}" for k, s in shapes.items())
                         + "; expected one shape (datapoints, latent dimensions)")
