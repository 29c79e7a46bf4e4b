"""Training the nonconvex BN network (3) directly with full-batch SGD or Adam: the baseline the convex
optimum is compared with.

The forward pass is the eq. (1)-(3) of docs/math.md in training mode (:class:`convexbn.nn.TwoLayerNet` with
``norm="batch"``: no ``BatchNorm1d``, so no ``eps``): for each neuron ``j``,

    h_j = gamma_j (X w_j - mean(X w_j)) / ||X w_j - mean(X w_j)|| + alpha_j / sqrt(n),
    f(X) = relu(h) V,

and the minimized objective is exactly (3): ``L(f(X), Y) + (beta/2) sum_j (gamma_j^2 + alpha_j^2 +
||v_j||^2)`` with the summed loss of :mod:`convexbn.losses`. Training is full batch, so every recorded
value is objective (3) itself, directly comparable with the convex optimum. Mini-batches and the other
BN variants are in :mod:`convexbn.nn`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ._validation import check_choice, check_data, check_positive_int
from .losses import get_loss
from .network import BNNetwork

__all__ = ["train_bn_network", "TrainingResult", "OPTIMIZERS"]

OPTIMIZERS = ("adam", "sgd")


@dataclass
class TrainingResult:
    """The trained network and its objective curve.

    Attributes
    ----------
    network : BNNetwork
        The final network (same parametrization as :func:`convexbn.recover_network`'s).
    objective : float
        Objective (3) of ``network`` on the training data (numpy forward pass).
    history : list of (seconds, epoch, objective)
        Wall time since the start, epoch and objective (3), every ``record_every`` epochs and at the end.
    best_objective : float
        Lowest recorded objective.
    """

    network: BNNetwork
    objective: float
    history: list = field(default_factory=list)

    @property
    def best_objective(self) -> float:
        return min(h[2] for h in self.history)


def train_bn_network(
    X,
    y,
    n_neurons: int,
    beta: float,
    *,
    loss: str = "squared",
    optimizer: str = "adam",
    lr: float = 1e-2,
    momentum: float = 0.9,
    epochs: int = 2000,
    init_scale: float = 1.0,
    random_state: int | None = None,
    record_every: int = 10,
    time_limit: float | None = None,
    dtype=torch.float64,
) -> TrainingResult:
    """Minimize objective (3) over ``(w, gamma, alpha, v)`` with full-batch Adam or SGD (heavy ball).

    A shortcut for :func:`convexbn.nn.train_network` on a fresh ``TwoLayerNet(norm="batch")``; use that
    for mini-batches, the other BN variants, landscape probes and schedules.

    Parameters
    ----------
    X : array-like of shape (n, d)
    y : array-like of shape (n,) or (n, C)
        Targets, encoded by ``loss`` exactly as :class:`convexbn.ConvexBNProblem` does.
    n_neurons : int
        Width ``m``.
    beta : float
        Weight decay of (3) (summed loss, as in docs/math.md eq. (3)).
    loss : str
        ``"squared"``, ``"logistic"``, ``"hinge"`` or ``"cross_entropy"``.
    optimizer : {"adam", "sgd"}
    lr, momentum : float
        Step size; momentum for SGD.
    epochs : int
        Number of full-batch steps.
    init_scale : float
        ``w ~ N(0, I)``, ``gamma ~ init_scale * U(0.5, 1.5)``, ``alpha = 0``,
        ``v ~ init_scale * N(0, 1/m)``.
    random_state : int, optional
        Seed of the initialization (``torch.Generator``).
    record_every : int
        Epochs between recorded objective values.
    time_limit : float, optional
        Stop after this many seconds.
    dtype : torch.dtype

    Returns
    -------
    TrainingResult
    """
    from .nn import TwoLayerNet, train_network

    X = check_data(X)
    lossf = get_loss(loss)
    Y = lossf.encode_targets(y)
    if Y.shape[0] != X.shape[0]:
        raise ValueError(f"y has {Y.shape[0]} samples but X has {X.shape[0]}")
    m = check_positive_int(n_neurons, "n_neurons")
    check_choice(optimizer, "optimizer", OPTIMIZERS)
    gen = torch.Generator().manual_seed(0 if random_state is None else int(random_state))
    model = TwoLayerNet(
        X.shape[1], m, Y.shape[1], n_train=X.shape[0], init_scale=init_scale, generator=gen, dtype=dtype
    )
    run = train_network(
        model,
        X,
        y,
        beta=beta,
        loss=lossf.name,
        optimizer=optimizer,
        lr=lr,
        momentum=momentum,
        epochs=epochs,
        record_every=record_every,
        time_limit=time_limit,
    )
    network = model.to_network(X, beta, lossf.name)
    final = network.objective(X, y)
    history = [(h["time"], h["epoch"], h["objective"]) for h in run.history]
    history[-1] = (*history[-1][:2], final)
    return TrainingResult(network=network, objective=final, history=history)
