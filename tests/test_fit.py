"""The fit core (convexbn.fit): its defaults against independent references.

Enumerated arrangements give the certified global optimum; the search, the bounds and the critical beta are
checked against it, and Adam-trained BN networks (objective (3) by a plain forward pass) are never below it.
"""

import dataclasses
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

import convexbn.fit as fit_module
from convexbn import ConvexBNClassifier, ConvexBNProblem, ConvexBNRegressor, bn_basis, make_arrangements
from convexbn.certificate import dual_values, pattern_dual_values
from convexbn.fit import (
    AUTO_BETA_FRACTION,
    SearchOptions,
    choose_solver,
    estimate_critical_beta,
    fit_convex_bn,
)
from convexbn.problem import SolverWarning
from convexbn.training import train_bn_network


@pytest.fixture(scope="module")
def small():
    """n = 20 points in 2-D: Cover's bound 2 (1 + 19 + 171) = 382 patterns, enumerable in seconds."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((20, 2))
    y = np.sin(2 * X[:, 0]) + 0.5 * X[:, 1] ** 2
    labels = np.where(X[:, 0] * X[:, 1] + 0.2 * rng.standard_normal(20) > 0, 1.0, -1.0)
    return X, y, labels


def _enumerated_optimum(X, y, beta, loss):
    """The global optimum over every pattern, solved directly (not by the fit core): Clarabel for the
    squared loss, the torch solver to a 1e-9 certified gap for the logistic loss (where Clarabel's
    exponential cones fail at this size)."""
    basis = bn_basis(X)
    arrangements = make_arrangements(basis, 1, method="exact", max_patterns=20_000)
    problem = ConvexBNProblem(basis, arrangements, y, beta=beta, loss=loss)
    if loss == "squared":
        solution = problem.solve("clarabel", tol_gap_abs=1e-9, tol_gap_rel=1e-9, tol_feas=1e-9)
    else:
        solution = problem.solve("torch", tol=1e-9, max_iter=200_000)
    assert solution.status == "optimal"
    return solution, arrangements


#: Weight decays below the critical beta of each task (the networks are not empty)
BETA = {"squared": 0.5, "logistic": 0.1}


@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_auto_enumerates_small_problems_and_certifies_the_global_optimum(small, loss):
    X, y, labels = small
    X, y, labels = X[:12], y[:12], labels[:12]  # Cover's bound 2 (1 + 11 + 55) = 134: auto enumerates
    target, beta = (y if loss == "squared" else labels), BETA[loss]
    fit = fit_convex_bn(X, [target], beta, loss=loss, solver_options={"tol": 1e-8}, random_state=0)
    reference, arrangements = _enumerated_optimum(X, target, beta, loss)
    assert fit.method == "enumerate" and fit.n_arrangements == arrangements.n_patterns
    assert fit.certified and fit.gap <= 1e-4
    assert fit.objective == pytest.approx(reference.objective, rel=1e-6)
    assert fit.lower_bound <= reference.objective * (1 + 1e-9)
    # the recovered network's plain forward pass is the same objective (3)
    assert fit.network.objective(X, target) == pytest.approx(fit.objective, rel=1e-9)
    # Adam from several starts never goes below a certified global optimum, and gets close to it
    best = min(
        train_bn_network(X, target, max(fit.network.n_neurons, 4), beta, loss=loss, epochs=600,
                         random_state=s).best_objective
        for s in range(3)
    )  # fmt: skip
    assert best >= fit.lower_bound - 1e-8
    assert best >= reference.objective * (1 - 1e-6)


@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_search_reaches_the_enumerated_optimum_from_a_small_sample(small, loss):
    X, y, labels = small
    target, beta = (y if loss == "squared" else labels), BETA[loss]
    reference, _ = _enumerated_optimum(X, target, beta, loss)
    sampled = fit_convex_bn(X, [target], beta, loss=loss, arrangements="sample", n_arrangements=6,
                            random_state=0)  # fmt: skip
    searched = fit_convex_bn(X, [target], beta, loss=loss, arrangements="search", n_arrangements=6,
                             search=SearchOptions(rounds=15), random_state=0)  # fmt: skip
    assert searched.method == "search" and sampled.method == "sample"
    opt = reference.objective
    # the sample alone stays well above the optimum; the search closes the gap to its tolerance
    assert sampled.objective > opt * 1.02
    assert opt * (1 - 1e-6) <= searched.objective <= opt * (1 + 2e-3)
    # every reported bound is below the optimum it claims to bound
    for fit in (sampled, searched):
        assert fit.lower_bound <= opt * (1 + 1e-9)
        assert not fit.certified
    assert searched.estimated_lower_bound <= opt * (1 + 1e-6)
    assert searched.estimated_gap < sampled.estimated_gap
    # the history: one entry per round, more patterns, objectives falling to the reported one
    h = searched.history
    assert [r["round"] for r in h] == list(range(len(h))) and len(h) > 1
    assert h[-1]["n_patterns"] > h[0]["n_patterns"]
    assert h[-1]["objective"] == pytest.approx(searched.objective)


def test_pattern_dual_values_matches_the_bvls_certificate(small):
    X, y, _ = small
    basis = bn_basis(X)
    arrangements = make_arrangements(basis, 25, method="sample", random_state=1)
    lam = np.random.default_rng(2).standard_normal((20, 2))
    batched = pattern_dual_values(basis.Uprime, arrangements.mask, lam)
    reference = dual_values(basis.Uprime, arrangements.mask, lam)
    np.testing.assert_allclose(batched, reference, rtol=1e-8, atol=1e-10)


def test_critical_beta_and_beta_auto(small):
    X, y, _ = small
    basis = bn_basis(X)
    everything = make_arrangements(basis, 1, method="exact", max_patterns=20_000)
    lam0 = y[:, None].copy()  # -grad of the squared loss at F = 0
    exact = float(pattern_dual_values(basis.Uprime, everything.mask, lam0).max())
    estimate = estimate_critical_beta(basis, y, "squared", random_state=0)
    assert estimate <= exact * (1 + 1e-9) and estimate >= 0.95 * exact
    # above the critical beta the network is empty; just below it is not (every pattern enumerated)
    X, y = X[:12], y[:12]
    basis = bn_basis(X)
    everything = make_arrangements(basis, 1, method="exact", max_patterns=20_000)
    exact = float(pattern_dual_values(basis.Uprime, everything.mask, y[:, None].copy()).max())
    empty = fit_convex_bn(X, [y], exact * 1.01, arrangements="enumerate", solver="clarabel")
    assert empty.network.n_neurons == 0
    below = fit_convex_bn(X, [y], exact * 0.9, arrangements="enumerate", solver="clarabel")
    assert below.network.n_neurons > 0
    auto = fit_convex_bn(X, [y], "auto", random_state=0)  # its own estimate of this data's critical beta
    assert 0.95 * AUTO_BETA_FRACTION * exact <= auto.beta <= AUTO_BETA_FRACTION * exact * (1 + 1e-9)


def test_status_optimal_that_the_certificate_contradicts_warns(small, monkeypatch):
    X, y, _ = small
    solve = fit_module._solve

    def inflated(problem, requested, options, warm=None):
        solution, fallback = solve(problem, requested, options, warm)
        Wp, Wn = 1.05 * solution.W_pos, 1.05 * solution.W_neg  # feasible, 5% off the optimum's scale
        worse = dataclasses.replace(solution, W_pos=Wp, W_neg=Wn, objective=problem.objective(Wp, Wn),
                                    info={})  # fmt: skip
        return worse, fallback

    monkeypatch.setattr(fit_module, "_solve", inflated)
    with pytest.warns(SolverWarning, match=r"reported 'optimal' .* dual certificate over its own"):
        fit_convex_bn(X, [y], 0.5, arrangements="sample", n_arrangements=40, solver="clarabel",
                      random_state=0)  # fmt: skip
    monkeypatch.setattr(fit_module, "_solve", solve)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SolverWarning)
        fit_convex_bn(X, [y], 0.5, arrangements="sample", n_arrangements=40, solver="clarabel",
                      random_state=0)  # fmt: skip


def test_choose_solver_is_the_one_decision():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 3))
    basis = bn_basis(X)
    arrangements = make_arrangements(basis, 50, method="sample", random_state=0)
    y = rng.standard_normal(200)
    squared = ConvexBNProblem(basis, arrangements, y, beta=1.0)
    hinge = ConvexBNProblem(basis, arrangements, np.sign(y), beta=1.0, loss="hinge")
    assert choose_solver(squared) == "torch"  # smooth loss, small k: FISTA
    assert choose_solver(hinge) == "clarabel"  # 2 n P = 20,000 rows: at the conic limit
    big = make_arrangements(basis, 60, method="sample", random_state=0)
    assert choose_solver(ConvexBNProblem(basis, big, np.sign(y), beta=1.0, loss="hinge")) == "torch"
    assert choose_solver(squared, "cvxpy") == "clarabel"
    # the estimators use the same function
    reg = ConvexBNRegressor(beta=1e-2, arrangements="sample", n_arrangements=50, random_state=0).fit(X, y)
    assert reg.solver_ == "torch"


def test_estimators_and_fit_core_agree(small):
    X, _, labels = small
    X, labels = X[:12], labels[:12]
    clf = ConvexBNClassifier(random_state=3).fit(X, labels)
    core = fit_convex_bn(X, [labels], "auto", loss="logistic", random_state=np.random.RandomState(3))
    assert clf.objective_ * 12 == pytest.approx(core.objective, rel=1e-12)
    assert clf.beta_ * 12 == pytest.approx(core.beta, rel=1e-12)
    assert clf.lower_bound_ * 12 == pytest.approx(core.lower_bound, rel=1e-12)
    assert clf.certified_ == core.certified and clf.arrangements_method_ == core.method == "enumerate"
    assert clf.gap_ <= 1e-4


def test_fit_core_errors(small):
    X, y, labels = small
    with pytest.raises(ValueError, match="beta must be a positive number or 'auto', got 'big'"):
        fit_convex_bn(X, [y], "big")
    with pytest.raises(ValueError, match="arrangements='search' needs a smooth loss"):
        fit_convex_bn(X, [labels], 1.0, loss="hinge", arrangements="search")
    with pytest.raises(ValueError, match="unknown arrangements 'all'"):
        fit_convex_bn(X, [y], 1.0, arrangements="all")
    with pytest.raises(ValueError, match="time_limit must be > 0"):
        SearchOptions(time_limit=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        fit_convex_bn(X, [y], 1.0, arrangements="sample", n_arrangements=10, random_state=0)
