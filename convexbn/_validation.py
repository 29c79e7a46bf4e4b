"""Input checks shared by every public entry point.

Array checks delegate to scikit-learn's public ``check_array`` (which already names NaN/inf, wrong
dimensionality and too few samples); the rest names the offending argument itself.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.utils import check_array


def check_data(X, *, name: str = "X", min_samples: int = 2) -> np.ndarray:
    """Return ``X`` as a finite float64 array of shape (n, d) with n >= ``min_samples``."""
    return check_array(
        X,
        dtype=np.float64,
        ensure_2d=True,
        ensure_all_finite=True,
        ensure_min_samples=min_samples,
        input_name=name,
    )


def check_positive(value, name: str, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a float, raising if it is not a positive (or non-negative) finite real."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def check_positive_int(value, name: str) -> int:
    """Return ``value`` as an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def check_choice(value, name: str, choices) -> str:
    """Return ``value`` if it is one of ``choices`` (strings), else raise naming the options."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {sorted(choices)}; got {value!r}")
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {sorted(choices)}")
    return value
