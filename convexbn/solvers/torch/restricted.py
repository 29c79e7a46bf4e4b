"""The problem FISTA's Newton polish solves: program (4) restricted to a support and faces.

With the support ``S`` (the nonzero groups) and each group's face (its cone rows at zero) fixed, and
``B_g`` an orthonormal basis of the null space of group ``g``'s face normals, ``u_g = B_g z_g`` turns
program (4) into the smooth problem

    min_z  L(J z) + beta sum_{g in S} ||z_g||,     J = [A_g B_g]_{g in S}  (n x M, M = sum_g dim N_g)

(docs/math.md section 4). :class:`RestrictedProblem` holds ``J`` (kept transposed), its gradient and
Hessian, the faces' multipliers, and builds the problem on a changed support or faces from what did not
change (:meth:`RestrictedProblem.restrict`). The active-set method around it is
:mod:`convexbn.solvers.torch.polish`.
"""

from __future__ import annotations

import torch

from .projection import _gather_normals

__all__ = ["RestrictedProblem", "cone_values", "polish_size"]


def _null_spaces(maps, patterns, faces):
    """An orthonormal basis of each face's null space: ``(Vh, rank)``, ``Vh`` (s, k, k) whose rows from
    ``rank`` (s,) on span the null space of the face's normals.

    A Householder QR of the normals (valid rows first) gives it when the face's rows are independent, as
    the projections and the polish keep them; a face whose QR shows a dependent row (a diagonal entry of
    ``R`` below ``1e-10`` of its largest row norm) takes the SVD instead."""
    normals = _gather_normals(maps.Up, maps.pattern_signs, patterns, faces)  # (s, k, k), zero padding rows
    valid = faces >= 0
    order = torch.sort((~valid).to(torch.int8), dim=1, stable=True).indices
    packed = normals.gather(1, order[:, :, None].expand_as(normals))
    Q, R = torch.linalg.qr(packed.transpose(1, 2), mode="complete")
    rank = valid.sum(1)
    k = faces.shape[1]
    slots = torch.arange(k, device=faces.device)[None, :] < rank[:, None]
    scale = normals.norm(dim=2).amax(1, keepdim=True).clamp_min(torch.finfo(normals.dtype).tiny)
    dependent = ((R.diagonal(dim1=1, dim2=2).abs() <= 1e-10 * scale) & slots).any(1)
    Vh = Q.transpose(1, 2)
    if bool(dependent.any()):
        _, sv, Vh_svd = torch.linalg.svd(normals[dependent])
        top = sv[:, :1].clamp_min(torch.finfo(sv.dtype).tiny)
        Vh[dependent], rank[dependent] = Vh_svd, ((sv > 1e-10 * top) & (sv > 0)).sum(1)
    return Vh, rank


def cone_values(maps, patterns, u):
    """``s_i U'_i u_g`` (s, n) for the groups ``u`` (s, k) of the given patterns (s,): the rows of their
    cones, nonnegative inside them."""
    return (u @ maps.Up.T).mul_(maps.pattern_signs[patterns])


def polish_size(X, faces) -> int:
    """``M``, the number of variables :func:`polish_support` would work with at ``X``: the dimensions
    of the null spaces of the nonzero groups' faces (a face of ``m`` independent rows leaves ``k - m``)."""
    k = X.shape[-1]
    nonzero = X.reshape(-1, k).norm(dim=1) > 0
    return int((k - (faces[nonzero] >= 0).sum(1)).clamp_min(0).sum())


class RestrictedProblem:
    """Program (4) on the support ``support`` (group indices) with the faces ``faces`` (s, k) fixed."""

    def __init__(self, maps, shape, support, faces, beta, spaces=None, previous=None):
        C, P = shape[1], shape[2]
        self.maps, self.shape, self.beta = maps, shape, beta
        self.support, self.faces = support, faces
        self.patterns = support % P
        self.outputs = (support // P) % C
        self.sign = 1.0 - 2.0 * (support // (C * P)).to(maps.dtype)  # +1 for W_pos, -1 for W_neg
        self.spaces = _null_spaces(maps, self.patterns, faces) if spaces is None else spaces
        if previous is None:
            self.cone_signs = maps.pattern_signs[self.patterns]  # (s, n): the groups' rows' signs
        else:
            keep = previous[1]
            self.cone_signs = previous[0].cone_signs if bool(keep.all()) else previous[0].cone_signs[keep]
        self._on_face = None
        self.set_variables(previous)

    def cone_values(self, u):
        """:func:`cone_values` of this problem's groups at ``u`` (s, k): (s, n)."""
        return (u @ self.maps.Up.T).mul_(self.cone_signs)

    @property
    def J(self):
        """The restricted Jacobian (n, M) (kept transposed, ``JT``, so that its columns are rows)."""
        return self.JT.T

    def set_variables(self, previous=None):
        """``J`` and the bookkeeping of the columns from the null spaces ``spaces``. ``previous``:
        ``(problem, keep, changed)`` when this problem is ``problem`` on its groups ``keep`` with new
        null spaces for ``changed``: the other groups' columns of ``J`` are copied from it, and
        ``old_col`` (M,) says where each column was there (-1: a new column)."""
        maps, (Vh, rank) = self.maps, self.spaces
        k = Vh.shape[-1]
        free = torch.arange(k, device=rank.device)[None, :] >= rank[:, None]  # (s, k)
        self.owner, self.col = torch.where(free)
        self.basis = Vh[self.owner, self.col]  # (M, k): each column's direction in R^k
        self.col_output = self.outputs[self.owner]
        signed = self.basis * self.sign[self.owner, None]
        patterns = self.patterns[self.owner]
        self.old_col = torch.full_like(self.owner, -1)
        if previous is not None:
            old, keep, changed = previous
            table = torch.full((len(old.support), k), -1, dtype=torch.long, device=old.owner.device)
            table[old.owner, old.col] = torch.arange(len(old.owner), device=old.owner.device)
            old_group = torch.where(keep)[0][self.owner]  # each column's group in the old problem
            self.old_col = torch.where(changed[old_group], -1, table[old_group, self.col])
        reused = torch.where(self.old_col >= 0)[0]
        fresh = torch.where(self.old_col < 0)[0]
        JT = torch.empty((len(self.owner), maps.n), dtype=maps.dtype, device=maps.Up.device)
        if reused.numel():
            JT[reused] = previous[0].JT.index_select(0, self.old_col[reused])
        if fresh.numel():
            JT[fresh] = (signed[fresh] @ maps.Up.T).mul_(maps.pattern_mask[patterns[fresh]])
        self.JT = JT
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
        prob = RestrictedProblem(self.maps, self.shape, self.support[keep], self.faces[keep], self.beta,
                           (Vh[keep], rank[keep]), previous=(self, keep, changed))  # fmt: skip
        if self.data_hessian is not None and self.maps.loss.quadratic:
            prob.data_hessian = self._carried_hessian(prob)
        return prob, prob.to_u(prob.to_z(u[keep]))

    def _carried_hessian(self, new):
        """``new``'s data Hessian (a quadratic loss's), its blocks between unchanged columns taken from
        this problem's (``new.old_col``), the new columns' rows and columns computed."""
        fresh = torch.where(new.old_col < 0)[0]
        old = new.old_col.clamp_min(0)  # the new columns' rows and columns are overwritten below
        H = self.data_hessian.index_select(0, old).index_select(1, old)
        if fresh.numel():
            block = (new.JT @ new.JT[fresh].T).mul_(new.same_output[:, fresh])  # (M, f)
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
        return self.JT.T @ (z[:, None] * self.onehot)  # (n, C)

    def value(self, z):
        F = self.predict(z)
        return self.maps.value(F) + self.beta * float(self.group_norms(z).sum()), F

    def data_gradient(self, F):
        R = self.maps.loss.torch_grad(F, self.maps.Y)
        return ((self.JT @ R) * self.onehot).sum(1)

    def newton_system(self, z, F, data_grad):
        """Gradient and Hessian (M x M) of the restricted objective at ``z``."""
        if self.data_hessian is None or not self.maps.loss.quadratic:
            w, q = self.maps.loss.torch_hessian(F, self.maps.Y)  # (n, C) each
            JT = self.JT
            H = ((JT * w.T[self.col_output]) @ JT.T).mul_(self.same_output)
            if q is not None:
                KT = JT * q.T[self.col_output]
                H -= KT @ KT.T
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
        weights = maps.pattern_mask[self.patterns] * R.T[self.outputs]  # (s, n)
        grad = (weights @ maps.Up) * self.sign[:, None] + self.beta * u / u.norm(dim=1, keepdim=True)
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
        """(s, n): whether sample ``i`` is on group ``g``'s face (kept: a change of faces makes a new
        problem, :meth:`restrict`)."""
        if self._on_face is None:
            mark = torch.zeros((len(self.support), self.maps.n), dtype=torch.bool, device=self.faces.device)
            rows, slots = torch.where(self.faces >= 0)
            mark[rows, self.faces[rows, slots]] = True
            self._on_face = mark
        return self._on_face
