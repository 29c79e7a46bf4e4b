"""Recovering the nonconvex BN network from a solution of the convex program (docs/math.md section 5)."""

from __future__ import annotations

import numpy as np

from .network import BNNetwork
from .problem import ConvexBNSolution, group_norms

__all__ = ["recover_network", "recover_shared_network", "network_from_neurons"]


def recover_network(solution: ConvexBNSolution) -> BNNetwork:
    """Map each nonzero group of the convex solution to one BN neuron (docs/math.md section 5).

    For a group ``u`` of output ``c`` with ``t = ||u|| > 0``: ``z = u / sqrt(t)``, ``v = +-sqrt(t) e_c``
    (plus for ``u_i``, minus for ``u'_i``); ``gamma = ||z[:r]||``, ``alpha = z[r]``,
    ``w = V S^{-1} z[:r] / gamma``. A neuron with ``gamma = 0`` is the constant ``alpha / sqrt(n)``;
    its ``w`` is the top principal direction (any ``w`` with ``P X w != 0`` serves).
    The neuron's penalty ``(gamma^2 + alpha^2 + ||v||^2) / 2`` equals ``||u||``, so objective (3) of the
    network equals the convex objective (4) whenever the cone constraints hold.

    With a spectral filter (``implicit_reg``, docs/math.md section 9) the program's data matrix is
    ``U'_F = U' diag(c)``, ``c = [F(S), 1]``: the group's neuron is the BN neuron with
    ``[gamma q; alpha] = c * z``, whose output on the training data is the group's, and whose weights map
    back through the same ``F``. Its plain penalty is then at most ``||u||``; the filtered penalty
    (:func:`convexbn.implicit_reg.implicit_objective`) equals it.

    Groups are taken as the solver left them after pruning (see ``prune_tol`` in
    :meth:`ConvexBNProblem.solve`): exact zeros are skipped.

    Raises
    ------
    ValueError
        For a solution of the gated relaxation, which is not a BN network.
    """
    if not isinstance(solution, ConvexBNSolution):
        raise TypeError(f"expected a ConvexBNSolution, got {type(solution).__name__}")
    if solution.formulation != "exact":
        raise ValueError(
            "a solution of the gated relaxation is not a BN network and cannot be recovered as one; "
            "solve the exact program (formulation='exact'), e.g. warm-started from this solution"
        )
    problem = solution.problem
    basis = problem.basis
    r, C = basis.rank, problem.n_outputs
    Z, V = [], []
    for W, sign in ((solution.W_pos, 1.0), (solution.W_neg, -1.0)):
        norms = group_norms(W)
        for c, i in zip(*np.nonzero(norms > 0), strict=True):
            t = norms[c, i]
            Z.append(W[c, i] / np.sqrt(t))
            v = np.zeros(C)
            v[c] = sign * np.sqrt(t)
            V.append(v)
    m = len(Z)
    return network_from_neurons(
        basis, np.array(Z).reshape(m, r + 1) * problem.column_weights, np.array(V).reshape(m, C),
        beta=problem.beta, loss=problem.loss.name,
    )  # fmt: skip


def network_from_neurons(basis, Z: np.ndarray, V: np.ndarray, *, beta: float, loss: str) -> BNNetwork:
    """The BN network of neurons ``z_j = [gamma_j q_j; alpha_j]`` (rows of ``Z``, (m, r + 1)) with output
    weights ``V`` (m, C) in the BN basis of the training data (docs/math.md sections 2 and 5)."""
    r = basis.rank
    m, C = Z.shape[0], V.shape[1]
    output = np.asarray(V, dtype=np.float64).reshape(m, C)
    gamma = np.linalg.norm(Z[:, :r], axis=1)
    alpha = Z[:, r].copy()
    Q = np.zeros((r, m))
    Q[0] = 1.0  # direction for gamma == 0 neurons
    live = gamma > 0
    Q[:, live] = (Z[live, :r] / gamma[live, None]).T
    weights = basis.directions_to_weights(Q)  # (d, m), ||P X w_j|| = 1
    running_norm = np.linalg.norm(Q, axis=0)  # ||P X w_j|| = ||U q_j|| = ||q_j|| = 1
    return BNNetwork(
        weights=weights,
        gamma=gamma,
        alpha=alpha,
        output=output,
        running_mean=basis.mean @ weights,
        running_norm=running_norm,
        n_train=basis.n_samples,
        beta=float(beta),
        loss=loss,
    )


def recover_shared_network(solution) -> BNNetwork:
    """The shared-neuron network of a solution of program (8a) (docs/math.md section 8).

    Atom ``i`` with group ``u_i`` (``t = ||u_i|| > 0``) and output direction ``c_i`` is the neuron
    ``z = u_i / sqrt(t)``, ``v = sqrt(t) c_i``: its hidden output on the training data is
    ``(U' z)_+ = D_i U' z`` (``u_i`` lies in its pattern's cone), it adds ``sqrt(t) D_i U' u_i/sqrt(t)
    c_i^T = D_i U' u_i c_i^T`` to the predictions, and its weight decay ``(||z||^2 + ||v||^2)/2 = t``
    equals the group's penalty: objective (3) of the network equals the objective (8a).
    """
    problem = solution.problem
    norms = np.linalg.norm(solution.W, axis=1)
    live = np.flatnonzero(norms > 0)
    t = norms[live]
    Z = solution.W[live] / np.sqrt(t)[:, None]
    V = solution.atoms.directions[live] * np.sqrt(t)[:, None]
    return network_from_neurons(problem.basis, Z, V, beta=problem.beta, loss=problem.loss.name)
