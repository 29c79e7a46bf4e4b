"""Closed-form optimum in the overparameterized regime (docs/math.md sections 7 and 10).

When ``r + 1 = n`` the BN basis ``U'`` is an orthogonal n x n matrix: every nonnegative vector is the
output of one ReLU neuron, and for the squared loss the optimum soft-thresholds the positive and negative
parts of each target column:

    f* = (1 - beta/||y_+||)_+ y_+  -  (1 - beta/||y_-||)_+ y_-,

realised by at most two neurons per output, with group variables ``u = U'^T s`` for ``s`` each term.
"""

from __future__ import annotations

import numpy as np

from ..arrangements import Arrangements
from ..groups import predict_from_groups
from .base import Capabilities, SolverResult

__all__ = ["solve_closed_form", "closed_form_applies", "closed_form_objective", "CAPABILITIES"]

#: Squared loss, exact program; :func:`closed_form_applies` checks the regime itself (``r + 1 = n``).
CAPABILITIES = Capabilities("closed_form", losses=frozenset({"squared"}), formulations=frozenset({"exact"}))


def closed_form_applies(problem) -> tuple[bool, str]:
    """Whether the closed form solves ``problem``: ``(True, "")`` or ``(False, reason)``."""
    if problem.loss.name not in CAPABILITIES.losses:
        return False, f"the closed form needs the squared loss, not {problem.loss.name!r}"
    if problem.formulation not in CAPABILITIES.formulations:
        return False, "the closed form is for the exact program"
    if not np.allclose(problem.column_weights, 1.0):
        return False, (
            f"the closed form is for the plain BN basis; implicit_reg={str(problem.implicit_reg)!r} "
            "weights its columns (the penalty is then no longer ||U' u|| of the prediction)"
        )
    if problem.dim != problem.n_samples:
        return False, (
            "the closed form needs the overparameterized regime rank(P X) + 1 == n; got "
            f"rank + 1 = {problem.dim}, n = {problem.n_samples}"
        )
    return True, ""


def _soft_threshold(s: np.ndarray, beta: float) -> np.ndarray:
    norm = np.linalg.norm(s)
    return np.zeros_like(s) if norm <= beta else (1.0 - beta / norm) * s


def closed_form_objective(Y: np.ndarray, beta: float) -> float:
    """Optimal value (docs/math.md section 10): sum over columns and signs of
    ``||y_pm||^2 / 2`` if ``||y_pm|| <= beta`` else ``beta ||y_pm|| - beta^2 / 2``."""
    total = 0.0
    for part in (np.maximum(Y, 0.0), np.maximum(-Y, 0.0)):
        norms = np.linalg.norm(part, axis=0)
        total += float(np.where(norms <= beta, norms**2 / 2, beta * norms - beta**2 / 2).sum())
    return total


def solve_closed_form(problem) -> SolverResult:
    """Solve ``problem`` in closed form; raises ``ValueError`` if the regime does not apply."""
    ok, reason = closed_form_applies(problem)
    if not ok:
        raise ValueError(reason)
    Uprime, Y, beta = problem.Uprime, problem.Y, problem.beta
    n, C = Y.shape
    k = problem.dim
    patterns, generators = [], []
    W_pos, W_neg = np.zeros((C, 2 * C, k)), np.zeros((C, 2 * C, k))
    for c in range(C):
        for sign, W in ((1.0, W_pos), (-1.0, W_neg)):
            s = _soft_threshold(np.maximum(sign * Y[:, c], 0.0), beta)
            if np.any(s > 0):
                u = Uprime.T @ s  # U' u = s >= 0: one neuron whose output is s
                W[c, len(patterns)] = u
                generators.append(u)
                patterns.append(s > 0)
    P = len(patterns)
    W_pos, W_neg = W_pos[:, :P], W_neg[:, :P]
    arrangements = Arrangements(
        mask=np.array(patterns, dtype=bool).T.reshape(n, P),
        generators=np.array(generators).reshape(P, k),
        exact=False,
    )
    F = predict_from_groups(Uprime, arrangements.mask, W_pos - W_neg)
    return SolverResult(W_pos, W_neg, "optimal", "closed_form", n_iter=0, dual=Y - F,
                        arrangements=arrangements)  # fmt: skip
