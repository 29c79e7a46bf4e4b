"""Newton polishing of a FISTA iterate on its support and faces (an accelerator; the certificate decides).

Near the optimum of program (4) FISTA has found which groups are nonzero (the support ``S``) and, per
group, which cone constraints hold with equality (its face: the rows ``i`` with ``s_i U'_i u_g = 0``).
With both fixed, (4) restricted to them is a smooth problem in few variables: with ``B_g`` an orthonormal
basis of the null space of group ``g``'s face normals (``k`` minus the face's rank columns; a face holds
most of the ``k - 1`` it can at weak regularization) and ``u_g = B_g z_g``,

    min_z  L(J z) + beta sum_{g in S} ||z_g||,     J = [A_g B_g]_{g in S}  (n x M, M = sum_g dim N_g),

(docs/math.md section 4; ``||u_g|| = ||z_g||``, and the norm is smooth where ``z_g != 0``). Newton's
method converges on it quadratically where FISTA converges sublinearly, and with ``M`` in the hundreds
its ``M x M`` Hessian ``J^T diag(l'') J + beta (I - z z^T / ||z||^2) / ||z||`` (block-diagonal in the
second term) is formed and factored directly. The idea is OSQP's solution polishing (Stellato et al.,
2020: guess the active constraints, solve the equality-constrained problem) with the group lasso's
working sets (celer, skglm) and cone faces.

Around the Newton steps, a primal active-set method on the faces and the support:

- the step keeps every group in its cone: each group's step is cut where it meets a row off its face,
  and the row joins the face (a group whose step meets such a row at once stays where it is, and the row
  joins its face in the same step); where the cut direction is no descent direction, every row the step
  meets joins its face at once (the point moves to them, feasible) -- a guess that the next rule corrects;
- at a stationary point of the restricted problem (a Newton decrement below :data:`RELEASE_TOL` of the
  objective), each face's multipliers (``grad_u f = sum_i lambda_i s_i U'_i``, ``lambda >= 0`` for the
  normal cone of ``K_g``) are checked, and the most negative row of each face with a wrong sign leaves it;
- then zero groups whose dual value ``||Pi_K(-grad_g)||`` exceeds ``beta`` join the support along that
  projection (at most ``max_entering`` times), and a group whose data-fit gradient is inside the ``beta``
  ball and whose norm more than halves in a step leaves it;
- the Newton steps themselves are Armijo-backtracked.

Between steps only what changed is recomputed: the null spaces of the faces that changed (a batched
Householder QR; the SVD where a face's rows are dependent), the columns of ``J`` of those groups (the
others are copied), and, for a quadratic loss, the Hessian's rows and columns of the new columns.

The result is in the cones (to rounding) and usually far better than the start; the caller keeps it only
when it is better (:func:`convexbn.solvers.torch.polish_schedule.try_polish`), and only the duality gap at
it (:func:`convexbn.solvers.torch.fista.duality_gap`) says whether it is optimal: a wrong guess of support
or faces shows there as a gap that does not close, and FISTA goes on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .restricted import RestrictedProblem, polish_size

__all__ = ["PolishResult", "polish_support"]


@dataclass
class PolishResult:
    """What :func:`polish_support` returns.

    Attributes
    ----------
    X : torch.Tensor
        (2, C, P, k) the polished point.
    faces : torch.Tensor
        (2 C P, k) its active constraints per group (sample indices, -1 padding).
    objective : float
        Program (4)'s objective at ``X``.
    newton_steps : int
        Newton steps taken (the blocked ones included).
    variables : int
        ``M``, the restricted problem's variables at the end.
    peak_variables : int
        The largest ``M`` of the restricted problems the polish built (at most ``max_vars``).
    """

    X: torch.Tensor
    faces: torch.Tensor
    objective: float
    newton_steps: int
    variables: int
    peak_variables: int = 0


#: The Newton decrement (relative to the objective) below which the faces' multipliers are checked and
#: zero groups may enter, before the restricted problem is solved to ``rtol`` (our choice: 1e-9 took 10%
#: fewer Newton steps than 1e-15 from FISTA's iterate at 150 and 300 iterations on the problem of
#: docs/solvers.md, "Weak regularization", 1e-6 cycled; development runs).
RELEASE_TOL = 1e-10


def _solve_spd(H, rhs):
    """``H^{-1} rhs`` for a symmetric positive semidefinite H, with a small ridge where it is singular."""
    L, info = torch.linalg.cholesky_ex(H)
    if int(info) != 0:
        ridge = 1e-12 * float(H.diagonal().abs().max()) + torch.finfo(H.dtype).tiny
        L, info = torch.linalg.cholesky_ex(H + ridge * torch.eye(len(H), dtype=H.dtype, device=H.device))
        if int(info) != 0:
            return None
    return torch.cholesky_solve(rhs[:, None], L)[:, 0]


def _enter_groups(prob, z, F, value):
    """Grow the support by the zero groups whose dual value ``||Pi_K(-grad_g)||`` exceeds ``beta``: each
    enters along that projection ``v_g`` with its face, at the step ``t_g = (||v_g|| - beta) / (A_g v_g)^T
    diag(l'') A_g v_g`` of its own one-dimensional model, the steps halved together until the objective
    falls. Returns ``(problem, u)`` on the grown support, or None (no group, no decrease)."""
    maps, beta, shape = prob.maps, prob.beta, prob.shape
    k = shape[-1]
    R = maps.loss.torch_grad(F, maps.Y)
    grad = maps.adjoint(R).reshape(-1, k)
    outside = torch.ones(len(grad), dtype=torch.bool, device=grad.device)
    outside[prob.support] = False
    rows = torch.where(outside & (grad.norm(dim=1) > beta))[0]
    if rows.numel() == 0:
        return None
    cold = torch.full((len(rows), k), -1, dtype=torch.long, device=rows.device)
    res = maps.project(-grad[rows], rows, cold, beta, None)
    dual = res.u.norm(dim=1)
    enter = ~res.below & (dual > beta * (1 + 1e-9))
    if not bool(enter.any()):
        return None
    rows, v, face, dual = rows[enter], res.u[enter], res.active[enter], dual[enter]
    unit = v / dual[:, None]
    C, P = shape[1], shape[2]
    w, _ = maps.loss.torch_hessian(F, maps.Y)
    image = (unit @ maps.Up.T) * maps.pattern_mask[rows % P]  # (e, n): A_g unit up to the sign
    curvature = (image.square() * w.T[(rows // P) % C]).sum(1).clamp_min(torch.finfo(v.dtype).tiny)
    steps = (dual - beta) / curvature
    support = torch.cat([prob.support, rows])
    all_faces = torch.cat([prob.faces, face])
    grown = RestrictedProblem(maps, shape, support, all_faces, beta)
    u_old = prob.to_u(z)
    scale = 1.0
    while scale > 1e-6:
        u = torch.cat([u_old, scale * steps[:, None] * unit])
        trial_value, _ = grown.value(grown.to_z(u))
        if trial_value < value:
            return grown, u
        scale *= 0.5
    return None


@dataclass
class _Step:
    """A Newton step that kept the faces: the new point, its objective and predictions."""

    z: torch.Tensor
    value: float
    F: torch.Tensor


def _newton_step(prob, z, u, d, grad, data_grad, value, everyone):
    """One step from ``z`` (``u = prob.to_u(z)``) along the Newton direction ``d``, kept in the cones.
    Returns a :class:`_Step` (same faces), ``(problem, u)`` after a change of faces or support
    (:meth:`RestrictedProblem.restrict`), or None (no decrease found)."""
    beta = prob.beta
    # the longest step that keeps every group in its cone (rows off its face only)
    V, W = prob.cone_values(u), prob.cone_values(prob.to_u(d))  # (s, n), fresh: changed in place
    rate = W.neg_().masked_fill_(prob.on_face(), 0.0)  # how fast each row off the face falls
    ratios = V.clamp_min_(0.0).div_(rate).masked_fill_(rate <= 0, torch.inf)  # (x / 0 overwritten)
    group_max, blocking_row = ratios.min(dim=1)
    # a group with a row off its face at zero already stays where it is, and that row joins its face;
    # each other group's step is cut where it meets a new row (then the row joins its face)
    stuck = group_max <= 0
    cut = group_max.clamp(0.0, 1.0)[prob.owner]
    direction = d * cut
    cut_slope = float(grad @ direction)
    if not cut_slope < 0:
        # no descent that way: guess that every row the Newton step meets belongs to its face (a wrong
        # guess leaves again through its multiplier's sign); each group moves to its blocking row, so
        # the point stays feasible and on its new face
        meets = group_max < 1.0
        return prob.restrict(everyone, _add_rows(prob.faces, meets, blocking_row), prob.to_u(z + direction))
    alpha = 1.0
    while True:
        trial = z + alpha * direction
        trial_value, trial_F = prob.value(trial)
        if trial_value <= value + 1e-4 * alpha * cut_slope:
            break
        alpha *= 0.5
        if alpha < 1e-10:
            return None
    # groups on their way to zero (the data-fit gradient inside the beta ball) leave the support
    keep = ~((prob.group_norms(data_grad) < beta) & (prob.group_norms(trial) < 0.5 * prob.group_norms(z)))
    blocked = (stuck | ((group_max <= 1.0) & (alpha == 1.0))) & keep
    if bool(blocked.any()) or not bool(keep.all()):
        return prob.restrict(keep, _add_rows(prob.faces, blocked, blocking_row), prob.to_u(trial))
    return _Step(trial, trial_value, trial_F)


def _add_rows(faces, groups, rows):
    """Put ``rows[j]`` in a free slot of ``faces[j]`` for the groups ``j`` marked in ``groups`` (a full
    face stays as it is); returns the mask of the groups whose faces changed."""
    free = faces < 0
    changed = groups & free.any(1)
    where = torch.where(changed)[0]
    faces[where, free[where].to(torch.int8).argmax(1)] = rows[where]  # the first free slot
    return changed


def polish_support(maps, X, faces, beta: float, *, max_newton: int = 100, max_entering: int = 3,
                   rtol: float = 1e-15, max_vars: int | None = None) -> PolishResult:  # fmt: skip
    """Newton's method on ``X``'s support and faces (module docstring).

    Parameters
    ----------
    maps : GroupOperators
        The maps of program (4) (its dtype is used: float64 is what makes a polish worth it).
    X : torch.Tensor
        (2, C, P, k) a feasible point.
    faces : torch.Tensor
        (2 C P, k) each group's active constraints (sample indices, -1 padding), as FISTA keeps them.
    beta : float
        The program's ``beta``.
    max_newton : int
        Budget of Newton steps (blocked steps included).
    max_entering : int
        How many times zero groups whose dual value exceeds ``beta`` may join the support (at a
        stationary point of the restricted problem), each along its cone's projection of the negative
        gradient, with that projection's face.
    rtol : float
        Stop when the Newton decrement ``-grad^T d / 2`` is below ``rtol`` times the objective.
    max_vars : int, optional
        Stop (with the best point so far) before working on a restricted problem of more variables: rows
        that leave their faces and groups that enter grow ``M``, and the Hessian is ``M x M`` (FISTA passes
        ``polish_max_vars``; a per-output fit of 10-class digits grew one polish past 10,000 variables and
        ran out of memory before this cap).

    Returns
    -------
    PolishResult
    """
    shape, k = X.shape, X.shape[-1]
    flat = X.reshape(-1, k)
    faces = faces.clone()
    support = torch.where(flat.norm(dim=1) > 0)[0]
    steps = entering_rounds = 0
    if support.numel() == 0:
        return PolishResult(X, faces, maps.value(maps.predict(X)), 0, 0)
    prob = RestrictedProblem(maps, shape, support, faces[support], beta)
    peak = len(prob.owner)
    z = prob.to_z(flat[support])
    value, F = prob.value(z)
    best = (value, prob.support, prob.to_u(z), prob.faces.clone())
    while steps < max_newton:
        if value < best[0]:
            best = (value, prob.support, prob.to_u(z), prob.faces.clone())
        data_grad = prob.data_gradient(F)
        grad, H = prob.newton_system(z, F, data_grad)
        d = _solve_spd(H, -grad)
        steps += 1
        if d is None:
            break
        slope = float(grad @ d)
        u = prob.to_u(z)
        everyone = torch.ones(len(prob.support), dtype=torch.bool, device=u.device)
        converged = not slope < 0 or -0.5 * slope <= rtol * abs(value)
        new = None
        if converged or -0.5 * slope <= RELEASE_TOL * abs(value):
            # (nearly) stationary on these faces: a row whose multiplier has the wrong sign leaves its
            # face; then zero groups whose dual value exceeds beta join the support
            released = prob.release_rows(F, u)
            if bool(released.any()):
                new = prob.restrict(everyone, released, u)
            elif entering_rounds < max_entering and (grown := _enter_groups(prob, z, F, value)) is not None:
                entering_rounds += 1
                new = grown
            elif converged:
                break
        if new is None:
            new = _newton_step(prob, z, u, d, grad, data_grad, value, everyone)
            if new is None:
                break
            if not isinstance(new, tuple):  # a step on the same faces
                z, value, F = new.z, new.value, new.F
                continue
        if new[0] is None:
            prob = None
            break
        prob, u = new
        if max_vars is not None and len(prob.owner) > max_vars:
            prob = None  # over the budget: the best point so far (this iteration's is in `best`)
            break
        peak = max(peak, len(prob.owner))
        z = prob.to_z(u)
        value, F = prob.value(z)
    if prob is not None and value < best[0]:
        best = (value, prob.support, prob.to_u(z), prob.faces.clone())
    # the best point seen (the steps that guess faces need not descend)
    _, kept, u, kept_faces = best
    out = torch.zeros_like(flat)
    faces[support] = -1
    out[kept] = u
    faces[kept] = kept_faces
    Xp = out.reshape(shape)
    objective = maps.value(maps.predict(Xp)) + beta * float(out.norm(dim=1).sum())
    return PolishResult(Xp, faces, objective, steps, polish_size(Xp, faces), peak)
