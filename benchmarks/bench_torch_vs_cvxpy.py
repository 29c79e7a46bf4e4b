"""Side-by-side: the torch solver vs cvxpy + Clarabel (and SCS) on the exact convex BN program.

    python benchmarks/bench_torch_vs_cvxpy.py --n 500 1000 --d 20 --P 100 200 [--scs] [--out FILE.json]

Synthetic data (Gaussian X, y = sin(2 x0) + 0.5 x1 + noise), squared loss, program ``beta`` = ``--beta``
(default 0.1, summed loss). Per size: Clarabel's objective and time; for each ``--tol`` the torch
solver's time (``method="auto"``: FISTA with the exact cone prox, stopping at a certified relative
duality gap of ``tol``, so its objective is within ``tol`` of the optimum), its difference from Clarabel's
objective, its cone violation, iterations, and the recovered network's forward objective against the
reported one; the speedups (torch time: the median of ``--repeats`` solves, all kept in ``*_all_s``).
``--scs`` adds SCS at eps 1e-5. Runs on whatever cores torch and Clarabel find
(2 on our CI machine kind), one solver after the other.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from convexbn import ConvexBNProblem, bn_basis, recover_network, sample_arrangements


def make_data(n: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.sin(2 * X[:, 0]) + 0.5 * X[:, 1] + 0.1 * rng.standard_normal(n)
    return X, y


def run_one(n, d, P, beta, scs, tol, method="auto", seed=0, repeats=1):
    X, y = make_data(n, d, seed)
    basis = bn_basis(X)
    arr = sample_arrangements(basis, P, random_state=seed)
    problem = ConvexBNProblem(basis, arr, y, beta=beta)
    row = {"n": n, "d": d, "P": arr.n_patterns, "beta": beta}
    start = time.perf_counter()
    ref = problem.solve("clarabel")
    row["clarabel_s"] = time.perf_counter() - start
    row["clarabel_objective"] = ref.objective
    for i, tol_i in enumerate(tol):
        key = "torch" if i == 0 else f"torch_tol{tol_i:g}"
        options = {"feas_tol": 1e-6} if method in ("admm", "al") else {}
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            sol = problem.solve("torch", method=method, tol=tol_i, **options)
            times.append(time.perf_counter() - start)
        row[f"{key}_s"] = float(np.median(times))
        row[f"{key}_all_s"] = times
        row[f"{key}_solver"] = sol.solver
        row[f"{key}_tol"] = tol_i
        row[f"{key}_objective"] = sol.objective
        row[f"{key}_iters"] = sol.n_iter
        row[f"{key}_violation"] = sol.constraint_violation
        row[f"{key}_rel_diff"] = (sol.objective - ref.objective) / abs(ref.objective)
        row[f"{key}_certified_gap"] = sol.info.get("relative_gap")
        net_obj = recover_network(sol).objective(X, y)
        row[f"{key}_network_rel_diff"] = abs(net_obj - sol.objective) / sol.objective
        row[f"{key}_speedup_vs_clarabel"] = row["clarabel_s"] / row[f"{key}_s"]
    if scs:
        start = time.perf_counter()
        s = problem.solve("scs", eps_abs=1e-5, eps_rel=1e-5)
        row["scs_s"] = time.perf_counter() - start
        row["scs_rel_diff"] = (s.objective - ref.objective) / abs(ref.objective)
        row["speedup_vs_scs"] = row["scs_s"] / row["torch_s"]
        row["scs_violation"] = s.constraint_violation
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[500, 1000])
    parser.add_argument("--d", type=int, default=20)
    parser.add_argument("--P", type=int, nargs="+", default=[100, 200])
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument(
        "--tol",
        type=float,
        nargs="+",
        default=[1e-4, 1e-6],
        help="torch tolerances; the first one is the headline speedup",
    )
    parser.add_argument("--scs", action="store_true")
    parser.add_argument("--method", default="auto", choices=["auto", "fista", "admm", "al"])
    parser.add_argument("--repeats", type=int, default=1, help="torch solves per tolerance (median time)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    sizes = list(zip(args.n, args.P if len(args.P) == len(args.n) else args.P * len(args.n), strict=False))
    rows = []
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {platform.processor()}")
    for n, P in sizes:
        row = run_one(n, args.d, P, args.beta, args.scs, args.tol, args.method, repeats=args.repeats)
        rows.append(row)
        print(json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
