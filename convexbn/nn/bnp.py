"""Batch Normalization Preconditioning (Lange, Helfrich & Ye, JMLR 2022, "Batch Normalization
Preconditioning for Neural Network Training", arXiv 2108.01110).

No BN layer: the gradient of each dense layer ``h = W a + b`` is preconditioned with running statistics of
the layer's input ``a`` before the optimizer step,

    G_W' = (G_W - g_b mu^T) diag(1 / (s + eps)),      g_b' = g_b - G_W' mu,

with ``mu`` the running mean of ``a`` and ``s = max(q - mu^2, 0)`` its running variance from the running
second moment ``q``. This is gradient descent in the centered, scaled coordinates that BN would produce:
``P = U U^T`` with ``U = [[D^-1, 0], [-mu^T D^-1, 1]]``, ``D = diag(sqrt(s + eps))``. The statistics are
exponential moving averages of the *second moment* (not of batch variances), so batch size 1 works.
``rho``, ``eps`` and the bias correction of the moving averages are our choices (docs/variants.md lists them),
exposed as parameters.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BNPreconditioner"]


class BNPreconditioner:
    """Precondition the gradients of ``nn.Linear`` layers with running input statistics.

    Parameters
    ----------
    layers : sequence of nn.Linear
        The layers to precondition (each with a bias; without one only the scaling applies).
    rho : float
        Decay of the moving averages of the input mean and second moment.
    eps : float
        Added to the variance.
    bias_correction : bool
        Divide the moving averages by ``1 - rho^t`` (as Adam does), so early steps are not biased to 0.

    Notes
    -----
    Forward pre-hooks record the input statistics on every train-mode forward pass; call
    :meth:`precondition` after ``backward()`` and before ``optimizer.step()``. Use :meth:`frozen` around
    forward passes that must not update the statistics, and :meth:`remove` to detach the hooks.
    """

    def __init__(self, layers, *, rho: float = 0.99, eps: float = 1e-5, bias_correction: bool = True):
        self.layers = list(layers)
        if not self.layers or not all(isinstance(layer, nn.Linear) for layer in self.layers):
            raise ValueError("BNPreconditioner needs a non-empty sequence of nn.Linear layers")
        if not 0.0 <= rho < 1.0:
            raise ValueError(f"rho must be in [0, 1), got {rho}")
        self.rho, self.eps, self.bias_correction = float(rho), float(eps), bool(bias_correction)
        self.active = True
        self.state = []
        self._handles = []
        for layer in self.layers:
            w = layer.weight
            self.state.append(
                {
                    "mean": torch.zeros(layer.in_features, dtype=w.dtype, device=w.device),
                    "square": torch.zeros(layer.in_features, dtype=w.dtype, device=w.device),
                    "t": 0,
                }
            )
            self._handles.append(layer.register_forward_pre_hook(self._make_hook(len(self.state) - 1)))

    def _make_hook(self, index: int):
        def hook(module, inputs):
            if not (module.training and self.active):
                return
            a = inputs[0].detach().reshape(-1, module.in_features)
            st = self.state[index]
            st["mean"].mul_(self.rho).add_(a.mean(0), alpha=1 - self.rho)
            st["square"].mul_(self.rho).add_(a.square().mean(0), alpha=1 - self.rho)
            st["t"] += 1

        return hook

    def statistics(self, index: int):
        """Bias-corrected running mean ``mu`` and variance ``s`` of layer ``index``'s input."""
        st = self.state[index]
        if st["t"] == 0:
            raise RuntimeError("no forward pass has been recorded yet")
        c = 1.0 - self.rho ** st["t"] if self.bias_correction else 1.0
        mu, q = st["mean"] / c, st["square"] / c
        return mu, (q - mu.square()).clamp_min(0)

    @torch.no_grad()
    def precondition(self) -> None:
        """Replace each layer's ``weight.grad`` and ``bias.grad`` by the preconditioned ones (in place)."""
        for index, layer in enumerate(self.layers):
            if layer.weight.grad is None:
                continue
            mu, s = self.statistics(index)
            GW = layer.weight.grad
            gb = layer.bias.grad if layer.bias is not None and layer.bias.grad is not None else None
            centered = GW - torch.outer(gb, mu) if gb is not None else GW
            GW_new = centered / (s + self.eps)
            if gb is not None:
                gb.sub_(GW_new @ mu)
            GW.copy_(GW_new)

    def frozen(self):
        """Context manager: forward passes inside do not update the statistics."""
        pre = self

        class _Frozen:
            def __enter__(self):
                self.saved = pre.active
                pre.active = False

            def __exit__(self, *exc):
                pre.active = self.saved

        return _Frozen()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
