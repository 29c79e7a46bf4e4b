"""One trainer for every network variant: SGD with momentum or Adam, full batch or mini-batch.

Each step minimizes the stochastic version of objective (3),

    (n / |B|) * L(f(X_B), Y_B) + (beta/2) sum_j (gamma_j^2 + alpha_j^2 + ||v_j||^2)   [+ gamma decay],

whose full-batch value is objective (3) itself (the loss is a sum over samples, docs/math.md eq. (3)). What is
recorded is always the *full-data* objective (3) (:meth:`TwoLayerNet.objective`: every normalization
uses the statistics of the whole training set, no ``eps``), against training wall time (evaluation and
probes excluded from the clock), epochs and steps: the same number the convex solver reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .._validation import check_choice, check_data, check_positive, check_positive_int
from ..losses import get_loss
from .bnp import BNPreconditioner
from .gamma_decay import GammaDecay
from .landscape import probe_landscape
from .layers import frozen_statistics
from .model import TwoLayerNet, population_layers

__all__ = ["train_network", "TrainingRun", "make_batches", "OPTIMIZERS", "BATCH_ORDERS"]

OPTIMIZERS = ("sgd", "adam")
BATCH_ORDERS = ("shuffle", "sorted", "fixed")
DEFAULT_LANDSCAPE_STEPS = tuple(np.linspace(0.5, 4.0, 8))


@dataclass
class TrainingRun:
    """The trained model and its curves.

    Attributes
    ----------
    model : TwoLayerNet
        The trained network (train mode off).
    history : list of dict
        ``time`` (training seconds), ``epoch``, ``step``, ``objective`` (full-data objective (3)) and
        ``effective_lr`` (``lr / ||w_j||^2``, mean over neurons), plus ``zeta`` (mean gamma-decay strength)
        when gamma decay is on. Recorded before training, every ``record_every`` epochs and at the end.
    landscape : list of dict
        ``step``, ``epoch`` and the :class:`LandscapeProbe` fields, every ``landscape_every`` steps.
    objective : float
        Final full-data objective (3).
    diverged : bool
        The stochastic objective became non-finite; training stopped there.
    """

    model: TwoLayerNet
    history: list = field(default_factory=list)
    landscape: list = field(default_factory=list)
    objective: float = float("nan")
    diverged: bool = False

    @property
    def best_objective(self) -> float:
        values = [h["objective"] for h in self.history if np.isfinite(h["objective"])]
        return min(values) if values else float("nan")

    @property
    def wall_time(self) -> float:
        return self.history[-1]["time"] if self.history else 0.0


def make_batches(
    n: int, batch_size: int, order: str, labels: np.ndarray | None, rng: np.random.Generator
) -> list[np.ndarray]:
    """Index batches for one epoch.

    ``"shuffle"``: a fresh random permutation; ``"fixed"``: ``0..n-1`` in order; ``"sorted"``: samples
    sorted by ``labels`` (stable), cut into contiguous batches (each holds one or two classes), the batches
    visited in a random order -- the ill-constructed batches of Lian & Liu (2019). With ``batch_size > 1``
    a trailing one-sample batch is merged into the one before it (batch statistics need two samples).
    """
    if order == "shuffle":
        idx = rng.permutation(n)
    elif order == "fixed":
        idx = np.arange(n)
    else:
        if labels is None:
            raise ValueError("batch_order='sorted' needs labels")
        idx = np.argsort(labels, kind="stable")
    batches = [idx[i : i + batch_size] for i in range(0, n, batch_size)]
    if batch_size > 1 and len(batches) > 1 and len(batches[-1]) == 1:
        # a one-sample batch has no batch statistics: fold it into the previous batch
        last = batches.pop()
        batches[-1] = np.concatenate([batches[-1], last])
    if order == "sorted":
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def _sort_labels(y) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        return np.argmax(y, axis=1)
    y = y.reshape(y.shape[0], -1)[:, 0]
    return y if y.dtype.kind in "biuf" else np.unique(y, return_inverse=True)[1]


def train_network(
    model: TwoLayerNet,
    X,
    y,
    *,
    beta: float,
    loss: str = "squared",
    optimizer: str = "sgd",
    lr: float = 1e-3,
    momentum: float = 0.9,
    batch_size: int | None = None,
    epochs: int = 100,
    batch_order: str = "shuffle",
    sort_labels=None,
    lr_decay_power: float = 0.0,
    preconditioner: str | BNPreconditioner | None = None,
    bnp_options: dict | None = None,
    gamma_decay: float | str | None = None,
    recompute_statistics_every: int | None = None,
    landscape_every: int | None = None,
    landscape_steps: Sequence[float] = DEFAULT_LANDSCAPE_STEPS,
    record_every: int = 1,
    time_limit: float | None = None,
    progress: bool = False,
    random_state: int | None = None,
    callback: Callable[[int, TwoLayerNet], bool | None] | None = None,
) -> TrainingRun:
    """Train ``model`` on ``(X, y)`` and record its full-data objective (3).

    Parameters
    ----------
    model : TwoLayerNet
        Any variant; trained in place.
    X : array-like of shape (n, d)
    y : array-like of shape (n,) or (n, C)
        Targets, encoded by ``loss`` as the convex problem encodes them.
    beta : float
        Weight decay of objective (3) (summed loss, the scale of docs/math.md eq. (3)).
    loss : str
        ``"squared"``, ``"logistic"``, ``"hinge"`` or ``"cross_entropy"``.
    optimizer : {"sgd", "adam"}
        SGD with (heavy-ball) ``momentum``, or Adam.
    lr : float
        Step size. The loss is a sum over samples, so SGD wants ``lr`` of order ``1 / (n * curvature)``.
    batch_size : int, optional
        Mini-batch size; ``None`` is full batch.
    epochs : int
    batch_order : {"shuffle", "sorted", "fixed"}
        See :func:`make_batches`. ``"sorted"`` sorts by ``sort_labels`` (default ``y``: class labels, or
        the target value).
    sort_labels : array-like of shape (n,), optional
        What ``"sorted"`` sorts by.
    lr_decay_power : float
        ``lr_k = lr * (k + 1)^(-power)`` per step (FN's two timescales use 0.75; default constant).
    preconditioner : "bnp" or BNPreconditioner, optional
        Batch Normalization Preconditioning of the weight gradients (for the plain net, ``norm="none"``).
    bnp_options : dict, optional
        ``rho``, ``eps``, ``bias_correction`` of the :class:`BNPreconditioner` built for ``"bnp"``.
    gamma_decay : float or "adaptive", optional
        Add Luo et al.'s gamma-decay penalty (needs ``norm="population"``); see :class:`GammaDecay`.
    recompute_statistics_every : int, optional
        For population normalization: set the population statistics to the exact full-data ones every
        this many steps (instead of the moving average).
    landscape_every : int, optional
        Probe the landscape (:func:`probe_landscape`) on the current batch every this many steps, with
        steps ``eta = s * lr`` for ``s`` in ``landscape_steps``; buffers are frozen during probes.
    record_every : int
        Epochs between full-data objective records.
    time_limit : float, optional
        Stop after this many seconds of training.
    progress : bool
        Show a tqdm bar over epochs.
    random_state : int, optional
        Seed of the batch order.
    callback : callable, optional
        ``callback(step, model)`` after every step; returning True stops training.

    Returns
    -------
    TrainingRun
    """
    if not isinstance(model, TwoLayerNet):
        raise TypeError(f"model must be a TwoLayerNet, got {type(model).__name__}")
    X = check_data(X)
    lossf = get_loss(loss)
    Y = lossf.encode_targets(y)
    n = X.shape[0]
    if Y.shape[0] != n:
        raise ValueError(f"y has {Y.shape[0]} samples but X has {n}")
    if X.shape[1] != model.first.in_features:
        raise ValueError(f"X has {X.shape[1]} features, the model expects {model.first.in_features}")
    if Y.shape[1] != model.output.out_features:
        raise ValueError(f"y encodes to {Y.shape[1]} outputs, the model has {model.output.out_features}")
    beta = check_positive(beta, "beta")
    check_choice(optimizer, "optimizer", OPTIMIZERS)
    check_choice(batch_order, "batch_order", BATCH_ORDERS)
    epochs = check_positive_int(epochs, "epochs")
    lr = check_positive(lr, "lr")
    B = n if batch_size is None else check_positive_int(batch_size, "batch_size")
    B = min(B, n)
    if B == 1 and model.norm_kind in ("batch", "batchnorm1d"):
        raise ValueError(
            "batch_size=1: batch normalization needs at least 2 samples per batch (a single sample has no "
            "variance); use norm='full' or 'population', or the plain net with preconditioner='bnp'"
        )
    if model.n_train != n:
        raise ValueError(f"the model was built for n_train={model.n_train}, X has {n} samples")
    pn_layers = population_layers(model)
    if gamma_decay is not None and not pn_layers:
        raise ValueError("gamma_decay needs a network with population normalization (norm='population')")
    if recompute_statistics_every is not None and not pn_layers:
        raise ValueError("recompute_statistics_every needs norm='population'")

    dtype = model.first.weight.dtype
    device = model.first.weight.device
    Xt = torch.as_tensor(X, dtype=dtype, device=device)
    Yt = torch.as_tensor(Y, dtype=dtype, device=device)
    labels = None
    if batch_order == "sorted":
        labels = _sort_labels(y if sort_labels is None else sort_labels)
        if labels.shape[0] != n:
            raise ValueError(f"sort_labels has {labels.shape[0]} entries, X has {n} samples")
    rng = np.random.default_rng(random_state)

    params = [p for p in model.parameters() if p.requires_grad]
    opt = (
        torch.optim.SGD(params, lr=lr, momentum=momentum)
        if optimizer == "sgd"
        else torch.optim.Adam(params, lr=lr)
    )
    schedule = (
        torch.optim.lr_scheduler.LambdaLR(opt, lambda k: (k + 1) ** (-lr_decay_power))
        if lr_decay_power
        else None
    )
    if preconditioner == "bnp":
        preconditioner = BNPreconditioner([model.first, model.output], **(bnp_options or {}))
        owns_preconditioner = True
    else:
        owns_preconditioner = False
        if preconditioner is not None and not isinstance(preconditioner, BNPreconditioner):
            raise ValueError(f"preconditioner must be 'bnp' or a BNPreconditioner, got {preconditioner!r}")
    decay = GammaDecay(gamma_decay, loss=lossf.name, n_train=n) if gamma_decay is not None else None

    run = TrainingRun(model=model)
    clock = 0.0

    def record(epoch, step):
        model.eval()
        with torch.no_grad():
            value = float(model.objective(Xt, Yt, lossf, beta))
        entry = {
            "time": clock,
            "epoch": epoch,
            "step": step,
            "objective": value,
            "effective_lr": model.effective_learning_rate(opt.param_groups[0]["lr"]),
        }
        if decay is not None and decay.last_zeta is not None:
            entry["zeta"] = float(decay.last_zeta.mean())
        run.history.append(entry)

    def batch_loss(idx):
        return (n / len(idx)) * lossf.torch_value(model(Xt[idx]), Yt[idx])

    def probe(idx, epoch, step):
        model.train()
        steps = [float(s) * opt.param_groups[0]["lr"] for s in landscape_steps]
        with frozen_statistics(model):
            if preconditioner is not None:
                with preconditioner.frozen():
                    result = probe_landscape(lambda: batch_loss(idx), params, steps)
            else:
                result = probe_landscape(lambda: batch_loss(idx), params, steps)
        run.landscape.append({"step": step, "epoch": epoch, **result.as_dict()})

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, desc=f"train {model.norm_kind}", leave=False)

    record(0, 0)
    step = 0
    stop = False
    epoch = 0
    try:
        for epoch in range(1, epochs + 1):
            for idx in make_batches(n, B, batch_order, labels, rng):
                if landscape_every and step % landscape_every == 0:
                    probe(idx, epoch - 1, step)
                tic = time.perf_counter()
                model.train()
                opt.zero_grad()
                if recompute_statistics_every and step % recompute_statistics_every == 0:
                    with torch.no_grad():
                        for layer in pn_layers:
                            layer.set_statistics(model.first(Xt))
                Xb, Yb = Xt[idx], Yt[idx]
                H = model.preactivation(Xb)
                F = model.output(torch.relu(H))
                value = (n / len(idx)) * lossf.torch_value(F, Yb) + model.penalty(beta)
                if decay is not None:
                    layer = pn_layers[0]
                    zeta = (
                        decay.estimate(layer, H, F, Yb, model.output.weight)
                        if decay.adaptive
                        else decay.constant(layer)
                    )
                    value = value + decay.penalty(layer, zeta)
                if not torch.isfinite(value):
                    run.diverged = True
                    stop = True
                    break
                value.backward()
                if preconditioner is not None:
                    preconditioner.precondition()
                opt.step()
                if schedule is not None:
                    schedule.step()
                step += 1
                clock += time.perf_counter() - tic
                if callback is not None and callback(step, model):
                    stop = True
                    break
                if time_limit is not None and clock > time_limit:
                    stop = True
                    break
            if bar is not None:
                bar.update(1)
            if stop or epoch % record_every == 0 or epoch == epochs:
                record(epoch, step)
                if bar is not None:
                    bar.set_postfix(objective=f"{run.history[-1]['objective']:.6g}")
            if stop:
                break
    finally:
        if bar is not None:
            bar.close()
        if owns_preconditioner:
            preconditioner.remove()
    model.eval()
    run.objective = run.history[-1]["objective"]
    if run.diverged:
        run.objective = float("nan") if not np.isfinite(run.objective) else run.objective
    return run
