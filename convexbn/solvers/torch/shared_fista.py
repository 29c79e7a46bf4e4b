"""FISTA on the shared-neuron program (8a) (:mod:`convexbn.shared_problem`), in torch, CPU or GPU.

The same method as :mod:`convexbn.solvers.torch.fista` on a different linear map: groups ``u_i`` (one per
atom, a pattern ``D_i`` and an output direction ``c_i``), predictions ``F = (M * (U' W^T)) C`` with the
masks ``M`` (n, m) and directions ``C`` (m, k), gradient ``((M * (R C^T))^T U')`` for the loss gradient
``R``. The prox of ``beta ||u|| + indicator(u in K_{D_i})`` is the cone projection followed by the group
soft-threshold (``K`` is a cone), computed exactly by
:func:`convexbn.solvers.torch.projection.project_cones` with the previous call's active sets as warm
starts. Every iterate is feasible; the method stops when the relative duality gap over the atom set,
``(objective - bound) / |objective|`` with the dual point ``-grad L`` scaled into feasibility by the
largest atom dual value, reaches ``tol`` (checked every ``check_every`` iterations). Step sizes by
backtracking from a quarter of the power-iteration estimate; the momentum restarts when the objective
goes up (O'Donoghue and Candes, 2015).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from ...shared_problem import SharedOutputProblem, SharedSolution
from .common import check_device_dtype
from .projection import NumbaBasis, ProjectionMemory, project_cones, resolve_projection_backend

__all__ = ["solve_shared_fista", "solve_output_lasso", "LASSO_STEP_START", "LASSO_STEP_DECAY"]

#: The output lasso's first curvature estimate, as a fraction of the loss's global bound, for losses that
#: are not quadratic (our choice: measured with ``benchmarks/bench_output_lasso.py``, docs/solvers.md).
LASSO_STEP_START = 1 / 16
#: Its estimate shrinks by this factor after each step (and doubles on a failed test), as FISTA's does.
LASSO_STEP_DECAY = 0.9


class _SharedMaps:
    """The linear map of program (8a) and its adjoint on one device and dtype."""

    def __init__(self, problem: SharedOutputProblem, device, dtype, projection: str = "auto"):
        self.Up = torch.as_tensor(problem.Uprime, device=device, dtype=dtype)
        self.M = torch.as_tensor(problem.atoms.mask, device=device, dtype=dtype)
        self.Cd = torch.as_tensor(problem.atoms.directions, device=device, dtype=dtype)
        self.Y = torch.as_tensor(problem.Y, device=device, dtype=dtype)
        self.signs = (2 * self.M - 1).T.contiguous()
        self.loss = problem.loss
        self.projection = resolve_projection_backend(projection, device)
        # the numba kernel's layout of U' and its memory of each atom's last projection (while it fits)
        m, (n, k) = problem.atoms.n_atoms, problem.Uprime.shape
        numba = self.projection == "numba"
        self.numba_basis = NumbaBasis.of(self.Up) if numba else None
        fits = m * ProjectionMemory.bytes_per_group(n, k) <= 512 * 2**20
        self.kept = ProjectionMemory.empty(m, n, k) if numba and fits else None

    def predict(self, W):
        return (self.M * (self.Up @ W.T)) @ self.Cd

    def adjoint(self, R):
        return (self.M * (R @ self.Cd.T)).T @ self.Up

    def project(self, a, rows, active, threshold, remember: bool = True):
        if self.projection == "numba":
            kept = self.kept if remember else None
            return project_cones(a, self.Up, self.signs, active, threshold, patterns=rows, backend="numba",
                                 basis=self.numba_basis, kept=kept,
                                 groups=rows if kept is not None else None)  # fmt: skip
        return project_cones(a, self.Up, self.signs, active, threshold, patterns=rows,
                             backend=self.projection)  # fmt: skip


def _prox(maps, V, step_beta, faces):
    """``shrink(Pi_K(V_i), step_beta)`` per row; updates the warm-start active sets ``faces``."""
    out = torch.zeros_like(V)
    rows = torch.where(V.norm(dim=1) > step_beta)[0]
    if rows.numel():
        res = maps.project(V[rows], rows, faces[rows], step_beta)
        faces[rows] = res.active
        norms = res.u.norm(dim=1, keepdim=True).clamp_min(torch.finfo(V.dtype).tiny)
        shrunk = res.u * (1 - step_beta / norms).clamp_min(0)
        out[rows] = torch.where(res.below[:, None], 0.0, shrunk)
    return out


def _worst_dual_value(maps, G, beta, faces):
    """Largest ``||Pi_K(-g_i)||`` over the atoms whose value may exceed ``beta`` (0 when none does)."""
    rows = torch.where(G.norm(dim=1) > beta)[0]
    if not rows.numel():
        return 0.0
    res = maps.project(-G[rows], rows, faces[rows], beta, remember=False)
    above = ~res.below
    return float(res.u[above].norm(dim=1).max()) if bool(above.any()) else 0.0


def solve_shared_fista(
    problem: SharedOutputProblem,
    *,
    warm_start: np.ndarray | None = None,
    tol: float = 1e-4,
    max_iter: int = 20_000,
    check_every: int = 10,
    device: str = "cpu",
    dtype=torch.float64,
    projection: str = "auto",
    time_limit: float | None = None,
) -> SharedSolution:
    """Solve program (8a) on its atom set by FISTA with the exact prox (module docstring).

    Parameters
    ----------
    problem : SharedOutputProblem
    warm_start : ndarray of shape (m, k), optional
        Starting groups (projected onto the cones first, so any array serves).
    tol : float
        Relative duality gap over the atom set to stop at.
    max_iter, check_every : int
    device : str
    dtype : torch.dtype
    projection : {"auto", "torch", "numba"}
    time_limit : float, optional
        Seconds; the solve returns its current (feasible) point with status ``"time_limit"`` after it.

    Returns
    -------
    SharedSolution
    """
    start = time.perf_counter()
    dtype = check_device_dtype(device, dtype)
    dev = torch.device(device)
    maps = _SharedMaps(problem, dev, dtype, projection)
    m, k, beta = problem.atoms.n_atoms, problem.dim, problem.beta
    faces = torch.full((m, k), -1, dtype=torch.long, device=dev)
    X = torch.zeros((m, k), dtype=dtype, device=dev)
    if warm_start is not None and m:
        X = _prox(maps, torch.as_tensor(np.asarray(warm_start), dtype=dtype, device=dev), 0.0, faces)

    def value(F):
        return float(maps.loss.torch_value(F, maps.Y))

    # Lipschitz constant of the data fit: power iteration on the map, times the loss's curvature
    g = torch.Generator().manual_seed(0)
    V = torch.randn((m, k), generator=g, dtype=dtype).to(dev)
    est = 1.0
    for _ in range(20):
        V = maps.adjoint(maps.predict(V / V.norm().clamp_min(1e-300)))
        est = float(V.norm())
    L_max = max(est * problem.loss.curvature, 1e-12) * 1.01
    L = L_max / 4
    F = maps.predict(X)
    X_prev, F_prev = X.clone(), F.clone()
    t = 1.0
    obj = value(F) + beta * float(X.norm(dim=1).sum())
    best_lower, gap, status, it = -math.inf, math.inf, "max_iter", 0
    for it in range(1, max_iter + 1):
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        mom = (t - 1) / t_next
        Yv = X + mom * (X - X_prev)
        FY = F + mom * (F - F_prev)
        fY = value(FY)
        G = maps.adjoint(maps.loss.torch_grad(FY, maps.Y))
        while True:
            Xn = _prox(maps, Yv - G / L, beta / L, faces)
            Fn = maps.predict(Xn)
            fn = value(Fn)
            D = Xn - Yv
            model = fY + float((G * D).sum()) + 0.5 * L * float((D * D).sum())
            if fn <= model + 1e-12 * abs(fY) or L >= L_max:
                break
            L = min(2 * L, L_max)
        obj_n = fn + beta * float(Xn.norm(dim=1).sum())
        if obj_n > obj:  # restart the momentum
            t_next = 1.0
        X_prev, F_prev, X, F, t, obj = X, F, Xn, Fn, t_next, obj_n
        if it % check_every == 0 or it == max_iter:
            R = maps.loss.torch_grad(F, maps.Y)
            worst = _worst_dual_value(maps, maps.adjoint(R), beta, faces)
            scale = 1.0 if worst <= beta else beta / worst
            Rn = R.detach().to("cpu", torch.float64).numpy()
            lower = -problem.loss.conjugate(scale * Rn, problem.Y)
            best_lower = max(best_lower, float(lower))
            gap = (obj - best_lower) / max(abs(obj), 1e-12)
            if gap <= tol:
                status = "optimal"
                break
            if time_limit is not None and time.perf_counter() - start > time_limit:
                status = "time_limit"
                break
    W = X.detach().to("cpu", torch.float64).numpy()
    return SharedSolution(
        problem=problem,
        W=W,
        status=status,
        objective=problem.objective(W),
        lower_bound=float(best_lower),
        constraint_violation=problem.constraint_violation(W),
        solve_time=time.perf_counter() - start,
        n_iter=it,
        solver=f"torch-shared-fista:{dev.type}:{str(dtype).replace('torch.', '')}",
        info={"gap": float(gap), "lipschitz": L},
    )


def solve_output_lasso(
    A: np.ndarray,
    Y: np.ndarray,
    beta: float,
    loss,
    *,
    warm_start: np.ndarray | None = None,
    tol: float = 1e-4,
    max_iter: int = 5_000,
    check_every: int = 10,
) -> tuple[np.ndarray, float, float]:
    """The output layer of fixed unit neurons: ``min_V L(A V, Y) + beta sum_j ||v_j||`` (FISTA, numpy).

    The group lasso over the rows of ``V`` (docs/math.md section 8, route (a) of the shared program): with
    the hidden activations ``A = (U' Z^T)_+`` of unit neurons fixed, every row ``v_j`` may point anywhere
    in ``R^C``. Stopped on the relative duality gap (dual point ``-grad L`` scaled by ``max_j
    ||A_j^T Lambda|| / beta``).

    The step: for a quadratic loss ``1 / ||A||^2``, its curvature; for the others, a local estimate
    from ``LASSO_STEP_START`` times the loss's global bound ``||A||^2 curvature``, shrunk by
    ``LASSO_STEP_DECAY`` after each step and doubled when the step fails a sufficient-decrease test on
    the loss's gradients (never above the bound). The global bound of the logistic and cross-entropy
    losses holds where the predictions are undecided; once they are confident the curvature is far
    smaller, and the fixed step was the slow part of the shared search (docs/solvers.md, "The
    shared-neuron search").

    Parameters
    ----------
    A : ndarray of shape (n, m)
    Y : ndarray of shape (n, C)
    beta : float
    loss : Loss
        A smooth loss (its :attr:`~convexbn.losses.Loss.curvature` bounds the step).
    warm_start : ndarray of shape (m, C), optional
    tol, max_iter, check_every

    Returns
    -------
    V : ndarray of shape (m, C)
    objective : float
    gap : float
        Relative duality gap at ``V``.
    """
    m, C = A.shape[1], Y.shape[1]
    V = np.zeros((m, C)) if warm_start is None else np.array(warm_start, dtype=np.float64)
    if m == 0:
        return V, loss.value(np.zeros_like(Y), Y), 0.0
    L = max(float(np.linalg.norm(A, 2)) ** 2 * loss.curvature, 1e-12)

    def penalty(V):
        return beta * float(np.linalg.norm(V, axis=1).sum())

    gram = loss.quadratic and m < A.shape[0]
    if gram:
        # a quadratic loss with fewer neurons than samples: iterate on G = A^T A (m, m) and B = A^T Y only
        # (gradient G V - B, value 1/2 <V, G V> - <V, B> + 1/2 ||Y||^2, the gap's residual terms likewise);
        # a passing check is confirmed from the predictions A V (the expanded value loses digits when it is
        # small against ||Y||^2)
        G, B, yy = A.T @ A, A.T @ Y, float(np.sum(Y * Y))

        def value(V, GV):
            return 0.5 * float(np.sum(V * GV)) - float(np.sum(V * B)) + 0.5 * yy + penalty(V)

        def worth_checking(V, GV, obj):
            # R = A V - Y: A^T R = G V - B, ||R||^2 = <V, G V> - 2 <V, B> + ||Y||^2, <R, Y> = <V, B> - ||Y||^2
            worst = float(np.linalg.norm(GV - B, axis=1).max())
            scale = 1.0 if worst <= beta else beta / worst
            VB = float(np.sum(V * B))
            rr = max(float(np.sum(V * GV)) - 2 * VB + yy, 0.0)
            conjugate = 0.5 * scale**2 * rr + scale * (VB - yy)  # loss* at scale R (quadratic loss)
            return (obj + conjugate) / max(abs(obj), 1e-12) <= tol

        def image(V):
            return G @ V

        def gradient(GV):
            return GV - B
    else:
        # on the predictions A V: two products per iteration (A^T grad, A V_new)
        def value(V, F):
            return loss.value(F, Y) + penalty(V)

        def worth_checking(V, F, obj):
            return True

        def image(V):
            return A @ V

    # FISTA with function-value restart; the images (A V or G V) of the last two iterates are kept: the
    # extrapolated point's image is their combination (the maps are linear)
    L_max = L
    backtrack = not loss.quadratic  # a quadratic loss's bound is its curvature; the others' is global only
    if backtrack:
        L = L_max * LASSO_STEP_START
    X, X_prev, t = V, V, 1.0
    I = image(X)
    I_prev, obj = I, value(X, I)
    for it in range(1, max_iter + 1):
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        momentum = (t - 1) / t_next
        Yv = X + momentum * (X - X_prev)
        Iy = I + momentum * (I - I_prev)
        grad_y = None if gram else loss.grad(Iy, Y)  # on A: the loss's gradient, kept for the step's test
        g = gradient(Iy) if gram else A.T @ grad_y
        while True:
            Xn = _group_shrink(Yv - g / L, beta / L)
            In = image(Xn)
            if not backtrack or L >= L_max:
                break
            # the loss is convex, so <grad f(Xn) - grad f(Yv), D> bounds f(Xn) - f(Yv) - <g, D>: the step
            # is a descent step when it is at most L/2 ||D||^2. Computed from the predictions (A D = In -
            # Iy), it loses no digits where f's own values would cancel
            D = Xn - Yv
            curvature = float(np.sum((loss.grad(In, Y) - grad_y) * (In - Iy)))
            if curvature <= 0.5 * L * float(np.sum(D * D)):
                break
            L = min(2 * L, L_max)
        obj_n = value(Xn, In)
        if backtrack:
            L *= LASSO_STEP_DECAY  # the curvature where the iterates are now may be lower still
        if obj_n > obj:
            t_next = 1.0
        X_prev, X, t, obj = X, Xn, t_next, obj_n
        I_prev, I = I, In
        if it % check_every == 0 and worth_checking(X, I, obj):
            if _output_lasso_gap(A, Y, X, beta, loss)[1] <= tol:
                break
    obj, gap = _output_lasso_gap(A, Y, X, beta, loss)
    return X, obj, gap


def _group_shrink(V: np.ndarray, thresh: float) -> np.ndarray:
    """Each row of ``V`` shrunk towards zero by ``thresh`` in norm (the group soft-threshold)."""
    norms = np.linalg.norm(V, axis=1, keepdims=True)
    return V * np.clip(1 - thresh / np.maximum(norms, 1e-300), 0, None)


def _output_lasso_gap(A, Y, V, beta, loss) -> tuple[float, float]:
    """``(objective, relative gap)`` of the output lasso at ``V``: the dual point ``-grad L(A V)`` scaled by
    ``beta / max_j ||A_j^T grad||`` when that is above ``beta``."""
    F = A @ V
    obj = loss.value(F, Y) + beta * float(np.linalg.norm(V, axis=1).sum())
    grad = loss.grad(F, Y)
    worst = float(np.linalg.norm(A.T @ grad, axis=1).max())
    scale = 1.0 if worst <= beta else beta / worst
    return obj, float((obj + loss.conjugate(scale * grad, Y)) / max(abs(obj), 1e-12))
