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
from dataclasses import dataclass, field

import numpy as np
from sklearn.utils import check_random_state

from ._validation import check_choice, check_positive, check_positive_int
from .arrangements import (
    Arrangements,
    enumeration_is_cheap,
    make_arrangements,
    max_arrangements,
    merge_arrangements,
)
from .basis import BNBasis, bn_basis
from .certificate import pattern_dual_values
from .implicit_reg import filtered_basis, implicit_objective, spectral_filter
from .losses import get_loss
from .network import BNNetwork, concatenate_networks
from .problem import ConvexBNProblem, ConvexBNSolution, SolverError, SolverWarning
from .recovery import recover_network

__all__ = [
    "ARRANGEMENT_METHODS",
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

ARRANGEMENT_METHODS = ("auto", "search", "sample", "enumerate")
NEURON_MODES = ("per_output", "shared", "auto")
#: The solvers of the shared-neuron program (its own FISTA, :mod:`convexbn.solvers.shared_fista`).
SHARED_SOLVERS = ("auto", "torch")
#: ``beta="auto"`` is this fraction of the (estimated) critical beta (docs/estimators.md, "Defaults").
AUTO_BETA_FRACTION = 0.05
#: ``arrangements="auto"`` enumerates every pattern when the Cover bound is at most this (enumeration
#: solves one small LP per cell, about 13 ms per pattern: 5.6 s for the 421 patterns of n = 21, k = 3).
AUTO_ENUMERATE_MAX = 200
#: ``solver="auto"`` for losses the torch FISTA solver does not take (the hinge loss) or inputs above its
#: dimension limit: Clarabel up to this many cone rows ``2 n P``, the torch solver (ADMM / AL) above.
AUTO_CVXPY_MAX_ROWS_NONSMOOTH = 20_000
#: Kept for code that imported the old threshold; no longer used by ``choose_solver`` for smooth losses.
AUTO_CVXPY_MAX_ROWS = 400_000
#: Rounds of the shared-neuron search with the exact oracle at least (it stops once certified).
EXACT_SHARED_ROUNDS = 50
#: A solver's status "optimal" contradicts the certificate over the program's own patterns when the
#: relative duality gap there is above this.
CONTRADICTION_RTOL = 1e-3


# ------------------------------------------------------------------------------------------ choices
def choose_solver(problem: ConvexBNProblem, requested: str = "auto") -> str:
    """The backend that solves ``problem`` for ``requested`` (``"auto"`` decided here, and only here).

    ``"auto"``: the closed form when it applies (docs/math.md section 7); the torch solver (FISTA on the
    exact program, every iterate feasible, stopped on a certified gap) for smooth losses with
    ``k = r + 1 <= FISTA_MAX_DIM``, where it certified 40x-250x faster than Clarabel at n = 500-2000
    (docs/solvers.md); otherwise (hinge loss, or wider inputs) Clarabel while the program has at most
    :data:`AUTO_CVXPY_MAX_ROWS_NONSMOOTH` cone rows, the torch solver (ADMM / AL) above. ``"mosek"`` falls
    back to Clarabel with a :class:`SolverWarning` when MOSEK is missing or unlicensed; ``"cvxpy"`` means
    Clarabel.
    """
    from .solvers import closed_form_applies
    from .solvers.cvxpy_backend import resolve_cvxpy_solver
    from .solvers.torch_backend import FISTA_MAX_DIM

    if requested == "auto":
        if closed_form_applies(problem)[0]:
            return "closed_form"
        if problem.loss.smooth and problem.dim <= FISTA_MAX_DIM:
            return "torch"
        rows = 2 * problem.n_samples * problem.n_patterns
        return "clarabel" if rows <= AUTO_CVXPY_MAX_ROWS_NONSMOOTH else "torch"
    if requested == "mosek":
        return resolve_cvxpy_solver("MOSEK").lower()
    if requested == "cvxpy":
        return "clarabel"
    if requested == "closed-form":
        return "closed_form"
    return requested


def default_n_arrangements(basis: BNBasis) -> int:
    """Initial sample size that grows with the rank: ``clip(4 k, 50, 1000)`` for ``k = r + 1``."""
    return int(np.clip(4 * basis.dim, 50, 1000))


def _resolve_method(method: str, basis: BNBasis, n_arrangements: int, smooth: bool) -> str:
    method = check_choice(method, "arrangements", ARRANGEMENT_METHODS)
    if method != "auto":
        if method == "search" and not smooth:
            raise ValueError(
                "arrangements='search' needs a smooth loss (the hinge loss is not); use 'sample'"
            )
        return method
    if max_arrangements(basis.n_samples, basis.dim) <= max(n_arrangements, AUTO_ENUMERATE_MAX) and (
        enumeration_is_cheap(basis.n_samples, basis.dim)
    ):
        return "enumerate"
    return "search" if smooth else "sample"


@dataclass(frozen=True)
class SearchOptions:
    """The budget and oracle of the pattern search (``arrangements="search"``).

    Attributes
    ----------
    rounds : int
        Pattern-adding rounds at most (it stops earlier when the oracle finds no violating pattern).
    shared_rounds : int or None
        Atom-adding rounds of the shared-neuron search (:func:`fit_shared`; None: ``rounds``). Its rounds
        are cheaper and its atoms finer-grained (a pattern and one output direction), so it takes more;
        it stops earlier on ``gap_tol``. With the exact oracle it is at least :data:`EXACT_SHARED_ROUNDS`.
    time_limit : float or None
        Seconds; no new round starts after this (the last pattern set is still solved to ``tol``).
    max_new : int or None
        Patterns added per round (default: the initial sample / 4, at least 10).
    n_starts : int
        Random starts of the ascent oracle per output and sign.
    round_tol : float or None
        Torch solver: relative gap of the rounds before the last (the oracle needs an approximate dual
        point only); the last pattern set is re-solved, warm-started, to the solver's ``tol``.
    gap_tol : float or None
        Stop once the oracle's violating patterns lower the estimated dual bound by at most this fraction
        of the objective (:func:`convexbn.pattern_search.estimated_gap`).
    """

    rounds: int = 10
    shared_rounds: int | None = 30
    time_limit: float | None = None
    max_new: int | None = None
    n_starts: int = 200
    round_tol: float | None = 3e-3
    gap_tol: float | None = 3e-4

    def __post_init__(self):
        check_positive_int(self.rounds + 1, "rounds + 1")
        if self.shared_rounds is not None:
            check_positive_int(self.shared_rounds + 1, "shared_rounds + 1")
        if self.time_limit is not None:
            check_positive(self.time_limit, "time_limit")
        if self.max_new is not None:
            check_positive_int(self.max_new, "max_new")
        check_positive_int(self.n_starts + 1, "n_starts + 1")
        if self.round_tol is not None:
            check_positive(self.round_tol, "round_tol")
        if self.gap_tol is not None:
            check_positive(self.gap_tol, "gap_tol")


# ------------------------------------------------------------------------------------------- bounds
def program_bounds(solution: ConvexBNSolution, found_value: float | None = None) -> dict:
    """How far ``solution`` may be from the global optimum of its program class (docs/math.md section 6).

    Returns a dict with ``objective``; ``own_value`` (the largest dual value over the solution's own
    patterns) and ``own_gap`` (the relative gap of the certificate over them: small at a solved
    restriction); ``lower_bound`` (a certified bound on the optimum over *every* pattern: the dual point
    scaled by the enumerated patterns' largest value when the arrangements are exact, else by the universal
    bound of the module docstring); ``estimated_lower_bound`` (scaled by the largest value over the own
    patterns and ``found_value``, the oracle's best: a bound only if no pattern is more violated); ``exact``.
    """
    problem = solution.problem
    F = solution.predict_train()
    if problem.loss.smooth or solution.dual is None:
        grad = problem.loss.grad(F, problem.Y)
    else:
        grad = -solution.dual
    lam = -grad
    beta = problem.beta
    own = float(pattern_dual_values(problem.Uprime, solution.arrangements.mask, lam).max(initial=0.0))
    objective = solution.objective

    def bound(value):
        scale = 1.0 if value <= beta else beta / value
        return float(-problem.loss.conjugate(scale * grad, problem.Y))

    exact = bool(solution.arrangements.exact)
    if exact:
        universal = own
    else:
        norm = float(np.max(problem.column_weights))  # ||U'_F||_2: U has orthonormal columns
        pos = np.linalg.norm(np.clip(lam, 0, None), axis=0)
        neg = np.linalg.norm(np.clip(-lam, 0, None), axis=0)
        universal = norm * float(np.max(np.maximum(pos, neg), initial=0.0))
    estimated = max(own, found_value or 0.0)
    scale = max(abs(objective), 1e-12)
    # the solver's own best bound (FISTA keeps the best of all its checks) bounds the same restriction
    own_bound = max(bound(own), float(solution.info.get("lower_bound", -np.inf)))
    return {
        "objective": objective,
        "own_value": own,
        "own_gap": (objective - own_bound) / scale,
        "lower_bound": bound(universal),
        "estimated_lower_bound": bound(estimated),
        "found_value": found_value,
        "exact": exact,
    }


def estimate_critical_beta(basis: BNBasis, Y: np.ndarray, loss, *, n_arrangements: int = 200,
                           random_state=None) -> float:  # fmt: skip
    """The ``beta`` above which the empty network solves the exact program, estimated.

    Zero is optimal iff ``lambda0 = -grad L(0)`` is dual feasible over every pattern (docs/math.md section
    6): the critical beta is the largest dual value at ``lambda0``. Estimated here as the largest over a
    sample of ``n_arrangements`` patterns, the all-active pattern, and the patterns the ascent oracle
    visits from them (a lower estimate; exact when the sample is exhaustive).
    """
    from .arrangements import sample_arrangements
    from .pattern_search import ascent_dual_value

    lossf = get_loss(loss)
    Y = np.asarray(Y, dtype=np.float64).reshape(basis.n_samples, -1)
    lam = -lossf.grad(np.zeros_like(Y), Y)
    arr = sample_arrangements(basis, n_arrangements, random_state=random_state)
    ones = np.ones((basis.n_samples, 1), dtype=bool)
    values = pattern_dual_values(basis.Uprime, np.hstack([arr.mask, ones]), lam)
    best = float(values.max(initial=0.0))
    found = ascent_dual_value(basis.Uprime, lam, random_state=random_state)
    return max(best, found)


# ---------------------------------------------------------------------------------------------- fit
@dataclass
class ProgramFit:
    """One program's result inside a :class:`ConvexFit`."""

    solution: ConvexBNSolution
    network: BNNetwork
    history: list
    bounds: dict
    fallback: str | None = None


@dataclass
class ConvexFit:
    """The result of :func:`fit_convex_bn`.

    Attributes
    ----------
    programs : list of ProgramFit
        One per target array: its solution (on the final pattern set), network, history and bounds.
    network : BNNetwork
        The programs' networks side by side (one output per program column).
    beta : float
        The weight decay of the programs (summed loss: docs/math.md section 1).
    method : str
        How the arrangements were chosen: ``"search"``, ``"sample"`` or ``"enumerate"``.
    solver : str
        The backend that solved them (``"clarabel,torch"`` when some fell back).
    objective : float
        Sum of the programs' objectives (4) (= objective (3) of ``network``).
    lower_bound : float
        Certified lower bound on the global optimum of the class over every pattern (sum over programs).
    estimated_lower_bound : float
        The bound if no pattern is more violated than the search found.
    gap, estimated_gap : float
        ``(objective - bound) / |objective|``.
    certified : bool
        The arrangements are exact and ``gap <= tol``: a certified global optimum.
    dual_ratio : float
        Largest dual value found (own patterns and oracle) over ``beta``; at most 1 + tol when the search
        found no violating pattern.
    history : list of dict
        Per round, summed over programs: ``round``, ``n_patterns``, ``objective``, ``seconds``.
    seconds : float
        Wall time of the whole fit.
    n_arrangements : int
        Patterns of the largest final program.
    n_violating : int or None
        Violating patterns the oracle found at the final point (summed over programs; ``None`` when it
        did not run: exact patterns, or the hinge loss).
    basis : BNBasis
        The (unfiltered) BN basis of ``X``.
    """

    programs: list
    network: BNNetwork
    beta: float
    method: str
    solver: str
    objective: float
    lower_bound: float
    estimated_lower_bound: float
    gap: float
    estimated_gap: float
    certified: bool
    dual_ratio: float
    history: list
    seconds: float
    n_arrangements: int = 0
    n_violating: int | None = None
    basis: BNBasis | None = None
    info: dict = field(default_factory=dict)

    @property
    def solutions(self) -> list:
        return [p.solution for p in self.programs]


def _solver_options(solver: str, options: dict) -> dict:
    """The fit's generic options (``tol``, ``max_iter``, ``verbose``, torch's own) in the backend's names."""
    options = dict(options)
    tol, max_iter = options.pop("tol", None), options.pop("max_iter", None)
    verbose = bool(options.pop("verbose", False))
    torch_only = {k: options.pop(k) for k in list(options) if k in _TORCH_KEYS}
    if solver == "closed_form":
        return {}
    if solver == "torch":
        out = {"verbose": verbose, **torch_only, **options}
        if max_iter is not None:
            out["max_iter"] = max_iter
        if tol is not None:
            out["tol"] = tol
        return out
    out = {"verbose": verbose, **options}
    if solver == "clarabel":
        if max_iter is not None:
            out["max_iter"] = max_iter
        if tol is not None:
            out.update(tol_gap_abs=tol, tol_gap_rel=tol, tol_feas=tol)
    elif solver == "scs":
        if max_iter is not None:
            out["max_iters"] = max_iter
        if tol is not None:
            out.update(eps_abs=tol, eps_rel=tol)
    elif solver == "mosek" and tol is not None:
        out["mosek_params"] = {"MSK_DPAR_INTPNT_CO_TOL_REL_GAP": tol}
    return out


_TORCH_KEYS = ("device", "dtype", "progress", "callback", "warm_start", "method", "checkpoint", "resume",
               "checkpoint_every", "projection", "memory_limit", "finish_dtype")  # fmt: skip
#: The torch solver's default relative gap of a pattern search's final solve (``tol`` overrides it): the
#: restriction's distance from the global optimum dominates a tighter solve. Fixed pattern sets (sampled,
#: enumerated, given) are solved to the backend's own default.
SEARCH_TOL = 3e-4
#: The shared-neuron search's final relative gap and its largest estimated-gap stop (:func:`fit_shared`).
SHARED_TOL = 1e-5


def _solve(problem, requested: str, options: dict, warm=None):
    """Solve one program; with ``requested="auto"`` a conic failure falls back to the torch solver."""
    solver = choose_solver(problem, requested)
    opts = _solver_options(solver, options)
    if warm is not None and solver == "torch":
        opts["warm_start"] = warm
    fallback = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SolverWarning)  # the fit reports statuses itself
        try:
            solution = problem.solve(solver, **opts)
        except SolverError as exc:
            if requested != "auto" or solver == "torch":
                raise
            fallback = str(exc)
            solution = problem.solve("torch", **_solver_options("torch", options))
    return solution, fallback


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
    neurons: str = "per_output",
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
        neurons feed every output (:func:`fit_shared`); a single output column is the scalar program
        either way. ``"auto"``: shared for smooth losses with two or more output columns, no spectral
        filter and ``solver`` ``"auto"`` or ``"torch"`` (the shared program's only solver is the torch
        FISTA of :mod:`convexbn.solvers.shared_fista`); per-output otherwise.

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
        if neurons == "shared" and not lossf.smooth:
            raise ValueError(f"neurons='shared' needs a smooth loss, got {lossf.name!r}; use "
                             "neurons='per_output'")  # fmt: skip
        if neurons == "shared" and implicit_set:
            raise ValueError("neurons='shared' does not take implicit_reg; use neurons='per_output'")
        if neurons == "shared" and solver not in SHARED_SOLVERS:
            raise ValueError(f"neurons='shared' is solved by the torch solver only (solver in "
                             f"{SHARED_SOLVERS}), got solver={solver!r}; use "
                             "neurons='per_output'")  # fmt: skip
        if n_cols >= 2 and lossf.smooth and not implicit_set and solver in SHARED_SOLVERS:
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


#: Largest relative gap between objective (3) of the recovered network (a plain forward pass) and the
#: convex objective (4) accepted without a ConvergenceWarning.
EQUIVALENCE_RTOL = 1e-6


# --------------------------------------------------------------------------------- shared neurons
def estimate_shared_critical_beta(basis: BNBasis, Y: np.ndarray, loss, *, random_state=None) -> float:
    """The ``beta`` above which the empty network is optimal in the shared-neuron class, estimated.

    The largest ``||Lambda0^T (U' z)_+||`` at ``Lambda0 = -grad L(0)`` over unit ``z`` (eq. (8b)) that the
    ascent oracle finds (a lower estimate), at least the per-output critical beta's sample estimate.
    """
    from .neuron_search import ascent_neurons

    lossf = get_loss(loss)
    lam = -lossf.grad(np.zeros_like(Y), Y)
    values = ascent_neurons(basis.Uprime, lam, n_starts=200, random_state=random_state)[3]
    return float(values[0]) if len(values) else 0.0


def fit_shared(
    X,
    Y: np.ndarray,
    beta="auto",
    *,
    loss: str = "squared",
    arrangements="auto",
    n_arrangements: int | str = "auto",
    search: SearchOptions | None = None,
    solver_options: dict | None = None,
    random_state=None,
    warm=None,
    basis: BNBasis | None = None,
    tol: float = 1e-4,
    owner: str = "fit_shared",
    start: float | None = None,
) -> ConvexFit:
    """Fit the shared-neuron network of ``C`` outputs: program (8a) with its atoms grown by the oracle.

    The vector-output counterpart of :func:`fit_convex_bn` (docs/math.md section 8): one program whose
    hidden neurons feed every output, solved by :func:`convexbn.neuron_search.search_shared_neurons`.
    ``arrangements``: ``"search"`` grows the atoms from none by the ascent oracle; ``"enumerate"`` (and
    ``"auto"`` when the Cover bound is at most :data:`AUTO_ENUMERATE_MAX` and the exact oracle's face
    count is affordable) uses the exact oracle over every pattern, so the result is certified;
    ``"sample"`` / an :class:`Arrangements` fixes the atoms to the patterns with the ``2 C`` directions
    ``+-e_c`` (the per-output programs' atoms, solved jointly) and does not search; a
    :class:`~convexbn.shared_problem.SharedAtoms` is used as given (no search; ``warm`` groups of its
    leading atoms are kept).

    Parameters are those of :func:`fit_convex_bn`; ``Y`` is the encoded (n, C) target and ``warm`` a
    one-element list ``[(SharedAtoms, W)]`` of a previous fit on the same data.

    Returns
    -------
    ConvexFit
        With one program (a :class:`ProgramFit` whose solution is a
        :class:`~convexbn.shared_problem.SharedSolution`), ``solver="torch"`` (its FISTA) and
        ``info["neurons"] = "shared"``. The certified ``lower_bound`` is exact with the exact oracle,
        else the universal bound of :func:`convexbn.shared_problem.universal_shared_value`; the estimated
        one uses the best violation the ascent oracle found (not a certificate).
    """
    from math import comb

    from .neuron_search import EXACT_ORACLE_MAX_FACES, search_shared_neurons
    from .recovery import recover_shared_network
    from .shared_problem import SharedAtoms, universal_shared_value

    start = time.perf_counter() if start is None else start
    lossf = get_loss(loss)
    search = SearchOptions() if search is None else search
    options = {k: v for k, v in (solver_options or {}).items() if v is not None}
    tol_solve = options.pop("tol", None)
    options.pop("verbose", None)
    shared_opts = {k: options[k] for k in ("max_iter", "device", "dtype", "projection") if k in options}
    basis = bn_basis(X) if basis is None else basis
    rng = check_random_state(random_state)
    Y = np.asarray(Y, dtype=np.float64)
    n, k, C = basis.n_samples, basis.dim, Y.shape[1]
    atoms, W0, exact_patterns = None, None, None
    if isinstance(arrangements, SharedAtoms):
        method, atoms = "given", arrangements
    elif isinstance(arrangements, Arrangements):
        method = "given"
        atoms = SharedAtoms.from_patterns(arrangements.mask, C)
    else:
        P0 = default_n_arrangements(basis) if n_arrangements == "auto" else n_arrangements
        P0 = check_positive_int(P0, "n_arrangements")
        method = check_choice(arrangements, "arrangements", ARRANGEMENT_METHODS)
        if method in ("auto", "enumerate"):
            bound = max_arrangements(n, k)
            faces = bound * sum(comb(n, j) for j in range(k))
            cheap = bound <= max(P0, AUTO_ENUMERATE_MAX) and faces <= EXACT_ORACLE_MAX_FACES
            if method == "enumerate" or cheap:
                method = "enumerate"
                exact_patterns = make_arrangements(basis, P0, method="exact",
                                                   max_patterns=max(20_000, P0)).mask  # fmt: skip
            else:
                method = "search"
        if method == "sample":
            atoms = SharedAtoms.from_patterns(make_arrangements(basis, P0, random_state=rng).mask, C)
    if warm:
        w = warm[0]
        if w is not None and isinstance(w[0], SharedAtoms):
            if method in ("search", "enumerate"):
                atoms, W0 = w
            elif method == "given":  # the previous groups on the given atoms they share (the first ones)
                W0 = np.zeros((atoms.n_atoms, k))
                same = min(w[0].n_atoms, atoms.n_atoms)
                if same and np.array_equal(w[0].mask, atoms.mask[:, :same]) and np.allclose(
                    w[0].directions, atoms.directions[:same]
                ):
                    W0[:same] = w[1][:same]
    seed = int(rng.randint(2**31 - 1))
    if isinstance(beta, str):
        if beta != "auto":
            raise ValueError(f"beta must be a positive number or 'auto', got {beta!r}")
        crit = estimate_shared_critical_beta(basis, Y, lossf, random_state=seed)
        beta = AUTO_BETA_FRACTION * crit if crit > 0 else 1.0
    beta = check_positive(beta, "beta")
    rounds = search.rounds if search.shared_rounds is None else search.shared_rounds
    # the shared search's rounds are cheap, its final atom set small (after realignment): both its final
    # solve and its stop are tighter than the pattern search's
    final_tol = SHARED_TOL if tol_solve is None else tol_solve
    round_tol = None if search.round_tol is None else 0.1
    gap_tol = None if search.gap_tol is None else min(search.gap_tol, SHARED_TOL)
    if method in ("sample", "given"):
        rounds = 0
    elif exact_patterns is not None:
        # the exact oracle certifies: solve every round to the certificate's accuracy
        rounds = max(rounds, EXACT_SHARED_ROUNDS)
        final_tol = min(final_tol, tol / 3)
        round_tol, gap_tol = final_tol, tol / 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SolverWarning)
        solution, history, oracle = search_shared_neurons(
            basis, Y, beta, loss=lossf.name, atoms=atoms, warm_start=W0, rounds=rounds,
            max_new=search.max_new, n_starts=max(search.n_starts, 1) * 5 // 2, tol=final_tol,
            round_tol=round_tol, gap_tol=gap_tol, time_limit=search.time_limit,
            exact_patterns=exact_patterns, random_state=seed, solver_options=shared_opts,
        )  # fmt: skip
    network = recover_shared_network(solution)
    F = solution.predict_train()
    lam = -lossf.grad(F, Y)
    problem = solution.problem
    own = float(problem.atom_dual_values(lam).max(initial=0.0))
    found = max(own, oracle["value"])
    exact = bool(oracle["exact"])
    certified_value = found if exact else max(universal_shared_value(basis.Uprime, lam), found)
    objective = solution.objective
    lower = problem.dual_bound(F, certified_value)
    estimated = problem.dual_bound(F, found)
    scale = max(abs(objective), 1e-12)
    forward = network.objective(X, Y)
    bounds = {
        "objective": objective, "own_value": own, "own_gap": (objective - problem.dual_bound(F, own)) / scale,
        "lower_bound": lower, "estimated_lower_bound": estimated, "found_value": oracle["value"],
        "exact": exact, "n_violating": None if exact else oracle["n_violating"],
        "forward_objective": float(forward), "equivalence_gap": abs(forward - objective) / scale,
    }  # fmt: skip
    _warn_shared(solution, bounds, owner)
    program = ProgramFit(solution=solution, network=network, history=history, bounds=bounds)
    gap = (objective - lower) / scale
    return ConvexFit(
        programs=[program],
        network=network,
        beta=beta,
        method=method,
        solver="torch",
        objective=objective,
        lower_bound=lower,
        estimated_lower_bound=estimated,
        gap=gap,
        estimated_gap=(objective - estimated) / scale,
        certified=bool(exact and gap <= tol),
        dual_ratio=found / beta,
        history=[{"round": h["round"], "n_patterns": h["n_patterns"], "objective": h["objective"],
                  "seconds": h["seconds"]} for h in history],  # fmt: skip
        seconds=time.perf_counter() - start,
        n_arrangements=int(solution.atoms.n_atoms),
        n_violating=bounds["n_violating"],
        basis=basis,
        info={"neurons": "shared"},
    )


def _warn_shared(solution, bounds: dict, owner: str) -> None:
    """A stopped solver, and a network whose objective (3) differs from the program's (8a)."""
    from sklearn.exceptions import ConvergenceWarning

    if solution.status != "optimal":
        warnings.warn(
            f"{owner}: the shared-neuron solver stopped before reaching the requested accuracy (status "
            f"{solution.status!r}, relative gap {solution.info.get('gap', float('nan')):.1e}); increase "
            "max_iter or loosen tol", ConvergenceWarning, stacklevel=3,
        )  # fmt: skip
    if bounds["equivalence_gap"] > EQUIVALENCE_RTOL:
        warnings.warn(
            f"{owner}: the recovered shared network's objective (3) {bounds['forward_objective']:.10g} "
            f"differs from the convex objective (8a) {bounds['objective']:.10g} by "
            f"{bounds['equivalence_gap']:.1e} relative (cone-constraint violation "
            f"{solution.constraint_violation:.1e})", ConvergenceWarning, stacklevel=3,
        )  # fmt: skip
