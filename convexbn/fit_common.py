"""What the fit core's two routines share (:mod:`convexbn.fit` for per-output programs,
:mod:`convexbn.fit_shared` for shared neurons): the defaults and their constants, ``solver="auto"``
(:func:`choose_solver`), the arrangement method, the search options, the bounds a fit reports, and one
program's solve with its fallback.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from ._validation import check_choice, check_positive, check_positive_int
from .arrangements import (
    enumeration_is_cheap,
    max_arrangements,
)
from .basis import BNBasis
from .certificate import pattern_dual_values
from .losses import get_loss
from .network import BNNetwork
from .problem import ConvexBNProblem, ConvexBNSolution, SolverError, SolverWarning

__all__ = ["choose_solver", "default_n_arrangements", "estimate_critical_beta", "program_bounds",
           "ConvexFit", "ProgramFit", "SearchOptions"]  # fmt: skip

ARRANGEMENT_METHODS = ("auto", "search", "sample", "enumerate")
NEURON_MODES = ("per_output", "shared", "auto")
#: The solvers of the shared-neuron program (its own FISTA, :mod:`convexbn.solvers.torch.shared_fista`).
SHARED_SOLVERS = ("auto", "torch")
#: ``beta="auto"`` is this fraction of the (estimated) critical beta (docs/estimators.md, "Defaults").
AUTO_BETA_FRACTION = 0.05
#: ``arrangements="auto"`` enumerates every pattern when the Cover bound is at most this (enumeration
#: solves one small LP per cell, about 13 ms per pattern: 5.6 s for the 421 patterns of n = 21, k = 3).
AUTO_ENUMERATE_MAX = 200
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
    from .solvers import choose_backend
    from .solvers.cvxpy_backend import resolve_cvxpy_solver

    if requested == "auto":
        return choose_backend(problem)
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
    shared_inner : {"auto", "atoms", "unit_neurons"}
        The shared-neuron search's inner program (:func:`fit_shared`): ``"atoms"``, program (8a) on its
        atoms by FISTA with exact cone projections (:mod:`convexbn.neuron_search`); ``"unit_neurons"``,
        the output lasso over unit neurons with a local slide, without projections
        (:mod:`convexbn.unit_neurons`); ``"auto"``: unit neurons for ``arrangements="search"`` on the
        CPU with ``n k`` above :data:`convexbn.unit_neurons.UNIT_NEURONS_MIN_SIZE`, atoms otherwise
        (small data, the exact oracle, given or sampled atoms, a GPU). Measured in docs/solvers.md, "The
        shared-neuron search".
    unit_gap_tol : float or None
        ``gap_tol`` of the unit-neuron search, looser than the atoms' (its rounds improve the objective
        slowly near the optimum; docs/solvers.md, "The shared-neuron search").
    merge_min_cos : float or None
        Near-copies of a neuron (directions and output directions within this cosine) are merged where that
        does not raise the objective (:func:`convexbn.neuron_merge.merge_duplicate_neurons`): by the
        unit-neuron search after each round's slide, by the atoms' search after its last round; None: no
        merge.
    """

    rounds: int = 10
    shared_rounds: int | None = 30
    time_limit: float | None = None
    max_new: int | None = None
    n_starts: int = 200
    round_tol: float | None = 3e-3
    gap_tol: float | None = 3e-4
    shared_inner: str = "auto"
    unit_gap_tol: float | None = 3e-3
    merge_min_cos: float | None = 0.999  # convexbn.neuron_merge.MERGE_MIN_COS

    def __post_init__(self):
        if self.merge_min_cos is not None and not -1.0 <= self.merge_min_cos <= 1.0:
            raise ValueError(f"merge_min_cos must be in [-1, 1] or None, got {self.merge_min_cos!r}")
        check_choice(self.shared_inner, "shared_inner", ("auto", "atoms", "unit_neurons"))
        if self.unit_gap_tol is not None:
            check_positive(self.unit_gap_tol, "unit_gap_tol")
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
               "checkpoint_every", "projection", "memory_limit", "finish_dtype", "threads")  # fmt: skip
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


#: Largest relative gap between objective (3) of the recovered network (a plain forward pass) and the
#: convex objective (4) accepted without a ConvergenceWarning.
EQUIVALENCE_RTOL = 1e-6


