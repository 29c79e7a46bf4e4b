import importlib.util
import os

# set before scipy is first imported: lets sklearn's check_array_api_input run (test_estimator_checks.py)
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402


def _random(n, d, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.sin(2 * X[:, 0]) + 0.5 * X[:, 1] + 0.1 * rng.standard_normal(n)
    return X, y


def _rank_deficient(seed=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((40, 3))
    # duplicated column, an exact linear combination and a constant column: centered rank 3
    X = np.column_stack([X, X[:, 0], X[:, 1] - 2 * X[:, 2], np.full(40, 7.0)])
    y = X[:, 0] - np.abs(X[:, 1])
    return X, y


def _wide(seed=2):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((15, 30))  # d > n: overparameterized
    return X, rng.standard_normal(15)


def _breast_cancer():
    X, y = load_breast_cancer(return_X_y=True)
    idx = np.random.default_rng(0).choice(len(y), 60, replace=False)
    return StandardScaler().fit_transform(X[idx][:, :8]), 2.0 * y[idx] - 1.0


def _diabetes():
    X, y = load_diabetes(return_X_y=True)
    return StandardScaler().fit_transform(X[:60]), (y[:60] - y[:60].mean()) / y[:60].std()


def _iris():
    X, y = load_iris(return_X_y=True)
    idx = np.arange(0, 150, 3)
    return StandardScaler().fit_transform(X[idx]), y[idx]


DATASETS = {
    "random": lambda: _random(50, 5, 0),
    "rank_deficient": _rank_deficient,
    "wide_d_gt_n": _wide,
    "breast_cancer": _breast_cancer,
    "diabetes": _diabetes,
    "iris": _iris,
}


@pytest.fixture(params=sorted(DATASETS))
def dataset(request):
    X, y = DATASETS[request.param]()
    return request.param, X, y


def to_pm1(y):
    """Binary +-1 targets from any 1-D target (sign around the median)."""
    return np.where(y > np.median(y), 1.0, -1.0)


# the optional numba (the compiled cone projections): its tests skip without it; CI installs it ([test])
HAS_NUMBA = importlib.util.find_spec("numba") is not None
NEEDS_NUMBA = pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")
