"""FISTA for the gated relaxation, and an augmented Lagrangian (AL) around FISTA for the exact program (4)
(docs/math.md section 4) with its cone constraints, in torch (CPU or CUDA); the method a row-sharded
(distributed) solve runs.

The maps are :class:`~convexbn.solvers.torch.operators.GroupOperators` on pre-activations ``Z = U' W^T``.
The cone constraints are ``S * Z >= 0`` with ``S = 2 mask - 1``; their AL term is
``(rho / 2) ||relu(Lambda / rho - S * Z)||^2``.

Cost per FISTA iteration: ``Z`` is linear in W, so the pre-activations at the extrapolated point are the
same extrapolation of the last two iterates' ones (kept), and an iteration costs one gradient there (the
adjoint products) and one forward product per backtracking trial: about ``2 B C n P k`` multiply-adds
for ``B`` blocks (2 for the exact program), half of what evaluating value and gradient at both points
costs. The stopping rule's gradient at the new point is formed every 5th iteration only.

Peak memory (floats of the working dtype): the basis ``n k``, the mask and both signs ``3 n P``, the
multipliers ``2 C n P`` (exact program), and four (2, C, n, P) buffers allocated once per FISTA run (the
last two iterates' pre-activations, the extrapolated ones, the AL residual), into which every elementwise
step writes: roughly ``(3 + 10 C) n P + n k + 12 C P k`` floats. (No chunking over samples yet.) Writing
in place matters on a CPU: at n = 60000, P = 500 a fresh (2, n, P) float32 array costs about three times
the arithmetic of a multiplication in page faults, and the iteration took 2.48 s with fresh arrays against
1.08 s in place (``benchmarks/bench_scale.py``, docs/solvers.md).

FISTA (Beck & Teboulle, 2009) with backtracking on the Lipschitz estimate and function-value adaptive
restart (O'Donoghue & Candes, 2015), as in Mishkin, Sahiner & Pilanci (ICML 2022); inner stopping on the
norm of the minimum-norm subgradient or on the relative change of the best objective over 5 iterations
(``rel_change``; by default 10 epsilons of the dtype, where float32 stalls before the subgradient rule
can be met). AL outer loop: multipliers
``Lambda <- relu(Lambda - rho S Z)``, ``rho`` times ``rho_growth`` (2) when the violation fails to halve,
inexact inner solves whose tolerance tightens by 5x per round (our choices, exposed as parameters; pyscnn's
rule differs in constants). The exact program is warm-started from the gated
solution, split into ``W_pos = w`` where ``D_i U' w`` is mostly positive, else ``W_neg = -w``.
A nonsmooth loss (the hinge) is smoothed (:meth:`convexbn.losses.Loss.torch_value_grad`, Huber, parameter
``mu`` from its ``smoothing_start``) with continuation ``mu -> mu / 10`` down to ``hinge_mu_min``; the
reported objective is always the true, unsmoothed one.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import torch

from ...exceptions import CheckpointError, SolverError
from ..base import SolverResult
from .al_certificate import certify_point, with_best_bound
from .checkpoint import StateSpec
from .common import cone_violation, warm_start_arrays
from .loop import IterationLoop
from .operators import GroupOperators
from .settings import ALSettings

__all__ = ["solve_al", "TorchSolverState"]


def _group_shrink(V, thresh):
    norms = V.norm(dim=-1, keepdim=True)
    return V * (1 - thresh / norms.clamp_min(1e-300)).clamp_min(0)


class TorchSolverState:
    """Everything the solver needs to continue: saved in checkpoints, restored on resume."""

    FIELDS = (
        "X", "X_prev", "Lam", "rho", "L", "t", "phase", "outer", "inner", "total", "mu",
        "prev_obj", "prev_violation", "history", "g_ref", "obj_check",
    )  # fmt: skip

    def __init__(self, **kw):
        for name in self.FIELDS:
            setattr(self, name, kw.get(name))
        self.stopped = False  # set by a callback; not saved (a resumed solve continues)

    def to_dict(self):
        return {name: getattr(self, name) for name in self.FIELDS}


def _pre_into(ops, X, out):
    """Pre-activations of every block of X (B, C, P, k) written into ``out`` (B, C, n, P)."""
    for j in range(X.shape[0]):
        ops.pre(X[j], out=out[j])
    return out


def _smooth_value(ops, Z, Lam, rho, exact, mu, V, scratch):
    """Smooth part (loss + AL term) from the pre-activations Z (B, C, n, P), and what its gradient needs.

    Works in the caller's buffers: ``V`` (B, C, n, P) receives ``relu(Lambda - rho S Z)`` (exact
    program; ``rho`` times the AL residual ``relu(Lambda / rho - S Z)``), ``scratch`` (same shape, not Z)
    is overwritten. Returns the value (this process's share, not yet all-reduced in a distributed
    solve) and the loss gradient R (n, C).
    """
    if exact:
        Zd = torch.sub(Z[0], Z[1], out=scratch[0]).mul_(ops.mask)
    else:
        Zd = torch.mul(Z[0], ops.mask, out=scratch[0])
    value, R = ops.loss.torch_value_grad(Zd.sum(-1).T, ops.Y, mu)
    if not exact:
        return value, R
    torch.addcmul(Lam, ops.signs, Z, value=-rho, out=V).clamp_min_(0)
    return value + (0.5 / rho) * torch.mul(V, V, out=scratch).sum(), R


def _smooth_grad(ops, R, rho, exact, V):
    """Gradient (B, C, P, k) of the smooth part from R and the ``V`` that :func:`_smooth_value` filled
    (overwritten: the adjoint's input is formed in place)."""
    Rt = R.T[:, :, None]
    if not exact:
        torch.mul(ops.mask, Rt, out=V[0])
        return ops.adjoint_pre(V[:1])
    V.mul_(ops.neg_signs)  # the AL term's gradient: -rho S relu(Lambda / rho - S Z) = -S V
    V[0].addcmul_(ops.mask, Rt)
    V[1].addcmul_(ops.mask, Rt, value=-1)
    return ops.adjoint_pre(V)


def _value_grad_at(ops, Z, Lam, rho, exact, mu, V, scratch):
    """Smooth value (a float, all-reduced) and gradient from the pre-activations Z: one message."""
    value, R = _smooth_value(ops, Z, Lam, rho, exact, mu, V, scratch)
    value, grad = _reduce_value_grad(ops, value, _smooth_grad(ops, R, rho, exact, V))
    return float(value), grad


def _reduce_value(ops, value) -> float:
    """All-reduce a value alone (a scalar message) in a distributed solve."""
    return float(value if ops.comm is None else ops.reduce_sum(value.reshape(1).clone())[0])


def _reduce_value_grad(ops, value, grad):
    """Both sums over samples in one all-reduce (a distributed solve's only per-evaluation message)."""
    if ops.comm is None:
        return value, grad
    packed = ops.reduce_sum(torch.cat([grad.reshape(-1), value.reshape(1).to(grad.dtype)]))
    return packed[-1], packed[:-1].reshape(grad.shape)


def _objective(ops, X, exact):
    """The program's own objective (no AL term), with the true loss."""
    Z = ops.pre(X[0]) - (ops.pre(X[1]) if exact else 0)
    F = ops.predict_pre(Z)
    loss = ops.reduce_sum(ops.loss.torch_value(F, ops.Y).reshape(1))[0]
    return float(loss + ops.beta * X.norm(dim=-1).sum())


def _min_norm_subgrad(G, X, beta):
    """Norm of the minimum-norm subgradient of smooth + beta * sum ||x_i|| (over all groups)."""
    norms = X.norm(dim=-1, keepdim=True)
    active = norms > 0
    sub_active = G + beta * X / norms.clamp_min(1e-300)
    sub_zero = (G.norm(dim=-1, keepdim=True) - beta).clamp_min(0)
    return float(torch.where(active, sub_active.norm(dim=-1, keepdim=True), sub_zero).norm())


def solve_al(problem, settings: ALSettings, warm_start=None, callback=None) -> SolverResult:
    """The augmented Lagrangian around FISTA for program (4); plain FISTA for the gated relaxation (module
    docstring). ``settings``: :class:`~convexbn.solvers.torch.settings.ALSettings`.

    ``callback(n_iter, W_pos, W_neg)`` with numpy copies of the current point, every 10 iterations;
    returning True stops the solve there with status ``"optimal_inaccurate"``. In a distributed solve (a
    problem with a ``communicator``) it runs on rank 0 only.
    """
    dtype, max_iter, tol, feas_tol = settings.dtype, settings.max_iter, settings.tol, settings.feas_tol
    max_outer, rho_growth, inner_tol0 = settings.max_outer, settings.rho_growth, settings.inner_tol0
    rel_change = settings.rel_change
    ops = GroupOperators(problem, torch.device(settings.device), dtype)
    if rel_change is None:
        rel_change = 10 * torch.finfo(dtype).eps
    exact = problem.formulation == "exact"
    C, P, k = problem.n_outputs, problem.n_patterns, problem.dim
    shape = (2 if exact else 1, C, P, k)
    smoothed = not problem.loss.smooth  # a nonsmooth loss is smoothed, with continuation

    loop = IterationLoop(problem, settings, "al", callback, ops.comm)
    blocks = (None, C, P, k)  # 1 block in the gated phase (and for the gated program), else 2
    spec = StateSpec(
        tensors={"X": (blocks, "float"), "X_prev": (blocks, "float"), "Lam": ((2, C, ops.n, P), "float")},
        counters=("outer", "inner", "total"),
        positive=("rho", "L", "t"),
        nonnegative=("mu",),
        optional=() if exact else ("Lam",),
    )
    loaded = loop.resume(ops.device, spec)
    state = None
    if loaded is not None:
        checkpoint = settings.checkpoint
        phase = loaded.get("phase")
        if phase not in ("gated", "main"):
            raise CheckpointError(f"checkpoint {os.fspath(checkpoint)!r}: phase is {phase!r}")
        n_blocks = 2 if exact and phase == "main" else 1
        if loaded["X"].shape[0] != n_blocks or loaded["X_prev"].shape != loaded["X"].shape:
            raise CheckpointError(
                f"checkpoint {os.fspath(checkpoint)!r}: {loaded['X'].shape[0]} blocks in phase {phase!r}"
            )
        state = TorchSolverState(**loaded)
    if state is None:
        X0 = torch.zeros(shape, device=ops.device, dtype=dtype)
        phase = "gated" if exact else "main"
        if warm_start is not None:
            Wp, Wn = warm_start_arrays(warm_start)
            X0[0] = torch.as_tensor(np.asarray(Wp), dtype=dtype)
            if exact:
                X0[1] = torch.as_tensor(np.asarray(Wn), dtype=dtype)
            phase = "main"
        L0 = ops.lipschitz_estimate(2 if exact else 1)
        state = TorchSolverState(
            X=X0,
            X_prev=X0.clone(),
            Lam=torch.zeros((2, C, ops.n, P), device=ops.device, dtype=dtype) if exact else None,
            rho=float(settings.rho) if settings.rho is not None else settings.rho_factor * L0,
            L=L0,
            t=1.0,
            phase=phase,
            outer=0,
            inner=0,
            total=0,
            mu=problem.loss.smoothing_start,
            prev_obj=math.inf,
            prev_violation=math.inf,
            history=[],
            g_ref=None,
        )

    loop.start(state.total)

    def save():
        loop.save(state.to_dict())

    def report():
        return loop.report(state.total, state.X if state.phase == "main" and exact else state.X[:1])

    status, final = "optimal", (None, None)
    cert_end, cert_cost = time.perf_counter(), 0.0  # when the last certificate ended, and what it cost
    best_lower = -math.inf  # the best lower bound of the rounds' certificates
    while True:
        if state.phase == "gated":
            _fista_run(ops, state, exact=False, tol=tol, max_iter=max_iter, loop=loop, report=report,
                       rel_change=rel_change)  # fmt: skip
            if state.total >= max_iter or state.stopped:
                status = "optimal_inaccurate"
                break
            # split the gated groups into ReLU groups of the right sign
            G = state.X[0]
            S = torch.sign(ops.reduce_sum((ops.mask[None] * ops.pre(G)).sum(1, keepdim=True)).transpose(1, 2))
            S = torch.where(S == 0, torch.ones_like(S), S)
            X = torch.zeros(shape, device=ops.device, dtype=dtype)
            X[0] = G * (S > 0)
            X[1] = -G * (S < 0)
            state.X, state.X_prev, state.t, state.phase, state.inner = X, X.clone(), 1.0, "main", 0
            # a new problem: its restart test must not compare against the gated objective
            state.prev_obj, state.obj_check = math.inf, math.inf
            state.history.append(("gated", state.total, _objective(ops, state.X[:1], False)))
            save()
            continue
        inner_tol = max(tol, inner_tol0 * 0.2**state.outer) if exact else tol
        converged = _fista_run(ops, state, exact=exact, tol=inner_tol, max_iter=max_iter, loop=loop,
                               report=report, rel_change=rel_change)  # fmt: skip
        converged = converged and inner_tol <= tol
        if state.total >= max_iter or state.stopped:
            status = "optimal_inaccurate"
            break
        if smoothed and state.mu > settings.hinge_mu_min:
            state.mu = max(state.mu / 10, settings.hinge_mu_min)
            state.t, state.inner, state.prev_obj, state.obj_check = 1.0, 0, math.inf, math.inf
            continue
        if not exact:
            break
        violation = cone_violation(ops.signs, ops.pre, state.X, ops.reduce_max)
        state.history.append(("al", state.total, violation))
        # the multipliers' next value, relu(Lambda - rho S Z): also those of the round's certificate
        Zs = torch.stack([ops.pre(state.X[0]), ops.pre(state.X[1])])
        Lam_next = (state.Lam - state.rho * ops.signs * Zs).clamp_min(0)
        # a round's certificate (only with gap_tol) when the last one cost at most a tenth of the time since
        due = settings.gap_tol is not None and time.perf_counter() - cert_end >= 10 * cert_cost
        feasible, certificate, seconds = (certify_point(ops, state.X, Lam_next, problem.Uprime) if due
                                          else (None, None, 0))  # fmt: skip
        if due:
            cert_end, cert_cost = time.perf_counter(), seconds
        if certificate is not None:  # gaps against the best bound of the rounds' certificates
            certificate = with_best_bound(certificate, best_lower)
            best_lower = certificate.lower_bound
            state.history.append(("certificate", state.total, certificate.relative_gap))
        if settings.verbose:
            gap = "" if certificate is None else f", certified gap {certificate.relative_gap:.2e}"
            print(f"AL round {state.outer}: iters {state.total}, violation {violation:.2e}, "
                  f"rho {state.rho:.3g}, objective {_objective(ops, state.X, True):.10g}{gap}")  # fmt: skip
        certified = certificate is not None and certificate.relative_gap <= settings.gap_tol
        if (violation <= feas_tol and converged) or certified or state.outer >= max_outer:
            status = status if (violation <= feas_tol and converged) or certified else "optimal_inaccurate"
            final = (feasible, certificate)  # both None where there is no certificate
            break
        del Zs, feasible, certificate
        state.Lam = Lam_next
        del Lam_next
        if violation > 0.5 * state.prev_violation:
            state.rho *= rho_growth
        state.prev_violation = violation
        state.outer += 1
        state.t, state.inner, state.prev_obj, state.obj_check = 1.0, 0, math.inf, math.inf
        save()
    if status != "optimal":
        save()  # the exact point where the budget ran out, so that a resume continues from it
    loop.close()
    if state.phase == "gated":  # stopped inside the gated warm start: report it as the exact start
        state.X = torch.cat([state.X, torch.zeros_like(state.X)])
    feasible, certificate = final if status == "optimal" else (None, None)
    if exact and state.phase == "main" and status == "optimal" and certificate is None and settings.certify:
        # the answer is the AL's point moved into the cones, with its certificate (al_certificate); a solve
        # cut short keeps its own point (the move can collapse groups far outside: nothing is lost)
        Zs = torch.stack([ops.pre(state.X[0]), ops.pre(state.X[1])])
        feasible, certificate, _ = certify_point(
            ops, state.X, (state.Lam - state.rho * ops.signs * Zs).clamp_min(0), problem.Uprime)
        certificate = None if certificate is None else with_best_bound(certificate, best_lower)
        del Zs
    if feasible is not None:
        state.X = feasible
    X = state.X.detach().to("cpu", torch.float64).numpy()
    if not np.all(np.isfinite(X)):
        raise SolverError("the torch solver diverged (non-finite iterates)")
    W_pos = X[0]
    W_neg = X[1] if exact else np.zeros_like(W_pos)
    info = {
        "al_rounds": state.outer,
        "rho": state.rho,
        "history": state.history,
        "lipschitz": state.L,
        **({"certificate": certificate} if exact and settings.certify and ops.comm is None else {}),
        # as FISTA reports them (convexbn.fit_common.program_bounds takes the bound)
        **({} if certificate is None else {"lower_bound": certificate.lower_bound,
                                           "relative_gap": certificate.relative_gap}),
        **({} if ops.comm is None else {"communication": ops.comm.stats()}),
    }
    name = f"torch:{ops.device.type}:{str(dtype).replace('torch.', '')}"
    return SolverResult(W_pos, W_neg, status, name, n_iter=state.total, info=info)


def _fista_run(
    ops, state, *, exact, tol, max_iter, loop, report=None, check_every=5, rel_change=0.0
):
    """FISTA on the current (AL-augmented) problem, continuing from ``state``. True if converged.

    Converged: the minimum-norm subgradient is below ``tol`` times the reference gradient, or the best
    objective improved by at most ``rel_change`` (relative) over the last ``check_every`` iterations.

    Per iteration: one gradient at the extrapolated point (two adjoint products; its pre-activations
    are the same extrapolation of the last two iterates' ones) and one forward product per
    backtracking trial. The stopping rule's gradient at the new point (two more adjoint products) is
    formed every ``check_every`` iterations only.
    """
    beta = ops.beta
    # the gated warm-start phase of the exact program works on the first block only
    X, X_prev = (state.X[:1], state.X_prev[:1]) if state.phase == "gated" else (state.X, state.X_prev)
    use_exact = exact
    Lam, rho, mu = state.Lam, state.rho, max(state.mu, 1e-300)
    L, t = state.L, state.t
    nonsmooth = lambda Z: beta * float(Z.norm(dim=-1).sum())  # noqa: E731
    obj = state.prev_obj
    slack = 10 * torch.finfo(ops.dtype).eps  # rounding allowance of the sufficient-decrease test
    converged = False
    # Four (B, C, n, P) buffers for the whole run; every elementwise step writes into one of them (a fresh
    # array of this size costs more in page faults than its arithmetic). Z and Zo hold the pre-activations
    # of the last two iterates; once the extrapolated ones are formed in Zy, Zo is free and receives the
    # trial point's (the two then swap roles on acceptance); V holds the AL residual and then, in place,
    # the adjoint's input. Z is linear in X, so fresh products at every (re)start make a resumed solve take
    # the very same steps.
    buffers = [torch.empty((X.shape[0], X.shape[1], ops.n, X.shape[2]), device=ops.device, dtype=ops.dtype)
               for _ in range(4)]  # fmt: skip
    Z, Zo, Zy_buf, V = buffers
    _pre_into(ops, X, Z)
    if torch.equal(X, X_prev):
        Zo.copy_(Z)
    else:
        _pre_into(ops, X_prev, Zo)
    # the best objective at the last check (inf at the start of a run: a new round or phase)
    obj_check = math.inf if state.obj_check is None else state.obj_check
    while state.total < max_iter:
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        momentum = (t - 1) / t_next
        Yx = X + momentum * (X - X_prev)
        # Z + momentum (Z - Zo), the extrapolation of the last two iterates' pre-activations
        Zy = torch.lerp(Zo, Z, 1 + momentum, out=Zy_buf) if momentum else Z
        fy, gy = _value_grad_at(ops, Zy, Lam, rho, use_exact, mu, V, Zo)
        if state.g_ref is None:  # scale of the stopping rule: the gradient at the start of the solve
            state.g_ref = max(float(gy.norm()), 1e-300)
        extrapolated = bool(momentum)
        while True:  # backtracking on L
            Xn = _group_shrink(Yx - gy / L, beta / L)
            D = Xn - Yx
            Zn = _pre_into(ops, Xn, Zo)
            fx, Rn = _smooth_value(ops, Zn, Lam, rho, use_exact, mu, V, Zy_buf)
            fx = _reduce_value(ops, fx)
            if fx <= fy + float((gy * D).sum()) + 0.5 * L * float(D.square().sum()) + slack * abs(fy):
                break
            if extrapolated:
                # the extrapolated pre-activations carry their own rounding, which a very curved loss
                # (the smoothed hinge at small mu) can mistake for a too-small L: recompute them once
                fy, gy = _value_grad_at(ops, _pre_into(ops, Yx, Zy_buf), Lam, rho, use_exact, mu, V, Zo)
                extrapolated = False
                continue
            L *= 2.0
        new_obj = fx + nonsmooth(Xn)
        if new_obj > obj:  # adaptive restart: drop the momentum
            t_next = 1.0
        X_prev, X, Zo, Z = X, Xn, Z, Zn
        t = t_next
        L *= 0.95  # let the step grow back
        state.total += 1
        state.inner += 1
        obj = min(obj, new_obj)
        if state.inner % check_every == 0:
            # stop on the minimum-norm subgradient of the (AL-augmented) objective at the new point
            gx = ops.reduce_sum(_smooth_grad(ops, Rn, rho, use_exact, V))  # a fresh tensor: summed in place
            converged = _min_norm_subgrad(gx, X, beta) <= tol * state.g_ref
            stalled = math.isfinite(obj_check) and obj_check - obj <= rel_change * abs(obj)
            converged = converged or stalled
            obj_check = state.obj_check = obj
        del Rn
        state.X, state.X_prev, state.L, state.t, state.prev_obj = X, X_prev, L, t, obj
        loop.tick(state.total, state.to_dict)  # the bar, and a checkpoint every checkpoint_every
        if report is not None and state.total % 10 == 0 and report():
            state.stopped = True
            break
        if converged:
            break
    return converged
