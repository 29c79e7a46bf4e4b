"""Gamma decay: the explicit regularizer that Luo, Wang, Shao & Peng (ICLR 2019, "Towards Understanding
Regularization in Batch Normalization", arXiv 1809.00846) derive as BN's implicit regularization.

BN = population normalization (PN) + a penalty ``sum_j zeta_j gamma_j^2`` whose strength scales as
``1/M`` (batch size ``M``). Our adaptive form (docs/variants.md), per channel ``j``:

    zeta_j = (rho_j + 2) / (8 M) * I(gamma_j) + 1 / (2 M) * mean_i d^2 l_i / d u_ij^2,

with ``rho_j`` the excess kurtosis of the pre-activation (the PN layer's running estimate), ``I(gamma_j)``
the empirical Fisher information ``mean_i (d l_i / d gamma_j)^2`` over the batch, and ``u = gamma zhat +
alpha`` the BN output in the standardized scale (our reading of "the BN output": the scale in which the
batch-statistics noise is O(1)). ``l_i`` is the per-sample loss. Because PN detaches its statistics the
samples are independent, so the per-sample gradients are exact from one backward pass:
``d l_i / d gamma_j = (d l / d h_ij) zhat_ij / sqrt(n)``. The second derivative is
``1[h_ij > 0] v_j^T H_i v_j / n`` with ``H_i`` the per-sample Hessian of the loss in the network output,
from ``torch.func.vmap(torch.func.hessian(...))`` (zero for the hinge loss, a.e.).

The objective is a sum over samples (docs/math.md eq. (3)), so the penalty added to it is ``n sum_j zeta_j
gamma_j^2`` (the paper's mean-loss regularizer, times ``n``). ``zeta`` is recomputed at each step and held
constant (detached) in that step's gradient. A constant ``zeta`` is the fallback (:class:`GammaDecay` with
``zeta=float``). All of this is our concrete reading of the paper's abstract; the constants are ours.
"""

from __future__ import annotations

import math

import torch

from ..losses import get_loss
from .layers import PopulationNormalization

__all__ = ["GammaDecay"]


class GammaDecay:
    """The gamma-decay penalty for a network with a :class:`PopulationNormalization` layer.

    Parameters
    ----------
    zeta : float or "adaptive"
        A constant strength (per sample of the mean loss), or the adaptive estimate above.
    loss : str
        The training loss (for the per-sample Hessian).
    n_train : int
        ``n``: the penalty added to the summed objective is ``n sum_j zeta_j gamma_j^2``.

    Attributes
    ----------
    last_zeta : Tensor of shape (m,) or None
        The strengths used at the last step (for logging).
    """

    def __init__(self, zeta="adaptive", *, loss: str = "squared", n_train: int):
        if isinstance(zeta, str):
            if zeta != "adaptive":
                raise ValueError(f"zeta must be a non-negative float or 'adaptive', got {zeta!r}")
        elif not (float(zeta) >= 0 and math.isfinite(float(zeta))):
            raise ValueError(f"zeta must be a non-negative float or 'adaptive', got {zeta!r}")
        self.zeta = zeta
        self.loss = get_loss(loss)
        self.n_train = int(n_train)
        self.last_zeta: torch.Tensor | None = None

    @property
    def adaptive(self) -> bool:
        return isinstance(self.zeta, str)

    def penalty(self, layer: PopulationNormalization, zeta: torch.Tensor) -> torch.Tensor:
        """``n sum_j zeta_j gamma_j^2`` (differentiable in gamma, ``zeta`` held fixed)."""
        return self.n_train * (zeta.detach() * layer.gamma.square()).sum()

    def constant(self, layer: PopulationNormalization) -> torch.Tensor:
        zeta = torch.full_like(layer.gamma, float(self.zeta)).detach()
        self.last_zeta = zeta
        return zeta

    def estimate(
        self,
        layer: PopulationNormalization,
        H: torch.Tensor,
        F: torch.Tensor,
        Y: torch.Tensor,
        output_weight: torch.Tensor,
    ) -> torch.Tensor:
        """Adaptive ``zeta`` (shape (m,)) from one batch.

        Parameters
        ----------
        layer : PopulationNormalization
            Its ``last_zhat`` (batch, m) and ``running_kurtosis`` are used.
        H : Tensor of shape (M, m)
            The layer's output (pre-ReLU), part of the graph of ``F``.
        F : Tensor of shape (M, C)
            Network outputs of the batch.
        Y : Tensor of shape (M, C)
            Encoded targets.
        output_weight : Tensor of shape (C, m)
            The output layer's weight ``V^T``.
        """
        M = H.shape[0]
        zhat = layer.last_zhat.detach()
        (dl_dh,) = torch.autograd.grad(self.loss.torch_value(F, Y), H, retain_graph=True)
        per_sample_grad_gamma = dl_dh.detach() * zhat / math.sqrt(layer.n_train)
        fisher = per_sample_grad_gamma.square().mean(0)

        def sample_loss(f, y):
            return self.loss.torch_value(f.unsqueeze(0), y.unsqueeze(0))

        hess = torch.func.vmap(torch.func.hessian(sample_loss))(F.detach(), Y)  # (M, C, C)
        V = output_weight.detach()  # (C, m)
        curvature = torch.einsum("cj,icd,dj->ij", V, hess, V)  # v_j^T H_i v_j, (M, m)
        active = (H.detach() > 0).to(H.dtype)
        second = (active * curvature).mean(0) / layer.n_train  # d^2 l / d u^2 = (1/n) d^2 l / d h^2
        rho = layer.running_kurtosis.detach()
        zeta = (rho + 2).clamp_min(0) / (8 * M) * fisher + second / (2 * M)
        self.last_zeta = zeta.detach()
        return self.last_zeta
