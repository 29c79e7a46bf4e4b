"""Where a FISTA solve's time goes: cProfile of one certified solve (after an untimed one).

    python benchmarks/profile_fista.py [--beta 0.05] [--n 1000] [--P 200] [--tol 1e-4] [--top 12]

``bench_torch_vs_cvxpy``'s problem (d = 20, squared loss). Prints the functions by own time; the cone
projections are ``project_rows`` (numba) and the products ``torch.matmul``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats

from bench_torch_vs_cvxpy import make_data

from convexbn import ConvexBNProblem, bn_basis, sample_arrangements


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--beta", type=float, default=0.05)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--P", type=int, default=200)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    X, y = make_data(args.n, 20)
    basis = bn_basis(X)
    problem = ConvexBNProblem(basis, sample_arrangements(basis, args.P, random_state=0), y, beta=args.beta)
    problem.solve("torch", tol=args.tol)  # kernels loaded, untimed
    profile = cProfile.Profile()
    profile.enable()
    problem.solve("torch", tol=args.tol)
    profile.disable()
    pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
