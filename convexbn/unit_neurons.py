"""The shared-neuron program (8a) without cone projections: column generation over unit neurons.

Program (8a) over every pattern and direction is the group lasso over *unit neurons*: a neuron ``z`` on
the unit sphere with a free output row ``v in R^C`` adds ``(U' z)_+ v^T`` to the predictions and
``beta ||v||`` to the penalty (docs/math.md section 8). Its atom ``(D(z), v / ||v||)`` with the group
``u = ||v|| z``, which lies in the cone ``K_{D(z)}``, is the same point of (8a), with the same objective.
So a solution over a finite set of unit neurons is a feasible point of (8a), and the dual condition (8b)
certifies it over the whole class exactly as for atoms.

:func:`search_unit_neurons` grows the neurons as :func:`convexbn.neuron_search.search_shared_neurons`
grows atoms, with an inner solve that needs only products with ``U'``:

1. the output lasso over the fixed neurons
   (:func:`~convexbn.solvers.torch.shared_fista.solve_output_lasso`, on the activations ``(U' Z^T)_+``);
2. a local step that moves the live neurons' directions and output rows together (L-BFGS on the same
   objective, in torch), kept only when it lowers the objective. It is the "sliding" step of sliding
   Frank-Wolfe (Denoyelle, Duval, Peyre and Soubies, 2019): where (8a) moves a group within its cone, it
   moves a neuron within and across cones;
3. the ascent oracle of (8b) (:func:`~convexbn.neuron_search.ascent_neurons`) from random starts and
   from the live neurons; each start's best neuron above ``beta`` is a new neuron (zero output row); at
   the empty network, up to :data:`UNIT_MIN_NEW` of the iterates visited above ``beta``.

With ``k = r + 1`` in the hundreds, each exact cone projection of (8a)'s FISTA is itself a quadratic
program in ``R^k`` over ``n`` half-spaces; this route's rounds cost a few products with the ``(n, k)``
matrix ``U'`` instead (docs/solvers.md, "Inputs with hundreds of features").
"""

from __future__ import annotations

import time

import numpy as np
import torch
from sklearn.utils import check_random_state

from .basis import BNBasis
from .losses import get_loss
from .neuron_merge import MERGE_MIN_COS, atoms_of_neurons, merge_duplicate_neurons, neurons_of_atoms
from .neuron_search import _values, ascent_neurons
from .shared_problem import SharedAtoms, SharedOutputProblem, SharedSolution
from .solvers.torch.shared_fista import _output_lasso_gap, solve_output_lasso
from .solvers.torch.threads import threads_for_work, torch_threads

__all__ = [
    "search_unit_neurons",
    "unit_threads",
    "slide_neurons",
    "unit_neuron_solution",
    "live_dual_values",
    "UNIT_LASSO_TOL",
    "UNIT_MIN_NEW",
    "UNIT_NEURONS_MIN_SIZE",
]

#: ``SearchOptions(shared_inner="auto")`` takes the unit neurons when ``n k`` is above this, the atoms'
#: program at or below it, where its rounds are cheap and it certifies tighter gaps (docs/solvers.md, "The
#: shared-neuron search").
UNIT_NEURONS_MIN_SIZE = 10_000

#: Relative gap of the output lasso over the fixed neurons in each round (and at the end) by default: the
#: oracle needs an approximate dual point only, and the search's stop (``gap_tol``) is far looser.
UNIT_LASSO_TOL = 1e-4


#: New neurons the first round (at the empty network) asks for: when the oracle's starts end at fewer
#: distinct violating neurons (there they converge to a few maxima of ``h``), the oracle is asked again,
#: keeping the best iterates it visits above ``beta`` (as the atoms' search does in every round). Later
#: rounds take each start's best only: topping them up the same way made the 784-feature fit slower.
UNIT_MIN_NEW = 50


def unit_threads(n: int, k: int, n_starts: int, threads: int | None = None) -> int:
    """Threads of a unit-neuron search (BLAS for its numpy products, torch for its slide): the torch
    solvers' rule (:func:`~convexbn.solvers.torch.threads.threads_for_work`, docs/solvers.md, "Threads")
    with the oracle's product, ``n k n_starts``, as the work."""
    return threads_for_work(n * k * max(n_starts, 1), threads)


def slide_neurons(
    Uprime: np.ndarray,
    Y: np.ndarray,
    Z: np.ndarray,
    V: np.ndarray,
    beta: float,
    loss,
    *,
    max_iter: int = 50,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Lower ``L((U' Z^T)_+ V, Y) + beta sum_j ||v_j||`` locally in the unit neurons and their outputs.

    L-BFGS (torch, strong Wolfe line search) on ``Z`` and ``V`` together, with ``Z``'s rows normalized
    inside the objective. A local method on a nonconvex function: the result is returned only when its
    objective is below the start's, else the start is.

    Parameters
    ----------
    Uprime : ndarray of shape (n, k)
    Y : ndarray of shape (n, C)
    Z : ndarray of shape (m, k)
        Unit neurons.
    V : ndarray of shape (m, C)
        Their output rows (nonzero: the penalty is not differentiable at a zero row).
    beta : float
    loss : Loss
        A smooth loss.
    max_iter : int
        L-BFGS iterations.

    Returns
    -------
    Z : ndarray of shape (m, k)
    V : ndarray of shape (m, C)
    objective : float
    """
    start_value = _objective(Uprime, Y, Z, V, beta, loss)
    if len(Z) == 0 or max_iter <= 0:
        return Z, V, start_value
    Ut, Yt = torch.as_tensor(Uprime), torch.as_tensor(Y)
    W = torch.tensor(Z, dtype=torch.float64, requires_grad=True)
    Vt = torch.tensor(V, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, Vt], max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-14)  # fmt: skip

    def closure():
        opt.zero_grad()
        F = torch.relu(Ut @ (W / W.norm(dim=1, keepdim=True)).T) @ Vt
        value = loss.torch_value(F, Yt) + beta * Vt.norm(dim=1).sum()
        value.backward()
        return value

    opt.step(closure)
    with torch.no_grad():
        Zn = (W / W.norm(dim=1, keepdim=True)).numpy().copy()
        Vn = Vt.numpy().copy()
    value = _objective(Uprime, Y, Zn, Vn, beta, loss)
    if not np.isfinite(value) or value >= start_value:
        return Z, V, start_value
    return Zn, Vn, value


def _objective(Uprime, Y, Z, V, beta, loss) -> float:
    F = np.maximum(Uprime @ Z.T, 0.0) @ V
    return loss.value(F, Y) + beta * float(np.linalg.norm(V, axis=1).sum())


def unit_neuron_solution(basis: BNBasis, Y: np.ndarray, Z: np.ndarray, V: np.ndarray, beta: float, loss,
                         *, status: str, lower_bound: float, seconds: float, n_iter: int,
                         info: dict | None = None) -> SharedSolution:  # fmt: skip
    """The (8a) point of unit neurons ``Z`` (m, k) with output rows ``V`` (m, C) (module docstring).

    Rows with ``v_j = 0`` are dropped; each other neuron is the atom ``(1[U' z_j >= 0], v_j / ||v_j||)``
    with the group ``||v_j|| z_j``.
    """
    atoms, W = atoms_of_neurons(basis.Uprime, Z, V)
    problem = SharedOutputProblem(basis, atoms, Y, beta, loss)
    return SharedSolution(
        problem=problem, W=W, status=status, objective=problem.objective(W), lower_bound=lower_bound,
        constraint_violation=problem.constraint_violation(W), solve_time=seconds, n_iter=n_iter,
        solver="torch-unit-neurons:cpu:float64", info={"inner": "unit_neurons", **(info or {})},
    )  # fmt: skip


def search_unit_neurons(
    basis: BNBasis,
    Y: np.ndarray,
    beta: float,
    *,
    loss: str = "squared",
    warm: tuple[SharedAtoms, np.ndarray] | None = None,
    rounds: int = 30,
    max_new: int | None = None,
    n_starts: int = 500,
    tol: float = UNIT_LASSO_TOL,
    gap_tol: float | None = 3e-3,
    stall_tol: float | None = 1e-5,
    time_limit: float | None = None,
    slide_steps: int = 50,
    merge_min_cos: float | None = MERGE_MIN_COS,
    threads: int | None = None,
    random_state=None,
):
    """Program (8a) over unit neurons grown by the oracle of (8b), without cone projections (module
    docstring).

    Parameters
    ----------
    basis : BNBasis
    Y : ndarray of shape (n, C)
        Encoded targets.
    beta : float
    loss : str
        A smooth loss.
    warm : (SharedAtoms, ndarray of shape (m, k)), optional
        A previous shared solution's atoms and groups: its live groups are the first neurons
        (``z = u / ||u||``, ``v = ||u|| c``).
    rounds : int
        Neuron-adding rounds at most.
    max_new : int, optional
        Neurons added per round (default ``max(50, 4 k)``, at most one per oracle start).
    n_starts : int
        Random starts of the ascent oracle per round.
    tol : float
        Relative duality gap of each output lasso over its fixed neurons.
    gap_tol : float or None
        Stop once the best violation found lowers the estimated dual bound by at most this fraction.
    stall_tol : float or None
        Stop once two rounds together lowered the objective by at most this fraction.
    time_limit : float, optional
        Seconds after which no new round starts.
    slide_steps : int
        L-BFGS iterations of :func:`slide_neurons` per round (0: off).
    merge_min_cos : float or None
        After each round's slide, near-copies of a neuron (directions and output directions within this
        cosine) are merged where that does not raise the objective (:func:`merge_duplicate_neurons`); None:
        no merge.
    threads : int, optional
        BLAS and torch threads inside the search (restored after); default :func:`unit_threads`.
    random_state : int, RandomState or None

    Returns
    -------
    solution : SharedSolution
        The final neurons as atoms of (8a) (:func:`unit_neuron_solution`); ``status`` ``"optimal"`` when
        the output lasso over them reached ``tol``; ``lower_bound`` that lasso's dual bound (over the
        fixed neurons, not over their cones).
    history : list of dict
        Per round, as :func:`~convexbn.neuron_search.search_shared_neurons`'s.
    oracle : dict
        ``value`` (the best ``h`` found at the final point), ``exact`` (False), ``n_violating``.
    """
    from threadpoolctl import threadpool_limits

    count = unit_threads(*basis.Uprime.shape, n_starts, threads)
    with torch_threads(count), threadpool_limits(count):
        return _search(basis, Y, beta, loss, warm, rounds, max_new, n_starts, tol, gap_tol, stall_tol,
                       time_limit, slide_steps, merge_min_cos, random_state)  # fmt: skip


def _search(basis, Y, beta, loss, warm, rounds, max_new, n_starts, tol, gap_tol, stall_tol, time_limit,
            slide_steps, merge_min_cos, random_state):  # fmt: skip
    """The body of :func:`search_unit_neurons`, inside its thread limits."""
    start = time.perf_counter()
    rng = check_random_state(random_state)
    lossf = get_loss(loss)
    Uprime = basis.Uprime
    n, k = Uprime.shape
    Y = np.asarray(Y, dtype=np.float64)
    C = Y.shape[1]
    max_new = max(50, 4 * k) if max_new is None else int(max_new)
    Z, V = np.zeros((0, k)), np.zeros((0, C))
    if warm is not None and warm[0].n_atoms:
        Z, V = neurons_of_atoms(*warm)
    F = np.maximum(Uprime @ Z.T, 0.0) @ V
    objective = lossf.value(F, Y) + beta * float(np.linalg.norm(V, axis=1).sum())
    history = []

    def ask(F, Z, fill=0):
        """The dual point, the oracle's neurons, and how many of them a round may add."""
        lam = -lossf.grad(F, Y)
        found = ascent_neurons(Uprime, lam, starts=Z, n_starts=n_starts, random_state=rng)
        if int((found[3] > beta).sum()) >= fill:
            return lam, found, max_new
        # (the starts ended at a few maxima of h): also the iterates they passed above beta, the best ``fill``
        found = ascent_neurons(Uprime, lam, starts=Z, n_starts=n_starts, threshold=beta, random_state=rng)
        return lam, found, fill

    for rnd in range(rounds + 1):
        fill = min(max_new, UNIT_MIN_NEW) if len(Z) == 0 else 0
        lam, (_, Znew, _, values), limit = ask(F, Z, fill)
        found = float(values[0]) if len(values) else 0.0
        violating = values > beta * (1 + 1e-9)
        history.append({
            "round": rnd, "n_patterns": len(Z), "n_neurons": len(Z), "objective": objective,
            "n_added": 0, "max_dual_value": found, "seconds": time.perf_counter() - start,
        })  # fmt: skip
        timed_out = time_limit is not None and time.perf_counter() - start > time_limit
        if rnd == rounds or timed_out or not violating.any():
            break
        scale = 1.0 if found <= beta else beta / found
        estimated = (objective + lossf.conjugate(-scale * lam, Y)) / max(abs(objective), 1e-12)
        if gap_tol is not None and estimated <= gap_tol:
            break
        if stall_tol is not None and len(history) >= 3:
            drop = (history[-3]["objective"] - objective) / max(abs(objective), 1e-12)
            if drop <= stall_tol:
                break
        new = np.flatnonzero(violating)[:limit]
        history[-1]["n_added"] = int(new.size)
        Z = np.vstack([Z, Znew[new]])
        A = np.maximum(Uprime @ Z.T, 0.0)
        V, _, _ = solve_output_lasso(A, Y, beta, lossf, tol=tol,
                                     warm_start=np.vstack([V, np.zeros((new.size, C))]))  # fmt: skip
        live = np.linalg.norm(V, axis=1) > 0
        Z, V = Z[live], V[live]
        Z, V, objective = slide_neurons(Uprime, Y, Z, V, beta, lossf, max_iter=slide_steps)
        if merge_min_cos is not None:
            Z, V = merge_duplicate_neurons(Uprime, Y, Z, V, beta, lossf, min_cos=merge_min_cos)
        F = np.maximum(Uprime @ Z.T, 0.0) @ V
        objective = lossf.value(F, Y) + beta * float(np.linalg.norm(V, axis=1).sum())
    lasso_gap = 0.0
    if len(Z):  # the final neurons' output rows to ``tol`` (after a slide they are not), and the oracle there
        A = np.maximum(Uprime @ Z.T, 0.0)
        V, _, _ = solve_output_lasso(A, Y, beta, lossf, tol=tol, warm_start=V)
        objective, lasso_gap = _output_lasso_gap(A, Y, V, beta, lossf)
        live = np.linalg.norm(V, axis=1) > 0
        Z, V = Z[live], V[live]
        _, (_, _, _, values), _ = ask(A[:, live] @ V, Z)
        found = float(values[0]) if len(values) else 0.0
        history[-1]["objective"] = objective
    oracle = {"value": found, "exact": False, "n_violating": int((values > beta * (1 + 1e-9)).sum())}
    seconds = time.perf_counter() - start
    solution = unit_neuron_solution(
        basis, Y, Z, V, beta, lossf, status="optimal" if lasso_gap <= tol else "max_iter",
        lower_bound=objective - lasso_gap * max(abs(objective), 1e-12), seconds=seconds,
        n_iter=len(history), info={"gap": float(lasso_gap), "seconds": seconds, "exact": False},
    )  # fmt: skip
    return solution, history, oracle


def live_dual_values(solution: SharedSolution, lam: np.ndarray) -> np.ndarray:
    """``h(z_j) = ||Lambda^T (U' z_j)_+||`` of a unit-neuron solution's neurons (each attained, so a lower
    bound on its atom's dual value, which a cone projection would give)."""
    W = solution.W
    if len(W) == 0:
        return np.zeros(0)
    return _values(solution.problem.Uprime, lam, W / np.linalg.norm(W, axis=1, keepdims=True))[0]
