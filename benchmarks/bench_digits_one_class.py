"""One one-vs-rest program of digits (class 0), solved by each named solver: time, status, objective.

    python benchmarks/bench_digits_one_class.py P LOSS SOLVER [SOLVER ...]
    python benchmarks/bench_digits_one_class.py 50 logistic clarabel torch
    python benchmarks/bench_digits_one_class.py 50 squared clarabel torch

Digits, the 75/25 stratified split of examples/model_selection.py (seed 0), standardized; beta = 1e-3 * n
(the estimators' default per-sample beta). Targets +-1 (logistic, hinge) or 0/1 (squared, one-hot column).
"""

import sys
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from convexbn import ConvexBNProblem, bn_basis, make_arrangements


def main(argv):
    P, loss, solvers = int(argv[0]), argv[1], argv[2:]
    X, y = load_digits(return_X_y=True)
    X_train, _, y_train, _ = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    X_train = StandardScaler().fit_transform(X_train)
    basis = bn_basis(X_train)
    arr = make_arrangements(basis, P, random_state=np.random.RandomState(0))
    print(f"n={len(y_train)} rank={basis.rank} patterns={arr.n_patterns} loss={loss}")
    target = np.where(y_train == 0, 1.0, 0.0 if loss == "squared" else -1.0)
    problem = ConvexBNProblem(basis, arr, target, beta=1e-3 * len(y_train), loss=loss)
    for solver in solvers:
        start = time.perf_counter()
        try:
            sol = problem.solve(solver)
            print(
                f"{solver}: {sol.status} objective {sol.objective:.8g} iterations {sol.n_iter} "
                f"violation {sol.constraint_violation:.1e} {time.perf_counter() - start:.1f} s",
                flush=True,
            )
        except Exception as exc:  # report the failure and its time, go on with the next solver
            print(f"{solver}: failed after {time.perf_counter() - start:.1f} s: {exc}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
