"""ADMM for the exact program (4) in torch, in the spirit of CRONOS (Feng, Frangella & Pilanci, 2024).

Variables ``x = (u, u')`` of shape (2, C, P, k). Three splits, one penalty ``rho``:

    F = A x        (the prediction, (n, C); A x = sum_i D_i U' (u_i - u'_i))   -> prox of the loss
    v = x          (the group-lasso copy)                                      -> group soft-threshold
    s = G x >= 0   (the cone slacks, (2, C, n, P); G x = S * (U' x^T))         -> ReLU

The x-update solves ``(A^T A + G^T G + I) x = rhs``. Each ``S_i`` is a +-1 diagonal, so
``G^T G = U'^T U'`` on every group: the identity for the orthonormal BN basis (the system is
``(A^T A + 2 I) x = rhs``), the diagonal ``[F(S)^2, 1]`` for a spectral filter (``implicit_reg``). Either
way ``B = I + U'^T U'`` is a fixed k x k matrix, the system does not depend on ``rho``, and ``rho`` adapts
(residual balancing, Boyd et al. 2011, section 3.4.1) at no cost. By Woodbury,
``(B + A^T A)^{-1} = B^{-1} - B^{-1} A^T (I + A B^{-1} A^T)^{-1} A B^{-1}`` with
``A B^{-1} A^T = 2 (U' B^{-1} U'^T) * (mask mask^T)`` (n x n, two matmuls; ``K = (U' U'^T) * (mask
mask^T)`` for the plain basis), so one Cholesky factorization serves the whole solve. Memory: ``n^2``
floats for the factor (use the FISTA/AL method beyond a few tens of thousands of samples) plus about
``(4 + 10 C) n P`` for slacks, duals and temporaries.

Every loss enters through its elementwise prox (:meth:`convexbn.losses.Loss.torch_prox`): closed form for
squared and hinge (exact, no smoothing), a few safeguarded Newton steps for logistic and cross-entropy. The
reported point is the group-sparse copy ``v``; the solve stops when its relative cone violation is below
``feas_tol`` and the relative primal and dual residuals are below ``tol``.
"""

from __future__ import annotations

import math

import torch

from ..base import SolverResult
from .checkpoint import StateSpec
from .common import cone_violation, finished_groups, warm_start_arrays
from .loop import IterationLoop
from .operators import GroupOperators
from .settings import ADMMSettings

__all__ = ["solve_admm"]


class _WoodburySystem:
    """The x-update's system ``(A^T A + B) x = rhs`` of one problem, ``B = I + G^T G`` (module docstring),
    solved by Woodbury with one Cholesky factor of ``I + A B^{-1} A^T``."""

    def __init__(self, ops: GroupOperators):
        # B = I + G^T G per group, G^T G = U'^T U' (the identity for the orthonormal BN basis; diagonal
        # [F(S)^2, 1] for a spectral filter). M = I + A B^{-1} A^T = I + 2 (U' B^{-1} U'^T) * (mask mask^T)
        self.ops = ops
        Up = ops.Up
        eye = torch.eye(Up.shape[1], device=Up.device, dtype=Up.dtype)
        self.Binv = torch.linalg.inv(eye + Up.T @ Up)
        M = 2 * (Up @ self.Binv @ Up.T) * (ops.mask @ ops.mask.T)
        M.diagonal().add_(1.0)
        self.chol = torch.linalg.cholesky(M)

    def solve(self, rhs):
        """``(A^T A + B) ^{-1} rhs`` by Woodbury: ``B^{-1} (rhs - A^T M^{-1} A B^{-1} rhs)``."""
        x = rhs @ self.Binv
        t = torch.cholesky_solve(_predict(self.ops, self.ops.pre(x)), self.chol)  # (n, C)
        return (rhs - _adjoint(self.ops, w=t)) @ self.Binv


def _predict(ops: GroupOperators, Z):
    """Prediction (n, C) from the pre-activations Z (2, C, n, P) of both blocks."""
    return ops.predict_pre(Z[0] - Z[1])


def _adjoint(ops: GroupOperators, w=None, z=None):
    """``A^T w + G^T z`` for w (n, C) and z (2, C, n, P): (2, C, P, k)."""
    parts = 0
    if w is not None:
        Mw = ops.mask * w.T[:, :, None]  # (C, n, P)
        parts = torch.stack([Mw, -Mw])
    if z is not None:
        parts = parts + ops.signs * z
    return ops.adjoint_pre(parts)


def solve_admm(problem, settings: ADMMSettings, warm_start=None, callback=None) -> SolverResult:
    """ADMM for the exact program (see the module docstring).

    ``settings``: :class:`~convexbn.solvers.torch.settings.ADMMSettings` (``rho`` the initial penalty,
    ``relaxation`` the over-relaxation factor in [1, 2), ``adapt_rho`` residual balancing, ``check_every``
    the iterations between convergence checks). ``callback(n_iter, W_pos, W_neg)`` is called at every
    convergence check with numpy copies of the reported point (the group-sparse copy ``v``); returning True
    stops the solve there (status ``"optimal_inaccurate"``).
    """
    dtype, max_iter, tol, feas_tol = settings.dtype, settings.max_iter, settings.tol, settings.feas_tol
    rho = 1.0 if settings.rho is None else settings.rho
    relaxation, adapt_rho, check_every = settings.relaxation, settings.adapt_rho, settings.check_every
    dev = torch.device(settings.device)
    maps = GroupOperators(problem, dev, dtype)
    system = _WoodburySystem(maps)
    C, P, k = problem.n_outputs, problem.n_patterns, problem.dim
    n = problem.n_samples
    beta, loss = float(problem.beta), problem.loss

    loop = IterationLoop(problem, settings, "admm", callback)
    groups, fit, slack = ((2, C, P, k), "float"), ((n, C), "float"), ((2, C, n, P), "float")
    spec = StateSpec(
        tensors={"x": groups, "v": groups, "lv": groups, "F": fit, "lF": fit, "s": slack, "ls": slack},
        counters=("it",),
        positive=("rho",),
    )
    state = loop.resume(dev, spec)
    if state is None:
        x = torch.zeros((2, C, P, k), device=dev, dtype=dtype)
        if warm_start is not None:
            Wp, Wn = warm_start_arrays(warm_start)
            x[0] = torch.as_tensor(Wp, dtype=dtype)
            x[1] = torch.as_tensor(Wn, dtype=dtype)
        Z = maps.pre(x)
        state = {
            "x": x,
            "v": x.clone(),
            "F": _predict(maps, Z),
            "s": (maps.signs * Z).clamp_min(0),
            "lv": torch.zeros_like(x),
            "lF": torch.zeros((n, C), device=dev, dtype=dtype),
            "ls": torch.zeros((2, C, n, P), device=dev, dtype=dtype),
            "rho": float(rho),
            "it": 0,
            "history": [],
        }
        previous = _previous_admm_state(warm_start)
        if previous is not None and previous["ls"].shape == (2, C, n, P):
            # a full ADMM state (primal copies, scaled duals, rho) from a neighbouring problem, e.g. the
            # previous beta of a path: the duals carry most of the work
            for key in ("x", "v", "F", "s", "lv", "lF", "ls"):
                state[key] = torch.as_tensor(previous[key], device=dev, dtype=dtype)
            state["rho"] = float(previous["rho"])

    loop.start(state["it"])

    x, v, F, s = state["x"], state["v"], state["F"], state["s"]
    lv, lF, ls, rho_ = state["lv"], state["lF"], state["ls"], state["rho"]
    status = "optimal_inaccurate"
    stop = False
    alpha = relaxation
    y_scale = max(float(maps.Y.norm()), 1e-300)
    while state["it"] < max_iter:
        # x-update: (A^T A + B) x = A^T (F - lF) + (v - lv) + G^T (s - ls), B = I + U'^T U'
        x = system.solve(_adjoint(maps, w=F - lF, z=s - ls) + (v - lv))
        Z = maps.pre(x)
        Ax, Gx = _predict(maps, Z), maps.signs * Z
        # over-relaxation (Boyd et al., section 3.4.3)
        Ax_r = alpha * Ax + (1 - alpha) * F
        x_r = alpha * x + (1 - alpha) * v
        Gx_r = alpha * Gx + (1 - alpha) * s
        F_old, v_old, s_old = F, v, s
        F = loss.torch_prox(Ax_r + lF, maps.Y, rho_, F)
        v = x_r + lv
        v = v * (1 - (beta / rho_) / v.norm(dim=-1, keepdim=True).clamp_min(1e-300)).clamp_min(0)
        s = (Gx_r + ls).clamp_min(0)
        lF = lF + Ax_r - F
        lv = lv + x_r - v
        ls = ls + Gx_r - s
        state["it"] += 1
        if state["it"] % check_every == 0:
            r_pri = math.sqrt(
                float((Ax - F).square().sum() + (x - v).square().sum() + (Gx - s).square().sum())
            )
            dual_vec = _adjoint(maps, w=F - F_old, z=s - s_old) + (v - v_old)
            r_dual = rho_ * float(dual_vec.norm())
            # ||Y|| floors both scales (the problem's own scale): without it a zero solution (beta above
            # the largest useful value) has residuals relative to ~0 and never stops
            scale_pri = max(
                math.sqrt(float(Ax.square().sum() + x.square().sum() + Gx.square().sum())),
                math.sqrt(float(F.square().sum() + v.square().sum() + s.square().sum())),
                y_scale,
            )
            # the three parts of [A; I; G]^T lambda cancel at the optimum (x has no objective term), so
            # the dual residual is measured against the largest part, not their sum
            parts = (float(_adjoint(maps, w=lF).norm()), float(lv.norm()), float(_adjoint(maps, z=ls).norm()))
            scale_dual = max(rho_ * max(parts), y_scale)
            violation = cone_violation(maps.signs, maps.pre, v)
            state["history"].append((state["it"], r_pri / scale_pri, r_dual / scale_dual, violation))
            if settings.verbose and state["it"] % (10 * check_every) == 0:
                print(f"ADMM {state['it']}: primal {r_pri / scale_pri:.2e} dual {r_dual / scale_dual:.2e} "
                      f"violation {violation:.2e} rho {rho_:.3g}")  # fmt: skip
            stop = loop.report(state["it"], v)
            if r_pri <= tol * scale_pri and r_dual <= tol * scale_dual and violation <= feas_tol:
                status = "optimal"
            elif adapt_rho and state["it"] % (5 * check_every) == 0:
                ratio = (r_pri / scale_pri) / max(r_dual / scale_dual, 1e-300)
                factor = 2.0 if ratio > 10 else (0.5 if ratio < 0.1 else 1.0)
                if factor != 1.0:
                    rho_ *= factor
                    lF, lv, ls = lF / factor, lv / factor, ls / factor  # scaled duals
        state.update(x=x, v=v, F=F, s=s, lv=lv, lF=lF, ls=ls, rho=rho_)
        loop.tick(state["it"], lambda: state)
        if status == "optimal" or (state["it"] % check_every == 0 and stop):
            break
    if status != "optimal":
        loop.save(state)
    loop.close()
    W_pos, W_neg, name = finished_groups(v, "ADMM", dev, dtype)
    kept = {key: state[key].detach().to("cpu").numpy() for key in ("x", "v", "F", "s", "lv", "lF", "ls")}
    info = {"rho": rho_, "history": state["history"], "admm_state": kept | {"rho": rho_}}
    return SolverResult(W_pos, W_neg, status, name, n_iter=state["it"], info=info)


def _previous_admm_state(warm_start):
    """The ``admm_state`` a previous ADMM solve left in its ``info`` (solution or raw dict), if any."""
    info = getattr(warm_start, "info", None)
    if info is None and isinstance(warm_start, dict):
        info = warm_start.get("info", warm_start)
    return info.get("admm_state") if isinstance(info, dict) else None
