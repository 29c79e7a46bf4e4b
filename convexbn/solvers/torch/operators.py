"""The linear maps of program (4) (docs/math.md section 4) on one device and dtype: one class for every torch
method, never forming any ``D_i U'``.

With ``Z = U' W^T`` per output (shape (C, n, P), one batched matmul), the prediction of output ``c`` is
``F[:, c] = sum_p mask * (Z_pos - Z_neg)`` and the gradient of the data fit is ``(mask * R[:, c])^T U'``
for the loss gradient ``R``. The methods work in two forms:

- on pre-activations (the augmented Lagrangian and ADMM, whose cone terms live on ``Z``): :meth:`pre`,
  :meth:`adjoint_pre`, :meth:`predict_pre`;
- on the variables ``X = (W_pos, W_neg)`` (2, C, P, k) (FISTA): :meth:`predict`, :meth:`adjoint`,
  :meth:`value_grad`, in blocks of samples whose temporaries fit ``memory_limit``.

A row-sharded problem (:mod:`convexbn.distributed`) carries a communicator; sums over samples are then
all-reduced (:meth:`reduce_sum`), so that every process takes the same steps. :meth:`lipschitz_estimate`
is the one power iteration for ``||A||^2`` of every method.
"""

from __future__ import annotations

import torch

__all__ = ["GroupOperators"]


class GroupOperators:
    """The data-fit maps of ``problem`` on ``device`` in ``dtype``.

    Parameters
    ----------
    problem : ConvexBNProblem
    device : torch.device
    dtype : torch.dtype
    memory_limit : int or None
        Bytes for the temporaries of :meth:`predict` and :meth:`adjoint`, which then run over blocks of
        ``sample_block`` samples (about three ``(C, block, P)`` temporaries; None: one block).
    """

    def __init__(self, problem, device, dtype, memory_limit: int | None = None):
        self.device, self.dtype = torch.device(device), dtype
        self.Up = torch.as_tensor(problem.Uprime, device=device, dtype=dtype)  # (n, k)
        self.mask = torch.as_tensor(problem.mask, device=device, dtype=dtype)  # (n, P)
        self.signs = 2 * self.mask - 1
        self.neg_signs = -self.signs
        self.Y = torch.as_tensor(problem.Y, device=device, dtype=dtype)  # (n, C)
        self.beta = float(problem.beta)
        self.loss = problem.loss
        self.n = self.Up.shape[0]
        self.comm = getattr(problem, "communicator", None)
        C, P = problem.n_outputs, problem.n_patterns
        itemsize = torch.finfo(dtype).bits // 8
        blocked = self.n if memory_limit is None else memory_limit // (3 * C * P * itemsize)
        self.sample_block = int(min(self.n, max(1, blocked)))

    # --- distributed sums ------------------------------------------------------------------------
    def reduce_sum(self, tensor):
        """Sum ``tensor`` over the processes of a distributed solve (in place); identity otherwise."""
        return tensor if self.comm is None else self.comm.sum_(tensor)

    def reduce_max(self, value: float) -> float:
        """Largest ``value`` over the processes; identity in a single-process solve."""
        return value if self.comm is None else self.comm.max(value)

    # --- pre-activation form -----------------------------------------------------------------------
    def pre(self, W, out=None):
        """``U' W^T`` for W of shape (..., C, P, k): (..., C, n, P) (written into ``out`` when given)."""
        return torch.matmul(self.Up, W.transpose(-1, -2), out=out)

    def adjoint_pre(self, G):
        """``G^T U'`` for G of shape (..., C, n, P): (..., C, P, k)."""
        return torch.matmul(G.transpose(-1, -2), self.Up)

    def predict_pre(self, Zdiff):
        """(n, C) outputs from the pre-activations ``U' (W_pos - W_neg)^T`` (C, n, P)."""
        return (self.mask * Zdiff).sum(-1).T

    # --- variable form -----------------------------------------------------------------------------
    def predict_one(self, W):
        """The predictions F (n, C) of one block of groups W (C, P, k), over blocks of samples."""
        W = W.transpose(1, 2)  # (C, k, P)
        n, b = self.n, self.sample_block
        if b >= n:
            return (self.mask * torch.matmul(self.Up, W)).sum(-1).T
        F = torch.empty((n, W.shape[0]), dtype=W.dtype, device=W.device)
        for i in range(0, n, b):
            F[i : i + b] = (self.mask[i : i + b] * torch.matmul(self.Up[i : i + b], W)).sum(-1).T
        return F

    def adjoint_one(self, R):
        """The data fit's gradient (C, P, k) with respect to one block, for the loss gradient R (n, C)."""
        n, b = self.n, self.sample_block
        if b >= n:
            return torch.matmul((self.mask * R.T[:, :, None]).transpose(1, 2), self.Up)
        G = 0
        for i in range(0, n, b):
            block = (self.mask[i : i + b] * R[i : i + b].T[:, :, None]).transpose(1, 2)
            G = G + torch.matmul(block, self.Up[i : i + b])
        return G

    def predict(self, X):
        """The predictions F (n, C) at X = (W_pos, W_neg) (2, C, P, k)."""
        return self.predict_one(X[0] - X[1])

    def adjoint(self, R):
        """The data fit's gradient (2, C, P, k) for the loss gradient R (n, C)."""
        G = self.adjoint_one(R)
        return torch.stack([G, -G])

    def value(self, F) -> float:
        """The data fit at the predictions F (n, C)."""
        return float(self.loss.torch_value(F, self.Y))

    def value_grad(self, X, F=None):
        """Data fit and its gradient (2, C, P, k) at X (2, C, P, k); also the (n, C) loss gradient.

        ``F``: the predictions at X when known (the map is linear: FISTA keeps them for its iterates).
        """
        F = self.predict(X) if F is None else F
        R = self.loss.torch_grad(F, self.Y)
        return self.value(F), self.adjoint(R), R

    # --- step size ---------------------------------------------------------------------------------
    def lipschitz_estimate(self, n_blocks: int, n_power: int = 20) -> float:
        """``||A||^2`` of the data-fit map on ``n_blocks`` blocks of groups (1: the gated relaxation or
        one sign; 2: program (4)), times the loss's :attr:`~convexbn.losses.Loss.step_curvature`.

        Power iteration on one block's normal map ``A_1^T A_1`` (all-reduced in a distributed solve) from a
        fixed random start; the two blocks of (4) enter as ``W_pos - W_neg``, which doubles it.
        """
        C, P, k = self.Y.shape[1], self.mask.shape[1], self.Up.shape[1]
        g = torch.Generator(device="cpu").manual_seed(0)
        start = torch.randn((2, C, P, k), generator=g, dtype=self.dtype)
        W = (start[0] - start[1]).to(self.device)
        est = 1.0
        for _ in range(n_power):
            W = W / W.norm()
            W = self.reduce_sum(self.adjoint_one(self.predict_one(W)))
            est = float(W.norm())
        return max(est * n_blocks * self.loss.step_curvature, 1e-12)
