"""The shared-neuron program for C outputs: a group lasso over (pattern, output direction) atoms.

A network whose hidden neurons feed every output is ``f(X) = sum_j (U' z_j)_+ v_j^T`` with ``v_j in R^C``
(docs/math.md section 8). Its weight decay ``(beta/2)(||z_j||^2 + ||v_j||^2)`` is ``beta ||z_j|| ||v_j||``
at the best rescaling, so with ``u_j = ||v_j|| z_j`` and the unit *output direction* ``c_j = v_j/||v_j||``
the network's objective (3) is

    L( sum_j D_j U' u_j c_j^T , Y ) + beta sum_j ||u_j||_2,    u_j in K_{D_j} = {u : (2 D_j - I) U' u >= 0}

where ``D_j`` is neuron ``j``'s pattern. Fixing a finite set of *atoms* ``(D_i, c_i)`` leaves a convex
program in the ``u_i`` (docs/math.md section 8, eq. (8a)): the scalar program (4) with every group's
output direction ``c_i`` in place of a unit basis vector. Any solution is a shared-neuron network with
the same objective (:func:`convexbn.recovery.recover_shared_network`); the per-output programs are the
special case ``c_i in {+-e_1, ..., +-e_C}``, so the joint optimum over a superset of their atoms is at or
below theirs.

Optimality over the whole class (every pattern, every direction, every width) is the dual condition

    max over unit z of ||Lambda^T (U' z)_+||_2 <= beta,      Lambda = -grad L(F)                 (8b)

which is what :mod:`convexbn.neuron_search` checks (heuristically in general, exactly on tiny problems) and
uses to add atoms. This module holds the problem: its linear map, objective, dual values and bounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .arrangements import Arrangements
from .basis import BNBasis
from .implicit_reg import spectral_filter
from .losses import LOSSES, get_loss

__all__ = [
    "SharedAtoms",
    "SharedOutputProblem",
    "SharedSolution",
    "LOSS_SMOOTHNESS",
    "universal_shared_value",
    "network_atoms",
]

#: Lipschitz constant of the gradient of each smooth loss (per unit change of the predictions).
#: The smooth losses' curvature (:attr:`convexbn.losses.Loss.curvature`), kept for code that imported it.
LOSS_SMOOTHNESS = {name: cls.curvature for name, cls in LOSSES.items() if cls.smooth}


@dataclass
class SharedAtoms:
    """The dictionary of the shared program: atom ``i`` is a pattern and a unit output direction.

    Attributes
    ----------
    mask : ndarray of bool, shape (n, m)
        ``diag(D_i)`` of each atom.
    directions : ndarray of shape (m, C)
        Unit output directions ``c_i``.
    """

    mask: np.ndarray
    directions: np.ndarray

    def __post_init__(self):
        self.mask = np.ascontiguousarray(self.mask, dtype=bool)
        self.directions = np.asarray(self.directions, dtype=np.float64)
        if self.mask.ndim != 2 or self.directions.ndim != 2 or self.mask.shape[1] != self.directions.shape[0]:
            raise ValueError(
                f"atoms need masks (n, m) and directions (m, C); got {self.mask.shape} and "
                f"{self.directions.shape}"
            )
        norms = np.linalg.norm(self.directions, axis=1)
        if np.any(np.abs(norms - 1.0) > 1e-8):
            raise ValueError("atom output directions must be unit vectors")

    @property
    def n_atoms(self) -> int:
        return int(self.mask.shape[1])

    @classmethod
    def from_patterns(cls, mask: np.ndarray, n_outputs: int) -> SharedAtoms:
        """Every pattern of ``mask`` (n, P) with each of the ``2 C`` directions ``+-e_c``: the atoms of
        the per-output programs (ordered pattern-major)."""
        P = mask.shape[1]
        eye = np.vstack([np.eye(n_outputs), -np.eye(n_outputs)])
        return cls(np.repeat(mask, 2 * n_outputs, axis=1), np.tile(eye, (P, 1)))

    def subset(self, keep) -> SharedAtoms:
        return SharedAtoms(self.mask[:, keep], self.directions[keep])

    def concatenate(self, other: SharedAtoms) -> SharedAtoms:
        return SharedAtoms(np.hstack([self.mask, other.mask]), np.vstack([self.directions, other.directions]))


class SharedOutputProblem:
    """Program (8a) of the module docstring on a fixed atom set.

    Parameters
    ----------
    basis : BNBasis
    atoms : SharedAtoms
    Y : ndarray of shape (n, C)
        Targets encoded for ``loss``.
    beta : float
        Weight decay (summed loss, docs/math.md section 1).
    loss : str
        A smooth loss: ``"squared"``, ``"logistic"`` or ``"cross_entropy"``.
    """

    def __init__(self, basis: BNBasis, atoms: SharedAtoms, Y: np.ndarray, beta: float, loss: str = "squared"):
        self.basis = basis
        self.Uprime = basis.Uprime
        self.atoms = atoms
        self.loss = get_loss(loss)
        if not self.loss.smooth:
            raise ValueError(
                f"the shared-neuron program needs a smooth loss ({sorted(LOSS_SMOOTHNESS)}), got "
                f"{self.loss.name!r}; use neurons='per_output' for it"
            )
        self.Y = np.asarray(Y, dtype=np.float64)
        if self.Y.ndim != 2 or self.Y.shape[0] != basis.n_samples:
            raise ValueError(f"Y must have shape ({basis.n_samples}, C), got {self.Y.shape}")
        if atoms.mask.shape[0] != basis.n_samples or atoms.directions.shape[1] != self.Y.shape[1]:
            raise ValueError("atoms do not match the data: masks need n rows and directions C columns")
        self.beta = float(beta)
        self.implicit_reg = spectral_filter(None)  # (no spectral filter: docs/math.md section 9)

    @property
    def n_patterns(self) -> int:
        """Atoms of the program (each a pattern with one output direction)."""
        return self.atoms.n_atoms

    @property
    def n_samples(self) -> int:
        return int(self.Y.shape[0])

    @property
    def n_outputs(self) -> int:
        return int(self.Y.shape[1])

    @property
    def dim(self) -> int:
        return int(self.Uprime.shape[1])

    # --- the linear map W (m, k) -> F (n, C) and its adjoint (numpy; the solver has its own torch copy)
    def predict(self, W: np.ndarray) -> np.ndarray:
        """``sum_i D_i U' u_i c_i^T``, shape (n, C), for the atoms' groups ``W`` (m, k)."""
        return (self.atoms.mask * (self.Uprime @ W.T)) @ self.atoms.directions

    def objective(self, W: np.ndarray) -> float:
        return self.loss.value(self.predict(W), self.Y) + self.beta * float(np.linalg.norm(W, axis=1).sum())

    def constraint_violation(self, W: np.ndarray) -> float:
        """Largest cone-constraint violation ``max (-(2D - I) U' u)_+``, relative to ``max ||u||``."""
        if W.size == 0:
            return 0.0
        S = np.where(self.atoms.mask, 1.0, -1.0) * (self.Uprime @ W.T)
        scale = max(float(np.linalg.norm(W, axis=1).max()), 1e-300)
        return float(max(-S.min(), 0.0)) / scale

    def atom_dual_values(self, lam: np.ndarray) -> np.ndarray:
        """``max { c_i^T Lambda^T D_i U' u : ||u|| <= 1, u in K_{D_i} } = ||Pi_K(U'^T D_i Lambda c_i)||``
        of every atom, shape (m,) (docs/math.md section 6, with the atom's output direction)."""
        from .solvers.torch.projection import project_cones

        m = self.atoms.n_atoms
        if m == 0:
            return np.zeros(0)
        A = ((self.atoms.mask * (lam @ self.atoms.directions.T)).T @ self.Uprime)  # (m, k)
        signs = np.where(self.atoms.mask, 1.0, -1.0).T
        res = project_cones(torch.as_tensor(A), torch.as_tensor(self.Uprime), torch.as_tensor(signs),
                            backend="auto")  # fmt: skip
        return res.u.norm(dim=1).numpy()

    def dual_bound(self, F: np.ndarray, value: float) -> float:
        """The dual objective ``-L*(-Lambda s)`` at ``Lambda = -grad L(F)`` scaled by ``s = min(1, beta /
        value)``: a lower bound on the optimum over every atom whose dual value is at most ``value``."""
        grad = self.loss.grad(F, self.Y)
        scale = 1.0 if value <= self.beta else self.beta / value
        return float(-self.loss.conjugate(scale * grad, self.Y))


def universal_shared_value(Uprime: np.ndarray, lam: np.ndarray) -> float:
    """A certified upper bound on ``max over unit z of ||Lambda^T (U' z)_+||`` (eq. (8b)), no search.

    ``a = (U' z)_+`` is nonnegative with ``||a|| <= ||U'||_2``, so ``||Lambda^T a||`` is at most
    ``sigma_max(Lambda) ||a||``, and, column by column, ``|lambda_c^T a| <= max(||lambda_c+||,
    ||lambda_c-||) ||a||``. The smaller of the two bounds is returned. Loose, but valid for every pattern.
    """
    norm = float(np.linalg.norm(Uprime, 2))
    lam = np.asarray(lam, dtype=np.float64)
    spectral = float(np.linalg.norm(lam, 2))
    pos, neg = np.linalg.norm(lam.clip(0, None), axis=0), np.linalg.norm((-lam).clip(0, None), axis=0)
    per_column = np.maximum(pos, neg)
    return norm * min(spectral, float(np.linalg.norm(per_column)))


@dataclass
class SharedSolution:
    """A solution of :class:`SharedOutputProblem` (and of its neuron search).

    Attributes
    ----------
    problem : SharedOutputProblem
        The problem on the final atom set.
    W : ndarray of shape (m, k)
        The groups ``u_i`` of the atoms (zero rows for unused atoms).
    status : str
        ``"optimal"`` when the duality gap on the atom set reached ``tol``, else ``"max_iter"``.
    objective : float
        Value of (8a) at ``W`` (numpy).
    lower_bound : float
        Dual bound over the atom set (the restriction's own certificate).
    constraint_violation : float
    solve_time : float
    n_iter : int
    solver : str
    info : dict
    """

    problem: SharedOutputProblem
    W: np.ndarray
    status: str
    objective: float
    lower_bound: float
    constraint_violation: float
    solve_time: float
    n_iter: int
    solver: str = "torch-shared-fista"
    info: dict = field(default_factory=dict)

    @property
    def atoms(self) -> SharedAtoms:
        return self.problem.atoms

    @property
    def arrangements(self) -> Arrangements:
        """The atoms' patterns (with repeats when a pattern carries several directions); ``exact`` when
        the search's oracle was exact over every pattern (``info["exact"]``)."""
        mask = self.atoms.mask
        return Arrangements(mask=mask, generators=np.zeros((mask.shape[1], self.problem.dim)),
                            exact=bool(self.info.get("exact", False)))  # fmt: skip

    @property
    def n_neurons(self) -> int:
        return int((np.linalg.norm(self.W, axis=1) > 0).sum())

    def predict_train(self) -> np.ndarray:
        return self.problem.predict(self.W)


def network_atoms(X, network) -> SharedAtoms:
    """The atoms of a trained network's neurons: each neuron's pattern on the training data ``X`` (its
    training-mode BN pre-activation ``>= 0``) with its output direction ``v_j / ||v_j||`` (neurons with
    ``v_j = 0`` are skipped). Adding them to a shared program lets it do at least as well as the network
    up to the neurons' directions within their cones."""
    H = X @ network.weights
    H -= H.mean(axis=0)
    norm = np.linalg.norm(H, axis=0)
    H = network.gamma * H / np.where(norm > 0, norm, 1.0) + network.alpha / np.sqrt(X.shape[0])
    v = np.linalg.norm(network.output, axis=1)
    live = v > 0
    return SharedAtoms(H[:, live] >= 0, network.output[live] / v[live, None])
