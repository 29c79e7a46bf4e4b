"""The two-layer ReLU+BN network in the parametrization of docs/math.md section 1 (eq. (1)-(3)), as plain
numpy.

``f(X) = sum_j relu(gamma_j P X w_j / ||P X w_j|| + alpha_j / sqrt(n)) v_j^T``

In *training* mode the centering and norm are the batch statistics of the data passed in (this is
objective (3)); in *eval* mode they are the stored training statistics, like ``BatchNorm1d.eval()``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import check_data
from .losses import get_loss

__all__ = ["BNNetwork", "concatenate_networks"]


@dataclass
class BNNetwork:
    """A two-layer ReLU network with batch normalization before the ReLU.

    Attributes
    ----------
    weights : ndarray of shape (d, m)
        First-layer weights ``w_j`` (no bias: BN's centering removes it).
    gamma, alpha : ndarray of shape (m,)
        BN scale and shift in the convention of docs/math.md eq. (1).
    output : ndarray of shape (m, C)
        Output weights ``v_j``.
    running_mean, running_norm : ndarray of shape (m,)
        Training mean of ``X w_j`` and training norm ``||P X w_j||`` (used in eval mode).
    n_train : int
        Training sample count ``n``; eval mode shifts by ``alpha / sqrt(n_train)``.
    beta : float
        Weight decay of objective (3).
    loss : str
        Loss name of objective (3).
    """

    weights: np.ndarray
    gamma: np.ndarray
    alpha: np.ndarray
    output: np.ndarray
    running_mean: np.ndarray
    running_norm: np.ndarray
    n_train: int
    beta: float
    loss: str = "squared"

    @classmethod
    def from_parameters(cls, X, W, gamma, alpha, V, beta: float, loss: str = "squared") -> BNNetwork:
        """Wrap parameters ``W`` (d, m), ``gamma``, ``alpha`` (m,), ``V`` (m, C) with the training
        statistics of ``X`` (n, d)."""
        X = np.asarray(X, dtype=np.float64)
        H = X @ W
        mean = H.mean(axis=0)
        return cls(
            weights=np.asarray(W, dtype=np.float64),
            gamma=np.asarray(gamma, dtype=np.float64),
            alpha=np.asarray(alpha, dtype=np.float64),
            output=np.asarray(V, dtype=np.float64),
            running_mean=mean,
            running_norm=np.linalg.norm(H - mean, axis=0),
            n_train=X.shape[0],
            beta=float(beta),
            loss=loss,
        )

    @property
    def n_neurons(self) -> int:
        return int(self.gamma.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.weights.shape[0])

    @property
    def n_outputs(self) -> int:
        return int(self.output.shape[1])

    def _check_X(self, X):
        X = check_data(X, min_samples=1)
        if X.shape[1] != self.n_features:
            raise ValueError(f"X has {X.shape[1]} features, the network expects {self.n_features}")
        return X

    def hidden(self, X, *, training: bool = False) -> np.ndarray:
        """Post-ReLU hidden activations, shape (n, m)."""
        X = self._check_X(X)
        H = X @ self.weights
        if training:
            if X.shape[0] < 2:
                raise ValueError("training-mode BN needs at least 2 samples")
            mean = H.mean(axis=0)
            norm = np.linalg.norm(H - mean, axis=0)
            n = X.shape[0]
        else:
            mean, norm, n = self.running_mean, self.running_norm, self.n_train
        return np.maximum(self.gamma * (H - mean) / norm + self.alpha / np.sqrt(n), 0.0)

    def forward(self, X, *, training: bool = False) -> np.ndarray:
        """Network outputs, shape (n, C)."""
        return self.hidden(X, training=training) @ self.output

    def predict(self, X) -> np.ndarray:
        """Eval-mode outputs with the training BN statistics; shape (n,) for one output, else (n, C)."""
        F = self.forward(X, training=False)
        return F[:, 0] if F.shape[1] == 1 else F

    def penalty(self) -> float:
        """``(beta / 2) sum_j (gamma_j^2 + alpha_j^2 + ||v_j||^2)``."""
        return 0.5 * self.beta * float(np.sum(self.gamma**2) + np.sum(self.alpha**2) + np.sum(self.output**2))

    def objective(self, X, y) -> float:
        """Objective (3): the loss of a training-mode forward pass on ``X`` plus the weight decay."""
        loss = get_loss(self.loss)
        F = self.forward(X, training=True)
        Y = loss.encode_targets(y)
        if Y.shape != F.shape:
            raise ValueError(f"y encodes to shape {Y.shape}, the network outputs {F.shape}")
        return loss.value(F, Y) + self.penalty()

    def to_torch(self, *, dtype=None, eps: float = 1e-5):
        """Export as ``nn.Sequential(Linear, BatchNorm1d, ReLU, Linear)`` with the same function.

        PyTorch's training-mode BN is ``sqrt(n)`` times docs/math.md's (eq. (1) and the note after (3)), and
        adds ``eps`` to the variance. The export scales ``w_j`` so that the biased training variance of
        ``X w_j`` is exactly 1, sets BN's weight to ``gamma sqrt(1 + eps)`` (cancelling ``eps``) and its
        bias to ``alpha``, the running statistics to the training ones, and the output weights to
        ``v / sqrt(n)``. Predictions then agree in ``.train()`` mode on the training data and in
        ``.eval()`` mode on any data. The module is returned in eval mode; as always in PyTorch, a
        forward pass in ``.train()`` mode overwrites the running statistics (momentum 0.1, unbiased
        variance), so copy the module before using it in train mode if the statistics matter.

        Parameters
        ----------
        dtype : torch.dtype, optional
            Default ``torch.float64`` (for bit-level agreement checks); use ``torch.float32`` to train.
        eps : float
            BatchNorm1d's ``eps``.
        """
        import torch
        from torch import nn

        dtype = torch.float64 if dtype is None else dtype
        m, d, C, n = self.n_neurons, self.n_features, self.n_outputs, self.n_train
        std = self.running_norm / np.sqrt(n)  # biased standard deviation of X w_j
        scale = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 1.0)
        first = nn.Linear(d, m, bias=False)
        bn = nn.BatchNorm1d(m, eps=eps)
        last = nn.Linear(m, C, bias=False)
        model = nn.Sequential(first, bn, nn.ReLU(), last).to(dtype)
        with torch.no_grad():
            first.weight.copy_(torch.as_tensor((self.weights * scale).T))
            bn.weight.copy_(torch.as_tensor(self.gamma * np.sqrt(1.0 + eps)))
            bn.bias.copy_(torch.as_tensor(self.alpha))
            bn.running_mean.copy_(torch.as_tensor(self.running_mean * scale))
            bn.running_var.fill_(1.0)
            last.weight.copy_(torch.as_tensor(self.output.T / np.sqrt(n)))
        return model.eval()


def concatenate_networks(networks) -> BNNetwork:
    """Stack networks trained on the same data side by side: neurons concatenated, outputs stacked.

    This is the network of the per-output programs of docs/math.md section 8: each hidden neuron feeds only
    the output of the program it came from, so the output matrix is block diagonal.

    Parameters
    ----------
    networks : sequence of BNNetwork
        With the same ``n_train``, ``beta``, ``loss`` and input dimension; network ``j`` has ``C_j``
        outputs and ``m_j`` neurons.

    Returns
    -------
    BNNetwork
        ``sum_j m_j`` neurons and ``sum_j C_j`` outputs.
    """
    networks = list(networks)
    if not networks:
        raise ValueError("need at least one network to concatenate")
    first = networks[0]
    for net in networks[1:]:
        if (net.n_train, net.beta, net.loss, net.n_features) != (
            first.n_train,
            first.beta,
            first.loss,
            first.n_features,
        ):
            raise ValueError("networks to concatenate must share n_train, beta, loss and n_features")
    m = sum(net.n_neurons for net in networks)
    C = sum(net.n_outputs for net in networks)
    output = np.zeros((m, C))
    row = col = 0
    for net in networks:
        output[row : row + net.n_neurons, col : col + net.n_outputs] = net.output
        row += net.n_neurons
        col += net.n_outputs
    return BNNetwork(
        weights=np.concatenate([net.weights for net in networks], axis=1),
        gamma=np.concatenate([net.gamma for net in networks]),
        alpha=np.concatenate([net.alpha for net in networks]),
        output=output,
        running_mean=np.concatenate([net.running_mean for net in networks]),
        running_norm=np.concatenate([net.running_norm for net in networks]),
        n_train=first.n_train,
        beta=first.beta,
        loss=first.loss,
    )
