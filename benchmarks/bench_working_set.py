"""A measured negative result (issue 30): a working set of patterns around FISTA, against plain FISTA.

    python benchmarks/bench_working_set.py [BETA ...]        # default 0.05 0.5 5

n = 1000, d = 20, P = 200 (``bench_torch_vs_cvxpy``'s problem), squared loss, certified relative gap 1e-4 on
the full program for both. The working set (celer / skglm style) starts from the patterns with the largest
dual values, solves FISTA on them (inner tolerance a tenth of the last full gap, at least 1e-4, starting at
1e-2), checks the certificate over all patterns and adds the most violated ones (doubling), until the
full gap is certified. A prototype outside the package: each inner FISTA restarts its momentum and step
size, which cost more iterations than the smaller products save (docs/solvers.md).
"""
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

sys.path.insert(0, "benchmarks")
from bench_torch_vs_cvxpy import make_data  # noqa: E402

from convexbn import ConvexBNProblem, bn_basis, sample_arrangements  # noqa: E402
from convexbn.solvers.torch.fista import ExactMaps, _solve_fista, dual_bound  # noqa: E402
from convexbn.solvers.torch.settings import FistaSettings  # noqa: E402


@dataclass
class Sub:
    Uprime: np.ndarray
    mask: np.ndarray
    Y: np.ndarray
    beta: float
    loss: object
    n_outputs: int
    n_patterns: int
    dim: int
    n_samples: int
    formulation: str = "exact"
    communicator: object = None


def pattern_values(maps, X, beta, F=None):
    """Per pattern: the largest dual value over its groups (sign, output), at the loss gradient at X."""
    value, G, R = maps.value_grad(X, F)
    C, P, k = G.shape[1:]
    flat = (-G).reshape(-1, k)
    vals = torch.zeros(flat.shape[0], dtype=flat.dtype)
    rows = torch.where(flat.norm(dim=1) > beta)[0]
    if rows.numel():
        res = maps.project(flat[rows], rows, None, None, None)
        vals[rows] = res.u.norm(dim=1)
    return vals.reshape(2, C, P).amax(dim=(0, 1)), value, R


def solve_ws(problem, tol=1e-4, warm=None, grow=2.0, min_add=10):
    dev, dtype = torch.device("cpu"), torch.float64
    maps = ExactMaps(problem, dev, dtype, 64 * 2**20, "auto")
    C, P, k = problem.n_outputs, problem.n_patterns, problem.dim
    beta = float(problem.beta)
    X = torch.zeros((2, C, P, k), dtype=dtype) if warm is None else warm.clone()
    vals, _, _ = pattern_values(maps, X, beta)
    active = (X.norm(dim=-1) > 0).any(0).any(0)
    order = torch.argsort(vals, descending=True)
    ws = active.clone()
    n_add = max(min_add, int(active.sum()))
    cand = [int(p) for p in order if not ws[p] and vals[p] > beta][:n_add]
    ws[cand] = True
    total_it, rounds, best = 0, 0, -np.inf
    inner_tol = max(tol, 1e-2)
    while True:
        rounds += 1
        idx = torch.where(ws)[0]
        sub = Sub(problem.Uprime, problem.mask[:, idx.numpy()], problem.Y, beta, problem.loss, C, len(idx), k,
                  problem.n_samples)
        warm_sub = (X[0][:, idx].numpy(), X[1][:, idx].numpy())
        res = _solve_fista(sub, FistaSettings(tol=inner_tol, max_iter=20000), warm_sub)
        total_it += res.n_iter
        X = torch.zeros((2, C, P, k), dtype=dtype)
        X[0][:, idx] = torch.as_tensor(res.W_pos)
        X[1][:, idx] = torch.as_tensor(res.W_neg)
        vals, value, R = pattern_values(maps, X, beta)
        objective = value + beta * float(X.norm(dim=-1).sum())
        best = max(best, dual_bound(maps, R, beta))
        gap = (objective - best) / abs(objective)
        if gap <= tol:
            return X, objective, gap, total_it, rounds
        inner_tol = max(tol, 0.1 * gap)
        outside = [int(p) for p in torch.argsort(vals, descending=True) if not ws[p] and vals[p] > beta]
        if not outside:
            inner_tol = max(tol, inner_tol / 4)
            continue
        n_add = max(min_add, int(grow * ws.sum()) - int(ws.sum()))
        ws[outside[:n_add]] = True


def main():
    X, y = make_data(1000, 20)
    b = bn_basis(X)
    arr = sample_arrangements(b, 200, random_state=0)
    for beta in [float(a) for a in sys.argv[1:]] or [0.05, 0.5, 5]:
        p = ConvexBNProblem(b, arr, y, beta=beta)
        p.solve("torch", tol=1e-4)
        t = time.perf_counter()
        s = p.solve("torch", tol=1e-4)
        plain = time.perf_counter() - t
        t = time.perf_counter()
        Xw, obj, gap, its, rounds = solve_ws(p, 1e-4)
        wst = time.perf_counter() - t
        print(f"beta {beta}: plain {plain:.2f} s {s.n_iter} its obj {s.objective:.6f} | ws {wst:.2f} s {its} "
              f"its {rounds} rounds obj {obj:.6f} gap {gap:.1e} active {int((Xw.norm(dim=-1) > 0).sum())}")


if __name__ == "__main__":
    main()
