"""The comparison harness: the convex global optimum beside SGD/Adam-trained BN networks and BN's variants.

:func:`compare_with_sgd` solves the convex program (4) for a dataset and ``beta``, recovers the network,
trains each network variant of :data:`VARIANTS` with the same loss and weight decay (objective (3)) and
``m`` = the number of neurons of the convex solution, and returns a JSON-ready record: objective (3) against
training wall time and epochs (the convex solver's own curve too, from its iterates), test metrics, and the
landscape measures of Santurkar et al. along each trajectory, the convex program's included.
:func:`sorted_batches_experiment` (BN vs Full Normalization with class-sorted batches) and
:func:`batch_size_experiment` (BN preconditioning vs BN at batch sizes 1, 2, 8, 128) are the two
experiments of the BN-variant papers. :func:`implicit_reg_experiment` asks whether the spectral filters of
spec section 9 make the convex optimum track a gradient-trained BN network. :mod:`convexbn.plotting` draws
the first three records.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from ._validation import check_data, check_positive, check_positive_int
from .arrangements import merge_arrangements, network_arrangements, sample_arrangements
from .basis import bn_basis
from .losses import get_loss
from .nn import TwoLayerNet, convex_program_loss, probe_landscape, train_network
from .problem import ConvexBNProblem
from .recovery import recover_network
from .shared_problem import network_atoms

__all__ = [
    "format_report",
    "VARIANTS",
    "compare_with_sgd",
    "sorted_batches_experiment",
    "batch_size_experiment",
    "evaluate_predictions",
    "format_comparison_table",
    "implicit_reg_experiment",
    "format_implicit_reg_table",
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

    Classification losses give ``accuracy`` (sign for logistic/hinge, argmax for cross-entropy); the
    squared loss gives ``mse`` and ``r2`` (over all outputs).
    """
    lossf = get_loss(loss)
    Y = lossf.encode_targets(y)
    F = np.asarray(F, dtype=np.float64).reshape(Y.shape)
    if lossf.name in ("logistic", "hinge"):
        return {"accuracy": float(np.mean(np.sign(F) == Y))}
    if lossf.name == "cross_entropy":
        return {"accuracy": float(np.mean(F.argmax(1) == Y.argmax(1)))}
    mse = float(np.mean((F - Y) ** 2))
    var = float(np.mean((Y - Y.mean(0)) ** 2))
    return {"mse": mse, "r2": 1.0 - mse / var if var > 0 else float("nan")}


def _model_outputs(model: TwoLayerNet, X) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(torch.as_tensor(X, dtype=model.first.weight.dtype)).numpy()


def _lipschitz_of_data_fit(problem: ConvexBNProblem, iters: int = 50) -> float:
    """``||A||^2`` of the linear map ``(u, u') -> sum_i D_i U' (u_i - u'_i)`` (power iteration)."""
    U = torch.as_tensor(problem.Uprime)
    mask = torch.as_tensor(problem.mask, dtype=U.dtype)
    gen = torch.Generator().manual_seed(0)
    W = torch.randn(problem.n_patterns, problem.dim, generator=gen, dtype=U.dtype)
    value = 0.0
    for _ in range(iters):
        W = W / W.norm()
        f = ((U @ W.T) * mask).sum(1)
        W = (mask * f[:, None]).T @ U
        value = float(W.norm())
    return 2.0 * value  # (u, u') doubles the operator's norm squared


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
        Weight decay of objective (3) and program (4) (summed loss: the spec's scale); ``"auto"`` as
        :func:`convexbn.fit.fit_convex_bn`.
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
        L = _lipschitz_of_data_fit(problem) * (1.0 if lossf.name == "squared" else 0.25)
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
            warm=[warm_state(solution)], owner="compare_with_sgd",
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


def sorted_batches_experiment(
    X,
    y,
    *,
    beta: float,
    loss: str = "squared",
    labels=None,
    n_neurons: int = 8,
    batch_size: int = 10,
    epochs: int = 60,
    lr: float | None = None,
    norms: Sequence[str] = ("batch", "full"),
    seeds: Sequence[int] = (0, 1, 2),
) -> dict:
    """BN vs Full Normalization with shuffled and with class-sorted batches (Lian & Liu 2019).

    Every run is SGD with the same step; the reported number is the full-data objective (3) at the end.

    Parameters
    ----------
    labels : array-like of shape (n,), optional
        What to sort the batches by (default ``y``).
    lr : float, optional
        SGD step; default ``0.15 / n``.

    Returns
    -------
    dict
        ``runs[norm][order]``: final objectives over ``seeds``, their median, and seed ``seeds[0]``'s curve.
    """
    X = check_data(X)
    n = X.shape[0]
    lr = 0.15 / n if lr is None else check_positive(lr, "lr")
    Y = get_loss(loss).encode_targets(y)
    sort_by = y if labels is None else labels
    runs: dict = {}
    for norm in norms:
        for order in ("shuffle", "sorted"):
            finals, curve = [], None
            for seed in seeds:
                model = TwoLayerNet(
                    X.shape[1], n_neurons, Y.shape[1], n_train=n, norm=norm,
                    generator=torch.Generator().manual_seed(seed),
                )  # fmt: skip
                run = train_network(
                    model, X, y, beta=beta, loss=loss, optimizer="sgd", lr=lr, batch_size=batch_size,
                    epochs=epochs, batch_order=order, random_state=seed, record_every=max(1, epochs // 20),
                    **({"sort_labels": sort_by} if labels is not None else {}),
                )  # fmt: skip
                finals.append(run.objective)
                curve = run.history if curve is None else curve
            runs.setdefault(norm, {})[order] = {
                "objectives": finals,
                "median": float(np.median(finals)),
                "curve": curve,
            }
    return {"beta": beta, "loss": loss, "batch_size": batch_size, "epochs": epochs, "lr": lr, "runs": runs}


def batch_size_experiment(
    X,
    y,
    *,
    beta: float,
    loss: str = "squared",
    n_neurons: int = 16,
    batch_sizes: Sequence[int] = (1, 2, 8, 128),
    epochs: int = 10,
    lrs: Sequence[float] | None = None,
    seed: int = 0,
) -> dict:
    """BN preconditioning (plain net + BNP) vs BN vs the plain net, at several batch sizes.

    Each method gets the same number of epochs at each batch size and its best step from ``lrs`` (SGD with
    momentum). BN is not defined at batch size 1 (no batch variance): its entry records the error.

    Returns
    -------
    dict
        ``runs[batch_size][method]``: ``objective`` (best final full-data objective over ``lrs``),
        ``initial`` (the same network's objective at initialization), ``lr``, ``by_lr`` (every step's final
        objective), or ``error``. The plain net and BNP's objective is the plain net's (its own weight
        decay), not objective (3).
    """
    X = check_data(X)
    n = X.shape[0]
    Y = get_loss(loss).encode_targets(y)
    lrs = [0.5 / n, 0.05 / n, 0.005 / n] if lrs is None else [float(v) for v in lrs]
    methods = {"bn": ("batch", None), "bnp": ("none", "bnp"), "plain": ("none", None)}
    runs: dict = {}
    for bs in batch_sizes:
        for name, (norm, pre) in methods.items():
            by_lr = {}
            error = None
            for lr in lrs:
                torch.manual_seed(seed)
                model = TwoLayerNet(
                    X.shape[1], n_neurons, Y.shape[1], n_train=n, norm=norm,
                    generator=torch.Generator().manual_seed(seed),
                )  # fmt: skip
                try:
                    run = train_network(
                        model, X, y, beta=beta, loss=loss, optimizer="sgd", lr=lr, batch_size=bs,
                        epochs=epochs, preconditioner=pre, random_state=seed, record_every=epochs,
                    )  # fmt: skip
                except ValueError as exc:
                    error = str(exc)
                    break
                by_lr[lr] = run.objective if np.isfinite(run.objective) else float("inf")
                initial = run.history[0]["objective"]
            if error is not None:
                runs.setdefault(bs, {})[name] = {"error": error}
                continue
            best = min(by_lr, key=by_lr.get)
            runs.setdefault(bs, {})[name] = {
                "objective": by_lr[best],
                "initial": initial,
                "lr": best,
                "by_lr": by_lr,
            }
    initial = float(
        TwoLayerNet(
            X.shape[1], n_neurons, Y.shape[1], n_train=n, generator=torch.Generator().manual_seed(seed)
        )
        .objective(torch.as_tensor(X), torch.as_tensor(Y), loss, beta)
        .detach()
    )
    return {"beta": beta, "loss": loss, "epochs": epochs, "initial_bn_objective": initial, "runs": runs}


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


def _labels(F: np.ndarray) -> np.ndarray:
    """Predicted class indices from outputs (n, C): the sign of one +-1 column, else the argmax."""
    return (F[:, 0] > 0).astype(int) if F.shape[1] == 1 else F.argmax(axis=1)


def implicit_reg_experiment(
    X,
    y,
    X_test,
    y_test,
    *,
    betas: Sequence[float],
    filters: Sequence = (None, "power:0.5", "power:1"),
    n_arrangements: int = 50,
    n_neurons: int = 100,
    epochs: int = 2000,
    lr: float = 0.05,
    momentum: float = 0.9,
    batch_size: int | None = None,
    init_scale: float = 0.1,
    solver: str = "torch",
    solver_options: dict | None = None,
    add_sgd_patterns: bool = False,
    random_state: int = 0,
) -> list[dict]:
    """Gradient-trained BN networks against the plain and the spectrally filtered convex programs.

    For each ``beta``: one BN network (spec eq. (1)-(3), ``n_neurons`` wide, initialized at scale
    ``init_scale``) is trained by SGD with momentum on objective (3) (full batch by default: the gradient
    descent of spec section 9), and the convex program is solved for each filter of ``filters``
    (:mod:`convexbn.implicit_reg`; ``None`` is the plain program) with ``n_arrangements`` patterns sampled
    from the filtered basis. Every model is then evaluated on ``(X_test, y_test)``.

    Parameters
    ----------
    X, X_test : array-like of shape (n, d), (n_test, d)
        Standardized inputs.
    y, y_test : array-like of shape (n,), (n_test,)
        Class labels. Two classes: one +-1 column; more: one-hot columns (squared loss, as in the paper).
    betas : sequence of float
        Weight decay per sample (the programs use ``beta * n``, the estimators' convention).
    filters : sequence
        Filter specifications (:func:`convexbn.implicit_reg.spectral_filter`).
    n_arrangements, n_neurons, epochs, lr, momentum, batch_size, init_scale : see above
        ``lr`` is divided by ``n`` (the loss is a sum over samples).
    solver, solver_options :
        Backend of :meth:`ConvexBNProblem.solve`.
    add_sgd_patterns : bool
        Add the SGD network's activation patterns (:func:`convexbn.network_arrangements` on the filtered
        basis) to the sampled ones. For one output the SGD network is then a feasible point of the plain
        program, whose optimum is at most its objective (3); without them a small sample can leave the
        convex optimum above what SGD reaches.
    random_state : int
        Seeds the patterns, the initialization and the batch order.

    Returns
    -------
    list of dict
        One row per ``(beta, model)``: ``model`` (``"sgd"`` or the filter), train objective (the
        filter's own objective for a convex model, (3) for SGD), ``train_accuracy``, ``test_accuracy``,
        ``neurons``, ``seconds``, and for the convex models ``agreement`` (fraction of equal test labels
        with the SGD network) and ``correlation`` (Pearson correlation of the test outputs).
    """
    from .estimators import class_targets
    from .implicit_reg import filtered_basis, spectral_filter

    X = check_data(X)
    X_test = check_data(X_test, name="X_test", min_samples=1)
    classes, index = np.unique(np.asarray(y), return_inverse=True)
    if classes.size < 2:
        raise ValueError(f"y has a single class ({classes[0]!r})")
    test_index = np.searchsorted(classes, np.asarray(y_test))
    Y = class_targets(index, classes.size, "squared")
    Y = Y.reshape(len(Y), -1)
    n = X.shape[0]
    basis = bn_basis(X)
    rows = []
    for beta in betas:
        b = float(beta) * n
        start = time.perf_counter()
        model = TwoLayerNet(
            X.shape[1], n_neurons, Y.shape[1], n_train=n, init_scale=init_scale,
            generator=torch.Generator().manual_seed(random_state),
        )  # fmt: skip
        train_network(
            model, X, Y, beta=b, loss="squared", optimizer="sgd", lr=lr / n, momentum=momentum,
            batch_size=batch_size, epochs=epochs, record_every=epochs, random_state=random_state,
        )  # fmt: skip
        sgd_net = model.to_network(X, b, "squared")
        sgd_seconds = time.perf_counter() - start
        F_sgd = sgd_net.forward(X_test, training=False)
        rows.append({
            "beta": float(beta), "model": "sgd", "objective": sgd_net.objective(X, Y),
            "train_accuracy": float(np.mean(_labels(sgd_net.forward(X, training=True)) == index)),
            "test_accuracy": float(np.mean(_labels(F_sgd) == test_index)),
            "neurons": n_neurons, "seconds": sgd_seconds, "agreement": 1.0, "correlation": 1.0,
        })  # fmt: skip
        for spec in filters:
            implicit = spectral_filter(spec)
            kept, _ = filtered_basis(basis, implicit)
            arrangements = sample_arrangements(kept, n_arrangements, random_state=random_state)
            if add_sgd_patterns:
                arrangements = merge_arrangements(arrangements, network_arrangements(kept, sgd_net))
            problem = ConvexBNProblem(basis, arrangements, Y, b, implicit_reg=implicit)
            start = time.perf_counter()
            solution = problem.solve(solver, **(solver_options or {}))
            network = recover_network(solution)
            seconds = time.perf_counter() - start
            F = network.forward(X_test, training=False)
            rows.append({
                "beta": float(beta), "model": str(implicit), "objective": solution.objective,
                "train_accuracy": float(np.mean(_labels(solution.predict_train()) == index)),
                "test_accuracy": float(np.mean(_labels(F) == test_index)),
                "neurons": network.n_neurons, "seconds": seconds,
                "agreement": float(np.mean(_labels(F) == _labels(F_sgd))),
                "correlation": _correlation(F, F_sgd), "patterns": arrangements.n_patterns,
            })  # fmt: skip
    return rows


def _correlation(F: np.ndarray, G: np.ndarray) -> float:
    """Pearson correlation of two output arrays; NaN when either is constant (e.g. the zero network)."""
    a, b = F.ravel() - F.mean(), G.ravel() - G.mean()
    scale = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / scale) if scale > 0 else float("nan")


def format_implicit_reg_table(rows: list[dict]) -> str:
    """The rows of :func:`implicit_reg_experiment` as a markdown table."""
    lines = [
        "| beta | model | objective | train acc | test acc | agreement with SGD | output correlation "
        "| neurons | time [s] |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['beta']:g} | {r['model']} | {r['objective']:.5g} | {r['train_accuracy']:.3f} | "
            f"{r['test_accuracy']:.3f} | {r['agreement']:.3f} | {r['correlation']:.3f} | {r['neurons']} | "
            f"{r['seconds']:.1f} |"
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
