"""The augmented Lagrangian's certificate (convexbn.solvers.torch.al_certificate): its dual bound against
exact cone projections (scipy's BVLS), its answer against Clarabel and a forward pass, its stopping rule."""

import numpy as np
import pytest
import torch
from conftest import DATASETS, to_pm1

from convexbn import ConvexBNProblem, bn_basis, recover_network, sample_arrangements
from convexbn.certificate import cone_max
from convexbn.solvers.torch.al_certificate import dual_value_bounds
from convexbn.solvers.torch.operators import GroupOperators


def _problem(loss="squared", P=30, beta=0.1):
    X, y = DATASETS["random"]()
    if loss == "logistic":
        y = to_pm1(y)
    elif loss == "cross_entropy":
        y = (y > np.median(y)).astype(int)
    basis = bn_basis(X)
    arr = sample_arrangements(basis, P, random_state=0)
    return X, y, ConvexBNProblem(basis, arr, y, beta=beta, loss=loss)


def test_the_multiplier_bound_is_never_below_the_exact_dual_value_and_meets_it_at_the_best_multipliers():
    from scipy.optimize import lsq_linear

    _, _, problem = _problem(P=12)
    ops = GroupOperators(problem, torch.device("cpu"), torch.float64)
    rng = np.random.default_rng(3)
    n, P = problem.n_samples, problem.n_patterns
    R = rng.standard_normal((n, 1))  # any loss gradient: lambda = -R
    mu = rng.exponential(size=(2, 1, n, P)) * (rng.random((2, 1, n, P)) < 0.3)  # nonnegative, sparse
    bounds = dual_value_bounds(ops, torch.as_tensor(R), torch.as_tensor(mu)).numpy()
    zero = dual_value_bounds(ops, torch.as_tensor(R), torch.zeros((2, 1, n, P), dtype=torch.float64)).numpy()
    Up, mask = problem.Uprime, problem.mask.astype(bool)
    best = np.zeros((2, 1, n, P))
    for p in range(P):
        A = np.where(mask[:, p, None], Up, -Up)  # the cone's rows: A u >= 0
        a = Up.T @ (mask[:, p] * -R[:, 0])  # U'^T D lambda
        for side, c in enumerate((a, -a)):
            exact = cone_max(c, A)  # ||Pi_K(c)|| by BVLS
            assert bounds[side, 0, p] >= exact * (1 - 1e-12)
            assert zero[side, 0, p] == pytest.approx(np.linalg.norm(c), rel=1e-12)  # mu = 0: ||c||
            best[side, 0, :, p] = lsq_linear(A.T, -c, bounds=(0.0, np.inf), method="bvls", tol=1e-12).x
    # the minimizing multipliers make the bound the dual value itself (Moreau)
    tight = dual_value_bounds(ops, torch.as_tensor(R), torch.as_tensor(best)).numpy()
    for p in range(P):
        A = np.where(mask[:, p, None], Up, -Up)
        a = Up.T @ (mask[:, p] * -R[:, 0])
        assert tight[0, 0, p] == pytest.approx(cone_max(a, A), rel=1e-6, abs=1e-10)
        assert tight[1, 0, p] == pytest.approx(cone_max(-a, A), rel=1e-6, abs=1e-10)


@pytest.mark.parametrize("loss", ["squared", "logistic", "cross_entropy"])
def test_the_al_answer_is_in_the_cones_and_certified_against_clarabel(loss):
    X, y, problem = _problem(loss)
    ref = problem.solve("clarabel")
    al = problem.solve("torch", method="al")
    cert = al.info["certificate"]
    assert al.status == "optimal"
    assert al.constraint_violation <= 1e-12  # projected onto the cones: a point of (4)
    # the solution prunes groups below prune_tol: the same objective to that
    assert cert.objective == pytest.approx(al.objective, rel=1e-7)
    # a forward pass of the recovered network reproduces the answer's objective
    assert recover_network(al).objective(X, y) == pytest.approx(al.objective, rel=1e-9)
    # lower bound <= optimum <= the answer's objective, and the two close to the AL's accuracy
    assert cert.lower_bound <= ref.objective + 1e-7 * abs(ref.objective)
    assert al.objective >= ref.objective - 1e-7 * abs(ref.objective)
    assert cert.relative_gap == pytest.approx((cert.objective - cert.lower_bound) / cert.objective)
    assert (al.info["lower_bound"], al.info["relative_gap"]) == (cert.lower_bound, cert.relative_gap)
    # an earlier round's better bound is kept (each bounds the same optimum); a worse one is not
    from convexbn.solvers.torch.al_certificate import with_best_bound

    better = with_best_bound(cert, cert.lower_bound + 1e-3)
    assert better.lower_bound == cert.lower_bound + 1e-3
    assert better.relative_gap == pytest.approx(cert.relative_gap - 1e-3 / cert.objective)
    assert with_best_bound(cert, cert.lower_bound - 1.0) == cert
    assert 0 <= cert.relative_gap <= 1e-4
    assert al.objective == pytest.approx(ref.objective, rel=1e-5)


def test_gap_tol_stops_at_the_first_certified_round():
    _, _, problem = _problem(beta=0.5)
    full = problem.solve("torch", method="al")
    early = problem.solve("torch", method="al", gap_tol=1e-3)
    cert = early.info["certificate"]
    assert early.status == "optimal" and cert.relative_gap <= 1e-3
    gaps = [gap for kind, _, gap in early.info["history"] if kind == "certificate"]
    assert gaps[-1] == cert.relative_gap and all(gap > 1e-3 for gap in gaps[:-1])
    assert early.n_iter < full.n_iter
    assert early.constraint_violation <= 1e-12
    # without it the certificate is computed once, at the end
    assert not any(kind == "certificate" for kind, _, _ in full.info["history"])
    assert full.info["certificate"].relative_gap <= cert.relative_gap


def test_a_float32_solve_is_moved_into_the_cones_of_the_float64_basis():
    _, _, problem = _problem()
    al = problem.solve("torch", method="al", dtype="float32")
    own = problem.solve("torch", method="al", dtype="float32", certify=False)
    assert own.constraint_violation > 1e-9  # float32 rows "at zero" are about 1e-7 of their scale out
    assert al.constraint_violation <= 1e-12  # checked by the solution against the problem's float64 basis
    assert al.objective == pytest.approx(own.objective, rel=1e-4)
    # both sides valid against the float64 solve's (a feasible point is above the optimum, a lower bound
    # below it); float32's certificate is loose: its last AL rounds end after a few inner iterations each,
    # and the multipliers are far from the dual's (docs/solvers.md, "The AL's certificate")
    exact = problem.solve("torch", method="al")
    assert al.info["certificate"].lower_bound <= exact.objective
    assert al.objective >= exact.info["certificate"].lower_bound
    assert exact.info["certificate"].relative_gap <= 1e-4


def test_certify_false_returns_the_al_point_and_bad_settings_are_named():
    _, _, problem = _problem()
    own = problem.solve("torch", method="al", certify=False)
    projected = problem.solve("torch", method="al")
    assert "certificate" not in own.info and own.n_iter == projected.n_iter
    assert own.constraint_violation > projected.constraint_violation
    assert own.objective == pytest.approx(projected.objective, rel=1e-6)
    with pytest.raises(ValueError, match="gap_tol needs certify=True"):
        problem.solve("torch", method="al", gap_tol=1e-4, certify=False)
    with pytest.raises(ValueError, match="gap_tol"):
        problem.solve("torch", method="al", gap_tol=-1.0)
    with pytest.raises(ValueError, match="certify must be True or False"):
        problem.solve("torch", method="al", certify="yes")


def test_the_move_into_the_cones_is_small_feasible_and_reports_the_groups_it_cannot_move(monkeypatch):
    import convexbn.solvers.torch.al_certificate as al_certificate
    from convexbn.solvers.torch.al_certificate import project_onto_cones

    _, _, problem = _problem()
    sol = problem.solve("torch", method="fista", tol=1e-10)  # a point of the cones
    ops = GroupOperators(problem, torch.device("cpu"), torch.float64)
    X = torch.as_tensor(np.stack([sol.W_pos, sol.W_neg]))
    g = int(torch.argmax(X[0, 0].norm(dim=1)))
    rng = np.random.default_rng(0)
    X[0, 0, g] += 1e-3 * float(X[0, 0, g].norm()) * torch.as_tensor(rng.standard_normal(problem.dim))
    Z = torch.stack([ops.pre(X[0]), ops.pre(X[1])])
    violated = int((Z[0, 0, :, g] * ops.signs[:, g] < 0).sum())
    assert violated > 0
    moved, failed = project_onto_cones(ops, X, problem.Uprime)
    assert failed == 0
    values = (moved[0, 0, g] @ ops.Up.T) * ops.signs[:, g]
    assert float(values.min()) >= -1e-12 * float(moved[0, 0, g].norm()) * float(ops.Up.norm(dim=1).max())
    assert float((moved - X).norm()) <= 2e-3 * float(X[0, 0, g].norm())  # about the perturbation
    other = torch.ones(X.shape[:3], dtype=torch.bool)
    other[0, 0, g] = False
    assert torch.equal(moved[other], X[other])  # the groups in their cones do not move
    none, failed = project_onto_cones(ops, X, rounds=0)
    assert failed == 1 and torch.equal(none, X)  # reported, not moved
    # where a group cannot be moved, the AL keeps its own point and reports no certificate
    monkeypatch.setattr(al_certificate, "project_onto_cones", lambda ops, X, Uprime=None: (X.clone(), 1))
    kept = problem.solve("torch", method="al")
    own = problem.solve("torch", method="al", certify=False)
    assert kept.info["certificate"] is None
    np.testing.assert_array_equal(kept.W_pos, own.W_pos)


def test_the_least_norm_solve_of_the_cpu_is_the_pseudo_inverse_of_other_devices():
    from convexbn.solvers.torch.al_certificate import _least_norm_solve

    rng = np.random.default_rng(1)
    A = torch.as_tensor(rng.standard_normal((3, 4, 7)))
    A[0, 2] = 0.0  # a padding row
    A[1, 3] = A[1, 2]  # dependent rows
    B = torch.as_tensor(rng.standard_normal((3, 4, 1)))
    expected = (torch.linalg.pinv(A) @ B).numpy()
    np.testing.assert_allclose(_least_norm_solve(A, B).numpy(), expected, atol=1e-12)
