"""How the AL's inner stall rule (``rel_change``) trades iterations for accuracy at k = 785.

    python benchmarks/bench_al_stall.py --n 10000 --P 200 \
        --out benchmarks/results/al_stall_n10000_d784_P200.json

The problem of ``bench_scale.py`` (random Gaussian data, squared loss, ``beta`` 1e-4 per sample), solved by
the AL method with ``rho_factor=10``: first a float64 reference with tight inner solves (``feas_tol`` 1e-7,
the default ``rel_change`` of float64, ``--ref-iter`` iterations), then float32 runs at each
``--rel-change``. Every 10 iterations a callback records the objective (4) and the relative cone
violation (float64 products, not counted in anything timed here: this script reports iterations and
objectives, not speed). Per run: the first recorded iteration at which the violation is at most
``--feas-tol`` with the objective there, and the last point. Accuracy is read against the reference.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from bench_scale import make_data

from convexbn import ConvexBNProblem, bn_basis, sample_arrangements


def run(problem, *, dtype, max_iter, feas_tol, rel_change, rho_factor):
    Up = torch.as_tensor(problem.Uprime)
    mask = torch.as_tensor(problem.mask)
    signs = 2 * mask - 1
    y = torch.as_tensor(problem.Y[:, 0])
    trace = []

    def record(n_iter, W_pos, W_neg):
        Zp, Zn = Up @ torch.as_tensor(W_pos[0]).T, Up @ torch.as_tensor(W_neg[0]).T
        norms = np.r_[np.linalg.norm(W_pos[0], axis=-1), np.linalg.norm(W_neg[0], axis=-1)]
        obj = 0.5 * float(((mask * (Zp - Zn)).sum(1) - y).square().sum()) + problem.beta * norms.sum()
        worst = float(torch.maximum((-signs * Zp).max(), (-signs * Zn).max()).clamp_min(0))
        trace.append((n_iter, float(obj), worst / norms.max() if norms.max() > 0 else 0.0))

    t = time.perf_counter()
    sol = problem.solve("torch", method="al", dtype=dtype, max_iter=max_iter, feas_tol=feas_tol,
                        rel_change=rel_change, rho_factor=rho_factor, callback=record)  # fmt: skip
    return {
        "dtype": dtype, "rel_change": rel_change, "feas_tol": feas_tol, "max_iter": max_iter,
        "n_iter": sol.n_iter, "status": sol.status, "wall_s": time.perf_counter() - t,
        "objective": sol.objective, "violation": sol.constraint_violation,
        "al_rounds": sol.info["al_rounds"], "trace": trace,
    }  # fmt: skip


def first_feasible(trace, tol):
    return next(((i, obj, v) for i, obj, v in trace if v <= tol), None)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--d", type=int, default=784)
    parser.add_argument("--P", type=int, default=200)
    parser.add_argument("--beta", type=float, default=1e-4, help="per-sample weight decay")
    parser.add_argument("--rho-factor", type=float, default=10.0)
    parser.add_argument("--feas-tol", type=float, default=1e-5, help="the violation the float32 runs aim at")
    parser.add_argument("--rel-change", type=lambda s: None if s == "default" else float(s), nargs="+",
                        default=[None, 3e-6, 1e-5, 3e-5],
                        help="float32 inner stall thresholds ('default': 10 eps of float32 = 1.2e-6)")
    parser.add_argument("--max-iter", type=int, default=2500)
    parser.add_argument("--ref-iter", type=int, default=8000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    X, y = make_data(args.n, args.d)
    basis = bn_basis(X)
    problem = ConvexBNProblem(basis, sample_arrangements(basis, args.P, random_state=0), y,
                              beta=args.beta * args.n)  # fmt: skip
    runs = [run(problem, dtype="float64", max_iter=args.ref_iter, feas_tol=1e-7, rel_change=None,
                rho_factor=args.rho_factor)]  # fmt: skip
    for rc in args.rel_change:
        runs.append(run(problem, dtype="float32", max_iter=args.max_iter, feas_tol=args.feas_tol,
                        rel_change=rc, rho_factor=args.rho_factor))  # fmt: skip
    ref = runs[0]["objective"]
    print(f"reference (float64, feas_tol 1e-7): {runs[0]['n_iter']} iterations, objective {ref:.6g}, "
          f"violation {runs[0]['violation']:.2e}")  # fmt: skip
    print("| dtype | rel_change | first it. at violation <= feas_tol | objective there | vs reference "
          "| last it. | objective | violation |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in runs:
        hit = first_feasible(r["trace"], args.feas_tol)
        r["first_feasible"] = hit
        at = f"{hit[0]} | {hit[1]:.6g} | {(hit[1] - ref) / ref:+.1e}" if hit else "- | - | -"
        print(f"| {r['dtype']} | {r['rel_change']} | {at} | {r['n_iter']} | {r['objective']:.6g} | "
              f"{r['violation']:.2e} |")  # fmt: skip
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
