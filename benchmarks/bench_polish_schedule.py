"""When FISTA polishes: iterations and Newton steps for several face-churn thresholds.

    python benchmarks/bench_polish_schedule.py [--churn 1.0 0.5 0.35 0.25 0.15 0.1] [--count-tol 0]
        [--betas 0.05 0.1 0.2 0.5 1] [--out FILE.json]

``bench_torch_vs_cvxpy``'s problem (n = 1000, d = 20, P = 200, squared loss), certified 1e-4, one thread.
For each threshold (``convexbn.solvers.torch.polish_schedule.POLISH_MAX_CHURN``: polish once at most that
fraction of the support's faces changed since the last check; 1.0 only asks the support's size to be
stable), each tolerance on the support's size (``POLISH_COUNT_TOL``: the relative change of the number
of nonzero groups since the last check; 0 asks for the same number) and each summed beta: FISTA's
iterations, the Newton steps of each polish and the certified gap. Counts do not depend on the machine's
load; the seconds (also reported, after one untimed solve) do.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

from bench_torch_vs_cvxpy import make_data

import convexbn.solvers.torch.polish_schedule as schedule
from convexbn import ConvexBNProblem, bn_basis, sample_arrangements


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--churn", type=float, nargs="+", default=[1.0, 0.5, 0.35, 0.25, 0.15, 0.1])
    parser.add_argument("--count-tol", type=float, nargs="+", default=[0.0])
    parser.add_argument("--max-newton", type=int, nargs="+", default=[100])
    parser.add_argument("--betas", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.5, 1.0])
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    X, y = make_data(1000, 20)
    basis = bn_basis(X)
    arr = sample_arrangements(basis, 200, random_state=0)
    steps: list[int] = []
    polish = schedule.polish_support

    def counted(*a, **k):
        result = polish(*a, **k)
        steps.append(result.newton_steps)
        return result

    schedule.polish_support = counted
    names = ("POLISH_MAX_CHURN", "POLISH_COUNT_TOL", "POLISH_MAX_NEWTON")
    defaults, rows = [getattr(schedule, name) for name in names], []
    ConvexBNProblem(basis, arr, y, beta=1.0).solve("torch", tol=1e-4, threads=1)  # kernels loaded
    try:
        for max_newton, count_tol, churn in itertools.product(args.max_newton, args.count_tol, args.churn):
            for name, value in zip(names, (churn, count_tol, max_newton), strict=True):
                setattr(schedule, name, value)
            for beta in args.betas:
                steps.clear()
                start = time.perf_counter()
                sol = ConvexBNProblem(basis, arr, y, beta=beta).solve("torch", tol=1e-4, threads=1)
                seconds = time.perf_counter() - start
                gap = sol.info["relative_gap"]
                rows.append({"max_newton": max_newton, "count_tol": count_tol, "churn": churn, "beta": beta,
                             "iterations": sol.n_iter, "newton_steps": list(steps), "relative_gap": gap,
                             "seconds": seconds})  # fmt: skip
                print(f"steps <= {max_newton}  count tol {count_tol:4.2f}  churn {churn:4.2f}  "
                      f"beta {beta:5.3f}  iterations {sol.n_iter:5d}  Newton steps {steps}  gap {gap:.1e}  "
                      f"{seconds:.2f} s")
    finally:
        for name, value in zip(names, defaults, strict=True):
            setattr(schedule, name, value)
        schedule.polish_support = polish
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
