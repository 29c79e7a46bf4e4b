"""Spectral filters: the implicit regularization of gradient descent on a BN network, encoded in the convex
program (docs/math.md section 9).

Gradient descent on the first-layer weights ``w`` of a BN network moves the BN direction ``q = S V^T w``
by ``-eta S^2 grad_q L``: it fits the directions of large singular values of the centered data first, and
from a small initialization it is biased towards small ``||S^{-1} q||``. The plain convex program on the
whitened basis ``U' = [U, 1/sqrt(n)]`` has no such bias. The family of docs/math.md section 9 puts it back by
replacing ``U'`` with

    U'_F = [U F(S), 1/sqrt(n)],

where ``F`` acts on the singular values:

- ``"identity"``: ``F = 1``, the plain BN program (no filter);
- ``"power:t"``: ``F = (S / S_max)^t``, ``t`` in ``[0, 1]``: partial whitening; ``t = 1`` is the
  unwhitened centered data (the limit of the ``S^2``-preconditioned dynamics);
- ``"top:k"``: ``F = 1`` on the ``k`` largest singular values, 0 on the rest (truncated whitening);
- ``"tau:x"``: ``F = 1[sigma >= x * S_max]`` (truncated whitening by a relative threshold).

The network stays a BN network: a group ``u = [q'; a]`` of the filtered program is the BN neuron with
``gamma q = F(S) q'`` and ``alpha = a``, so its output ``U F(S) q' + a / sqrt(n)`` is unchanged, and its
weights map back through the same ``F``: ``w = V S^{-1} q``. What changes is the penalty: the program
charges ``||[F^{-1} gamma q; alpha]||``, i.e. the network objective whose weight decay on ``gamma`` is
weighted by the direction, ``gamma^2 ||F(S)^{-1} q||^2`` (docs/math.md section 9, "a group penalty weighted by
``diag(S, s)^{-1}``"). :func:`implicit_objective` computes that objective by a plain forward pass, and
the convex optimum equals it at the recovered network.

Our choices (the paper's exact term is not available; see ``docs/choices.md``): ``F`` is normalized by
``S_max`` (``normalize=True``) so the top direction costs what it costs in the plain program and ``beta``
keeps its meaning; ``normalize=False`` is the literal ``S^t``, which also rescales the bias column's
relative cost by ``S_max^t``. Truncation drops the filtered-out columns (``F = 0``) from the basis
altogether: the program then lives on the top-``k`` BN basis, whose patterns should be sampled from
:func:`filtered_basis`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

from .basis import BNBasis
from .losses import get_loss

__all__ = [
    "SpectralFilter",
    "spectral_filter",
    "filtered_basis",
    "implicit_objective",
    "implicit_penalty_factors",
    "FILTER_KINDS",
]

FILTER_KINDS = ("identity", "power", "truncate")


@dataclass(frozen=True)
class SpectralFilter:
    """A map ``F`` of the singular values of the centered data (docs/math.md section 9).

    Parameters
    ----------
    kind : {"identity", "power", "truncate"}
    power : float
        ``t`` of ``F = (S / S_max)^t`` (kind ``"power"``), in ``[0, 1]``.
    keep : int, optional
        Kind ``"truncate"``: number of leading singular directions kept.
    tau : float, optional
        Kind ``"truncate"``: keep the directions with ``sigma >= tau * S_max``, ``tau`` in ``(0, 1]``.
    normalize : bool
        Kind ``"power"``: divide ``S`` by ``S_max`` first (default; see the module docstring).
    """

    kind: str = "identity"
    power: float = 0.0
    keep: int | None = None
    tau: float | None = None
    normalize: bool = True

    def __post_init__(self):
        if self.kind not in FILTER_KINDS:
            raise ValueError(f"unknown spectral filter kind {self.kind!r}; expected one of {FILTER_KINDS}")
        if self.kind == "power" and not (0.0 <= float(self.power) <= 1.0):
            raise ValueError(f"the power filter's exponent must be in [0, 1], got {self.power}")
        if self.kind == "truncate":
            if (self.keep is None) == (self.tau is None):
                raise ValueError("a truncation filter needs exactly one of keep (an int) or tau (a float)")
            if self.keep is not None and (not isinstance(self.keep, Integral) or self.keep < 1):
                raise ValueError(f"keep must be a positive int, got {self.keep!r}")
            if self.tau is not None and not (0.0 < float(self.tau) <= 1.0):
                raise ValueError(f"tau must be in (0, 1], got {self.tau}")

    @property
    def is_identity(self) -> bool:
        """True when the filter leaves the plain BN program unchanged."""
        return self.kind == "identity" or (self.kind == "power" and float(self.power) == 0.0)

    def weights(self, S: np.ndarray) -> np.ndarray:
        """``F(S)`` for singular values ``S`` (descending, shape (r,)): zeros mark dropped directions."""
        S = np.asarray(S, dtype=np.float64)
        if self.kind == "identity" or S.size == 0:
            return np.ones_like(S)
        if self.kind == "power":
            base = S / S[0] if self.normalize else S
            return base ** float(self.power)
        if self.keep is not None:
            return (np.arange(S.size) < self.keep).astype(np.float64)
        return (S >= float(self.tau) * S[0]).astype(np.float64)

    def __str__(self) -> str:
        if self.is_identity:
            return "none"
        if self.kind == "power":
            return f"power:{self.power:g}" + ("" if self.normalize else ",raw")
        return f"top:{self.keep}" if self.keep is not None else f"tau:{self.tau:g}"


_SPEC = re.compile(r"^\s*(power|top|tau)\s*:\s*([0-9.eE+-]+)\s*(,\s*raw\s*)?$")


def spectral_filter(spec=None) -> SpectralFilter:
    """Parse a filter specification.

    Parameters
    ----------
    spec : None, str, float or SpectralFilter
        ``None``, ``"none"`` or ``"identity"``: no filter. ``"power:t"`` (or a float ``t``):
        ``F = (S / S_max)^t``; ``"power:t,raw"``: ``F = S^t``. ``"top:k"``: keep the ``k`` leading
        directions. ``"tau:x"``: keep ``sigma >= x * S_max``.

    Returns
    -------
    SpectralFilter

    Raises
    ------
    ValueError
        For a string that is none of these, or a value out of range.
    """
    if spec is None:
        return SpectralFilter()
    if isinstance(spec, SpectralFilter):
        return spec
    if isinstance(spec, Real) and not isinstance(spec, bool):
        return SpectralFilter("power", power=float(spec))
    if not isinstance(spec, str):
        raise TypeError(
            f"implicit_reg must be None, a string such as 'power:0.5', 'top:10' or 'tau:0.1', a float or a "
            f"SpectralFilter; got {type(spec).__name__}"
        )
    if spec.strip().lower() in ("none", "identity"):
        return SpectralFilter()
    match = _SPEC.match(spec.lower())
    if match is None:
        raise ValueError(
            f"cannot parse implicit_reg={spec!r}; expected 'none', 'power:t' (t in [0, 1], optionally "
            "'power:t,raw'), 'top:k' (an int) or 'tau:x' (x in (0, 1])"
        )
    name, value, raw = match.group(1), match.group(2), match.group(3)
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"cannot parse the number in implicit_reg={spec!r}") from None
    if name == "power":
        return SpectralFilter("power", power=number, normalize=raw is None)
    if raw is not None:
        raise ValueError(f"',raw' applies to the power filter only, got {spec!r}")
    if name == "top":
        if number != int(number):
            raise ValueError(f"'top:k' needs an integer k, got {spec!r}")
        return SpectralFilter("truncate", keep=int(number))
    return SpectralFilter("truncate", tau=number)


def filtered_basis(basis: BNBasis, implicit_reg=None) -> tuple[BNBasis, np.ndarray]:
    """The basis a filtered program is built on, and the filter's weights on it.

    Directions the filter drops (``F = 0``) are removed: the returned basis keeps the leading directions
    (its ``S_dropped`` lists the rest), so patterns sampled from it are the patterns of ``U'_F``. The
    weights are ``F(S)`` on the kept directions, all positive.

    Parameters
    ----------
    basis : BNBasis
    implicit_reg : see :func:`spectral_filter`

    Returns
    -------
    basis : BNBasis
        ``basis`` itself when nothing is dropped.
    weights : ndarray of shape (r_kept,)
    """
    spec = spectral_filter(implicit_reg)
    weights = spec.weights(basis.S)
    keep = weights > 0
    if keep.all():
        return basis, weights
    r = int(keep.sum())  # F is non-increasing in sigma for every kind, so the kept ones lead (r >= 1)
    kept = BNBasis(
        U=np.ascontiguousarray(basis.U[:, :r]),
        S=basis.S[:r].copy(),
        V=np.ascontiguousarray(basis.V[:, :r]),
        mean=basis.mean,
        n_samples=basis.n_samples,
        rank_tol=basis.rank_tol,
        S_dropped=np.concatenate([basis.S[r:], basis.S_dropped]),
        scale=basis.scale,
    )
    return kept, weights[:r]


def implicit_penalty_factors(network, basis: BNBasis, weights: np.ndarray) -> np.ndarray:
    """``||F(S)^{-1} q_j||^2`` for each neuron of ``network`` (shape (m,)), from its weights ``w_j``.

    ``q_j`` is the unit BN direction of neuron ``j``, ``S V^T w_j / ||S V^T w_j||``, in the coordinates of
    ``basis`` (the filtered basis, with ``weights`` from :func:`filtered_basis`); only the kept part of
    ``P X w_j`` is seen here (:func:`implicit_objective` also sets ``inf`` for a neuron with a part outside
    the kept directions, which needs the data). A neuron with ``gamma = 0`` gets 0 (its direction is
    irrelevant); one with ``gamma != 0`` and no kept part gets ``inf``.
    """
    coords = basis.weights_to_coordinates(network.weights)  # (r, m), the kept part of P X w_j
    inside = np.linalg.norm(coords, axis=0)
    factors = np.zeros(network.n_neurons)
    live = (network.gamma != 0) & (inside > 0)
    Q = coords[:, live] / inside[live]
    factors[live] = np.sum((Q / weights[:, None]) ** 2, axis=0)
    factors[(network.gamma != 0) & (inside == 0)] = np.inf
    return factors


def implicit_objective(network, X, y, basis: BNBasis, implicit_reg=None) -> float:
    """Objective of ``network`` under the filtered weight decay, by a plain forward pass on ``X``.

    ``L(f(X), y) + (beta / 2) sum_j (gamma_j^2 ||F(S)^{-1} q_j||^2 + alpha_j^2 + ||v_j||^2)`` with
    ``f`` the training-mode forward pass (docs/math.md eq. (2)); for the identity filter this is objective
    (3). The convex optimum of ``ConvexBNProblem(..., implicit_reg=implicit_reg)`` equals it at the recovered
    network.

    Parameters
    ----------
    network : BNNetwork
    X : array-like of shape (n, d)
        The training data ``basis`` was built from.
    y : array-like
        Targets, encoded as the network's loss encodes them.
    basis : BNBasis
        The *unfiltered* basis of ``X`` (:func:`convexbn.bn_basis`); the filter is applied here.
    implicit_reg : see :func:`spectral_filter`
    """
    kept, weights = filtered_basis(basis, implicit_reg)
    loss = get_loss(network.loss)
    F = network.forward(X, training=True)
    factors = implicit_penalty_factors(network, kept, weights)
    # a neuron using directions the truncation dropped is outside the filtered model
    if kept is not basis:
        H = np.asarray(X, dtype=np.float64) @ network.weights
        H = H - H.mean(axis=0)
        full = np.linalg.norm(H, axis=0)
        inside = np.linalg.norm(kept.U.T @ H, axis=0)
        outside = (network.gamma != 0) & (full - inside > 1e-8 * np.maximum(full, 1e-300))
        factors[outside] = np.inf
    penalty = np.sum(network.gamma**2 * factors + network.alpha**2) + np.sum(network.output**2)
    return float(loss.value(F, loss.encode_targets(y)) + 0.5 * network.beta * penalty)
