"""The torch convex solver against Adam and SGD on the same BN network, objective (3) against wall time.

    python benchmarks/bench_convex_vs_sgd.py --dataset breast_cancer --beta 1e-2 --n-arrangements 1000 \
        --seeds 5 --out benchmarks/results/convex_vs_sgd_breast_cancer.json

Both sides minimize the same number: objective (3) (summed loss + (beta/2) ||(gamma, alpha, v)||^2) of a
two-layer ReLU + BN network on the standardized training set, with the program's ``beta = beta_per_sample *
n`` (the estimators' scaling). Every point of the convex curve is a real network: at each convergence check of
the torch solver, the callback turns the current iterate into its network (spec section 5) and evaluates
(3) by a plain forward pass (``f = sum_i relu(U' u_i) - relu(U' u'_i)``; this is what
:func:`convexbn.recover_network` builds, checked at the end against ``recover_network(...).objective``). The
time spent in the callback is subtracted from the convex curve's clock. Adam and SGD (heavy ball) train
the spec's exact forward pass (:func:`convexbn.train_bn_network`) with ``m`` = the number of neurons the
convex solution uses, from ``--seeds`` random starts per step size, full batch.

With ``--pattern-search-rounds R`` the convex side also grows its pattern set from the dual
(:func:`convexbn.solve_with_pattern_search`, each round's objective attained by its recovered network); its
final network then sets ``m`` and the target. Printed and saved: each curve's objective at fixed wall
times, the final objectives, and the time each SGD/Adam run needs to reach the convex target (``null``:
never within its budget, which is ``--budget-factor`` times the convex wall time, at least
``--min-budget``).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from sklearn import datasets
from sklearn.preprocessing import StandardScaler

from convexbn import (
    ConvexBNProblem,
    bn_basis,
    recover_network,
    sample_arrangements,
    solve_with_pattern_search,
)
from convexbn.training import train_bn_network

CHECKPOINTS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 60)


def load(name: str):
    """Standardized features and (+-1 or real) targets of a scikit-learn bundled dataset."""
    if name == "diabetes":
        X, y = datasets.load_diabetes(return_X_y=True)
        y = (y - y.mean()) / y.std()
    elif name in ("breast_cancer", "wine", "digits"):
        X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
        y = np.where(y == np.bincount(y).argmax(), 1.0, -1.0)  # the largest class against the rest
    else:
        raise ValueError(f"unknown dataset {name!r}")
    return StandardScaler().fit_transform(X), y


def network_objective(problem, W_pos, W_neg) -> float:
    """Objective (3) of the network an iterate maps to (true ReLU patterns, not the program's D_i)."""
    U = problem.Uprime
    F = np.maximum(U @ W_pos[0].T, 0).sum(1) - np.maximum(U @ W_neg[0].T, 0).sum(1)
    penalty = np.linalg.norm(W_pos, axis=-1).sum() + np.linalg.norm(W_neg, axis=-1).sum()
    return float(problem.loss.value(F[:, None], problem.Y) + problem.beta * penalty)


def at_times(curve, times=CHECKPOINTS):
    """The current iterate's objective at each wall time (its last value by then; None before the first)."""
    out = {}
    for t in times:
        values = [v for s, v in curve if s <= t]
        out[str(t)] = values[-1] if values else None
    return out


def time_to_reach(curve, target):
    hits = [s for s, v in curve if v <= target]
    return min(hits) if hits else None


def run(args):
    X, y = load(args.dataset)
    n = X.shape[0]
    beta = args.beta * n
    basis = bn_basis(X)
    arr = sample_arrangements(basis, args.n_arrangements, random_state=0)
    problem = ConvexBNProblem(basis, arr, y, beta=beta)

    curve, spent = [], [0.0]
    start = time.perf_counter()

    def record(n_iter, W_pos, W_neg):
        t0 = time.perf_counter()
        curve.append((t0 - start - spent[0], network_objective(problem, W_pos, W_neg)))
        spent[0] += time.perf_counter() - t0

    sol = problem.solve("torch", tol=args.tol, max_iter=args.max_iter, callback=record)
    convex_time = time.perf_counter() - start - spent[0]
    net = recover_network(sol)
    final = net.objective(X, y)
    curve.append((convex_time, final))
    m = net.n_neurons
    result = {
        "dataset": args.dataset,
        "n": n,
        "d": X.shape[1],
        "beta_per_sample": args.beta,
        "beta": beta,
        "n_patterns": arr.n_patterns,
        "torch_threads": torch.get_num_threads(),
        "convex": {
            "solver": sol.solver,
            "status": sol.status,
            "n_iter": sol.n_iter,
            "time_s": convex_time,
            "objective_4": sol.objective,
            "network_objective_3": final,
            "constraint_violation": sol.constraint_violation,
            "n_neurons": m,
            "objective_at_time": at_times(curve),
            "curve": curve,
        },
        "sgd": [],
    }
    print(f"{args.dataset}: n={n}, d={X.shape[1]}, beta={beta:.4g}, P={arr.n_patterns}")
    print(f"  convex ({sol.solver}): objective (3) {final:.6f} in {convex_time:.2f} s, {sol.n_iter} its, "
          f"m={m}, violation {sol.constraint_violation:.1e}")  # fmt: skip
    target = final
    if args.pattern_search_rounds:
        start = time.perf_counter()
        ps_sol, ps_hist = solve_with_pattern_search(
            basis, arr, y, beta, rounds=args.pattern_search_rounds, tol=args.tol, max_iter=args.max_iter,
            round_tol=args.round_tol, n_starts=args.n_starts, ascent_steps=args.ascent_steps, random_state=0,
        )
        ps_time = time.perf_counter() - start
        ps_net = recover_network(ps_sol)
        ps_final = ps_net.objective(X, y)
        m, target, convex_time = ps_net.n_neurons, ps_final, ps_time
        result["convex_pattern_search"] = {
            "time_s": ps_time,
            "objective_4": ps_sol.objective,
            "network_objective_3": ps_final,
            "constraint_violation": ps_sol.constraint_violation,
            "n_neurons": m,
            "rounds": ps_hist,
        }
        print(f"  convex + pattern search ({len(ps_hist) - 1} rounds, {ps_sol.problem.n_patterns} patterns): "
              f"objective (3) {ps_final:.6f} in {ps_time:.2f} s, m={m}")  # fmt: skip
    result["sgd_n_neurons"] = m
    budget = max(args.min_budget, args.budget_factor * convex_time)
    for opt, lrs in (("adam", args.adam_lr), ("sgd", args.sgd_lr)):
        for lr in lrs:
            runs = []
            for seed in range(args.seeds):
                res = train_bn_network(
                    X, y, m, beta, optimizer=opt, lr=lr, epochs=args.epochs, random_state=seed,
                    record_every=args.record_every, time_limit=budget,
                )  # fmt: skip
                c = [(s, v) for s, _, v in res.history]
                runs.append({
                    "seed": seed,
                    "final_objective": res.objective,
                    "best_objective": res.best_objective,
                    "time_s": res.history[-1][0],
                    "epochs": res.history[-1][1],
                    "time_to_convex_objective_s": time_to_reach(c, target),
                    "objective_at_time": at_times(c),
                    "curve": c[:: max(1, len(c) // 200)],
                })  # fmt: skip
            best = min(r["best_objective"] for r in runs)
            reached = [r["time_to_convex_objective_s"] for r in runs]
            reached = [t for t in reached if t is not None]
            entry = {"optimizer": opt, "lr": lr, "best_objective": best,
                     "median_final_objective": float(np.median([r["final_objective"] for r in runs])),
                     "n_reached_convex_objective": len(reached), "runs": runs}  # fmt: skip
            result["sgd"].append(entry)
            print(f"  {opt:4s} lr={lr:<6g}: best {best:.6f}, median final "
                  f"{entry['median_final_objective']:.6f}, reached the convex objective in "
                  f"{len(reached)}/{len(runs)} runs (budget {budget:.1f} s each)")  # fmt: skip
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="breast_cancer")
    parser.add_argument("--beta", type=float, default=1e-2, help="per-sample weight decay")
    parser.add_argument("--n-arrangements", type=int, default=1000)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--max-iter", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=100_000)
    parser.add_argument("--record-every", type=int, default=10)
    parser.add_argument("--adam-lr", type=float, nargs="+", default=[1e-3, 1e-2, 1e-1])
    parser.add_argument("--sgd-lr", type=float, nargs="+", default=[1e-3, 1e-2])
    parser.add_argument(
        "--budget-factor",
        type=float,
        default=3.0,
        help="each SGD/Adam run gets this many times the convex solve's wall time",
    )
    parser.add_argument("--min-budget", type=float, default=10.0)
    parser.add_argument(
        "--pattern-search-rounds",
        type=int,
        default=0,
        help="also grow the patterns from the dual (convexbn.solve_with_pattern_search)",
    )
    parser.add_argument("--n-starts", type=int, default=1000,
                        help="pattern search: ascent starts per sign (0: fixed-point only)")
    parser.add_argument("--ascent-steps", type=int, default=20, help="pattern search: ascent steps per start")
    parser.add_argument("--round-tol", type=float, default=None,
                        help="pattern search: tolerance of the rounds before the last (default: --tol)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    result = run(args)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
