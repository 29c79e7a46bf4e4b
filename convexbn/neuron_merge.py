"""Merging near-copies of a neuron in a shared-neuron solution (docs/solvers.md, "The shared-neuron search").

Both searches of program (8a) (:mod:`convexbn.unit_neurons`, :mod:`convexbn.neuron_search`) solve group
lassos over neurons that are not strictly convex where two neurons nearly coincide, and their oracles start
from the live neurons: left alone, they spread a neuron's weight over many near-copies. A neuron is a unit
direction ``z`` (its pattern ``1[U' z >= 0]``) with an output row ``v``; an atom of (8a) with the group
``u`` is the neuron ``z = u / ||u||``, ``v = ||u|| c``.
"""

from __future__ import annotations

import numpy as np

from .shared_problem import SharedAtoms

__all__ = ["merge_duplicate_neurons", "neurons_of_atoms", "atoms_of_neurons", "MERGE_MIN_COS"]

#: Neurons whose directions and output directions have at least this cosine are tried as one neuron by both
#: searches (:func:`merge_duplicate_neurons`; our choice: a cold fit at the second point of the
#: breast cancer path had 452 pairs of neurons above 0.999 and one above 0.99999, and a merge that raises
#: the objective is not kept anyway).
MERGE_MIN_COS = 0.999


def merge_duplicate_neurons(
    Uprime: np.ndarray, Y: np.ndarray, Z: np.ndarray, V: np.ndarray, beta: float, loss, *,
    min_cos: float = MERGE_MIN_COS,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Merge near-copies of a neuron (directions and output directions within ``min_cos``) where that does
    not raise the objective of (8a).

    Neurons ``z_j`` with output rows ``v_j`` (norms ``s_j``, ``S = sum_j s_j``) are replaced by the single
    neuron ``z = w / ||w||``, ``v = (||w|| / S) sum_j v_j``, ``w = sum_j s_j z_j``. Where they share one
    output direction ``c`` (``v_j = s_j c``) this is ``v = ||w|| c``: its penalty ``beta ||w||`` is at most
    theirs, ``beta S``, and where they also share their pattern ``1[U' z_j >= 0]`` it predicts the same on
    the training rows (``w`` is in that pattern's cone, a convex cone), so the objective cannot rise.
    Near-copies whose patterns differ on a few rows (the rows their hyperplanes pass through, at the
    optimum), or whose output directions differ a little, predict differently, so each merge is kept only
    when the objective does not rise. Neurons whose output directions differ more are not tried: the oracle
    starts from the live neurons, so its new neurons are often near-copies with other output rows, and
    merging those back stalled a search of three outputs above the optimum (``tests/test_unit_neurons.py``).
    The output lasso over near-copies is not strictly convex and spreads its weight over them: a path point
    of breast cancer had 86 live neurons on a few clusters of patterns one or two rows apart
    (docs/solvers.md, "The shared-neuron search").

    Parameters
    ----------
    Uprime : ndarray of shape (n, k)
    Y : ndarray of shape (n, C)
        Encoded targets.
    Z : ndarray of shape (m, k)
        Unit neurons.
    V : ndarray of shape (m, C)
        Their output rows; rows of zeros are dropped.
    beta : float
    loss : Loss
    min_cos : float
        Neurons whose directions and output directions have at least this cosine with a cluster's largest
        neuron's join its cluster; the whole cluster is tried first, then each neuron of it with the largest
        alone.

    Returns
    -------
    Z, V : ndarrays of shapes (m', k) and (m', C), m' <= m: the objective at them is at most the objective
        at ``(Z, V)`` (to ``1e-12`` relative: rounding).
    """
    s = np.linalg.norm(V, axis=1)
    live = s > 0
    Z, V, s = Z[live].copy(), V[live].copy(), s[live]
    if len(Z) < 2:
        return Z, V
    A = np.maximum(Uprime @ Z.T, 0.0)  # (n, m)
    F = A @ V
    penalty = float(s.sum())
    current = loss.value(F, Y) + beta * penalty
    keep = np.ones(len(Z), dtype=bool)
    cosines = Z @ Z.T
    directions = V / s[:, None]
    for j in np.argsort(-s):
        if not keep[j]:
            continue
        close = keep & (cosines[j] >= min_cos) & (directions @ directions[j] >= min_cos)
        close[j] = False
        candidates = np.flatnonzero(close)
        for members in (candidates, *candidates[:, None]):
            if members.size == 0 or not keep[members].all():
                continue
            group = np.concatenate([[j], members])
            w = (s[group, None] * Z[group]).sum(0)
            norm = float(np.linalg.norm(w))
            v = V[group].sum(0) * (norm / float(s[group].sum()))
            a = np.maximum(Uprime @ (w / norm), 0.0)
            trial_F = F - A[:, group] @ V[group] + np.outer(a, v)
            trial_penalty = penalty - float(s[group].sum()) + float(np.linalg.norm(v))
            trial = loss.value(trial_F, Y) + beta * trial_penalty
            if trial <= current + 1e-12 * abs(current):
                Z[j], V[j], s[j], A[:, j] = w / norm, v, np.linalg.norm(v), a
                keep[members] = False
                F, penalty, current = trial_F, trial_penalty, trial
                cosines[j] = cosines[:, j] = Z @ Z[j]
                directions[j] = v / s[j]
                break
    keep &= s > 0  # (output rows that cancelled)
    return Z[keep], V[keep]


def neurons_of_atoms(atoms: SharedAtoms, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The live atoms' neurons: ``z = u / ||u||`` (m, k) and ``v = ||u|| c`` (m, C) of each nonzero group."""
    t = np.linalg.norm(W, axis=1)
    live = t > 0
    return W[live] / t[live, None], atoms.directions[live] * t[live, None]


def atoms_of_neurons(Uprime: np.ndarray, Z: np.ndarray, V: np.ndarray) -> tuple[SharedAtoms, np.ndarray]:
    """The atoms ``(1[U' z >= 0], v / ||v||)`` and groups ``||v|| z`` of the neurons with ``v != 0``."""
    s = np.linalg.norm(V, axis=1)
    live = s > 0
    Z, V, s = Z[live], V[live], s[live]
    return SharedAtoms(Uprime @ Z.T >= 0, V / s[:, None]), Z * s[:, None]
