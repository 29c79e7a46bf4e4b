"""Solver backends. Each takes a :class:`~convexbn.problem.ConvexBNProblem` and options and returns a
dict with ``W_pos``, ``W_neg``, ``status``, ``solver`` (and optionally ``n_iter``, ``dual``, ``info``,
``arrangements``); :meth:`ConvexBNProblem.solve` turns it into a :class:`ConvexBNSolution`.
A backend knows the problem's interface only, never an estimator.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from .closed_form import closed_form_applies, solve_closed_form
from .cvxpy_backend import mosek_license, solve_cvxpy

__all__ = ["get_solver", "available_solvers", "SOLVERS", "closed_form_applies", "mosek_license"]


def _torch_backend(problem, **options):
    from .torch_backend import solve_torch

    return solve_torch(problem, **options)


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
