"""Spectral filters (spec section 9): parsing, cvxpy against the torch solver, recovery and the filtered
equivalence, the estimators' option."""

import warnings

import numpy as np
import pytest
from sklearn.base import clone

from convexbn import (
    ConvexBNClassifier,
    ConvexBNProblem,
    ConvexBNRegressor,
    bn_basis,
    recover_network,
    sample_arrangements,
)
from convexbn.implicit_reg import (
    SpectralFilter,
    filtered_basis,
    implicit_objective,
    spectral_filter,
)
from convexbn.solvers import closed_form_applies


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((36, 5)) * np.array([4.0, 2.0, 1.0, 0.5, 0.25])
    y = np.tanh(X[:, 0] - X[:, 1]) + 0.3 * np.maximum(X[:, 2], 0) + 0.05 * rng.standard_normal(36)
    return X, y


def _problem(X, y, spec, beta=0.5, loss="squared", P=30):
    basis = bn_basis(X, scale_features=False)
    kept, _ = filtered_basis(basis, spec)
    arrangements = sample_arrangements(kept, P, random_state=0)
    return basis, ConvexBNProblem(basis, arrangements, y, beta=beta, loss=loss, implicit_reg=spec)


# --- parsing -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec, expected",
    [
        (None, SpectralFilter()),
        ("none", SpectralFilter()),
        ("power:0.5", SpectralFilter("power", power=0.5)),
        (0.25, SpectralFilter("power", power=0.25)),
        ("power:1,raw", SpectralFilter("power", power=1.0, normalize=False)),
        ("top:3", SpectralFilter("truncate", keep=3)),
        ("tau:0.2", SpectralFilter("truncate", tau=0.2)),
    ],
)
def test_spectral_filter_parses(spec, expected):
    assert spectral_filter(spec) == expected
    assert spectral_filter(str(expected)) == expected  # str round-trips


@pytest.mark.parametrize(
    "spec, error, match",
    [
        ("power:2", ValueError, r"exponent must be in \[0, 1\], got 2"),
        ("top:0", ValueError, "keep must be a positive int"),
        ("top:2.5", ValueError, "integer k"),
        ("tau:1.5", ValueError, r"tau must be in \(0, 1\]"),
        ("whiten", ValueError, "cannot parse implicit_reg='whiten'"),
        ("top:3,raw", ValueError, "applies to the power filter only"),
        ([0.5], TypeError, "implicit_reg must be None, a string"),
    ],
)
def test_spectral_filter_errors(spec, error, match):
    with pytest.raises(error, match=match):
        spectral_filter(spec)


def test_filter_weights():
    S = np.array([8.0, 4.0, 2.0, 1.0])
    np.testing.assert_allclose(spectral_filter("power:0.5").weights(S), [1, 0.5**0.5, 0.5, 0.125**0.5])
    np.testing.assert_allclose(spectral_filter("power:1,raw").weights(S), S)
    np.testing.assert_array_equal(spectral_filter("top:2").weights(S), [1, 1, 0, 0])
    np.testing.assert_array_equal(spectral_filter("tau:0.25").weights(S), [1, 1, 1, 0])
    # tau = 1 keeps the top direction only
    np.testing.assert_array_equal(spectral_filter("tau:1").weights(S), [1, 0, 0, 0])


def test_identity_and_power_zero_are_the_plain_program(data):
    X, y = data
    basis = bn_basis(X)
    arrangements = sample_arrangements(basis, 20, random_state=0)
    plain = ConvexBNProblem(basis, arrangements, y, beta=1.0)
    for spec in ("none", "power:0"):
        problem = ConvexBNProblem(basis, arrangements, y, beta=1.0, implicit_reg=spec)
        np.testing.assert_array_equal(problem.Uprime, plain.Uprime)
        assert problem.basis is basis


# --- solvers agree -----------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["power:0.5", "power:1", "power:1,raw", "top:3", "tau:0.3"])
def test_cvxpy_and_torch_reach_the_same_objective(data, spec):
    X, y = data
    _, problem = _problem(X, y, spec)
    reference = problem.solve("clarabel")
    assert reference.constraint_violation < 1e-6
    # the AL method converges slowly to high accuracy (its iterate is slightly infeasible, so its
    # objective can sit just below the optimum): a looser tolerance for it. On the unnormalized filter
    # (columns scaled by S up to ~25 against the bias column's 1) its first-order inner solves stall
    # far above the optimum (benchmarks/bench_implicit_reg_solvers.py, docs/extensions.md), so it is
    # not run there; FISTA with exact cone projections and ADMM are unaffected
    runs = [("fista", 1e-9, 1e-7), ("admm", 1e-9, 1e-6)]
    if problem.implicit_reg.normalize:
        runs.append(("al", 1e-7, 5e-6))
    for method, tol, rel in runs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sol = problem.solve("torch", method=method, tol=tol, max_iter=50_000)
        assert sol.objective == pytest.approx(reference.objective, rel=rel), method
        assert sol.constraint_violation < 1e-4, method


def test_logistic_filtered_program_cvxpy_vs_torch(data):
    X, y = data
    _, problem = _problem(X, np.where(y > np.median(y), 1.0, -1.0), "power:0.5", beta=0.3, loss="logistic")
    reference = problem.solve("clarabel")
    sol = problem.solve("torch", method="fista", tol=1e-9, max_iter=100_000)
    assert sol.objective == pytest.approx(reference.objective, rel=1e-5)


def test_filter_raises_the_optimum(data):
    """F <= 1 makes every group dearer: optimum(power:1) >= optimum(power:0.5) >= plain optimum (same
    patterns, since a power filter keeps every direction and hence every pattern)."""
    X, y = data
    values = [_problem(X, y, spec)[1].solve("clarabel").objective for spec in (None, "power:0.5", "power:1")]
    assert values[0] < values[1] < values[2]


# --- recovery and the filtered equivalence ------------------------------------------------------------
@pytest.mark.parametrize("spec", ["power:0.5", "power:1", "top:3"])
def test_recovered_network_is_a_bn_network_with_the_filtered_objective(data, spec):
    X, y = data
    basis, problem = _problem(X, y, spec)
    plain = ConvexBNProblem(problem.basis, problem.arrangements, y, beta=problem.beta)
    sol = problem.solve("clarabel")
    network = recover_network(sol)
    # the network's training-mode forward pass reproduces the convex prediction
    np.testing.assert_allclose(network.forward(X, training=True), sol.predict_train(), atol=1e-8)
    # the convex optimum is the filtered objective of the recovered network
    assert implicit_objective(network, X, y, basis, spec) == pytest.approx(sol.objective, rel=1e-8)
    # its plain objective (3) is at most that, and at least the plain program's optimum on the same patterns
    plain_value = plain.solve("clarabel").objective
    assert plain_value - 1e-6 <= network.objective(X, y) <= sol.objective + 1e-9


def test_power_one_is_weight_decay_on_the_unnormalized_weights(data):
    """t = 1 with ``normalize=False``: the network is ``relu(P X w_eff + alpha/sqrt(n))`` with weight decay
    on ``||w_eff||`` (the unwhitened centered data), computed here directly from X."""
    X, y = data
    basis, problem = _problem(X, y, "power:1,raw", beta=2.0)
    network = recover_network(problem.solve("clarabel"))
    H = (X - X.mean(0)) @ network.weights
    w_eff = network.weights * (network.gamma / np.linalg.norm(H, axis=0))  # P X w_eff = gamma * unit
    # recovered weights lie in the row space of P X, so ||w_eff|| is the penalty's norm
    penalty = np.sum(w_eff**2) + np.sum(network.alpha**2) + np.sum(network.output**2)
    F = np.maximum((X - X.mean(0)) @ w_eff + network.alpha / np.sqrt(len(X)), 0) @ network.output
    direct = 0.5 * np.sum((F[:, 0] - y) ** 2) + 0.5 * problem.beta * penalty
    assert direct == pytest.approx(problem.solve("clarabel").objective, rel=1e-7)


def test_truncated_program_uses_only_the_leading_directions(data):
    X, y = data
    basis, problem = _problem(X, y, "top:2")
    assert problem.basis.rank == 2 and problem.dim == 3
    network = recover_network(problem.solve("clarabel"))
    H = (X - X.mean(0)) @ network.weights
    U2 = basis.U[:, :2]
    np.testing.assert_allclose(U2 @ (U2.T @ H), H, atol=1e-8)
    # a network using a dropped direction is outside the truncated model
    network.weights[:, 0] = basis.directions_to_weights(np.eye(basis.rank)[:, [4]])[:, 0]
    network.gamma[0] = 1.0
    assert implicit_objective(network, X, y, basis, "top:2") == np.inf


def test_closed_form_refuses_a_weighted_basis():
    X = np.random.default_rng(0).standard_normal((6, 10))
    basis = bn_basis(X)
    arrangements = sample_arrangements(basis, 10, random_state=0)
    y = np.arange(6.0)
    assert closed_form_applies(ConvexBNProblem(basis, arrangements, y, 0.1))[0]
    ok, reason = closed_form_applies(ConvexBNProblem(basis, arrangements, y, 0.1, implicit_reg="power:0.5"))
    assert not ok and "implicit_reg='power:0.5'" in reason


# --- estimators ---------------------------------------------------------------------------------------
def test_estimator_option(data, tmp_path):
    X, y = data
    same = {"beta": 0.01, "n_arrangements": 20, "random_state": 0, "implicit_reg": "power:0.5"}
    reg = ConvexBNRegressor(arrangements="sample", solver="clarabel", **same).fit(X, y)
    assert reg.equivalence_gap_ < 1e-6
    # the default (pattern search on the filtered basis) is below the sampled program, still exact
    searched = ConvexBNRegressor(**same).fit(X, y)
    assert searched.equivalence_gap_ < 1e-6 and searched.objective_ < reg.objective_
    basis = bn_basis(X)
    kept, _ = filtered_basis(basis, "power:0.5")
    problem = ConvexBNProblem(
        basis, sample_arrangements(kept, 20, random_state=np.random.RandomState(0)), y, beta=0.01 * len(X),
        implicit_reg="power:0.5",
    )
    assert reg.objective_ * len(X) == pytest.approx(problem.solve("clarabel").objective, rel=1e-6)
    assert clone(reg).get_params()["implicit_reg"] == "power:0.5"
    reg.save(tmp_path / "m.npz")
    loaded = ConvexBNRegressor.load(tmp_path / "m.npz")
    assert loaded.implicit_reg == "power:0.5"
    np.testing.assert_array_equal(loaded.predict(X), reg.predict(X))
    with pytest.raises(ValueError, match="cannot parse implicit_reg='bogus'"):
        ConvexBNClassifier(implicit_reg="bogus").fit(X, y > 0)
    with pytest.raises(TypeError, match="implicit_reg must be None, a string"):
        ConvexBNClassifier(implicit_reg=SpectralFilter()).fit(X, y > 0)


def test_experiment_rows_are_the_programs_they_name():
    from sklearn.datasets import load_breast_cancer

    from convexbn.compare_experiments import implicit_reg_experiment
    from convexbn.data import split_and_standardize

    X, y = load_breast_cancer(return_X_y=True)
    X_tr, X_te, y_tr, y_te = split_and_standardize(X[:120], y[:120], test_size=0.3)
    rows = implicit_reg_experiment(
        X_tr, y_tr, X_te, y_te, betas=[1e-2], filters=[None, "power:0.5"], n_arrangements=15, n_neurons=10,
        epochs=200, solver="clarabel", add_sgd_patterns=True,
    )
    sgd, plain, filtered = rows
    # with the SGD network's patterns, the plain program's optimum is at most SGD's objective (3)
    assert plain["objective"] <= sgd["objective"] + 1e-6
    assert filtered["objective"] >= plain["objective"]  # same patterns, F <= 1
    # the filtered row is the filtered program on the same patterns, solved again here
    import torch

    from convexbn import merge_arrangements, network_arrangements
    from convexbn.nn import TwoLayerNet, train_network

    n = X_tr.shape[0]
    Y = np.where(y_tr == 1, 1.0, -1.0)
    gen = torch.Generator().manual_seed(0)
    model = TwoLayerNet(X_tr.shape[1], 10, 1, n_train=n, init_scale=0.1, generator=gen)
    train_network(model, X_tr, Y, beta=1e-2 * n, optimizer="sgd", lr=0.05 / n, epochs=200, record_every=200,
                  random_state=0)  # fmt: skip
    net = model.to_network(X_tr, 1e-2 * n)
    assert net.objective(X_tr, Y) == pytest.approx(sgd["objective"], rel=1e-10)
    basis = bn_basis(X_tr)
    sampled = sample_arrangements(basis, 15, random_state=0)
    arrangements = merge_arrangements(sampled, network_arrangements(basis, net))
    problem = ConvexBNProblem(basis, arrangements, Y, 1e-2 * n, implicit_reg="power:0.5")
    assert problem.solve("clarabel").objective == pytest.approx(filtered["objective"], rel=1e-9)
