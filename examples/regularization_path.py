"""A regularization path over beta: warm-started torch solves from the critical beta downwards.

    python examples/regularization_path.py [--data diabetes] [--arrangements 200] [--n-betas 10]
    python examples/regularization_path.py --smoke          # seconds; what CI runs

``critical_beta`` is the smallest beta whose solution is the empty network (the dual check of spec
section 6 at F = 0). The path starts just below it and goes down to ``--min-ratio`` times it; every solve
starts from the previous solution. The same betas are then solved cold, so the table shows what the warm
starts save (iterations), and that both reach the same objective. Every objective is checked against the
recovered network's forward pass (the equivalence (3) == (4)).
"""

from __future__ import annotations

import argparse

import numpy as np

from convexbn import ConvexBNProblem, bn_basis, recover_network, regularization_path, sample_arrangements
from convexbn.compare import evaluate_predictions
from convexbn.data import encode_task, load_dataset, split_and_standardize
from convexbn.path import critical_beta


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="diabetes")
    parser.add_argument("--arrangements", type=int, default=200)
    parser.add_argument("--n-betas", type=int, default=10)
    parser.add_argument("--min-ratio", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CI)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.arrangements, args.n_betas = 20, 3

    dataset = load_dataset(args.data)
    loss, y, _ = encode_task(dataset)
    X, X_test, y, y_test = split_and_standardize(
        dataset.X, y, random_state=args.seed, scale_target=loss == "squared"
    )
    basis = bn_basis(X)
    arrangements = sample_arrangements(basis, args.arrangements, random_state=args.seed)
    beta_max = critical_beta(basis, arrangements, y, loss=loss)
    betas = beta_max * np.geomspace(0.95, args.min_ratio, args.n_betas)
    warm = regularization_path(basis, arrangements, y, betas, loss=loss, solver="torch")
    print(f"{args.data}: n={X.shape[0]}, loss={loss}, P={arrangements.n_patterns}, "
          f"critical beta {beta_max:.6g}")  # fmt: skip
    print(f"{'beta':>11s} {'objective':>13s} {'network (3)':>13s} {'neurons':>8s} {'iters warm':>11s} "
          f"{'iters cold':>11s} {'cold objective':>15s} {'test':>8s}")  # fmt: skip
    rows = []
    for solution in warm:
        beta = solution.problem.beta
        cold = ConvexBNProblem(basis, arrangements, y, beta=beta, loss=loss).solve("torch")
        network = recover_network(solution)
        test = evaluate_predictions(network.forward(X_test), y_test, loss)
        row = {
            "beta": beta,
            "objective": solution.objective,
            "network_objective": network.objective(X, y),
            "n_neurons": network.n_neurons,
            "iterations_warm": solution.n_iter,
            "iterations_cold": cold.n_iter,
            "cold_objective": cold.objective,
            "test": test,
        }
        rows.append(row)
        metric = next(iter(test.values())) if loss != "squared" else test["r2"]
        print(f"{beta:11.5g} {row['objective']:13.8g} {row['network_objective']:13.8g} {row['n_neurons']:8d} "
              f"{row['iterations_warm']:11d} {row['iterations_cold']:11d} {row['cold_objective']:15.8g} "
              f"{metric:8.4f}")  # fmt: skip
    warm_total = sum(r["iterations_warm"] for r in rows)
    cold_total = sum(r["iterations_cold"] for r in rows)
    print(f"iterations: warm path {warm_total}, cold solves {cold_total}")
    return rows


if __name__ == "__main__":
    main()
