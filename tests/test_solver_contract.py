"""The solver contract (issue 31): capabilities as data and the choices made from them, per-method settings,
the result dataclass, and the loss properties the solvers ask instead of comparing names."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from convexbn import ConvexBNProblem, bn_basis, sample_arrangements
from convexbn.losses import LOSSES, get_loss
from convexbn.solvers import choose_backend
from convexbn.solvers.base import Capabilities, SolverResult, choose
from convexbn.solvers.torch import METHODS, choose_method
from convexbn.solvers.torch.settings import ADMMSettings, ALSettings, FistaSettings, settings_for


def _shape(loss="squared", n=200, P=50, k=10, formulation="exact", communicator=None):
    """What the capabilities read of a problem, without building one."""
    return SimpleNamespace(loss=get_loss(loss), n_samples=n, n_patterns=P, dim=k, formulation=formulation,
                           communicator=communicator, n_outputs=1)  # fmt: skip


@pytest.mark.parametrize(
    ("shape", "method"),
    [
        (_shape("squared"), "fista"),
        (_shape("cross_entropy"), "fista"),
        (_shape("squared", k=129), "admm"),  # above FISTA's measured dimension limit
        (_shape("hinge"), "admm"),  # FISTA takes smooth losses only
        (_shape("hinge", n=5001), "al"),  # above ADMM's sample limit (its n x n factor)
        (_shape("squared", k=500, n=60_000), "al"),
    ],
)
def test_auto_method_follows_the_declared_capabilities(shape, method):
    assert choose_method(shape) == method


def test_a_distributed_problem_goes_to_the_one_method_that_declares_it():
    shape = _shape("squared", communicator=object())
    assert [name for name, c in METHODS.items() if c.supports(shape)[0]] == ["al"]
    assert choose_method(shape) == "al"


@pytest.mark.parametrize(
    ("shape", "backend"),
    [
        (_shape("squared"), "torch"),
        (_shape("logistic", k=128), "torch"),
        (_shape("hinge", n=100, P=100), "clarabel"),  # 2 n P = 20000 cone rows: Clarabel's range
        (_shape("hinge", n=101, P=100), "torch"),
        (_shape("squared", k=300, n=50, P=100), "clarabel"),
    ],
)
def test_auto_backend_follows_the_declared_limits(shape, backend):
    shape.column_weights = np.ones(shape.dim)  # what closed_form_applies reads
    assert choose_backend(shape) == backend


def test_auto_backend_takes_the_closed_form_where_it_applies():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((6, 10)), rng.standard_normal(6)
    basis = bn_basis(X)
    problem = ConvexBNProblem(basis, sample_arrangements(basis, 4, random_state=0), y, beta=0.1)
    assert choose_backend(problem) == "closed_form"


def test_choose_prefers_in_order_and_falls_back_to_the_last_supporting():
    small = Capabilities("small", auto_max_samples=10)
    smooth = Capabilities("smooth", smooth_only=True)
    anything = Capabilities("anything")
    assert choose(_shape("squared", n=5), [small, smooth, anything]).name == "small"
    assert choose(_shape("squared", n=50), [small, smooth, anything]).name == "smooth"
    assert choose(_shape("hinge", n=50), [small, smooth, anything]).name == "anything"
    # none within its limits: the last that supports the problem
    assert choose(_shape("hinge", n=50), [small]).name == "small"
    with pytest.raises(ValueError, match="smooth needs a smooth loss, not 'hinge'"):
        choose(_shape("hinge"), [smooth])
    gated = Capabilities("exact-only", formulations=frozenset({"exact"}))
    assert gated.supports(_shape(formulation="gated")) == (
        False, "exact-only solves the ['exact'] program, not 'gated'"
    )  # fmt: skip


def test_settings_take_their_own_options_validate_all_and_refuse_unknown_ones():
    fista = settings_for("fista", {"tol": 1e-5, "rho_factor": 3.0, "projection": "torch"})
    assert isinstance(fista, FistaSettings) and fista.tol == 1e-5 and fista.projection == "torch"
    assert not hasattr(fista, "rho_factor")
    al = settings_for("al", {"tol": 1e-5, "rho_factor": 3.0, "projection": "torch"})
    assert isinstance(al, ALSettings) and al.rho_factor == 3.0
    admm = settings_for("admm", {"rho": 2.5, "check_every": 7})
    assert isinstance(admm, ADMMSettings) and admm.rho == 2.5 and admm.check_every == 7
    # an option of another method than the one that runs is still checked
    with pytest.raises(ValueError, match="rho_factor must be a positive finite number, got -1"):
        settings_for("fista", {"rho_factor": -1})
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        settings_for("al", {"bogus": 1})
    with pytest.raises(ValueError, match="max_iter"):
        FistaSettings(max_iter=0)
    with pytest.raises(ValueError, match="checkpoint_every must be a nonnegative integer, got -5"):
        ALSettings(checkpoint_every=-5)
    assert FistaSettings(dtype="float32").dtype is torch.float32


def test_a_result_reads_as_the_old_dict_and_a_dict_becomes_a_result():
    W = np.zeros((1, 2, 3))
    result = SolverResult(W, W, "optimal", "x", n_iter=4, info={"a": 1})
    assert result["status"] == "optimal" and {**result}["n_iter"] == 4
    with pytest.raises(KeyError):
        result["nope"]
    again = SolverResult.of({"W_pos": W, "W_neg": W, "status": "optimal_inaccurate", "solver": "y",
                             "stats": 5})  # fmt: skip
    assert again.status == "optimal_inaccurate" and again.info == {"stats": 5} and again.n_iter is None
    assert SolverResult.of(result) is result
    with pytest.raises(TypeError, match=r"lacks \['status', 'solver'\]"):
        SolverResult.of({"W_pos": W, "W_neg": W})


def test_every_backend_returns_a_result():
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((30, 3)), rng.standard_normal(30)
    basis = bn_basis(X)
    problem = ConvexBNProblem(basis, sample_arrangements(basis, 8, random_state=0), y, beta=0.5)
    from convexbn.solvers import SOLVERS

    for name in ("clarabel", "torch"):
        assert isinstance(SOLVERS[name](problem), SolverResult)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_declared_curvature_bounds_the_hessian(name):
    """The curvature a solver reads is the largest Hessian eigenvalue of one sample's loss (sampled)."""
    loss = get_loss(name)
    if not loss.smooth:
        assert loss.curvature == np.inf and loss.step_curvature == 1.0 and loss.smoothing_start > 0
        return
    rng = np.random.default_rng(0)
    C = 3 if name == "cross_entropy" else 1
    worst = 0.0
    for _ in range(200):
        f = torch.tensor(rng.standard_normal(C) * rng.choice([0.01, 1, 5]), dtype=torch.float64)
        y = torch.zeros(C, dtype=torch.float64)
        y[0] = 1.0 if C > 1 else rng.choice([-1.0, 1.0])
        H = torch.autograd.functional.hessian(lambda v, y=y: loss.torch_value(v[None], y[None]), f)
        worst = max(worst, float(torch.linalg.eigvalsh(H).max()))
    assert worst <= loss.curvature * (1 + 1e-9)
    assert worst >= 0.9 * loss.curvature  # and it is nearly attained: the bound is the right one
    assert loss.step_curvature == loss.curvature and loss.smoothing_start == 0.0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_declared_prox_is_the_minimizer(name):
    """``torch_prox`` against a generic minimizer of ``L(F, Y) + rho/2 ||F - Z||^2`` (scipy)."""
    loss = get_loss(name)
    rng = np.random.default_rng(2)
    n, C = 5, (3 if name == "cross_entropy" else 1)
    if name == "cross_entropy":
        Y = np.eye(C)[rng.integers(0, C, n)]
    elif name == "squared":
        Y = rng.standard_normal((n, 1))
    else:
        Y = rng.choice([-1.0, 1.0], (n, 1))
    Z, rho = rng.standard_normal((n, C)) * 2, 0.7
    ours = loss.torch_prox(torch.tensor(Z), torch.tensor(Y), rho).numpy()

    def objective(f):
        F = f.reshape(n, C)
        return loss.value(F, Y) + 0.5 * rho * np.sum((F - Z) ** 2)

    best = minimize(objective, Z.ravel(), method="Powell", options={"xtol": 1e-10, "ftol": 1e-14}).x
    assert objective(ours.ravel()) <= objective(best) + 1e-9
    np.testing.assert_allclose(ours.ravel(), best, atol=1e-4)


def test_threads_follow_the_problem_size_the_idle_cores_and_the_callers_limits(monkeypatch):
    from threadpoolctl import threadpool_limits

    from convexbn.solvers.torch import threads as T

    small, big = _shape(n=100, P=10, k=5), _shape(n=10_000, P=200, k=21)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        assert T.threads_for(small, FistaSettings()) == 1
        assert T.threads_for(small, FistaSettings(threads=3)) == 3
        monkeypatch.setattr(T, "idle_cores", lambda: 1.2)  # another process holds most of the machine
        assert T.threads_for(big, FistaSettings()) == 1
        monkeypatch.setattr(T, "idle_cores", lambda: 2.6)
        assert T.threads_for(big, FistaSettings()) == 3
        monkeypatch.setattr(T, "idle_cores", lambda: None)  # no /proc/stat: every thread torch has
        assert T.threads_for(big, FistaSettings()) == 4
        with threadpool_limits(2):  # a caller's limit (joblib, threadpoolctl) caps the count
            assert T.threads_for(big, FistaSettings()) == 2
    finally:
        torch.set_num_threads(before)


def test_a_solve_starts_on_one_thread_and_switches_once_the_idle_sample_is_due(monkeypatch):
    from convexbn.solvers.torch import threads as T

    readings = iter([(0.0, 0.0), (60.0, 100.0)])  # (idle + own, total) jiffies: 60% of 4 cores idle
    monkeypatch.setattr(T, "_cpu_times", lambda: next(readings))
    monkeypatch.setattr(T, "_last_sample", (-1e9, None))  # stale: a fresh sample is needed
    clock = [100.0]
    monkeypatch.setattr(T.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(T.os, "cpu_count", lambda: 4)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        with T.solve_threads(10 * T.ONE_THREAD_MAX_WORK):
            assert torch.get_num_threads() == 1  # no waiting for the sample
            clock[0] += 0.5 * T.IDLE_SAMPLE_S
            T.poll_threads()
            assert torch.get_num_threads() == 1  # not due yet
            clock[0] += T.IDLE_SAMPLE_S
            T.poll_threads()
            assert torch.get_num_threads() == 2  # 2.4 idle cores
            T.poll_threads()  # chosen once; the sample is kept for the next solve
            assert torch.get_num_threads() == 2
        assert torch.get_num_threads() == 4
        assert T._last_sample == (clock[0], 2.4)
        with T.solve_threads(10 * T.ONE_THREAD_MAX_WORK):  # the sample is fresh: used at once
            assert torch.get_num_threads() == 2
        with T.solve_threads(T.ONE_THREAD_MAX_WORK // 2):  # small: one thread, nothing pending
            assert torch.get_num_threads() == 1
            T.poll_threads()
            assert torch.get_num_threads() == 1
        with T.solve_threads(10 * T.ONE_THREAD_MAX_WORK, threads=3):  # the caller's count
            assert torch.get_num_threads() == 3
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)


def test_a_solve_restores_the_thread_count_and_the_idle_sample_is_a_core_count():
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((40, 3)), rng.standard_normal(40)
    basis = bn_basis(X)
    problem = ConvexBNProblem(basis, sample_arrangements(basis, 8, random_state=0), y, beta=0.5)
    before = torch.get_num_threads()
    problem.solve("torch", method="al")
    problem.solve("torch", method="admm", threads=1)
    assert torch.get_num_threads() == before
    from convexbn.solvers.torch.threads import idle_cores

    idle = idle_cores(0.02)
    assert idle is None or 0 <= idle <= (__import__("os").cpu_count() or 1) + 1e-9


def test_fista_reports_the_kernels_first_call_time():
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((40, 3)), rng.standard_normal(40)
    basis = bn_basis(X)
    problem = ConvexBNProblem(basis, sample_arrangements(basis, 8, random_state=0), y, beta=0.5)
    first = problem.solve("torch", method="fista")
    again = problem.solve("torch", method="fista")
    assert first.info["kernel_load_s"] >= 0.0
    # every kernel version this solve needs was loaded by the first one: none is loaded again
    assert again.info["kernel_load_s"] == 0.0


def test_the_idle_sample_stays_within_the_core_count():
    """/proc/stat and /proc/self/stat are read at different instants in whole jiffies: a reading whose own
    time outruns the total (seen on CI as 2.5 idle cores of 2) is clamped, and so is a negative one."""
    import os

    from convexbn.solvers.torch.threads import _record_sample

    cores = os.cpu_count() or 1
    assert _record_sample((0.0, 0.0), (5.0, 4.0)) == cores
    assert _record_sample((3.0, 0.0), (1.0, 4.0)) == 0.0
    assert _record_sample((0.0, 0.0), (2.0, 4.0)) == 0.5 * cores
    assert _record_sample((0.0, 1.0), (0.0, 1.0)) is None
