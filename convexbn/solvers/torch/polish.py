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
  and the row joins the face; where the cut direction is no descent direction, every row the step meets
  joins its face at once (the point moves to them, feasible) -- a guess that the next rule corrects;
- at a stationary point of the restricted problem, each face's multipliers (``grad_u f = sum_i lambda_i
  s_i U'_i``, ``lambda >= 0`` for the normal cone of ``K_g``) are checked, and the most negative row of
  each face with a wrong sign leaves it;
- then zero groups whose dual value ``||Pi_K(-grad_g)||`` exceeds ``beta`` join the support along that
  projection (at most ``max_entering`` times), and a group whose data-fit gradient is inside the ``beta``
  ball and whose norm more than halves in a step leaves it;
- the Newton steps themselves are Armijo-backtracked.

The result is in the cones (to rounding) and usually far better than the start; the caller keeps it only
when it is better (:func:`convexbn.solvers.torch.polish_schedule.try_polish`), and only the duality gap at
it (:func:`convexbn.solvers.torch.fista.duality_gap`) says whether it is optimal: a wrong guess of support
or faces shows there as a gap that does not close, and FISTA goes on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .projection import _gather_normals

__all__ = ["PolishResult", "polish_support", "polish_size", "cone_values"]


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
    """

    X: torch.Tensor
    faces: torch.Tensor
    objective: float
    newton_steps: int
    variables: int


def _null_spaces(maps, patterns, faces):
    """The faces' normals' right singular vectors ``Vh`` (s, k, k) and ranks (s,): the rows of ``Vh``
    from ``rank`` on are an orthonormal basis of the face's null space."""
    normals = _gather_normals(maps.Up, maps.pattern_signs, patterns, faces)  # (s, k, k)
    _, sv, Vh = torch.linalg.svd(normals)
    scale = sv[:, :1].clamp_min(torch.finfo(sv.dtype).tiny)
    return Vh, ((sv > 1e-10 * scale) & (sv > 0)).sum(1)


def cone_values(maps, patterns, u):
    """``s_i U'_i u_g`` (n, s) for the groups ``u`` (s, k) of the given patterns (s,): the rows of their
    cones, nonnegative inside them."""
    return (maps.Up @ u.T) * maps.pattern_signs[patterns].T


def polish_size(X, faces) -> int:
    """``M``, the number of variables :func:`polish_support` would work with at ``X``: the dimensions
    of the null spaces of the nonzero groups' faces (a face of ``m`` independent rows leaves ``k - m``)."""
    k = X.shape[-1]
    nonzero = X.reshape(-1, k).norm(dim=1) > 0
    return int((k - (faces[nonzero] >= 0).sum(1)).clamp_min(0).sum())


class _Restricted:
    """Program (4) on the support ``support`` (group indices) with the faces ``faces`` (s, k) fixed."""

    def __init__(self, maps, shape, support, faces, beta, spaces=None):
        C, P = shape[1], shape[2]
        self.maps, self.shape, self.beta = maps, shape, beta
        self.n_groups = shape[0] * shape[1] * shape[2]
        self.support, self.faces = support, faces
        self.patterns = support % P
        self.outputs = (support // P) % C
        self.sign = 1.0 - 2.0 * (support // (C * P)).to(maps.dtype)  # +1 for W_pos, -1 for W_neg
        self.spaces = _null_spaces(maps, self.patterns, faces) if spaces is None else spaces
        self.set_variables()

    def set_variables(self):
        """``J`` and the bookkeeping of the columns from the null spaces ``spaces``."""
        maps, (Vh, rank) = self.maps, self.spaces
        k = Vh.shape[-1]
        free = torch.arange(k, device=rank.device)[None, :] >= rank[:, None]  # (s, k)
        self.owner, self.col = torch.where(free)
        self.basis = Vh[self.owner, self.col]  # (M, k): each column's direction in R^k
        self.col_output = self.outputs[self.owner]
        J = maps.Up @ self.basis.T  # (n, M)
        J *= maps.mask[:, self.patterns[self.owner]] * self.sign[self.owner]
        self.J = J
        self.onehot = torch.nn.functional.one_hot(self.col_output, self.shape[1]).to(maps.dtype)  # (M, C)
        self.same_group = self.owner[:, None] == self.owner[None, :]
        self.same_output = self.col_output[:, None] == self.col_output[None, :]
        self.data_hessian = None

    def restrict(self, keep, changed, u):
        """The same problem on the groups ``keep`` (a mask of the support), with new null spaces for the
        groups ``changed`` (a mask too; their faces changed); a group whose face has full rank leaves
        (it holds only zero). Returns the problem (None: no group left) and ``u`` on its groups, moved
        into the new null spaces."""
        Vh, rank = self.spaces
        Vh, rank = Vh.clone(), rank.clone()
        if bool(changed.any()):
            Vh[changed], rank[changed] = _null_spaces(self.maps, self.patterns[changed], self.faces[changed])
        keep = keep & (rank < Vh.shape[-1])
        if not bool(keep.any()):
            return None, u[keep]
        prob = _Restricted(self.maps, self.shape, self.support[keep], self.faces[keep], self.beta,
                           (Vh[keep], rank[keep]))  # fmt: skip
        if self.data_hessian is not None and self.maps.loss.quadratic:
            prob.data_hessian = self._carried_hessian(prob, keep, changed)
        return prob, prob.to_u(prob.to_z(u[keep]))

    def _carried_hessian(self, new, keep, changed):
        """``new``'s data Hessian (a quadratic loss's), its blocks between unchanged groups taken from this
        problem's (their columns are the same), the changed groups' rows and columns computed."""
        k = self.basis.shape[1]
        table = torch.full((len(self.support), k), -1, dtype=torch.long, device=self.owner.device)
        table[self.owner, self.col] = torch.arange(len(self.owner), device=self.owner.device)
        old_group = torch.where(keep)[0][new.owner]  # each new column's group in this problem
        old_col = torch.where(changed[old_group], -1, table[old_group, new.col])
        reused = old_col >= 0
        H = torch.empty((len(new.owner), len(new.owner)), dtype=new.J.dtype, device=new.J.device)
        kept = torch.where(reused)[0]
        H[kept[:, None], kept[None, :]] = self.data_hessian[old_col[kept][:, None], old_col[kept][None, :]]
        fresh = torch.where(~reused)[0]
        if fresh.numel():
            block = (new.J.T @ new.J[:, fresh]) * new.same_output[:, fresh]  # (M, f)
            H[:, fresh] = block
            H[fresh, :] = block.T
        return H

    # --- between u (s, k) and z (M,) -----------------------------------------------------------------
    def to_z(self, u):
        return (self.basis * u[self.owner]).sum(1)

    def to_u(self, z):
        u = torch.zeros((len(self.support), self.basis.shape[1]), dtype=z.dtype, device=z.device)
        return u.index_add_(0, self.owner, self.basis * z[:, None])

    def group_norms(self, z):
        sq = torch.zeros(len(self.support), dtype=z.dtype, device=z.device)
        return sq.index_add_(0, self.owner, z * z).sqrt()

    # --- the restricted objective --------------------------------------------------------------------
    def predict(self, z):
        return (self.J * z) @ self.onehot  # (n, C)

    def value(self, z):
        F = self.predict(z)
        return self.maps.value(F) + self.beta * float(self.group_norms(z).sum()), F

    def data_gradient(self, F):
        R = self.maps.loss.torch_grad(F, self.maps.Y)
        return (self.J * R[:, self.col_output]).sum(0)

    def newton_system(self, z, F, data_grad):
        """Gradient and Hessian (M x M) of the restricted objective at ``z``."""
        if self.data_hessian is None or not self.maps.loss.quadratic:
            w, q = self.maps.loss.torch_hessian(F, self.maps.Y)
            J = self.J
            H = (J.T @ (J * w[:, self.col_output])) * self.same_output
            if q is not None:
                K = J * q[:, self.col_output]
                H -= K.T @ K
            self.data_hessian = H  # a quadratic loss's is the same at every z: kept
        H = self.data_hessian.clone()
        norms = self.group_norms(z)[self.owner]
        unit = z / norms
        grad = data_grad + self.beta * unit
        eye = torch.eye(len(z), dtype=z.dtype, device=z.device)
        H += self.beta * self.same_group * (eye - unit[:, None] * unit[None, :]) / norms[:, None]
        return grad, H

    def multipliers(self, F, u):
        """Each face's multipliers (``grad_u f = sum_i lambda_i s_i U'_i`` over the face's rows; the normal
        cone of ``K_g`` asks ``lambda >= 0``), times ``||s_i U'_i||``: (s, k), ``inf`` on free slots."""
        maps = self.maps
        R = maps.loss.torch_grad(F, maps.Y)
        weights = maps.mask[:, self.patterns] * R[:, self.outputs]  # (n, s)
        grad = (weights.T @ maps.Up) * self.sign[:, None] + self.beta * u / u.norm(dim=1, keepdim=True)
        normals = _gather_normals(maps.Up, maps.pattern_signs, self.patterns, self.faces)  # (s, k, k)
        # least squares N^T lambda = grad through the padded Gram matrix (pinv where it is singular)
        valid = self.faces >= 0
        gram = normals @ normals.transpose(1, 2) + torch.diag_embed((~valid).to(normals.dtype))
        rhs = (normals @ grad[:, :, None])[:, :, 0]
        factor, info = torch.linalg.cholesky_ex(gram)
        lam = torch.cholesky_solve(rhs[:, :, None], factor)[:, :, 0]
        singular = info != 0
        if bool(singular.any()):
            pinv = torch.linalg.pinv(normals[singular].transpose(1, 2))
            lam[singular] = (pinv @ grad[singular, :, None])[:, :, 0]
        return torch.where(valid, lam * normals.norm(dim=2), torch.inf)

    def release_rows(self, F, u, rel_tol: float = 1e-6):
        """At a stationary point of the restricted problem: the most negative row of each group whose
        :meth:`multipliers` are not all ``>= -rel_tol beta`` leaves the face (a primal active-set step).
        Returns the mask of groups whose faces changed."""
        worst, slot = self.multipliers(F, u).min(dim=1)
        release = worst < -rel_tol * self.beta
        rows = torch.where(release)[0]
        self.faces[rows, slot[rows]] = -1
        return release

    def on_face(self):
        mark = torch.zeros((self.maps.n, len(self.support)), dtype=torch.bool, device=self.faces.device)
        rows, slots = torch.where(self.faces >= 0)
        mark[self.faces[rows, slots], rows] = True
        return mark


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
    image = (maps.Up @ unit.T) * maps.mask[:, rows % P]  # (n, e): A_g unit up to the sign
    curvature = (image.square() * w[:, (rows // P) % C]).sum(0).clamp_min(torch.finfo(v.dtype).tiny)
    steps = (dual - beta) / curvature
    support = torch.cat([prob.support, rows])
    all_faces = torch.cat([prob.faces, face])
    grown = _Restricted(maps, shape, support, all_faces, beta)
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


def _newton_step(prob, z, d, grad, slope, data_grad, value, everyone):
    """One step along the Newton direction ``d``, kept in the cones. Returns a :class:`_Step` (same
    faces), ``(problem, u)`` after a change of faces or support (:meth:`_Restricted.restrict`), or None
    (no decrease found)."""
    beta = prob.beta
    u = prob.to_u(z)
    # the longest step that keeps every group in its cone (rows off its face only)
    V, W = (cone_values(prob.maps, prob.patterns, v) for v in (u, prob.to_u(d)))
    decreasing = (W < 0) & ~prob.on_face()
    ratios = torch.where(decreasing, V.clamp_min(0) / (-W).clamp_min(torch.finfo(W.dtype).tiny), torch.inf)
    group_max, blocking_row = ratios.min(dim=0)
    stuck = group_max <= 0  # a row off the face at zero already: it joins the face first
    if bool(stuck.any()):
        return prob.restrict(everyone, _add_rows(prob.faces, stuck, blocking_row), u)
    # each group's step cut where it meets a new row (then the row joins its face)
    cut = group_max.clamp(max=1.0)[prob.owner]
    direction, cut_slope = d * cut, float(grad @ (d * cut))
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
    blocked = (group_max <= 1.0) & (alpha == 1.0) & keep
    if bool(blocked.any()) or not bool(keep.all()):
        return prob.restrict(keep, _add_rows(prob.faces, blocked, blocking_row), prob.to_u(trial))
    return _Step(trial, trial_value, trial_F)


def _add_rows(faces, groups, rows):
    """Put ``rows[j]`` in a free slot of ``faces[j]`` for the groups ``j`` marked in ``groups`` (a full
    face stays as it is); returns the mask of the groups whose faces changed."""
    changed = torch.zeros_like(groups)
    for j in torch.where(groups)[0].tolist():
        free = torch.where(faces[j] < 0)[0]
        if free.numel():
            faces[j, free[0]] = rows[j]
            changed[j] = True
    return changed


def polish_support(maps, X, faces, beta: float, *, max_newton: int = 100, max_entering: int = 3,
                   rtol: float = 1e-15) -> PolishResult:  # fmt: skip
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
    prob = _Restricted(maps, shape, support, faces[support], beta)
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
        if not slope < 0 or -0.5 * slope <= rtol * abs(value):
            # stationary on these faces: a row whose multiplier has the wrong sign leaves its face;
            # then zero groups whose dual value exceeds beta join the support
            released = prob.release_rows(F, u)
            if bool(released.any()):
                new = prob.restrict(everyone, released, u)
            elif entering_rounds < max_entering and (grown := _enter_groups(prob, z, F, value)) is not None:
                entering_rounds += 1
                new = grown
            else:
                break
        else:
            new = _newton_step(prob, z, d, grad, slope, data_grad, value, everyone)
            if new is None:
                break
            if not isinstance(new, tuple):  # a step on the same faces
                z, value, F = new.z, new.value, new.F
                continue
        if new[0] is None:
            prob = None
            break
        prob, u = new
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
    return PolishResult(Xp, faces, objective, steps, polish_size(Xp, faces))
