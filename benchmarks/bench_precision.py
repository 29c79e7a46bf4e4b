"""float64, float32 and float32 with a float64 finish on the exact program (FISTA), side by side.

    python benchmarks/bench_precision.py --n 500 1000 --P 100 200 --tol 1e-4 1e-6 \
        --out benchmarks/results/precision_n500_n1000.json

Same synthetic problems as ``bench_torch_vs_cvxpy.py`` (squared loss, ``beta = 0.1``). Per size: a
float64 reference solve to a certified gap of ``--ref-tol``; then, per ``--tol``, the torch FISTA solver
in float64, in float32 with the default float64 finish (``finish_dtype="auto"``) and in float32 alone
(``finish_dtype=None``, at most ``--max-iter-float32`` iterations). Reported per run: time, iterations,
status, the certified relative gap, the iteration of the switch to float64, the objective against the
reference (relative) and the relative cone violation. The point measured is whether a float32 request
certifies. The cone projections are the solver's default (numba when installed); their kernel's one-time
load for both dtypes is paid before the first solve and reported (``numba_load_s``), not in the times.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings

import torch
from bench_torch_vs_cvxpy import add_size_arguments, load_projection, make_data, size_pairs, write_rows

from convexbn import ConvexBNProblem, bn_basis, sample_arrangements
from convexbn.problem import SolverWarning


def run_size(n, d, P, beta, tols, ref_tol, max_iter_f32):
    X, y = make_data(n, d)
    basis = bn_basis(X)
    arr = sample_arrangements(basis, P, random_state=0)
    problem = ConvexBNProblem(basis, arr, y, beta=beta)
    ref = problem.solve("torch", tol=ref_tol)
    rows = []
    variants = (("float64", "float64", "auto", 20_000), ("float32+float64", "float32", "auto", 20_000),
                ("float32 alone", "float32", None, max_iter_f32))  # fmt: skip
    for tol in tols:
        for label, dtype, finish, max_iter in variants:
            start = time.perf_counter()
            with warnings.catch_warnings():  # float32 alone stops at max_iter: "optimal_inaccurate"
                warnings.simplefilter("ignore", SolverWarning)
                sol = problem.solve("torch", tol=tol, dtype=dtype, finish_dtype=finish, max_iter=max_iter)
            row = {"n": n, "d": d, "P": arr.n_patterns, "tol": tol, "variant": label,
                   "s": time.perf_counter() - start, "iters": sol.n_iter, "status": sol.status,
                   "solver": sol.solver, "certified_gap": sol.info["relative_gap"],
                   "finish_at": sol.info.get("finish_at"),
                   "rel_diff": (sol.objective - ref.objective) / abs(ref.objective),
                   "violation": sol.constraint_violation,
                   "reference_gap": ref.info["relative_gap"]}  # fmt: skip
            rows.append(row)
            print(json.dumps({k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in row.items()}))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_size_arguments(parser)
    parser.add_argument("--tol", type=float, nargs="+", default=[1e-4, 1e-6])
    parser.add_argument("--ref-tol", type=float, default=1e-9)
    parser.add_argument("--max-iter-float32", type=int, default=3000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {platform.processor()}")
    projection, load_s = load_projection("auto", (torch.float64, torch.float32))
    print(f"cone projections: {projection} (first calls {load_s:.2f} s)")
    rows, load = [], {"projection": projection, "numba_load_s": load_s if projection == "numba" else None}
    for n, P in size_pairs(args):
        for row in run_size(n, args.d, P, args.beta, args.tol, args.ref_tol, args.max_iter_float32):
            rows.append(dict(row, **load))
    write_rows(rows, args.out)
    return rows


if __name__ == "__main__":
    main()
