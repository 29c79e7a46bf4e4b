"""Convex losses L(F, Y) of the network output F (n, C) against targets Y (n, C).

Each loss provides what the rest of the package needs, and nothing else:

- ``encode_targets``: validate user targets and encode them as a float (n, C) matrix;
- ``value`` / ``grad``: numpy (the forward objective and the dual certificate);
- ``cvxpy``: a cvxpy expression for the interior-point backends;
- ``conjugate``: ``L*(mu)`` on the domain reached by scaled gradients (the certificate's lower bound);
- ``torch_value`` / ``torch_grad`` / ``torch_value_grad``: torch expressions for the first-order solvers
  and the SGD trainers (``torch_value_grad`` is the smoothed value and gradient for a nonsmooth loss);
- ``torch_prox``: ``argmin_F L(F, Y) + (rho / 2) ||F - Z||^2`` (ADMM's loss step).

And the properties the solvers ask instead of comparing names:

- ``smooth``: whether the gradient is Lipschitz (FISTA takes it as it is);
- ``curvature``: that Lipschitz constant per sample (the largest eigenvalue of the Hessian of one
  sample's loss; ``inf`` for a nonsmooth loss);
- ``step_curvature``: the curvature a first-order solver starts its step-size search from
  (``curvature``, or 1 for a smoothed loss, whose backtracking then raises it);
- ``smoothing_start``: the first smoothing parameter of a nonsmooth loss (0 for a smooth one);
- ``quadratic``: whether the value is ``1/2 ||F - Y||^2`` (an affine gradient ``F - Y``: a solver over a
  fixed matrix ``A`` may work with ``A^T A`` and ``A^T Y`` instead of ``A``);
- ``scalable_targets``: whether ``(Y, beta) -> (Y / s, beta / s)`` maps solutions to solutions / s (the
  squared loss: the conic backends solve badly scaled targets at unit scale).

Losses are sums over samples (no 1/n), as in docs/math.md eq. (3).
"""

from __future__ import annotations

import math
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
    curvature: float = 1.0
    smoothing_start: float = 0.0
    scalable_targets: bool = False
    quadratic: bool = False

    @property
    def step_curvature(self) -> float:
        """Curvature a first-order solver's step-size search starts from (see the module docstring)."""
        return self.curvature if self.smooth else 1.0

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

    @abstractmethod
    def torch_grad(self, F, Y): ...

    def torch_hessian(self, F, Y):
        """The loss Hessian at the predictions ``F`` (n, C), per sample ``diag(w_i) - q_i q_i^T``:
        ``(w, q)``, both (n, C), ``q`` None where it is zero (smooth losses; the Newton polish of
        :mod:`convexbn.solvers.torch.polish`)."""
        raise NotImplementedError(f"the {self.name} loss has no Hessian")

    def torch_value_grad(self, F, Y, mu: float = 0.0):
        """Value and gradient in torch; a nonsmooth loss smooths itself with parameter ``mu``."""
        return self.torch_value(F, Y), self.torch_grad(F, Y)

    @abstractmethod
    def torch_prox(self, Z, Y, rho: float, F0=None):
        """``argmin_F L(F, Y) + (rho / 2) ||F - Z||^2`` for F, Z, Y of shape (n, C); ``F0`` starts the
        iterative proxes (ADMM passes its previous iterate)."""

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
    curvature = 1.0
    scalable_targets = True
    quadratic = True

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

    def torch_hessian(self, F, Y):
        import torch

        return torch.ones_like(F), None

    def torch_prox(self, Z, Y, rho, F0=None):
        return (Y + rho * Z) / (1 + rho)


def _check_pm1(Y, name):
    if not np.all(np.isin(Y, (-1.0, 1.0))):
        raise ValueError(f"the {name} loss needs targets in {{-1, +1}}, got values {np.unique(Y)[:5]}")
    return Y


class LogisticLoss(Loss):
    """``sum log(1 + exp(-Y * F))`` with ``Y in {-1, +1}``, per output column."""

    name = "logistic"
    curvature = 0.25

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

    def torch_hessian(self, F, Y):
        import torch

        p = torch.sigmoid(Y * F)
        return p * (1 - p), None

    def torch_prox(self, Z, Y, rho, F0=None):
        import torch

        y, z = Y.reshape(-1, 1), Z.reshape(-1, 1)  # elementwise: rows of one coordinate

        def value(F):
            return torch.nn.functional.softplus(-y * F)[:, 0]

        def grad_hess(F):
            p = torch.sigmoid(-y * F)
            return -y * p, (p * (1 - p))[:, :, None]

        start = (Z if F0 is None else F0).reshape(-1, 1)
        return newton_prox(value, grad_hess, z, rho, start).reshape(Z.shape)


class HingeLoss(Loss):
    """``sum max(0, 1 - Y * F)`` with ``Y in {-1, +1}``, per output column. Not smooth."""

    name = "hinge"
    smooth = False
    curvature = math.inf
    smoothing_start = 1e-2

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

    def torch_grad(self, F, Y):
        return -Y * (Y * F < 1).to(F.dtype)

    def torch_value_grad(self, F, Y, mu: float = 0.0):
        """The Huber-smoothed value and gradient (:meth:`torch_smoothed`); ``mu > 0``."""
        return self.torch_smoothed(F, Y, mu)

    def torch_prox(self, Z, Y, rho, F0=None):
        import torch

        m = Y * Z  # shift toward the margin by at most 1 / rho
        return torch.where(m >= 1, Z, torch.where(m <= 1 - 1 / rho, Z + Y / rho, Y))

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
    curvature = 0.5  # the Hessian diag(p) - p p^T has eigenvalues in [0, 1/2]

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

    def torch_hessian(self, F, Y):
        import torch

        p = torch.softmax(F, dim=1)
        return p, p

    def torch_prox(self, Z, Y, rho, F0=None):
        import torch

        def value(F):
            return torch.logsumexp(F, dim=1) - (Y * F).sum(1)

        def grad_hess(F):
            p = torch.softmax(F, dim=1)
            return p - Y, torch.diag_embed(p) - p[:, :, None] * p[:, None, :]

        return newton_prox(value, grad_hess, Z, rho, Z if F0 is None else F0)


def newton_prox(value, grad_hess, Z, rho, F0, max_steps=30, gtol=1e-9):
    """Damped Newton with Armijo backtracking on ``phi(f) = l(f) + (rho/2)||f - Z||^2`` per row.

    ``value(F)`` -> (m,), ``grad_hess(F)`` -> (m, c), (m, c, c); rows are independent strongly convex
    problems, so the damped method converges globally (and quadratically near the minimiser).
    """
    import torch

    F = F0.clone()
    eye = torch.eye(F.shape[1], dtype=F.dtype, device=F.device)
    phi = lambda G: value(G) + 0.5 * rho * (G - Z).square().sum(-1)  # noqa: E731
    for _ in range(max_steps):
        g, H = grad_hess(F)
        g = g + rho * (F - Z)
        if float(g.abs().max()) <= gtol:
            break
        if F.shape[1] == 1:
            d = g / (H[:, :, 0] + rho)
        else:
            d = torch.linalg.solve(H + rho * eye, g.unsqueeze(-1)).squeeze(-1)
        slope = (g * d).sum(-1)
        f0 = phi(F)
        t = torch.ones_like(slope)
        for _ in range(30):
            ok = phi(F - t[:, None] * d) <= f0 - 1e-4 * t * slope
            if bool(ok.all()):
                break
            t = torch.where(ok, t, t / 2)
        step = t[:, None] * d
        F = F - step
        if float(step.abs().max()) <= 1e-13 * (1 + float(F.abs().max())):  # at the rounding floor
            break
    return F


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
