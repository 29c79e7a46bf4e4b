"""A regularization path over ``beta``: largest first, each solution the warm start of the next."""

from __future__ import annotations

import numpy as np

from .arrangements import Arrangements
from .basis import BNBasis
from .problem import ConvexBNProblem, ConvexBNSolution

__all__ = ["regularization_path"]


def regularization_path(
    basis: BNBasis,
    arrangements: Arrangements,
    y,
    betas,
    *,
    loss: str = "squared",
    solver: str = "torch",
    **options,
) -> list[ConvexBNSolution]:
    """Solve program (4) for each ``beta`` in ``betas``, from the largest to the smallest.

    With ``solver="torch"`` each solve starts from the previous solution, ADMM's scaled duals and
    penalty included (see ``warm_start`` in :func:`convexbn.solvers.torch_backend.solve_torch`); a larger
    ``beta`` has fewer active groups, so the path moves from sparse to dense solutions. The conic solvers
    cannot be warm-started and solve each ``beta`` from scratch.

    Parameters
    ----------
    basis, arrangements, y, loss
        As for :class:`~convexbn.ConvexBNProblem` (shared by every point of the path).
    betas : sequence of float
        Weight decays (> 0), in any order.
    solver : str
        Any solver of :meth:`ConvexBNProblem.solve`.
    **options
        Passed to every solve.

    Returns
    -------
    list of ConvexBNSolution
        In decreasing order of ``beta`` (``solution.problem.beta``).
    """
    betas = np.sort(np.asarray(betas, dtype=np.float64).ravel())[::-1]
    if betas.size == 0:
        raise ValueError("betas is empty")
    solutions: list[ConvexBNSolution] = []
    for beta in betas:
        problem = ConvexBNProblem(basis, arrangements, y, beta=float(beta), loss=loss)
        warm = {"warm_start": solutions[-1]} if solver == "torch" and solutions else {}
        solutions.append(problem.solve(solver, **options, **warm))
    return solutions
