"""Dual certificate of global optimality (docs/math.md section 6).

With ``lambda = -grad L(F*)`` (or the solver's dual for the non-smooth hinge loss), the dual of (4) is
feasible iff for every arrangement ``D`` and output ``c``

    max { |lambda_c^T D U' u| : ||u|| <= 1, (2D - I) U' u >= 0 } <= beta.

Each maximum is the norm of the projection of ``a = U'^T D lambda_c`` (or of ``-a``) onto the polyhedral
cone ``K = {u : A u >= 0}``, ``A = (2D - I) U'``, because for a closed convex cone
``max_{u in K, ||u|| <= 1} a^T u = ||Pi_K(a)||``. By Moreau's decomposition
``Pi_K(a) = a + A^T mu*`` with ``mu* = argmin_{mu >= 0} ||a + A^T mu||``: one non-negative least squares
problem per pattern and sign, solved by scipy's bounded-variable least squares (``lsq_linear``,
``method="bvls"``), no conic solver needed. (scipy 1.17's ``nnls`` was seen to return a wrong ``mu``
on such problems, with a residual it misreports; BVLS agrees with a direct SOCP, see the tests.)

Scaling ``grad L(F*)`` by ``s = min(1, beta / max value)`` makes it dual feasible, and weak duality gives
the lower bound ``-L*(s grad L(F*))`` on the optimum of the program over the checked arrangements.
With every arrangement (``Arrangements.exact``) this bounds the global optimum of the nonconvex
problem (3), so a zero gap certifies it.

This module certifies a *solution* of a program; :mod:`convexbn.network_certificate` certifies a trained
*network* (it builds the program of its data, so it sits above :mod:`convexbn.problem`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import lsq_linear

from .arrangements import Arrangements

__all__ = ["Certificate", "certify", "cone_max", "dual_values", "pattern_dual_values"]


@dataclass(frozen=True)
class Certificate:
    """Result of :func:`certify`.

    Attributes
    ----------
    max_dual_value : float
        Largest ``max |lambda_c^T D U' u|`` over the checked patterns and outputs.
    ratio : float
        ``max_dual_value / beta``; <= 1 means the dual point is feasible.
    objective : float
        The solution's objective (4).
    lower_bound : float
        ``-L*(s grad L)``: a lower bound on the optimum over the checked arrangements.
    gap, relative_gap : float
        ``objective - lower_bound`` and that divided by ``max(|objective|, 1e-12)``.
    certified : bool
        ``relative_gap <= tol``.
    exact : bool
        The checked arrangements are all of them: the bound is a bound on the nonconvex optimum (3).
    n_checked : int
        Number of patterns checked.
    worst_pattern : int
        Index of the pattern attaining ``max_dual_value``.
    tol : float
    """

    max_dual_value: float
    ratio: float
    objective: float
    lower_bound: float
    gap: float
    relative_gap: float
    certified: bool
    exact: bool
    n_checked: int
    worst_pattern: int
    tol: float


def cone_max(a: np.ndarray, A: np.ndarray) -> float:
    """``max { a^T u : ||u|| <= 1, A u >= 0 }`` as ``||Pi_K(a)||`` (see the module docstring)."""
    if np.all(A @ a >= 0):  # a itself lies in the cone
        return float(np.linalg.norm(a))
    mu = lsq_linear(A.T, -a, bounds=(0.0, np.inf), method="bvls", tol=1e-12).x
    # a projection is never longer than the vector projected
    return float(min(np.linalg.norm(a + A.T @ mu), np.linalg.norm(a)))


def dual_values(Uprime: np.ndarray, mask: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """``max |lambda_c^T D_i U' u|`` over the cone and unit ball, shape (C, P)."""
    C, P = lam.shape[1], mask.shape[1]
    out = np.zeros((C, P))
    for i in range(P):
        A = np.where(mask[:, i, None], Uprime, -Uprime)
        a_all = Uprime.T @ (mask[:, i, None] * lam)  # (k, C)
        for c in range(C):
            a = a_all[:, c]
            out[c, i] = max(cone_max(a, A), cone_max(-a, A))
    return out


def pattern_dual_values(Uprime: np.ndarray, mask: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """``max |lambda_c^T D_i U' u|`` over each pattern's cone and the unit ball, shape (C, P).

    The batched counterpart of :func:`dual_values` (docs/math.md section 6): one
    call of :func:`convexbn.solvers.torch.projection.project_cones` for every pattern, sign and output.
    """
    import torch

    from .solvers.torch.projection import project_cones  # (torch and numba: imported on first use)

    lam = np.asarray(lam, dtype=np.float64).reshape(Uprime.shape[0], -1)
    C, P = lam.shape[1], mask.shape[1]
    if P == 0:
        return np.zeros((C, 0))
    A = np.einsum("np,nc,nk->cpk", mask.astype(np.float64), lam, Uprime)  # U'^T D_i lambda_c
    a = np.concatenate([A, -A], axis=1).reshape(-1, Uprime.shape[1])  # (C * 2P, k)
    patterns = np.tile(np.arange(P), 2 * C)
    signs = np.where(mask, 1.0, -1.0).T
    res = project_cones(
        torch.as_tensor(a), torch.as_tensor(Uprime), torch.as_tensor(signs),
        patterns=torch.as_tensor(patterns), backend="auto",
    )  # fmt: skip
    values = res.u.norm(dim=1).numpy().reshape(C, 2, P)
    return values.max(axis=1)


def certify(solution, arrangements: Arrangements | None = None, *, tol: float = 1e-4) -> Certificate:
    """Check the dual certificate of ``solution`` over ``arrangements``.

    Parameters
    ----------
    solution : ConvexBNSolution
    arrangements : Arrangements, optional
        Patterns to check; default the problem's. Pass :func:`enumerate_arrangements` output to certify
        global optimality, or a fresh sample to measure how far a sampled solution is from optimal.
    tol : float
        Relative gap below which ``certified`` is True.
    """
    problem = solution.problem
    if solution.formulation != "exact":
        raise ValueError("the certificate is for the exact program, not the gated relaxation")
    arrangements = problem.arrangements if arrangements is None else arrangements
    F = solution.predict_train()
    if problem.loss.smooth or solution.dual is None:
        grad = problem.loss.grad(F, problem.Y)
    else:
        grad = -solution.dual
    return _certificate(problem, arrangements, grad, solution.objective, tol)


def _certificate(problem, arrangements: Arrangements, grad: np.ndarray, objective: float, tol: float):
    """The certificate of the dual point ``-grad`` (scaled into feasibility) over ``arrangements``."""
    if arrangements.n_samples != problem.n_samples:
        raise ValueError("arrangements were built for a different number of samples")
    values = dual_values(problem.Uprime, arrangements.mask, -grad)
    max_value = float(values.max(initial=0.0))
    scale = 1.0 if max_value <= problem.beta else problem.beta / max_value
    lower = -problem.loss.conjugate(scale * grad, problem.Y)
    gap = objective - lower
    rel = gap / max(abs(objective), 1e-12)
    return Certificate(
        max_dual_value=max_value,
        ratio=max_value / problem.beta,
        objective=objective,
        lower_bound=lower,
        gap=gap,
        relative_gap=rel,
        certified=bool(rel <= tol),
        exact=bool(arrangements.exact),
        n_checked=arrangements.n_patterns,
        worst_pattern=int(np.unravel_index(values.argmax(), values.shape)[1]) if values.size else -1,
        tol=tol,
    )
