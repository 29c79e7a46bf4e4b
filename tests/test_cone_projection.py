"""The cone projection (Goldfarb-Idnani; batched torch and compiled numba) against scipy's bounded least
squares, and the two implementations against each other."""

import importlib.util
import os

import numpy as np
import pytest
import torch
from conftest import HAS_NUMBA, NEEDS_NUMBA

from convexbn import bn_basis, sample_arrangements
from convexbn.certificate import cone_max
from convexbn.solvers.torch.projection import (
    NumbaBasis,
    ProjectionMemory,
    project_cones,
    resolve_projection_backend,
)

BACKENDS = ["torch", pytest.param("numba", marks=NEEDS_NUMBA)]


def _cones(n=120, d=5, P=25, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    basis = bn_basis(X)
    mask = sample_arrangements(basis, P, random_state=seed).mask
    signs = np.where(mask, 1.0, -1.0).T  # (P, n)
    return basis.Uprime, signs, rng


def _reference(a, Uprime, signs):
    """Pi_K(a) by BVLS on the dual NNLS (the certificate module's route)."""
    from scipy.optimize import lsq_linear

    A = signs[:, None] * Uprime
    if np.all(A @ a >= 0):
        return a
    mu = lsq_linear(A.T, -a, bounds=(0.0, np.inf), method="bvls", tol=1e-12).x
    return a + A.T @ mu


@pytest.mark.parametrize("backend", BACKENDS)
def test_projection_is_exact_feasible_and_warm_starts_agree(backend):
    Up, signs, rng = _cones()
    a = rng.standard_normal((signs.shape[0], Up.shape[1]))
    T = lambda x: torch.as_tensor(x, dtype=torch.float64)  # noqa: E731
    cold = project_cones(T(a), T(Up), T(signs), backend=backend)
    assert bool(cold.done.all()) and not bool(cold.below.any())
    u = cold.u.numpy()
    for b in range(len(a)):
        ref = _reference(a[b], Up, signs[b])
        np.testing.assert_allclose(u[b], ref, atol=1e-10)
        assert np.linalg.norm(u[b]) == pytest.approx(cone_max(a[b], signs[b][:, None] * Up), abs=1e-10)
    assert (signs * (u @ Up.T)).min() >= -1e-12
    # active constraints hold with equality
    for b in range(len(a)):
        idx = cold.active[b][cold.active[b] >= 0].numpy()
        np.testing.assert_allclose(Up[idx] @ u[b], 0, atol=1e-12)
    # a warm start from the active sets of a nearby problem gives the same projections
    a2 = a + 0.05 * rng.standard_normal(a.shape)
    warm = project_cones(T(a2), T(Up), T(signs), cold.active, backend=backend)
    ref2 = project_cones(T(a2), T(Up), T(signs))
    np.testing.assert_allclose(warm.u.numpy(), ref2.u.numpy(), atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_threshold_stops_only_rows_whose_projection_is_shorter(backend):
    Up, signs, rng = _cones(seed=1)
    a = rng.standard_normal((signs.shape[0], Up.shape[1]))
    T = lambda x: torch.as_tensor(x, dtype=torch.float64)  # noqa: E731
    exact = project_cones(T(a), T(Up), T(signs)).u.norm(dim=1).numpy()
    thresh = float(np.median(exact))
    res = project_cones(T(a), T(Up), T(signs), threshold=thresh, backend=backend)
    below = res.below.numpy()
    assert below.any() and (~below).any()
    assert np.all(exact[below] <= thresh + 1e-12)
    assert np.all(exact[~below] > thresh - 1e-12)
    # a stopped row's iterate is an upper bound on the projection's length
    assert np.all(res.u.norm(dim=1).numpy()[below] >= exact[below] - 1e-12)
    full = project_cones(T(a), T(Up), T(signs)).u.numpy()
    np.testing.assert_allclose(res.u.numpy()[~below], full[~below], rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_projection_is_nearly_optimal_and_feasible(backend):
    # in float32 a constraint violated by less than 100 eps ||a|| counts as met; near-degenerate cones
    # (nearly parallel constraints) then let the point move visibly, but its distance to a stays optimal
    Up, signs, rng = _cones(seed=2)
    a = rng.standard_normal((signs.shape[0], Up.shape[1]))
    u64 = project_cones(torch.as_tensor(a), torch.as_tensor(Up), torch.as_tensor(signs)).u.numpy()
    f = lambda x: torch.as_tensor(x, dtype=torch.float32)  # noqa: E731
    res = project_cones(f(a), f(Up), f(signs), backend=backend)
    assert bool(res.done.all()) and res.u.dtype == torch.float32
    u32 = res.u.numpy().astype(np.float64)
    dist64 = np.linalg.norm(u64 - a, axis=1)
    dist32 = np.linalg.norm(u32 - a, axis=1)
    np.testing.assert_allclose(dist32, dist64, rtol=1e-3, atol=1e-4)
    violation = np.maximum(0, -(signs * (u32 @ Up.T))).max(1) / np.linalg.norm(a, axis=1)
    assert violation.max() <= 2e-5


def _cold_projection(seed):
    """Cones, random points, a float64 converter and the cold projections of the points."""
    Up, signs, rng = _cones(seed=seed)
    a = rng.standard_normal((signs.shape[0], Up.shape[1]))
    T = lambda x: torch.as_tensor(x, dtype=torch.float64)  # noqa: E731
    return Up, signs, rng, a, T, project_cones(T(a), T(Up), T(signs))


def test_returned_factors_invert_the_active_gram_and_warm_start_exactly():
    Up, signs, rng, a, T, cold = _cold_projection(seed=3)
    act = cold.active.numpy()
    k = Up.shape[1]
    for b in range(len(a)):  # normals are the signed rows of U' on the active slots, zero on padding
        slots = act[b] >= 0
        expected = np.zeros((k, k))
        expected[slots] = signs[b, act[b, slots], None] * Up[act[b, slots]]
        np.testing.assert_allclose(cold.normals[b].numpy(), expected, atol=1e-15)
        gram = expected @ expected.T + np.diag(~slots)
        np.testing.assert_allclose(cold.gram_inv[b].numpy() @ gram, np.eye(k), atol=1e-9)
    a2 = a + 0.05 * rng.standard_normal(a.shape)
    factors = (cold.normals, cold.gram_inv)
    with_factors = project_cones(T(a2), T(Up), T(signs), cold.active, factors=factors)
    without = project_cones(T(a2), T(Up), T(signs), cold.active)
    np.testing.assert_allclose(with_factors.u.numpy(), without.u.numpy(), atol=1e-10)
    for b in range(len(a)):
        np.testing.assert_allclose(with_factors.u[b].numpy(), _reference(a2[b], Up, signs[b]), atol=1e-10)
    # a stale inverse (here: scaled) fails the residual check and is refactored, not used
    broken = (cold.normals, 1.5 * cold.gram_inv)
    repaired = project_cones(T(a2), T(Up), T(signs), cold.active, factors=broken)
    np.testing.assert_allclose(repaired.u.numpy(), without.u.numpy(), atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dependent_warm_start_is_still_exact(backend):
    # a warm start whose active set repeats a constraint would make the Gram matrix singular: the repeat
    # is dropped on entry, and the projection is still exact
    Up, signs, rng, a, T, cold = _cold_projection(seed=4)
    active = cold.active.clone()
    count = (active >= 0).sum(1)
    rows = torch.where((count >= 1) & (count < Up.shape[1]))[0]
    assert rows.numel() > 0
    active[rows, count[rows]] = active[rows, 0]  # the first active constraint twice
    warm = project_cones(T(a), T(Up), T(signs), active, backend=backend)
    assert bool(warm.done.all())
    for b in range(len(a)):
        np.testing.assert_allclose(warm.u[b].numpy(), _reference(a[b], Up, signs[b]), atol=1e-9)
    idx = warm.active.numpy()
    for b in range(len(a)):
        kept = idx[b][idx[b] >= 0]
        assert len(set(kept.tolist())) == len(kept)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rows_sharing_patterns_and_constraint_zero(backend):
    # ``patterns``: groups that share a pattern read one row of ``signs``; constraint 0 is the one the
    # padding slots point at, so it must still enter (and, once active, not enter twice)
    Up, signs, rng = _cones(seed=3)
    P = signs.shape[0]
    T = lambda x: torch.as_tensor(x, dtype=torch.float64)  # noqa: E731
    patterns = torch.arange(2 * P) % P
    a = rng.standard_normal((2 * P, Up.shape[1]))
    a[:P] -= 3 * signs[:, :1] * Up[0]  # constraint 0 the most violated of the first P rows
    shared = project_cones(T(a), T(Up), T(signs), patterns=patterns, backend=backend)
    gathered = project_cones(T(a), T(Up), T(signs[patterns.numpy()]))
    np.testing.assert_allclose(shared.u.numpy(), gathered.u.numpy(), atol=1e-12)
    assert int((shared.active == 0).any(1).sum()) >= 3  # the case is exercised (fixed seed: 4 rows)
    u = shared.u.numpy()
    for b in range(2 * P):
        np.testing.assert_allclose(u[b], _reference(a[b], Up, signs[b % P]), atol=1e-10)
    # warm start from those active sets and factors: the same as a cold projection, no repeated index
    a2 = a + 0.01 * rng.standard_normal(a.shape)
    factors = None if shared.normals is None else (shared.normals, shared.gram_inv)  # numba keeps none
    warm = project_cones(T(a2), T(Up), T(signs), shared.active, factors=factors, patterns=patterns,
                         backend=backend)  # fmt: skip
    cold = project_cones(T(a2), T(Up), T(signs), patterns=patterns)
    np.testing.assert_allclose(warm.u.numpy(), cold.u.numpy(), atol=1e-10)
    for row in warm.active:
        idx = row[row >= 0]
        assert len(torch.unique(idx)) == len(idx)


@NEEDS_NUMBA
def test_numba_memory_changes_nothing_along_a_sequence_of_nearby_points():
    # FISTA's use: the same groups projected again and again at nearby points, with the kept constraint
    # values and Cholesky factors of the last call. The results equal those of calls that keep nothing
    # (bit for bit: the kept values only decide which constraints to evaluate) and the exact projections.
    Up, signs, rng = _cones(n=300, d=8, P=30, seed=5)
    T = lambda x: torch.as_tensor(x, dtype=torch.float64)  # noqa: E731
    P, k = signs.shape[0], Up.shape[1]
    groups = torch.arange(2 * P)
    patterns = groups % P
    memory = ProjectionMemory.empty(2 * P, Up.shape[0], k)
    basis = NumbaBasis.of(T(Up))
    a = rng.standard_normal((2 * P, k))
    act_kept = act_plain = None
    n_kept_factors = 0
    for step in range(12):
        a = a + (0.3 if step < 4 else 0.01) * rng.standard_normal(a.shape)
        kept = project_cones(T(a), T(Up), T(signs), act_kept, patterns=patterns, backend="numba", basis=basis,
                             kept=memory, groups=groups)  # fmt: skip
        plain = project_cones(T(a), T(Up), T(signs), act_plain, patterns=patterns, backend="numba")
        assert torch.equal(kept.u, plain.u) and torch.equal(kept.active, plain.active)
        assert bool(kept.done.all())
        act_kept, act_plain = kept.active, plain.active
        n_kept_factors += int((memory.factor_of[:, 0] != -2).sum())
        for b in range(0, 2 * P, 7):
            np.testing.assert_allclose(kept.u[b].numpy(), _reference(a[b], Up, signs[b % P]), atol=1e-10)
    assert bool(memory.valid.all()) and n_kept_factors > 0
    # each kept factor is the Cholesky factor of its active normals' Gram matrix
    for g in range(2 * P):
        of = memory.factor_of[g]
        idx = of[of >= 0].numpy()
        if of[0] == -2 or len(idx) == 0:
            continue
        N = signs[g % P, idx, None] * Up[idx]
        L = np.tril(memory.factors[g].numpy()[: len(idx), : len(idx)])
        np.testing.assert_allclose(L @ L.T, N @ N.T, atol=1e-12)
    # a warm start on an active set the kept factor does not belong to is refactored: still exact
    shuffled = act_kept.clone()
    shuffled[:, :2] = act_kept[:, [1, 0]]
    a = a + 0.01 * rng.standard_normal(a.shape)
    res = project_cones(T(a), T(Up), T(signs), shuffled, patterns=patterns, backend="numba", basis=basis,
                        kept=memory, groups=groups)  # fmt: skip
    for b in range(2 * P):
        np.testing.assert_allclose(res.u[b].numpy(), _reference(a[b], Up, signs[b % P]), atol=1e-10)


def test_projection_backend_choice_and_errors(monkeypatch):
    assert resolve_projection_backend("torch", "cpu") == "torch"
    assert resolve_projection_backend("auto", "cuda") == "torch"  # numba is CPU only
    assert resolve_projection_backend("auto", "cpu") == ("numba" if HAS_NUMBA else "torch")
    with pytest.raises(ValueError, match="projection backend must be one of"):
        resolve_projection_backend("cupy", "cpu")
    with pytest.raises(ValueError, match="numba projection runs on the CPU only"):
        resolve_projection_backend("numba", "cuda")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ImportError, match=r"pip install convexbn\[numba\]"):
        resolve_projection_backend("numba", "cpu")
    assert resolve_projection_backend("auto", "cpu") == "torch"
    monkeypatch.undo()
    if HAS_NUMBA:
        Up, signs, rng = _cones()
        T = lambda x: torch.as_tensor(x, dtype=torch.float64)  # noqa: E731
        memory = ProjectionMemory.empty(4, Up.shape[0], Up.shape[1])
        a = T(rng.standard_normal((4, Up.shape[1])))
        with pytest.raises(ValueError, match="kept needs groups"):
            project_cones(a, T(Up), T(signs), backend="numba", kept=memory)
        # the compiled kernel does not check indices: the wrapper refuses out-of-range ones
        bad = torch.full((4, Up.shape[1]), -1, dtype=torch.long)
        bad[0, 0] = Up.shape[0]
        with pytest.raises(ValueError, match="active holds indices outside"):
            project_cones(a, T(Up), T(signs), bad, backend="numba")
        with pytest.raises(ValueError, match="patterns holds indices outside"):
            project_cones(a, T(Up), T(signs), backend="numba", patterns=torch.tensor([0, 1, 2, len(signs)]))
        with pytest.raises(ValueError, match="groups holds indices outside"):
            project_cones(a, T(Up), T(signs), backend="numba", kept=memory, groups=torch.tensor([0, 1, 2, 4]))


def _project_in_child(queue, a, Up, signs):
    res = project_cones(torch.as_tensor(a), torch.as_tensor(Up), torch.as_tensor(signs), backend="numba")
    queue.put(res.u.numpy())


@NEEDS_NUMBA
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_numba_projection_in_a_forked_child():
    # numba's OpenMP layer terminates a forked child that starts a parallel loop its parent started; the
    # child runs the one-thread kernel instead, with the same results
    import multiprocessing

    Up, signs, rng = _cones(seed=6)
    a = rng.standard_normal((signs.shape[0], Up.shape[1]))
    parent = project_cones(torch.as_tensor(a), torch.as_tensor(Up), torch.as_tensor(signs), backend="numba")
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_project_in_child, args=(queue, a, Up, signs))
    child.start()
    u = queue.get(timeout=600)
    child.join(60)
    assert child.exitcode == 0
    np.testing.assert_array_equal(u, parent.u.numpy())


@pytest.mark.parametrize("backend", BACKENDS)
def test_degenerate_cones_with_k_active_constraints(backend):
    # a cone that is {0} (row 0) and a point whose projection is the apex (row 1): k constraints end
    # active, and the method must not try to add one more
    Up = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, -1.0]])
    signs = np.array([[1.0, 1.0, -1.0, 1.0], [1.0, -1.0, 1.0, 1.0]])
    a = np.array([[0.3, 0.7], [-1.0, 2.0]])
    T = lambda x: torch.as_tensor(x, dtype=torch.float64)  # noqa: E731
    res = project_cones(T(a), T(Up), T(signs), backend=backend)
    assert bool(res.done.all())
    for b in range(2):
        np.testing.assert_allclose(res.u[b].numpy(), _reference(a[b], Up, signs[b]), atol=1e-12)
    assert ((res.active >= 0).sum(1) == 2).all()
