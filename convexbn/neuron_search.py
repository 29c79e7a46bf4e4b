"""Growing the shared-neuron dictionary from the dual: column generation over (pattern, direction) atoms.

At a solution of program (8a) on an atom set (:mod:`convexbn.shared_problem`), with ``Lambda = -grad L(F)``
(n, C), a neuron ``z`` can lower the objective iff ``h(z) = ||Lambda^T (U' z)_+|| > beta`` for some unit
``z`` (eq. (8b), docs/math.md section 8): its atom is its pattern ``D(z) = 1[U' z >= 0]`` with the output
direction ``c = Lambda^T (U' z)_+ / h(z)``, whose dual value is at least ``c^T Lambda^T D U' z = h(z)``.

* :func:`ascent_neurons` (the oracle used by default) maximizes ``h`` by projected ascent on the unit
  sphere from random starts and from the current neurons. Its gradient is ``U'^T D(z) Lambda c(z)``: the
  scalar oracle's step (:mod:`convexbn.pattern_search`) with the residual projected on the neuron's own
  output direction. Every value it reports is attained, so a reported violation is real; a maximum it
  misses is not seen, so "no violation found" is not a certificate.
* :func:`exact_shared_value` solves (8b) exactly on tiny problems: over every pattern's cone the maximum
  of the quadratic ``||M u||^2`` on the unit sphere lies in the relative interior of some face, where it is
  the top right singular vector of ``M`` restricted to the face's span; the faces are enumerated
  (data in general position).
* :func:`search_shared_neurons` alternates: solve on the atom set (warm-started), ask the oracle, drop the
  unused atoms, add the most violated new ones. Each round's objective is attained by its recovered network
  and the rounds never raise it.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
from sklearn.utils import check_random_state

from .basis import BNBasis
from .neuron_merge import MERGE_MIN_COS, atoms_of_neurons, merge_duplicate_neurons, neurons_of_atoms
from .shared_problem import SharedAtoms, SharedOutputProblem, SharedSolution
from .solvers.torch.shared_fista import solve_output_lasso, solve_shared_fista

__all__ = ["ascent_neurons", "exact_shared_value", "search_shared_neurons", "EXACT_ORACLE_MAX_FACES"]

#: :func:`exact_shared_value` refuses problems with more face problems than this.
EXACT_ORACLE_MAX_FACES = 2_000_000


def _values(Uprime, lam, Z):
    """``h(z)``, the output directions and the patterns of the unit rows of ``Z`` (M, k)."""
    H = Uprime @ Z.T  # (n, M)
    D = H >= 0
    B = lam.T @ np.where(D, H, 0.0)  # (C, M)
    h = np.linalg.norm(B, axis=0)
    return h, (B / np.maximum(h, np.finfo(h.dtype).tiny)).T, D


def ascent_neurons(
    Uprime: np.ndarray,
    lam: np.ndarray,
    *,
    starts: np.ndarray | None = None,
    n_starts: int = 500,
    n_steps: int = 30,
    step: float = 0.5,
    threshold: float | None = None,
    random_state=None,
    dtype=np.float32,
    refine_steps: int = 3,
):
    """Neurons with large ``h(z) = ||Lambda^T (U' z)_+||`` over unit ``z``, by projected ascent.

    Parameters
    ----------
    Uprime : ndarray of shape (n, k)
    lam : ndarray of shape (n, C)
        The dual point ``-grad L(F)``.
    starts : ndarray of shape (s, k), optional
        Extra starting directions (e.g. the current neurons).
    n_starts : int
        Gaussian starting directions.
    n_steps : int
        Ascent steps ``z <- normalize(z + step g / ||g||)``, ``g = U'^T D(z) Lambda c(z)``.
    step : float
    threshold : float, optional
        Also return every visited iterate with ``h > threshold`` (e.g. ``beta``: every violating
        neuron the ascent passes through, not only each start's best).
    random_state : int, RandomState or None
    dtype : numpy dtype
        Of the ascent's products (float32: half the time of float64 on a CPU; the ascent is a heuristic).
    refine_steps : int
        When ``dtype`` is not float64: float64 steps from each distinct best iterate afterwards. The
        returned patterns, directions and values are always computed in float64 at the returned ``z``,
        so every reported value is attained.

    Returns
    -------
    mask : ndarray of bool, shape (n, q)
        Patterns of the best iterate of each start (and of the iterates above ``threshold``),
        distinct (each with its largest ``h``), best first.
    generators : ndarray of shape (q, k)
        The unit ``z`` attaining each value.
    directions : ndarray of shape (q, C)
        Their output directions ``c``.
    values : ndarray of shape (q,)
        ``h(z)``, descending: attained, so each is a lower bound on the maximum of (8b).
    """
    from .pattern_search import _best_distinct

    rng = check_random_state(random_state)
    k = Uprime.shape[1]
    parts = [rng.standard_normal((n_starts, k))]
    if starts is not None and len(starts):
        parts.append(np.asarray(starts, dtype=np.float64).reshape(-1, k))
    Z = np.vstack(parts)
    Z /= np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-300)
    lam = np.asarray(lam, dtype=np.float64)
    h, Z, c, D = _ascend(*(np.asarray(a, dtype=dtype) for a in (Uprime, lam, Z)), n_steps, step, threshold)
    keep = _best_distinct(D, h)
    if Z.dtype != np.float64:
        # float64 steps from each distinct best point: the reported values are attained in float64 and
        # the maxima resolved past float32's rounding (near the optimum violations are that small)
        Z = Z[keep].astype(np.float64)
        Z /= np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-300)
        h, Z, c, D = _ascend(Uprime, lam, Z, refine_steps, step, threshold)
        keep = _best_distinct(D, h)
    keep = keep[np.argsort(-h[keep], kind="stable")]
    return D[:, keep], Z[keep], c[keep], h[keep]


def _ascend(Uprime, lam, Z, n_steps: int, step: float, threshold: float | None):
    """:func:`ascent_neurons`'s ascent from the unit rows of ``Z`` (M, k), in their dtype: ``(h, Z, c, D)``
    of each start's best iterate, then of the iterates above ``threshold`` (with ``D`` (n, .))."""
    from .pattern_search import _best_distinct

    h, c, D = _values(Uprime, lam, Z)
    best_h, best_Z, best_c, best_D = h, Z.copy(), c, D
    visited = []  # (h, D, Z, c) of the iterates above ``threshold``
    tiny = np.finfo(Z.dtype).tiny
    for it in range(n_steps + 1):
        if threshold is not None:
            hits = np.flatnonzero(h > threshold)
            if hits.size:
                keep = hits[_best_distinct(D[:, hits], h[hits])]
                visited.append((h[keep], D[:, keep], Z[keep], c[keep]))
        if it == n_steps:
            break
        G = ((D * (lam @ c.T)).T @ Uprime)  # (M, k): the gradient of h
        Z = Z + step * G / np.maximum(np.linalg.norm(G, axis=1, keepdims=True), tiny)
        Z /= np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), tiny)
        h, c, D = _values(Uprime, lam, Z)
        better = h > best_h
        best_h = np.where(better, h, best_h)
        best_Z[better], best_c[better], best_D[:, better] = Z[better], c[better], D[:, better]
    if visited:
        best_h = np.concatenate([best_h] + [v[0] for v in visited])
        best_D = np.hstack([best_D] + [v[1] for v in visited])
        best_Z = np.vstack([best_Z] + [v[2] for v in visited])
        best_c = np.vstack([best_c] + [v[3] for v in visited])
    return best_h, best_Z, best_c, best_D


def exact_shared_value(Uprime: np.ndarray, lam: np.ndarray, mask: np.ndarray, *, tol: float = 1e-10):
    """The exact maximum of (8b), ``max over unit z of ||Lambda^T (U' z)_+||``, over the patterns ``mask``.

    Exact when ``mask`` holds every pattern (e.g. ``make_arrangements(basis, method="exact")``) and the
    rows of ``U'`` are in general position (module docstring). Cost: one small SVD per pattern and per
    set of at most ``k - 1`` tight samples.

    Parameters
    ----------
    Uprime : ndarray of shape (n, k)
    lam : ndarray of shape (n, C)
    mask : ndarray of bool, shape (n, P)
    tol : float
        Feasibility tolerance of a candidate, relative.

    Returns
    -------
    value : float
    z : ndarray of shape (k,)
        A unit maximizer.
    pattern : ndarray of bool, shape (n,)
    direction : ndarray of shape (C,)

    Raises
    ------
    ValueError
        When the face count exceeds :data:`EXACT_ORACLE_MAX_FACES`.
    """
    from math import comb

    n, k = Uprime.shape
    P = mask.shape[1]
    faces = P * sum(comb(n, j) for j in range(k))
    if faces > EXACT_ORACLE_MAX_FACES:
        raise ValueError(f"the exact shared-neuron oracle would solve {faces} face problems "
                         f"(> {EXACT_ORACLE_MAX_FACES}); use the ascent oracle")  # fmt: skip
    subsets = [()] + [s for j in range(1, k) for s in itertools.combinations(range(n), j)]
    nulls = []
    for S in subsets:
        if S:
            _, sv, vt = np.linalg.svd(Uprime[list(S)], full_matrices=True)
            rank = int((sv > 1e-12 * max(sv[0], 1e-300)).sum())
            N = vt[rank:].T
        else:
            N = np.eye(k)
        if N.shape[1]:
            nulls.append(N)
    best = (0.0, np.eye(k)[0], mask[:, 0] if P else np.zeros(n, bool), np.zeros(lam.shape[1]))
    for p in range(P):
        Dp = mask[:, p]
        s = np.where(Dp, 1.0, -1.0)
        Mp = (Dp[:, None] * lam).T @ Uprime  # (C, k)
        for N in nulls:
            _, sv, vt = np.linalg.svd(Mp @ N, full_matrices=False)
            if not sv.size or sv[0] <= best[0]:
                continue
            u = N @ vt[0]
            for cand in (u, -u):
                g = s * (Uprime @ cand)
                if g.min() >= -tol * max(np.abs(g).max(), 1e-300):
                    out = Mp @ cand
                    best = (float(sv[0]), cand / np.linalg.norm(cand), Dp.copy(), out / np.linalg.norm(out))
                    break
    return best


def search_shared_neurons(
    basis: BNBasis,
    Y: np.ndarray,
    beta: float,
    *,
    loss: str = "squared",
    atoms: SharedAtoms | None = None,
    warm_start: np.ndarray | None = None,
    rounds: int = 10,
    max_new: int | None = None,
    n_starts: int = 500,
    tol: float = 1e-5,
    round_tol: float | None = 0.1,
    gap_tol: float | None = 1e-5,
    stall_tol: float | None = 1e-5,
    time_limit: float | None = None,
    exact_patterns: np.ndarray | None = None,
    random_state=None,
    solver_options: dict | None = None,
    realign_steps: int = 1,
    merge_min_cos: float | None = MERGE_MIN_COS,
):
    """Program (8a) with its atoms grown by the oracle of (8b) (column generation, module docstring).

    Parameters
    ----------
    basis : BNBasis
    Y : ndarray of shape (n, C)
        Encoded targets.
    beta : float
    loss : str
        A smooth loss.
    atoms : SharedAtoms, optional
        Initial atoms (default none: the first round's atoms come from the oracle at ``F = 0``).
    warm_start : ndarray of shape (m, k), optional
        Groups of ``atoms``.
    rounds : int
        Atom-adding rounds at most.
    max_new : int, optional
        Atoms added per round (default ``max(50, 4 k)``).
    n_starts : int
        Random starts of the ascent oracle per round.
    tol : float
        Relative duality gap of the final solve over its atom set.
    round_tol : float or None
        Largest gap of the solves before the last: each is solved to a quarter of the previous round's
        estimated gap, at most this and at least ``tol`` (the oracle needs an approximate dual point
        only). None: every round to ``tol``.
    gap_tol : float or None
        Stop once the best violation found lowers the estimated dual bound by at most this fraction.
    stall_tol : float or None
        Ascent oracle: stop once two rounds together lowered the objective by at most this fraction.
    time_limit : float, optional
        Seconds after which no new round starts.
    exact_patterns : ndarray of bool, shape (n, P), optional
        Every pattern of the data: the oracle is then :func:`exact_shared_value` (tiny problems only) and
        the final value certifies the optimum over the whole class.
    random_state : int, RandomState or None
    solver_options : dict, optional
        Passed to :func:`convexbn.solvers.torch.shared_fista.solve_shared_fista` (``max_iter``, ``device``,
        ``dtype``, ``projection``).
    realign_steps : int
        Block steps per round on the output directions (module docstring): the live neurons' directions
        ``z`` fixed, the output rows re-fitted freely by the group lasso over ``V``, then the groups
        re-solved in the new directions. Each step is an exact minimization over one block of the same
        objective, so it never raises it; 0 turns it off.
    merge_min_cos : float or None
        After the last round, near-copies of a neuron (directions and output directions within this
        cosine) are merged where that does not raise the objective
        (:func:`convexbn.neuron_merge.merge_duplicate_neurons`), the merged atoms solved to ``tol``, and
        that point kept when it is no worse; None: no merge.

    Returns
    -------
    solution : SharedSolution
        On the final atom set, solved to ``tol``.
    history : list of dict
        Per round: ``round``, ``n_patterns`` (atoms), ``n_neurons``, ``objective``, ``n_added``,
        ``max_dual_value`` (the oracle's best ``h``), ``seconds``.
    oracle : dict
        At the final point: ``value`` (the best ``h`` found, or the exact maximum), ``exact``,
        ``n_violating`` (distinct violating patterns found).
    """
    start = time.perf_counter()
    rng = check_random_state(random_state)
    Uprime = basis.Uprime
    n, k = Uprime.shape
    C = Y.shape[1]
    opts = dict(solver_options or {})
    max_new = max(50, 4 * k) if max_new is None else int(max_new)
    if atoms is None:
        atoms = SharedAtoms(np.zeros((n, 0), bool), np.zeros((0, C)))
        warm_start = np.zeros((0, k))
    W = np.zeros((atoms.n_atoms, k)) if warm_start is None else np.asarray(warm_start, dtype=np.float64)

    def solve(atoms, W, gap):
        problem = SharedOutputProblem(basis, atoms, Y, beta, loss)
        if atoms.n_atoms == 0:
            obj = problem.objective(np.zeros((0, k)))
            return SharedSolution(problem, np.zeros((0, k)), "optimal", obj, obj, 0.0, 0.0, 0)
        return solve_shared_fista(problem, warm_start=W, tol=gap, **opts)

    def ask(solution):
        lam = -solution.problem.loss.grad(solution.predict_train(), Y)
        live = np.linalg.norm(solution.W, axis=1) > 0
        found = ascent_neurons(Uprime, lam, starts=solution.W[live], n_starts=n_starts, threshold=beta,
                               random_state=rng)  # fmt: skip
        if exact_patterns is None:
            return found
        # the exact maximizer first (it decides the certificate), then the ascent's other neurons
        value, z, pattern, direction = exact_shared_value(Uprime, lam, exact_patterns)
        rest = found[3] < value
        return (np.hstack([pattern[:, None], found[0][:, rest]]), np.vstack([z[None], found[1][rest]]),
                np.vstack([direction[None], found[2][rest]]), np.r_[value, found[3][rest]])  # fmt: skip

    def realign(solution, gap):
        """Block step on the output directions: fix the live neurons' unit ``z``, re-fit every row
        ``v_j`` freely (:func:`solve_output_lasso`), then the groups again in the new directions."""
        live = np.flatnonzero(np.linalg.norm(solution.W, axis=1) > 0)
        if live.size == 0:
            return solution
        U, t = solution.W[live], np.linalg.norm(solution.W[live], axis=1)
        Z = U / t[:, None]
        A = solution.atoms.mask[:, live] * (Uprime @ Z.T)
        # (no projections: cheap, so solved tighter than the round, which also makes it sparse)
        V, _, _ = solve_output_lasso(A, Y, beta, solution.problem.loss, tol=min(gap, 1e-4),
                                     warm_start=solution.atoms.directions[live] * t[:, None])  # fmt: skip
        s = np.linalg.norm(V, axis=1)
        keep = s > 0
        if not keep.any():
            return solution
        moved = SharedAtoms(solution.atoms.mask[:, live[keep]], V[keep] / s[keep, None])
        better = solve(moved, Z[keep] * s[keep, None], gap)
        return better if better.objective <= solution.objective else solution

    history = []
    solution, final, estimated = None, False, np.inf
    for rnd in range(rounds + 1):
        last = rnd == rounds or (time_limit is not None and time.perf_counter() - start > time_limit)
        # rounds far from the optimum need only a rough dual point: a quarter of the estimated gap
        rough = tol if round_tol is None else max(tol, min(round_tol, 0.25 * estimated))
        gap = tol if last else rough
        # with realignment, even the last round's atoms are solved roughly first: the realignment's
        # sparse output layer leaves few atoms for the solve to ``tol``
        solution = solve(atoms, W, rough if realign_steps else gap)
        for _ in range(realign_steps):
            solution = realign(solution, gap)
        atoms, W = solution.atoms, solution.W
        final = last or round_tol is None or round_tol <= tol
        mask, _, dirs, values = ask(solution)
        found = float(values[0]) if len(values) else 0.0
        violating = values > beta * (1 + 1e-9)
        history.append({
            "round": rnd, "n_patterns": atoms.n_atoms, "n_neurons": solution.n_neurons,
            "objective": solution.objective, "n_added": 0, "max_dual_value": found,
            "seconds": time.perf_counter() - start,
        })  # fmt: skip
        if last or not violating.any():
            break
        bound = solution.problem.dual_bound(solution.predict_train(), found)
        estimated = (solution.objective - bound) / max(abs(solution.objective), 1e-12)
        if gap_tol is not None and estimated <= gap_tol:
            break
        if stall_tol is not None and exact_patterns is None and len(history) >= 3:
            # stalled: the last two rounds lowered the objective by at most stall_tol (relative) in all
            drop = (history[-3]["objective"] - solution.objective) / max(abs(solution.objective), 1e-12)
            if drop <= stall_tol:
                break
        live = np.linalg.norm(solution.W, axis=1) > 0
        new = np.flatnonzero(violating)[:max_new]
        atoms = atoms.subset(live).concatenate(SharedAtoms(mask[:, new], dirs[new]))
        W = np.vstack([solution.W[live], np.zeros((new.size, k))])
        history[-1]["n_added"] = int(new.size)
    if not final:  # the last pattern set solved to ``tol``, warm-started
        solution = solve(solution.atoms, solution.W, tol)
        history[-1]["objective"] = solution.objective
    if merge_min_cos is not None and solution.n_neurons > 1:
        # near-copies of a neuron as one (convexbn.neuron_merge), then the merged atoms solved to ``tol``;
        # the oracle below is asked at the point kept
        Z, V = merge_duplicate_neurons(Uprime, Y, *neurons_of_atoms(solution.atoms, solution.W), beta,
                                       solution.problem.loss, min_cos=merge_min_cos)  # fmt: skip
        if len(Z) < solution.n_neurons:
            merged = solve(*atoms_of_neurons(Uprime, Z, V), tol)
            if merged.objective <= solution.objective and (merged.status == "optimal" or
                                                           solution.status != "optimal"):  # fmt: skip
                solution = merged
                history[-1].update(objective=solution.objective, n_neurons=solution.n_neurons,
                                   n_patterns=solution.atoms.n_atoms)  # fmt: skip
    mask, _, dirs, values = ask(solution)
    oracle = {
        "value": float(values[0]) if len(values) else 0.0,
        "exact": exact_patterns is not None,
        "n_violating": int((values > beta * (1 + 1e-9)).sum()),
    }
    solution.info["seconds"] = time.perf_counter() - start
    solution.info["exact"] = oracle["exact"]
    return solution, history, oracle
