"""A duality-gap certificate for the augmented Lagrangian's answer, without a cone projection in the dual
(docs/math.md section 6).

At large ``k`` the AL is the method that runs, and its iterates are only nearly in the cones, so FISTA's
certificate does not apply as it stands: that needs a feasible point, and each group's dual value
``||Pi_K(c)||``, a cone projection over ``n`` rows in ``R^k`` per group and per check.

**Upper bound: a feasible point.** :func:`project_onto_cones` moves each nonzero group of the AL's point by
the least change that puts its violated rows on the cone's boundary: ``u <- u - N^+ N u`` for the normals
``N`` of those rows (at most ``k``; a batched least squares, minimum norm where they are dependent), the
rows the move pushes out joining them for up to 8 rounds. That is not the exact projection (the exact one,
:func:`~convexbn.solvers.torch.projection.project_cones` warm-started from the violated rows, took minutes
per call at ``k = 785``: the AL's point sits on faces of hundreds of rows, each added by one active-set
step), but it is a point of the cones, close to the AL's at a small violation. It is computed in float64
whatever the solve's dtype: float32 leaves a row "at zero" about 1e-6 of its scale out of the cone. The
program's objective there bounds its optimum from above. A group still outside after the rounds is
reported; the AL then keeps its own point (:func:`~convexbn.solvers.torch.al.solve_al`).

**Lower bound: the AL's multipliers.** For a closed convex cone ``K = {u : A u >= 0}``, ``A = diag(s) U'``,
Moreau's decomposition gives ``||Pi_K(c)|| = min_{mu >= 0} ||c + A^T mu||``, so *any* ``mu >= 0`` bounds the
dual value from above: ``||Pi_K(c)|| <= ||U'^T (D lambda + s * mu)||`` for the group ``u`` (``c = U'^T D
lambda``), and the same with ``-D lambda`` for ``u'``. With the AL's multipliers ``mu = relu(Lambda - rho S
Z)`` at its point this bound is the norm of the group's AL gradient, which at an exact inner solve is
``beta`` on the nonzero groups and at most ``beta`` on the others: the bound is tight at the AL's solution.
Scaling ``lambda = -grad L(F)`` (at the feasible point's predictions) by ``s = min(1, beta / max bound)``
makes it dual feasible, and ``-L*(s grad L(F))`` bounds the optimum from below (weak duality, as in
:mod:`convexbn.certificate`). One adjoint product: no projection.

(Bounding instead the network recovered from the AL's point itself, whose neurons have patterns of their
own, by checking those patterns with the sampled patterns' multipliers, was tried first: the bound was 7.6
and 12.6 times ``beta`` on small problems where the sampled patterns' bound was 1.00002 times, since a
pattern that flips a row on a neuron's face is a genuinely different cone.)

The bounds are computed in the solve's dtype (a float32 solve's carry float32 rounding, relative errors
near 1e-6).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch

__all__ = [
    "ALCertificate",
    "certify_point",
    "dual_value_bounds",
    "multiplier_certificate",
    "project_onto_cones",
    "with_best_bound",
]


@dataclass(frozen=True)
class ALCertificate:
    """What :func:`multiplier_certificate` returns.

    Attributes
    ----------
    objective : float
        Program (4)'s objective at the feasible point.
    lower_bound : float
        A lower bound on the optimum of (4).
    relative_gap : float
        ``(objective - lower_bound) / |objective|``.
    max_dual_ratio : float
        The largest multiplier bound of a group's dual value over ``beta`` (before the scaling).
    seconds : float
        The time the projection and the bound took.
    """

    objective: float
    lower_bound: float
    relative_gap: float
    max_dual_ratio: float
    seconds: float = 0.0


def project_onto_cones(
    ops, X, Uprime=None, rounds: int = 8, block_groups: int = 32
) -> tuple[torch.Tensor, int]:
    """A point of the cones near X (2, C, P, k), in float64: each nonzero group outside its cone moved by the
    least change that puts its violated rows on the cone's boundary (module docstring), the rows the move
    pushes out joining them, for up to ``rounds`` moves. Returns the point (2, C, P, k), float64 (in the
    cones to 1e-12 of ``||u|| ||U'_i||`` per row), and the number of groups still outside (kept as they
    are: the caller decides). ``Uprime``: the basis in float64 (n, k) (the problem's own; default ``ops``'s,
    whose float32 rounding of a float32 solve the rows would then be exact for)."""
    P, k = X.shape[2], X.shape[3]
    Up = ops.Up if Uprime is None else torch.as_tensor(Uprime, device=ops.Up.device)
    Up = Up.to(torch.float64)
    out = X.reshape(-1, k).to(torch.float64, copy=True)
    groups = torch.where(out.norm(dim=1) > 0)[0]
    pattern_signs = ops.signs.T.to(torch.float64)  # (P, n)
    row_norms = Up.norm(dim=1)
    failed = 0
    for start in range(0, len(groups), block_groups):
        g = groups[start : start + block_groups]
        signs = pattern_signs[g % P]  # (b, n)
        u = out[g]
        values = (u @ Up.T).mul_(signs)  # (b, n): the cone rows at u
        scale = 1e-12 * u.norm(dim=1, keepdim=True) * row_norms[None, :]  # rounding allowance
        on = values < 0  # the rows held on the boundary: the violated ones, and those that become so
        for _ in range(rounds):
            outside = (values < -scale).any(1)  # the groups in their cones (to rounding) do not move
            if not bool(outside.any()):
                break
            moving = on & outside[:, None]
            m = min(int(moving.sum(1).max()), k)
            # at most k rows, the most violated first
            held, rows = torch.topk(torch.where(moving, -values, -torch.inf), m, dim=1)  # (b, m)
            normals = Up[rows] * torch.gather(signs, 1, rows)[:, :, None]  # (b, m, k)
            normals = normals * torch.isfinite(held)[:, :, None]  # padding rows: zero
            target = normals @ u[:, :, None]  # (b, m, 1): drive these rows to zero
            u = u - _least_norm_solve(normals, target)[:, :, 0]  # the least change
            values = (u @ Up.T).mul_(signs)
            on |= values < 0
        inside = (values >= -scale).all(1)
        out[g] = u
        failed += int((~inside).sum())
    return out.reshape(X.shape), failed


def _least_norm_solve(A, B):
    """The least-norm least-squares solutions of ``A x = B`` (batched; A may be rank-deficient): LAPACK's
    ``gelsy`` on the CPU; the pseudo-inverse elsewhere (CUDA's only driver, ``gels``, needs full rank)."""
    if A.device.type == "cpu":
        return torch.linalg.lstsq(A, B, driver="gelsy").solution
    return torch.linalg.pinv(A) @ B


def dual_value_bounds(ops, R, mu) -> torch.Tensor:
    """Upper bounds (2, C, P) on every group's dual value ``||Pi_K(+-U'^T D lambda_c)||``, ``lambda = -R``
    for the loss gradient R (n, C): the norms of ``U'^T (+-D lambda_c + S mu)`` (module docstring) for any
    nonnegative ``mu`` (2, C, n, P); block 0 bounds the groups ``u``, block 1 the groups ``u'``."""
    DR = ops.mask * R.T[:, :, None]  # (C, n, P)
    M = ops.signs * mu
    M[0].sub_(DR)
    M[1].add_(DR)
    return ops.adjoint_pre(M).norm(dim=-1)


def multiplier_certificate(ops, X, mu) -> ALCertificate:
    """The certificate of a feasible point X (module docstring) from the multipliers ``mu``.

    Parameters
    ----------
    ops : GroupOperators
        The program's maps (one process: sums over samples are not all-reduced here).
    X : torch.Tensor
        (2, C, P, k) a point in the cones (:func:`project_onto_cones` of the AL's point).
    mu : torch.Tensor
        (2, C, n, P) nonnegative multipliers of the cone rows (the AL's ``relu(Lambda - rho S Z)`` at its
        point; any nonnegative ones give a valid bound).

    Returns
    -------
    ALCertificate
    """
    loss, beta = ops.loss, ops.beta
    F = ops.predict_pre(ops.pre(X[0]) - ops.pre(X[1]))  # (n, C)
    R = loss.torch_grad(F, ops.Y)
    objective = float(loss.torch_value(F, ops.Y)) + beta * float(X.norm(dim=-1).sum())
    worst = float(dual_value_bounds(ops, R, mu).max())
    scale = 1.0 if worst <= beta else beta / worst
    Rn = R.detach().to("cpu", torch.float64).numpy()
    lower = float(-loss.conjugate(scale * Rn, ops.Y.to("cpu", torch.float64).numpy()))
    gap = (objective - lower) / max(abs(objective), 1e-300)
    return ALCertificate(objective, lower, gap, worst / beta)


def certify_point(ops, X, mu, Uprime=None):
    """The AL's point X moved into the cones (:func:`project_onto_cones`, float64) and its
    :func:`multiplier_certificate` (in ``ops``'s dtype): ``(point, certificate, seconds)``; ``(None, None,
    seconds)`` where some group could not be moved, and where the certificate does not apply: a distributed
    solve (its sums are not all-reduced here), a nonsmooth loss, a non-finite point. ``Uprime``: as for
    :func:`project_onto_cones`."""
    if ops.comm is not None or not ops.loss.smooth or not bool(torch.isfinite(X).all()):
        return None, None, 0.0
    start = time.perf_counter()
    feasible, failed = project_onto_cones(ops, X, Uprime)
    if failed:
        return None, None, time.perf_counter() - start
    certificate = multiplier_certificate(ops, feasible.to(ops.dtype), mu)
    seconds = time.perf_counter() - start
    return feasible, dataclasses.replace(certificate, seconds=seconds), seconds


def with_best_bound(certificate: ALCertificate, lower_bound: float) -> ALCertificate:
    """``certificate`` with the larger of its lower bound and ``lower_bound`` (an earlier certificate's of
    the same program: every one bounds the same optimum), and its gap recomputed."""
    lower = max(certificate.lower_bound, lower_bound)
    gap = (certificate.objective - lower) / max(abs(certificate.objective), 1e-300)
    return dataclasses.replace(certificate, lower_bound=lower, relative_gap=gap)
