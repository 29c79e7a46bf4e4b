"""Input checks shared by every public entry point.

Array checks delegate to scikit-learn's public ``check_array`` (which already names NaN/inf, wrong
dimensionality and too few samples); :func:`prepare_data` first turns what ``check_array`` would
mishandle (torch tensors on any device, sparse matrices, string arrays, 1-D input) into a dense array
or an error naming the argument. The rest names the offending argument itself.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import scipy.sparse
from sklearn.exceptions import DataConversionWarning
from sklearn.utils import check_array

#: Largest sparse input (rows x columns) densified with a warning; beyond it, a ValueError.
#: Batch normalization centers every column, which makes the data dense anyway.
DENSIFY_MAX_ENTRIES = 20_000_000  # 160 MB as float64


def prepare_data(X, *, name: str = "X"):
    """Turn ``X`` into something ``check_array`` validates with a clear message.

    - a torch tensor (any device, any float dtype) becomes a NumPy array on the CPU;
    - a SciPy sparse matrix/array is densified with a :class:`~sklearn.exceptions.DataConversionWarning`
      up to :data:`DENSIFY_MAX_ENTRIES` entries, and refused beyond;
    - an array of strings or bytes is a ``TypeError`` (numeric strings are not silently parsed);
    - a 1-D array is a ``ValueError`` that says how to reshape it.

    pandas DataFrames and other array-likes pass through unchanged (``check_array`` reads their
    feature names and dtypes).
    """
    if type(X).__module__.startswith("torch"):
        X = X.detach().cpu().numpy()
    if scipy.sparse.issparse(X):
        n, d = X.shape
        if n * d > DENSIFY_MAX_ENTRIES:
            raise ValueError(
                f"{name} is a sparse matrix of shape {X.shape}; convexbn needs dense data (batch "
                f"normalization centers every column) and densifying would take {n * d * 8 / 1e9:.1f} GB, "
                f"over the {DENSIFY_MAX_ENTRIES:,}-entry limit; reduce the dimension first "
                "(e.g. sklearn.decomposition.TruncatedSVD)"
            )
        warnings.warn(
            f"{name} is a sparse matrix of shape {X.shape}; densified (batch normalization centers every "
            "column, which makes the data dense anyway)",
            DataConversionWarning,
            stacklevel=3,
        )
        X = X.toarray()
    if isinstance(X, np.ndarray):
        if X.dtype.kind in "USa":
            raise TypeError(
                f"{name} holds strings (dtype {X.dtype}); convexbn needs numeric data: convert it, e.g. "
                f"{name}.astype(float), or encode categorical columns (sklearn.preprocessing.OneHotEncoder)"
            )
        if X.dtype == object:
            try:
                X = X.astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise TypeError(
                    f"{name} is an object array with non-numeric entries ({exc}); convexbn needs numeric "
                    "data: encode categorical columns first (sklearn.preprocessing.OneHotEncoder)"
                ) from None
        if X.ndim == 1:
            raise ValueError(
                f"{name} must be 2-D of shape (n_samples, n_features), got a 1-D array of shape {X.shape}. "
                f"Reshape your data: {name}.reshape(-1, 1) for a single feature or {name}.reshape(1, -1) "
                "for one sample"
            )
    return X


def check_data(X, *, name: str = "X", min_samples: int = 2) -> np.ndarray:
    """Return ``X`` as a finite float64 array of shape (n, d) with n >= ``min_samples``.

    Accepts NumPy arrays, array-likes, pandas DataFrames, torch tensors and (densified, with a
    warning) SciPy sparse matrices; see :func:`prepare_data`.
    """
    return check_array(
        prepare_data(X, name=name),
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


def available_memory() -> int:
    """Bytes of memory this process may still use: ``MemAvailable`` of ``/proc/meminfo`` where there is
    one, else the physical memory (``os.sysconf``), else 64 GiB."""
    import os

    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 64 * 2**30


def check_allocation(nbytes: float, what: str, hint: str = "") -> None:
    """Refuse up front (``MemoryError`` with the size named) an allocation above the available memory,
    instead of failing half-way or driving the machine into swap."""
    available = available_memory()
    if nbytes > available:
        raise MemoryError(
            f"{what} needs about {nbytes / 2**30:.1f} GiB, and {available / 2**30:.1f} GiB of memory is "
            f"available{'; ' + hint if hint else ''}"
        )


def check_choice(value, name: str, choices) -> str:
    """Return ``value`` if it is one of ``choices`` (strings), else raise naming the options."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {sorted(choices)}; got {value!r}")
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {sorted(choices)}")
    return value
