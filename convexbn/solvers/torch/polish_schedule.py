"""When FISTA polishes its iterate (:mod:`convexbn.solvers.torch.polish`) and which polished points it keeps.

The polish is an accelerator: FISTA's certificate is unchanged, and a polish that fails costs its Newton
steps. So FISTA polishes at a gap check only when the iterate's support has settled (the number of
nonzero groups within :data:`POLISH_COUNT_TOL` of the last check's, and optionally few faces still
changing: :data:`POLISH_MAX_CHURN`), for at most :data:`POLISH_MAX_NEWTON` Newton steps, and after a
polish that does not certify it waits 5, 10, 20, ... checks. It keeps a polished point only when the
point is in the cones and worth FISTA's momentum (docs/solvers.md, "Weak regularization").
"""

from __future__ import annotations

import math
import time

import torch

from .polish import polish_support
from .restricted import cone_values, polish_size

__all__ = ["POLISH_MAX_CHURN", "POLISH_COUNT_TOL", "POLISH_MAX_NEWTON", "polish_due", "try_polish",
           "in_cones"]  # fmt: skip

#: The largest fraction of the nonzero groups whose faces changed since the last check at which FISTA
#: polishes: 1.0, no limit (our choice; 0.35 polished later and, with the cheaper Newton steps, was
#: slower at summed beta 0.03-1 on ``bench_torch_vs_cvxpy``'s problem: docs/solvers.md, "When to polish").
POLISH_MAX_CHURN = 1.0

#: The largest relative change of the number of nonzero groups since the last check at which FISTA
#: polishes (our choice, measured with ``benchmarks/bench_polish_schedule.py``; docs/solvers.md).
POLISH_COUNT_TOL = 0.02

#: The Newton steps a polish may take (our choice, measured the same way).
POLISH_MAX_NEWTON = 200


def polish_due(settings, state, X, faces, n_samples: int) -> bool:
    """Whether to polish at this check: float64 iterates, the support's size within
    :data:`POLISH_COUNT_TOL` of the last check's and at most :data:`POLISH_MAX_CHURN` of its groups' faces
    changed since then, the restricted
    problem small enough (at most ``polish_max_vars`` variables, and its ``n x M`` Jacobian with its
    temporaries, about four of them, within ``memory_limit``), and the wait since the last polish over (it
    doubles after each polish that does not certify)."""
    k = X.shape[-1]
    nonzero = X.reshape(-1, k).norm(dim=1) > 0
    count = int(nonzero.sum())
    previous_count, state["support_count"] = state.get("support_count"), count
    stable = previous_count is not None and abs(count - previous_count) <= POLISH_COUNT_TOL * count
    # and few faces still changing: a polish from faces far from their final rows costs many steps
    seen = torch.sort(faces, dim=1).values
    previous, state["faces_seen"] = state.get("faces_seen"), seen
    if previous is None or previous.shape != seen.shape:
        churn = count
    else:
        churn = int(((seen != previous).any(1) & nonzero).sum())
    stable = stable and churn <= POLISH_MAX_CHURN * count
    if not (settings.polish and X.dtype == torch.float64 and stable and count > 0
            and state["it"] >= state.get("polish_next", 0)):  # fmt: skip
        return False
    size = polish_size(X, faces)
    itemsize = torch.finfo(X.dtype).bits // 8
    fits = settings.memory_limit is None or 4 * n_samples * size * itemsize <= settings.memory_limit
    return size <= settings.polish_max_vars and fits


def try_polish(maps, X, faces, objective, gap, state, settings, gap_at):
    """Polish ``X`` (:func:`~convexbn.solvers.torch.polish.polish_support`) and check the gap there with
    ``gap_at(X, faces) -> (objective, lower bound)`` (FISTA's
    :func:`~convexbn.solvers.torch.fista.duality_gap`).

    Returns ``(X, faces, objective)`` of the polished point when it is in the cones, its objective is lower
    than the iterate's, and either its own relative gap is lower too or it lowers the objective more than
    FISTA's last five checks did (a barely better point is not worth FISTA's momentum); else None. The
    polished point's bound goes into ``state["history"]`` either way. Schedules the next polish: two checks
    on when the polish at least halved the relative gap (FISTA goes on from a point near the optimum,
    whose faces settle fast), else after a wait that doubles each time (from five checks)."""
    start = time.perf_counter()
    result = polish_support(maps, X, faces, maps.beta, max_newton=POLISH_MAX_NEWTON,
                            max_vars=settings.polish_max_vars)  # fmt: skip
    state["polished"] = state.get("polished", 0) + 1
    state["newton_steps"] = state.get("newton_steps", 0) + result.newton_steps
    state["polish_s"] = state.get("polish_s", 0.0) + time.perf_counter() - start
    wait = state.get("polish_wait", 5 * settings.check_every)
    state["polish_next"], state["polish_wait"] = state["it"] + wait, 2 * wait
    if not result.objective < objective or not in_cones(maps, result.X):
        return None
    new_objective, lower = gap_at(result.X, result.faces)
    own_gap = (objective - state["history"][-1][2]) / max(abs(objective), 1e-300)  # this check's own
    state["history"].append((state["it"], new_objective, lower))  # a valid bound either way
    new_gap = (new_objective - lower) / max(abs(new_objective), 1e-300)
    # worth FISTA's momentum: a better own gap, or more decrease than FISTA's last five checks made
    recent = [value for _, value, _ in state["history"][-7:-1]]
    progress = recent[0] - recent[-1] if len(recent) == 6 else math.inf
    if not (new_gap < own_gap or objective - new_objective > progress):
        return None
    if new_gap <= 0.5 * gap:
        state["polish_next"] = state["it"] + 2 * settings.check_every
    return result.X, result.faces, new_objective


def in_cones(maps, X, rel_tol: float = 1e-10) -> bool:
    """Whether every group of X (2, C, P, k) satisfies its cone's rows to ``rel_tol`` of
    ``||U'_i|| ||u_g||``."""
    flat = X.reshape(-1, X.shape[-1])
    rows = torch.where(flat.norm(dim=1) > 0)[0]
    if rows.numel() == 0:
        return True
    values = cone_values(maps, rows % maps.n_patterns, flat[rows])  # (s, n)
    scale = flat[rows].norm(dim=1)[:, None] * maps.Up.norm(dim=1)[None, :]
    return bool((values >= -rel_tol * scale).all())

