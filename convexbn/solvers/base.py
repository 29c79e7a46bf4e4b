"""The solver contract: what a backend supports (as data), how ``"auto"`` chooses, what a backend returns.

Every backend of :mod:`convexbn.solvers` (and every method of the torch solver) declares its
:class:`Capabilities`; :func:`choose` picks, from candidates in order of preference, the first that supports
the problem and is within the limits its measurements set for ``"auto"``. Every backend returns a
:class:`SolverResult`, which :meth:`convexbn.problem.ConvexBNProblem.solve` turns into a solution. Each
backend's options are its own small settings object (:mod:`convexbn.solvers.torch.settings`,
:class:`convexbn.solvers.cvxpy_backend.CvxpySettings`). A bottom module: it imports nothing of the package.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

__all__ = ["Capabilities", "SolverResult", "choose", "FISTA_MAX_DIM", "ADMM_MAX_SAMPLES",
           "AUTO_CVXPY_MAX_ROWS_NONSMOOTH"]  # fmt: skip

# The measured limits of the choices of "auto" (docs/solvers.md, "Choosing a solver"):
#: FISTA with exact cone projections up to this basis dimension k = r + 1: each active-set step of the
#: projections solves a batch of (k x k) systems, and a cone face can have up to k - 1 active constraints,
#: so the cost grows like k^3 per group (measured: k = 21 fast, k = 785 impractical).
FISTA_MAX_DIM = 128
#: ADMM (an n x n Cholesky factor) up to this many samples, the augmented Lagrangian above.
ADMM_MAX_SAMPLES = 5000
#: Clarabel up to this many cone rows ``2 n P`` for what FISTA does not take (the hinge loss, wider inputs),
#: the torch solver's ADMM / AL above.
AUTO_CVXPY_MAX_ROWS_NONSMOOTH = 20_000


@dataclass(frozen=True)
class Capabilities:
    """What a backend (or a method of one) solves, and where ``"auto"`` takes it.

    Attributes
    ----------
    name : str
        The backend's (or method's) name.
    losses : frozenset of str or None
        Loss names it takes (None: every loss).
    smooth_only : bool
        Only losses with a Lipschitz gradient (:attr:`convexbn.losses.Loss.smooth`).
    formulations : frozenset of str
        ``"exact"`` (program (4), docs/math.md section 4) and/or ``"gated"`` (its relaxation).
    devices : frozenset of str
        ``"cpu"`` and/or ``"cuda"``.
    distributed : bool
        Runs on a row-sharded problem (:mod:`convexbn.distributed`).
    auto_max_dim : int or None
        ``"auto"`` takes it up to this basis dimension ``k = r + 1`` (None: any).
    auto_max_samples : int or None
        ``"auto"`` takes it up to this many samples (None: any).
    auto_max_rows : int or None
        ``"auto"`` takes it up to this many cone rows ``2 n P`` (None: any).
    """

    name: str
    losses: frozenset[str] | None = None
    smooth_only: bool = False
    formulations: frozenset[str] = frozenset({"exact", "gated"})
    devices: frozenset[str] = frozenset({"cpu"})
    distributed: bool = False
    auto_max_dim: int | None = None
    auto_max_samples: int | None = None
    auto_max_rows: int | None = None

    def supports(self, problem, device: str = "cpu") -> tuple[bool, str]:
        """``(True, "")`` when it can solve ``problem`` on ``device``, else ``(False, reason)``."""
        loss = problem.loss
        if self.losses is not None and loss.name not in self.losses:
            return False, f"{self.name} takes the losses {sorted(self.losses)}, not {loss.name!r}"
        if self.smooth_only and not loss.smooth:
            return False, f"{self.name} needs a smooth loss, not {loss.name!r}"
        if problem.formulation not in self.formulations:
            kinds = sorted(self.formulations)
            return False, f"{self.name} solves the {kinds} program, not {problem.formulation!r}"
        kind = str(device).split(":")[0]
        if kind not in self.devices:
            return False, f"{self.name} runs on {sorted(self.devices)}, not {kind!r}"
        if getattr(problem, "communicator", None) is not None and not self.distributed:
            return False, f"{self.name} does not run on a row-sharded (distributed) problem"
        return True, ""

    def within_auto_limits(self, problem) -> bool:
        """Whether ``problem`` is within the sizes ``"auto"`` takes this backend for."""
        rows = 2 * problem.n_samples * problem.n_patterns
        return not (
            (self.auto_max_dim is not None and problem.dim > self.auto_max_dim)
            or (self.auto_max_samples is not None and problem.n_samples > self.auto_max_samples)
            or (self.auto_max_rows is not None and rows > self.auto_max_rows)
        )


def choose(problem, candidates: Sequence[Capabilities], device: str = "cpu") -> Capabilities:
    """The first of ``candidates`` (in order of preference) that supports ``problem`` and is within its
    ``"auto"`` limits; else the last that supports it. ``ValueError`` when none does."""
    supported = [c for c in candidates if c.supports(problem, device)[0]]
    if not supported:
        reasons = "; ".join(c.supports(problem, device)[1] for c in candidates)
        raise ValueError(f"no solver takes this problem: {reasons}")
    return next((c for c in supported if c.within_auto_limits(problem)), supported[-1])


@dataclass
class SolverResult:
    """What a backend returns.

    Attributes
    ----------
    W_pos, W_neg : ndarray of shape (C, P, k)
        The groups ``u_i`` and ``u'_i`` (``W_neg`` zero for the gated relaxation).
    status : str
        ``"optimal"`` or ``"optimal_inaccurate"``.
    solver : str
        The backend that ran, e.g. ``"torch-fista:cpu:float64"`` or ``"cvxpy:CLARABEL"``.
    n_iter : int or None
        Iterations.
    dual : ndarray of shape (n, C) or None
        The dual vector ``lambda`` when the backend gives one (cvxpy).
    info : dict
        Backend-specific details (histories, gaps, penalties, warm-start state).
    arrangements : Arrangements or None
        The patterns solved over when the backend changed them (None: the problem's).

    Results written before this class (dicts with these keys) still read: :meth:`of` turns such a mapping
    into a result, and a result reads as one (``result["status"]``, ``{**result}``), so that a backend
    registered in ``SOLVERS`` may return either.
    """

    W_pos: np.ndarray
    W_neg: np.ndarray
    status: str
    solver: str
    n_iter: int | None = None
    dual: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    arrangements: Any = None

    def keys(self) -> list[str]:
        return [f.name for f in fields(self)]

    def __getitem__(self, key: str):
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    @classmethod
    def of(cls, raw) -> SolverResult:
        """``raw`` itself when it is a result, else the result with a mapping's keys (``W_pos``, ``W_neg``,
        ``status``, ``solver`` required; unknown keys go into ``info``)."""
        if isinstance(raw, cls):
            return raw
        raw = dict(raw)
        known = {f.name: raw.pop(f.name) for f in fields(cls) if f.name in raw}
        missing = [name for name in ("W_pos", "W_neg", "status", "solver") if name not in known]
        if missing:
            raise TypeError(f"a solver backend's result lacks {missing}")
        known["info"] = {**(known.get("info") or {}), **raw}
        return cls(**known)
