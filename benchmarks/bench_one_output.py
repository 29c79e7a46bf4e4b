"""One output column: the per-output pattern search against the shared program with ``C = 1`` (issue 30).

    python benchmarks/bench_one_output.py [--cases cancer diabetes reg20 pca50_binary] [--out FILE.json]

With one output column, the shared-neuron program (8a) is program (4) over every pattern (docs/math.md
section 8), so both routes of :func:`convexbn.fit.fit_convex_bn` fit the same network class and their
objectives compare directly. Each case: ``neurons="per_output"`` with ``beta="auto"`` (the route of
one output before), then ``neurons="shared"`` at the same ``beta`` (the route ``"auto"`` takes now), both
with ``random_state=0`` and the defaults otherwise, one after the other in one process. Reported: seconds,
objective (summed loss), estimated gap, neurons, which inner program the shared search used.

Cases: ``cancer`` (scikit-learn's breast cancer, standardized, logistic; n = 569, k = 31), ``diabetes``
(standardized, squared; n = 442, k = 11), ``reg20`` (``bench_torch_vs_cvxpy``'s data, n = 1000, d = 20,
squared), ``pca50_binary`` (``bench_wide_inputs``'s 4,000 images, digit >= 5, PCA(50), logistic).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from convexbn.fit import fit_convex_bn

CASES = ("cancer", "diabetes", "reg20", "pca50_binary")


def load(case: str):
    """``(X, y, loss)`` of a case (module docstring)."""
    from sklearn.preprocessing import StandardScaler

    if case == "cancer":
        from sklearn.datasets import load_breast_cancer

        X, y = load_breast_cancer(return_X_y=True)
        return StandardScaler().fit_transform(X), 2.0 * y - 1, "logistic"
    if case == "diabetes":
        from sklearn.datasets import load_diabetes

        X, y = load_diabetes(return_X_y=True)
        return StandardScaler().fit_transform(X), (y - y.mean()) / y.std(), "squared"
    if case == "reg20":
        from bench_torch_vs_cvxpy import make_data

        X, y = make_data(1000, 20)
        return X, y, "squared"
    if case == "pca50_binary":
        from bench_wide_inputs import split
        from sklearn.decomposition import PCA

        X, y, _, _ = split(task="binary")
        return PCA(50, random_state=0).fit_transform(X), 2.0 * y - 1, "logistic"
    raise ValueError(f"unknown case {case!r}; one of {CASES}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    rows = []
    for case in args.cases:
        X, y, loss = load(case)
        beta = "auto"
        for neurons in ("per_output", "shared"):
            start = time.perf_counter()
            fit = fit_convex_bn(X, [y], beta, loss=loss, random_state=0, neurons=neurons)
            seconds = time.perf_counter() - start
            beta = fit.beta
            row = {"case": case, "n": X.shape[0], "k": fit.basis.dim, "loss": loss, "neurons": neurons,
                   "beta": fit.beta, "seconds": seconds, "objective": fit.objective,
                   "estimated_gap": fit.estimated_gap, "n_neurons": int(fit.network.n_neurons),
                   "shared_inner": fit.info.get("shared_inner")}  # fmt: skip
            rows.append(row)
            print(f"{case:13s} {neurons:10s} {seconds:7.1f} s  objective {fit.objective:12.6f}  "
                  f"estimated gap {fit.estimated_gap:.2e}  neurons {row['n_neurons']:4d}  "
                  f"{row['shared_inner'] or ''}",
                  flush=True)  # fmt: skip
        per, shared = rows[-2], rows[-1]
        print(f"{case:13s} shared / per-output: objective {shared['objective'] / per['objective']:.4f}, "
              f"time {shared['seconds'] / per['seconds']:.2f}", flush=True)  # fmt: skip
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"rows": rows, "cases": args.cases, "numpy": np.__version__}, handle, indent=1)


if __name__ == "__main__":
    main()
