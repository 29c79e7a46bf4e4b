"""Scale run: the exact program at MNIST size with the matrix-free torch solver (AL + FISTA), float32.

    python benchmarks/bench_scale.py --n 60000 --d 784 --P 500 --dtype float32 --rel-change 1e-4 \
        --time-limit 2400 --out benchmarks/results/scale_n60000_d784_P500.json

Random Gaussian data (the issue allows it) with a smooth nonlinear target, squared loss, ``beta =
beta_per_sample * n``. The solve stops when the objective (4) changes by at most ``--rel-change``
(relative) between two callbacks ten iterations apart *and* the AL round has reached ``--feas-tol`` (so
the stop is not taken inside an early, infeasible round), or at ``--time-limit`` / ``--max-iter``.
Reported: wall time (basis, arrangements and solve apart), iterations, objective, relative cone
violation, the number of neurons, and peak resident memory (``ru_maxrss``) with the memory formula of
:mod:`convexbn.solvers.torch` for comparison. On CUDA (``--device cuda``) it also reports the peak
allocated GPU memory and the achieved memory bandwidth of the solve (bytes the dense products must read
per iteration, over the time per iteration) as a fraction of ``--peak-bandwidth``.

``--rho-factor`` sets the AL's initial penalty in units of the data term's Lipschitz estimate
(``solve_torch``'s ``rho_factor``); ``--pyscnn`` then runs pyscnn's AL at its defaults (float64) on the same
``U'``, patterns and objective, and reports its time, our objective (4) of its answer and its violation:

    python benchmarks/bench_scale.py --n 10000 --P 200 --feas-tol 1e-5 --time-limit 300 --rho-factor 10 \
        --pyscnn --out benchmarks/results/scale_n10000_d784_P200_rho10_pyscnn.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import numpy as np
import torch

from convexbn import ConvexBNProblem, bn_basis, sample_arrangements


def make_data(n, d, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float64)
    w1, w2 = rng.standard_normal(d) / np.sqrt(d), rng.standard_normal(d) / np.sqrt(d)
    y = np.sin(2 * X @ w1) + np.maximum(X @ w2, 0) + 0.1 * rng.standard_normal(n)
    return X, y - y.mean()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=60_000)
    parser.add_argument("--d", type=int, default=784)
    parser.add_argument("--P", type=int, default=500)
    # 1e-3 makes the zero network optimal on this data with sampled patterns (run of 2026-11-26)
    parser.add_argument("--beta", type=float, default=1e-4, help="per-sample weight decay")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--method", default="al", choices=["al", "admm", "auto"])
    parser.add_argument("--rel-change", type=float, default=1e-4)
    parser.add_argument("--feas-tol", type=float, default=1e-4)
    parser.add_argument("--rho-factor", type=float, default=1.0,
                        help="solve_torch's rho_factor: the AL's initial penalty / Lipschitz estimate")
    parser.add_argument("--pyscnn", action="store_true",
                        help="then pyscnn's AL (defaults) on the same U', patterns and objective")
    parser.add_argument("--gap-tol", type=float, default=None,
                        help="the AL's gap_tol: stop on its certificate (then the script's own rule is off)")
    parser.add_argument("--max-iter", type=int, default=5000)
    parser.add_argument("--time-limit", type=float, default=2400.0)
    parser.add_argument("--peak-bandwidth", type=float, default=None, help="GB/s, for the GPU fraction")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    row = {"n": args.n, "d": args.d, "dtype": args.dtype, "device": args.device, "method": args.method,
           "torch_threads": torch.get_num_threads(), "processor": platform.processor()}  # fmt: skip
    t = time.perf_counter()
    X, y = make_data(args.n, args.d)
    basis = bn_basis(X)
    row["basis_s"] = time.perf_counter() - t
    t = time.perf_counter()
    arr = sample_arrangements(basis, args.P, random_state=0)
    row["arrangements_s"] = time.perf_counter() - t
    beta = args.beta * args.n
    problem = ConvexBNProblem(basis, arr, y, beta=beta)
    row.update(P=arr.n_patterns, k=problem.dim, beta=beta)
    del X

    trace, last, spent = [], {}, [0.0]
    Up = torch.as_tensor(problem.Uprime, dtype=torch.float32)
    mask = torch.as_tensor(problem.mask, dtype=torch.float32)
    Yt = torch.as_tensor(problem.Y[:, 0], dtype=torch.float32)
    start = time.perf_counter()

    def stop_rule(n_iter, W_pos, W_neg):
        t0 = time.perf_counter()
        # objective (4) and the relative cone violation, in float32 torch (a numpy float64 product of this
        # size takes seconds); the time spent here is not counted as solve time
        Zp = Up @ torch.as_tensor(W_pos[0], dtype=torch.float32).T
        Zn = Up @ torch.as_tensor(W_neg[0], dtype=torch.float32).T
        F = (mask * (Zp - Zn)).sum(1)
        norms = np.r_[np.linalg.norm(W_pos[0], axis=-1), np.linalg.norm(W_neg[0], axis=-1)]
        obj = float(0.5 * (F - Yt).square().sum()) + beta * float(norms.sum())
        signs = 2 * mask - 1
        worst = float(torch.maximum((-signs * Zp).max(), (-signs * Zn).max()).clamp_min(0))
        viol = worst / norms.max() if norms.max() > 0 else 0.0
        spent[0] += time.perf_counter() - t0
        elapsed = time.perf_counter() - start - spent[0]
        prev = last.get("obj")
        change = abs(obj - prev) / max(abs(obj), 1e-300) if prev is not None else np.inf
        last["obj"] = obj
        trace.append((n_iter, elapsed, obj, change, viol))
        if n_iter % 50 == 0:
            print(f"  it {n_iter}: {elapsed:.0f} s, objective {obj:.8g}, rel change {change:.2e}, "
                  f"violation {viol:.1e}", flush=True)  # fmt: skip
        feasible = viol <= args.feas_tol
        if args.gap_tol is not None:  # the solver stops on its certificate
            return elapsed > args.time_limit
        return (change <= args.rel_change and feasible) or elapsed > args.time_limit

    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    sol = problem.solve(
        "torch", method=args.method, dtype=args.dtype, device=args.device, max_iter=args.max_iter,
        feas_tol=args.feas_tol, rho_factor=args.rho_factor, callback=stop_rule,
        **({} if args.gap_tol is None else {"gap_tol": args.gap_tol}),
    )  # fmt: skip
    row["solve_s"] = time.perf_counter() - start - spent[0]
    row["callback_s"] = spent[0]
    row.update(
        n_iter=sol.n_iter,
        status=sol.status,
        objective=sol.objective,
        objective_per_sample=sol.objective / args.n,
        constraint_violation=sol.constraint_violation,
        n_neurons=sol.n_neurons,
        last_rel_change=trace[-1][3] if trace else None,
        stopped_by_time=bool(trace and trace[-1][1] > args.time_limit),
        peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    )
    certificate = sol.info.get("certificate")  # the AL's: its answer projected onto the cones
    if certificate is not None:
        row.update(certified_objective=certificate.objective, certified_lower_bound=certificate.lower_bound,
                   certified_relative_gap=certificate.relative_gap,
                   certified_dual_ratio=certificate.max_dual_ratio, certificate_s=certificate.seconds,
                   gap_tol=args.gap_tol,
                   certificate_history=[h for h in sol.info.get("history", []) if h[0] == "certificate"])
    n, P, k = args.n, row["P"], row["k"]
    itemsize = 4 if args.dtype == "float32" else 8
    # the formula of convexbn.solvers.torch (C = 1)
    row["memory_formula_gb"] = ((3 + 10) * n * P + n * k + 12 * P * k) * itemsize / 2**30
    row["s_per_iter"] = row["solve_s"] / max(sol.n_iter, 1)
    if args.device.startswith("cuda"):
        row["gpu_peak_allocated_gb"] = torch.cuda.max_memory_allocated() / 2**30
        # per FISTA iteration: two smooth evaluations, each reading U' four times and ~6 (n, P) arrays
        bytes_per_iter = 2 * (4 * n * k + 12 * n * P) * itemsize
        row["achieved_gb_per_s"] = bytes_per_iter / row["s_per_iter"] / 1e9
        if args.peak_bandwidth:
            row["bandwidth_fraction"] = row["achieved_gb_per_s"] / args.peak_bandwidth
    row["rho_factor"] = args.rho_factor
    if args.pyscnn:  # after ours, so that peak_rss_gb above is ours alone
        from bench_torch_vs_cvxpy import run_pyscnn

        result = run_pyscnn(problem, arr, y, beta, {})
        row.update({f"pyscnn_{key}": value for key, value in result.items()})
        row["pyscnn_violation"] = float(row["pyscnn_violation"])
        row["pyscnn_rel_diff_vs_torch"] = (row["pyscnn_objective"] - sol.objective) / sol.objective
    row["trace"] = trace
    print(json.dumps({key: v for key, v in row.items() if key != "trace"}, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(row, f, indent=1)
    return row


if __name__ == "__main__":
    main()
