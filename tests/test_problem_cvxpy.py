"""The exact program, solved by cvxpy, against independent computations: forward pass of the recovered
network, a direct conic formulation of the certificate, the closed form, and GD on the nonconvex net."""

import copy

import cvxpy as cp
import numpy as np
import pytest
import torch
from conftest import DATASETS, to_pm1

from convexbn import (
    ConvexBNProblem,
    SolverWarning,
    bn_basis,
    enumerate_arrangements,
    recover_network,
    sample_arrangements,
)
from convexbn.certificate import cone_max
from convexbn.problem import SolverError
from convexbn.solvers import SOLVERS, closed_form_applies
from convexbn.solvers.closed_form import closed_form_objective

RTOL = 1e-6


def _targets(loss, y):
    """Targets of the right kind for ``loss`` from any 1-D target."""
    classes = np.unique(y)
    if loss == "squared":
        return y - y.mean()
    if loss == "cross_entropy":  # class indices: the labels themselves when few, else a median split
        return np.unique(y, return_inverse=True)[1] if classes.size <= 3 else (y > np.median(y)) * 1
    return to_pm1(y)


@pytest.mark.parametrize("loss", ["squared", "logistic", "hinge", "cross_entropy"])
def test_convex_optimum_equals_recovered_forward_objective(dataset, loss):
    name, X, y = dataset
    yy = _targets(loss, y)
    basis = bn_basis(X)
    arr = sample_arrangements(basis, 60, random_state=0)
    problem = ConvexBNProblem(basis, arr, yy, beta=0.05, loss=loss)
    sol = problem.solve("cvxpy")
    assert sol.status == "optimal"
    assert sol.constraint_violation < 1e-7
    # the numpy objective agrees with the solver's own value
    assert sol.objective == pytest.approx(sol.info["solver_objective"], rel=1e-6, abs=1e-8)
    net = recover_network(sol)
    assert net.n_neurons == sol.n_neurons > 0
    # the equivalence: objective (3) by a plain forward pass == optimum of (4)
    assert net.objective(X, yy) == pytest.approx(sol.objective, rel=RTOL)
    # and the predictions equal sum_i D_i U'(u_i - u'_i), in train and eval mode
    F = sol.predict_train()
    np.testing.assert_allclose(net.forward(X, training=True), F, atol=1e-6 * max(1, abs(F).max()))
    np.testing.assert_allclose(net.forward(X, training=False), F, atol=1e-6 * max(1, abs(F).max()))


def test_cvxpy_dual_is_minus_loss_gradient():
    X, y = DATASETS["random"]()
    b = bn_basis(X)
    problem = ConvexBNProblem(b, sample_arrangements(b, 40, random_state=0), y, beta=0.1)
    sol = problem.solve()
    lam = -problem.loss.grad(sol.predict_train(), problem.Y)
    np.testing.assert_allclose(sol.dual, lam, atol=1e-5)


def test_scs_and_clarabel_agree():
    X, y = DATASETS["random"]()
    b = bn_basis(X)
    problem = ConvexBNProblem(b, sample_arrangements(b, 40, random_state=0), y, beta=0.1)
    clarabel = problem.solve("clarabel")
    scs = problem.solve("scs")
    assert scs.solver == "cvxpy:SCS"
    assert scs.objective == pytest.approx(clarabel.objective, rel=1e-4)


def test_gated_relaxation_is_lower_and_not_recoverable():
    X, y = DATASETS["random"]()
    b = bn_basis(X)
    arr = sample_arrangements(b, 40, random_state=0)
    exact = ConvexBNProblem(b, arr, y, beta=0.1).solve()
    gated_problem = ConvexBNProblem(b, arr, y, beta=0.1, formulation="gated")
    gated = gated_problem.solve()
    assert gated.formulation == "gated"
    assert gated.objective < exact.objective - 1e-6
    with pytest.raises(ValueError, match="gated relaxation is not a BN network"):
        recover_network(gated)
    with pytest.raises(ValueError, match="not the gated relaxation"):
        gated_problem.certificate(gated)


# --- closed form ---------------------------------------------------------------------------------
@pytest.mark.parametrize("beta", [0.05, 0.8, 3.0])
def test_closed_form_equals_cvxpy_overparameterized(beta):
    rng = np.random.default_rng(7)
    X, y = rng.standard_normal((7, 12)), rng.standard_normal(7)
    basis = bn_basis(X)
    arr = enumerate_arrangements(basis)  # all 2^7 - 1 patterns: the exact program
    problem = ConvexBNProblem(basis, arr, y, beta=beta)
    assert closed_form_applies(problem)[0]
    closed = problem.solve("closed_form")
    conic = problem.solve("cvxpy")
    assert closed.objective == pytest.approx(conic.objective, rel=1e-6)
    assert closed.objective == pytest.approx(closed_form_objective(problem.Y, beta), rel=1e-12)
    assert closed.n_neurons <= 2
    net = recover_network(closed)
    assert net.objective(X, y) == pytest.approx(closed.objective, rel=1e-10)
    cert = problem.certificate(closed)
    assert cert.exact and cert.certified and cert.relative_gap < 1e-9


def test_closed_form_one_hot_is_one_neuron_per_class():
    rng = np.random.default_rng(8)
    X = rng.standard_normal((9, 15))
    labels = np.arange(9) % 3
    Y = np.eye(3)[labels]
    basis = bn_basis(X)
    problem = ConvexBNProblem(basis, enumerate_arrangements(basis), Y, beta=0.3)
    closed = problem.solve("closed_form")
    assert closed.n_neurons == 3
    F = closed.predict_train()
    expected = Y * (1 - 0.3 / np.sqrt(3))
    np.testing.assert_allclose(F, expected, atol=1e-12)
    assert closed.objective == pytest.approx(problem.solve("cvxpy").objective, rel=1e-6)


def test_closed_form_refuses_other_regimes():
    X, y = DATASETS["random"]()
    b = bn_basis(X)
    problem = ConvexBNProblem(b, sample_arrangements(b, 10, random_state=0), y, beta=0.1)
    with pytest.raises(ValueError, match="overparameterized regime"):
        problem.solve("closed_form")
    logistic = ConvexBNProblem(b, problem.arrangements, to_pm1(y), beta=0.1, loss="logistic")
    with pytest.raises(ValueError, match="squared loss"):
        logistic.solve("closed-form")


# --- GD on the nonconvex network never beats the enumerated optimum --------------------------------
def test_gradient_descent_never_below_enumerated_convex_optimum():
    rng = np.random.default_rng(3)
    n, d, beta = 6, 2, 0.1
    X, y = rng.standard_normal((n, d)), rng.standard_normal(n)
    basis = bn_basis(X)
    arr = enumerate_arrangements(basis)
    problem = ConvexBNProblem(basis, arr, y, beta=beta)
    sol = problem.solve()
    assert problem.certificate(sol).certified
    p_star = sol.objective

    # 50 random starts, trained together (independent parameters, summed objective)
    torch.manual_seed(0)
    B, m = 50, 8  # m > n + 1 >= m*
    Xt, yt = torch.tensor(X), torch.tensor(y)
    W = torch.randn(B, d, m, dtype=torch.float64, requires_grad=True)
    g, a, v = ((0.5 * torch.randn(B, m, dtype=torch.float64)).requires_grad_() for _ in range(3))

    def objective():  # eq. (3), written independently of convexbn
        h = torch.einsum("nd,bdm->bnm", Xt, W)
        hc = h - h.mean(1, keepdim=True)
        z = torch.relu(g[:, None] * hc / hc.norm(dim=1, keepdim=True) + a[:, None] / n**0.5)
        f = (z * v[:, None]).sum(-1)
        return 0.5 * ((f - yt) ** 2).sum(1) + beta / 2 * (g**2 + a**2 + v**2).sum(1)

    steps = 5000
    opt = torch.optim.Adam([W, g, a, v], lr=2e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        opt.zero_grad()
        objective().sum().backward()
        opt.step()
        sched.step()
    final = objective().detach().numpy()
    # tolerance: 1e-9 absolute for float64 rounding; no start may beat the global optimum
    assert final.min() >= p_star - 1e-9
    # and the best start reaches it (to 1e-5 relative)
    assert final.min() <= p_star * (1 + 1e-5)


# --- certificate ----------------------------------------------------------------------------------
def test_cone_max_matches_direct_socp():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((15, 3))
    b = bn_basis(X)
    arr = sample_arrangements(b, 30, random_state=0)
    Up = b.Uprime
    for i in range(arr.n_patterns):
        A = np.where(arr.mask[:, i, None], Up, -Up)
        a = rng.standard_normal(4)
        u = cp.Variable(4)
        socp = cp.Problem(cp.Maximize(a @ u), [cp.norm(u) <= 1, A @ u >= 0])
        socp.solve(solver="CLARABEL")
        assert cone_max(a, A) == pytest.approx(socp.value, abs=1e-7)


def _enumerated_problem(seed=4, n=7, d=2, beta=0.15, loss="squared"):
    rng = np.random.default_rng(seed)
    X, y = rng.standard_normal((n, d)), rng.standard_normal(n)
    y = to_pm1(y) if loss != "squared" else y
    basis = bn_basis(X)
    return X, y, ConvexBNProblem(basis, enumerate_arrangements(basis), y, beta=beta, loss=loss)


@pytest.mark.parametrize("loss", ["squared", "logistic", "hinge"])
def test_certificate_accepts_exact_optimum(loss):
    _, _, problem = _enumerated_problem(loss=loss)
    sol = problem.solve()
    cert = problem.certificate(sol)
    assert cert.exact and cert.certified
    assert cert.ratio <= 1 + 1e-4
    assert cert.lower_bound <= sol.objective + 1e-7
    assert cert.relative_gap < 1e-5


def test_certificate_rejects_perturbed_solution():
    _, _, problem = _enumerated_problem()
    sol = problem.solve()
    from dataclasses import replace

    worse = replace(sol, W_pos=0.8 * sol.W_pos, W_neg=0.8 * sol.W_neg)
    worse = replace(worse, objective=problem.objective(worse.W_pos, worse.W_neg))
    cert = problem.certificate(worse)
    assert not cert.certified
    assert cert.relative_gap > 1e-3
    # its lower bound is still valid: below the true optimum
    assert cert.lower_bound <= sol.objective + 1e-7


def test_certificate_rejects_too_sparse_solution():
    X, y, problem = _enumerated_problem()
    few = sample_arrangements(problem.basis, 2, random_state=0)
    sparse = ConvexBNProblem(problem.basis, few, y, beta=problem.beta).solve()
    # optimal for its own two patterns ...
    assert sparse.problem.certificate(sparse).certified
    # ... but not over all of them
    cert = problem.certificate(sparse, arrangements=problem.arrangements)
    assert not cert.certified and cert.ratio > 1.01
    assert sparse.objective > problem.solve().objective + 1e-4


# --- torch export ---------------------------------------------------------------------------------
def test_torch_export_reproduces_predictions():
    X, y = DATASETS["breast_cancer"]()
    rng = np.random.default_rng(0)
    X_new = rng.standard_normal((25, X.shape[1]))
    b = bn_basis(X)
    sol = ConvexBNProblem(b, sample_arrangements(b, 50, random_state=0), y, beta=0.1).solve()
    net = recover_network(sol)
    model = net.to_torch()
    assert [type(m).__name__ for m in model] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    with torch.no_grad():
        test_out = model(torch.tensor(X_new)).numpy()[:, 0]  # eval mode: stored statistics
        # train mode (batch statistics) on a copy: PyTorch's train-mode forward updates the buffers
        train_out = copy.deepcopy(model).train()(torch.tensor(X)).numpy()[:, 0]
    np.testing.assert_allclose(train_out, net.predict(X), atol=1e-6)
    np.testing.assert_allclose(test_out, net.predict(X_new), atol=1e-6)
    # the eval-mode numpy network uses frozen statistics: predictions of a subset don't change
    np.testing.assert_allclose(net.predict(X_new[:3]), net.predict(X_new)[:3], atol=1e-12)


# --- solver plumbing -------------------------------------------------------------------------------
def test_mosek_without_license_falls_back_to_clarabel(monkeypatch):
    from convexbn.solvers import cvxpy_backend

    monkeypatch.setattr(cvxpy_backend, "mosek_license", lambda: (False, "MOSEK has no license"))
    X, y = DATASETS["random"]()
    b = bn_basis(X)
    problem = ConvexBNProblem(b, sample_arrangements(b, 20, random_state=0), y, beta=0.1)
    with pytest.warns(SolverWarning, match="no license; falling back to CLARABEL"):
        sol = problem.solve("mosek")
    assert sol.solver == "cvxpy:CLARABEL"


@pytest.mark.skipif(
    not __import__("convexbn").solvers.mosek_license()[0], reason="MOSEK not installed/licensed"
)
def test_mosek_agrees_with_clarabel():
    X, y = DATASETS["random"]()
    b = bn_basis(X)
    problem = ConvexBNProblem(b, sample_arrangements(b, 20, random_state=0), y, beta=0.1)
    assert problem.solve("mosek").objective == pytest.approx(problem.solve().objective, rel=1e-6)


def test_inaccurate_status_is_labelled_and_failure_raises(monkeypatch):
    X, y = DATASETS["random"]()
    b = bn_basis(X)
    problem = ConvexBNProblem(b, sample_arrangements(b, 10, random_state=0), y, beta=0.1)
    real = SOLVERS["cvxpy"]

    def inaccurate(problem, **kw):
        return {**real(problem, **kw), "status": "optimal_inaccurate"}

    monkeypatch.setitem(SOLVERS, "cvxpy", inaccurate)
    with pytest.warns(SolverWarning, match="optimal_inaccurate"):
        sol = problem.solve("cvxpy")
    assert sol.status == "optimal_inaccurate"
    # a solver that cannot reach the tolerance within its iteration budget is an error, not "optimal"
    with pytest.raises(SolverError, match="SCS"):
        problem.solve("scs", max_iters=2, eps_abs=1e-12, eps_rel=1e-12)


def test_unknown_cvxpy_solver_names_installed_ones():
    X, y = DATASETS["random"]()
    b = bn_basis(X)
    problem = ConvexBNProblem(b, sample_arrangements(b, 10, random_state=0), y, beta=0.1)
    with pytest.raises(ValueError, match="not installed.*installed solvers"):
        problem.solve("cvxpy", cvxpy_solver="NOSUCHSOLVER")
