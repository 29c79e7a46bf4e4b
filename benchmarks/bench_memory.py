"""Peak memory of the exact FISTA solve with and without a ``memory_limit`` (blocked products, projections).

    python benchmarks/bench_memory.py --n 20000 --d 20 --P 1000 --iters 20 --limits none 1024 256 64 16 \
        --out benchmarks/results/memory_n20000_d20_P1000.json

Each limit (MiB; ``none`` = one block) runs in a fresh Python process, so that its peak resident memory
(``ru_maxrss``) is its own: the same synthetic problem as ``bench_torch_vs_cvxpy.py`` (squared loss,
``beta = 0.1``), then ``--iters`` FISTA iterations (``tol=0``: a fixed amount of work). Reported: peak RSS
before the solve (data, basis, patterns) and after it, the solve's time per iteration, the blocks used,
and the objective reached (the same for every limit, up to rounding).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
import warnings


def one_run(n, d, P, iters, limit_mib):
    import torch
    from bench_torch_vs_cvxpy import make_data

    from convexbn import ConvexBNProblem, bn_basis, sample_arrangements
    from convexbn.problem import SolverWarning
    from convexbn.solvers.torch.fista import ExactMaps as _ExactMaps

    X, y = make_data(n, d)
    basis = bn_basis(X)
    arr = sample_arrangements(basis, P, random_state=0)
    problem = ConvexBNProblem(basis, arr, y, beta=0.1)
    limit = None if limit_mib is None else int(limit_mib * 2**20)
    maps = _ExactMaps(problem, torch.device("cpu"), torch.float64, limit)
    blocks = {"sample_block": maps.sample_block, "group_block": maps.group_block}
    del maps
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)
    start = time.perf_counter()
    with warnings.catch_warnings():  # stopped by max_iter on purpose
        warnings.simplefilter("ignore", SolverWarning)
        sol = problem.solve("torch", tol=0.0, max_iter=iters, memory_limit=limit)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"n": n, "d": d, "P": arr.n_patterns, "iters": sol.n_iter, "limit_mib": limit_mib, **blocks,
            "peak_rss_before_solve_gb": before, "peak_rss_gb": after, "s": seconds,
            "s_per_iter": seconds / sol.n_iter, "objective": sol.objective}  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--d", type=int, default=20)
    parser.add_argument("--P", type=int, default=1000)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--limits", nargs="+", default=["none", "1024", "256", "64", "16"], help="MiB")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # the child process's own run
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.one is not None:
        limit = None if args.one == "none" else float(args.one)
        print(json.dumps(one_run(args.n, args.d, args.P, args.iters, limit)))
        return None
    from bench_torch_vs_cvxpy import write_rows

    print(f"python {platform.python_version()}, {platform.processor()}")
    rows = []
    for limit in args.limits:
        cmd = [sys.executable, __file__, "--n", str(args.n), "--d", str(args.d), "--P", str(args.P),
               "--iters", str(args.iters), "--one", limit]  # fmt: skip
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]))
    write_rows(rows, args.out)
    return rows


if __name__ == "__main__":
    main()
