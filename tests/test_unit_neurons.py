"""The shared program over unit neurons (convexbn.unit_neurons, docs/math.md section 8): its points are
points of (8a) with the same objective, its search reaches the certified optimum of the exact oracle,
its local slide never raises the objective, and ``"auto"`` takes it for wide inputs."""

import numpy as np
import pytest
import threadpoolctl
import torch

from convexbn import bn_basis, fit_convex_bn
from convexbn.fit_common import SearchOptions
from convexbn.losses import get_loss
from convexbn.neuron_merge import merge_duplicate_neurons
from convexbn.recovery import recover_shared_network
from convexbn.solvers.torch.threads import ONE_THREAD_MAX_WORK
from convexbn.unit_neurons import (
    UNIT_NEURONS_MIN_SIZE,
    search_unit_neurons,
    slide_neurons,
    unit_neuron_solution,
    unit_threads,
)


def tiny(d, n=12, C=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal((n, C))


def direct_objective(U, Y, Z, V, beta, loss="squared"):
    F = np.maximum(U @ Z.T, 0) @ V
    return get_loss(loss).value(F, Y) + beta * np.linalg.norm(V, axis=1).sum()


def test_a_unit_neuron_point_is_a_point_of_8a_with_the_same_objective():
    X, Y = tiny(3, n=30, seed=4)
    basis = bn_basis(X)
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((5, basis.dim))
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    V = rng.standard_normal((5, 3))
    V[2] = 0.0  # a dead neuron is dropped
    sol = unit_neuron_solution(basis, Y, Z, V, 0.4, get_loss("squared"), status="optimal",
                               lower_bound=0.0, seconds=0.0, n_iter=0)  # fmt: skip
    assert sol.W.shape == (4, basis.dim)
    assert sol.constraint_violation == 0.0
    expected = direct_objective(basis.Uprime, Y, Z, V, 0.4)
    assert sol.objective == pytest.approx(expected, rel=1e-12)
    # and the network recovered from it, by a plain forward pass of objective (3)
    assert recover_shared_network(sol).objective(X, Y) == pytest.approx(expected, rel=1e-10)


def test_slide_never_raises_the_objective_and_lowers_it_from_a_rough_start():
    X, Y = tiny(3, n=40, seed=5)
    U = bn_basis(X).Uprime
    rng = np.random.default_rng(1)
    Z = rng.standard_normal((4, U.shape[1]))
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    V = 0.1 * rng.standard_normal((4, 3))
    loss = get_loss("squared")
    start = direct_objective(U, Y, Z, V, 0.2)
    Z0, V0, same = slide_neurons(U, Y, Z, V, 0.2, loss, max_iter=0)
    assert same == pytest.approx(start, rel=1e-14) and np.array_equal(Z0, Z) and np.array_equal(V0, V)
    Z1, V1, value = slide_neurons(U, Y, Z, V, 0.2, loss, max_iter=30)
    assert value < 0.9 * start
    assert value == pytest.approx(direct_objective(U, Y, Z1, V1, 0.2), rel=1e-12)
    np.testing.assert_allclose(np.linalg.norm(Z1, axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize("d", [1, 2])
def test_the_search_reaches_the_certified_optimum_of_the_exact_oracle(d):
    X, Y = tiny(d)
    certified = fit_convex_bn(X, [Y], 0.3, neurons="shared", random_state=0)
    assert certified.method == "enumerate" and certified.certified
    sol, history, oracle = search_unit_neurons(bn_basis(X), Y, 0.3, gap_tol=1e-7, rounds=40, tol=1e-8,
                                               random_state=0)  # fmt: skip
    # a real point: never below the certified lower bound; and the search gets within 5e-4 of the optimum
    # (it is a local search: over seeds 0-7 it ended 7e-8 to 2.5e-6 above at d = 1, 4e-5 to 2.5e-4 at d = 2,
    # with the oracle's ascent in float32 or float64 alike)
    assert sol.objective >= certified.lower_bound - 1e-9 * abs(certified.lower_bound)
    assert sol.objective == pytest.approx(certified.objective, rel=5e-4)
    assert [h["objective"] for h in history][-1] == pytest.approx(sol.objective, rel=1e-12)
    assert oracle["exact"] is False and oracle["value"] <= 0.3 * (1 + 1e-3)


def test_a_warm_start_keeps_the_previous_objective():
    X, Y = tiny(2, n=30, seed=3)
    basis = bn_basis(X)
    first, _, _ = search_unit_neurons(basis, Y, 0.5, rounds=5, random_state=0)
    again, history, _ = search_unit_neurons(basis, Y, 0.5, rounds=0, warm=(first.atoms, first.W),
                                            random_state=1)  # fmt: skip
    # no round: only the output rows of the same neurons re-solved, from the previous point
    assert len(history) == 1 and history[0]["n_added"] == 0
    assert again.n_neurons <= first.n_neurons
    assert again.objective <= first.objective * (1 + 1e-8)
    assert again.objective >= first.objective * (1 - 1e-4)  # (both solved to the lasso's tol 1e-4)


def test_auto_takes_unit_neurons_for_the_search_above_the_size_and_atoms_otherwise():
    rng = np.random.default_rng(0)
    n, d = 220, 140  # k = 141: FISTA's cone projections on (8a) would cost k^3 per atom and step
    X = rng.standard_normal((n, d))
    Y = np.where(rng.integers(0, 3, n)[:, None] == np.arange(3), 1.0, -1.0)
    fit = fit_convex_bn(X, [Y], 5.0, loss="logistic", neurons="shared", random_state=0,
                        search=SearchOptions(shared_rounds=3))  # fmt: skip
    assert fit.info["shared_inner"] == "unit_neurons"
    assert fit.programs[0].solution.solver == "torch-unit-neurons:cpu:float64"
    bounds = fit.programs[0].bounds
    assert bounds["equivalence_gap"] <= 1e-10
    assert fit.lower_bound <= fit.estimated_lower_bound <= fit.objective
    # the oracle starts from the live neurons, so it finds at least their own dual values
    assert 0 < bounds["own_value"] <= bounds["found_value"] * (1 + 1e-9)
    # the exact oracle (tiny data) and fixed atoms keep the atoms' program
    Xs, Ys = tiny(2)
    assert fit_convex_bn(Xs, [Ys], 0.3, neurons="shared", random_state=0).info["shared_inner"] == "atoms"
    sampled = fit_convex_bn(X[:, :5], [Y], 5.0, loss="logistic", neurons="shared", arrangements="sample",
                            random_state=0)  # fmt: skip
    assert sampled.info["shared_inner"] == "atoms"
    # small data (n k at most UNIT_NEURONS_MIN_SIZE): the atoms' search, which certifies tighter there
    assert n * 6 <= UNIT_NEURONS_MIN_SIZE < n * 141
    small = fit_convex_bn(X[:, :5], [Y], 5.0, loss="logistic", neurons="shared", arrangements="search",
                          random_state=0, search=SearchOptions(shared_rounds=1))  # fmt: skip
    assert small.info["shared_inner"] == "atoms"


def test_bad_shared_inner_choices_name_the_problem():
    with pytest.raises(ValueError, match="shared_inner"):
        SearchOptions(shared_inner="neurons")
    with pytest.raises(ValueError, match="unit_gap_tol"):
        SearchOptions(unit_gap_tol=-1.0)
    X, Y = tiny(2)
    with pytest.raises(ValueError, match="arrangements='sample'"):
        fit_convex_bn(X, [Y], 0.3, neurons="shared", arrangements="sample",
                      search=SearchOptions(shared_inner="unit_neurons"))  # fmt: skip
    with pytest.raises(ValueError, match="device='cuda'"):
        fit_convex_bn(X, [Y], 0.3, neurons="shared", arrangements="search", solver_options={"device": "cuda"},
                      search=SearchOptions(shared_inner="unit_neurons"))  # fmt: skip


def test_threads_are_chosen_by_size_and_restored_after():
    assert 10 * 3 * 500 < ONE_THREAD_MAX_WORK and unit_threads(10, 3, 500) == 1
    assert unit_threads(10_000, 100, 500, threads=3) == 3
    assert 1 <= unit_threads(10_000, 100, 500) <= torch.get_num_threads()
    before = (torch.get_num_threads(), [p["num_threads"] for p in threadpoolctl.threadpool_info()])
    X, Y = tiny(2, n=30, seed=3)
    sol, _, _ = search_unit_neurons(bn_basis(X), Y, 0.5, rounds=1, threads=1, random_state=0)
    assert sol.n_neurons > 0
    assert (torch.get_num_threads(), [p["num_threads"] for p in threadpoolctl.threadpool_info()]) == before


def test_one_output_of_a_wide_input_takes_the_shared_program():
    """k > FISTA_MAX_DIM, one output column: the shared program with C = 1 (program (4) over every pattern)
    by the unit neurons, not the per-output program's cone projections (docs/solvers.md)."""
    from convexbn import ConvexBNRegressor

    rng = np.random.default_rng(2)
    n, d = 220, 140  # k = 141 > 128
    X = rng.standard_normal((n, d))
    y = X[:, 0] - 2 * np.maximum(X[:, 1], 0) + 0.1 * rng.standard_normal(n)
    fit = fit_convex_bn(X, [y], 20.0, random_state=0, neurons="auto", search=SearchOptions(shared_rounds=2))
    assert fit.info == {"neurons": "shared", "shared_inner": "unit_neurons"}
    assert fit.network.objective(X, y[:, None]) == pytest.approx(fit.objective, rel=1e-10)
    assert fit.lower_bound <= fit.estimated_lower_bound <= fit.objective
    # the route needs the search: a fixed sample stays the per-output program
    sampled = fit_convex_bn(X, [y], 20.0, arrangements="sample", n_arrangements=5, random_state=0,
                            neurons="auto")  # fmt: skip
    assert sampled.info.get("neurons") != "shared" and sampled.method == "sample"
    # and the estimator's default reaches it
    reg = ConvexBNRegressor(beta=20.0 / n, search_rounds=2, random_state=0).fit(X, y)
    assert reg.neurons_ == "shared"


@pytest.mark.parametrize("d", [1, 2])
def test_the_shared_program_with_one_output_is_program_4_over_every_pattern(d):
    """Independent programs and solvers, both certified on every pattern: the shared program (8a) with
    C = 1 (exact oracle, atoms) and the per-output program (4) (enumerated patterns, torch FISTA)."""
    X, Y = tiny(d)
    y = Y[:, 0]
    shared = fit_convex_bn(X, [y], 0.3, neurons="shared", random_state=0)
    per = fit_convex_bn(X, [y], 0.3, neurons="per_output", random_state=0)
    assert shared.info["neurons"] == "shared" and shared.certified and per.certified
    assert shared.objective == pytest.approx(per.objective, rel=1e-4)
    assert shared.lower_bound <= per.objective and per.lower_bound <= shared.objective


def test_one_output_above_small_data_takes_the_shared_program_but_not_the_closed_form():
    rng = np.random.default_rng(4)
    n, d = 600, 20  # k = 21 <= 128, n k = 12,600 > UNIT_NEURONS_MIN_SIZE
    X = rng.standard_normal((n, d))
    y = np.maximum(X[:, 0], 0) - X[:, 1] + 0.1 * rng.standard_normal(n)
    assert n * (d + 1) > UNIT_NEURONS_MIN_SIZE
    fit = fit_convex_bn(X, [y], 30.0, neurons="auto", random_state=0, search=SearchOptions(shared_rounds=2))
    assert fit.info == {"neurons": "shared", "shared_inner": "unit_neurons"}
    assert fit.network.objective(X, y[:, None]) == pytest.approx(fit.objective, rel=1e-10)
    # the library routine's own default is the estimators' "auto": the same fit, the same objective
    default = fit_convex_bn(X, [y], 30.0, random_state=0, search=SearchOptions(shared_rounds=2))
    assert default.info == fit.info and default.objective == fit.objective
    assert fit_convex_bn(X, [y], 30.0, neurons="per_output", random_state=0).info.get("neurons") is None
    # small data stays per-output (its shared program would run on atoms, slower there)
    small = fit_convex_bn(X[:100, :5], [y[:100]], 3.0, neurons="auto", random_state=0)
    assert 100 * 6 <= UNIT_NEURONS_MIN_SIZE and small.info.get("neurons") is None
    # the closed form (squared loss, rank + 1 = n) keeps its exact per-output route
    Xw = rng.standard_normal((150, 200))
    wide = fit_convex_bn(Xw, [Xw[:, 0]], 1.0, neurons="auto", random_state=0)
    assert wide.info.get("neurons") is None and wide.solver == "closed_form"


def test_merging_near_copies_of_a_neuron_never_raises_the_objective():
    """merge_duplicate_neurons: copies with one pattern and one output direction become one neuron with the
    same predictions and a penalty no larger; a merge that would raise the objective is not made."""
    X, Y = tiny(3, n=40, C=1, seed=5)
    basis, loss, beta = bn_basis(X), get_loss("squared"), 0.7
    U = basis.Uprime
    rng = np.random.default_rng(1)
    z = rng.standard_normal(basis.dim)
    z /= np.linalg.norm(z)
    # a near-copy on the same pattern: a small step that crosses no row's hyperplane
    step = rng.standard_normal(basis.dim)
    step *= 0.5 * np.abs(U @ z).min() / (np.linalg.norm(U, axis=1).max() * np.linalg.norm(step))
    near = (z + step) / np.linalg.norm(z + step)
    assert np.array_equal(U @ z >= 0, U @ near >= 0) and 0.999 < z @ near < 1.0
    other = -z  # another pattern: never merged with z
    Z = np.stack([z, z, near, other])
    V = np.array([[0.5], [0.25], [1.0], [-0.3]])
    before = direct_objective(U, Y, Z, V, beta)
    Zm, Vm = merge_duplicate_neurons(U, Y, Z, V, beta, loss)
    assert len(Zm) == 2 and np.allclose(np.linalg.norm(Zm, axis=1), 1.0)
    # the same predictions on the training rows, a strictly smaller penalty (z and near are not parallel)
    np.testing.assert_allclose(np.maximum(U @ Zm.T, 0) @ Vm, np.maximum(U @ Z.T, 0) @ V, rtol=0, atol=1e-12)
    assert np.linalg.norm(Vm, axis=1).sum() < np.linalg.norm(V, axis=1).sum() - 1e-9
    assert direct_objective(U, Y, Zm, Vm, beta) < before
    # exact copies alone: the same objective (to rounding), one neuron
    Z2, V2 = merge_duplicate_neurons(U, Y, Z[:2], V[:2], beta, loss)
    assert len(Z2) == 1 and V2[0, 0] == pytest.approx(0.75, rel=1e-12)
    assert direct_objective(U, Y, Z2, V2, beta) == pytest.approx(direct_objective(U, Y, Z[:2], V[:2], beta),
                                                                 rel=1e-12)  # fmt: skip
    # any two neurons tried (min_cos=-1), random ones: only merges that do not raise the objective are made
    Zr = rng.standard_normal((12, basis.dim))
    Zr /= np.linalg.norm(Zr, axis=1, keepdims=True)
    Vr = np.abs(rng.standard_normal((12, 1)))
    Yr = np.maximum(U @ Zr.T, 0) @ Vr  # fitted exactly by the 12: merging costs fit, saves penalty
    start = direct_objective(U, Yr, Zr, Vr, 0.01)
    Zk, Vk = merge_duplicate_neurons(U, Yr, Zr, Vr, 0.01, loss, min_cos=-1.0)
    assert direct_objective(U, Yr, Zk, Vk, 0.01) <= start * (1 + 1e-12)
    assert 1 < len(Zk) < 12  # some merges were made, some refused
    # several outputs: parallel output rows merge (their sum), others are not tried (a neuron the optimum
    # may need: the oracle's new neurons start from the live ones)
    Y2 = np.hstack([Y, -Y])
    Zs, Vs = merge_duplicate_neurons(U, Y2, Z[:2], np.array([[0.5, 0.5], [0.25, 0.25]]), beta, loss)
    assert len(Zs) == 1 and np.allclose(Vs, [[0.75, 0.75]], rtol=0, atol=1e-12)
    assert len(merge_duplicate_neurons(U, Y2, Z[:2], np.array([[0.5, 0.0], [0.0, 0.5]]), beta, loss)[0]) == 2


def test_the_search_merges_the_near_copies_it_spreads_its_weight_over():
    """The wide test problem near its critical beta: without the merge the output lasso kept hundreds of
    near-copies (411 live neurons in a development run); with it, a few, at no higher objective."""
    rng = np.random.default_rng(2)
    n, d = 220, 140
    X = rng.standard_normal((n, d))
    y = X[:, 0] - 2 * np.maximum(X[:, 1], 0) + 0.1 * rng.standard_normal(n)
    spread = fit_convex_bn(X, [y], 20.0, random_state=0, search=SearchOptions(merge_min_cos=None))
    merged = fit_convex_bn(X, [y], 20.0, random_state=0)
    assert merged.info["shared_inner"] == "unit_neurons"
    assert merged.network.n_neurons * 4 < spread.network.n_neurons
    assert merged.objective <= spread.objective * (1 + 1e-3)  # (the search stops at an estimated 3e-3)
    assert merged.network.objective(X, y[:, None]) == pytest.approx(merged.objective, rel=1e-10)
    assert merged.estimated_lower_bound <= merged.objective
    with pytest.raises(ValueError, match="merge_min_cos"):
        SearchOptions(merge_min_cos=2.0)
