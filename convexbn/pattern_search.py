"""Growing the pattern set from the dual: column generation on the arrangements.

A sampled pattern set gives a restriction of the exact program (spec section 3): its optimum is an upper
bound on ``p*``, often far above it when the data has more than a few dimensions (Gaussian generators rarely
hit the patterns a good network uses). The dual tells which patterns are missing: at the restricted
optimum, with ``lambda = -grad L(F)``, a pattern ``D`` whose dual value

    max { sigma lambda_c^T D U' u : ||u|| <= 1, (2D - I) U' u >= 0 } = ||Pi_{K_D}(sigma U'^T D lambda_c)||

exceeds ``beta`` violates the dual constraint (spec section 6), so adding it strictly lowers the optimum.
Candidates come from every current pattern by the fixed-point step ``w <- sigma U'^T D(w) lambda_c``,
``D(w) = 1[U' w >= 0]`` (a few steps: it moves a neuron's pattern toward the one its own gated
direction induces, the step gradient training takes); their dual values are computed exactly and in one
batch by :func:`convexbn.solvers.cone_projection.project_cones`. The most violated new patterns are
added and the program is re-solved from the previous solution. Every round's objective is a valid upper
bound attained by its recovered network, and the rounds never increase it.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ._validation import check_positive_int
from .arrangements import Arrangements, _unique_patterns, merge_arrangements
from .basis import BNBasis
from .problem import ConvexBNProblem, ConvexBNSolution
from .solvers.cone_projection import project_cones

__all__ = ["candidate_patterns", "solve_with_pattern_search"]


def candidate_patterns(solution: ConvexBNSolution, n_steps: int = 3):
    """Patterns that violate the dual constraint at ``solution``, most violated first.

    Parameters
    ----------
    solution : ConvexBNSolution
        A solution of the exact program (smooth loss).
    n_steps : int
        Fixed-point steps ``w <- sigma U'^T D(w) lambda`` from each current pattern.

    Returns
    -------
    mask : ndarray of bool, shape (n, m)
        The new patterns (distinct, not in the problem's set), most violated first.
    generators : ndarray of shape (m, k)
    values : ndarray of shape (m,)
        Their dual values (all above ``beta``).
    """
    problem = solution.problem
    U, Y = problem.Uprime, problem.Y
    lam = -problem.loss.grad(solution.predict_train(), Y)  # (n, C)
    mask = problem.mask.astype(float)
    W = []
    for c in range(Y.shape[1]):
        base = (mask * lam[:, c : c + 1]).T @ U  # (P, k): U'^T D_i lambda_c
        W.extend([base, -base])
    W = np.vstack(W)
    sigma = np.repeat(np.r_[1.0, -1.0], problem.n_patterns)
    sigma = np.tile(sigma, Y.shape[1])
    out = np.repeat(np.arange(Y.shape[1]), 2 * problem.n_patterns)
    for _ in range(n_steps):
        D = (U @ W.T >= 0).astype(float)  # (n, B)
        W = sigma[:, None] * ((D * lam[:, out]).T @ U)
    D = U @ W.T >= 0
    W = sigma[:, None] * ((D * lam[:, out]).T @ U)  # the dual vector of the final pattern itself
    res = project_cones(
        torch.as_tensor(W),
        torch.as_tensor(U),
        torch.as_tensor(np.where(D, 1.0, -1.0).T),
        threshold=problem.beta,
    )
    values = np.where(res.below.numpy(), 0.0, res.u.norm(dim=1).numpy())
    keep = values > problem.beta * (1 + 1e-9)
    if not keep.any():
        return np.zeros((U.shape[0], 0), bool), np.zeros((0, U.shape[1])), np.zeros(0)
    order = np.argsort(-values[keep])
    cand_mask, cand_gen, cand_val = D[:, keep][:, order], W[keep][order], values[keep][order]
    # distinct, and not already in the problem
    known = {m.tobytes() for m in np.packbits(problem.mask, axis=0).T}
    packed = np.packbits(cand_mask, axis=0).T
    fresh = np.array([p.tobytes() not in known for p in packed], dtype=bool)
    cand_mask, cand_gen, cand_val = cand_mask[:, fresh], cand_gen[fresh], cand_val[fresh]
    if cand_mask.shape[1] == 0:
        return cand_mask, cand_gen, cand_val
    um, ug = _unique_patterns(cand_mask, cand_gen)
    vals = {p.tobytes(): v for p, v in zip(np.packbits(cand_mask, axis=0).T, cand_val, strict=True)}
    uv = np.array([vals[p.tobytes()] for p in np.packbits(um, axis=0).T])
    order = np.argsort(-uv)
    return um[:, order], ug[order], uv[order]


def solve_with_pattern_search(
    basis: BNBasis,
    arrangements: Arrangements,
    y,
    beta: float,
    *,
    loss: str = "squared",
    rounds: int = 10,
    max_new: int | None = None,
    n_steps: int = 3,
    solver: str = "torch",
    round_tol: float | None = None,
    **options,
):
    """Solve the exact program, then add dual-violating patterns and re-solve, ``rounds`` times at most.

    Parameters
    ----------
    basis, arrangements, y, beta, loss
        As for :class:`convexbn.ConvexBNProblem` (formulation ``"exact"``).
    rounds : int
        Maximum number of pattern-adding rounds (it stops earlier when no candidate violates).
    max_new : int, optional
        Patterns added per round (default: the initial number of patterns / 4, at least 10).
    n_steps : int
        Fixed-point steps per candidate (:func:`candidate_patterns`).
    solver : str
        Backend; ``"torch"`` warm-starts each round from the previous solution.
    round_tol : float, optional
        ``solver="torch"``: solve the rounds before the last to this (looser) tolerance, then the last
        pattern set once more, warm-started, to ``options["tol"]``. The candidates only need an
        approximate dual point, and a tight certified gap costs most of a round. Default: every round at
        ``tol``.
    **options
        Passed to :meth:`ConvexBNProblem.solve`.

    Returns
    -------
    solution : ConvexBNSolution
        The last round's solution (on the grown pattern set).
    history : list of dict
        Per round: ``round``, ``n_patterns``, ``objective``, ``n_added``, ``max_dual_value``, ``seconds``
        (cumulative wall time).
    """
    rounds = check_positive_int(rounds + 1, "rounds + 1") - 1  # rounds >= 0
    if max_new is None:
        max_new = max(10, arrangements.n_patterns // 4)
    max_new = check_positive_int(max_new, "max_new")
    start = time.perf_counter()
    problem = ConvexBNProblem(basis, arrangements, y, beta=beta, loss=loss)
    if not problem.loss.smooth:
        raise ValueError(f"pattern search needs a smooth loss, got {problem.loss.name!r}")
    final_options = options
    if round_tol is not None:
        if solver != "torch":
            raise ValueError("round_tol needs solver='torch' (the final re-solve is warm-started)")
        options = {**options, "tol": float(round_tol)}
    solution = problem.solve(solver, **options)
    history = []
    for r in range(rounds + 1):
        mask, gen, values = candidate_patterns(solution, n_steps=n_steps)
        history.append({
            "round": r, "n_patterns": problem.n_patterns, "objective": solution.objective,
            "n_added": int(min(len(values), max_new)) if r < rounds else 0,
            "max_dual_value": float(values[0]) if len(values) else None,
            "seconds": time.perf_counter() - start,
        })  # fmt: skip
        if r == rounds or len(values) == 0:
            if final_options is not options:  # the last pattern set, to the final tolerance
                warm = (solution.W_pos, solution.W_neg)
                solution = problem.solve(solver, warm_start=warm, **final_options)
                history[-1].update(objective=solution.objective, seconds=time.perf_counter() - start)
            break
        new = Arrangements(mask=mask[:, :max_new], generators=gen[:max_new], exact=False)
        merged = merge_arrangements(problem.arrangements, new)
        P_old = problem.n_patterns
        problem = ConvexBNProblem(basis, merged, y, beta=beta, loss=loss)
        warm = None
        if solver == "torch":  # the old patterns come first in the merged set: pad with zero groups
            pad = ((0, 0), (0, problem.n_patterns - P_old), (0, 0))
            warm = (np.pad(solution.W_pos, pad), np.pad(solution.W_neg, pad))
        solution = (
            problem.solve(solver, **options)
            if warm is None
            else problem.solve(solver, warm_start=warm, **options)
        )
    return solution, history
