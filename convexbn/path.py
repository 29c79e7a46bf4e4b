"""A regularization path over ``beta``: largest first, each solution the warm start of the next."""

from __future__ import annotations

import numpy as np

from .arrangements import Arrangements
from .basis import BNBasis
from .certificate import dual_values
from .losses import get_loss
from .problem import ConvexBNProblem, ConvexBNSolution

__all__ = ["critical_beta", "regularization_path"]


def critical_beta(basis: BNBasis, arrangements: Arrangements, y, *, loss: str = "squared") -> float:
    """The smallest ``beta`` at which the empty network (all groups zero) solves program (4).

    Zero is optimal iff ``lambda = -grad L(0)`` is dual feasible (docs/math.md section 6): the largest dual
    value ``max |lambda_c^T D_i U' u|`` over the cone and unit ball, taken over ``arrangements``. A path
    starts just below it; every ``beta`` at or above it gives ``n_neurons == 0``.

    Parameters
    ----------
    basis, arrangements, y, loss
        As for :class:`~convexbn.ConvexBNProblem`.

    Returns
    -------
    float
    """
    lossf = get_loss(loss)
    Y = lossf.encode_targets(y)
    if Y.shape[0] != basis.n_samples:
        raise ValueError(f"y has {Y.shape[0]} samples, the basis {basis.n_samples}")
    lam = -lossf.grad(np.zeros_like(Y), Y)
    return float(dual_values(basis.Uprime, arrangements.mask, lam).max(initial=0.0))


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
    penalty included (see ``warm_start`` in :func:`convexbn.solvers.torch.solve_torch`); a larger
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
