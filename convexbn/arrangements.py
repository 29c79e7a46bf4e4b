"""Hyperplane arrangements of the BN basis (docs/math.md section 3).

An arrangement is the 0/1 activation pattern ``D = diag(1[U' g >= 0])`` of one neuron on the training
samples. We store a set of ``P`` patterns as a boolean mask of shape (n, P), column ``i`` being ``D_i``.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np
from scipy.optimize import linprog
from sklearn.utils import check_random_state

from ._validation import check_allocation, check_positive_int
from .basis import BNBasis

__all__ = [
    "Arrangements",
    "sample_arrangements",
    "enumerate_arrangements",
    "make_arrangements",
    "max_arrangements",
    "merge_arrangements",
    "network_arrangements",
    "relu_arrangements",
]


@dataclass(frozen=True)
class Arrangements:
    """A set of distinct, nonzero activation patterns.

    Attributes
    ----------
    mask : ndarray of bool, shape (n, P)
        ``mask[:, i]`` is the diagonal of ``D_i``.
    generators : ndarray of shape (P, r + 1)
        A vector ``g_i`` with ``D_i = 1[U' g_i >= 0]`` (a witness of each pattern).
    exact : bool
        True if the set holds *every* full-dimensional pattern of the arrangement, so that the convex
        program built on it is exact (its optimum is the global optimum of the nonconvex problem).
    """

    mask: np.ndarray
    generators: np.ndarray
    exact: bool = False

    @property
    def n_patterns(self) -> int:
        return int(self.mask.shape[1])

    @property
    def n_samples(self) -> int:
        return int(self.mask.shape[0])


def max_arrangements(n: int, k: int) -> int:
    """Upper bound on the number of cells of a central arrangement of ``n`` hyperplanes in R^k.

    ``2 * sum_{i<k} C(n-1, i)``, attained for hyperplanes in general position (Cover, 1965).
    """
    return 2 * sum(comb(n - 1, i) for i in range(min(k, n)))


def _unique_patterns(mask: np.ndarray, generators: np.ndarray):
    """Drop duplicate and all-zero columns of ``mask``, keeping first occurrences in order."""
    nonzero = mask.any(axis=0)
    mask, generators = mask[:, nonzero], generators[nonzero]
    packed = np.packbits(mask, axis=0)  # (ceil(n/8), P) bytes
    _, first = np.unique(packed.T, axis=0, return_index=True)
    first = np.sort(first)
    return np.ascontiguousarray(mask[:, first]), generators[first]


def sample_arrangements(basis: BNBasis, n_arrangements: int = 200, *, random_state=None) -> Arrangements:
    """Sample activation patterns from Gaussian generators ``g ~ N(0, I_{r+1})`` (docs/math.md section 3).

    Duplicates and the all-zero pattern are dropped, so at most ``n_arrangements`` patterns are
    returned; if every draw gave the all-zero pattern (possible for tiny ``n_arrangements``), more
    generators are drawn until one does not, so the result is never empty. The program built on a
    sample is a restriction of the exact one: its optimum is an upper bound on the global optimum,
    attained by the recovered network.

    Parameters
    ----------
    basis : BNBasis
    n_arrangements : int
        Number of generators drawn.
    random_state : int, RandomState or None
        Seed (scikit-learn convention).

    Returns
    -------
    Arrangements
    """
    return _sample_patterns(basis.Uprime, n_arrangements, random_state)


def _sample_patterns(A: np.ndarray, n_arrangements: int, random_state) -> Arrangements:
    """Distinct nonzero patterns ``1[A g >= 0]`` for Gaussian ``g`` (see :func:`sample_arrangements`)."""
    n_arrangements = check_positive_int(n_arrangements, "n_arrangements")
    # the generators, the products A G^T and their mask, and the program's (n, P) arrays after them
    check_allocation(8.0 * n_arrangements * (A.shape[1] + 4 * A.shape[0]),
                     f"sampling {n_arrangements} patterns of {A.shape[0]} samples",
                     "ask for fewer arrangements")  # fmt: skip
    rng = check_random_state(random_state)
    G = rng.standard_normal((n_arrangements, A.shape[1]))
    mask, G = _unique_patterns(A @ G.T >= 0, G)
    for _ in range(1000):  # P(all-zero) <= 1/2 per draw, so this ends after a few rounds
        if G.shape[0]:
            break
        G = rng.standard_normal((n_arrangements, A.shape[1]))
        mask, G = _unique_patterns(A @ G.T >= 0, G)
    return Arrangements(mask=mask, generators=G, exact=False)


def _interior_point(A: np.ndarray, signs: np.ndarray, tol: float):
    """A ``g`` with ``signs * (A g) >= t > tol`` and ``|g|_inf <= 1``, or None (one LP)."""
    k = A.shape[1]
    # variables [g, t]: maximise t  s.t.  -signs_j a_j^T g + t <= 0
    A_ub = np.hstack([-(signs[:, None] * A), np.ones((A.shape[0], 1))])
    res = linprog(
        c=np.r_[np.zeros(k), -1.0],
        A_ub=A_ub,
        b_ub=np.zeros(A.shape[0]),
        bounds=[(-1, 1)] * k + [(None, 1)],
        method="highs",
    )
    if res.status != 0 or -res.fun <= tol:
        return None
    return res.x[:k]


def enumerate_arrangements(basis: BNBasis, *, max_patterns: int = 20_000, tol: float = 1e-9) -> Arrangements:
    """Enumerate every full-dimensional activation pattern exactly.

    Incremental cell enumeration of the central arrangement with normals the rows of ``U'``: samples are
    added one at a time; each cell found so far is split by the new hyperplane when a linear program
    finds an interior point on the other side. Lower-dimensional faces add no new function (a zero
    pre-activation contributes zero either way), so full-dimensional cells suffice for exactness.

    Parameters
    ----------
    basis : BNBasis
    max_patterns : int
        Refuse (ValueError) when the Cover bound ``2 sum_{i<r+1} C(n-1, i)`` exceeds this.
    tol : float
        Minimum margin of an interior point for a cell to count as full-dimensional.

    Returns
    -------
    Arrangements
        With ``exact=True``. The all-zero pattern is dropped.
    """
    return _enumerate_cells(basis.Uprime, max_patterns, tol)


def _enumerate_cells(A: np.ndarray, max_patterns: int, tol: float) -> Arrangements:
    """Every full-dimensional cell of the central arrangement with normals the rows of ``A``."""
    n, k = A.shape
    bound = max_arrangements(n, k)
    if bound > max_patterns:
        raise ValueError(
            f"exact enumeration could need up to {bound} patterns (n={n}, dimension {k}), more than "
            f"max_patterns={max_patterns}; sample arrangements instead or raise max_patterns"
        )
    # each cell: (signs of the rows seen so far, interior witness g)
    cells = [(np.array([1.0]), A[0].copy()), (np.array([-1.0]), -A[0].copy())]
    for j in range(1, n):
        a = A[j]
        new_cells = []
        for signs, g in cells:
            side = np.sign(a @ g) if abs(a @ g) > tol else 1.0
            rows = A[: j + 1]
            # the witness's own side is feasible if it is strictly off the new hyperplane
            if abs(a @ g) > tol:
                new_cells.append((np.r_[signs, side], g))
            else:
                g1 = _interior_point(rows, np.r_[signs, side], tol)
                if g1 is not None:
                    new_cells.append((np.r_[signs, side], g1))
            g2 = _interior_point(rows, np.r_[signs, -side], tol)
            if g2 is not None:
                new_cells.append((np.r_[signs, -side], g2))
        cells = new_cells
    G = np.array([g for _, g in cells])
    mask = A @ G.T >= 0
    mask, G = _unique_patterns(mask, G)
    return Arrangements(mask=mask, generators=G, exact=True)


def relu_arrangements(
    X, n_arrangements: int = 200, *, method: str = "auto", random_state=None, max_patterns: int = 20_000
) -> Arrangements:
    """Activation patterns ``1[X g >= 0]`` of ReLUs applied to the raw data (no BN before the ReLU).

    The patterns of the BN-after-ReLU program (:mod:`convexbn.post_relu`); :func:`make_arrangements`'s
    rule for ``method``. Append a column of ones to ``X`` for a first-layer bias.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    n_arrangements : int
    method : {"auto", "sample", "exact"}
    random_state : int, RandomState or None
    max_patterns : int

    Returns
    -------
    Arrangements
        Generators of shape (P, d).
    """
    if method not in ("auto", "sample", "exact"):
        raise ValueError(f"unknown arrangement method {method!r}; expected 'auto', 'sample' or 'exact'")
    X = np.asarray(X, dtype=np.float64)
    n_arrangements = check_positive_int(n_arrangements, "n_arrangements")
    if method == "exact" or (method == "auto" and max_arrangements(*X.shape) <= n_arrangements):
        return _enumerate_cells(X, max_patterns, 1e-9)
    return _sample_patterns(X, n_arrangements, random_state)


def network_arrangements(basis: BNBasis, network) -> Arrangements:
    """The activation patterns of a trained BN network's neurons on the training data of ``basis``.

    Neuron ``j`` of a :class:`~convexbn.BNNetwork` is ``relu(U' z_j)`` on the training data, with
    ``z_j = [gamma_j q_j; alpha_j]`` and ``q_j = U^T P X w_j / ||P X w_j||`` (docs/math.md section 2), so its
    pattern is ``1[U' z_j >= 0]`` and ``z_j`` is its generator. Adding these patterns to a sample
    (:func:`merge_arrangements`) makes the convex optimum at most the network's objective (3) for a single
    output: the network is a feasible point of the convex program on its own patterns.

    Parameters
    ----------
    basis : BNBasis
        Of the data the network was trained on.
    network : BNNetwork

    Returns
    -------
    Arrangements
        Distinct nonzero patterns, at most ``network.n_neurons``.
    """
    if network.n_features != basis.n_features:
        raise ValueError(f"the network has {network.n_features} inputs, the basis {basis.n_features}")
    H = basis.U @ basis.weights_to_coordinates(network.weights)  # P X w_j in the kept subspace, (n, m)
    norms = np.linalg.norm(H, axis=0)
    live = norms > 0
    Q = np.zeros((basis.rank, network.n_neurons))
    Q[:, live] = basis.U.T @ (H[:, live] / norms[live])
    Z = np.vstack([Q * network.gamma, network.alpha[None, :]])  # (k, m)
    mask = basis.Uprime @ Z >= 0
    mask, G = _unique_patterns(mask, Z.T)
    return Arrangements(mask=mask, generators=G, exact=False)


def merge_arrangements(*sets: Arrangements) -> Arrangements:
    """The union of several pattern sets on the same data (duplicates dropped, order kept)."""
    if not sets:
        raise ValueError("nothing to merge")
    n = sets[0].n_samples
    if any(a.n_samples != n for a in sets):
        raise ValueError("arrangements to merge must be on the same samples")
    mask, G = _unique_patterns(np.hstack([a.mask for a in sets]), np.vstack([a.generators for a in sets]))
    return Arrangements(mask=mask, generators=G, exact=any(a.exact for a in sets))


#: ``"auto"`` choices enumerate only when ``n`` times the Cover bound is at most this. The incremental
#: enumeration solves one LP per cell and added sample, about a quarter of ``n`` times the bound (measured:
#: 10,070 LPs for n = 20, k = 4, about 2 ms each): at this limit about 12,500 LPs, some 25 s. Beyond it a
#: large ``n_arrangements`` used to start an enumeration of many minutes (n = 40, k = 4: ~200,000 LPs).
AUTO_ENUMERATE_WORK = 50_000


def enumeration_is_cheap(n: int, k: int) -> bool:
    """Whether :func:`enumerate_arrangements` of ``n`` samples in dimension ``k`` is cheap enough for an
    automatic choice (:data:`AUTO_ENUMERATE_WORK`)."""
    return n * max_arrangements(n, k) <= AUTO_ENUMERATE_WORK


def make_arrangements(
    basis: BNBasis,
    n_arrangements: int = 200,
    *,
    method: str = "auto",
    random_state=None,
    max_patterns: int = 20_000,
) -> Arrangements:
    """Sample or enumerate arrangements.

    ``method="auto"`` enumerates exactly when the Cover bound on the number of patterns is at most
    ``n_arrangements`` (no more patterns than the sample asked for) and the enumeration's work is small
    (:func:`enumeration_is_cheap`), else samples.
    """
    if method not in ("auto", "sample", "exact"):
        raise ValueError(f"unknown arrangement method {method!r}; expected 'auto', 'sample' or 'exact'")
    n_arrangements = check_positive_int(n_arrangements, "n_arrangements")
    if method == "exact" or (
        method == "auto"
        and max_arrangements(basis.n_samples, basis.dim) <= n_arrangements
        and enumeration_is_cheap(basis.n_samples, basis.dim)
    ):
        return enumerate_arrangements(basis, max_patterns=max_patterns)
    return sample_arrangements(basis, n_arrangements, random_state=random_state)
