"""Group-lasso helpers shared by the program, its solvers and the recovery (a bottom module: it imports
nothing from convexbn). Groups are stored as ``W`` of shape (C, P, k): one ``u_i`` per output and pattern,
docs/math.md section 3.
"""

from __future__ import annotations

import numpy as np

__all__ = ["cone_violation", "group_norms", "predict_from_groups"]


def predict_from_groups(Uprime: np.ndarray, mask: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Outputs ``F[:, c] = sum_i D_i U' W[c, i]`` of shape (n, C) for ``W`` of shape (C, P, k)."""
    F = np.zeros((Uprime.shape[0], W.shape[0]), dtype=np.result_type(Uprime, W))
    for c in range(W.shape[0]):
        used = np.flatnonzero(np.any(W[c] != 0, axis=1))  # zero groups add nothing: skip their products
        if used.size:
            F[:, c] = np.sum(mask[:, used] * (Uprime @ W[c, used].T), axis=1)
    return F


def group_norms(W: np.ndarray) -> np.ndarray:
    """Euclidean norms of the groups, shape (C, P)."""
    return np.linalg.norm(W, axis=-1)


def cone_violation(Uprime: np.ndarray, mask: np.ndarray, W: np.ndarray) -> float:
    """Largest violation of ``(2 D_i - I) U' w_i >= 0`` over all groups, relative to ``max ||w_i||``.

    Returns 0 for a feasible point (and for an all-zero ``W``).
    """
    scale = group_norms(W).max(initial=0.0)
    if scale == 0:
        return 0.0
    worst = 0.0
    for c in range(W.shape[0]):
        used = np.flatnonzero(np.any(W[c] != 0, axis=1))  # a zero group satisfies its cone
        if used.size:
            pre = Uprime @ W[c, used].T  # (n, used)
            worst = max(worst, float(np.max(np.where(mask[:, used], -pre, pre))))
    return max(worst, 0.0) / scale
