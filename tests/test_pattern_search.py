"""Column generation on the patterns: dual values, monotone rounds, exact recovery."""

import numpy as np
import pytest
from conftest import DATASETS

from convexbn import ConvexBNProblem, bn_basis, recover_network, sample_arrangements
from convexbn.certificate import cone_max
from convexbn.pattern_search import _ascent_candidates, candidate_patterns, solve_with_pattern_search


def _setup(P=15):
    X, y = DATASETS["random"]()
    basis = bn_basis(X)
    return X, y, basis, sample_arrangements(basis, P, random_state=0)


def test_candidates_violate_the_dual_and_their_values_are_exact():
    X, y, basis, arr = _setup()
    sol = ConvexBNProblem(basis, arr, y, beta=0.1).solve("clarabel")
    mask, gen, values = candidate_patterns(sol, random_state=0)
    assert mask.shape[1] > 0
    np.testing.assert_array_equal(basis.Uprime @ gen.T >= 0, mask)  # the generators are witnesses
    assert np.all(values > 0.1) and np.all(np.diff(values) <= 0)
    # not already in the problem, and distinct
    cols = {c.tobytes() for c in arr.mask.T}
    assert all(c.tobytes() not in cols for c in mask.T)
    assert len({c.tobytes() for c in mask.T}) == mask.shape[1]
    # each value is the pattern's dual value, computed independently (scipy BVLS, convexbn.certificate)
    lam = -sol.problem.loss.grad(sol.predict_train(), sol.problem.Y)[:, 0]
    U = basis.Uprime
    for j in range(min(5, mask.shape[1])):
        A = np.where(mask[:, j, None], U, -U)
        a = U.T @ (mask[:, j] * lam)
        assert values[j] == pytest.approx(max(cone_max(a, A), cone_max(-a, A)), rel=1e-9)


def test_ascent_bounds_are_certified_lower_bounds_of_the_dual_values():
    X, y, basis, arr = _setup()
    sol = ConvexBNProblem(basis, arr, y, beta=0.1).solve("clarabel")
    lam = -sol.problem.loss.grad(sol.predict_train(), sol.problem.Y)
    rng = np.random.default_rng(0)
    mask, gen, sigma, out, bounds = _ascent_candidates(sol.problem, lam, sol, 200, 10, 0.5, rng)
    assert mask.shape[1] > 10 and np.all(bounds > 0.1) and np.all(np.diff(bounds) <= 0)
    np.testing.assert_array_equal(basis.Uprime @ gen.T >= 0, mask)  # each generator is its pattern's witness
    assert len({c.tobytes() for c in mask.T}) == mask.shape[1]
    U = basis.Uprime
    for j in range(0, mask.shape[1], max(1, mask.shape[1] // 8)):
        A = np.where(mask[:, j, None], U, -U)
        exact = cone_max(sigma[j] * (U.T @ (mask[:, j] * lam[:, out[j]])), A)  # scipy BVLS, independent
        assert exact >= bounds[j] * (1 - 1e-9)


def test_ascent_oracle_lowers_the_optimum_further_than_fixed_points_alone():
    X, y, basis, arr = _setup()
    runs = {
        n_starts: solve_with_pattern_search(basis, arr, y, 0.1, rounds=6, tol=1e-8, round_tol=1e-3,
                                            n_starts=n_starts, random_state=0)[0]  # fmt: skip
        for n_starts in (0, 300)
    }
    assert runs[300].objective < runs[0].objective * (1 - 1e-2)  # 3.694 against 3.811 (measured)
    assert runs[300].objective == pytest.approx(runs[300].problem.solve("clarabel").objective, rel=1e-6)
    assert recover_network(runs[300]).objective(X, y) == pytest.approx(runs[300].objective, rel=1e-9)


def test_rounds_lower_the_objective_and_recovery_stays_exact():
    X, y, basis, arr = _setup()
    sol, history = solve_with_pattern_search(basis, arr, y, 0.1, rounds=3, tol=1e-8)
    objectives = [h["objective"] for h in history]
    assert history[0]["n_patterns"] == arr.n_patterns
    assert all(b <= a * (1 + 1e-8) for a, b in zip(objectives, objectives[1:], strict=False))
    # the first added patterns violated the dual constraint, so the optimum dropped strictly
    assert history[0]["max_dual_value"] > 0.1 and objectives[1] < objectives[0] * (1 - 1e-4)
    assert sol.problem.n_patterns == history[-1]["n_patterns"] > arr.n_patterns
    # the last round agrees with Clarabel on its grown pattern set, and its network reproduces it
    ref = sol.problem.solve("clarabel")
    assert sol.objective == pytest.approx(ref.objective, rel=1e-6)
    assert recover_network(sol).objective(X, y) == pytest.approx(sol.objective, rel=1e-9)


def test_loose_rounds_end_with_a_tight_final_solve():
    X, y, basis, arr = _setup()
    sol, history = solve_with_pattern_search(basis, arr, y, 0.1, rounds=3, tol=1e-8, round_tol=1e-3,
                                             random_state=0)  # fmt: skip
    assert sol.status == "optimal" and sol.info["relative_gap"] <= 1e-8
    assert history[-1]["objective"] == sol.objective < history[0]["objective"] * (1 - 1e-4)
    # the final solve is exact on its (grown) pattern set: Clarabel and the forward pass agree
    assert sol.objective == pytest.approx(sol.problem.solve("clarabel").objective, rel=1e-6)
    assert recover_network(sol).objective(X, y) == pytest.approx(sol.objective, rel=1e-9)


def test_pattern_search_errors():
    X, y, basis, arr = _setup()
    with pytest.raises(ValueError, match="needs a smooth loss"):
        solve_with_pattern_search(basis, arr, np.where(y > np.median(y), 1.0, -1.0), 0.1, loss="hinge")
    with pytest.raises(ValueError, match="max_new must be >= 1"):
        solve_with_pattern_search(basis, arr, y, 0.1, max_new=0)
    with pytest.raises(ValueError, match="round_tol needs solver='torch'"):
        solve_with_pattern_search(basis, arr, y, 0.1, solver="clarabel", round_tol=1e-3)
