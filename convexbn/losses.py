"""Convex losses L(F, Y) of the network output F (n, C) against targets Y (n, C).

Each loss provides what the rest of the package needs, and nothing else:

- ``encode_targets``: validate user targets and encode them as a float (n, C) matrix;
- ``value`` / ``grad``: numpy (the forward objective and the dual certificate);
- ``cvxpy``: a cvxpy expression for the interior-point backends;
- ``conjugate``: ``L*(mu)`` on the domain reached by scaled gradients (the certificate's lower bound);
- ``torch_value``: a torch expression for the first-order solver and the SGD trainers.

Losses are sums over samples (no 1/n), as in spec eq. (3).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from scipy.special import expit, log_expit, logsumexp, softmax, xlogy

__all__ = [
    "Loss",
    "SquaredLoss",
    "LogisticLoss",
    "HingeLoss",
    "CrossEntropyLoss",
    "get_loss",
    "LOSSES",
]


class Loss(ABC):
    """Base class; see the module docstring for the interface."""

    name: str = ""
    smooth: bool = True

    @abstractmethod
    def encode_targets(self, y) -> np.ndarray: ...

    @abstractmethod
    def value(self, F: np.ndarray, Y: np.ndarray) -> float: ...

    @abstractmethod
    def grad(self, F: np.ndarray, Y: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def cvxpy(self, F, Y: np.ndarray): ...

    @abstractmethod
    def conjugate(self, mu: np.ndarray, Y: np.ndarray) -> float: ...

    @abstractmethod
    def torch_value(self, F, Y): ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _as_2d_float(y) -> np.ndarray:
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise ValueError(f"targets must be numeric for this loss, got dtype {y.dtype}")
    y = y.astype(np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2:
        raise ValueError(f"targets must be 1-D or 2-D, got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("targets contain NaN or infinity")
    return y


class SquaredLoss(Loss):
    """``1/2 ||F - Y||_F^2``; any real targets, one column per output."""

    name = "squared"

    def encode_targets(self, y):
        Y = _as_2d_float(y)
        magnitude = float(np.abs(Y).max()) if Y.size else 0.0
        if magnitude * np.sqrt(Y.size) > 1e150:
            raise ValueError(
                f"targets up to {magnitude:.3g} are too large for the squared loss: its value "
                "1/2 ||F - y||^2 overflows float64; rescale y (e.g. sklearn's TransformedTargetRegressor "
                "with a StandardScaler)"
            )
        return Y

    def value(self, F, Y):
        return 0.5 * float(np.sum((F - Y) ** 2))

    def grad(self, F, Y):
        return F - Y

    def cvxpy(self, F, Y):
        import cvxpy as cp

        return 0.5 * cp.sum_squares(F - Y)

    def conjugate(self, mu, Y):
        return 0.5 * float(np.sum(mu**2)) + float(np.sum(mu * Y))

    def torch_value(self, F, Y):
        return 0.5 * ((F - Y) ** 2).sum()

    def torch_grad(self, F, Y):
        return F - Y


def _check_pm1(Y, name):
    if not np.all(np.isin(Y, (-1.0, 1.0))):
        raise ValueError(f"the {name} loss needs targets in {{-1, +1}}, got values {np.unique(Y)[:5]}")
    return Y


class LogisticLoss(Loss):
    """``sum log(1 + exp(-Y * F))`` with ``Y in {-1, +1}``, per output column."""

    name = "logistic"

    def encode_targets(self, y):
        return _check_pm1(_as_2d_float(y), self.name)

    def value(self, F, Y):
        return -float(np.sum(log_expit(Y * F)))

    def grad(self, F, Y):
        return -Y * expit(-Y * F)

    def cvxpy(self, F, Y):
        import cvxpy as cp

        return cp.sum(cp.logistic(-cp.multiply(Y, F)))

    def conjugate(self, mu, Y):
        # l(t) = log(1 + exp(-y t)); l*(mu) = p log p + (1 - p) log(1 - p) for mu = -y p, p in [0, 1]
        p = np.clip(-mu * Y, 0.0, 1.0)
        return float(np.sum(xlogy(p, p) + xlogy(1 - p, 1 - p)))

    def torch_value(self, F, Y):
        import torch

        return torch.nn.functional.softplus(-Y * F).sum()

    def torch_grad(self, F, Y):
        import torch

        return -Y * torch.sigmoid(-Y * F)


class HingeLoss(Loss):
    """``sum max(0, 1 - Y * F)`` with ``Y in {-1, +1}``, per output column. Not smooth."""

    name = "hinge"
    smooth = False

    def encode_targets(self, y):
        return _check_pm1(_as_2d_float(y), self.name)

    def value(self, F, Y):
        return float(np.sum(np.maximum(0.0, 1.0 - Y * F)))

    def grad(self, F, Y):
        # a subgradient: -y where the margin is below 1, 0 elsewhere
        return np.where(Y * F < 1.0, -Y, 0.0)

    def cvxpy(self, F, Y):
        import cvxpy as cp

        return cp.sum(cp.pos(1 - cp.multiply(Y, F)))

    def conjugate(self, mu, Y):
        # l*(mu) = -p for mu = -y p, p in [0, 1]
        p = np.clip(-mu * Y, 0.0, 1.0)
        return -float(np.sum(p))

    def torch_value(self, F, Y):
        return (1 - Y * F).clamp_min(0).sum()

    def torch_smoothed(self, F, Y, mu: float):
        """Value and gradient of the Huber-smoothed hinge (Nesterov smoothing, parameter ``mu``).

        ``h_mu(m) = 0`` for margin ``m >= 1``, ``(1 - m)^2 / (2 mu)`` for ``1 - mu < m < 1``, ``1 - m - mu/2``
        below; it is within ``mu / 2`` of the hinge per sample.
        """
        m = Y * F
        gap = (1 - m).clamp_min(0)
        quad = gap <= mu
        value = (gap.square() / (2 * mu)).where(quad, gap - mu / 2).sum()
        dm = -(gap / mu).where(quad, gap.new_ones(()))
        return value, dm * Y


class CrossEntropyLoss(Loss):
    """Softmax cross-entropy ``sum_i [logsumexp(F_i) - Y_i . F_i]``; Y one-hot (n, C), C >= 2.

    Accepts integer class labels 0..C-1 (1-D) or a one-hot / probability matrix (2-D).
    """

    name = "cross_entropy"

    def encode_targets(self, y):
        y = np.asarray(y)
        if y.ndim == 1:
            if y.dtype.kind not in "biu" and not (
                y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y))
            ):
                raise ValueError("cross_entropy needs integer class labels 0..C-1 or a one-hot matrix")
            labels = y.astype(np.int64)
            if labels.min() < 0:
                raise ValueError("cross_entropy class labels must be >= 0")
            C = int(labels.max()) + 1
            if C < 2:
                raise ValueError("cross_entropy needs at least two classes")
            Y = np.zeros((labels.size, C))
            Y[np.arange(labels.size), labels] = 1.0
            return Y
        Y = _as_2d_float(y)
        if Y.shape[1] < 2:
            raise ValueError("cross_entropy needs at least two output columns")
        if np.any(Y < 0) or not np.allclose(Y.sum(axis=1), 1.0):
            raise ValueError("cross_entropy targets must be rows of a one-hot / probability matrix")
        return Y

    def value(self, F, Y):
        return float(np.sum(logsumexp(F, axis=1)) - np.sum(Y * F))

    def grad(self, F, Y):
        return softmax(F, axis=1) - Y

    def cvxpy(self, F, Y):
        import cvxpy as cp

        return cp.sum(cp.log_sum_exp(F, axis=1)) - cp.sum(cp.multiply(Y, F))

    def conjugate(self, mu, Y):
        # L*(mu) = sum_ic p_ic log p_ic for p = mu + Y on the simplex
        p = np.clip(mu + Y, 0.0, 1.0)
        return float(np.sum(xlogy(p, p)))

    def torch_value(self, F, Y):
        import torch

        return (torch.logsumexp(F, dim=1) - (Y * F).sum(dim=1)).sum()

    def torch_grad(self, F, Y):
        import torch

        return torch.softmax(F, dim=1) - Y


LOSSES = {cls.name: cls for cls in (SquaredLoss, LogisticLoss, HingeLoss, CrossEntropyLoss)}


def get_loss(loss) -> Loss:
    """Return a :class:`Loss` from its name (``"squared"``, ``"logistic"``, ``"hinge"``,
    ``"cross_entropy"``) or pass a ``Loss`` instance through."""
    if isinstance(loss, Loss):
        return loss
    if not isinstance(loss, str):
        raise TypeError(f"loss must be a string or a convexbn Loss, got {type(loss).__name__}")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {sorted(LOSSES)}")
    return LOSSES[loss]()
