"""One convex BN program solved data-parallel over row shards with torch.distributed.

Launch with torchrun (Gloo on CPU; pass ``--backend nccl --device cuda`` for one GPU per process)::

    torchrun --standalone --nproc_per_node=2 examples/distributed_solve.py --check

or from plain Python, which starts the processes itself (``convexbn.distributed.launch_local``)::

    python examples/distributed_solve.py --nproc 2 --check

Each rank reads only its own rows (here: a slice of a seeded synthetic set; in practice its own file),
builds its rows of the BN basis and of the patterns, and takes part in the solve. Rank 0 prints the
objective, the iterations and the messages sent; with ``--check`` it also solves the same program in one
process on the gathered data and prints the differences.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch
import torch.distributed as dist

from convexbn import ConvexBNProblem, bn_basis, recover_network, sample_arrangements
from convexbn.compare import format_report
from convexbn.distributed import fit_distributed, launch_local, shard_rows


def make_data(n: int, d: int, seed: int = 0):
    """A seeded regression set: every rank can make its own rows of the same data."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * np.linspace(1, 3, d) + 1.0
    y = np.tanh(X[:, 0] - X[:, 1]) + 0.2 * np.abs(X[:, 2 % d]) + 0.05 * rng.standard_normal(n)
    return X, y


def run(rank: int, world: int, args) -> dict:
    """Everything one rank does; the returned dict is rank 0's report."""
    warnings.simplefilter("ignore")  # an 'optimal_inaccurate' budget warning would print once per rank
    X, y = make_data(args.n, args.d)
    rows = shard_rows(args.n, rank, world)
    options = dict(max_iter=args.max_iter, tol=args.tol, device=args.device)
    start = time.perf_counter()
    solution, network = fit_distributed(
        X[rows], y[rows], args.beta, n_arrangements=args.arrangements, random_state=args.seed, **options
    )
    elapsed = time.perf_counter() - start
    report = {
        "world_size": world,
        "rows_on_rank_0": rows.stop - rows.start,
        "objective": solution.objective,
        "status": solution.status,
        "n_iter": solution.n_iter,
        "neurons": network.n_neurons,
        "time_s": elapsed,
        **solution.info["communication"],
    }
    if args.check and rank == 0:
        basis = bn_basis(X)
        # the AL's own point (a single process would move it into the cones, which a sharded solve cannot)
        arrangements = sample_arrangements(basis, args.arrangements, random_state=args.seed)
        single = ConvexBNProblem(basis, arrangements, y, args.beta).solve("torch", method="al", certify=False,
                                                                           **options)  # fmt: skip
        single_net = recover_network(single)
        report["single_process_objective"] = single.objective
        report["objective_rel_diff"] = abs(solution.objective - single.objective) / abs(single.objective)
        report["weights_max_abs_diff"] = float(
            max(np.abs(solution.W_pos - single.W_pos).max(), np.abs(solution.W_neg - single.W_neg).max())
        )
        report["network_max_abs_diff"] = max(
            float(np.abs(getattr(network, name) - getattr(single_net, name)).max())
            for name in ("output", "gamma", "alpha", "weights")
        )
        report["forward_objective_rel_diff"] = abs(network.objective(X, y) - solution.objective) / abs(
            solution.objective
        )
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=4000, help="samples (all ranks together)")
    parser.add_argument("--d", type=int, default=10, help="features")
    parser.add_argument("--arrangements", type=int, default=100)
    parser.add_argument("--beta", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-iter", type=int, default=20_000)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="gloo", help="torch.distributed backend (gloo, nccl)")
    parser.add_argument("--nproc", type=int, default=2, help="processes when not launched by torchrun")
    parser.add_argument("--check", action="store_true", help="also solve in one process and compare")
    parser.add_argument("--smoke", action="store_true", help="a small, quick problem")
    args = parser.parse_args(argv)
    if args.smoke:
        args.n, args.d, args.arrangements, args.beta = 40, 3, 10, 0.1
    if "WORLD_SIZE" in os.environ:  # started by torchrun: this process is one rank
        dist.init_process_group(args.backend)
        rank, world = dist.get_rank(), dist.get_world_size()
        if args.device.startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        report = run(rank, world, args)
        dist.destroy_process_group()
    else:
        rank, report = 0, launch_local(run, args.nproc, (args,), backend=args.backend, threads=1)[0]
    if rank == 0:
        print(format_report(report))


if __name__ == "__main__":
    main()
