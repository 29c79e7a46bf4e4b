"""The BN basis: centering, compact SVD and the whitened data U' = [U, 1/sqrt(n)] (spec section 2)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import check_data

__all__ = ["BNBasis", "bn_basis"]


@dataclass(frozen=True)
class BNBasis:
    """Centered SVD of the training data and the BN basis built from it.

    With ``P X = U diag(S) V^T`` (rank ``r``), a BN neuron's output on the training data is
    ``U' z`` with ``U' = [U, 1/sqrt(n)]`` and ``z = [gamma q; alpha]`` (spec eq. after (2)).

    Attributes
    ----------
    U : ndarray of shape (n, r)
        Left singular vectors of the centered data (orthonormal, orthogonal to the ones vector).
    S : ndarray of shape (r,)
        Kept singular values, descending, all > ``rank_tol * S_max``.
    V : ndarray of shape (d, r)
        Right singular vectors, mapping a unit direction ``q`` back to input space: ``w = V S^{-1} q``.
    mean : ndarray of shape (d,)
        Column means of the training data (BN's running mean at inference, through ``w``).
    n_samples : int
        Number of training samples ``n``; BN's shift enters as ``alpha / sqrt(n)``.
    rank_tol : float
        Relative singular value threshold used to determine the rank.
    S_dropped : ndarray
        The singular values below the threshold (reported, not used).
    """

    U: np.ndarray
    S: np.ndarray
    V: np.ndarray
    mean: np.ndarray
    n_samples: int
    rank_tol: float
    S_dropped: np.ndarray

    @property
    def rank(self) -> int:
        """Rank ``r`` of the centered data."""
        return int(self.S.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.V.shape[0])

    @property
    def dim(self) -> int:
        """Dimension ``k = r + 1`` of each group variable ``u_i``."""
        return self.rank + 1

    @property
    def Uprime(self) -> np.ndarray:
        """``U' = [U, 1/sqrt(n)]`` of shape (n, r + 1): orthonormal columns."""
        ones = np.full((self.n_samples, 1), 1.0 / np.sqrt(self.n_samples))
        return np.hstack([self.U, ones])

    def transform(self, X) -> np.ndarray:
        """Map data to BN-basis coordinates using the *training* statistics.

        For the training data this returns ``U'`` exactly (up to rounding); for new data it is what a
        BN layer in inference mode sees: ``[(X - mean) V S^{-1}, 1/sqrt(n)]``.

        Parameters
        ----------
        X : array-like of shape (n_new, d)

        Returns
        -------
        ndarray of shape (n_new, r + 1)
        """
        X = check_data(X, min_samples=1)
        if X.shape[1] != self.n_features:
            raise ValueError(
                f"X has {X.shape[1]} features, but the BN basis was built with {self.n_features}"
            )
        coords = (X - self.mean) @ (self.V / self.S)
        ones = np.full((X.shape[0], 1), 1.0 / np.sqrt(self.n_samples))
        return np.hstack([coords, ones])

    def directions_to_weights(self, Q: np.ndarray) -> np.ndarray:
        """Map unit directions ``q`` (columns of ``Q``, shape (r, m)) to input weights ``w = V S^{-1} q``.

        The returned ``w`` satisfies ``P X w = U q``, so ``||P X w|| = ||q||``.
        """
        return self.V @ (Q / self.S[:, None])


def bn_basis(X, *, rank_tol: float | None = None) -> BNBasis:
    """Center ``X``, take its compact SVD and build the BN basis (spec section 2).

    Parameters
    ----------
    X : array-like of shape (n, d)
        Training data; at least two samples, finite.
    rank_tol : float, optional
        Relative tolerance: singular values ``<= rank_tol * S_max`` are dropped. Defaults to
        ``max(n, d) * eps`` (float64), the rule of ``numpy.linalg.matrix_rank``. Rank-deficient data
        (duplicated or constant columns, d > n) is handled by this truncation.

    Returns
    -------
    BNBasis

    Raises
    ------
    ValueError
        If ``X`` has NaN/inf, fewer than two samples, or no variance at all (every column constant:
        BN divides by ``||P X w|| = 0`` for every ``w``).
    """
    X = check_data(X)
    n, d = X.shape
    if rank_tol is None:
        rank_tol = max(n, d) * np.finfo(np.float64).eps
    elif not (0 < rank_tol < 1):
        raise ValueError(f"rank_tol must be in (0, 1), got {rank_tol}")
    mean = X.mean(axis=0)
    Xc = X - mean
    U, S, Vt = np.linalg.svd(Xc, full_matrices=False)
    if (
        S.size == 0
        or S[0] <= np.finfo(np.float64).tiny
        or S[0] <= 1e-12 * max(1.0, np.abs(X).max()) * np.sqrt(n)
    ):
        raise ValueError(
            "X has no variance: every column is constant, so batch normalization is undefined "
            "(the centered data P X is zero)"
        )
    keep = S > rank_tol * S[0]
    r = int(keep.sum())
    return BNBasis(
        U=np.ascontiguousarray(U[:, :r]),
        S=S[:r].copy(),
        V=np.ascontiguousarray(Vt[:r].T),
        mean=mean,
        n_samples=n,
        rank_tol=float(rank_tol),
        S_dropped=S[r:].copy(),
    )
