"""The convex program (docs/math.md eq. (4)): data fit, group penalty and cone constraints.

Variables are stored as two arrays ``W_pos`` and ``W_neg`` of shape (C, P, k): ``W_pos[c, i]`` is
``u_i`` and ``W_neg[c, i]`` is ``u'_i`` of output ``c`` (per-output programs, docs/math.md section 8), with
``k = r + 1``. The prediction of output ``c`` is ``sum_i D_i U' (u_i - u'_i)``, computed from the
(n, P) mask and the (n, P) product ``U' (W_pos[c] - W_neg[c])^T`` without forming any ``D_i U'``.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from ._validation import check_choice, check_positive
from .arrangements import Arrangements
from .basis import BNBasis
from .exceptions import SolverError, SolverWarning
from .groups import cone_violation, group_norms, predict_from_groups
from .implicit_reg import filtered_basis, spectral_filter
from .losses import Loss, get_loss

__all__ = [
    "ConvexBNProblem",
    "ConvexBNSolution",
    "SolverError",
    "SolverWarning",
    "FORMULATIONS",
]

FORMULATIONS = ("exact", "gated")


@dataclass
class ConvexBNSolution:
    """The result of solving a :class:`ConvexBNProblem`.

    Attributes
    ----------
    problem : ConvexBNProblem
    W_pos, W_neg : ndarray of shape (C, P, k)
        ``u_i`` and ``u'_i`` per output and pattern (``W_neg`` is zero for the gated relaxation, whose
        single variable per pattern is stored in ``W_pos``).
    arrangements : Arrangements
        The patterns the groups belong to (the problem's, except for the closed form, which builds its own).
    status : str
        ``"optimal"`` or ``"optimal_inaccurate"`` (the latter also warns with :class:`SolverWarning`).
    objective : float
        Value of (4) at the returned (pruned) point, computed here in numpy, not taken from the solver.
    constraint_violation : float
        Largest relative violation of the cone constraints (0 for the gated relaxation).
    solve_time : float
        Wall-clock seconds spent in the backend.
    solver : str
        The backend that produced it, e.g. ``"cvxpy:CLARABEL"``, ``"closed_form"``.
    n_iter : int or None
    dual : ndarray of shape (n, C) or None
        Dual variable of the prediction (``-grad L`` at the optimum), where the backend provides one.
    info : dict
        Backend-specific details.
    """

    problem: ConvexBNProblem
    W_pos: np.ndarray
    W_neg: np.ndarray
    arrangements: Arrangements
    status: str
    objective: float
    constraint_violation: float
    solve_time: float
    solver: str
    n_iter: int | None = None
    dual: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    @property
    def formulation(self) -> str:
        return self.problem.formulation

    @property
    def n_neurons(self) -> int:
        """Number of nonzero groups (each becomes one hidden neuron)."""
        return int((group_norms(self.W_pos) > 0).sum() + (group_norms(self.W_neg) > 0).sum())

    def predict_train(self) -> np.ndarray:
        """Outputs on the training data, shape (n, C): ``sum_i D_i U' (u_i - u'_i)``."""
        return predict_from_groups(self.problem.Uprime, self.arrangements.mask, self.W_pos - self.W_neg)


class ConvexBNProblem:
    """The convex program (4) of a two-layer ReLU+BN network with weight decay ``beta``.

    Parameters
    ----------
    basis : BNBasis
        From :func:`convexbn.bn_basis` on the training inputs.
    arrangements : Arrangements
        From :func:`convexbn.sample_arrangements` / :func:`convexbn.enumerate_arrangements`.
    y : array-like of shape (n,) or (n, C)
        Targets, encoded by the loss: reals for ``"squared"``, {-1, +1} for ``"logistic"`` and
        ``"hinge"``, class labels or one-hot for ``"cross_entropy"``. Several columns give one program
        per output (docs/math.md section 8), coupled only through the loss.
    beta : float
        Weight decay, > 0.
    loss : str or Loss
        ``"squared"`` (default), ``"logistic"``, ``"hinge"`` or ``"cross_entropy"``.
    formulation : {"exact", "gated"}
        ``"exact"``: program (4) with its cone constraints, equivalent to the BN network.
        ``"gated"``: the unconstrained gated-ReLU relaxation (a different, larger model class; its
        solution is *not* a BN network and cannot be recovered as one).
    implicit_reg : None, str, float or SpectralFilter
        Spectral filter ``F`` of docs/math.md section 9 (:mod:`convexbn.implicit_reg`): the program is built
        on ``U'_F = [U F(S), 1/sqrt(n)]`` instead of ``U'``, encoding gradient descent's bias towards the
        directions of large singular values. ``None`` (default): the plain program (4). A truncating
        filter (``"top:k"``, ``"tau:x"``) builds the program on the leading directions only, so
        ``arrangements`` should come from :func:`convexbn.implicit_reg.filtered_basis`.

    Attributes
    ----------
    basis : BNBasis
        The basis the program is built on (the given one, truncated by a truncating filter).
    Uprime : ndarray of shape (n, k)
        The program's data matrix: ``U'``, or ``U'_F`` with a filter.
    column_weights : ndarray of shape (k,)
        ``[F(S), 1]``: ``Uprime = basis.Uprime * column_weights`` (all ones without a filter).
    """

    def __init__(
        self,
        basis: BNBasis,
        arrangements: Arrangements,
        y,
        beta: float,
        loss: str | Loss = "squared",
        formulation: str = "exact",
        implicit_reg=None,
    ):
        if not isinstance(basis, BNBasis):
            raise TypeError(f"basis must be a BNBasis (from bn_basis), got {type(basis).__name__}")
        if not isinstance(arrangements, Arrangements):
            raise TypeError(f"arrangements must be an Arrangements object, got {type(arrangements).__name__}")
        n_rows = basis.U.shape[0]  # n, or a shard's rows in a distributed solve
        if arrangements.n_samples != n_rows:
            raise ValueError(f"arrangements have {arrangements.n_samples} samples, the basis {n_rows}")
        if arrangements.n_patterns == 0:
            raise ValueError("arrangements hold no pattern")
        self.implicit_reg = spectral_filter(implicit_reg)
        basis, weights = filtered_basis(basis, self.implicit_reg)
        self.basis = basis
        self.arrangements = arrangements
        self.loss = get_loss(loss)
        self.beta = check_positive(beta, "beta")
        self.formulation = check_choice(formulation, "formulation", FORMULATIONS)
        Y = self.loss.encode_targets(y)
        if Y.shape[0] != n_rows:
            raise ValueError(f"y has {Y.shape[0]} samples but X has {n_rows}: inconsistent shapes")
        self.Y = Y
        self.column_weights = np.append(weights, 1.0)
        self.Uprime = basis.Uprime if self.implicit_reg.is_identity else basis.Uprime * self.column_weights

    # --- sizes -------------------------------------------------------------------------------------
    @property
    def n_samples(self) -> int:
        return self.basis.n_samples

    @property
    def n_outputs(self) -> int:
        return int(self.Y.shape[1])

    @property
    def n_patterns(self) -> int:
        return self.arrangements.n_patterns

    @property
    def dim(self) -> int:
        return self.basis.dim

    @property
    def mask(self) -> np.ndarray:
        return self.arrangements.mask

    # --- the program's pieces ----------------------------------------------------------------------
    def predict(self, W_pos: np.ndarray, W_neg: np.ndarray | None = None, mask=None) -> np.ndarray:
        """Outputs (n, C) of the convex model with variables ``W_pos``, ``W_neg`` (C, P, k)."""
        W = W_pos if W_neg is None else W_pos - W_neg
        return predict_from_groups(self.Uprime, self.mask if mask is None else mask, W)

    def penalty(self, W_pos: np.ndarray, W_neg: np.ndarray | None = None) -> float:
        """``beta * sum (||u_i|| + ||u'_i||)``."""
        total = group_norms(W_pos).sum()
        if W_neg is not None:
            total += group_norms(W_neg).sum()
        return self.beta * float(total)

    def objective(self, W_pos: np.ndarray, W_neg: np.ndarray | None = None, mask=None) -> float:
        """Value of (4) (or of the gated relaxation) at ``W_pos``, ``W_neg``."""
        F = self.predict(W_pos, W_neg, mask)
        return self.loss.value(F, self.Y) + self.penalty(W_pos, W_neg)

    def constraint_violation(self, W_pos: np.ndarray, W_neg: np.ndarray, mask=None) -> float:
        """Largest relative violation of the cone constraints of (4) (0 for the gated relaxation)."""
        if self.formulation == "gated":
            return 0.0
        mask = self.mask if mask is None else mask
        return max(cone_violation(self.Uprime, mask, W_pos), cone_violation(self.Uprime, mask, W_neg))

    # --- solving -----------------------------------------------------------------------------------
    def solve(self, solver: str = "cvxpy", *, prune_tol: float = 1e-7, **options) -> ConvexBNSolution:
        """Solve the program.

        Parameters
        ----------
        solver : str
            ``"cvxpy"`` (Clarabel, or ``cvxpy_solver=``), ``"clarabel"``, ``"mosek"`` (falls back to
            Clarabel with a :class:`SolverWarning` when MOSEK is not installed or not licensed),
            ``"scs"``, or ``"closed_form"`` (overparameterized squared loss, docs/math.md section 7).
            See :func:`convexbn.solvers.available_solvers`.
        prune_tol : float
            Interior-point methods return tiny nonzero groups instead of exact zeros. The smallest
            groups are zeroed as long as the objective rises by at most ``prune_tol`` relative; each
            remaining group is one neuron of the recovered network.
            The reported objective is the pruned point's. ``0`` keeps every group.
        **options
            Passed to the backend (e.g. ``verbose``, tolerances, ``cvxpy_solver``).

        Returns
        -------
        ConvexBNSolution

        Raises
        ------
        SolverError
            If the backend fails or reports anything but an (inaccurate) optimum.
        """
        from .solvers import get_solver
        from .solvers.base import SolverResult

        backend = get_solver(solver)
        prune_tol = check_positive(prune_tol, "prune_tol", allow_zero=True)
        start = time.perf_counter()
        raw = SolverResult.of(backend(self, **options))
        elapsed = time.perf_counter() - start
        arrangements = self.arrangements if raw.arrangements is None else raw.arrangements
        W_pos, W_neg = _prune(self, raw.W_pos, raw.W_neg, arrangements.mask, prune_tol)
        objective = self.objective(W_pos, W_neg, arrangements.mask)
        violation = self.constraint_violation(W_pos, W_neg, arrangements.mask)
        status = raw.status
        if status != "optimal":
            warnings.warn(
                f"solver {raw.solver} returned status {status!r}: the objective "
                f"{objective:.6g} may be above the optimum",
                SolverWarning,
                stacklevel=2,
            )
        return ConvexBNSolution(
            problem=self,
            W_pos=W_pos,
            W_neg=W_neg,
            arrangements=arrangements,
            status=status,
            objective=objective,
            constraint_violation=violation,
            solve_time=elapsed,
            solver=raw.solver,
            n_iter=raw.n_iter,
            dual=raw.dual,
            info=raw.info,
        )

    def certificate(self, solution: ConvexBNSolution, arrangements: Arrangements | None = None, **kw):
        """Dual certificate of ``solution`` over ``arrangements`` (default: this problem's).

        See :func:`convexbn.certificate.certify`.
        """
        from .certificate import certify

        return certify(solution, arrangements=arrangements, **kw)

    def __repr__(self) -> str:
        return (
            f"ConvexBNProblem(n={self.n_samples}, rank={self.basis.rank}, P={self.n_patterns}, "
            f"C={self.n_outputs}, beta={self.beta:g}, loss={self.loss.name!r}, "
            f"formulation={self.formulation!r}"
            + ("" if self.implicit_reg.is_identity else f", implicit_reg={str(self.implicit_reg)!r}")
            + ")"
        )


def _prune(problem: ConvexBNProblem, W_pos, W_neg, mask, tol: float):
    """Zero the smallest groups while the objective rises by at most ``tol`` (relative); see
    :func:`prune_groups`."""
    norms = np.concatenate([group_norms(W_pos).ravel(), group_norms(W_neg).ravel()])
    half = W_pos.size // W_pos.shape[-1]

    def pruned(keep):
        kp = keep[:half].reshape(W_pos.shape[:-1], order="C")[..., None]
        kn = keep[half:].reshape(W_neg.shape[:-1], order="C")[..., None]
        return W_pos * kp, W_neg * kn

    keep = prune_groups(norms, lambda keep: problem.objective(*pruned(keep), mask), tol)
    return (W_pos, W_neg) if keep is None else pruned(keep)


def prune_groups(norms: np.ndarray, objective, tol: float) -> np.ndarray | None:
    """The groups to keep when the smallest are zeroed while the objective rises by at most ``tol``.

    ``norms`` (flat) are the groups' norms, ``objective(keep)`` the objective with only the groups of the
    boolean mask ``keep`` nonzero. The number removed is found by bisection over the groups sorted by
    norm (O(log P) objective evaluations); a large group is never removed because its removal would
    exceed the budget. Returns None when there is nothing to prune.
    """
    nonzero = norms > 0
    if tol == 0 or not nonzero.any():
        return None
    order = np.argsort(norms)
    order = order[nonzero[order]]
    everything = np.ones(norms.size, dtype=bool)
    base = objective(everything)
    budget = tol * max(abs(base), 1e-12)

    def keep_mask(count):
        keep = everything.copy()
        keep[order[:count]] = False
        return keep

    lo, hi = 0, order.size  # invariant: removing `lo` groups is within budget
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if objective(keep_mask(mid)) - base <= budget:
            lo = mid
        else:
            hi = mid - 1
    return keep_mask(lo)
