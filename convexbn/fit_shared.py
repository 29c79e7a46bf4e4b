"""The fit core for shared neurons (docs/math.md section 8): the column generation over unit neurons of
:mod:`convexbn.unit_neurons` (the search's default) or over atoms of :mod:`convexbn.neuron_search` behind
:func:`fit_shared`, its critical ``beta`` and its warnings.
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
    max_arrangements,
)
from .basis import BNBasis, bn_basis
from .fit_common import (
    ARRANGEMENT_METHODS,
    AUTO_BETA_FRACTION,
    AUTO_ENUMERATE_MAX,
    EQUIVALENCE_RTOL,
    EXACT_SHARED_ROUNDS,
    SHARED_TOL,
    ConvexFit,
    ProgramFit,
    SearchOptions,
    default_n_arrangements,
)
from .losses import get_loss
from .problem import SolverWarning

__all__ = ["fit_shared", "estimate_shared_critical_beta"]

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
    hidden neurons feed every output. ``arrangements``: ``"search"`` grows unit neurons from none by the
    ascent oracle (:func:`convexbn.unit_neurons.search_unit_neurons`, no cone projections; with
    ``search.shared_inner="atoms"``, atoms by :func:`convexbn.neuron_search.search_shared_neurons`, as
    on a GPU); ``"enumerate"`` (and
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
        :class:`~convexbn.shared_problem.SharedSolution`), ``solver="torch"`` and ``info`` with
        ``"neurons": "shared"`` and ``"shared_inner"`` (``"unit_neurons"`` or ``"atoms"``, the inner
        program that ``search.shared_inner`` chose). The certified ``lower_bound`` is exact with the exact
        oracle, else the universal bound of :func:`convexbn.shared_problem.universal_shared_value`; the
        estimated one uses the best violation the ascent oracle found (not a certificate).
    """
    from math import comb

    from .neuron_search import EXACT_ORACLE_MAX_FACES, search_shared_neurons
    from .recovery import recover_shared_network
    from .shared_problem import SharedAtoms, universal_shared_value
    from .unit_neurons import UNIT_LASSO_TOL, UNIT_NEURONS_MIN_SIZE, live_dual_values, search_unit_neurons

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
    inner = search.shared_inner
    on_cpu = str(shared_opts.get("device", "cpu")) == "cpu"
    if inner == "auto":  # (the unit neurons' solves run on the CPU; FISTA on the atoms takes a device)
        inner = "unit_neurons" if method == "search" and on_cpu and n * k > UNIT_NEURONS_MIN_SIZE else "atoms"
    if inner == "unit_neurons" and (method != "search" or not on_cpu):
        raise ValueError(f"shared_inner='unit_neurons' grows its neurons by the search, on the CPU; it does "
                         f"not take arrangements={method!r} or device={shared_opts.get('device', 'cpu')!r} "
                         f"(use shared_inner='atoms')")  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SolverWarning)
        if inner == "unit_neurons":
            solution, history, oracle = search_unit_neurons(
                basis, Y, beta, loss=lossf.name, warm=None if atoms is None else (atoms, W0), rounds=rounds,
                max_new=search.max_new, n_starts=max(search.n_starts, 1) * 5 // 2,
                tol=UNIT_LASSO_TOL if tol_solve is None else tol_solve, gap_tol=search.unit_gap_tol,
                time_limit=search.time_limit, merge_min_cos=search.merge_min_cos,
                threads=options.get("threads"), random_state=seed,
            )  # fmt: skip
        else:
            solution, history, oracle = search_shared_neurons(
                basis, Y, beta, loss=lossf.name, atoms=atoms, warm_start=W0, rounds=rounds,
                max_new=search.max_new, n_starts=max(search.n_starts, 1) * 5 // 2, tol=final_tol,
                round_tol=round_tol, gap_tol=gap_tol, time_limit=search.time_limit,
                exact_patterns=exact_patterns, random_state=seed, solver_options=shared_opts,
                merge_min_cos=search.merge_min_cos,
            )  # fmt: skip
    network = recover_shared_network(solution)
    F = solution.predict_train()
    lam = -lossf.grad(F, Y)
    problem = solution.problem
    # (the unit-neuron route's own values are its neurons' h(z): cone projections cost what it avoids)
    own_values = live_dual_values(solution, lam) if inner == "unit_neurons" else problem.atom_dual_values(lam)
    own = float(own_values.max(initial=0.0))
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
        info={"neurons": "shared", "shared_inner": inner},
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

