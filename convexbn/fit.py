"""The fit core: data -> BN basis -> arrangements -> program(s) -> solver -> network -> bound.

One functional routine, :func:`fit_convex_bn`, in the spirit of scikit-learn's ``enet_path`` behind
``ElasticNet``: it takes the data, one target array per program, ``beta``, the loss and the options, and
returns a :class:`ConvexFit` with the solved programs, the recovered network, a lower bound on the global
optimum and a per-round history. The estimators, ``convexbn solve`` / ``compare`` / ``path`` and the
comparison harness all call it, so the pipeline and its defaults live in one place:

* ``solver="auto"`` is decided by one function, :func:`choose_solver`.
* The arrangements are chosen by ``arrangements=``: ``"search"`` grows a sample by the dual oracle
  (:func:`convexbn.pattern_search.solve_with_pattern_search`, docs/math.md section 6), ``"sample"`` keeps
  the Gaussian sample (the fast, weaker restriction of docs/math.md section 3), ``"enumerate"`` takes every
  pattern, and ``"auto"`` (the default) enumerates when the Cover bound is small and searches otherwise.
* ``beta="auto"`` is a fraction of the critical ``beta`` above which the network is empty
  (:func:`estimate_critical_beta`), as glmnet and scikit-learn's lasso path scale theirs.
* Every fit reports how far it may be from the global optimum (:class:`ConvexFit`): a certified lower bound
  over *all* patterns (exact with enumerated patterns; otherwise the cheap universal bound below), the
  dual ratio the search found, and a warning when a solver's "optimal" contradicts the certificate.

The universal bound: for any pattern ``D`` and ``u`` in its cone, ``(U' u)_i >= 0`` on ``D``, so
``lambda^T D U' u <= ||lambda_+|| ||U' u||`` and ``-lambda^T D U' u <= ||lambda_-|| ||U' u||``. Every
pattern's dual value is therefore at most ``max(||lambda_+||, ||lambda_-||) ||U'||_2``; scaling
``lambda`` into feasibility with that bound gives a dual point feasible for *every* pattern, hence a lower
bound on the nonconvex optimum (3) without enumeration (docs/math.md section 6). It is often loose; the
"estimated" bound uses the largest dual value the oracle found instead, which is a bound only if no pattern
is more violated than the ones it visited.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from sklearn.utils import check_random_state

from ._validation import check_choice, check_positive, check_positive_int
from .arrangements import (
    Arrangements,
    make_arrangements,
    merge_arrangements,
)
from .basis import BNBasis, bn_basis
from .certificate import pattern_dual_values
from .fit_common import (
    ARRANGEMENT_METHODS,
    AUTO_BETA_FRACTION,
    AUTO_CVXPY_MAX_ROWS,
    AUTO_ENUMERATE_MAX,
    CONTRADICTION_RTOL,
    EQUIVALENCE_RTOL,
    EXACT_SHARED_ROUNDS,
    NEURON_MODES,
    SEARCH_TOL,
    SHARED_SOLVERS,
    SHARED_TOL,
    ConvexFit,
    ProgramFit,
    SearchOptions,
    _resolve_method,
    _solve,
    _solver_options,
    choose_solver,
    default_n_arrangements,
    estimate_critical_beta,
    program_bounds,
)
from .fit_shared import estimate_shared_critical_beta, fit_shared
from .implicit_reg import filtered_basis, implicit_objective, spectral_filter
from .losses import get_loss
from .network import concatenate_networks
from .problem import ConvexBNProblem, SolverWarning
from .recovery import recover_network
from .solvers.base import AUTO_CVXPY_MAX_ROWS_NONSMOOTH, FISTA_MAX_DIM

__all__ = [
    "ARRANGEMENT_METHODS",
    "EQUIVALENCE_RTOL",
    "EXACT_SHARED_ROUNDS",
    "SEARCH_TOL",
    "SHARED_SOLVERS",
    "SHARED_TOL",
    "estimate_shared_critical_beta",
    "ConvexFit",
    "ProgramFit",
    "SearchOptions",
    "choose_solver",
    "default_n_arrangements",
    "estimate_critical_beta",
    "fit_convex_bn",
    "fit_shared",
    "warm_state",
    "NEURON_MODES",
    "pattern_dual_values",
    "program_bounds",
    "AUTO_BETA_FRACTION",
    "AUTO_ENUMERATE_MAX",
    "AUTO_CVXPY_MAX_ROWS",
    "AUTO_CVXPY_MAX_ROWS_NONSMOOTH",
    "CONTRADICTION_RTOL",
]


def _fit_one(basis, arrangements, y, beta, loss, implicit, method, search: SearchOptions, requested,
             options, seed, warm):  # fmt: skip
    """Build, solve (searching patterns if asked), recover and bound one program (a joblib task)."""
    from .pattern_search import solve_with_pattern_search

    start = time.perf_counter()
    problem = ConvexBNProblem(basis, arrangements, y, beta=beta, loss=loss, implicit_reg=implicit)
    solver = choose_solver(problem, requested)
    fallback, found = None, None
    if method == "search" and solver != "closed_form":
        opts = _solver_options(solver, options)
        if solver == "torch":
            opts.setdefault("tol", SEARCH_TOL)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SolverWarning)
            solution, history = solve_with_pattern_search(
                basis, arrangements, y, beta, loss=loss, implicit_reg=implicit, rounds=search.rounds,
                max_new=search.max_new, n_starts=search.n_starts, random_state=seed, solver=solver,
                round_tol=search.round_tol if solver == "torch" else None, time_limit=search.time_limit,
                gap_tol=search.gap_tol,
                warm_start=warm, **opts,
            )  # fmt: skip
    else:
        solution, fallback = _solve(problem, requested, options, warm)
        history = [{
            "round": 0, "n_patterns": problem.n_patterns, "objective": solution.objective, "n_added": 0,
            "max_dual_value": None, "seconds": time.perf_counter() - start,
        }]  # fmt: skip
    n_violating = None
    if solution.problem.loss.smooth and not solution.arrangements.exact and search.n_starts > 0:
        # the oracle once more, at the final point: the estimated bound and the violation it reports
        # belong to the returned solution (docs/math.md section 6)
        from .pattern_search import candidate_patterns

        _, _, values = candidate_patterns(solution, n_starts=search.n_starts, random_state=seed)
        n_violating = int(len(values))
        found = float(values[0]) if len(values) else None
    network = recover_network(solution)
    bounds = program_bounds(solution, found)
    bounds["n_violating"] = n_violating
    return ProgramFit(solution=solution, network=network, history=history, bounds=bounds, fallback=fallback)


def fit_convex_bn(
    X,
    targets,
    beta="auto",
    *,
    loss: str = "squared",
    arrangements="auto",
    n_arrangements: int | str = "auto",
    search: SearchOptions | None = None,
    solver: str = "auto",
    solver_options: dict | None = None,
    implicit_reg=None,
    random_state=None,
    n_jobs=None,
    warm=None,
    basis: BNBasis | None = None,
    tol: float = 1e-4,
    owner: str = "fit_convex_bn",
    neurons: str = "auto",
) -> ConvexFit:
    """Fit the globally optimal BN network of each target array: the one pipeline of the package.

    Parameters
    ----------
    X : ndarray of shape (n, d)
        Training inputs (validated by the caller).
    targets : list of ndarray
        One target array per program, encoded as ``loss`` expects (a column per output; a 2-D array is one
        joint program coupled through the loss, e.g. the cross-entropy).
    beta : float or "auto"
        Weight decay of program (4) (summed loss, docs/math.md section 1). ``"auto"``:
        :data:`AUTO_BETA_FRACTION` times the largest estimated critical beta over the programs.
    loss : str
    arrangements : {"auto", "search", "sample", "enumerate"} or Arrangements
        How the patterns are chosen (module docstring); an :class:`~convexbn.Arrangements` object is used
        as given (no search).
    n_arrangements : int or "auto"
        Initial sample size (``"auto"``: :func:`default_n_arrangements`).
    search : SearchOptions, optional
        Budget of the pattern search.
    solver : str
        ``"auto"`` (:func:`choose_solver`) or a backend name.
    solver_options : dict, optional
        ``tol``, ``max_iter``, ``verbose`` in the backend's own names, plus the torch solver's options.
    implicit_reg : None, str, float or SpectralFilter
        Spectral filter of docs/math.md section 9 (applied once, by the program).
    random_state : int, RandomState or None
        Seeds the sample and the oracle's starts.
    n_jobs : int or None
        Programs solved in parallel (``sklearn.utils.parallel``).
    warm : list, optional
        Per program ``(Arrangements, W_pos, W_neg)`` of a previous fit on the same data: its patterns are
        merged in first and its groups start the torch solver.
    basis : BNBasis, optional
        ``bn_basis(X)`` when the caller has it.
    tol : float
        Relative gap under which an exact fit counts as certified.
    owner : str
        Name used in warnings.
    neurons : {"per_output", "shared", "auto"}
        ``"per_output"``: one program per target array, whose networks are placed side by side (each hidden
        neuron feeds the outputs of its own program; docs/math.md section 8). ``"shared"``: the target
        arrays' columns stacked into one ``(n, C)`` target and fitted by the shared-neuron program, whose
        neurons feed every output (:func:`fit_shared`); with one output column that program is program (4)
        over every pattern (docs/math.md section 8). ``"auto"``: shared for smooth losses with two or more
        output columns, or with one column when ``arrangements`` is ``"auto"`` or ``"search"``, the closed
        form does not apply, and ``k > 128`` or ``n k`` is above ``UNIT_NEURONS_MIN_SIZE`` (its unit-neuron
        search ended lower than the per-output search there: docs/solvers.md, "Inputs with hundreds of
        features"); no spectral filter and ``solver`` ``"auto"`` or ``"torch"`` (the shared program's
        solvers are torch's); per-output otherwise. The default, as in the estimators and the CLI.

    Returns
    -------
    ConvexFit
    """
    from sklearn.utils.parallel import Parallel, delayed

    start = time.perf_counter()
    lossf = get_loss(loss)
    search = SearchOptions() if search is None else search
    neurons = check_choice(neurons, "neurons", NEURON_MODES)
    from .shared_problem import SharedAtoms

    if isinstance(arrangements, SharedAtoms):
        neurons = "shared"
    if neurons != "per_output":
        n_cols = sum(lossf.encode_targets(y).shape[1] for y in targets)
        implicit_set = not spectral_filter(implicit_reg).is_identity
        # one output column: the shared program with C = 1 is program (4) over every pattern; its unit
        # neurons need no cone projection (the per-output route's cost at large k) and ended lower than
        # the per-output search above small data (docs/solvers.md, "Inputs with hundreds of features")
        one_shared = n_cols == 1 and isinstance(arrangements, str) and arrangements in ("auto", "search")
        if one_shared and neurons == "auto":
            from .unit_neurons import UNIT_NEURONS_MIN_SIZE

            basis = bn_basis(X) if basis is None else basis
            closed_form = lossf.name == "squared" and basis.dim == basis.n_samples
            size = basis.n_samples * basis.dim
            one_shared = not closed_form and (basis.dim > FISTA_MAX_DIM or size > UNIT_NEURONS_MIN_SIZE)
        if neurons == "shared" and not lossf.smooth:
            raise ValueError(f"neurons='shared' needs a smooth loss, got {lossf.name!r}; use "
                             "neurons='per_output'")  # fmt: skip
        if neurons == "shared" and implicit_set:
            raise ValueError("neurons='shared' does not take implicit_reg; use neurons='per_output'")
        if neurons == "shared" and solver not in SHARED_SOLVERS:
            raise ValueError(f"neurons='shared' is solved by the torch solver only (solver in "
                             f"{SHARED_SOLVERS}), got solver={solver!r}; use "
                             "neurons='per_output'")  # fmt: skip
        if ((n_cols >= 2 or neurons == "shared" or one_shared) and lossf.smooth and not implicit_set
                and solver in SHARED_SOLVERS):  # fmt: skip
            return fit_shared(
                X, np.hstack([lossf.encode_targets(y) for y in targets]), beta, loss=lossf.name,
                arrangements=arrangements, n_arrangements=n_arrangements, search=search,
                solver_options=solver_options, random_state=random_state, warm=warm, basis=basis,
                tol=tol, owner=owner, start=start,
            )  # fmt: skip
    options = {k: v for k, v in (solver_options or {}).items() if v is not None}
    full_basis = bn_basis(X) if basis is None else basis
    implicit = spectral_filter(implicit_reg)
    kept, _ = filtered_basis(full_basis, implicit)  # patterns live in the filtered basis
    rng = check_random_state(random_state)
    Ys = [lossf.encode_targets(y) for y in targets]
    if isinstance(arrangements, Arrangements):
        arr, method = arrangements, "given"
    else:
        P0 = default_n_arrangements(kept) if n_arrangements == "auto" else n_arrangements
        P0 = check_positive_int(P0, "n_arrangements")
        method = _resolve_method(arrangements, kept, P0, lossf.smooth)
        if method == "enumerate":
            arr = make_arrangements(kept, P0, method="exact", max_patterns=max(20_000, P0))
        else:
            # the sample is drawn from ``random_state`` itself (the same patterns as make_arrangements)
            # (enumerated instead when the Cover bound is at most P0: exactness costs no more)
            arr = make_arrangements(kept, P0, method="auto", random_state=rng)
    seed = int(rng.randint(2**31 - 1))
    if isinstance(beta, str):
        if beta != "auto":
            raise ValueError(f"beta must be a positive number or 'auto', got {beta!r}")
        crit = max(estimate_critical_beta(kept, Y, lossf, random_state=seed) for Y in Ys)
        beta = AUTO_BETA_FRACTION * crit if crit > 0 else 1.0
    beta = check_positive(beta, "beta")
    warm = [None] * len(Ys) if warm is None else list(warm)
    if len(warm) != len(Ys) or not all(w is None or isinstance(w[0], Arrangements) for w in warm):
        warm = [None] * len(Ys)  # another data shape, or a shared fit's atoms

    def program_arrangements(w):
        if w is None or method in ("enumerate", "given"):
            return arr
        return merge_arrangements(w[0], arr)

    tasks = [
        (
            full_basis, program_arrangements(w), Y, beta, lossf.name, implicit,
            "search" if method == "search" else "fixed", search, solver, options, seed + j,
            None if w is None else _warm_groups(w, program_arrangements(w)),
        )
        for j, (Y, w) in enumerate(zip(Ys, warm, strict=True))
    ]  # fmt: skip
    if len(tasks) > 1:
        programs = Parallel(n_jobs=n_jobs)(delayed(_fit_one)(*args) for args in tasks)
    else:
        programs = [_fit_one(*tasks[0])]
    _warn_about(programs, owner, X, Ys, full_basis, implicit)

    objective = float(sum(p.solution.objective for p in programs))
    lower = float(sum(p.bounds["lower_bound"] for p in programs))
    est = float(sum(p.bounds["estimated_lower_bound"] for p in programs))
    scale = max(abs(objective), 1e-12)
    ratio = max(max(p.bounds["own_value"], p.bounds["found_value"] or 0.0) for p in programs) / beta
    gap = (objective - lower) / scale
    solvers = ",".join(dict.fromkeys("torch" if p.fallback else choose_solver(p.solution.problem, solver)
                                     for p in programs))  # fmt: skip
    return ConvexFit(
        programs=programs,
        network=concatenate_networks(p.network for p in programs),
        beta=beta,
        method=method,
        solver=solvers,
        objective=objective,
        lower_bound=lower,
        estimated_lower_bound=est,
        gap=gap,
        estimated_gap=(objective - est) / scale,
        certified=bool(all(p.bounds["exact"] for p in programs) and gap <= tol),
        dual_ratio=float(ratio),
        history=_merge_histories([p.history for p in programs]),
        seconds=time.perf_counter() - start,
        n_arrangements=int(max(p.solution.arrangements.n_patterns for p in programs)),
        n_violating=None if any(p.bounds["n_violating"] is None for p in programs)
        else int(sum(p.bounds["n_violating"] for p in programs)),
        basis=full_basis,
    )


def warm_state(solution) -> tuple:
    """What a warm start keeps of a solved program: ``(SharedAtoms, W)`` of a shared-neuron solution,
    ``(Arrangements, W_pos, W_neg)`` of a per-output one (the ``warm`` entries of :func:`fit_convex_bn`)."""
    from .shared_problem import SharedSolution

    if isinstance(solution, SharedSolution):
        return (solution.atoms, solution.W)
    return (solution.arrangements, solution.W_pos, solution.W_neg)


def _warm_groups(w, arrangements: Arrangements):
    """The previous groups ``w = (Arrangements, W_pos, W_neg)`` placed on ``arrangements``'s patterns."""
    prev, W_pos, W_neg = w
    index = {p.tobytes(): i for i, p in enumerate(np.packbits(arrangements.mask, axis=0).T)}
    shape = (W_pos.shape[0], arrangements.n_patterns, W_pos.shape[2])
    Wp, Wn = np.zeros(shape), np.zeros(shape)
    for j, p in enumerate(np.packbits(prev.mask, axis=0).T):
        i = index.get(p.tobytes())
        if i is not None:
            Wp[:, i], Wn[:, i] = W_pos[:, j], W_neg[:, j]
    return Wp, Wn


def _merge_histories(histories: list) -> list:
    """Per round: patterns and objectives summed over programs, the slowest program's time."""
    rounds = max(len(h) for h in histories)
    merged = []
    for r in range(rounds):
        rows = [h[min(r, len(h) - 1)] for h in histories]
        merged.append({
            "round": r,
            "n_patterns": int(max(row["n_patterns"] for row in rows)),
            "objective": float(sum(row["objective"] for row in rows)),
            "seconds": float(max(row["seconds"] for row in rows)),
        })  # fmt: skip
    return merged


def _warn_about(programs, owner, X, Ys, full_basis, implicit) -> None:
    """Statuses, fallbacks, the equivalence (3) == (4) and a status the certificate contradicts."""
    from sklearn.exceptions import ConvergenceWarning

    for j, (p, Y) in enumerate(zip(programs, Ys, strict=True)):
        sol = p.solution
        if p.fallback is not None:
            warnings.warn(f"{owner}: {p.fallback} (program {j}); solver='auto' solved it with the torch "
                          "solver instead", SolverWarning, stacklevel=3)  # fmt: skip
        if sol.status != "optimal":
            warnings.warn(
                f"{owner}: solver {sol.solver} stopped before reaching the requested accuracy on program "
                f"{j} (status {sol.status!r}); increase max_iter or loosen tol",
                ConvergenceWarning, stacklevel=3,
            )  # fmt: skip
        elif sol.problem.loss.smooth and p.bounds["own_gap"] > CONTRADICTION_RTOL:
            # (smooth losses only: for the hinge loss the bound depends on which subgradient the solver
            # returns as its dual, and a poor one is no contradiction)
            warnings.warn(
                f"{owner}: solver {sol.solver} reported 'optimal' on program {j}, but the dual certificate "
                f"over its own {sol.arrangements.n_patterns} patterns leaves a relative gap of "
                f"{p.bounds['own_gap']:.1e} (> {CONTRADICTION_RTOL:g}); the answer may be above the "
                "program's optimum",
                SolverWarning, stacklevel=3,
            )  # fmt: skip
        if implicit.is_identity:
            forward = p.network.objective(X, Y)
        else:
            forward = implicit_objective(p.network, X, Y, full_basis, implicit)
        gap = abs(forward - sol.objective) / max(abs(sol.objective), 1e-12)
        p.bounds["forward_objective"] = float(forward)
        p.bounds["equivalence_gap"] = gap
        if gap > EQUIVALENCE_RTOL:
            warnings.warn(
                f"{owner}: program {j}: the recovered network's objective (3) {forward:.10g} differs from "
                f"the convex objective (4) {sol.objective:.10g} by {gap:.1e} relative (solver status "
                f"{sol.status!r}, cone-constraint violation {sol.constraint_violation:.1e}); the network "
                "is exact only at a feasible solution",
                ConvergenceWarning, stacklevel=3,
            )  # fmt: skip


