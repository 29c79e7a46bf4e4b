"""The BN basis: centering, compact SVD and the whitened data U' = [U, 1/sqrt(n)] (docs/math.md section 2)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.utils.extmath import svd_flip

from ._validation import check_data

__all__ = ["BNBasis", "bn_basis"]


@dataclass(frozen=True)
class BNBasis:
    """Centered SVD of the training data and the BN basis built from it.

    With ``P X diag(scale)^-1 = U diag(S) V^T`` (rank ``r``), a BN neuron's output on the training data
    is ``U' z`` with ``U' = [U, 1/sqrt(n)]`` and ``z = [gamma q; alpha]`` (docs/math.md eq. after (2)).
    ``scale`` holds the columns' standard deviations (see ``scale_features`` in :func:`bn_basis`);
    ``U`` spans the column space of ``P X`` whatever the scaling, so the program is the same.

    Attributes
    ----------
    U : ndarray of shape (n, r)
        Left singular vectors of the centered data (orthonormal, orthogonal to the ones vector). In a
        distributed solve (:func:`convexbn.distributed.distributed_bn_basis`) each process holds only its
        own rows of ``U``, while every other attribute, ``n_samples`` included, is global.
    S : ndarray of shape (r,)
        Kept singular values, descending, all > ``rank_tol * S_max``.
    V : ndarray of shape (d, r)
        Right singular vectors of the scaled centered data; a unit direction ``q`` maps back to input
        space as ``w = (V S^{-1} q) / scale``. Signs follow scikit-learn's ``svd_flip`` convention (the
        largest entry of each column of ``V`` is positive), so the basis, and the patterns sampled from
        it with a given seed, do not depend on the LAPACK build or on how the SVD was computed.
    mean : ndarray of shape (d,)
        Column means of the training data (BN's running mean at inference, through ``w``).
    n_samples : int
        Number of training samples ``n``; BN's shift enters as ``alpha / sqrt(n)``.
    rank_tol : float
        Relative singular value threshold used to determine the rank.
    S_dropped : ndarray
        The singular values below the threshold (reported, not used).
    scale : ndarray of shape (d,)
        Column scales divided out before the SVD (all ones with ``scale_features=False``; 1 for a
        constant column).
    """

    U: np.ndarray
    S: np.ndarray
    V: np.ndarray
    mean: np.ndarray
    n_samples: int
    rank_tol: float
    S_dropped: np.ndarray
    scale: np.ndarray | None = None

    def __post_init__(self):
        if self.scale is None:
            object.__setattr__(self, "scale", np.ones(self.V.shape[0]))

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
        """``U' = [U, 1/sqrt(n)]`` of shape (n, r + 1): orthonormal columns (a shard's rows of it when
        ``U`` is a shard)."""
        ones = np.full((self.U.shape[0], 1), 1.0 / np.sqrt(self.n_samples))
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
        coords = ((X - self.mean) / self.scale) @ (self.V / self.S)
        ones = np.full((X.shape[0], 1), 1.0 / np.sqrt(self.n_samples))
        return np.hstack([coords, ones])

    def directions_to_weights(self, Q: np.ndarray) -> np.ndarray:
        """Map directions ``q`` (columns of ``Q``, shape (r, m)) to input weights ``w = V S^{-1} q / scale``.

        The returned ``w`` (shape (d, m)) satisfies ``P X w = U q``, so ``||P X w|| = ||q||``.
        """
        return (self.V @ (Q / self.S[:, None])) / self.scale[:, None]

    def weights_to_coordinates(self, weights: np.ndarray) -> np.ndarray:
        """Coordinates ``S V^T (scale * w)`` (shape (r, m)) of ``P X w`` in the basis ``U``.

        ``U @ weights_to_coordinates(W)`` is ``P X W`` restricted to the kept subspace (the inverse of
        :meth:`directions_to_weights` on it).
        """
        return self.S[:, None] * (self.V.T @ (self.scale[:, None] * weights))


def bn_basis(X, *, rank_tol: float | None = None, scale_features: bool = True) -> BNBasis:
    """Center ``X``, take its compact SVD and build the BN basis (docs/math.md section 2).

    Parameters
    ----------
    X : array-like of shape (n, d)
        Training data; at least two samples, finite.
    rank_tol : float, optional
        Relative tolerance: singular values ``<= rank_tol * S_max`` are dropped. Defaults to
        ``max(n, d) * eps`` (float64), the rule of ``numpy.linalg.matrix_rank``, together with the
        rounding floor of centering, ``10 eps ||X diag(scale)^-1||_F`` (a column whose mean dwarfs its
        spread carries centering noise above ``eps S_max``). The rank never exceeds ``n - 1``.
        Rank-deficient data (duplicated or constant columns, d > n) is handled by this truncation.
    scale_features : bool, default=True
        Divide each centered column by its standard deviation before the SVD. A BN neuron is
        invariant to this (``X diag(s) w`` ranges over the same functions as ``X w``, and ``w`` carries
        no weight decay), and ``U`` spans the same space, so the program, its optimum and the law of
        sampled patterns are unchanged; but the SVD, the rank decision and the recovered weights stay
        accurate when features differ in scale by many orders of magnitude (1e-8 .. 1e8), where the
        unscaled SVD loses the small directions to rounding. A column whose spread is below
        ``1e-12`` of its magnitude is treated as constant (its centered values are rounding noise) and
        zeroed. ``False`` is the literal SVD of docs/math.md section 2 of ``P X``.

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
    rank_tol, default_tol = check_rank_options(rank_tol, scale_features, n, d)
    mean = X.mean(axis=0)
    Xc = X - mean
    spread = np.abs(X).max(axis=0)
    std = column_rms(lambda unit: np.sum((Xc / unit) ** 2, axis=0), spread, n)
    scale, constant = feature_scale(std, spread, scale_features)
    Xc = Xc / scale
    Xc[:, constant] = 0.0
    U, S, Vt = np.linalg.svd(Xc, full_matrices=False)
    U, Vt = svd_flip(U, Vt, u_based_decision=False)
    return truncated_basis(
        U, S, Vt, mean=mean, scale=scale, n=n, rank_tol=rank_tol, default_tol=default_tol,
        abs_max=scaled_magnitude(spread, scale, constant), scaled_norm=_norm(X / scale),
    )  # fmt: skip


def _norm(A: np.ndarray) -> float:
    """Frobenius norm; ``inf`` (no warning) when it overflows."""
    with np.errstate(over="ignore"):
        return float(np.linalg.norm(A))


def truncated_basis(U, S, Vt, *, mean, scale, n: int, rank_tol: float, default_tol: bool, abs_max: float,
                    scaled_norm: float) -> BNBasis:  # fmt: skip
    """The :class:`BNBasis` of an SVD ``U diag(S) Vt`` of the scaled centered data, truncated to the rank
    :func:`kept_rank` decides (``U`` may be a shard's rows)."""
    r = kept_rank(
        S, n=n, rank_tol=rank_tol, default_tol=default_tol, abs_max=abs_max, scaled_norm=scaled_norm
    )
    return BNBasis(
        U=np.ascontiguousarray(U[:, :r]),
        S=S[:r].copy(),
        V=np.ascontiguousarray(Vt[:r].T),
        mean=mean,
        n_samples=n,
        rank_tol=float(rank_tol),
        S_dropped=S[r:].copy(),
        scale=scale,
    )


def check_rank_options(rank_tol, scale_features, n: int, d: int) -> tuple[float, bool]:
    """Validate ``rank_tol`` and ``scale_features``; return ``(rank_tol, was_default)``."""
    default_tol = rank_tol is None
    if default_tol:
        rank_tol = max(n, d) * np.finfo(np.float64).eps
    elif not (0 < rank_tol < 1):
        raise ValueError(f"rank_tol must be in (0, 1), got {rank_tol}")
    if not isinstance(scale_features, (bool, np.bool_)):
        raise TypeError(f"scale_features must be a bool, got {type(scale_features).__name__}")
    return float(rank_tol), default_tol


def column_rms(sum_of_squares, spread: np.ndarray, n: int) -> np.ndarray:
    """Root mean square of each centered column, safe from overflow and underflow.

    ``sum_of_squares(unit)`` returns ``sum_i (Xc_ij / unit_j)^2`` (shape (d,)); ``spread`` is
    ``max_i |X_ij|``. Columns of ordinary magnitude use ``unit = 1`` (the plain formula, bit for bit);
    columns beyond ``1e+-150``, whose squares would overflow or underflow, are divided by their spread first.
    """
    with np.errstate(over="ignore", under="ignore"):
        plain = np.sqrt(sum_of_squares(np.ones_like(spread)) / n)
    extreme = (spread > 0) & ((spread > 1e150) | (spread < 1e-150) | ~np.isfinite(plain))
    if np.any(extreme):
        unit = np.where(extreme, spread, 1.0)
        plain = np.where(extreme, unit * np.sqrt(sum_of_squares(unit) / n), plain)
    return plain


def scaled_magnitude(spread: np.ndarray, scale: np.ndarray, constant: np.ndarray) -> float:
    """``max_j max_i |X_ij| / scale_j`` over the columns that are not constant: the magnitude of the data
    the SVD sees, against which "no variance" is decided (0.0 when every column is constant)."""
    keep = ~constant
    return float(np.max(spread[keep] / scale[keep])) if np.any(keep) else 0.0


def feature_scale(std: np.ndarray, spread: np.ndarray, scale_features: bool):
    """Column scales (shape (d,)) and the mask of constant columns, from the centered columns' standard
    deviations and largest magnitudes (see ``scale_features`` in :func:`bn_basis`)."""
    scale = np.ones(std.shape[0])
    constant = np.zeros(std.shape[0], dtype=bool)
    if scale_features:
        constant = std <= 1e-12 * spread
        scale[~constant] = std[~constant]
    return scale, constant


def kept_rank(S, *, n: int, rank_tol: float, default_tol: bool, abs_max: float, scaled_norm: float) -> int:
    """The rank ``r``: singular values above the threshold of :func:`bn_basis`, at most ``n - 1``.

    ``abs_max`` is ``max |X_ij| / scale_j`` over the non-constant columns (:func:`scaled_magnitude`: the
    magnitude of the matrix whose singular values ``S`` are) and ``scaled_norm`` is
    ``||X diag(scale)^-1||_F``. Raises ``ValueError`` when the centered data is zero, or rounding noise:
    ``S_max <= 1e-12 abs_max sqrt(n)``, a test between quantities of the same scaling.
    """
    if not (np.all(np.isfinite(S)) and np.isfinite(scaled_norm)):
        raise ValueError(
            f"X is too large for this SVD: values up to {abs_max:.3g} overflow float64 when squared; "
            "rescale X (or keep scale_features=True)"
        )
    if S.size == 0 or S[0] == 0 or S[0] <= 1e-12 * abs_max * np.sqrt(n):
        raise ValueError(
            "X has no variance: every column is constant, so batch normalization is undefined "
            "(the centered data P X is zero)"
        )
    threshold = rank_tol * S[0]
    if default_tol:
        # the rounding floor of the (scaled) centered data: centering a column of magnitude |x_j|
        # leaves errors of about eps |x_j| / scale_j, far above eps S_max when the column's mean
        # dwarfs its spread; directions below it are noise, not data
        threshold = max(threshold, 10 * np.finfo(np.float64).eps * scaled_norm)
    keep = S > threshold
    keep[n - 1 :] = False  # centered data has rank <= n - 1
    return int(keep.sum())
