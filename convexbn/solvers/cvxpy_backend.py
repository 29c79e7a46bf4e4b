"""Interior-point / conic backends through cvxpy: Clarabel (default), MOSEK (when licensed), SCS.

The program is built directly from the (n, P) mask: ``cp.multiply(mask, U' @ W.T)`` is the matrix whose
column ``i`` is ``D_i U' w_i``; the cone constraints are ``cp.multiply(2 mask - 1, U' @ W.T) >= 0``.
The prediction ``F`` is its own variable so that the dual of its defining equality is the dual vector
``lambda = -grad L(F*)`` used by the certificate (also for the non-smooth hinge loss).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field

import cvxpy as cp
import numpy as np

from .._validation import check_positive_int
from ..exceptions import SolverError, SolverWarning
from .base import SolverResult

__all__ = ["solve_cvxpy", "mosek_license", "resolve_cvxpy_solver", "build_cvxpy_problem", "CvxpySettings"]


@dataclass(frozen=True)
class CvxpySettings:
    """The conic backends' options: the cvxpy solver, its log, and its own options (passed through)."""

    solver: str = "CLARABEL"
    verbose: bool = False
    solver_options: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.solver, str):
            raise TypeError(f"cvxpy_solver must be a string, got {type(self.solver).__name__}")
        for key in ("max_iter", "max_iters"):  # Clarabel's and SCS's names
            if key in self.solver_options:
                check_positive_int(self.solver_options[key], key)

# Tolerances applied when the caller gives none: tight enough for the 1e-6 equivalence checks.
DEFAULT_OPTIONS = {
    "CLARABEL": {},
    "MOSEK": {},
    "SCS": {"eps_abs": 1e-7, "eps_rel": 1e-7, "max_iters": 200_000},
}
# When Clarabel fails or stops at "optimal_inaccurate" (both seen on exponential-cone losses), it is
# re-solved with these settings, in this order: a failure goes on down the list until a run succeeds,
# an "optimal_inaccurate" answer is retried once (the better-labelled of the two is kept), and only when
# every attempt fails is a SolverError raised.
CLARABEL_RETRIES = (
    {"static_regularization_constant": 1e-7, "max_iter": 400},
    {"equilibrate_enable": False, "max_iter": 400},
    {"max_step_fraction": 0.8, "max_iter": 400},
)


@functools.lru_cache(maxsize=1)
def mosek_license() -> tuple[bool, str]:
    """Whether MOSEK can actually solve here: ``(True, "")`` or ``(False, reason)``.

    ``cvxpy.installed_solvers()`` lists MOSEK whenever the package imports, licensed or not, so the
    license is checked out once and the answer cached.
    """
    try:
        import mosek
    except ImportError:
        return False, "the mosek package is not installed (pip install 'convexbn[mosek]')"
    try:
        with mosek.Env() as env:
            env.checkoutlicense(mosek.feature.pts)
    except mosek.Error as exc:  # err_missing_license_file and friends
        return False, f"MOSEK is installed but has no usable license ({exc})"
    return True, ""


def resolve_cvxpy_solver(name: str) -> str:
    """Map a requested cvxpy solver to one that can run here.

    MOSEK without a license falls back to Clarabel with a :class:`SolverWarning`; any other solver that
    is not installed is a ``ValueError`` naming the installed ones.
    """
    if not isinstance(name, str):
        raise TypeError(f"cvxpy_solver must be a string, got {type(name).__name__}")
    name = name.upper()
    if name == "MOSEK":
        ok, reason = mosek_license()
        if not ok:
            warnings.warn(f"{reason}; falling back to CLARABEL", SolverWarning, stacklevel=3)
            return "CLARABEL"
        return name
    installed = cp.installed_solvers()
    if name not in installed:
        hint = " (pip install scs)" if name == "SCS" else ""
        raise ValueError(
            f"cvxpy solver {name!r} is not installed{hint}; installed solvers: {sorted(installed)}"
        )
    return name


def target_scale(problem) -> float:
    """The factor ``s`` the squared loss's targets are divided by before a conic solve.

    Program (4) with squared loss is homogeneous: ``(Y, beta) -> (Y / s, beta / s)`` maps its solutions
    ``W`` to ``W / s`` and its objective to ``objective / s^2``. Interior-point tolerances are absolute
    in places, so targets of size 1e6 (seen: Clarabel reports "infeasible") are solved at unit scale.
    The other losses take targets in {-1, +1} or one-hot and are not scaled.
    """
    if not problem.loss.scalable_targets:
        return 1.0
    size = float(np.sqrt(np.mean(problem.Y**2)))
    return size if size > 0 and not (1e-3 <= size <= 1e3) else 1.0


def build_cvxpy_problem(problem, scale: float = 1.0):
    """The cvxpy form of ``problem``: returns ``(cp.Problem, W_pos vars, W_neg vars, F var, fit)``.

    ``fit`` is the list of equality constraints defining ``F``; their duals give ``lambda``.
    With ``scale`` (squared loss only, see :func:`target_scale`) the program is built for
    ``Y / scale`` and ``beta / scale``; multiply the variables by ``scale`` to undo it.
    """
    Uprime, mask = problem.Uprime, problem.mask.astype(np.float64)
    signs = 2.0 * mask - 1.0
    n, C = problem.Y.shape
    P, k = problem.n_patterns, problem.dim
    exact = problem.formulation == "exact"
    F = cp.Variable((n, C))
    W_pos = [cp.Variable((P, k)) for _ in range(C)]
    W_neg = [cp.Variable((P, k)) for _ in range(C)] if exact else []
    fit, cones, penalty = [], [], 0
    for c in range(C):
        W = W_pos[c] - W_neg[c] if exact else W_pos[c]
        fit.append(F[:, c] == cp.sum(cp.multiply(mask, Uprime @ W.T), axis=1))
        penalty = penalty + cp.sum(cp.norm(W_pos[c], 2, axis=1))
        if exact:
            penalty = penalty + cp.sum(cp.norm(W_neg[c], 2, axis=1))
            cones += [
                cp.multiply(signs, Uprime @ W_pos[c].T) >= 0,
                cp.multiply(signs, Uprime @ W_neg[c].T) >= 0,
            ]
    objective = cp.Minimize(problem.loss.cvxpy(F, problem.Y / scale) + (problem.beta / scale) * penalty)
    return cp.Problem(objective, fit + cones), W_pos, W_neg, F, fit


def solve_cvxpy(problem, *, cvxpy_solver: str = "CLARABEL", verbose: bool = False, **solver_options):
    """Solve ``problem`` with a conic solver through cvxpy.

    Parameters
    ----------
    problem : ConvexBNProblem
    cvxpy_solver : str
        ``"CLARABEL"`` (default), ``"MOSEK"`` or ``"SCS"`` (any installed cvxpy solver that supports the
        loss's cones is accepted).
    verbose : bool
    **solver_options
        Passed to ``cvxpy.Problem.solve`` (e.g. ``eps_abs`` for SCS, ``tol_gap_rel`` for Clarabel).
        Without any, a Clarabel solve that fails is retried with each of :data:`CLARABEL_RETRIES` in
        turn, one that ends "optimal_inaccurate" with the first of them (``info["attempts"]`` and
        ``info["failures"]`` say what happened).

    Raises
    ------
    SolverError
        When every attempt fails or ends in a status other than optimal / optimal_inaccurate (e.g.
        "user_limit" after ``max_iter``); the message lists each attempt.

    Returns
    -------
    SolverResult
    """
    settings = CvxpySettings(cvxpy_solver, verbose, dict(solver_options))
    name = resolve_cvxpy_solver(settings.solver)
    scale = target_scale(problem)
    prob, W_pos, W_neg, F, fit = build_cvxpy_problem(problem, scale)
    attempts = [{**DEFAULT_OPTIONS.get(name, {}), **settings.solver_options}]
    if name == "CLARABEL" and not settings.solver_options:
        attempts += list(CLARABEL_RETRIES)
    C, P, k = problem.n_outputs, problem.n_patterns, problem.dim
    kept, failures = None, []
    for attempt, options in enumerate(attempts):
        try:
            _run(prob, name, verbose, options)
        except SolverError as exc:
            failures.append(str(exc))
            continue
        if prob.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
            failures.append(f"status {prob.status!r}")
            continue
        result = {
            "W_pos": scale * np.stack([W.value for W in W_pos]),
            "W_neg": scale * np.stack([W.value for W in W_neg]) if W_neg else np.zeros((C, P, k)),
            # cvxpy's dual of  F == sum D_i U' w_i  is  -grad L(F*)  (checked in the tests)
            "dual": scale * np.column_stack([con.dual_value for con in fit]),
            "status": "optimal" if prob.status == cp.OPTIMAL else "optimal_inaccurate",
            "solver_objective": float(prob.value) * scale**2,
            "stats": prob.solver_stats,
            "attempt": attempt,
        }
        if kept is None or result["status"] == "optimal":
            kept = result
        if result["status"] == "optimal" or attempt >= 1:
            break  # an inaccurate answer is retried once (a failure through every retry): bounded cost
    if kept is None:
        tried = "; ".join(f"attempt {i + 1}: {f}" for i, f in enumerate(failures))
        hint = (
            " Try solver='torch' (first-order, no conic reformulation), or another cvxpy solver."
            if name == "CLARABEL"
            else ""
        )
        raise SolverError(f"cvxpy solver {name} found no optimal solution ({tried}).{hint}")
    stats = kept["stats"]
    info = {
        "solver_objective": kept["solver_objective"],
        "solver_time": getattr(stats, "solve_time", None),
        "cvxpy_status": "optimal" if kept["status"] == "optimal" else cp.OPTIMAL_INACCURATE,
        "retried": kept["attempt"] > 0,
        "attempts": attempt + 1,
        "failures": failures,
        "target_scale": scale,
    }
    return SolverResult(kept["W_pos"], kept["W_neg"], kept["status"], f"cvxpy:{name}",
                        n_iter=getattr(stats, "num_iters", None), dual=kept["dual"], info=info)  # fmt: skip


def _run(prob, name: str, verbose: bool, options: dict) -> None:
    try:
        with warnings.catch_warnings():
            # cvxpy's generic "Solution may be inaccurate": reported through our status instead
            warnings.filterwarnings("ignore", message="Solution may be inaccurate", category=UserWarning)
            prob.solve(solver=name, verbose=verbose, **options)
    except cp.error.SolverError as exc:
        raise SolverError(f"cvxpy solver {name} failed: {exc}") from exc
    except Exception as exc:  # e.g. mosek.Error raised from inside the solver
        if type(exc).__module__.startswith("mosek"):
            raise SolverError(f"MOSEK failed: {exc}") from exc
        raise
