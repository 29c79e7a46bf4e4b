"""Data-parallel solves with torch.distributed (Gloo, real processes on this machine): the sharded basis,
patterns, solve, checkpoints and recovered network equal the single-process ones; errors reach every rank."""

import warnings

import numpy as np
import pytest
import torch

from convexbn import ConvexBNProblem, bn_basis, recover_network, sample_arrangements
from convexbn.distributed import (
    Communicator,
    DistributedConvexBNProblem,
    distributed_bn_basis,
    distributed_sample_arrangements,
    fit_distributed,
    launch_local,
    shard_rows,
)

BETA, P = 0.1, 20


def _data(n=60, d=3):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d)) * np.arange(1, d + 1) + 3.0  # uncentered, unequal scales
    y = np.sin(X[:, 0]) + 0.3 * X[:, 1] ** 2 / d
    return X, y


def _network_arrays(net):
    return {"w": net.weights, "gamma": net.gamma, "alpha": net.alpha, "v": net.output}


def _solve_worker(rank, world, options):
    warnings.simplefilter("ignore")
    X, y = _data()
    rows = shard_rows(len(X), rank, world)
    solution, network = fit_distributed(X[rows], y[rows], BETA, n_arrangements=P, random_state=0, **options)
    basis = solution.problem.basis
    return {
        "U": basis.U, "S": basis.S, "V": basis.V, "mean": basis.mean, "n": basis.n_samples,
        "mask": solution.arrangements.mask, "W_pos": solution.W_pos, "W_neg": solution.W_neg,
        "objective": solution.objective, "status": solution.status, "n_iter": solution.n_iter,
        "violation": solution.constraint_violation, "pred": solution.predict_train(),
        "comm": solution.info["communication"], "network": network, **_network_arrays(network),
    }  # fmt: skip


@pytest.fixture(scope="module")
def single():
    X, y = _data()
    basis = bn_basis(X)
    arrangements = sample_arrangements(basis, P, random_state=0)
    # the AL's own point (a sharded solve cannot project it onto the cones over rows it does not hold)
    solution = ConvexBNProblem(basis, arrangements, y, BETA).solve("torch", method="al", certify=False)
    assert solution.status == "optimal"
    return basis, arrangements, solution, recover_network(solution)


# two ranks (a third one on the 2 CI cores tripled the time: 44 s against 20 s, for the same check)
@pytest.mark.parametrize("world", [2])
def test_distributed_solve_equals_single_process(single, world):
    basis, arrangements, solution, network = single
    out = launch_local(_solve_worker, world, ({},), threads=1)
    first = out[0]
    for other in out[1:]:  # every rank took the same steps: bit-for-bit the same variables
        for key in ("W_pos", "W_neg", "objective", "n_iter", "w", "gamma", "alpha", "v", "S", "V"):
            np.testing.assert_array_equal(other[key], first[key])
    # the sharded basis and patterns are the single-process ones, row blocks in rank order
    assert first["n"] == basis.n_samples
    np.testing.assert_allclose(np.vstack([o["U"] for o in out]), basis.U, atol=1e-12)
    np.testing.assert_allclose(first["S"], basis.S, rtol=1e-12)
    np.testing.assert_allclose(first["V"], basis.V, atol=1e-12)
    np.testing.assert_allclose(first["mean"], basis.mean, rtol=1e-14)
    np.testing.assert_array_equal(np.vstack([o["mask"] for o in out]), arrangements.mask)
    # the solve: same status and iterations, objective and variables to 1e-8
    assert first["status"] == solution.status == "optimal"
    assert first["n_iter"] == solution.n_iter
    assert first["objective"] == pytest.approx(solution.objective, rel=1e-8)
    np.testing.assert_allclose(first["W_pos"], solution.W_pos, atol=1e-8)
    np.testing.assert_allclose(first["W_neg"], solution.W_neg, atol=1e-8)
    assert first["violation"] <= 1e-7
    np.testing.assert_allclose(np.vstack([o["pred"] for o in out]), solution.predict_train(), atol=1e-8)
    for key, value in _network_arrays(network).items():
        np.testing.assert_allclose(first[key], value, atol=1e-8, err_msg=key)
    # and the recovered network's plain forward pass on all the data gives the convex objective (AL
    # stops at a relative cone violation of feas_tol = 1e-7, which bounds the difference)
    X, y = _data()
    assert first["network"].objective(X, y) == pytest.approx(first["objective"], rel=1e-7)
    # communication, counted per rank: per iteration one (2 C P k + 1)-float all-reduce for the gradient
    # at the extrapolated point and a scalar one per backtracking trial; the stopping rule's gradient
    # every fifth iteration (half the size in the gated phase); a few small messages per AL round
    comm = first["comm"]
    assert comm["world_size"] == world
    k = basis.dim
    grad_bytes = 8 * (2 * solution.W_pos.shape[1] * k + 1)
    assert 2 * solution.n_iter <= comm["allreduce_calls"] <= 3.5 * solution.n_iter
    assert grad_bytes * solution.n_iter <= comm["allreduce_bytes"] <= 1.5 * grad_bytes * solution.n_iter


def _checkpoint_worker(rank, world, path):
    warnings.simplefilter("ignore")
    X, y = _data()
    rows = shard_rows(len(X), rank, world)
    basis = distributed_bn_basis(X[rows])
    arrangements = distributed_sample_arrangements(basis, P, random_state=0)
    problem = DistributedConvexBNProblem(basis, arrangements, y[rows], BETA)
    cut = problem.solve(checkpoint=path, checkpoint_every=100, max_iter=1000)
    resumed = problem.solve(checkpoint=path, checkpoint_every=100, resume=True)
    return cut.status, cut.n_iter, resumed.status, resumed.n_iter, resumed.W_pos, resumed.objective


def test_distributed_checkpoint_resumes_to_the_uninterrupted_result(single, tmp_path):
    _, _, solution, _ = single
    path = str(tmp_path / "solve.ckpt")
    out = launch_local(_checkpoint_worker, 2, (path,), threads=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["solve.ckpt.rank0-of-2", "solve.ckpt.rank1-of-2"]
    cut_status, cut_iter, status, n_iter, W_pos, objective = out[0]
    assert (cut_status, cut_iter) == ("optimal_inaccurate", 1000)
    assert (status, n_iter) == ("optimal", solution.n_iter)
    np.testing.assert_allclose(W_pos, solution.W_pos, atol=1e-8)
    assert objective == pytest.approx(solution.objective, rel=1e-8)


def _cross_entropy_worker(rank, world):
    warnings.simplefilter("ignore")
    X, y = _data()
    labels = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))
    labels[: len(y) // 2] = np.minimum(labels[: len(y) // 2], 1)  # rank 0 never sees class 2
    rows = shard_rows(len(X), rank, world)
    solution, _ = fit_distributed(X[rows], labels[rows], BETA, n_arrangements=8, random_state=1,
                                  loss="cross_entropy", max_iter=300)  # fmt: skip
    return solution.objective, solution.W_pos.shape


def test_cross_entropy_labels_encode_to_the_global_classes():
    X, y = _data()
    labels = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))
    labels[: len(y) // 2] = np.minimum(labels[: len(y) // 2], 1)
    basis = bn_basis(X)
    arrangements = sample_arrangements(basis, 8, random_state=1)
    problem = ConvexBNProblem(basis, arrangements, labels, BETA, "cross_entropy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = problem.solve("torch", method="al", max_iter=300, certify=False)
    out = launch_local(_cross_entropy_worker, 2, threads=1)
    assert out[0][1] == ref.W_pos.shape == (3, problem.n_patterns, basis.dim)
    assert out[0][0] == pytest.approx(ref.objective, rel=1e-8)


def _bad_input_worker(rank, world, case):
    X, y = _data()
    rows = shard_rows(len(X), rank, world)
    X, y = X[rows].copy(), y[rows]
    if case == "nan" and rank == 1:
        X[0, 0] = np.nan
    if case == "features" and rank == 1:
        X = X[:, :2]
    if case == "method":
        fit_distributed(X, y, BETA, n_arrangements=5, method="fista")
    distributed_bn_basis(X)


@pytest.mark.parametrize(
    "case, message",
    [
        # rank 0 re-raises "rank 1: ..."; rank 1 fails with its own traceback: whichever reports first
        ("nan", r"rank 1(: | failed:\n[\s\S]*ValueError: )Input X contains NaN"),
        ("features", r"same number of features; got \[3, 2\]"),
        ("method", r"runs method='al' only"),
    ],
)
def test_bad_input_raises_on_every_rank(case, message):
    with pytest.raises(RuntimeError, match=message) as info:
        launch_local(_bad_input_worker, 2, (case,), threads=1, timeout=900)
    assert "timed out" not in str(info.value)  # no rank was left waiting in a collective


def test_communicator_needs_an_initialized_process_group():
    assert not torch.distributed.is_initialized()
    with pytest.raises(RuntimeError, match="torch.distributed is not initialized"):
        Communicator()


@pytest.mark.parametrize("n, world", [(10, 3), (7, 2), (5, 5), (100, 4)])
def test_shard_rows_follow_array_split(n, world):
    expected = np.array_split(np.arange(n), world)
    for rank in range(world):
        np.testing.assert_array_equal(np.arange(n)[shard_rows(n, rank, world)], expected[rank])
