"""Growing the pattern set from the dual: column generation on the arrangements.

A sampled pattern set gives a restriction of the exact program (docs/math.md section 3): its optimum is an
upper bound on ``p*``, often far above it when the data has more than a few dimensions (Gaussian generators
rarely hit the patterns a good network uses). The dual tells which patterns are missing: at the restricted
optimum, with ``lambda = -grad L(F)``, a pattern ``D`` whose dual value

    max { sigma lambda_c^T D U' u : ||u|| <= 1, (2D - I) U' u >= 0 } = ||Pi_{K_D}(sigma U'^T D lambda_c)||

exceeds ``beta`` violates the dual constraint (docs/math.md section 6), so adding it strictly lowers the
optimum. Candidates come from every current pattern by the fixed-point step ``w <- sigma U'^T D(w) lambda_c``,
``D(w) = 1[U' w >= 0]`` (a few steps: it moves a neuron's pattern toward the one its own gated
direction induces, the step gradient training takes); their dual values are computed exactly and in one
batch by :func:`convexbn.solvers.torch.projection.project_cones`. The most violated new patterns are
added and the program is re-solved from the previous solution. Every round's objective is a valid upper
bound attained by its recovered network, and the rounds never increase it.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from sklearn.utils import check_random_state

from ._validation import check_positive, check_positive_int
from .arrangements import Arrangements, _unique_patterns, merge_arrangements
from .basis import BNBasis
from .certificate import pattern_dual_values
from .problem import ConvexBNProblem, ConvexBNSolution
from .solvers.torch.projection import project_cones

__all__ = ["ascent_dual_value", "candidate_patterns", "estimated_gap", "solve_with_pattern_search"]


def _dual_vectors(U, D, lam, sigma):
    """``sigma_b U'^T D_b lambda_b`` for each column ``b`` of the (n, B) masks ``D``: shape (B, k).

    ``lam`` is (n, B) or (n, 1); ``sigma`` a (B,) array of signs or one sign.
    """
    return np.reshape(sigma, (-1, 1)) * ((D * lam).T @ U)


def _fixed_point_candidates(problem, lam, n_steps: int):
    """Every current pattern moved by ``n_steps`` fixed-point steps: (n, B) masks, their (B, k)
    generators, signs and outputs (``B = 2 C P``, ordered by output, then sign, then pattern)."""
    U, C, P = problem.Uprime, problem.n_outputs, problem.n_patterns
    sigma = np.tile(np.repeat(np.r_[1.0, -1.0], P), C)
    out = np.repeat(np.arange(C), 2 * P)
    W = _dual_vectors(U, np.tile(problem.mask, (1, 2 * C)), lam[:, out], sigma)
    for _ in range(n_steps):
        W = _dual_vectors(U, U @ W.T >= 0, lam[:, out], sigma)
    return U @ W.T >= 0, W, sigma, out


def _ascent_candidates(problem, lam, solution, n_starts: int, n_steps: int, step: float, rng):
    """Patterns visited by projected ascent of ``h(w) = sigma lambda_c^T (U' w)_+`` on the unit sphere.

    From ``n_starts`` Gaussian directions per output and sign (and from the solution's own nonzero
    groups), ``n_steps`` steps ``w <- normalize(w + step * g / ||g||)``, ``g = sigma U'^T D(w) lambda_c``
    the (sub)gradient of ``h``. ``w`` lies in the cone of its own pattern ``D(w)`` and has norm one, so
    ``h(w)`` is a *certified lower bound* on that pattern's dual value: every visited pattern with
    ``h(w) > beta`` violates the dual constraint. Returns those patterns (distinct, best bound kept),
    their generators (the ``w``), signs, outputs and bounds.
    """
    U, beta = problem.Uprime, problem.beta
    parts = []  # per output and sign: (h, D, W, sigma, c) of the distinct violating patterns visited
    for c in range(problem.n_outputs):
        for sigma, groups in ((1.0, solution.W_pos[c]), (-1.0, solution.W_neg[c])):
            own = groups[np.linalg.norm(groups, axis=1) > 0]
            W = np.vstack([rng.standard_normal((n_starts, U.shape[1])), own])
            W /= np.linalg.norm(W, axis=1, keepdims=True)
            hs, Ds, Ws = [], [], []
            for it in range(n_steps + 1):
                Z = U @ W.T  # (n, M)
                D = Z >= 0
                h = sigma * (lam[:, c] @ np.where(D, Z, 0.0))
                hits = np.flatnonzero(h > beta * (1 + 1e-9))
                if hits.size:
                    keep = hits[_best_distinct(D[:, hits], h[hits])]
                    hs.append(h[keep]), Ds.append(D[:, keep]), Ws.append(W[keep])
                if it == n_steps:
                    break
                G = _dual_vectors(U, D, lam[:, c : c + 1], sigma)  # (M, k): the gradient of h
                W = W + step * G / np.linalg.norm(G, axis=1, keepdims=True).clip(1e-300)
                W /= np.linalg.norm(W, axis=1, keepdims=True)
            if hs:
                h, D, W = np.concatenate(hs), np.hstack(Ds), np.vstack(Ws)
                keep = _best_distinct(D, h)
                parts.append((h[keep], D[:, keep], W[keep], np.full(keep.size, sigma), np.full(keep.size, c)))
    if not parts:
        k = U.shape[1]
        return np.zeros((U.shape[0], 0), bool), np.zeros((0, k)), np.zeros(0), np.zeros(0, int), np.zeros(0)
    h = np.concatenate([p[0] for p in parts])
    D = np.hstack([p[1] for p in parts])
    keep = _best_distinct(D, h)  # a pattern found for several outputs or signs: its best bound
    keep = keep[np.argsort(-h[keep], kind="stable")]
    W, sigma, out = (np.concatenate([p[i] for p in parts])[keep] for i in (2, 3, 4))
    return D[:, keep], W, sigma, out.astype(int), h[keep]


def _best_distinct(D: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Indices of the distinct columns of the (n, H) masks ``D``, each with its largest ``h``."""
    order = np.argsort(-h, kind="stable")
    packed = np.ascontiguousarray(np.packbits(D, axis=0)[:, order].T)  # pack, then gather (8x fewer bytes)
    keys = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()
    _, first = np.unique(keys, return_index=True)
    return order[np.sort(first)]


def ascent_dual_value(Uprime: np.ndarray, lam: np.ndarray, *, n_starts: int = 200, n_steps: int = 20,
                      step: float = 0.5, random_state=None) -> float:
    """The largest ``h(w) = sigma lambda_c^T (U' w)_+`` over unit ``w`` visited by projected ascent.

    Each visited ``h(w)`` is a lower bound on the dual value of ``w``'s own pattern, so the result is a
    lower estimate of the largest dual value over all patterns (used for the critical beta).

    Parameters
    ----------
    Uprime : ndarray of shape (n, k)
    lam : ndarray of shape (n, C)
    n_starts, n_steps, step
        Random starts per output and sign, ascent steps, step length on the sphere.
    random_state : int, RandomState or None
    """
    rng = check_random_state(random_state)
    lam = np.asarray(lam, dtype=np.float64).reshape(Uprime.shape[0], -1)
    best = 0.0
    for c in range(lam.shape[1]):
        for sigma in (1.0, -1.0):
            W = rng.standard_normal((n_starts, Uprime.shape[1]))
            W /= np.linalg.norm(W, axis=1, keepdims=True)
            for it in range(n_steps + 1):
                Z = Uprime @ W.T
                D = Z >= 0
                best = max(best, float(np.max(sigma * (lam[:, c] @ np.where(D, Z, 0.0)))))
                if it == n_steps:
                    break
                G = _dual_vectors(Uprime, D, lam[:, c : c + 1], sigma)
                W = W + step * G / np.linalg.norm(G, axis=1, keepdims=True).clip(1e-300)
                W /= np.linalg.norm(W, axis=1, keepdims=True)
    return best


def candidate_patterns(
    solution: ConvexBNSolution,
    n_steps: int = 3,
    *,
    n_starts: int = 1000,
    ascent_steps: int = 20,
    ascent_step: float = 0.5,
    max_ascent: int = 2000,
    random_state=None,
):
    """Patterns that violate the dual constraint at ``solution``, most violated first.

    Two sources of candidates, whose dual values are then computed exactly in one batched projection:

    * every current pattern moved by ``n_steps`` fixed-point steps ``w <- sigma U'^T D(w) lambda``;
    * with ``n_starts > 0``, the patterns visited by projected ascent of the dual constraint's function
      ``h(w) = sigma lambda_c^T (U' w)_+`` over the unit sphere from ``n_starts`` random directions per
      output and sign, and from the solution's nonzero groups. ``h(w)`` is a lower bound on the dual
      value of ``w``'s own pattern, so only patterns with ``h(w) > beta`` are kept (the ``max_ascent``
      with the largest bounds).

    Parameters
    ----------
    solution : ConvexBNSolution
        A solution of the exact program (smooth loss).
    n_steps : int
        Fixed-point steps ``w <- sigma U'^T D(w) lambda`` from each current pattern.
    n_starts : int
        Random starts of the ascent per output and sign (0: the fixed-point candidates only, the
        oracle of convexbn 0.1).
    ascent_steps : int
        Ascent steps from each start.
    ascent_step : float
        Length of each ascent step on the unit sphere (before renormalizing).
    max_ascent : int
        At most this many ascent candidates (the largest lower bounds) are projected exactly.
    random_state : int, RandomState or None
        Seed of the random starts.

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
    D, gen, sigma, out = _fixed_point_candidates(problem, lam, n_steps)
    if n_starts > 0:
        rng = check_random_state(random_state)
        a = _ascent_candidates(problem, lam, solution, n_starts, ascent_steps, ascent_step, rng)
        D, gen = np.hstack([D, a[0][:, :max_ascent]]), np.vstack([gen, a[1][:max_ascent]])
        sigma, out = np.r_[sigma, a[2][:max_ascent]], np.r_[out, a[3][:max_ascent]]
    W = _dual_vectors(U, D, lam[:, out], sigma)  # the dual vector of each candidate pattern
    res = project_cones(
        torch.as_tensor(W),
        torch.as_tensor(U),
        torch.as_tensor(np.where(D, 1.0, -1.0).T),
        threshold=problem.beta,
        backend="auto",
    )
    values = np.where(res.below.numpy(), 0.0, res.u.norm(dim=1).numpy())
    keep = values > problem.beta * (1 + 1e-9)
    if not keep.any():
        return np.zeros((U.shape[0], 0), bool), np.zeros((0, U.shape[1])), np.zeros(0)
    order = np.argsort(-values[keep], kind="stable")
    cand_mask, cand_gen, cand_val = D[:, keep][:, order], gen[keep][order], values[keep][order]
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
    order = np.argsort(-uv, kind="stable")
    return um[:, order], ug[order], uv[order]


def estimated_gap(solution: ConvexBNSolution, found_value: float | None = None) -> tuple[float, float, float]:
    """Relative gaps of ``solution`` to the dual bounds over its own patterns and with the oracle's best.

    ``lambda = -grad L(F)`` scaled by ``beta / max(beta, v)`` gives the bound ``-L*(s grad L(F))``
    (docs/math.md section 6). With ``v`` the largest dual value over the program's own patterns it bounds
    the restriction; with ``v`` also covering ``found_value`` it bounds the optimum over every pattern if
    no pattern is more violated than the oracle found (an estimate, not a certificate).

    Returns
    -------
    gap : float
        ``(objective - estimated bound) / |objective|``.
    search_gap : float
        ``(own bound - estimated bound) / |objective|``: what the violating patterns cost the bound, the
        part of ``gap`` that more rounds can close (the rest is the solve's own tolerance).
    bound : float
        The estimated bound itself.
    """
    problem = solution.problem
    grad = problem.loss.grad(solution.predict_train(), problem.Y)
    own = float(pattern_dual_values(problem.Uprime, problem.mask, -grad).max(initial=0.0))

    def bound(value):
        scale = 1.0 if value <= problem.beta else problem.beta / value
        return float(-problem.loss.conjugate(scale * grad, problem.Y))

    own_bound, est_bound = bound(own), bound(max(own, found_value or 0.0))
    scale = max(abs(solution.objective), 1e-12)
    return (solution.objective - est_bound) / scale, (own_bound - est_bound) / scale, est_bound


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
    n_starts: int = 1000,
    ascent_steps: int = 20,
    random_state=None,
    solver: str = "torch",
    round_tol: float | None = None,
    time_limit: float | None = None,
    gap_tol: float | None = None,
    implicit_reg=None,
    warm_start=None,
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
    n_starts, ascent_steps : int
        Random starts and steps of the ascent oracle (:func:`candidate_patterns`; ``n_starts=0`` turns
        it off).
    random_state : int, RandomState or None
        Seed of the ascent's random starts (one generator for all rounds).
    solver : str
        Backend; ``"torch"`` warm-starts each round from the previous solution.
    round_tol : float, optional
        ``solver="torch"``: solve the rounds before the last to this (looser) tolerance, then the last
        pattern set once more, warm-started, to ``options["tol"]``. The candidates only need an
        approximate dual point, and a tight certified gap costs most of a round. Default: every round at
        ``tol``.
    time_limit : float, optional
        Seconds: no new round starts once the search has run this long (the last pattern set is still
        solved to the final tolerance).
    gap_tol : float, optional
        Stop once the oracle's candidates lower the estimated dual bound by at most this fraction of the
        objective (``search_gap`` of :func:`estimated_gap`): more patterns could then lower the objective
        by about that much at most, if no pattern is more violated than those the oracle found. With
        ``round_tol``, the stop is confirmed at the final tolerance: the pattern set is re-solved to it and
        the oracle asked again, and the search goes on if it now finds more.
    implicit_reg : optional
        Spectral filter of the program (docs/math.md section 9); ``arrangements`` are then patterns of the
        filtered basis.
    warm_start : tuple (W_pos, W_neg), optional
        ``solver="torch"``: groups on ``arrangements``' patterns that start the first solve.
    **options
        Passed to :meth:`ConvexBNProblem.solve`.

    Returns
    -------
    solution : ConvexBNSolution
        The last round's solution (on the grown pattern set).
    history : list of dict
        Per round: ``round``, ``n_patterns``, ``objective``, ``n_added``, ``max_dual_value`` (largest
        candidate's), ``estimated_gap`` and ``estimated_bound`` (:func:`estimated_gap`, at the round's
        solution), ``seconds`` (cumulative wall time). After a final re-solve the last entry's
        ``objective`` is the re-solved one.
    """
    rounds = check_positive_int(rounds + 1, "rounds + 1") - 1  # rounds >= 0
    if max_new is None:
        max_new = max(10, arrangements.n_patterns // 4)
    max_new = check_positive_int(max_new, "max_new")
    if time_limit is not None:
        time_limit = check_positive(time_limit, "time_limit")
    if gap_tol is not None:
        gap_tol = check_positive(gap_tol, "gap_tol")
    start = time.perf_counter()
    problem = ConvexBNProblem(basis, arrangements, y, beta=beta, loss=loss, implicit_reg=implicit_reg)
    if not problem.loss.smooth:
        raise ValueError(f"pattern search needs a smooth loss, got {problem.loss.name!r}")
    final_options = options
    if round_tol is not None:
        if solver != "torch":
            raise ValueError("round_tol needs solver='torch' (the final re-solve is warm-started)")
        options = {**options, "tol": float(round_tol)}
    rng = check_random_state(random_state)
    if warm_start is not None and solver == "torch":
        solution = problem.solve(solver, warm_start=warm_start, **options)
    else:
        solution = problem.solve(solver, **options)
    def ask_oracle(solution):
        """The violating candidates at ``solution``, the largest value, and the estimated gaps."""
        mask, gen, values = candidate_patterns(
            solution, n_steps=n_steps, n_starts=n_starts, ascent_steps=ascent_steps,
            max_ascent=max(200, 4 * max_new), random_state=rng,
        )  # fmt: skip
        found = float(values[0]) if len(values) else None
        return (mask, gen, values, found, *estimated_gap(solution, found))

    history = []
    for r in range(rounds + 1):
        mask, gen, values, found, gap, search_gap, est_bound = ask_oracle(solution)
        history.append({
            "round": r, "n_patterns": problem.n_patterns, "objective": solution.objective,
            "n_added": int(min(len(values), max_new)) if r < rounds else 0, "max_dual_value": found,
            "estimated_gap": gap, "estimated_bound": est_bound, "seconds": time.perf_counter() - start,
        })  # fmt: skip
        out_of_time = time_limit is not None and time.perf_counter() - start >= time_limit
        small_gap = gap_tol is not None and search_gap <= gap_tol
        if small_gap and r < rounds and not out_of_time and final_options is not options:
            # the oracle saw little at the rounds' tolerance: look again at the final one before stopping
            warm = (solution.W_pos, solution.W_neg)
            solution = problem.solve(solver, warm_start=warm, **final_options)
            mask, gen, values, found, gap, search_gap, est_bound = ask_oracle(solution)
            history[-1].update(objective=solution.objective, max_dual_value=found, estimated_gap=gap,
                               estimated_bound=est_bound, seconds=time.perf_counter() - start)  # fmt: skip
            small_gap = search_gap <= gap_tol
            if small_gap:
                history[-1]["n_added"] = 0
                break
        if out_of_time or small_gap:
            history[-1]["n_added"] = 0
        if r == rounds or len(values) == 0 or out_of_time or small_gap:
            if final_options is not options:  # the last pattern set, to the final tolerance
                warm = (solution.W_pos, solution.W_neg)
                solution = problem.solve(solver, warm_start=warm, **final_options)
                history[-1].update(objective=solution.objective, seconds=time.perf_counter() - start)
            break
        new = Arrangements(mask=mask[:, :max_new], generators=gen[:max_new], exact=False)
        merged = merge_arrangements(problem.arrangements, new)
        P_old = problem.n_patterns
        problem = ConvexBNProblem(basis, merged, y, beta=beta, loss=loss, implicit_reg=implicit_reg)
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
