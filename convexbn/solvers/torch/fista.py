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
(:func:`convexbn.solvers.torch.projection.project_cones`), warm-started from the previous iteration's
active sets and cut short for groups the threshold zeroes anyway.

Method: FISTA (Beck & Teboulle, 2009) with backtracking on the local Lipschitz estimate (doubled on a
failed sufficient-decrease test, shrunk by 0.9 after each step) and function-value adaptive restart
(O'Donoghue & Candes, 2015), as in Mishkin, Sahiner & Pilanci (2022) for the gated problem.

Stopping: a certified duality gap. With ``R = grad L(F)`` at the current prediction, every group's dual
value ``||Pi_{K_g}(-grad_g f)||`` (the same projections) gives the dual-feasible point ``s R``, ``s =
min(1, beta / max_g ||Pi_{K_g}(-grad_g f)||)`` and the lower bound ``-L*(s R)`` on the program's optimum
(weak duality; docs/math.md section 6 and :mod:`convexbn.certificate`); the best bound of all checks is kept
(each is valid). The solve stops when
``(objective - bound) <= tol * |objective|``; the final gap is reported in ``info``.

Newton polish (``polish=True``, the default): at checks where the support has settled, the program
restricted to the iterate's support and faces is solved by Newton's method
(:mod:`convexbn.solvers.torch.polish`; when, and what FISTA keeps:
:mod:`convexbn.solvers.torch.polish_schedule`); the polished point's gap is one more check, and FISTA goes
on from it when it is better.

Mixed precision: a float32 gap stalls near ``sqrt(eps_float32)`` (the dual point's error is about the
square root of the objective's), so by default a float32 solve whose gap stalls above ``tol`` goes on in
float64 from where it is (``finish_dtype``); only the float64 checks' bounds certify the result.

Smooth losses only (squared, logistic, cross-entropy); the hinge loss goes to ADMM. Memory: the basis
``n k``, the mask and its signs ``2 n P``, the torch projections' kept factors ``2 (2 C P) k^2`` (normals
and inverse Gram matrices, kept only while they fit in 512 MiB; past that every projection refactors its
active set), and temporaries bounded by ``memory_limit``: the products run over blocks of samples (about
three ``(C, block, P)`` temporaries) and the torch projections over blocks of groups (about five ``(block,
n)`` temporaries for their violation checks), sized to fit (:class:`ExactMaps`). The numba projections
(the CPU default when numba is installed) keep instead two copies of the basis and, while they fit in 512
MiB, ``2 C P (n + k^2 + 2 k)`` float64 (:class:`~convexbn.solvers.torch.projection.ProjectionMemory`); their
temporaries are ``O(n)`` per thread.
"""

from __future__ import annotations

import math
import os

import torch

from ...exceptions import CheckpointError, SolverError
from ..base import SolverResult
from .checkpoint import StateSpec
from .common import finished_groups, warm_start_arrays
from .loop import IterationLoop
from .numba_projection import kernel_load_seconds
from .operators import GroupOperators
from .polish_schedule import polish_due, try_polish
from .projection import (
    ConeProjection,
    NumbaBasis,
    ProjectionMemory,
    _gather_normals,
    _padded_gram_inverse,
    project_cones,
    resolve_projection_backend,
)
from .settings import FistaSettings

__all__ = ["solve_fista", "ExactMaps"]


class ExactMaps(GroupOperators):
    """:class:`~convexbn.solvers.torch.operators.GroupOperators` with the cone projections of the prox.

    The products run over blocks of ``sample_block`` samples and the torch projections over blocks of
    ``group_block`` groups (about five ``(block, n)`` temporaries), both sized so that those temporaries
    stay within ``memory_limit`` bytes (None: one block each). With the numba projection (``projection``,
    see :func:`project_cones`) the groups go in one call (its temporaries are ``O(n)`` per thread); the
    kernel's layout of the basis (:class:`NumbaBasis`) and its memory of the groups' last prox
    (:class:`ProjectionMemory`, while it fits in 512 MiB) are kept here.
    """

    def __init__(self, problem, device, dtype, memory_limit: int | None = None, projection: str = "auto"):
        super().__init__(problem, device, dtype, memory_limit)
        self.projection = resolve_projection_backend(projection, device)
        self.numba_basis = NumbaBasis.of(self.Up) if self.projection == "numba" else None
        # what the numba kernel keeps of each group's last prox, while it fits in 512 MiB
        n_groups = 2 * problem.n_outputs * problem.n_patterns
        fits = n_groups * ProjectionMemory.bytes_per_group(*self.Up.shape) <= 512 * 2**20
        self.kept = (ProjectionMemory.empty(n_groups, *self.Up.shape)
                     if self.projection == "numba" and fits else None)  # fmt: skip
        # the cone of group g = (sign, output, pattern) depends on its pattern g % P only
        self.pattern_signs = self.signs.T.contiguous()  # (P, n)
        self.pattern_mask = self.mask.T.contiguous()  # (P, n)
        self.n_patterns = problem.n_patterns
        itemsize = torch.finfo(dtype).bits // 8
        per_group = 5 * (self.n + 1) * itemsize
        blocked = n_groups if memory_limit is None else memory_limit // per_group
        self.group_block = int(min(n_groups, max(1, blocked)))

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


def dual_bound(maps, R, beta, faces=None, factors=None) -> float:
    """The lower bound ``-L*(s R)`` on program (4) from the loss gradient ``R`` (n, C) scaled into dual
    feasibility, ``s = min(1, beta / max_g ||Pi_{K_g}(-grad_g f)||)`` (module docstring)."""
    G = maps.adjoint(R)
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
    return float(-maps.loss.conjugate(scale * Rn, maps.Y.to("cpu", torch.float64).numpy()))


def duality_gap(maps, X, beta, faces=None, factors=None, F=None):
    """``(objective, lower bound)`` of program (4) at the feasible point X (see the module docstring);
    ``F``: the predictions at X when known."""
    value, _, R = maps.value_grad(X, F)
    objective = value + beta * float(X.norm(dim=-1).sum())
    return objective, dual_bound(maps, R, beta, faces, factors)


def _solve_fista(problem, settings: FistaSettings, warm_start=None, callback=None) -> SolverResult:
    """FISTA with the exact prox on program (4) (module docstring).

    ``settings.tol`` is the relative duality gap to stop at, checked every ``settings.check_every``
    iterations (where ``callback(n_iter, W_pos, W_neg)`` is called too; True stops).

    ``finish_dtype`` (mixed precision): when the gap in ``dtype`` stalls above ``tol`` (see
    :func:`_precision_stalled`), the iterations go on in this dtype from the current point. ``"auto"``:
    float64 after float32, nothing after float64; None: never. A float32 gap usually stalls near
    ``sqrt(eps_float32)`` (the dual point's error is about the square root of the objective's), so
    without a float64 finish a float32 solve asked for ``tol = 1e-6`` usually runs to ``max_iter`` (a
    single check can be lucky and certify).

    ``memory_limit`` (bytes, None: no limit): the products and the projections run in blocks of samples
    and of groups whose temporaries fit in it (:class:`ExactMaps`).

    ``projection``: the cone projections' implementation, ``"auto"`` (numba on the CPU when installed,
    else torch), ``"torch"`` or ``"numba"`` (:func:`convexbn.solvers.torch.projection.project_cones`).
    """
    dtype, max_iter, tol, check_every = settings.dtype, settings.max_iter, settings.tol, settings.check_every
    memory_limit, projection, verbose = settings.memory_limit, settings.projection, settings.verbose
    finish_dtype = settings.finish_dtype
    dev = torch.device(settings.device)
    loaded_before = kernel_load_seconds()
    if finish_dtype == "auto":
        finish_dtype = torch.float64
    elif isinstance(finish_dtype, str):
        finish_dtype = getattr(torch, finish_dtype, finish_dtype)
    if finish_dtype not in (None, torch.float64):
        raise ValueError(f"finish_dtype must be 'auto', None or float64, got {finish_dtype!r}")
    if finish_dtype == dtype:
        finish_dtype = None
    maps = ExactMaps(problem, dev, dtype, memory_limit, projection)
    C, P, k = problem.n_outputs, problem.n_patterns, problem.dim
    beta = float(problem.beta)
    shape = (2, C, P, k)

    loop = IterationLoop(problem, settings, "fista", callback)
    spec = StateSpec(
        tensors={"X": (shape, "float"), "X_prev": (shape, "float"), "faces": ((2 * C * P, k), "index")},
        index_ranges={"faces": (-1, problem.n_samples)},  # -1: no active constraint; else a sample index
        counters=("it", "bounds_from"),
        positive=("t", "L"),
    )
    state = loop.resume(dev, spec)
    if state is not None and state.get("finish_at") is not None and not isinstance(state["finish_at"], int):
        raise CheckpointError(
            f"checkpoint {os.fspath(settings.checkpoint)!r}: finish_at is {state['finish_at']!r}"
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
        # backtracking raises it where needed; a warm start's own final estimate (the same data) skips the
        # power iterations
        L = _warm_lipschitz(warm_start) or maps.lipschitz_estimate(2) / 4
        state = {"X": X, "X_prev": X.clone(), "t": 1.0, "L": L, "it": 0, "faces": faces,
                 "factors": factors, "prev_obj": math.inf, "history": [], "gap": math.inf,
                 "finish_at": None, "bounds_from": 0}  # fmt: skip
    if state.get("finish_at") is not None:  # resumed after the switch to finish_dtype
        maps = ExactMaps(problem, dev, state["X"].dtype, memory_limit, projection)

    loop.start(state["it"])

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
        stop = False
        if state["it"] % check_every == 0:
            objective, lower = duality_gap(maps, X, beta, faces, factors, F)
            state["history"].append((state["it"], objective, lower))
            # every check's dual point bounds the optimum (after a switch of dtype: the finish's checks)
            best = _best_bound(state["history"][state.get("bounds_from", 0) :])
            gap = (objective - best) / max(abs(objective), 1e-300)
            state["gap"] = gap
            if gap > tol and polish_due(settings, state, X, faces, maps.n):
                polished = try_polish(maps, X, faces, objective, gap, state, settings,
                                      lambda Xp, fp, maps=maps: duality_gap(maps, Xp, beta, fp))  # fmt: skip
                if polished is not None:  # FISTA goes on from there, momentum restarted
                    X, faces, objective = polished
                    X_prev, F = X.clone(), maps.predict(X)
                    F_prev, t, prev_obj = F.clone(), 1.0, objective
                    factors = None if factors is None else _factors_of(maps, faces)
                    state.update(faces=faces, factors=factors)
                    best = _best_bound(state["history"][state.get("bounds_from", 0) :])
                    gap = (objective - best) / max(abs(objective), 1e-300)
                    state["gap"] = gap
            if (gap > tol and finish_dtype is not None and state.get("finish_at") is None
                    and _precision_stalled(state["history"], X.dtype, tol)):  # fmt: skip
                # go on in finish_dtype from here (momentum kept); the kept factors are rebuilt
                # from the full-precision rows of U' (cast ones would hold float32-rounded normals)
                maps = ExactMaps(problem, dev, finish_dtype, memory_limit, projection)
                X, X_prev = X.to(finish_dtype), X_prev.to(finish_dtype)
                F, F_prev = maps.predict(X), maps.predict(X_prev)
                factors = None if factors is None else _factors_of(maps, faces)
                slack = 10 * torch.finfo(finish_dtype).eps
                state.update(finish_at=state["it"], bounds_from=len(state["history"]), factors=factors)
            if verbose and state["it"] % (10 * check_every) == 0:
                print(f"FISTA {state['it']}: objective {objective:.10g} relative gap {gap:.2e} L {L:.3g}")
            stop = loop.report(state["it"], X)
            if gap <= tol:
                status = "optimal"
        state.update(X=X, X_prev=X_prev, t=t, L=L, prev_obj=prev_obj)
        loop.tick(state["it"], lambda: state)
        if status == "optimal" or stop:
            break
    if status != "optimal":
        loop.save(state)
    loop.close()
    label = dtype if state.get("finish_at") is None else f"{dtype}+{X.dtype}".replace("torch.", "")
    W_pos, W_neg, name = finished_groups(X, "FISTA", dev, label)
    # the numba kernels' first calls in this process (compiling them, or loading them from numba's cache)
    kernel_load = kernel_load_seconds() - loaded_before
    if verbose and kernel_load > 1.0:
        print(f"convexbn: the cone-projection kernels took {kernel_load:.1f} s to compile or load (once per "
              "process; numba caches the compiled code on disk)")  # fmt: skip
    info = {
        "kernel_load_s": kernel_load,
        "relative_gap": state["gap"],
        "lower_bound": _best_bound(state["history"][state.get("bounds_from", 0) :]),
        "history": state["history"],
        "lipschitz": L,
        "finish_at": state.get("finish_at"),
        "polished": state.get("polished", 0),
        "newton_steps": state.get("newton_steps", 0),
        "polish_s": state.get("polish_s", 0.0),  # the polishes' seconds (their gap checks apart)
    }
    return SolverResult(W_pos, W_neg, status, name, n_iter=state["it"], info=info)


def _factors_of(maps, faces):
    """The torch projections' warm-start factors (normals, padded inverse Gram matrices) for ``faces``,
    from ``maps``'s rows of U' (in its dtype)."""
    patterns = torch.arange(len(faces), device=faces.device) % maps.n_patterns
    normals = _gather_normals(maps.Up, maps.pattern_signs, patterns, faces)
    return normals, _padded_gram_inverse(normals, faces >= 0)


def _warm_lipschitz(warm_start) -> float | None:
    """The final Lipschitz estimate FISTA reported for ``warm_start`` (a FISTA solution's
    ``info["lipschitz"]``), or None. (The AL reports its inner problem's, which includes ``rho``.)"""
    if "fista" not in str(getattr(warm_start, "solver", "")).lower():
        return None
    value = (getattr(warm_start, "info", None) or {}).get("lipschitz")
    return float(value) if value is not None and math.isfinite(value) and value > 0 else None


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


def solve_fista(problem, settings: FistaSettings, warm_start=None, callback=None) -> SolverResult:
    """FISTA with the exact cone prox on program (4): see :func:`_solve_fista`."""
    if not problem.loss.smooth:
        raise ValueError(f"method='fista' needs a smooth loss; use method='admm' for {problem.loss.name!r}")
    return _solve_fista(problem, settings, warm_start, callback)
