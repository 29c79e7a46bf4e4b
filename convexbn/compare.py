"""The comparison harness: the convex global optimum beside SGD/Adam-trained BN networks and BN's variants.

:func:`compare_with_sgd` solves the convex program (4) for a dataset and ``beta``, recovers the network,
trains each network variant of :data:`VARIANTS` with the same loss and weight decay (objective (3)) and
``m`` = the number of neurons of the convex solution, and returns a JSON-ready record: objective (3) against
training wall time and epochs (the convex solver's own curve too, from its iterates), test metrics, and the
landscape measures of Santurkar et al. along each trajectory, the convex program's included.
The experiments built on it (sorted batches, batch size, spectral filters) are in
:mod:`convexbn.compare_experiments`; :mod:`convexbn.plotting` draws the records.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from ._validation import check_data, check_positive, check_positive_int
from .arrangements import merge_arrangements, network_arrangements
from .basis import bn_basis
from .losses import get_loss
from .nn import TwoLayerNet, convex_program_loss, probe_landscape, train_network
from .shared_problem import network_atoms
from .solvers.torch.operators import GroupOperators

__all__ = [
    "format_report",
    "VARIANTS",
    "compare_with_sgd",
    "evaluate_predictions",
    "format_comparison_table",
]

#: Network variants of the harness: name -> (TwoLayerNet norm, optimizer, extra train_network options).
VARIANTS: dict[str, tuple[str, str, dict]] = {
    "bn-sgd": ("batch", "sgd", {}),
    "bn-adam": ("batch", "adam", {}),
    "batchnorm1d-adam": ("batchnorm1d", "adam", {}),
    "fn-sgd": ("full", "sgd", {}),
    "pn-sgd": ("population", "sgd", {}),
    "pn-gamma-decay-sgd": ("population", "sgd", {"gamma_decay": "adaptive"}),
    "bnp-sgd": ("none", "sgd", {"preconditioner": "bnp"}),
    "plain-sgd": ("none", "sgd", {}),
}


def evaluate_predictions(F: np.ndarray, y, loss: str) -> dict:
    """Test metrics of outputs ``F`` (n, C) against targets ``y`` encoded by ``loss``.

    Classification losses give ``accuracy`` (for logistic/hinge the class ``+1`` where ``F > 0`` and ``-1``
    elsewhere, as the classifier's ``predict``; argmax for cross-entropy); the squared loss gives ``mse``
    and ``r2`` (over all outputs).
    """
    lossf = get_loss(loss)
    Y = lossf.encode_targets(y)
    F = np.asarray(F, dtype=np.float64).reshape(Y.shape)
    if lossf.name in ("logistic", "hinge"):
        # (a tie, F = 0, is the class -1, as in ConvexBNClassifier.predict; np.sign would make it neither)
        return {"accuracy": float(np.mean(np.where(F > 0, 1.0, -1.0) == Y))}
    if lossf.name == "cross_entropy":
        return {"accuracy": float(np.mean(F.argmax(1) == Y.argmax(1)))}
    mse = float(np.mean((F - Y) ** 2))
    var = float(np.mean((Y - Y.mean(0)) ** 2))
    return {"mse": mse, "r2": 1.0 - mse / var if var > 0 else float("nan")}


def _model_outputs(model: TwoLayerNet, X) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(torch.as_tensor(X, dtype=model.first.weight.dtype)).numpy()


def compare_with_sgd(
    X,
    y,
    *,
    beta,
    X_test=None,
    y_test=None,
    loss: str = "squared",
    arrangements="auto",
    n_arrangements="auto",
    search=None,
    solver: str = "auto",
    solver_options: dict | None = None,
    variants: Sequence[str] = tuple(VARIANTS),
    n_neurons: int | None = None,
    epochs: int = 200,
    batch_size: int | None = 32,
    sgd_lr: float | None = None,
    adam_lr: float = 1e-2,
    lr_factors: Sequence[float] = (0.01, 0.1, 1.0, 10.0),
    resolve_with_sgd_patterns: bool = True,
    landscape_every: int | None = 20,
    landscape_steps: Sequence[float] = tuple(np.linspace(0.5, 4.0, 8)),
    random_state: int = 0,
    progress: bool = False,
    neurons: str = "auto",
) -> dict:
    """Solve the convex program, train every variant with the same objective (3), and compare.

    Parameters
    ----------
    X : array-like of shape (n, d)
        Training inputs (standardize them: SGD cares, the convex program does not).
    y : array-like
        Targets encoded as ``loss`` expects (reals, {-1, +1}, or class labels for cross-entropy).
    beta : float or "auto"
        Weight decay of objective (3) and program (4) (summed loss: the scale of docs/math.md eq. (3));
        ``"auto"`` as :func:`convexbn.fit.fit_convex_bn`.
    X_test, y_test : optional
        Held-out data for the test metrics (:func:`evaluate_predictions`).
    loss : str
    arrangements, n_arrangements, search
        How the convex program's patterns are chosen (:func:`convexbn.fit.fit_convex_bn`; default: the
        pattern search, or every pattern when that is cheap). The convex curve is the search's objective
        against wall time, round by round.
    solver : str
        Backend (:func:`convexbn.fit.choose_solver` for ``"auto"``). With the torch solver its iterates on
        the final pattern set give the convex program's landscape probes.
    solver_options : dict, optional
        Passed to the fit core (``tol``, ``max_iter``, the torch solver's options).
    variants : sequence of str
        Keys of :data:`VARIANTS`.
    n_neurons : int, optional
        Width of the trained networks; default: the convex solution's (at least 1).
    epochs, batch_size : int
        Training budget and mini-batch size (``None``: full batch) of every variant.
    sgd_lr : float, optional
        SGD step; default ``0.05 / n`` (the loss is a sum over ``n`` samples).
    adam_lr : float
        Adam step.
    lr_factors : sequence of float
        Each variant's step is tuned over ``factor * (sgd_lr or adam_lr)`` by pilot runs of a tenth of
        ``epochs`` (best final objective; pilot time reported as ``tuning_time``, not in the curves).
        ``(1.0,)`` switches tuning off. If the chosen step blows up over the full budget (non-finite or
        above the initial objective), the next smaller step is trained instead (``blown_up_steps``).
    resolve_with_sgd_patterns : bool
        Re-solve the convex program with every trained BN network's activation patterns added to the
        final ones (``convex_with_sgd_patterns``, a secondary reference): each trained network is then a
        feasible point of the program, so this optimum is at most every BN variant's objective (3).
    landscape_every : int, optional
        Steps between landscape probes (``None``: no probes).
    landscape_steps : sequence of float
        Probe steps as multiples of the learning rate (of ``1 / L`` for the convex program).
    random_state : int
        Seeds the arrangements, the initializations and the batch orders.
    progress : bool
        tqdm bars for the training runs.
    neurons : {"auto", "shared", "per_output"}
        Several outputs: the shared-neuron program or per-output programs (:func:`convexbn.fit_convex_bn`).
        With shared neurons the re-solve with the trained networks adds their neurons as atoms.

    Returns
    -------
    dict
        ``convex``: objective, recovered network's forward objective, neurons, solve time, curve
        (time, iteration, objective), test metrics, landscape; ``variants``: per variant its settings,
        curve, final and best objective, wall time, test metrics, landscape, whether it diverged;
        ``convex_with_sgd_patterns`` (see ``resolve_with_sgd_patterns``).
    """
    from .fit import fit_convex_bn

    X = check_data(X)
    if not (isinstance(beta, str) and beta == "auto"):
        beta = check_positive(beta, "beta")
    lossf = get_loss(loss)
    Y = lossf.encode_targets(y)
    n, d = X.shape
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    check_positive_int(epochs, "epochs")
    sgd_lr = 0.05 / n if sgd_lr is None else check_positive(sgd_lr, "sgd_lr")
    if X_test is not None:
        X_test = check_data(X_test, name="X_test", min_samples=1)

    basis = bn_basis(X)
    iterates = []
    options = dict(solver_options or {})
    start = time.perf_counter()

    def keep(it, W_pos, W_neg):  # the torch solver's iterates on the latest (largest) pattern set
        if iterates and iterates[-1][2].shape != np.shape(W_pos):
            iterates.clear()
        iterates.append((time.perf_counter() - start, it, np.array(W_pos), np.array(W_neg)))

    if landscape_every:
        options["callback"] = keep
    fit = fit_convex_bn(
        X, [y], beta, loss=lossf.name, arrangements=arrangements, n_arrangements=n_arrangements,
        search=search, solver=solver, solver_options=options, random_state=random_state, basis=basis,
        owner="compare_with_sgd", neurons=neurons,
    )  # fmt: skip
    beta = fit.beta
    shared = fit.info.get("neurons") == "shared"
    (program,) = fit.programs
    solution, network = program.solution, fit.network
    problem = solution.problem
    convex = {
        "solver": solution.solver,
        "status": solution.status,
        "objective": solution.objective,
        "forward_objective": program.bounds["forward_objective"],
        "n_neurons": solution.n_neurons,
        "n_arrangements": problem.n_patterns,
        "arrangements_method": fit.method,
        "solve_time": fit.seconds,
        "constraint_violation": solution.constraint_violation,
        "lower_bound": fit.lower_bound,
        "gap": fit.gap,
        "estimated_lower_bound": fit.estimated_lower_bound,
        "estimated_gap": fit.estimated_gap,
        "dual_ratio": fit.dual_ratio,
        "certified": fit.certified,
        # objective (3) = (4) against wall time, round by round (the search's own history)
        "curve": [
            {"time": h["seconds"], "iteration": h["round"], "objective": h["objective"],
             "n_patterns": h["n_patterns"]}
            for h in fit.history
        ],  # fmt: skip
    }
    if convex["curve"]:
        convex["curve"][-1]["time"] = fit.seconds
    if X_test is not None:
        convex["test"] = evaluate_predictions(network.forward(X_test, training=False), y_test, lossf.name)
    final = [(t, it, Wp, Wn) for t, it, Wp, Wn in iterates if Wp.shape[1] == problem.n_patterns]
    if landscape_every and final and problem.n_outputs == 1:
        # the smooth part's Lipschitz constant, as the solvers estimate it (the loss's own curvature)
        L = GroupOperators(problem, "cpu", torch.float64).lipschitz_estimate(2, n_power=50)
        probes = []
        stride = max(1, len(final) // 10)
        for _, it, Wp, Wn in final[::stride]:
            Wp_t = torch.tensor(Wp[0], requires_grad=True)
            Wn_t = torch.tensor(Wn[0], requires_grad=True)
            steps = [s / L for s in landscape_steps]
            probe = probe_landscape(
                lambda a=Wp_t, b=Wn_t: convex_program_loss(problem, a, b), [Wp_t, Wn_t], steps
            )
            probes.append({"iteration": it, **probe.as_dict()})
        convex["landscape"] = probes

    m = max(1, solution.n_neurons) if n_neurons is None else check_positive_int(n_neurons, "n_neurons")
    runs = {}
    trained = []

    def train(name, lr, n_epochs, probes):
        norm, optimizer, extra = VARIANTS[name]
        gen = torch.Generator().manual_seed(random_state)
        torch.manual_seed(random_state)  # the plain net's default Linear initialization
        model = TwoLayerNet(d, m, Y.shape[1], n_train=n, norm=norm, generator=gen)
        run = train_network(
            model, X, y, beta=beta, loss=lossf.name, optimizer=optimizer, lr=lr, batch_size=batch_size,
            epochs=n_epochs, landscape_every=probes, landscape_steps=landscape_steps,
            random_state=random_state, progress=progress, record_every=max(1, n_epochs // 50), **extra,
        )  # fmt: skip
        return model, run

    for name in variants:
        norm, optimizer, extra = VARIANTS[name]
        base = adam_lr if optimizer == "adam" else sgd_lr
        candidates = [base * float(f) for f in lr_factors]
        tuning, tic = {}, time.perf_counter()
        if len(candidates) > 1:
            for lr in candidates:
                _, pilot = train(name, lr, max(1, epochs // 10), None)
                finite = np.isfinite(pilot.objective) and not pilot.diverged
                tuning[lr] = pilot.objective if finite else np.inf
            order = sorted(tuning, key=tuning.get)
        else:
            order = candidates
        tuning_time = time.perf_counter() - tic
        # the pilot's best step can still blow up over the full budget: then the next smaller step is used
        retried = []
        for lr in order:
            if retried and lr >= retried[-1]:
                continue
            model, run = train(name, lr, epochs, landscape_every)
            if np.isfinite(run.objective) and run.objective <= run.history[0]["objective"]:
                break
            retried.append(lr)
        entry = {
            "norm": norm,
            "optimizer": optimizer,
            "lr": lr,
            "lr_tuning": {str(k): v for k, v in tuning.items()},
            "tuning_time": tuning_time,
            "blown_up_steps": retried,
            "options": {k: str(v) for k, v in extra.items()},
            "n_neurons": m,
            "objective": run.objective,
            "best_objective": run.best_objective,
            "wall_time": run.wall_time,
            "diverged": run.diverged,
            "curve": run.history,
            "landscape": run.landscape,
            "comparable_to_convex": model.has_bn,
        }
        if X_test is not None:
            entry["test"] = evaluate_predictions(_model_outputs(model, X_test), y_test, lossf.name)
        runs[name] = entry
        if model.has_bn and np.isfinite(run.objective):
            trained.append(model.to_network(X, beta, lossf.name))

    with_sgd = None
    if resolve_with_sgd_patterns and trained:
        from .fit import SEARCH_TOL, warm_state

        if shared:  # the trained networks' neurons as atoms: each one's pattern and output direction
            merged = solution.atoms
            for net in trained:
                merged = merged.concatenate(network_atoms(X, net))
        else:
            merged = merge_arrangements(
                solution.arrangements, *(network_arrangements(basis, net) for net in trained)
            )

        fit_sgd = fit_convex_bn(
            X, [y], beta, loss=lossf.name, arrangements=merged, solver=solver,
            solver_options={"tol": SEARCH_TOL, **(solver_options or {})}, random_state=random_state,
            basis=basis,
            warm=[warm_state(solution)], owner="compare_with_sgd", neurons="per_output",
        )  # fmt: skip
        sol, net = fit_sgd.programs[0].solution, fit_sgd.network
        with_sgd = {
            "objective": sol.objective,
            "forward_objective": net.objective(X, y),
            "n_neurons": sol.n_neurons,
            "n_arrangements": fit_sgd.n_arrangements,
            "solve_time": fit_sgd.seconds,
        }
        if X_test is not None:
            with_sgd["test"] = evaluate_predictions(net.forward(X_test, training=False), y_test, lossf.name)
    return {
        "n_samples": n,
        "n_features": d,
        "beta": beta,
        "loss": lossf.name,
        "epochs": epochs,
        "batch_size": batch_size,
        "random_state": random_state,
        "convex": convex,
        "convex_with_sgd_patterns": with_sgd,
        "variants": runs,
    }


def format_comparison_table(record: dict, title: str = "") -> str:
    """The record of :func:`compare_with_sgd` as a text table.

    One row per method: objective (3) at the end, the best recorded, training (or solve) wall time, and the
    test metric (accuracy for classification losses, R^2 for the squared loss).
    """
    c = record["convex"]
    metric = "accuracy" if "accuracy" in c.get("test", {}) else "r2"
    n, d = record["n_samples"], record["n_features"]
    head = f"{title}: " if title else ""
    lines = [
        f"{head}n={n}, d={d}, beta={record['beta']:g}, loss={record['loss']}, epochs={record['epochs']}",
        f"{'method':40s} {'objective (3)':>14s} {'best':>12s} {'time [s]':>9s} {'test ' + metric:>14s}",
    ]

    def row(name, objective, best, seconds, test, note=""):
        test_value = test.get(metric, float("nan")) if test else float("nan")
        lines.append(f"{name:40s} {objective:14.6g} {best:12.6g} {seconds:9.2f} {test_value:14.4f}{note}")

    method = c.get("arrangements_method", "sample")
    rounds = len(c.get("curve", [])) - 1 if method == "search" else 0
    label = f"convex ({method}, P={c['n_arrangements']}" + (f", {rounds} rounds)" if rounds else ")")
    row(label, c["objective"], c["forward_objective"], c["solve_time"], c.get("test"),
        f"   m={c['n_neurons']}, {c['solver']}")  # fmt: skip
    g = record.get("convex_with_sgd_patterns")
    if g:
        row(f"  + trained nets' patterns (P={g['n_arrangements']})", g["objective"],
            g["forward_objective"], g["solve_time"], g.get("test"), f"   m={g['n_neurons']}")  # fmt: skip
    for name, run in record["variants"].items():
        note = f"   lr={run['lr']:.3g}" + (
            "" if run["comparable_to_convex"] else ", plain net: another objective"
        )
        row(name, run["objective"], run["best_objective"], run["wall_time"], run.get("test"), note)
    if "lower_bound" in c:
        lines.append(
            f"bound: certified lower bound {c['lower_bound']:.6g} (gap {c['gap']:.1%}"
            + (", every pattern)" if c.get("certified") else ", universal)")
            + f"; estimated {c['estimated_lower_bound']:.6g} (gap {c['estimated_gap']:.2%}, dual ratio "
            f"{c['dual_ratio']:.4g}: a bound if no pattern is more violated than the oracle found)"
        )
    return "\n".join(lines)


def format_report(report: dict, precision: int = 10) -> str:
    """One ``key  value`` line per entry, keys padded to one width, floats with ``precision`` significant
    digits (the examples' printed reports, which their tests read back)."""
    width = max(map(len, report), default=0)
    return "\n".join(
        f"{key:<{width}}  {value:.{precision}g}" if isinstance(value, float) else f"{key:<{width}}  {value}"
        for key, value in report.items()
    )
