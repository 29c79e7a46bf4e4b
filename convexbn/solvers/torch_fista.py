"""FISTA on the exact program (4) itself: the cone constraints go into the proximal operator.

Program (4) is ``min_x f(x) + sum_g h_g(x_g)`` with the smooth data fit ``f(x) = L(sum_i D_i U'(u_i -
u'_i))`` and, per group ``g`` (an ``u_i`` or ``u'_i`` of one output), ``h_g = beta ||.|| + indicator of
K_g``, ``K_g = {u : (2 D_i - I) U' u >= 0}``. Because ``K_g`` is a closed convex cone,

    prox_{t h_g}(a) = shrink(Pi_{K_g}(a), t beta),     shrink(v, s) = (1 - s / ||v||)_+ v

(for ``x`` in ``K``, Moreau's decomposition ``a = Pi_K a + Pi_{K°} a`` gives ``||x - a||^2 = ||x - Pi_K
a||^2 - 2 <x, Pi_{K°} a> + const`` with the middle term ``>= 0``, and zero on the ray of ``Pi_K a``, where
the group soft-threshold of ``Pi_K a`` lies). So accelerated proximal gradient applies to the exact
program as it stands, with no splitting, slacks or multipliers, and **every iterate is feasible**: the
recovered network of any iterate reproduces its objective. The projections are exact and batched
(:func:`convexbn.solvers.cone_projection.project_cones`), warm-started from the previous iteration's
active sets and cut short for groups the threshold zeroes anyway.

Method: FISTA (Beck & Teboulle, 2009) with backtracking on the local Lipschitz estimate (doubled on a
failed sufficient-decrease test, shrunk by 0.9 after each step) and function-value adaptive restart
(O'Donoghue & Candes, 2015), as in Mishkin, Sahiner & Pilanci (2022) for the gated problem.

Stopping: a certified duality gap. With ``R = grad L(F)`` at the current prediction, every group's dual
value ``||Pi_{K_g}(-grad_g f)||`` (the same projections) gives the dual-feasible point ``s R``, ``s =
min(1, beta / max_g ||Pi_{K_g}(-grad_g f)||)`` and the lower bound ``-L*(s R)`` on the program's optimum
(weak duality; spec section 6 and :mod:`convexbn.certificate`); the best bound of all checks is kept
(each is valid). The solve stops when
``(objective - bound) <= tol * |objective|``; the final gap is reported in ``info``.

Mixed precision: a float32 gap stalls near ``sqrt(eps_float32)`` (the dual point's error is about the
square root of the objective's), so by default a float32 solve whose gap stalls above ``tol`` goes on in
float64 from where it is (``finish_dtype``); only the float64 checks' bounds certify the result.

Smooth losses only (squared, logistic, cross-entropy); the hinge loss goes to ADMM. Memory: the basis
``n k``, the mask and its signs ``2 n P``, the torch projections' kept factors ``2 (2 C P) k^2`` (normals
and inverse Gram matrices, kept only while they fit in 512 MiB; past that every projection refactors its
active set), and temporaries bounded by ``memory_limit``: the products run over blocks of samples (about
three ``(C, block, P)`` temporaries) and the torch projections over blocks of groups (about five ``(block,
n)`` temporaries for their violation checks), sized to fit (:class:`_ExactMaps`). The numba projections
(the CPU default when numba is installed) keep instead two copies of the basis and, while they fit in 512
MiB, ``2 C P (n + k^2 + 2 k)`` float64 (:class:`~convexbn.solvers.cone_projection.ProjectionMemory`); their
temporaries are ``O(n)`` per thread.
"""

from __future__ import annotations

import functools
import math
import os

import torch

from ..exceptions import CheckpointError, SolverError
from .checkpoint import StateSpec, load_checkpoint, problem_fingerprint, save_checkpoint
from .cone_projection import (
    ConeProjection,
    NumbaBasis,
    ProjectionMemory,
    _gather_normals,
    _padded_gram_inverse,
    project_cones,
    resolve_projection_backend,
)
from .torch_common import finished_groups, warm_start_arrays

__all__ = ["solve_fista"]


class _ExactMaps:
    """The data-fit maps of program (4) on one device and dtype, in blocks that fit ``memory_limit``.

    The products run over blocks of ``sample_block`` samples (about three ``(C, block, P)`` temporaries)
    and the projections over blocks of ``group_block`` groups (about five ``(block, n)`` temporaries), both
    sized so that those temporaries stay within ``memory_limit`` bytes (None: one block each). With the
    numba projection (``projection``, see :func:`project_cones`) the groups go in one call (its temporaries
    are ``O(n)`` per thread); the kernel's layout of the basis (:class:`NumbaBasis`) and its memory of the
    groups' last prox (:class:`ProjectionMemory`, while it fits in 512 MiB) are kept here.
    """

    def __init__(self, problem, device, dtype, memory_limit: int | None = None, projection: str = "auto"):
        self.Up = torch.as_tensor(problem.Uprime, device=device, dtype=dtype)
        self.projection = resolve_projection_backend(projection, device)
        self.numba_basis = NumbaBasis.of(self.Up) if self.projection == "numba" else None
        # what the numba kernel keeps of each group's last prox, while it fits in 512 MiB
        n_groups = 2 * problem.n_outputs * problem.n_patterns
        fits = n_groups * ProjectionMemory.bytes_per_group(*self.Up.shape) <= 512 * 2**20
        self.kept = (ProjectionMemory.empty(n_groups, *self.Up.shape)
                     if self.projection == "numba" and fits else None)  # fmt: skip
        self.mask = torch.as_tensor(problem.mask, device=device, dtype=dtype)
        self.Y = torch.as_tensor(problem.Y, device=device, dtype=dtype)
        self.loss = problem.loss
        n, C, P = self.Up.shape[0], problem.n_outputs, problem.n_patterns
        # the cone of group g = (sign, output, pattern) depends on its pattern g % P only
        self.pattern_signs = (2 * self.mask - 1).T.contiguous()  # (P, n)
        self.n_patterns = P
        itemsize = torch.finfo(dtype).bits // 8
        if memory_limit is None:
            self.sample_block, self.group_block = n, 2 * C * P
        else:
            self.sample_block = int(min(n, max(1, memory_limit // (3 * C * P * itemsize))))
            self.group_block = int(min(2 * C * P, max(1, memory_limit // (5 * (n + 1) * itemsize))))

    def predict(self, X):
        """The predictions F (n, C) at X (2, C, P, k)."""
        W = (X[0] - X[1]).transpose(1, 2)  # (C, k, P)
        n, b = self.Up.shape[0], self.sample_block
        if b >= n:
            return (self.mask * torch.matmul(self.Up, W)).sum(-1).T
        F = torch.empty((n, W.shape[0]), dtype=W.dtype, device=W.device)
        for i in range(0, n, b):
            F[i : i + b] = (self.mask[i : i + b] * torch.matmul(self.Up[i : i + b], W)).sum(-1).T
        return F

    def adjoint(self, R):
        """The data fit's gradient (2, C, P, k) for the loss gradient R (n, C)."""
        n, b = self.Up.shape[0], self.sample_block
        if b >= n:
            G = torch.matmul((self.mask * R.T[:, :, None]).transpose(1, 2), self.Up)  # (C, P, k)
        else:
            G = 0
            for i in range(0, n, b):
                block = (self.mask[i : i + b] * R[i : i + b].T[:, :, None]).transpose(1, 2)
                G = G + torch.matmul(block, self.Up[i : i + b])
        return torch.stack([G, -G])

    def value(self, F):
        """The data fit at the predictions F (n, C)."""
        return float(self.loss.torch_value(F, self.Y))

    def value_grad(self, X, F=None):
        """Data fit and its gradient (2, C, P, k) at X (2, C, P, k); also the (n, C) loss gradient.

        ``F``: the predictions at X when known (the map is linear: FISTA keeps them for its iterates).
        """
        F = self.predict(X) if F is None else F
        R = self.loss.torch_grad(F, self.Y)
        return self.value(F), self.adjoint(R), R

    def project(self, a, rows, active, threshold, factors, kept=None):
        """:func:`project_cones` of the rows ``a`` (groups ``rows``), block by block; the results
        concatenated in a :class:`ConeProjection`. ``kept``: the numba kernel's memory of the
        groups' last projections (:class:`ProjectionMemory`)."""
        b = self.group_block
        if self.projection == "numba":
            return project_cones(a, self.Up, self.pattern_signs, active, threshold,
                                 patterns=rows % self.n_patterns, backend="numba", basis=self.numba_basis,
                                 kept=kept, groups=rows)  # fmt: skip
        if len(rows) <= b:
            return project_cones(a, self.Up, self.pattern_signs, active, threshold, factors=factors,
                                 patterns=rows % self.n_patterns, backend=self.projection)  # fmt: skip
        parts = []
        for i in range(0, len(rows), b):
            sl = slice(i, i + b)
            part_factors = None if factors is None else (factors[0][sl], factors[1][sl])
            part_active = None if active is None else active[sl]
            part_thresh = threshold[sl] if torch.is_tensor(threshold) else threshold  # per row or one
            part_patterns = rows[sl] % self.n_patterns
            parts.append(project_cones(a[sl], self.Up, self.pattern_signs, part_active, part_thresh,
                                       factors=part_factors, patterns=part_patterns,
                                       backend=self.projection))  # fmt: skip
        return ConeProjection(*(torch.cat(fields) for fields in zip(*parts, strict=True)))


def _prox(maps, V, step, beta, faces, factors=None):
    """``shrink(Pi_K(V), step * beta)`` per group.

    Updates the warm starts in place: ``faces`` (active sets) and, when kept, ``factors`` (the
    projections' normals and inverse Gram matrices, see :func:`project_cones`).
    """
    shape = V.shape
    flat = V.reshape(-1, shape[-1])
    out = torch.zeros_like(flat)
    thresh = step * beta
    rows = torch.where(flat.norm(dim=1) > thresh)[0]
    if rows.numel():
        cached = None if factors is None else (factors[0][rows], factors[1][rows])
        res = maps.project(flat[rows], rows, faces[rows], thresh, cached, maps.kept)
        faces[rows] = res.active
        if factors is not None and res.normals is not None:
            factors[0][rows], factors[1][rows] = res.normals, res.gram_inv
        norms = res.u.norm(dim=1, keepdim=True)
        shrunk = res.u * (1 - thresh / norms.clamp_min(torch.finfo(V.dtype).tiny)).clamp_min(0)
        out[rows] = torch.where(res.below[:, None], 0.0, shrunk)
    return out.reshape(shape)


def _new_factors(n_rows, k, dtype, device, budget_bytes=512 * 2**20):
    """Empty warm-start factors (normals, identity inverses) of ``n_rows`` groups, or None over budget."""
    if 2 * n_rows * k * k * torch.finfo(dtype).bits // 8 > budget_bytes:
        return None
    eye = torch.eye(k, dtype=dtype, device=device)
    return (torch.zeros((n_rows, k, k), dtype=dtype, device=device), eye.expand(n_rows, k, k).clone())


def duality_gap(maps, X, beta, faces=None, factors=None, F=None):
    """``(objective, lower bound)`` of program (4) at the feasible point X (see the module docstring);
    ``F``: the predictions at X when known."""
    value, G, R = maps.value_grad(X, F)
    objective = value + beta * float(X.norm(dim=-1).sum())
    flat = (-G).reshape(-1, G.shape[-1])
    rows = torch.where(flat.norm(dim=1) > beta)[0]  # ||Pi_K(a)|| <= ||a||: the others are fine as they are
    worst = 0.0
    if rows.numel():
        act = None if faces is None else faces[rows]
        cached = None if faces is None or factors is None else (factors[0][rows], factors[1][rows])
        res = maps.project(flat[rows], rows, act, beta, cached)
        above = ~res.below
        if bool(above.any()):
            worst = float(res.u[above].norm(dim=1).max())
    scale = 1.0 if worst <= beta else beta / worst
    Rn = R.detach().to("cpu", torch.float64).numpy()
    lower = -maps.loss.conjugate(scale * Rn, maps.Y.to("cpu", torch.float64).numpy())
    return objective, float(lower)


def _solve_fista(
    problem,
    *,
    device: str = "cpu",
    dtype=torch.float64,
    max_iter: int = 20_000,
    tol: float = 1e-6,
    check_every: int = 10,
    warm_start=None,
    checkpoint=None,
    checkpoint_every: int = 200,
    resume: bool = False,
    progress: bool = False,
    verbose: bool = False,
    callback=None,
    finish_dtype="auto",
    memory_limit: int | None = 64 * 2**20,
    projection: str = "auto",
):
    """FISTA with the exact prox on program (4) (module docstring). Returns the raw result dict.

    Called through :func:`convexbn.solvers.torch_backend.solve_torch` (``method="fista"``), which
    validates ``device`` and ``dtype``. ``tol`` is the relative duality gap to stop at, checked every
    ``check_every`` iterations (where ``callback(n_iter, W_pos, W_neg)`` is called too; True stops).

    ``finish_dtype`` (mixed precision): when the gap in ``dtype`` stalls above ``tol`` (see
    :func:`_precision_stalled`), the iterations go on in this dtype from the current point. ``"auto"``:
    float64 after float32, nothing after float64; None: never. A float32 gap usually stalls near
    ``sqrt(eps_float32)`` (the dual point's error is about the square root of the objective's), so
    without a float64 finish a float32 solve asked for ``tol = 1e-6`` usually runs to ``max_iter`` (a
    single check can be lucky and certify).

    ``memory_limit`` (bytes, None: no limit): the products and the projections run in blocks of samples
    and of groups whose temporaries fit in it (:class:`_ExactMaps`).

    ``projection``: the cone projections' implementation, ``"auto"`` (numba on the CPU when installed,
    else torch), ``"torch"`` or ``"numba"`` (:func:`convexbn.solvers.cone_projection.project_cones`).
    """
    if not problem.loss.smooth:
        raise ValueError(f"method='fista' needs a smooth loss; use method='admm' for {problem.loss.name!r}")
    dev = torch.device(device)
    if finish_dtype == "auto":
        finish_dtype = torch.float64
    elif isinstance(finish_dtype, str):
        finish_dtype = getattr(torch, finish_dtype, finish_dtype)
    if finish_dtype not in (None, torch.float64):
        raise ValueError(f"finish_dtype must be 'auto', None or float64, got {finish_dtype!r}")
    if finish_dtype == dtype:
        finish_dtype = None
    maps = _ExactMaps(problem, dev, dtype, memory_limit, projection)
    C, P, k = problem.n_outputs, problem.n_patterns, problem.dim
    beta = float(problem.beta)
    shape = (2, C, P, k)

    # hashing the data costs a pass over it: only when there is a checkpoint to write or check
    fingerprint = problem_fingerprint(problem, "fista", dtype) if checkpoint is not None else None
    state = None
    if resume and checkpoint is not None and os.path.exists(checkpoint):
        n = problem.n_samples
        spec = StateSpec(
            tensors={"X": (shape, "float"), "X_prev": (shape, "float"), "faces": ((2 * C * P, k), "index")},
            index_ranges={"faces": (-1, n)},  # -1: no active constraint; else a sample index
            counters=("it", "bounds_from"),
            positive=("t", "L"),
        )
        state = load_checkpoint(checkpoint, fingerprint, dev, spec)
        if state.get("finish_at") is not None and not isinstance(state["finish_at"], int):
            raise CheckpointError(
                f"checkpoint {os.fspath(checkpoint)!r}: finish_at is {state['finish_at']!r}"
            )
    if state is None:
        X = torch.zeros(shape, device=dev, dtype=dtype)
        faces = torch.full((2 * C * P, k), -1, dtype=torch.long, device=dev)
        # the torch projections' warm-start factors (the numba kernel keeps none)
        factors = _new_factors(2 * C * P, k, dtype, dev) if maps.projection == "torch" else None
        if warm_start is not None:
            Wp, Wn = warm_start_arrays(warm_start)
            X0 = torch.stack([torch.as_tensor(Wp, dtype=dtype), torch.as_tensor(Wn, dtype=dtype)]).to(dev)
            X = _prox(maps, X0, 0.0, beta, faces, factors)  # the nearest feasible point
        L = _lipschitz_estimate(maps, shape, dtype, dev) / 4  # backtracking raises it where needed
        state = {"X": X, "X_prev": X.clone(), "t": 1.0, "L": L, "it": 0, "faces": faces,
                 "factors": factors, "prev_obj": math.inf, "history": [], "gap": math.inf,
                 "finish_at": None, "bounds_from": 0}  # fmt: skip
    if state.get("finish_at") is not None:  # resumed after the switch to finish_dtype
        maps = _ExactMaps(problem, dev, state["X"].dtype, memory_limit, projection)

    def save():
        if checkpoint is not None:
            save_checkpoint(state, checkpoint, fingerprint)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_iter, initial=state["it"], desc="convexbn fista", leave=False)

    X, X_prev, t, L = state["X"], state["X_prev"], state["t"], state["L"]
    # the predictions of the last two iterates: the map is linear, so the extrapolated point's are their
    # combination, and each iteration needs one prediction (per trial step) and one adjoint
    F, F_prev = maps.predict(X), maps.predict(X_prev)
    faces, prev_obj = state["faces"], state["prev_obj"]
    factors = state.get("factors")  # absent from checkpoints of earlier versions: refactored as needed
    slack = 10 * torch.finfo(X.dtype).eps
    status = "optimal_inaccurate"
    while state["it"] < max_iter:
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        momentum = (t - 1) / t_next
        Yx = torch.lerp(X_prev, X, 1 + momentum)  # X + momentum (X - X_prev)
        fy, gy, _ = maps.value_grad(Yx, torch.lerp(F_prev, F, 1 + momentum))
        fy_exact = False
        while True:  # backtracking on the Lipschitz estimate
            Xn = _prox(maps, Yx - gy / L, 1.0 / L, beta, faces, factors)
            D = Xn - Yx
            Fn = maps.predict(Xn)
            fx = maps.value(Fn)
            model = float((gy * D).sum()) + 0.5 * L * float(D.square().sum())
            if fx <= fy + model + slack * abs(fy):
                break
            if not fy_exact:
                # fy came from the combined predictions, which round differently from a prediction at Yx:
                # where the step is zero (Xn == Yx) no L would absorb that difference. Test again with
                # fy from a prediction at Yx, as the step's own prediction is.
                fy, fy_exact = maps.value(maps.predict(Yx)), True
                if fx <= fy + model + slack * abs(fy):
                    break
            L *= 2.0
            if not math.isfinite(L):
                raise SolverError("FISTA's line search failed (the Lipschitz estimate overflowed)")
        obj = fx + beta * float(Xn.norm(dim=-1).sum())
        if obj > prev_obj:  # adaptive restart
            t_next = 1.0
        X_prev, X, t, prev_obj = X, Xn, t_next, obj
        F_prev, F = F, Fn
        L *= 0.9
        state["it"] += 1
        if bar is not None:
            bar.update(1)
        stop = False
        if state["it"] % check_every == 0:
            objective, lower = duality_gap(maps, X, beta, faces, factors, F)
            state["history"].append((state["it"], objective, lower))
            # every check's dual point bounds the optimum (after a switch of dtype: the finish's checks)
            best = _best_bound(state["history"][state.get("bounds_from", 0) :])
            gap = (objective - best) / max(abs(objective), 1e-300)
            state["gap"] = gap
            if (gap > tol and finish_dtype is not None and state.get("finish_at") is None
                    and _precision_stalled(state["history"], X.dtype, tol)):  # fmt: skip
                # go on in finish_dtype from here (momentum kept); the kept factors are rebuilt
                # from the full-precision rows of U' (cast ones would hold float32-rounded normals)
                maps = _ExactMaps(problem, dev, finish_dtype, memory_limit, projection)
                X, X_prev = X.to(finish_dtype), X_prev.to(finish_dtype)
                F, F_prev = maps.predict(X), maps.predict(X_prev)
                if factors is not None:
                    patterns = torch.arange(len(faces), device=dev) % P
                    normals = _gather_normals(maps.Up, maps.pattern_signs, patterns, faces)
                    factors = (normals, _padded_gram_inverse(normals, faces >= 0))
                slack = 10 * torch.finfo(finish_dtype).eps
                state.update(finish_at=state["it"], bounds_from=len(state["history"]), factors=factors)
            if verbose and state["it"] % (10 * check_every) == 0:
                print(f"FISTA {state['it']}: objective {objective:.10g} relative gap {gap:.2e} L {L:.3g}")
            if callback is not None:
                V = X.detach().to("cpu", torch.float64).numpy()
                stop = bool(callback(state["it"], V[0], V[1]))
            if gap <= tol:
                status = "optimal"
        state.update(X=X, X_prev=X_prev, t=t, L=L, prev_obj=prev_obj)
        if checkpoint_every and state["it"] % checkpoint_every == 0:
            save()
        if status == "optimal" or stop:
            break
    if status != "optimal":
        save()
    if bar is not None:
        bar.close()
    label = dtype if state.get("finish_at") is None else f"{dtype}+{X.dtype}".replace("torch.", "")
    W_pos, W_neg, name = finished_groups(X, "FISTA", dev, label)
    return {
        "W_pos": W_pos,
        "W_neg": W_neg,
        "status": status,
        "solver": name,
        "n_iter": state["it"],
        "info": {
            "relative_gap": state["gap"],
            "lower_bound": _best_bound(state["history"][state.get("bounds_from", 0) :]),
            "history": state["history"],
            "lipschitz": L,
            "finish_at": state.get("finish_at"),
        },
    }


def _best_bound(history) -> float:
    """The largest lower bound over the checks ``(it, objective, lower)`` so far (-inf before any)."""
    return max((lower for _, _, lower in history), default=-math.inf)


def _precision_stalled(history, dtype, tol: float, patience: int = 10) -> bool:
    """Whether the gap in ``dtype`` has stalled above ``tol`` (time to finish in a higher precision).

    The dual point's error is about the square root of the objective's, which cannot go below ``eps``:
    a gap much below ``sqrt(eps)`` of ``dtype`` is out of reach. So, when ``tol < sqrt(eps)``: True once
    the relative gap is below ``10 sqrt(eps)``; and for any ``tol``: True when the best gap of the last
    ``patience`` checks is not half the best before them.
    """
    root_eps = math.sqrt(torch.finfo(dtype).eps)
    gaps, best = [], -math.inf
    for _, objective, lower in history:
        best = max(best, lower)
        gaps.append((objective - best) / max(abs(objective), 1e-300))
    if tol < root_eps and gaps and gaps[-1] <= 10 * root_eps:
        return True
    return len(gaps) > patience and min(gaps[-patience:]) > 0.5 * min(gaps[:-patience])


def _lipschitz_estimate(maps, shape, dtype, dev, n_power=20):
    """Power iteration for ||A||^2 of the data-fit map, times the loss curvature bound."""
    g = torch.Generator(device="cpu").manual_seed(0)
    X = torch.randn(shape, generator=g, dtype=dtype).to(dev)
    est = 1.0
    for _ in range(n_power):
        X = X / X.norm()
        X = maps.adjoint(maps.predict(X))
        est = float(X.norm())
    curvature = 0.25 if maps.loss.name == "logistic" else 1.0
    return max(est * curvature, 1e-12)


#: A CPU solve with fewer than this many ``n * P * k`` per operator application runs torch on one thread
#: (restored after): its tensors are too small to split, and an idle thread pool's spin-waiting, beside
#: another busy process, made a small solve 5x slower (docs/solvers.md, "Threads").
ONE_THREAD_MAX_WORK = 2_000_000


@functools.wraps(_solve_fista)
def solve_fista(problem, *, device: str = "cpu", **kwargs):
    small = torch.device(device).type == "cpu" and (
        problem.n_samples * problem.n_patterns * problem.dim < ONE_THREAD_MAX_WORK
    )
    if not small:
        return _solve_fista(problem, device=device, **kwargs)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _solve_fista(problem, device=device, **kwargs)
    finally:
        torch.set_num_threads(threads)
