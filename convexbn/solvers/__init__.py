"""Solver backends. Each takes a :class:`~convexbn.problem.ConvexBNProblem` and its options and returns a
:class:`~convexbn.solvers.base.SolverResult`; :meth:`ConvexBNProblem.solve` turns it into a
:class:`ConvexBNSolution`. A backend knows the problem's interface only, never an estimator. What each
supports is data (:data:`CAPABILITIES`), and ``solver="auto"`` is one choice over it
(:func:`choose_backend`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from .base import AUTO_CVXPY_MAX_ROWS_NONSMOOTH, FISTA_MAX_DIM, Capabilities, SolverResult, choose
from .closed_form import CAPABILITIES as CLOSED_FORM_CAPABILITIES
from .closed_form import closed_form_applies, solve_closed_form

__all__ = ["get_solver", "available_solvers", "choose_backend", "SOLVERS", "CAPABILITIES", "AUTO_CANDIDATES",
           "SolverResult", "closed_form_applies", "mosek_license"]  # fmt: skip


def solve_cvxpy(problem, **options) -> SolverResult:
    """:func:`convexbn.solvers.cvxpy_backend.solve_cvxpy` (cvxpy is imported by the first conic solve)."""
    from .cvxpy_backend import solve_cvxpy as solve

    return solve(problem, **options)


def mosek_license() -> tuple[bool, str]:
    """:func:`convexbn.solvers.cvxpy_backend.mosek_license`: whether MOSEK can solve here."""
    from .cvxpy_backend import mosek_license as check

    return check()


def _torch_backend(problem, **options):
    from .torch import solve_torch  # torch is imported when the torch solver first runs

    return solve_torch(problem, **options)


#: The conic backends (cvxpy): every loss and both formulations, on the CPU.
CVXPY_CAPABILITIES = Capabilities("cvxpy")
_TORCH = Capabilities("torch", devices=frozenset({"cpu", "cuda"}), distributed=True)
#: What each backend solves (the torch solver as a whole; its methods: ``convexbn.solvers.torch.METHODS``).
CAPABILITIES: dict[str, Capabilities] = {
    "cvxpy": CVXPY_CAPABILITIES,
    "clarabel": CVXPY_CAPABILITIES,
    "mosek": CVXPY_CAPABILITIES,
    "scs": CVXPY_CAPABILITIES,
    "closed_form": CLOSED_FORM_CAPABILITIES,
    "torch": _TORCH,
}
#: ``solver="auto"`` after the closed form: the first of these that supports the program and is within its
#: measured limits (docs/solvers.md, "Choosing a solver"): the torch solver's FISTA for smooth losses up to
#: ``k = FISTA_MAX_DIM``; Clarabel up to ``AUTO_CVXPY_MAX_ROWS_NONSMOOTH`` cone rows ``2 n P``; the torch
#: solver's ADMM / AL for the rest.
AUTO_CANDIDATES: tuple[Capabilities, ...] = (
    Capabilities("torch", smooth_only=True, devices=_TORCH.devices, auto_max_dim=FISTA_MAX_DIM),
    Capabilities("clarabel", auto_max_rows=AUTO_CVXPY_MAX_ROWS_NONSMOOTH),
    _TORCH,
)


def choose_backend(problem) -> str:
    """The backend ``solver="auto"`` runs: the closed form when it applies (docs/math.md section 7), else the
    first of :data:`AUTO_CANDIDATES` for ``problem``."""
    if closed_form_applies(problem)[0]:
        return "closed_form"
    return choose(problem, AUTO_CANDIDATES).name


SOLVERS: dict[str, Callable] = {
    "cvxpy": solve_cvxpy,
    "clarabel": partial(solve_cvxpy, cvxpy_solver="CLARABEL"),
    "mosek": partial(solve_cvxpy, cvxpy_solver="MOSEK"),
    "scs": partial(solve_cvxpy, cvxpy_solver="SCS"),
    "closed_form": solve_closed_form,
    "torch": _torch_backend,
}


def get_solver(name: str) -> Callable:
    """The backend called ``name`` (case-insensitive; ``"closed-form"`` is accepted too)."""
    if not isinstance(name, str):
        raise TypeError(f"solver must be a string, got {type(name).__name__}")
    key = name.lower().replace("-", "_")
    if key not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; expected one of {sorted(SOLVERS)}")
    return SOLVERS[key]


def available_solvers() -> dict[str, str]:
    """Each solver name with ``"available"`` or the reason it cannot run here."""
    import cvxpy as cp

    installed = cp.installed_solvers()
    ok, reason = mosek_license()
    return {
        "cvxpy": "available",
        "clarabel": "available" if "CLARABEL" in installed else "clarabel is not installed",
        "mosek": "available" if ok else reason,
        "scs": "available" if "SCS" in installed else "scs is not installed (pip install scs)",
        "closed_form": "available (squared loss, overparameterized data only)",
        "torch": _torch_status(),
    }


def _torch_status() -> str:
    """The torch solver's devices here and its CPU cone projections (numba when installed)."""
    import importlib.util

    import torch

    devices = "CPU and CUDA" if torch.cuda.is_available() else "CPU (no CUDA device)"
    if importlib.util.find_spec("numba") is not None:
        projections = "numba cone projections on the CPU"
    else:
        projections = "torch cone projections (pip install 'convexbn[numba]' for the faster CPU kernel)"
    return f"available: {devices}; {projections}"
