"""Training the nonconvex BN network (3) directly with SGD or Adam: the baseline the convex optimum is
compared with.

The forward pass is the spec's eq. (1)-(3) in training mode, written out in torch (no ``BatchNorm1d``,
so no ``eps`` and no running-statistics side effects): for each neuron ``j``,

    h_j = gamma_j (X w_j - mean(X w_j)) / ||X w_j - mean(X w_j)|| + alpha_j / sqrt(n),
    f(X) = relu(h) V,

and the minimized objective is exactly (3): ``L(f(X), Y) + (beta/2) sum_j (gamma_j^2 + alpha_j^2 +
||v_j||^2)`` with the summed loss of :mod:`convexbn.losses`. Training is full batch, so every recorded
value is objective (3) itself, directly comparable with the convex optimum.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ._validation import check_choice, check_data, check_positive, check_positive_int
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


def _forward(X, W, gamma, alpha, V):
    H = X @ W
    Hc = H - H.mean(dim=0)
    norm = Hc.norm(dim=0).clamp_min(torch.finfo(X.dtype).tiny)
    return torch.relu(gamma * Hc / norm + alpha / np.sqrt(X.shape[0])) @ V


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

    Parameters
    ----------
    X : array-like of shape (n, d)
    y : array-like of shape (n,) or (n, C)
        Targets, encoded by ``loss`` exactly as :class:`convexbn.ConvexBNProblem` does.
    n_neurons : int
        Width ``m``.
    beta : float
        Weight decay of (3) (the spec's scaling: summed loss).
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
    X = check_data(X)
    lossf = get_loss(loss)
    Y = lossf.encode_targets(y)
    if Y.shape[0] != X.shape[0]:
        raise ValueError(f"y has {Y.shape[0]} samples but X has {X.shape[0]}")
    m = check_positive_int(n_neurons, "n_neurons")
    beta = check_positive(beta, "beta")
    check_choice(optimizer, "optimizer", OPTIMIZERS)
    epochs = check_positive_int(epochs, "epochs")
    n, d = X.shape
    C = Y.shape[1]

    gen = torch.Generator().manual_seed(0 if random_state is None else int(random_state))
    Xt, Yt = torch.as_tensor(X, dtype=dtype), torch.as_tensor(Y, dtype=dtype)
    W = torch.randn(d, m, generator=gen, dtype=dtype).requires_grad_()
    gamma = (init_scale * (0.5 + torch.rand(m, generator=gen, dtype=dtype))).requires_grad_()
    alpha = torch.zeros(m, dtype=dtype).requires_grad_()
    V = (init_scale * torch.randn(m, C, generator=gen, dtype=dtype) / np.sqrt(m)).requires_grad_()
    params = [W, gamma, alpha, V]
    opt = (
        torch.optim.Adam(params, lr=lr)
        if optimizer == "adam"
        else torch.optim.SGD(params, lr=lr, momentum=momentum)
    )

    def objective():
        F = _forward(Xt, W, gamma, alpha, V)
        return lossf.torch_value(F, Yt) + 0.5 * beta * (
            gamma.square().sum() + alpha.square().sum() + V.square().sum()
        )

    history = []
    start = time.perf_counter()
    for epoch in range(epochs):
        opt.zero_grad()
        value = objective()
        if epoch % record_every == 0:
            history.append((time.perf_counter() - start, epoch, float(value.detach())))
        value.backward()
        opt.step()
        if time_limit is not None and time.perf_counter() - start > time_limit:
            break
    network = to_network(
        X,
        W.detach().numpy(),
        gamma.detach().numpy(),
        alpha.detach().numpy(),
        V.detach().numpy(),
        beta,
        lossf.name,
    )
    final = network.objective(X, y)
    history.append((time.perf_counter() - start, epoch + 1, final))
    return TrainingResult(network=network, objective=final, history=history)


def to_network(X, W, gamma, alpha, V, beta: float, loss: str) -> BNNetwork:
    """Wrap trained parameters as a :class:`BNNetwork` with the training statistics of ``X``."""
    H = X @ W
    mean = H.mean(axis=0)
    return BNNetwork(
        weights=W.astype(np.float64),
        gamma=gamma.astype(np.float64),
        alpha=alpha.astype(np.float64),
        output=V.astype(np.float64),
        running_mean=mean,
        running_norm=np.linalg.norm(H - mean, axis=0),
        n_train=X.shape[0],
        beta=float(beta),
        loss=loss,
    )
