"""Bad input at the core entry points: each a ValueError/TypeError that names the problem."""

import numpy as np
import pytest

from convexbn import ConvexBNProblem, bn_basis, recover_network, sample_arrangements


@pytest.fixture
def setup():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((20, 3)), rng.standard_normal(20)
    basis = bn_basis(X)
    return X, y, basis, sample_arrangements(basis, 10, random_state=0)


@pytest.mark.parametrize(
    "beta, exc, match",
    [
        (0.0, ValueError, "beta must be > 0"),
        (-1.0, ValueError, "beta must be > 0"),
        (float("nan"), ValueError, "beta must be finite"),
        ("0.1", TypeError, "beta must be a real number"),
        (True, TypeError, "beta must be a real number"),
    ],
)
def test_bad_beta(setup, beta, exc, match):
    _, y, basis, arr = setup
    with pytest.raises(exc, match=match):
        ConvexBNProblem(basis, arr, y, beta=beta)


def test_mismatched_target_length(setup):
    _, y, basis, arr = setup
    with pytest.raises(ValueError, match="y has 19 samples but X has 20"):
        ConvexBNProblem(basis, arr, y[:-1], beta=0.1)


@pytest.mark.parametrize(
    "y, loss, match",
    [
        (np.r_[np.nan, np.ones(19)], "squared", "NaN or infinity"),
        (np.r_[np.inf, np.ones(19)], "squared", "NaN or infinity"),
        (np.arange(20.0), "logistic", r"targets in \{-1, \+1\}"),
        (np.zeros(20), "hinge", r"targets in \{-1, \+1\}"),
        (np.zeros(20, dtype=int), "cross_entropy", "at least two classes"),
        (np.array(["a"] * 20), "squared", "targets must be numeric"),
        (np.zeros((20, 2, 2)), "squared", "1-D or 2-D"),
    ],
)
def test_bad_targets(setup, y, loss, match):
    _, _, basis, arr = setup
    with pytest.raises(ValueError, match=match):
        ConvexBNProblem(basis, arr, y, beta=0.1, loss=loss)


def test_unknown_loss_formulation_solver(setup):
    _, y, basis, arr = setup
    with pytest.raises(ValueError, match="unknown loss 'l1'"):
        ConvexBNProblem(basis, arr, y, beta=0.1, loss="l1")
    with pytest.raises(TypeError, match="loss must be a string"):
        ConvexBNProblem(basis, arr, y, beta=0.1, loss=3)
    with pytest.raises(ValueError, match="unknown formulation 'relaxed'"):
        ConvexBNProblem(basis, arr, y, beta=0.1, formulation="relaxed")
    problem = ConvexBNProblem(basis, arr, y, beta=0.1)
    with pytest.raises(ValueError, match="unknown solver 'gurobi'"):
        problem.solve("gurobi")
    with pytest.raises(TypeError, match="solver must be a string"):
        problem.solve(None)


def test_wrong_objects(setup):
    X, y, basis, arr = setup
    with pytest.raises(TypeError, match="basis must be a BNBasis"):
        ConvexBNProblem(X, arr, y, beta=0.1)
    with pytest.raises(TypeError, match="arrangements must be an Arrangements"):
        ConvexBNProblem(basis, arr.mask, y, beta=0.1)
    other = sample_arrangements(bn_basis(X[:10]), 5, random_state=0)
    with pytest.raises(ValueError, match="arrangements have 10 samples, the basis 20"):
        ConvexBNProblem(basis, other, y, beta=0.1)
    with pytest.raises(TypeError, match="expected a ConvexBNSolution"):
        recover_network(basis)


def test_network_rejects_wrong_feature_count(setup):
    X, y, basis, arr = setup
    net = recover_network(ConvexBNProblem(basis, arr, y, beta=0.1).solve())
    with pytest.raises(ValueError, match="X has 4 features, the network expects 3"):
        net.predict(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        net.predict(np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="y encodes to shape"):
        net.objective(X, np.ones((20, 2)))


def test_huge_beta_gives_empty_network(setup):
    X, y, basis, arr = setup
    sol = ConvexBNProblem(basis, arr, y, beta=1e6).solve()
    net = recover_network(sol)
    assert sol.n_neurons == net.n_neurons == 0
    np.testing.assert_array_equal(net.predict(X), 0.0)
    assert net.objective(X, y) == pytest.approx(0.5 * np.sum(y**2), rel=1e-9)
    assert sol.objective == pytest.approx(0.5 * np.sum(y**2), rel=1e-6)
