"""Exact Euclidean projection onto the arrangement cones, batched in torch.

The cone of pattern ``D`` is ``K = {u in R^k : (2D - I) U' u >= 0}`` (docs/math.md eq. (4)): ``n`` half-spaces
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

* kept factors: the inverse Gram matrix of each row's active normals is updated by rank-one formulas
  as constraints enter and leave, and returned (``normals``, ``gram_inv``) for the next call's warm
  start, which then needs no factorization unless the active set changed (or the kept inverse fails a
  residual check).

Two implementations of the same method (``backend``):

* ``"torch"``: all rows advance together in batched tensor operations (only the unfinished ones are
  computed each step), so the same code runs on CPU and GPU. Cost per step: one ``(B, n) = (B, k) x (k,
  n)`` product for the violations and ``O(B k^2)`` for the factor updates, plus a fixed cost of about a
  hundred tensor operations, which dominates on a CPU when a few rows need many steps; memory of the kept
  factors ``2 B k^2`` floats.
* ``"numba"`` (CPU; needs the optional numba, ``pip install convexbn[numba]``): a compiled kernel,
  :mod:`convexbn.solvers.torch._cone_kernels`, projects row by row, rows in parallel, so a row's steps cost
  only their arithmetic. Its arithmetic is float64 whatever the dtype. It keeps the active normals'
  Gram matrix as a Cholesky factor (extended in ``O(m k)`` when a constraint joins), and, given a
  :class:`ProjectionMemory`, carries that factor and the constraint values of each group's last point
  from call to call: a check near that point evaluates only the constraints a distance bound cannot
  clear (the same result bit for bit). ``normals`` and ``gram_inv`` of its result are None; temporaries
  ``O(n)`` per thread. The first call compiles it (seconds; cached on disk for later processes).

``backend="auto"`` takes numba for CPU tensors when it is installed, else torch.
"""

from __future__ import annotations

import importlib.util
from typing import NamedTuple

import torch

from .numba_projection import NumbaBasis, ProjectionMemory, project_cones_numba

__all__ = ["ConeProjection", "ProjectionMemory", "NumbaBasis", "project_cones", "resolve_projection_backend"]

PROJECTION_BACKENDS = ("auto", "torch", "numba")


def resolve_projection_backend(backend: str, device: torch.device | str) -> str:
    """The backend ``"auto"`` stands for on ``device``, after checking that the asked one can run there.

    Raises
    ------
    ValueError
        An unknown name, or ``"numba"`` for a non-CPU device.
    ImportError
        ``"numba"`` asked for and numba not installed.
    """
    if backend not in PROJECTION_BACKENDS:
        raise ValueError(f"projection backend must be one of {PROJECTION_BACKENDS}, got {backend!r}")
    on_cpu = torch.device(device).type == "cpu"
    has_numba = importlib.util.find_spec("numba") is not None
    if backend == "auto":
        return "numba" if on_cpu and has_numba else "torch"
    if backend == "numba":
        if not on_cpu:
            raise ValueError(f"the numba projection runs on the CPU only, not on {torch.device(device)}")
        if not has_numba:
            raise ImportError("the numba projection needs numba: pip install convexbn[numba] (or 'torch')")
    return backend


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
    normals : Tensor of shape (B, k, k), or None
        The rows of ``G`` on each active slot (zero on padding): with ``gram_inv``, the factors of the
        next call's warm start (None from the numba backend, which keeps no factors).
    gram_inv : Tensor of shape (B, k, k), or None
        Inverse of each row's padded Gram matrix ``N N^T + diag(padding)`` (identity on padding).
    """

    u: torch.Tensor
    active: torch.Tensor
    done: torch.Tensor
    below: torch.Tensor
    normals: torch.Tensor
    gram_inv: torch.Tensor


def _pack(active: torch.Tensor) -> torch.Tensor:
    """Move the valid (>= 0) entries of each row to the front, in order."""
    order = torch.sort((active < 0).to(torch.int8), dim=1, stable=True).indices
    return active.gather(1, order)


def _gather_normals(Uprime, signs, rows, act_rows):
    """Rows of ``G = diag(s) U'`` on the active slots, zero on padding: (R, k, k)."""
    idx = act_rows.clamp_min(0)
    NA = signs[rows[:, None], idx][..., None] * Uprime[idx]
    return torch.where((act_rows >= 0)[..., None], NA, 0.0)


def _padded_gram_inverse(NA, valid):
    """``(N N^T + diag(padding))^{-1}`` for a batch: (R, k, k)."""
    gram = NA @ NA.transpose(1, 2) + torch.diag_embed((~valid).to(NA.dtype))
    return torch.linalg.inv(gram)


def _drop_repeats(active: torch.Tensor) -> torch.Tensor:
    """Keep the first occurrence of each index per row (a repeated constraint makes the Gram singular)."""
    ordered, order = torch.sort(active, dim=1, stable=True)
    repeat = torch.zeros_like(active, dtype=torch.bool)
    repeat[:, 1:] = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)
    return _pack(active.masked_fill(repeat.gather(1, order.argsort(dim=1)), -1))


def project_cones(
    a: torch.Tensor,
    Uprime: torch.Tensor,
    signs: torch.Tensor,
    active: torch.Tensor | None = None,
    threshold: float | torch.Tensor | None = None,
    *,
    factors: tuple[torch.Tensor, torch.Tensor] | None = None,
    patterns: torch.Tensor | None = None,
    tol: float | None = None,
    max_steps: int | None = None,
    backend: str = "torch",
    basis: NumbaBasis | None = None,
    kept: ProjectionMemory | None = None,
    groups: torch.Tensor | None = None,
) -> ConeProjection:
    """Project each row ``a[b]`` onto ``{u : signs[b] * (Uprime @ u) >= 0}``.

    Parameters
    ----------
    a : Tensor of shape (B, k)
    Uprime : Tensor of shape (n, k)
        The BN basis ``U'`` (any matrix works; orthonormal columns keep the steps well conditioned).
    signs : Tensor of shape (B, n), or (S, n) with ``patterns``
        ``2 D - 1`` of each row's pattern (+-1).
    active : LongTensor of shape (B, k), optional
        Warm start: a previous result's ``active``.
    threshold : float or Tensor of shape (B,), optional
        Stop a row once its projection is known to be no longer than this.
    factors : (Tensor, Tensor) of shapes (B, k, k), optional
        The previous result's ``(normals, gram_inv)`` for the same ``active``: the warm start then
        skips the batched solve (rows whose inverse fails a residual check are refactored).
    patterns : LongTensor of shape (B,), optional
        Row ``b``'s pattern is ``signs[patterns[b]]`` (groups that share a pattern share its row of
        ``signs``, and no ``(B, n)`` copy is made); default: ``signs[b]``.
    tol : float, optional
        A constraint counts as violated below ``-tol * ||a||``; default ``100 * eps`` of the dtype.
    max_steps : int, optional
        Budget of active-set steps (default ``8 k + 40``); rows still running are returned with
        ``done = False``.
    backend : {"torch", "numba", "auto"}
        The implementation (module docstring); ``factors`` are used by ``"torch"`` only. The default stays
        ``"torch"`` so that a direct call runs anywhere; the solvers pass ``"auto"``.
    basis, kept, groups : optional
        Numba only. ``basis``: :meth:`NumbaBasis.of` ``(Uprime)``, made once by a caller that projects
        many times (default: made per call). ``kept``: the :class:`ProjectionMemory` of the groups,
        updated in place, with ``groups`` (LongTensor of shape (B,), distinct) the group of each row.

    Returns
    -------
    ConeProjection

    Notes
    -----
    The inverse Gram matrix of the active normals is kept from step to step (and, through ``factors``,
    from call to call) by rank-one updates: adding constraint ``c`` with ``b = N n_c``, ``r = H b`` and
    ``s = n_c^T (n_c - N^T r)`` gives the bordered inverse ``H + q q^T / s`` with ``q = r - e_slot``;
    dropping slot ``j`` (moved to the last slot first) is the Schur complement ``H - h_j h_j^T / H_jj``.
    Each step then costs ``O(k^2)`` per row instead of a ``k x k`` factorization.
    """
    B, k = a.shape
    dt, dev = a.dtype, a.device
    tol = 100 * torch.finfo(dt).eps if tol is None else tol
    max_steps = 8 * k + 40 if max_steps is None else max_steps
    if resolve_projection_backend(backend, dev) == "numba":
        u, act, done, below = project_cones_numba(a, Uprime, signs, active, threshold, patterns, tol,
                                                  max_steps, basis, kept, groups)  # fmt: skip
        return ConeProjection(u=u, active=act, done=done, below=below, normals=None, gram_inv=None)
    if active is None:
        act = torch.full((B, k), -1, dtype=torch.long, device=dev)
    elif factors is None:  # a warm start from elsewhere: no repeated constraint
        act = _drop_repeats(active)
    else:  # our own previous result (the factors belong to it)
        act = active.clone()
    mu = torch.zeros((B, k), dtype=dt, device=dev)
    u = a.clone()
    scale = a.norm(dim=1).clamp_min(torch.finfo(dt).tiny)
    if threshold is not None and not torch.is_tensor(threshold):
        threshold = torch.full((B,), float(threshold), dtype=dt, device=dev)
    eye = torch.eye(k, dtype=dt, device=dev)
    rows = torch.arange(B, device=dev)
    sign_rows = rows if patterns is None else patterns  # row b's constraints: signs[sign_rows[b]]
    basis_t = Uprime.T  # (k, n)
    valid = act >= 0

    if active is not None and factors is not None:
        NA, H = factors[0].clone(), factors[1].clone()
        # the rank-one updates drift slowly: refactor the rows whose inverse no longer inverts
        gram = NA @ NA.transpose(1, 2) + torch.diag_embed((~valid).to(dt))
        stale = torch.where((H @ gram - eye).abs().amax(dim=(1, 2)) > torch.finfo(dt).eps ** 0.75)[0]
    else:
        NA = _gather_normals(Uprime, signs, sign_rows, act)
        H = eye.expand(B, k, k).clone()
        stale = torch.where(valid.any(1))[0]
    if stale.numel():
        H[stale] = _padded_gram_inverse(NA[stale], valid[stale])

    if active is not None:  # warm start: drop negative multipliers until none is left
        for _ in range(k + 1):
            m = torch.where(valid, -(H @ (NA @ a[..., None]))[..., 0], 0.0)
            negative = valid & (m < 0)
            bad = torch.where(negative.any(1))[0]
            if bad.numel() == 0:
                mu = m
                u = a + (NA.transpose(1, 2) @ m[..., None])[..., 0]
                break
            act[bad] = _pack(torch.where(negative[bad], -1, act[bad]))
            valid = act >= 0
            NA[bad] = _gather_normals(Uprime, signs, sign_rows[bad], act[bad])
            H[bad] = _padded_gram_inverse(NA[bad], valid[bad])

    current = torch.full((B,), -1, dtype=torch.long, device=dev)  # constraint being added
    mu_current = torch.zeros(B, dtype=dt, device=dev)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    below = torch.zeros(B, dtype=torch.bool, device=dev)
    tiny = torch.finfo(dt).tiny
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
        values = signs[sign_rows[live]] * (ul @ basis_t)  # (R, n)
        # active constraints hold with equality by construction: never candidates (rounding of the kept
        # inverse could otherwise make one look violated and add it twice). Padding slots (-1) point at
        # constraint 0, whose value is put back unless it is really active.
        act_now = act[live]
        first = values[:, 0].clone()
        values.scatter_(1, act_now.clamp_min(0), torch.inf)
        values[:, 0] = torch.where((act_now == 0).any(1), torch.inf, first)
        c = current[live]
        need = c < 0
        vmin, pmin = values.min(dim=1)
        finished = need & (vmin >= -tol * scale[live])
        c = torch.where(need, pmin, c)
        vp = values.gather(1, c[:, None])[:, 0]  # the value of the constraint being added
        if bool(finished.any()):
            done[live[finished]] = True
            keep = ~finished
            live, ul, c, vp = live[keep], ul[keep], c[keep], vp[keep]
            if live.numel() == 0:
                break
        act_l, mu_l, NA_l, H_l = act[live], mu[live], NA[live], H[live]
        valid = act_l >= 0
        normal = signs[sign_rows[live], c][:, None] * Uprime[c]  # the constraint being added
        b = (NA_l @ normal[..., None])[..., 0]
        r = torch.where(valid, (H_l @ b[..., None])[..., 0], 0.0)
        z = normal - (NA_l.transpose(1, 2) @ r[..., None])[..., 0]  # its normal, off the active span
        zz = (z * normal).sum(1)
        has_z = zz > 1e3 * torch.finfo(dt).eps
        t_full = torch.where(has_z, -vp / zz.clamp_min(tiny), torch.inf)
        ratio = torch.where(valid & (r > 0), mu_l / r.clamp_min(tiny), torch.inf)
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
        if partial.numel():  # a multiplier reached zero first: drop that constraint (slot jb)
            last = (count[partial] - 1).clamp_min(0)
            jb = blocking[partial]
            act_l[partial, jb] = act_l[partial, last]
            mu_l[partial, jb] = mu_l[partial, last]
            act_l[partial, last] = -1
            mu_l[partial, last] = 0.0
            NA_l[partial, jb] = NA_l[partial, last]
            NA_l[partial, last] = 0.0
            # swap slots jb and last in the inverse, then take the Schur complement of the last
            R = partial.numel()
            perm = torch.arange(k, device=dev).repeat(R, 1)
            pr = torch.arange(R, device=dev)
            perm[pr, jb] = last
            perm[pr, last] = jb
            Hp = H_l[partial].gather(1, perm[:, :, None].expand(R, k, k))
            Hp = Hp.gather(2, perm[:, None, :].expand(R, k, k))
            col = Hp[pr, :, last]
            Hp = Hp - col[:, :, None] * col[:, None, :] / col[pr, last][:, None, None]
            Hp[pr, last, :] = 0.0
            Hp[pr, :, last] = 0.0
            Hp[pr, last, last] = 1.0
            H_l[partial] = Hp
        added = ar[full & has_z]
        if added.numel():  # the constraint is satisfied with equality: make it active (slot)
            slot = count[added].clamp_max(k - 1)
            act_l[added, slot] = c[added]
            mu_l[added, slot] = mc[added]
            NA_l[added, slot] = normal[added]
            q = r[added].clone()
            pa = torch.arange(added.numel(), device=dev)
            q[pa, slot] = -1.0
            Hq = H_l[added] + q[:, :, None] * q[:, None, :] / zz[added][:, None, None]
            Hq[pa, slot, slot] -= 1.0
            H_l[added] = Hq
            mc[added] = 0.0
            c = c.clone()
            c[added] = -1
        act[live], mu[live], mu_current[live], current[live] = act_l, mu_l, mc, c
        NA[live], H[live] = NA_l, H_l
    return ConeProjection(u=u, active=act, done=done, below=below, normals=NA, gram_inv=H)
