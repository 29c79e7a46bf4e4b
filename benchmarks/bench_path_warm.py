"""A warm-started path against cold solves (issue 30: "a warm path of 10 betas costs at most a third of the
cold solves").

    python benchmarks/bench_path_warm.py [--n 1000] [--P 200] [--tol 1e-4] [--out FILE.json]

``bench_torch_vs_cvxpy``'s problem (d = 20, squared loss), 10 summed betas from 5 down to 0.05
(geometric), the torch solver's default method (FISTA, certified relative gap ``--tol``): each beta solved
cold, then the path solved largest beta first with each solve warm-started from the previous solution.
Reported per beta and in total: seconds and iterations, cold and warm, and the Newton polish's steps and
seconds (``solution.info["newton_steps"]``, ``["polish_s"]``), whose share the last total leaves out.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from bench_torch_vs_cvxpy import make_data

from convexbn import ConvexBNProblem, bn_basis, sample_arrangements


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--P", type=int, default=200)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    X, y = make_data(args.n, 20)
    basis = bn_basis(X)
    arr = sample_arrangements(basis, args.P, random_state=0)
    betas = np.geomspace(5, 0.05, 10)
    ConvexBNProblem(basis, arr, y, beta=1.0).solve("torch", tol=args.tol)  # kernels loaded, untimed
    rows, previous = [], None
    for beta in betas:
        problem = ConvexBNProblem(basis, arr, y, beta=float(beta))
        start = time.perf_counter()
        cold = problem.solve("torch", tol=args.tol)
        cold_s = time.perf_counter() - start
        start = time.perf_counter()
        warm = problem.solve("torch", tol=args.tol, warm_start=previous)
        warm_s = time.perf_counter() - start
        previous = warm
        rows.append({"beta": float(beta), "cold_s": cold_s, "cold_iters": cold.n_iter, "warm_s": warm_s,
                     "warm_iters": warm.n_iter, "cold_objective": cold.objective,
                     "warm_objective": warm.objective, "cold_polish_s": cold.info["polish_s"],
                     "warm_polish_s": warm.info["polish_s"], "cold_newton": cold.info["newton_steps"],
                     "warm_newton": warm.info["newton_steps"]})  # fmt: skip
        print(f"beta {beta:8.4f}  cold {cold_s:6.2f} s {cold.n_iter:5d} its {cold.info['newton_steps']:4d} "
              f"Newton ({cold.info['polish_s']:.2f} s)   warm {warm_s:6.2f} s {warm.n_iter:5d} its "
              f"{warm.info['newton_steps']:4d} Newton ({warm.info['polish_s']:.2f} s)   objectives "
              f"{cold.objective:.6f} / {warm.objective:.6f}")  # fmt: skip
    keys = ("cold_s", "cold_iters", "warm_s", "warm_iters", "cold_polish_s", "warm_polish_s", "cold_newton",
            "warm_newton")  # fmt: skip
    total = {key: sum(r[key] for r in rows) for key in keys}
    total["warm_over_cold_s"] = total["warm_s"] / total["cold_s"]
    # what the ratio would be with polishes that cost nothing (the iterations' share alone)
    total["warm_over_cold_without_polish_s"] = ((total["warm_s"] - total["warm_polish_s"])
                                                / (total["cold_s"] - total["cold_polish_s"]))  # fmt: skip
    print(total)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"rows": rows, "total": total}, handle, indent=1)


if __name__ == "__main__":
    main()
