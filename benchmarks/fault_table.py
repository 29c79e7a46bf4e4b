"""Every bad input and fault of the reliability issues, run for real, with what the user sees.

    python benchmarks/fault_table.py [--out benchmarks/results/fault_table.md]

Prints (and writes) markdown tables: the error or warning each bad input gets at ``bn_basis`` / the
estimators; for each numerical corner, the solver status and the gap between the convex objective (4) and
the recovered network's forward objective (3); and the cases of round 2 (issue 32,
``benchmarks/fault_cases.py``): inputs, checkpoints, resource guards, the command line and model metadata,
each counted as clear error / handled / refused valid input / traceback / hang / silent wrong, with a
summary per area. ``--round2-only`` runs the last part alone.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import scipy.sparse
import torch

from convexbn import (
    ConvexBNClassifier,
    ConvexBNProblem,
    ConvexBNRegressor,
    bn_basis,
    recover_network,
    sample_arrangements,
)
from convexbn.solvers import cvxpy_backend


def outcome(fn) -> str:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fn()
        except Exception as exc:  # the point is to show what the user sees
            return f"{type(exc).__name__}: {str(exc).splitlines()[0][:150]}"
    shown = [f"{w.category.__name__}: {str(w.message)[:120]}" for w in caught if "convexbn" in w.filename
             or issubclass(w.category, (UserWarning,))]  # fmt: skip
    return "works" + (f" ({shown[0]})" if shown else "")


def bad_inputs():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 4))
    y = np.sin(X[:, 0])
    c = (X[:, 0] > 0).astype(int)
    nan = X.copy()
    nan[2, 1] = np.nan
    inf = X.copy()
    inf[2, 1] = np.inf

    def reg(**kw):
        return ConvexBNRegressor(n_arrangements=6, random_state=0, **kw)

    def clf(**kw):
        return ConvexBNClassifier(n_arrangements=6, random_state=0, **kw)

    problem = ConvexBNProblem(bn_basis(X), sample_arrangements(bn_basis(X), 6, random_state=0), y, beta=1e-3)
    rows = [
        ("NaN in X", lambda: reg().fit(nan, y)),
        ("inf in X", lambda: reg().fit(inf, y)),
        ("string array X", lambda: reg().fit(X.astype(str), y)),
        ("object array with text", lambda: reg().fit(np.array([["a", 1.0]] * 30, dtype=object), y)),
        ("sparse X (small)", lambda: reg().fit(scipy.sparse.csr_matrix(X), y)),
        ("1-D X", lambda: reg().fit(X[:, 0], y)),
        ("3-D X", lambda: reg().fit(X.reshape(30, 2, 2), y)),
        ("empty X (0 rows)", lambda: reg().fit(np.zeros((0, 4)), y[:0])),
        ("X with 0 columns", lambda: reg().fit(np.zeros((30, 0)), y)),
        ("n = 1", lambda: reg().fit(X[:1], y[:1])),
        ("every column constant", lambda: reg().fit(np.ones((30, 4)), y)),
        ("torch float32 tensor X", lambda: reg().fit(torch.as_tensor(X, dtype=torch.float32), y)),
        ("wrong feature count at predict", lambda: reg().fit(X, y).predict(X[:, :3])),
        ("NaN in y (regressor)", lambda: reg().fit(X, np.r_[np.nan, y[1:]])),
        ("y of the wrong length", lambda: reg().fit(X, y[:-1])),
        ("a single class", lambda: clf().fit(X, np.zeros(30, int))),
        ("float labels in a classifier", lambda: clf().fit(X, y)),
        ("whole-number float labels", lambda: clf().fit(X, c.astype(float))),
        ("mixed str/int labels", lambda: clf().fit(X, np.array(["a"] * 15 + [1] * 15, dtype=object))),
        ("beta = 0", lambda: reg(beta=0.0).fit(X, y)),
        ("beta < 0", lambda: reg(beta=-1.0).fit(X, y)),
        ("beta = NaN", lambda: reg(beta=float("nan")).fit(X, y)),
        ("P = 0", lambda: ConvexBNRegressor(n_arrangements=0).fit(X, y)),
        ("P = 2.5", lambda: ConvexBNRegressor(n_arrangements=2.5).fit(X, y)),
        ("dtype float16", lambda: reg(dtype="float16").fit(X, y)),
        ("device='cuda' without a GPU", lambda: reg(device="cuda").fit(X, y)),
        ("torch dtype float16 (solver)", lambda: problem.solve("torch", dtype=torch.float16)),
        ("unknown solver", lambda: reg(solver="gurobi").fit(X, y)),
        ("cvxpy solver not installed", lambda: problem.solve("cvxpy", cvxpy_solver="GUROBI")),
        ("MOSEK without package/license", lambda: problem.solve("mosek")),
        ("Clarabel stopped by max_iter", lambda: problem.solve("clarabel", max_iter=2)),
        ("torch solver stopped by max_iter", lambda: problem.solve("torch", max_iter=5)),
        ("estimator, torch stopped early", lambda: reg(solver="torch", max_iter=5).fit(X, y)),
        ("huge beta (1e9)", lambda: reg(beta=1e9).fit(X, y)),
    ]
    return [(name, outcome(fn)) for name, fn in rows]


def corners():
    rng = np.random.default_rng(1)
    n, d = 40, 5
    X = rng.standard_normal((n, d))
    y = np.sin(X[:, 0]) + 0.1 * rng.standard_normal(n)
    collinear = X.copy()
    collinear[:, 1] = X[:, 0] + 1e-9 * rng.standard_normal(n)
    constant = X.copy()
    constant[:, 2] = 7.0
    wide = rng.standard_normal((10, 200))
    tall = rng.standard_normal((3000, 2))
    cases = [
        ("nearly collinear (1e-9)", collinear, y, 0.1),
        ("scales 1e-8..1e8", X * np.logspace(-8, 8, d), y, 0.1),
        ("duplicated samples", np.vstack([X, X[:10]]), np.r_[y, y[:10]], 0.1),
        ("d >> n (10 x 200)", wide, rng.standard_normal(10), 0.1),
        ("n >> d (3000 x 2)", tall, np.sin(3 * tall[:, 0]), 0.1),
        ("constant feature", constant, y, 0.1),
        ("huge beta (1e8)", X, y, 1e8),
        ("tiny beta (1e-8)", X, y, 1e-8),
        ("targets of size 1e6", X, 1e6 * y, 0.1),
    ]
    rows = []
    for name, Xc, yc, beta in cases:
        for scale_features in (True, False):
            basis = bn_basis(Xc, scale_features=scale_features)
            problem = ConvexBNProblem(basis, sample_arrangements(basis, 20, random_state=0), yc, beta=beta)
            for solver, opts in (("clarabel", {}), ("torch", {"max_iter": 3000})):
                if not scale_features and solver == "torch":
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    start = time.perf_counter()
                    try:
                        sol = problem.solve(solver, **opts)
                    except Exception as exc:
                        rows.append(
                            (name, scale_features, basis.rank, solver, f"{type(exc).__name__}", "", "", "")
                        )
                        continue
                    elapsed = time.perf_counter() - start
                forward = recover_network(sol).objective(Xc, yc)
                gap = abs(forward - sol.objective) / max(abs(sol.objective), 1e-300)
                rows.append((name, scale_features, basis.rank, solver, sol.status, f"{sol.objective:.10g}",
                             f"{gap:.1e}", f"{elapsed:.2f}"))  # fmt: skip
    return rows


def round2_tables(limit: float) -> list:
    """The summary (cases per area and outcome) and the per-case table of issue 32's cases."""
    from fault_cases import COLUMNS, run_all

    rows = run_all(limit)
    areas = list(dict.fromkeys(area for area, *_ in rows))
    lines = ["| area | cases | " + " | ".join(COLUMNS) + " |", "| --- " * (len(COLUMNS) + 2) + "|"]
    for area in areas + ["all"]:
        got = [column for a, _, column, _ in rows if area in (a, "all")]
        lines.append(f"| {area} | {len(got)} | " + " | ".join(str(got.count(c)) for c in COLUMNS) + " |")
    lines += ["", "| area | case | outcome | what the user sees |", "| --- | --- | --- | --- |"]
    for area, name, column, text in rows:
        cell = " ".join(text.replace("|", "/").split())
        lines.append(f"| {area} | {name.replace('|', '/')} | {column} | {cell} |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="also write the tables to this markdown file")
    parser.add_argument("--round2-only", action="store_true", help="only the cases of issue 32")
    parser.add_argument("--limit", type=float, default=120.0, help="seconds before a case counts as a hang")
    args = parser.parse_args(argv)
    cvxpy_backend.mosek_license.cache_clear()
    lines = []
    if not args.round2_only:
        lines += ["| bad input or fault | what the user sees |", "| --- | --- |"]
        lines += [f"| {name} | {text.replace('|', '/')} |" for name, text in bad_inputs()]
        lines += ["", "| corner | scale_features | rank | solver | status | objective (4) | gap to (3) | s |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |", ""]  # fmt: skip
        lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in corners()]
        lines.append("")
    lines += round2_tables(args.limit)
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
