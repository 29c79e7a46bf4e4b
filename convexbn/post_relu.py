"""BN after the ReLU (docs/math.md section 10): the network, its exact convex program and the recovery.

The network (no ReLU after the BN; weight decay on the BN parameters and the output weights):

    f(X) = sum_j BN_{gamma_j, alpha_j}( relu(X w_j) ) v_j^T,
    min  L(f(X), y) + (beta / 2) sum_j (gamma_j^2 + alpha_j^2 + ||v_j||^2).

Derivation (the substitution of docs/math.md section 2, per pattern). On pattern ``D_i = diag(1[X w >= 0])``,
``relu(X w) = D_i X w``; with the compact SVD ``P D_i X = U_i S_i V_i^T`` and ``q = S_i V_i^T w / ||.||``,
the neuron is ``U_i (gamma q) + alpha / sqrt(n) = U_i' z``, ``U_i' = [U_i, 1/sqrt(n)]``, ``||z||^2 =
gamma^2 + alpha^2``. As in docs/math.md section 4, the weight decay becomes ``beta ||u||`` for ``u = |v| z``,
and the convex program is

    min  L( sum_i U_i' (u_i - u'_i) ) + beta sum_i (||u_i|| + ||u'_i||)
    s.t. u_i[:r_i] = S_i V_i^T w_i  for some w_i with  (2 D_i - I) X w_i >= 0     (same for u'_i).

We keep ``w_i`` as the variable: the group's prediction is ``P D_i X w_i + a_i / sqrt(n)`` and its
penalty ``beta ||[S_i V_i^T w_i; a_i]||``, an exact convex program in ``(w_i, a_i)``. The restricted form
(docs/extensions.md, "BN after the ReLU") writes the constraint "mapped through ``V_i S_i^{-1}``", i.e. ``w_i
= V_i S_i^{-1} q``; that restricts ``w_i`` to the row space of ``P D_i X``, while any ``w_i`` with the same
``S_i V_i^T w_i`` gives the same neuron, and a component in the null space of ``P D_i X`` can be what makes
the pattern realizable on the inactive rows. Our form is the exact one; the restricted one is a restriction of
it (equal when ``P D_i X`` has rank ``d``). Unlike BN before the ReLU, ``alpha`` enters no constraint: a
neuron with ``gamma = 0`` is the constant ``alpha / sqrt(n)`` whatever its pattern.

Recovery: ``t = ||u_i||``, ``v = +-sqrt(t)``, ``gamma = ||S_i V_i^T w_i|| / sqrt(t)``,
``alpha = a_i / sqrt(t)``, and the neuron's weights are ``w_i`` itself (its pattern is ``D_i`` by the
constraint). With every pattern (:func:`convexbn.relu_arrangements` with ``method="exact"``) the optimum
is the global optimum of the network of any width ``m >= `` the number of nonzero groups.

Solved with cvxpy (Clarabel, MOSEK or SCS); the torch solvers are for program (4) only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ._validation import check_data, check_positive
from .arrangements import Arrangements
from .losses import get_loss
from .network import BNNetwork
from .problem import SolverError, SolverWarning, prune_groups

__all__ = ["PostReLUBNNetwork", "PostReLUBNProblem", "PostReLUSolution", "recover_post_relu_network"]


class PostReLUBNNetwork(BNNetwork):
    """Two-layer network with BN after the ReLU: ``f(X) = BN(relu(X W)) V`` in the BN convention of
    docs/math.md eq. (1).

    The attributes, the penalty and the objective are :class:`~convexbn.BNNetwork`'s; what differs is the
    hidden layer (:meth:`hidden`) and the statistics: ``running_mean`` and ``running_norm`` are the
    training mean of ``relu(X w_j)`` and the norm of its centered values (eval mode).
    """

    @classmethod
    def from_parameters(cls, X, W, gamma, alpha, V, beta: float, loss: str = "squared") -> PostReLUBNNetwork:
        """Wrap parameters with the training statistics of ``relu(X W)``."""
        X = np.asarray(X, dtype=np.float64)
        H = np.maximum(X @ W, 0.0)
        mean = H.mean(axis=0)
        return cls(
            weights=np.asarray(W, dtype=np.float64), gamma=np.asarray(gamma, dtype=np.float64),
            alpha=np.asarray(alpha, dtype=np.float64), output=np.asarray(V, dtype=np.float64),
            running_mean=mean, running_norm=np.linalg.norm(H - mean, axis=0), n_train=X.shape[0],
            beta=float(beta), loss=loss,
        )  # fmt: skip

    def hidden(self, X, *, training: bool = False) -> np.ndarray:
        """BN outputs (n, m). A neuron with ``gamma = 0`` is the constant ``alpha / sqrt(n)`` (its BN input
        may have no variance)."""
        X = self._check_X(X)
        H = np.maximum(X @ self.weights, 0.0)
        if training:
            mean = H.mean(axis=0)
            norm = np.linalg.norm(H - mean, axis=0)
            n = X.shape[0]
        else:
            mean, norm, n = self.running_mean, self.running_norm, self.n_train
        live = self.gamma != 0
        Z = np.zeros_like(H)
        Z[:, live] = self.gamma[live] * (H[:, live] - mean[live]) / norm[live]
        return Z + self.alpha / np.sqrt(n)

    def to_torch(self, *, dtype=None, eps: float = 1e-5):
        """Export as ``nn.Sequential(Linear, ReLU, BatchNorm1d, Linear)`` with the same function.

        PyTorch's BN is ``gamma_bn (h - mean) / sqrt(var + eps) + beta_bn`` with the biased variance; the
        docs/math.md eq. (1)'s is ``(gamma / sqrt(n)) (h - mean) / sqrt(var) + alpha / sqrt(n)``. So
        ``gamma_bn = gamma sqrt((var + eps) / var) / sqrt(n)``, ``beta_bn = alpha / sqrt(n)``, the running
        statistics are the training ones, and the output weights are ``v``. Returned in eval mode.
        """
        import torch
        from torch import nn

        dtype = torch.float64 if dtype is None else dtype
        m, d, C, n = self.n_neurons, self.n_features, self.n_outputs, self.n_train
        var = self.running_norm**2 / n
        gain = np.where(var > 0, np.sqrt((var + eps) / np.where(var > 0, var, 1.0)), 0.0)
        first, bn, last = nn.Linear(d, m, bias=False), nn.BatchNorm1d(m, eps=eps), nn.Linear(m, C, bias=False)
        model = nn.Sequential(first, nn.ReLU(), bn, last).to(dtype)
        with torch.no_grad():
            first.weight.copy_(torch.as_tensor(self.weights.T))
            bn.weight.copy_(torch.as_tensor(self.gamma * gain / np.sqrt(n)))
            bn.bias.copy_(torch.as_tensor(self.alpha / np.sqrt(n)))
            bn.running_mean.copy_(torch.as_tensor(self.running_mean))
            bn.running_var.copy_(torch.as_tensor(var))
            last.weight.copy_(torch.as_tensor(self.output.T))
        return model.eval()


@dataclass
class PostReLUSolution:
    """Solution of :class:`PostReLUBNProblem`: ``Wp, Wn`` (C, P, d) and ``ap, an`` (C, P) for the groups
    ``(w_i, a_i)`` and ``(w'_i, a'_i)``; ``objective`` recomputed in numpy."""

    problem: PostReLUBNProblem
    Wp: np.ndarray
    Wn: np.ndarray
    ap: np.ndarray
    an: np.ndarray
    objective: float
    status: str
    solve_time: float
    solver: str

    def predict_train(self) -> np.ndarray:
        return self.problem.predict(self.Wp, self.Wn, self.ap, self.an)


class PostReLUBNProblem:
    """The exact convex program of the BN-after-ReLU network (module docstring).

    Parameters
    ----------
    X : array-like of shape (n, d)
        Training inputs (append a column of ones for a first-layer bias).
    arrangements : Arrangements
        From :func:`convexbn.relu_arrangements` (patterns of ``X``, not of the BN basis).
    y : array-like
        Targets, encoded by ``loss``.
    beta : float
    loss : str
    rank_tol : float
        Relative threshold of the per-pattern SVDs of ``P D_i X``; patterns with ``P D_i X = 0`` are
        dropped (their neuron is constant, which any pattern's ``gamma = 0`` already gives).
    """

    def __init__(self, X, arrangements: Arrangements, y, beta: float, loss: str = "squared",
                 rank_tol: float = 1e-10):  # fmt: skip
        X = check_data(X)
        if not isinstance(arrangements, Arrangements):
            raise TypeError(f"arrangements must be an Arrangements object, got {type(arrangements).__name__}")
        if arrangements.n_samples != X.shape[0]:
            raise ValueError(f"arrangements have {arrangements.n_samples} samples, X {X.shape[0]}")
        self.X = X
        self.loss = get_loss(loss)
        self.beta = check_positive(beta, "beta")
        Y = self.loss.encode_targets(y)
        if Y.shape[0] != X.shape[0]:
            raise ValueError(f"y has {Y.shape[0]} samples but X has {X.shape[0]}: inconsistent shapes")
        self.Y = Y
        n = X.shape[0]
        # per pattern: P D_i X (n, d) and its S_i V_i^T (r_i, d), the group's penalty map
        keep, blocks, gains = [], [], []
        for i in range(arrangements.n_patterns):
            DX = X * arrangements.mask[:, i, None]
            PDX = DX - DX.mean(axis=0)
            _, S, Vt = np.linalg.svd(PDX, full_matrices=False)
            r = int(np.sum(S > rank_tol * max(S[0], 1e-300))) if S.size and S[0] > 0 else 0
            if r == 0:
                continue
            keep.append(i)
            blocks.append(PDX)
            gains.append(S[:r, None] * Vt[:r])
        if not keep:
            raise ValueError("no pattern has a non-constant ReLU output (P D_i X = 0 for all)")
        self.mask = np.ascontiguousarray(arrangements.mask[:, keep])
        self.PDX = np.stack(blocks)  # (P, n, d)
        self.gains = gains  # list of (r_i, d)
        self.n_samples = n
        self.arrangements = Arrangements(self.mask, arrangements.generators[keep], arrangements.exact)

    @property
    def n_patterns(self) -> int:
        return int(self.mask.shape[1])

    @property
    def n_outputs(self) -> int:
        return int(self.Y.shape[1])

    def predict(self, Wp, Wn, ap, an) -> np.ndarray:
        """Outputs (n, C) of the groups: ``sum_i P D_i X (w_i - w'_i) + (a_i - a'_i) / sqrt(n)``."""
        F = np.einsum("pnd,cpd->nc", self.PDX, Wp - Wn)
        return F + (ap - an).sum(axis=1)[None, :] / np.sqrt(self.n_samples)

    def group_norms(self, W, a) -> np.ndarray:
        """``||[S_i V_i^T w_i; a_i]||`` of shape (C, P)."""
        out = np.zeros(a.shape)
        for i, G in enumerate(self.gains):
            out[:, i] = np.sqrt(np.sum((W[:, i] @ G.T) ** 2, axis=1) + a[:, i] ** 2)
        return out

    def objective(self, Wp, Wn, ap, an) -> float:
        F = self.predict(Wp, Wn, ap, an)
        penalty = self.group_norms(Wp, ap).sum() + self.group_norms(Wn, an).sum()
        return self.loss.value(F, self.Y) + self.beta * float(penalty)

    def _prune(self, Wp, Wn, ap, an, tol):
        """Zero the smallest groups while the objective rises by at most ``tol`` relative."""
        norms = np.concatenate([self.group_norms(Wp, ap).ravel(), self.group_norms(Wn, an).ravel()])
        half = ap.size

        def pruned(keep):
            kp, kn = keep[:half].reshape(ap.shape), keep[half:].reshape(an.shape)
            return Wp * kp[..., None], Wn * kn[..., None], ap * kp, an * kn

        keep = prune_groups(norms, lambda keep: self.objective(*pruned(keep)), tol)
        return (Wp, Wn, ap, an) if keep is None else pruned(keep)

    def solve(self, solver: str = "clarabel", *, verbose: bool = False, prune_tol: float = 1e-7,
              **options) -> PostReLUSolution:  # fmt: skip
        """Solve with cvxpy.

        Parameters
        ----------
        solver : {"clarabel", "mosek", "scs", "cvxpy"}
            ``"mosek"`` falls back to Clarabel with a :class:`SolverWarning` when it is not licensed.
        prune_tol : float
            The smallest groups are zeroed while the objective rises by at most ``prune_tol`` relative
            (as in :meth:`ConvexBNProblem.solve`); each remaining group is one neuron.
        **options
            Passed to ``cvxpy.Problem.solve``.
        """
        import cvxpy as cp

        from .solvers.cvxpy_backend import resolve_cvxpy_solver

        names = {"cvxpy": "CLARABEL", "clarabel": "CLARABEL", "mosek": "MOSEK", "scs": "SCS"}
        name = names.get(solver.lower())
        if name is None:
            raise ValueError(f"unknown solver {solver!r} for the BN-after-ReLU program; expected "
                             "'clarabel', 'mosek', 'scs' or 'cvxpy'")  # fmt: skip
        name = resolve_cvxpy_solver(name)
        X, n = self.X, self.n_samples
        C, P, d = self.n_outputs, self.n_patterns, X.shape[1]
        signs = np.where(self.mask, 1.0, -1.0)
        variables, constraints, preds, penalty = [], [], [], 0
        for _ in range(C):
            Wp, Wn = cp.Variable((P, d)), cp.Variable((P, d))
            ap, an = cp.Variable(P), cp.Variable(P)
            variables.append((Wp, Wn, ap, an))
            pred = np.ones(n) * cp.sum(ap - an) / np.sqrt(n)
            for i in range(P):
                pred = pred + self.PDX[i] @ (Wp[i] - Wn[i])
                G = self.gains[i]
                penalty = penalty + cp.norm(cp.hstack([G @ Wp[i], ap[i:i + 1]])) + cp.norm(
                    cp.hstack([G @ Wn[i], an[i:i + 1]]))  # fmt: skip
            constraints += [cp.multiply(signs, X @ Wp.T) >= 0, cp.multiply(signs, X @ Wn.T) >= 0]
            preds.append(pred)
        F = cp.vstack(preds).T if C > 1 else cp.reshape(preds[0], (n, 1), order="C")
        objective = self.loss.cvxpy(F, self.Y) + self.beta * penalty
        problem = cp.Problem(cp.Minimize(objective), constraints)
        start = time.perf_counter()
        try:
            problem.solve(solver=name, verbose=verbose, **options)
        except cp.error.SolverError as exc:
            raise SolverError(f"cvxpy:{name} failed on the BN-after-ReLU program: {exc}") from exc
        elapsed = time.perf_counter() - start
        if problem.status not in ("optimal", "optimal_inaccurate"):
            raise SolverError(f"cvxpy:{name} returned status {problem.status!r}")
        arrays = [np.stack([np.asarray(v[j].value) for v in variables]) for j in range(4)]
        Wp, Wn, ap, an = arrays
        Wp, Wn, ap, an = self._prune(Wp, Wn, ap, an, prune_tol)
        status = "optimal" if problem.status == "optimal" else "optimal_inaccurate"
        if status != "optimal":
            import warnings

            warnings.warn(f"cvxpy:{name} returned an inaccurate solution", SolverWarning, stacklevel=2)
        return PostReLUSolution(self, Wp, Wn, ap, an, self.objective(Wp, Wn, ap, an), status, elapsed,
                                f"cvxpy:{name}")  # fmt: skip


def recover_post_relu_network(solution: PostReLUSolution) -> PostReLUBNNetwork:
    """One BN-after-ReLU neuron per nonzero group (module docstring), with the training statistics."""
    problem = solution.problem
    X, C = problem.X, problem.n_outputs
    weights, gamma, alpha, output = [], [], [], []
    for W, a, sign in ((solution.Wp, solution.ap, 1.0), (solution.Wn, solution.an, -1.0)):
        norms = problem.group_norms(W, a)
        for c, i in zip(*np.nonzero(norms > 0), strict=True):
            t = norms[c, i]
            weights.append(W[c, i])
            gamma.append(np.linalg.norm(problem.gains[i] @ W[c, i]) / np.sqrt(t))
            alpha.append(a[c, i] / np.sqrt(t))
            v = np.zeros(C)
            v[c] = sign * np.sqrt(t)
            output.append(v)
    m = len(gamma)
    return PostReLUBNNetwork.from_parameters(
        X, np.array(weights).reshape(m, X.shape[1]).T, np.array(gamma), np.array(alpha),
        np.array(output).reshape(m, C), beta=problem.beta, loss=problem.loss.name,
    )  # fmt: skip
