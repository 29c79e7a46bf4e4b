"""The torch solver (CPU or CUDA): three methods for program (4) (docs/math.md section 4) behind one entry.

- :mod:`~convexbn.solvers.torch.fista`: FISTA whose prox is the exact cone projection (every iterate
  feasible, stopped on a certified duality gap; smooth losses);
- :mod:`~convexbn.solvers.torch.admm`: ADMM with one ``n x n`` Cholesky factor (every loss through its prox);
- :mod:`~convexbn.solvers.torch.al`: the augmented Lagrangian around FISTA (matrix-free; the gated
  relaxation; the distributed solve).

Each method declares its :class:`~convexbn.solvers.base.Capabilities` (:data:`METHODS`, in the order
``method="auto"`` prefers them) and takes its own settings object (:mod:`~convexbn.solvers.torch.settings`);
all share the operators (:mod:`~convexbn.solvers.torch.operators`), the iteration bookkeeping
(:mod:`~convexbn.solvers.torch.loop`), the checkpoint format (:mod:`~convexbn.solvers.torch.checkpoint`)
and the cone projections (:mod:`~convexbn.solvers.torch.projection`).
"""

from __future__ import annotations

import numpy as np
import torch

from ..base import ADMM_MAX_SAMPLES, FISTA_MAX_DIM, Capabilities, SolverResult, choose
from .admm import solve_admm
from .al import TorchSolverState, solve_al
from .fista import solve_fista
from .settings import SETTINGS, all_settings
from .threads import ONE_THREAD_MAX_WORK, solve_threads, solve_work, threads_for

__all__ = ["solve_torch", "choose_method", "threads_for", "METHODS", "FISTA_MAX_DIM", "ADMM_MAX_SAMPLES",
           "ONE_THREAD_MAX_WORK", "TorchSolverState"]  # fmt: skip

_DEVICES = frozenset({"cpu", "cuda"})
#: The methods' capabilities, in the order ``method="auto"`` prefers them.
METHODS: dict[str, Capabilities] = {
    "fista": Capabilities("fista", smooth_only=True, formulations=frozenset({"exact"}), devices=_DEVICES,
                          auto_max_dim=FISTA_MAX_DIM),  # fmt: skip
    "admm": Capabilities("admm", formulations=frozenset({"exact"}), devices=_DEVICES,
                         auto_max_samples=ADMM_MAX_SAMPLES),  # fmt: skip
    "al": Capabilities("al", devices=_DEVICES, distributed=True),
}
_RUNNERS = {"fista": solve_fista, "admm": solve_admm, "al": solve_al}
def choose_method(problem, device: str = "cpu") -> str:
    """The method ``method="auto"`` runs on ``problem``: the first of :data:`METHODS` that supports it and
    is within its ``"auto"`` limits (FISTA for smooth losses up to :data:`FISTA_MAX_DIM`, then ADMM up to
    :data:`ADMM_MAX_SAMPLES`, then the AL)."""
    return choose(problem, list(METHODS.values()), device).name


def solve_torch(problem, *, method: str = "auto", warm_start=None, callback=None, **options) -> SolverResult:
    """Solve ``problem`` in torch: FISTA (gated); FISTA with the exact prox, ADMM or the augmented
    Lagrangian (exact).

    Parameters
    ----------
    problem : ConvexBNProblem
    method : {"auto", "fista", "admm", "al"}
        Exact program only (the gated relaxation always runs plain FISTA, in the AL module). ``"auto"``:
        :func:`choose_method`.
    warm_start : ConvexBNSolution, dict or tuple (W_pos, W_neg), optional
        Start from these variables (the AL skips its gated phase). A solution (or its dict ``{"W_pos",
        "W_neg", "info"}``) of a previous ADMM solve on the same patterns also restores ADMM's scaled
        duals and penalty (``info["admm_state"]``).
    callback : callable, optional
        ``callback(n_iter, W_pos, W_neg)`` with numpy copies of the current point (every 10 iterations;
        ADMM and FISTA: at every check); returning True stops the solve with status
        ``"optimal_inaccurate"``.
    **options
        The method's settings (:class:`~convexbn.solvers.torch.settings.FistaSettings`,
        :class:`~convexbn.solvers.torch.settings.ALSettings`,
        :class:`~convexbn.solvers.torch.settings.ADMMSettings`): ``device``, ``dtype``, ``max_iter``,
        ``tol``, ``checkpoint``, ``checkpoint_every``, ``resume``, ``progress``, ``verbose``, ``threads``
        for all;
        ``finish_dtype``, ``memory_limit``, ``projection``, ``check_every`` (FISTA); ``feas_tol``,
        ``max_outer``, ``rho``, ``rho_factor``, ``rho_growth``, ``inner_tol0``, ``rel_change``,
        ``hinge_mu_min``, ``certify``, ``gap_tol`` (AL); ``feas_tol``, ``rho``, ``relaxation``,
        ``adapt_rho``, ``check_every`` (ADMM). Every option is validated; one of another method than the
        one that runs is ignored.

    Returns
    -------
    SolverResult
    """
    if method not in ("auto", *SETTINGS):
        raise ValueError(f"unknown torch method {method!r}; expected 'auto', 'fista', 'admm' or 'al'")
    made = all_settings(options)  # every option validated by its method, whichever method runs
    settings = made["al"]  # device and dtype, the same in every method's settings
    if settings.dtype == torch.float32 and problem.Y.size and float(np.abs(problem.Y).max()) > 1e15:
        raise ValueError(
            f"targets up to {float(np.abs(problem.Y).max()):.3g} overflow float32 arithmetic (their squares "
            "exceed its range); use dtype=float64 or rescale the targets"
        )
    if method == "auto":
        if problem.formulation == "gated":
            method = "al"
        else:
            method = choose_method(problem, settings.device)
    distributed = getattr(problem, "communicator", None) is not None
    if distributed and not METHODS[method].distributed:
        raise ValueError(
            f"a distributed (row-sharded) solve runs method='al' only (its steps are all-reduce friendly); "
            f"got method={method!r}"
        )
    if problem.formulation == "gated":
        method = "al"  # the gated relaxation: plain FISTA
    settings = made[method]
    with solve_threads(solve_work(problem), settings.threads, settings.device):
        return _RUNNERS[method](problem, settings, warm_start, callback)
