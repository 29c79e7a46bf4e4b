"""Loss-landscape diagnostics of Santurkar, Tsipras, Ilyas & Madry (NeurIPS 2018, "How Does Batch
Normalization Help Optimization?", arXiv 1805.11604).

At a point ``theta`` with gradient ``g = grad L(theta)``, over a grid of steps ``eta``:

- loss variation: ``min`` and ``max`` over ``eta`` of ``L(theta - eta g)``;
- gradient predictiveness: ``min`` and ``max`` over ``eta`` of ``||g - grad L(theta - eta g)||``;
- effective beta-smoothness: ``max`` over ``eta`` of ``||g - grad L(theta - eta g)|| / ||eta g||``.

:func:`probe_landscape` works on any scalar function of a list of tensors, so the same numbers are computed
for the BN network, the network without BN (on a mini-batch, statistics frozen), and the convex program
itself (:func:`convex_program_loss`). The grid is the caller's; :func:`convexbn.nn.train_network` uses
``eta = s * lr`` for ``s`` in ``landscape_steps`` (default 0.5 .. 4, i.e. 0.05 .. 0.4 (docs/variants.md) at lr
0.1). The internal-covariate-shift measure and "noisy BN" of the same paper are not implemented.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

__all__ = ["LandscapeProbe", "probe_landscape", "convex_program_loss"]


@dataclass
class LandscapeProbe:
    """One probe: the loss and gradient bands along ``-g`` and the effective beta-smoothness."""

    loss: float
    loss_min: float
    loss_max: float
    grad_change_min: float
    grad_change_max: float
    beta_smoothness: float
    grad_norm: float

    def as_dict(self) -> dict:
        return asdict(self)


def _flat_grad(value: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
    grads = torch.autograd.grad(value, list(params), allow_unused=True)
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).reshape(-1)
            for g, p in zip(grads, params, strict=True)
        ]
    )


def probe_landscape(
    function: Callable[[], torch.Tensor],
    params: Sequence[torch.Tensor],
    steps: Sequence[float],
) -> LandscapeProbe:
    """Evaluate the landscape measures of ``function`` at the current value of ``params``.

    Parameters
    ----------
    function : callable
        No arguments; returns the scalar loss as a function of the current values of ``params`` (e.g. a
        closure over a model and a fixed batch). It is called ``len(steps) + 1`` times.
    params : sequence of Tensor
        Leaf tensors with ``requires_grad=True``; moved to ``theta - eta g`` and restored in place.
    steps : sequence of float
        The step sizes ``eta`` (positive).

    Returns
    -------
    LandscapeProbe
    """
    params = list(params)
    steps = [float(s) for s in steps]
    if not steps or min(steps) <= 0:
        raise ValueError("steps must be a non-empty sequence of positive step sizes")
    saved = [p.detach().clone() for p in params]
    value = function()
    g = _flat_grad(value, params)
    gnorm = float(g.norm())
    losses, changes, smooth = [], [], []
    try:
        for eta in steps:
            with torch.no_grad():
                offset = 0
                for p, p0 in zip(params, saved, strict=True):
                    size = p.numel()
                    p.copy_(p0 - eta * g[offset : offset + size].view_as(p))
                    offset += size
            moved = function()
            g_eta = _flat_grad(moved, params)
            change = float((g - g_eta).norm())
            losses.append(float(moved.detach()))
            changes.append(change)
            smooth.append(change / (eta * gnorm) if gnorm > 0 else 0.0)
    finally:
        with torch.no_grad():
            for p, p0 in zip(params, saved, strict=True):
                p.copy_(p0)
    return LandscapeProbe(
        loss=float(value.detach()),
        loss_min=float(np.min(losses)),
        loss_max=float(np.max(losses)),
        grad_change_min=float(np.min(changes)),
        grad_change_max=float(np.max(changes)),
        beta_smoothness=float(np.max(smooth)),
        grad_norm=gnorm,
    )


def convex_program_loss(problem, W_pos: torch.Tensor, W_neg: torch.Tensor) -> torch.Tensor:
    """The smooth part of program (4), ``L(sum_i D_i U' (u_i - u'_i), y)``, as a torch function.

    Parameters
    ----------
    problem : ConvexBNProblem
        With a single output.
    W_pos, W_neg : Tensor of shape (P, k)
        The groups ``u_i`` and ``u'_i``.
    """
    if problem.n_outputs != 1:
        raise ValueError("convex_program_loss takes a single-output problem")
    U = torch.as_tensor(problem.Uprime, dtype=W_pos.dtype)
    mask = torch.as_tensor(problem.mask, dtype=W_pos.dtype)
    Y = torch.as_tensor(problem.Y, dtype=W_pos.dtype)
    F = ((U @ (W_pos - W_neg).T) * mask).sum(1, keepdim=True)
    return problem.loss.torch_value(F, Y)
