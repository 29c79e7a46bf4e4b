"""Compiled (numba) kernel of the cone projections: one row at a time, rows in parallel.

The same dual active-set method as :func:`convexbn.solvers.torch.projection.project_cones` (Goldfarb &
Idnani, 1983; see that module), written per row so that a row's steps cost their arithmetic only (the
batched torch version pays a fixed cost per step for all rows together, which dominates when a few rows
need many steps). The active normals' Gram matrix is kept as a Cholesky factor (``m <= k`` rows): a
constraint that joins extends it in ``O(m k)``; one that leaves, and a warm start, refactor it in
``O(m^2 k)``.

Only imported when numba is installed (``pip install convexbn[numba]``); the torch version is the fallback
and the GPU path.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True)
def _cholesky(N, m, k, L, eps):
    """The lower Cholesky factor ``L`` of ``N[:m] N[:m]^T``; False if the rows are (nearly) dependent."""
    for i in range(m):
        if not _cholesky_append(N, i, k, L, eps):
            return False
    return True


@njit(cache=True, inline="always")
def _cholesky_append(N, m, k, L, eps):
    """Extend the factor of ``N[:m]`` by row ``N[m]`` (``L[m, :m+1]``); False if it is (nearly) dependent."""
    diag = 0.0
    for q in range(k):
        diag += N[m, q] * N[m, q]
    s = diag
    for j in range(m):
        b = 0.0
        for q in range(k):
            b += N[m, q] * N[j, q]
        for q in range(j):
            b -= L[m, q] * L[j, q]
        L[m, j] = b / L[j, j]
        s -= L[m, j] * L[m, j]
    if s <= 100 * eps * diag:
        return False
    L[m, m] = np.sqrt(s)
    return True


@njit(cache=True, inline="always")
def _forward(L, m, rhs, out):
    """``out = L[:m, :m]^{-1} rhs``."""
    for i in range(m):
        s = rhs[i]
        for q in range(i):
            s -= L[i, q] * out[q]
        out[i] = s / L[i, i]


@njit(cache=True, inline="always")
def _backward(L, m, rhs, out):
    """``out = L[:m, :m]^{-T} rhs``."""
    for i in range(m - 1, -1, -1):
        s = rhs[i]
        for q in range(i + 1, m):
            s -= L[q, i] * out[q]
        out[i] = s / L[i, i]


@njit(cache=True)
def _most_violated(u, Up, UpT, row_norms, sg, idx, m, v_ref, u_ref, has_ref, limit, eps):
    """The most violated inactive constraint at ``u`` and its value ``(c, s_c U'_c u)``; ``c = -1`` when
    none is below ``-limit``.

    ``v_ref = U' u_ref`` is kept at a reference point ``u_ref`` (``has_ref[0]``): as ``|U'_j (u - u_ref)|
    <= ||U'_j|| ||u - u_ref||``, only the constraints whose bound could fall below ``-limit`` are
    evaluated (``k`` flops each, in the same order as a full evaluation, so the choice is the same
    bit for bit). When they are many, all ``n`` are evaluated and ``u`` becomes the reference.
    """
    k, n = UpT.shape
    if has_ref[0]:
        dist = 0.0
        size = 0.0
        for q in range(k):
            dist += (u[q] - u_ref[q]) ** 2
            size += u[q] * u[q] + u_ref[q] * u_ref[q]
        # the rounding of the kept values, a few eps of ||U'_j|| ||u||, goes into the radius
        radius = np.sqrt(dist) + 64 * k * eps * np.sqrt(size)
        count = 0
        for j in range(n):
            if sg[j] * v_ref[j] - row_norms[j] * radius < -limit:
                count += 1
        if 8 * count <= n:
            vmin = -limit
            c = -1
            for j in range(n):
                if sg[j] * v_ref[j] - row_norms[j] * radius < -limit:
                    s = 0.0
                    for q in range(k):
                        s += Up[j, q] * u[q]
                    s *= sg[j]
                    if s < vmin and not _is_active(idx, m, j):
                        vmin = s
                        c = j
            return c, vmin
    for j in range(n):
        v_ref[j] = 0.0
    for q in range(k):  # v = U' u, column by column (contiguous rows of U'^T)
        uq = u[q]
        u_ref[q] = uq
        for j in range(n):
            v_ref[j] += UpT[q, j] * uq
    has_ref[0] = True
    vmin = -limit
    c = -1
    for j in range(n):
        s = sg[j] * v_ref[j]
        if s < vmin and not _is_active(idx, m, j):
            vmin = s
            c = j
    return c, vmin


@njit(cache=True, inline="always")
def _is_active(idx, m, j):
    for i in range(m):
        if idx[i] == j:
            return True
    return False


@njit(cache=True)
def _project_row(a, Up, UpT, row_norms, sg, act, thr, tol, max_steps, eps, v_ref, u_ref, has_ref, L, L_of,
                 work, idx, u_out, out_act):  # fmt: skip
    """Project one row; returns (done, below). ``act``: warm-start indices (-1 padded).

    ``L`` (k, k): the Cholesky factor of the active normals' Gram matrix, kept for the active set
    ``L_of`` (k,) (-1 padded; ``L_of[0] = -2``: nothing kept) and updated in place. ``work`` (k + 6, k)
    and ``idx`` (k,): scratch. All of it is float64 whatever the data's dtype (in float32 the steps'
    directions would drift off the active constraints' span), and so is the iterate, written to
    ``u_out`` at the end.
    """
    k, n = UpT.shape
    N = work[:k]
    mu, rhs, r, z, lv, u = work[k], work[k + 1], work[k + 2], work[k + 3], work[k + 4], work[k + 5]
    for q in range(k):
        idx[q] = -1
        mu[q] = 0.0
    scale = 0.0
    for q in range(k):
        u[q] = a[q]
        scale += a[q] * a[q]
    scale = max(np.sqrt(scale), 1e-300)
    # warm start: the equality-constrained projection on the previous active set, dropping negative
    # multipliers (and, if the normals are dependent, starting cold)
    m = 0
    for s in range(k):
        c = act[s]
        if c >= 0:
            dup = False
            for j in range(m):
                if idx[j] == c:
                    dup = True
            if not dup:
                idx[m] = c
                for q in range(k):
                    N[m, q] = sg[c] * Up[c, q]
                m += 1
    kept = L_of[0] != -2  # the kept factor belongs to exactly this active set (in this order)
    for i in range(k):
        if L_of[i] != (idx[i] if i < m else -1):
            kept = False
    for _ in range(k + 1):
        if m == 0:
            break
        for i in range(m):
            s = 0.0
            for q in range(k):
                s += N[i, q] * a[q]
            rhs[i] = -s
        if not kept and not _cholesky(N, m, k, L, eps):
            m = 0
            break
        kept = False  # after a drop below, the factor is redone
        _forward(L, m, rhs, lv)
        _backward(L, m, lv, mu)
        w = 0
        for i in range(m):  # keep the non-negative multipliers
            if mu[i] >= 0:
                idx[w] = idx[i]
                for q in range(k):
                    N[w, q] = N[i, q]
                w += 1
        if w == m:
            break
        m = w
    for i in range(m, k):
        mu[i] = 0.0
    for q in range(k):
        s = a[q]
        for i in range(m):
            s += N[i, q] * mu[i]
        u[q] = s
    done = False
    below = False
    failed = False
    steps = 0
    while steps < max_steps:
        norm = 0.0
        for q in range(k):
            norm += u[q] * u[q]
        if thr >= 0 and norm <= thr * thr:
            below = True
            done = True
            break
        c, vmin = _most_violated(u, Up, UpT, row_norms, sg, idx, m, v_ref, u_ref, has_ref, tol * scale, eps)
        if c < 0:
            done = True
            break
        vc = vmin
        mu_c = 0.0
        while steps < max_steps:  # add c, dropping blocking constraints on the way
            steps += 1
            nc_sq = 0.0
            for q in range(k):
                z[q] = sg[c] * Up[c, q]
                nc_sq += z[q] * z[q]
            if m > 0:  # r = (N N^T)^{-1} N n_c through the kept factor, z = n_c - N^T r
                for i in range(m):
                    s = 0.0
                    for q in range(k):
                        s += N[i, q] * z[q]
                    rhs[i] = s
                _forward(L, m, rhs, lv)
                _backward(L, m, lv, r)
                for q in range(k):
                    s = 0.0
                    for i in range(m):
                        s += N[i, q] * r[i]
                    z[q] -= s
            zz = 0.0
            for q in range(k):
                zz += z[q] * sg[c] * Up[c, q]
            # (k active normals span R^k: no room for another, whatever the rounding of z says)
            has_z = m < k and zz > 1e3 * eps * max(nc_sq, 1e-300)
            t_full = -vc / zz if has_z else np.inf
            t_part = np.inf
            jb = -1
            for i in range(m):
                if r[i] > 0:
                    ratio = mu[i] / r[i]
                    if ratio < t_part:
                        t_part = ratio
                        jb = i
            t = min(t_full, t_part)
            if not np.isfinite(t):
                failed = True
                break
            if has_z:
                for q in range(k):
                    u[q] += t * z[q]
            for i in range(m):
                mu[i] -= t * r[i]
            mu_c += t
            if t_full <= t_part:  # c holds with equality: it joins the active set (the factor grows)
                idx[m] = c
                mu[m] = mu_c
                for q in range(k):
                    N[m, q] = sg[c] * Up[c, q]
                if not _cholesky_append(N, m, k, L, eps):
                    failed = True
                    break
                m += 1
                break
            # a multiplier reached zero first: drop that constraint (the later ones move up; refactor)
            for i in range(jb, m - 1):
                idx[i] = idx[i + 1]
                mu[i] = mu[i + 1]
                for q in range(k):
                    N[i, q] = N[i + 1, q]
            m -= 1
            idx[m] = -1
            mu[m] = 0.0
            if not _cholesky(N, m, k, L, eps):
                failed = True
                break
            if has_z:  # u moved along z: c's value with it
                vc += t * zz
        if failed:
            break
    for i in range(k):
        u_out[i] = u[i]
        out_act[i] = idx[i] if i < m else -1
        L_of[i] = idx[i] if i < m and not failed else -1
    if failed:
        L_of[0] = -2
    return done, below


@njit(cache=True)
def _project_chunk(chunk, n_chunks, a, Up, UpT, row_norms, signs, patterns, groups, active, threshold, tol,
                   max_steps, eps, V_ref, U_ref, has_ref, factors, factor_of, u, out_act, done, below,
                   work, idx, local_v, local_u, local_flag, local_L, local_of):  # fmt: skip
    """Rows ``chunk, chunk + n_chunks, ...`` of :func:`project_rows`, with that chunk's scratch."""
    B = a.shape[0]
    keep = V_ref.shape[0] > 0
    for b in range(chunk, B, n_chunks):
        if keep:
            g = groups[b]
            v_ref, u_ref, flag, L, L_of = V_ref[g], U_ref[g], has_ref[g : g + 1], factors[g], factor_of[g]
        else:  # kept for this row only
            v_ref, u_ref, flag, L, L_of = local_v, local_u, local_flag, local_L, local_of
            flag[0] = False
            L_of[0] = -2
        d, w = _project_row(a[b], Up, UpT, row_norms, signs[patterns[b]], active[b], threshold[b], tol,
                            max_steps, eps, v_ref, u_ref, flag, L, L_of, work, idx, u[b],
                            out_act[b])  # fmt: skip
        done[b] = d
        below[b] = w


@njit(cache=True)
def _scratch(n_chunks, n, k, keep):
    """Per-chunk scratch of :func:`project_rows` (allocated before the parallel loop: numba may hoist an
    allocation out of a prange body and share it between threads)."""
    works = np.zeros((n_chunks, k + 6, k), dtype=np.float64)
    idxs = np.empty((n_chunks, k), dtype=np.int64)
    local_v = np.empty((n_chunks, 0 if keep else n), dtype=np.float64)  # unused when the values are kept
    local_u = np.empty((n_chunks, k), dtype=np.float64)
    local_flag = np.zeros((n_chunks, 1), dtype=np.bool_)
    local_L = np.zeros((n_chunks, k, k), dtype=np.float64)
    local_of = np.full((n_chunks, k), -2, dtype=np.int64)
    return works, idxs, local_v, local_u, local_flag, local_L, local_of


@njit(cache=True, parallel=True)
def project_rows(a, Up, UpT, row_norms, signs, patterns, groups, active, threshold, tol, max_steps, eps,
                 V_ref, U_ref, has_ref, factors, factor_of, u, out_act, done, below):  # fmt: skip
    """Project each row ``a[b]`` onto ``{x : signs[patterns[b]] * (Up @ x) >= 0}``, rows in parallel.

    Shapes: ``a`` (B, k), ``Up`` (n, k) and ``UpT`` (k, n) (both contiguous), ``row_norms`` (n,) (of
    ``Up``), ``signs`` (S, n), ``patterns`` (B,), ``active`` (B, k) (warm starts, -1 padded),
    ``threshold`` (B,) (a row stops as "below" once its iterate's norm is at most this; negative: never).
    Outputs, written in place: ``u`` (B, k), ``out_act`` (B, k), ``done`` and ``below`` (B,).

    ``V_ref`` (G, n), ``U_ref`` (G, k) (float64, as the iterates), ``has_ref`` (G,): kept constraint
    values of each group (:func:`_most_violated`); ``factors`` (G, k, k), ``factor_of`` (G, k): the
    Cholesky factor of each group's active normals and the active set it belongs to (``factor_of[g, 0] =
    -2``: none). Row ``b`` uses group ``groups[b]`` (distinct), and these are carried from call to call.
    With ``G = 0`` each row keeps them for its own call only.
    """
    n_chunks = min(a.shape[0], 64)
    works, idxs, lv, lu, lf, lL, lo = _scratch(n_chunks, Up.shape[0], Up.shape[1], V_ref.shape[0] > 0)
    for chunk in prange(n_chunks):
        _project_chunk(chunk, n_chunks, a, Up, UpT, row_norms, signs, patterns, groups, active, threshold,
                       tol, max_steps, eps, V_ref, U_ref, has_ref, factors, factor_of, u, out_act, done,
                       below, works[chunk], idxs[chunk], lv[chunk], lu[chunk], lf[chunk], lL[chunk],
                       lo[chunk])  # fmt: skip


@njit(cache=True)
def project_rows_serial(a, Up, UpT, row_norms, signs, patterns, groups, active, threshold, tol, max_steps,
                        eps, V_ref, U_ref, has_ref, factors, factor_of, u, out_act, done, below):  # fmt: skip
    """:func:`project_rows` on one thread: for a process forked from one that ran the parallel version
    (numba's OpenMP threading layer terminates such a child when it starts a parallel loop)."""
    works, idxs, lv, lu, lf, lL, lo = _scratch(1, Up.shape[0], Up.shape[1], V_ref.shape[0] > 0)
    _project_chunk(0, 1, a, Up, UpT, row_norms, signs, patterns, groups, active, threshold, tol, max_steps,
                   eps, V_ref, U_ref, has_ref, factors, factor_of, u, out_act, done, below, works[0], idxs[0],
                   lv[0], lu[0], lf[0], lL[0], lo[0])  # fmt: skip
