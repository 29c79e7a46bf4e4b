"""Property-based checks (hypothesis) over random shapes, scales and betas: the equivalence (3) == (4)
and the validation paths. Derandomized and bounded so the suite stays fast and reproducible."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convexbn import ConvexBNProblem, ConvexBNRegressor, bn_basis, recover_network, sample_arrangements

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])  # fmt: skip


@st.composite
def problems(draw):
    n = draw(st.integers(3, 25))
    d = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    log_scales = draw(st.lists(st.floats(-6, 6), min_size=d, max_size=d))
    log_beta = draw(st.floats(-3, 1))
    loss = draw(st.sampled_from(["squared", "logistic", "hinge"]))
    P = draw(st.integers(1, 12))
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * 10.0 ** np.array(log_scales) + rng.standard_normal(d)
    y = rng.standard_normal(n)
    if loss != "squared":
        y = np.where(y > 0, 1.0, -1.0)
    return X, y, 10.0**log_beta, loss, P, seed


@SETTINGS
@given(problems())
def test_convex_optimum_equals_recovered_forward_objective(case):
    X, y, beta, loss, P, seed = case
    basis = bn_basis(X)
    problem = ConvexBNProblem(
        basis, sample_arrangements(basis, P, random_state=seed), y, beta=beta, loss=loss
    )
    sol = problem.solve("clarabel")
    net = recover_network(sol)
    assert sol.constraint_violation < 1e-7
    assert net.objective(X, y) == pytest.approx(sol.objective, rel=1e-6, abs=1e-9)
    # the empty network is feasible, so the optimum is never above its objective
    empty = problem.objective(np.zeros_like(sol.W_pos), np.zeros_like(sol.W_neg))
    assert sol.objective <= empty * (1 + 1e-6) + 1e-9


@SETTINGS
@given(
    n=st.integers(3, 10),
    d=st.integers(1, 3),
    seed=st.integers(0, 2**31 - 1),
    log_scales=st.lists(st.floats(-4, 4), min_size=3, max_size=3),
    log_beta=st.floats(-2, 0),
)
def test_global_optimum_is_invariant_to_feature_scales(n, d, seed, log_scales, log_beta):
    # BN makes the network class invariant to rescaling features; with every pattern enumerated the
    # global optimum must not move (sampled patterns would differ between the two bases)
    from convexbn import enumerate_arrangements

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = rng.standard_normal(n)
    Xs = X * 10.0 ** np.array(log_scales[:d])
    optima = []
    for data in (X, Xs):
        basis = bn_basis(data)
        sol = ConvexBNProblem(basis, enumerate_arrangements(basis), y, beta=10.0**log_beta).solve("clarabel")
        assert recover_network(sol).objective(data, y) == pytest.approx(sol.objective, rel=1e-6, abs=1e-9)
        optima.append(sol.objective)
    assert optima[0] == pytest.approx(optima[1], rel=1e-6, abs=1e-9)


@SETTINGS
@given(
    n=st.integers(2, 15),
    d=st.integers(1, 5),
    where=st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)),
    bad=st.sampled_from([np.nan, np.inf, -np.inf]),
)
def test_non_finite_data_is_always_named(n, d, where, bad):
    X = np.random.default_rng(n * d).standard_normal((n, d))
    X[where[0] % n, where[1] % d] = bad
    word = "NaN" if np.isnan(bad) else "infinity"
    with pytest.raises(ValueError, match=f"Input X contains {word}"):
        bn_basis(X)
    with pytest.raises(ValueError, match=f"Input X contains {word}"):
        ConvexBNRegressor(n_arrangements=3).fit(X, np.zeros(n))


@SETTINGS
@given(
    beta=st.one_of(st.floats(max_value=0.0, allow_nan=False), st.just(float("nan")), st.just(float("inf")))
)
def test_non_positive_or_non_finite_beta_is_refused(beta):
    X = np.random.default_rng(0).standard_normal((10, 2))
    with pytest.raises(ValueError, match="beta must be"):
        ConvexBNRegressor(beta=beta, n_arrangements=3).fit(X, X[:, 0])


@SETTINGS
@given(shape=st.lists(st.integers(0, 4), min_size=1, max_size=4).filter(lambda s: len(s) != 2 or min(s) < 2))
def test_wrong_shapes_are_refused(shape):
    X = np.zeros(shape)
    with pytest.raises(ValueError, match=r"X must be 2-D|dim \d|sample\(s\)|feature\(s\)|no variance"):
        bn_basis(X)
