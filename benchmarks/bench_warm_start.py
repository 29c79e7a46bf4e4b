"""Warm starts and the zero solution in the torch ADMM solver: iteration counts.

    python benchmarks/bench_warm_start.py

1. The problem of tests/test_estimators.py::test_convergence_warning_and_warm_start (75 iris samples,
   standardized, 20 patterns, squared loss): a ConvexBNRegressor refit at beta 1.1e-2 warm-started from the
   fit at 1e-2, against a cold fit at 1.1e-2.
2. The path of tests/test_torch_solver.py::test_regularization_path_matches_clarabel_and_stops_at_zero
   (n=60, d=4, 20 patterns): iterations per beta, largest first; beta=3 has the zero solution.
"""

import warnings

import numpy as np
from sklearn.datasets import load_iris
from sklearn.preprocessing import StandardScaler

from convexbn import ConvexBNRegressor, bn_basis, regularization_path, sample_arrangements

warnings.simplefilter("ignore")

X, _ = load_iris(return_X_y=True)
X = StandardScaler().fit_transform(X[::2])
y = np.sin(2 * X[:, 0]) + X[:, 1]
reg = ConvexBNRegressor(beta=1e-2, n_arrangements=20, random_state=0, solver="torch", warm_start=True).fit(
    X, y
)
reg.set_params(beta=1.1e-2).fit(X, y)
cold = ConvexBNRegressor(beta=1.1e-2, n_arrangements=20, random_state=0, solver="torch").fit(X, y)
print(
    f"refit at beta=1.1e-2: warm {reg.n_iter_} iterations, objective {reg.objective_:.10g}; "
    f"cold {cold.n_iter_} iterations, objective {cold.objective_:.10g}"
)

rng = np.random.default_rng(0)
X = rng.standard_normal((60, 4))
y = np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2]
basis = bn_basis(X)
for sol in regularization_path(basis, sample_arrangements(basis, 20, random_state=0), y, [0.3, 1.0, 3.0]):
    print(
        f"path beta={sol.problem.beta:g}: {sol.n_iter} iterations, {sol.n_neurons} neurons, "
        f"objective {sol.objective:.10g}, violation {sol.constraint_violation:.1e}"
    )
