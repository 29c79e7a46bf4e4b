"""Normalization layers of the two-layer network, all in the output scale of docs/math.md eq. (1).

Every layer computes, per neuron ``j``,

    h_j = (gamma_j * zhat_j + alpha_j) / sqrt(n_train),

where ``zhat_j`` is the pre-activation ``z_j = x^T w_j`` standardized with some mean and variance, and
``n_train`` is the training-set size (a constant). The layers differ only in *which* statistics
standardize ``z`` while training:

- :class:`SpecBatchNorm` -- the mini-batch's own (batch normalization, Ioffe & Szegedy 2015);
- :class:`FullNormalization` -- compositional running estimates of the full-data statistics, with the
  batch moments' Jacobian in the backward pass (Lian & Liu 2019);
- :class:`PopulationNormalization` -- population statistics, detached (Luo et al. 2019).

In *exact* mode (:func:`exact_statistics`) every layer standardizes with the statistics of the input
itself, with no ``eps``: on the full training set this is eq. (1) exactly, so objective (3) of any of the
networks is the number the convex solver reports. In eval mode each layer uses its stored statistics.
"""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import nn

__all__ = [
    "NormLayer",
    "SpecBatchNorm",
    "FullNormalization",
    "PopulationNormalization",
    "exact_statistics",
    "frozen_statistics",
    "power_schedule",
]


def power_schedule(a0: float = 1.0, power: float = 0.5) -> Callable[[int], float]:
    """``k -> min(1, a0 * (k + 1) ** -power)``: the step of a running estimate at update ``k`` (0-based)."""

    def schedule(k: int) -> float:
        return min(1.0, a0 * (k + 1) ** (-power))

    return schedule


class NormLayer(nn.Module, ABC):
    """Base class: the affine part, exact mode, eval mode and the running statistics.

    Parameters
    ----------
    n_neurons : int
        Number of channels ``m``.
    n_train : int
        Training-set size ``n`` of eq. (1); the output is divided by ``sqrt(n)``.
    eps : float
        Added to the variance in train and eval mode (never in exact mode).

    Attributes
    ----------
    gamma, alpha : Parameter of shape (m,)
        Scale and shift in the convention of docs/math.md eq. (1).
    running_mean, running_var : buffer of shape (m,)
        Statistics used in eval mode (biased variance).
    exact : bool
        Standardize with the input's own statistics and ``eps = 0`` (objective (3)); set by
        :func:`exact_statistics`.
    update_statistics : bool
        Whether a train-mode forward pass updates the running statistics; cleared by
        :func:`frozen_statistics` (landscape probes).
    """

    def __init__(self, n_neurons: int, n_train: int, eps: float = 0.0):
        super().__init__()
        self.n_train = int(n_train)
        self.eps = float(eps)
        self.gamma = nn.Parameter(torch.ones(n_neurons))
        self.alpha = nn.Parameter(torch.zeros(n_neurons))
        self.register_buffer("running_mean", torch.zeros(n_neurons))
        self.register_buffer("running_var", torch.ones(n_neurons))
        self.register_buffer("n_updates", torch.zeros((), dtype=torch.long))
        self.exact = False
        self.update_statistics = True
        self.last_zhat: torch.Tensor | None = None

    def affine(self, zhat: torch.Tensor) -> torch.Tensor:
        return (self.gamma * zhat + self.alpha) / math.sqrt(self.n_train)

    @staticmethod
    def _standardize(z, mean, var, eps):
        if eps > 0:
            return (z - mean) / torch.sqrt(var + eps)
        return (z - mean) / var.clamp_min(torch.finfo(z.dtype).tiny).sqrt()

    @abstractmethod
    def train_standardize(self, z: torch.Tensor) -> torch.Tensor:
        """Standardized ``z`` (batch, m) in train mode: where the variants differ."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.exact:
            zhat = self._standardize(z, z.mean(0), z.var(0, unbiased=False), 0.0)
        elif self.training:
            zhat = self.train_standardize(z)
        else:
            zhat = self._standardize(z, self.running_mean, self.running_var, self.eps)
        self.last_zhat = zhat
        return self.affine(zhat)

    def _ema(self, name: str, value: torch.Tensor, rate: float) -> None:
        buf = getattr(self, name)
        buf.mul_(1 - rate).add_(value.detach(), alpha=rate)


class SpecBatchNorm(NormLayer):
    """Batch normalization in the scale of docs/math.md eq. (3): train mode uses the mini-batch's mean and
    biased variance.

    On the full training set with ``eps = 0`` this is eq. (1). Running statistics for eval mode are an
    exponential moving average (``momentum``, as in ``nn.BatchNorm1d`` but with the biased variance),
    started from the first batch.

    Parameters
    ----------
    n_neurons, n_train, eps
        See :class:`NormLayer`; ``eps = 0`` by default (the BN of docs/math.md eq. (1)).
    momentum : float
        Weight of the new batch in the running statistics.
    """

    def __init__(self, n_neurons: int, n_train: int, eps: float = 0.0, momentum: float = 0.1):
        super().__init__(n_neurons, n_train, eps)
        self.momentum = float(momentum)

    def train_standardize(self, z):
        mean, var = z.mean(0), z.var(0, unbiased=False)
        if self.update_statistics:
            with torch.no_grad():
                rate = 1.0 if int(self.n_updates) == 0 else self.momentum
                self._ema("running_mean", mean, rate)
                self._ema("running_var", var, rate)
                self.n_updates += 1
        return self._standardize(z, mean, var, self.eps)


class FullNormalization(NormLayer):
    """Full Normalization (Lian & Liu, AISTATS 2019, "Revisit Batch Normalization: New Understanding
    from an Optimization View and a Refinement via Composition Optimization", arXiv 1810.06177).

    FN minimizes the full-data objective, whose normalization uses the *full-data* moments
    ``S* = (E z, E z^2)``, by stochastic compositional gradient descent: at each step, with the batch moments
    ``G``, the running estimate ``Y <- (1 - a_k) Y + a_k G`` and the forward pass normalizes with
    ``Y + (G - G.detach())`` -- value: the running full-data estimate; gradient: the batch moments'
    Jacobian (the SCGD estimator). Eval mode uses the same ``Y``, so there is no train/test mismatch.

    The step ``a_k`` follows ``stat_schedule`` (default ``a_k = (k + 1)^(-1/2)``); the paper's two
    timescales pair it with a parameter step decaying faster (``lr ~ k^(-3/4)``, see
    :func:`convexbn.nn.train_network`'s ``lr_decay_power``). Both schedules are our choice (docs/variants.md's
    canonical one), exposed as parameters.

    Parameters
    ----------
    n_neurons, n_train, eps
        See :class:`NormLayer`.
    stat_schedule : callable, optional
        ``k -> a_k`` for the ``k``-th update (``k = 0`` gives 1: ``Y`` starts at the first batch).
    """

    def __init__(
        self,
        n_neurons: int,
        n_train: int,
        eps: float = 1e-8,
        stat_schedule: Callable[[int], float] | None = None,
    ):
        super().__init__(n_neurons, n_train, eps)
        self.stat_schedule = stat_schedule if stat_schedule is not None else power_schedule(1.0, 0.5)
        self.register_buffer("running_square", torch.ones(n_neurons))

    def train_standardize(self, z):
        g1, g2 = z.mean(0), z.square().mean(0)
        y1, y2 = self.running_mean, self.running_square
        if self.update_statistics:
            a = 1.0 if int(self.n_updates) == 0 else float(self.stat_schedule(int(self.n_updates)))
            y1 = (1 - a) * y1 + a * g1.detach()
            y2 = (1 - a) * y2 + a * g2.detach()
            with torch.no_grad():
                self.running_mean.copy_(y1)
                self.running_square.copy_(y2)
                self.running_var.copy_((y2 - y1.square()).clamp_min(0))
                self.n_updates += 1
        s1 = y1 + (g1 - g1.detach())
        s2 = y2 + (g2 - g2.detach())
        var = (s2 - s1.square()).clamp_min(0)
        return self._standardize(z, s1, var, self.eps)


class PopulationNormalization(NormLayer):
    """Population normalization (Luo, Wang, Shao & Peng, ICLR 2019, "Towards Understanding
    Regularization in Batch Normalization", arXiv 1809.00846).

    Standardizes with population statistics that are *detached* (no gradient flows through them), so the
    samples of a batch do not interact. The statistics are an exponential moving average of the batch
    statistics (``momentum``), or, with :func:`convexbn.nn.train_network`'s ``recompute_statistics_every``,
    the exact full-data statistics recomputed every so many steps (:meth:`set_statistics`). The layer also
    keeps a running excess kurtosis of the pre-activations, used by the adaptive gamma decay
    (:class:`convexbn.nn.GammaDecay`). The paper's claim is that PN alone does not behave like BN, and PN
    plus the gamma-decay regularizer does.

    Parameters
    ----------
    n_neurons, n_train, eps
        See :class:`NormLayer`.
    momentum : float
        Weight of the new batch in the running statistics (the first batch initializes them).
    """

    def __init__(self, n_neurons: int, n_train: int, eps: float = 1e-8, momentum: float = 0.1):
        super().__init__(n_neurons, n_train, eps)
        self.momentum = float(momentum)
        self.register_buffer("running_kurtosis", torch.zeros(n_neurons))

    @torch.no_grad()
    def set_statistics(self, z: torch.Tensor) -> None:
        """Set the population statistics to those of ``z`` (shape (n, m), e.g. all pre-activations)."""
        mean, var = z.mean(0), z.var(0, unbiased=False)
        self.running_mean.copy_(mean)
        self.running_var.copy_(var)
        self.running_kurtosis.copy_(_excess_kurtosis(z, mean, var))
        self.n_updates += 1

    def train_standardize(self, z):
        if self.update_statistics:
            with torch.no_grad():
                mean, var = z.mean(0), z.var(0, unbiased=False)
                rate = 1.0 if int(self.n_updates) == 0 else self.momentum
                self._ema("running_mean", mean, rate)
                self._ema("running_var", var, rate)
                if z.shape[0] > 1:
                    self._ema("running_kurtosis", _excess_kurtosis(z, mean, var), rate)
                self.n_updates += 1
        return self._standardize(z, self.running_mean, self.running_var, self.eps)


def _excess_kurtosis(z, mean, var):
    var = var.clamp_min(torch.finfo(z.dtype).tiny)
    return (z - mean).pow(4).mean(0) / var.square() - 3.0


@contextlib.contextmanager
def exact_statistics(model: nn.Module):
    """Within the block, every :class:`NormLayer` of ``model`` uses its input's own statistics, no ``eps``.

    Running statistics are not touched. This is how objective (3) is evaluated on the full data.
    """
    layers = [mod for mod in model.modules() if isinstance(mod, NormLayer)]
    saved = [layer.exact for layer in layers]
    for layer in layers:
        layer.exact = True
    try:
        yield model
    finally:
        for layer, flag in zip(layers, saved, strict=True):
            layer.exact = flag


@contextlib.contextmanager
def frozen_statistics(model: nn.Module):
    """Within the block, train-mode forward passes leave every buffer of ``model`` as it was.

    Works for :class:`NormLayer` and for ``nn.BatchNorm1d`` alike (buffers are restored on exit).
    """
    layers = [mod for mod in model.modules() if isinstance(mod, NormLayer)]
    saved_flags = [layer.update_statistics for layer in layers]
    saved_buffers = {name: buf.clone() for name, buf in model.named_buffers()}
    for layer in layers:
        layer.update_statistics = False
    try:
        yield model
    finally:
        for layer, flag in zip(layers, saved_flags, strict=True):
            layer.update_statistics = flag
        with torch.no_grad():
            for name, buf in model.named_buffers():
                buf.copy_(saved_buffers[name])
