"""Exact Euclidean projection onto the arrangement cones, batched in torch.

The cone of pattern ``D`` is ``K = {u in R^k : (2D - I) U' u >= 0}`` (spec eq. (4)): ``n`` half-spaces
through the origin in ``R^k``. Projecting ``a`` onto it is the small quadratic program

    min_u 1/2 ||u - a||^2   s.t.   G u >= 0,      G = diag(s) U',  s = 2 diag(D) - 1,

solved here by the dual active-set method of Goldfarb & Idnani (1983): start from the unconstrained
minimizer ``u = a``, add the most violated constraint, and take primal/dual steps that keep the
multipliers ``mu >= 0`` (dropping a constraint when its multiplier reaches zero). It ends after finitely
many steps with the exact projection and its active set (at most ``k`` linearly independent rows), and
every iterate satisfies ``u = a + G^T mu`` with ``mu >= 0``, so ``||u||`` is an upper bound on
``||Pi_K(a)|| = min_{mu >= 0} ||a + G^T mu||`` (Moreau) that decreases as the method goes on. Two things
make it cheap inside a solver:

* a warm start from the active set of a previous, nearby projection (the previous iteration's): the
  equality-constrained projection on that set, after dropping constraints with negative multipliers,
  is a valid starting state of the method, and is usually already the answer;
* a ``threshold``: a row whose upper bound ``||u||`` falls to ``threshold`` stops early and is flagged
  (the group soft-threshold after the projection would zero it anyway, and a dual check only needs to
  know that the norm is below ``beta``).

All rows advance together in batched tensor operations (only the unfinished ones are computed each step),
so the same code runs on CPU and GPU. Cost per step: one ``(B, n) = (B, k) x (k, n)`` product for the
violations and a batch of ``k x k`` solves.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["ConeProjection", "project_cones"]


class ConeProjection(NamedTuple):
    """Result of :func:`project_cones`.

    Attributes
    ----------
    u : Tensor of shape (B, k)
        The projections (for rows flagged ``below``: the last iterate, an upper bound in norm).
    active : LongTensor of shape (B, k)
        Active constraint (sample) indices per row, padded with -1: warm start of the next call.
    done : BoolTensor of shape (B,)
        The row finished (exact projection, or stopped by the threshold).
    below : BoolTensor of shape (B,)
        The row stopped because ``||Pi_K(a)|| <= threshold``.
    """

    u: torch.Tensor
    active: torch.Tensor
    done: torch.Tensor
    below: torch.Tensor


def _pack(active: torch.Tensor) -> torch.Tensor:
    """Move the valid (>= 0) entries of each row to the front, in order."""
    order = torch.sort((active < 0).to(torch.int8), dim=1, stable=True).indices
    return active.gather(1, order)


def project_cones(
    a: torch.Tensor,
    Uprime: torch.Tensor,
    signs: torch.Tensor,
    active: torch.Tensor | None = None,
    threshold: float | torch.Tensor | None = None,
    *,
    tol: float | None = None,
    max_steps: int | None = None,
) -> ConeProjection:
    """Project each row ``a[b]`` onto ``{u : signs[b] * (Uprime @ u) >= 0}``.

    Parameters
    ----------
    a : Tensor of shape (B, k)
    Uprime : Tensor of shape (n, k)
        The BN basis ``U'`` (any matrix works; orthonormal columns keep the steps well conditioned).
    signs : Tensor of shape (B, n)
        ``2 D - 1`` of each row's pattern (+-1).
    active : LongTensor of shape (B, k), optional
        Warm start: a previous result's ``active``.
    threshold : float or Tensor of shape (B,), optional
        Stop a row once its projection is known to be no longer than this.
    tol : float, optional
        A constraint counts as violated below ``-tol * ||a||``; default ``100 * eps`` of the dtype.
    max_steps : int, optional
        Budget of active-set steps (default ``8 k + 40``); rows still running are returned with
        ``done = False``.

    Returns
    -------
    ConeProjection
    """
    B, k = a.shape
    dt, dev = a.dtype, a.device
    tol = 100 * torch.finfo(dt).eps if tol is None else tol
    max_steps = 8 * k + 40 if max_steps is None else max_steps
    act = torch.full((B, k), -1, dtype=torch.long, device=dev) if active is None else active.clone()
    mu = torch.zeros((B, k), dtype=dt, device=dev)
    u = a.clone()
    scale = a.norm(dim=1).clamp_min(torch.finfo(dt).tiny)
    if threshold is not None and not torch.is_tensor(threshold):
        threshold = torch.full((B,), float(threshold), dtype=dt, device=dev)

    def normals(rows, act_rows):
        """Rows of G on the active sets, zero on padding: (R, k, k)."""
        valid = act_rows >= 0
        idx = act_rows.clamp_min(0)
        NA = signs[rows[:, None], idx][..., None] * Uprime[idx]
        return torch.where(valid[..., None], NA, 0.0), valid

    def gram_solve(NA, valid, rhs):
        gram = NA @ NA.transpose(1, 2) + torch.diag_embed((~valid).to(dt))
        return torch.where(valid, torch.linalg.solve(gram, rhs[..., None])[..., 0], 0.0)

    if active is not None:  # warm start: drop negative multipliers until none is left
        rows = torch.arange(B, device=dev)
        for _ in range(k + 1):
            NA, valid = normals(rows, act)
            if not bool(valid.any()):
                break
            m = -gram_solve(NA, valid, (NA @ a[..., None])[..., 0])
            negative = valid & (m < 0)
            if not bool(negative.any()):
                mu = m
                u = a + (NA.transpose(1, 2) @ m[..., None])[..., 0]
                break
            act = _pack(torch.where(negative, -1, act))

    current = torch.full((B,), -1, dtype=torch.long, device=dev)  # constraint being added
    mu_current = torch.zeros(B, dtype=dt, device=dev)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    below = torch.zeros(B, dtype=torch.bool, device=dev)
    for _ in range(max_steps):
        live = torch.where(~done)[0]
        if live.numel() == 0:
            break
        ul = u[live]
        if threshold is not None:
            short = ul.norm(dim=1) <= threshold[live]
            if bool(short.any()):
                below[live[short]] = True
                done[live[short]] = True
                live, ul = live[~short], ul[~short]
                if live.numel() == 0:
                    break
        values = signs[live] * (ul @ Uprime.T)  # (R, n)
        c = current[live]
        need = c < 0
        vmin, pmin = values.min(dim=1)
        finished = need & (vmin >= -tol * scale[live])
        if bool(finished.any()):
            done[live[finished]] = True
            keep = ~finished
            live, ul, values = live[keep], ul[keep], values[keep]
            c, need, pmin = c[keep], need[keep], pmin[keep]
            if live.numel() == 0:
                break
        c = torch.where(need, pmin, c)
        act_l, mu_l = act[live], mu[live]
        NA, valid = normals(live, act_l)
        normal = signs[live, c][:, None] * Uprime[c]  # the constraint being added
        r = gram_solve(NA, valid, (NA @ normal[..., None])[..., 0])
        z = normal - (NA.transpose(1, 2) @ r[..., None])[..., 0]  # its normal, off the active span
        zz = (z * normal).sum(1)
        has_z = zz > 1e3 * torch.finfo(dt).eps
        vp = values.gather(1, c[:, None])[:, 0]
        t_full = torch.where(has_z, -vp / zz.clamp_min(torch.finfo(dt).tiny), torch.inf)
        ratio = torch.where(valid & (r > 0), mu_l / r.clamp_min(torch.finfo(dt).tiny), torch.inf)
        t_part, blocking = ratio.min(dim=1)
        t = torch.minimum(t_full, t_part)
        t = torch.where(torch.isfinite(t), t, 0.0)
        u[live] = ul + t[:, None] * torch.where(has_z[:, None], z, 0.0)
        mu_l = torch.where(valid, mu_l - t[:, None] * r, mu_l)
        mc = mu_current[live] + t
        full = t_full <= t_part
        count = valid.sum(1)
        ar = torch.arange(live.numel(), device=dev)
        partial = ar[~full]
        if partial.numel():  # a multiplier reached zero first: drop that constraint
            last = (count[partial] - 1).clamp_min(0)
            jb = blocking[partial]
            act_l[partial, jb] = act_l[partial, last]
            mu_l[partial, jb] = mu_l[partial, last]
            act_l[partial, last] = -1
            mu_l[partial, last] = 0.0
        added = ar[full]
        if added.numel():  # the constraint is satisfied with equality: make it active
            slot = count[added].clamp_max(k - 1)
            act_l[added, slot] = c[added]
            mu_l[added, slot] = mc[added]
            mc[added] = 0.0
            c = c.clone()
            c[added] = -1
        act[live], mu[live], mu_current[live], current[live] = act_l, mu_l, mc, c
    return ConeProjection(u=u, active=act, done=done, below=below)
