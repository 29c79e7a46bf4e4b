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

Every loss enters through its elementwise prox: closed form for squared and hinge (exact, no smoothing),
a few safeguarded Newton steps for logistic and cross-entropy. The reported point is the group-sparse copy
``v``; the solve stops when its relative cone violation is below ``feas_tol`` and the relative primal and
dual residuals are below ``tol``.
"""

from __future__ import annotations

import math
import os

import torch

from .checkpoint import StateSpec, load_checkpoint, problem_fingerprint, save_checkpoint
from .torch_common import cone_violation, finished_groups, warm_start_arrays

__all__ = ["solve_admm"]


def _newton_prox(value, grad_hess, Z, rho, F0, max_steps=30, gtol=1e-9):
    """Damped Newton with Armijo backtracking on ``phi(f) = l(f) + (rho/2)||f - Z||^2`` per row.

    ``value(F)`` -> (m,), ``grad_hess(F)`` -> (m, c), (m, c, c); rows are independent strongly convex
    problems, so the damped method converges globally (and quadratically near the minimiser).
    """
    F = F0.clone()
    eye = torch.eye(F.shape[1], dtype=F.dtype, device=F.device)
    phi = lambda G: value(G) + 0.5 * rho * (G - Z).square().sum(-1)  # noqa: E731
    for _ in range(max_steps):
        g, H = grad_hess(F)
        g = g + rho * (F - Z)
        if float(g.abs().max()) <= gtol:
            break
        if F.shape[1] == 1:
            d = g / (H[:, :, 0] + rho)
        else:
            d = torch.linalg.solve(H + rho * eye, g.unsqueeze(-1)).squeeze(-1)
        slope = (g * d).sum(-1)
        f0 = phi(F)
        t = torch.ones_like(slope)
        for _ in range(30):
            ok = phi(F - t[:, None] * d) <= f0 - 1e-4 * t * slope
            if bool(ok.all()):
                break
            t = torch.where(ok, t, t / 2)
        step = t[:, None] * d
        F = F - step
        if float(step.abs().max()) <= 1e-13 * (1 + float(F.abs().max())):  # at the rounding floor
            break
    return F


def _loss_prox(loss, Z, Y, rho, F0=None):
    """``argmin_F L(F, Y) + (rho / 2) ||F - Z||^2`` for F, Z, Y of shape (n, C).

    ``F0`` is a starting point for the iterative proxes (the previous ADMM iterate).
    """
    name = loss.name
    if name == "squared":
        return (Y + rho * Z) / (1 + rho)
    if name == "hinge":  # l(f) = max(0, 1 - y f): shift toward the margin by at most 1 / rho
        m = Y * Z
        return torch.where(m >= 1, Z, torch.where(m <= 1 - 1 / rho, Z + Y / rho, Y))
    F0 = Z if F0 is None else F0
    if name == "logistic":  # elementwise: rows of one coordinate
        y, z = Y.reshape(-1, 1), Z.reshape(-1, 1)

        def value(F):
            return torch.nn.functional.softplus(-y * F)[:, 0]

        def grad_hess(F):
            p = torch.sigmoid(-y * F)
            return -y * p, (p * (1 - p))[:, :, None]

        return _newton_prox(value, grad_hess, z, rho, F0.reshape(-1, 1)).reshape(Z.shape)
    if name == "cross_entropy":

        def value(F):
            return torch.logsumexp(F, dim=1) - (Y * F).sum(1)

        def grad_hess(F):
            p = torch.softmax(F, dim=1)
            return p - Y, torch.diag_embed(p) - p[:, :, None] * p[:, None, :]

        return _newton_prox(value, grad_hess, Z, rho, F0)
    raise ValueError(f"no prox for loss {name!r}")


class _Maps:
    def __init__(self, problem, device, dtype):
        self.Up = torch.as_tensor(problem.Uprime, device=device, dtype=dtype)
        self.mask = torch.as_tensor(problem.mask, device=device, dtype=dtype)
        self.signs = 2 * self.mask - 1
        self.Y = torch.as_tensor(problem.Y, device=device, dtype=dtype)
        # B = I + G^T G per group, G^T G = U'^T U' (the identity for the orthonormal BN basis; diagonal
        # [F(S)^2, 1] for a spectral filter). M = I + A B^{-1} A^T = I + 2 (U' B^{-1} U'^T) * (mask mask^T)
        k = self.Up.shape[1]
        eye = torch.eye(k, device=device, dtype=dtype)
        self.Binv = torch.linalg.inv(eye + self.Up.T @ self.Up)
        M = 2 * (self.Up @ self.Binv @ self.Up.T) * (self.mask @ self.mask.T)
        M.diagonal().add_(1.0)
        self.chol = torch.linalg.cholesky(M)

    def pre(self, X):
        """``U' x^T`` for X of shape (2, C, P, k): (2, C, n, P)."""
        return torch.matmul(self.Up, X.transpose(-1, -2))

    def A(self, Z):
        """Prediction (n, C) from pre-activations Z (2, C, n, P)."""
        return (self.mask * (Z[0] - Z[1])).sum(-1).T

    def adjoint(self, w=None, z=None):
        """``A^T w + G^T z`` for w (n, C) and z (2, C, n, P): (2, C, P, k)."""
        parts = 0
        if w is not None:
            Mw = self.mask * w.T[:, :, None]  # (C, n, P)
            parts = torch.stack([Mw, -Mw])
        if z is not None:
            parts = parts + self.signs * z
        return torch.matmul(parts.transpose(-1, -2), self.Up)

    def solve_x(self, rhs):
        """``(A^T A + B) ^{-1} rhs`` by Woodbury: ``B^{-1} (rhs - A^T M^{-1} A B^{-1} rhs)``."""
        x = rhs @ self.Binv
        t = torch.cholesky_solve(self.A(self.pre(x)), self.chol)  # (n, C)
        return (rhs - self.adjoint(w=t)) @ self.Binv


def solve_admm(
    problem,
    *,
    device: str = "cpu",
    dtype=torch.float64,
    max_iter: int = 20_000,
    tol: float = 1e-6,
    feas_tol: float = 1e-7,
    rho: float = 1.0,
    relaxation: float = 1.6,
    adapt_rho: bool = True,
    check_every: int = 10,
    warm_start=None,
    checkpoint=None,
    checkpoint_every: int = 200,
    resume: bool = False,
    progress: bool = False,
    verbose: bool = False,
    callback=None,
):
    """ADMM for the exact program (see the module docstring). Returns the raw result dict.

    Called through :func:`convexbn.solvers.torch_backend.solve_torch` (``solver="torch"``), which validates
    ``device`` and ``dtype``; the parameters are that function's, plus
    ``rho`` (initial penalty), ``relaxation`` (over-relaxation factor in [1, 2)), ``adapt_rho`` (residual
    balancing) and ``check_every`` (iterations between convergence checks).
    ``callback(n_iter, W_pos, W_neg)`` is called at every convergence check with numpy copies of the
    reported point (the group-sparse copy ``v``); returning True stops the solve there
    (status ``"optimal_inaccurate"``).
    """
    dev = torch.device(device)  # device and dtype were validated by solve_torch
    maps = _Maps(problem, dev, dtype)
    C, P, k = problem.n_outputs, problem.n_patterns, problem.dim
    n = problem.n_samples
    beta, loss = float(problem.beta), problem.loss

    # hashing the data costs a pass over it: only when there is a checkpoint to write or check
    fingerprint = problem_fingerprint(problem, "admm", dtype) if checkpoint is not None else None
    state = None
    if resume and checkpoint is not None and os.path.exists(checkpoint):
        groups, fit, slack = ((2, C, P, k), "float"), ((n, C), "float"), ((2, C, n, P), "float")
        spec = StateSpec(
            tensors={"x": groups, "v": groups, "lv": groups, "F": fit, "lF": fit, "s": slack, "ls": slack},
            counters=("it",),
            positive=("rho",),
        )
        state = load_checkpoint(checkpoint, fingerprint, dev, spec)
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
            "F": maps.A(Z),
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

    def save():
        if checkpoint is not None:
            save_checkpoint(state, checkpoint, fingerprint)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_iter, initial=state["it"], desc="convexbn admm", leave=False)

    x, v, F, s = state["x"], state["v"], state["F"], state["s"]
    lv, lF, ls, rho_ = state["lv"], state["lF"], state["ls"], state["rho"]
    status = "optimal_inaccurate"
    stop = False
    alpha = relaxation
    y_scale = max(float(maps.Y.norm()), 1e-300)
    while state["it"] < max_iter:
        # x-update: (A^T A + B) x = A^T (F - lF) + (v - lv) + G^T (s - ls), B = I + U'^T U'
        x = maps.solve_x(maps.adjoint(w=F - lF, z=s - ls) + (v - lv))
        Z = maps.pre(x)
        Ax, Gx = maps.A(Z), maps.signs * Z
        # over-relaxation (Boyd et al., section 3.4.3)
        Ax_r = alpha * Ax + (1 - alpha) * F
        x_r = alpha * x + (1 - alpha) * v
        Gx_r = alpha * Gx + (1 - alpha) * s
        F_old, v_old, s_old = F, v, s
        F = _loss_prox(loss, Ax_r + lF, maps.Y, rho_, F)
        v = x_r + lv
        v = v * (1 - (beta / rho_) / v.norm(dim=-1, keepdim=True).clamp_min(1e-300)).clamp_min(0)
        s = (Gx_r + ls).clamp_min(0)
        lF = lF + Ax_r - F
        lv = lv + x_r - v
        ls = ls + Gx_r - s
        state["it"] += 1
        if bar is not None:
            bar.update(1)
        if state["it"] % check_every == 0:
            r_pri = math.sqrt(
                float((Ax - F).square().sum() + (x - v).square().sum() + (Gx - s).square().sum())
            )
            dual_vec = maps.adjoint(w=F - F_old, z=s - s_old) + (v - v_old)
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
            scale_dual = max(
                rho_
                * max(float(maps.adjoint(w=lF).norm()), float(lv.norm()), float(maps.adjoint(z=ls).norm())),
                y_scale,
            )
            violation = cone_violation(maps.signs, maps.pre, v)
            state["history"].append((state["it"], r_pri / scale_pri, r_dual / scale_dual, violation))
            if verbose and state["it"] % (10 * check_every) == 0:
                print(f"ADMM {state['it']}: primal {r_pri / scale_pri:.2e} dual {r_dual / scale_dual:.2e} "
                      f"violation {violation:.2e} rho {rho_:.3g}")  # fmt: skip
            stop = False
            if callback is not None:
                V = v.detach().to("cpu", torch.float64).numpy()
                stop = bool(callback(state["it"], V[0], V[1]))
            if r_pri <= tol * scale_pri and r_dual <= tol * scale_dual and violation <= feas_tol:
                status = "optimal"
            elif adapt_rho and state["it"] % (5 * check_every) == 0:
                ratio = (r_pri / scale_pri) / max(r_dual / scale_dual, 1e-300)
                factor = 2.0 if ratio > 10 else (0.5 if ratio < 0.1 else 1.0)
                if factor != 1.0:
                    rho_ *= factor
                    lF, lv, ls = lF / factor, lv / factor, ls / factor  # scaled duals
        state.update(x=x, v=v, F=F, s=s, lv=lv, lF=lF, ls=ls, rho=rho_)
        if checkpoint_every and state["it"] % checkpoint_every == 0:
            save()
        if status == "optimal" or (state["it"] % check_every == 0 and stop):
            break
    if status != "optimal":
        save()
    if bar is not None:
        bar.close()
    W_pos, W_neg, name = finished_groups(v, "ADMM", dev, dtype)
    return {
        "W_pos": W_pos,
        "W_neg": W_neg,
        "status": status,
        "solver": name,
        "n_iter": state["it"],
        "info": {
            "rho": rho_,
            "history": state["history"],
            "admm_state": {
                key: state[key].detach().to("cpu").numpy() for key in ("x", "v", "F", "s", "lv", "lF", "ls")
            }
            | {"rho": rho_},
        },
    }


def _previous_admm_state(warm_start):
    """The ``admm_state`` a previous ADMM solve left in its ``info`` (solution or raw dict), if any."""
    info = getattr(warm_start, "info", None)
    if info is None and isinstance(warm_start, dict):
        info = warm_start.get("info", warm_start)
    return info.get("admm_state") if isinstance(info, dict) else None
