"""The experiments around the SGD comparison (:mod:`convexbn.compare`): sorted versus shuffled mini-batches,
the batch size, and whether the spectral filters of docs/math.md section 9 make the convex optimum track a
gradient-trained BN network.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from ._validation import check_data, check_positive
from .arrangements import merge_arrangements, network_arrangements, sample_arrangements
from .basis import bn_basis
from .losses import get_loss
from .nn import TwoLayerNet, train_network
from .problem import ConvexBNProblem
from .recovery import recover_network

__all__ = ["sorted_batches_experiment", "batch_size_experiment", "implicit_reg_experiment",
           "format_implicit_reg_table"]  # fmt: skip


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

    For each ``beta``: one BN network (docs/math.md eq. (1)-(3), ``n_neurons`` wide, initialized at scale
    ``init_scale``) is trained by SGD with momentum on objective (3) (full batch by default: the gradient
    descent of docs/math.md section 9), and the convex program is solved for each filter of ``filters``
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
