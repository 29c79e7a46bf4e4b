"""The shared-neuron search's output lasso: iterations on ``A^T A`` (squared loss) against on ``A``.

    python benchmarks/bench_output_lasso.py --out benchmarks/results/speed/output_lasso.json

``solve_output_lasso`` (the realignment of every round of the shared-neuron search, docs/math.md section 8)
on the activations ``A = (U' Z^T)_+`` of ``--neurons`` random unit neurons over the basis of the 4,000
PCA(50) digit images of ``bench_wide_inputs.py``, 10 one-hot classes, summed ``beta`` 1. Side by side in
one run, median of ``--repeats``: the squared loss (which declares itself quadratic: the Gram path) and the
same loss without that declaration (the path on ``A``, two products per iteration). Reported: seconds,
objective and relative gap per ``--tol``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from bench_wide_inputs import split
from sklearn.decomposition import PCA

from convexbn import bn_basis
from convexbn.losses import get_loss
from convexbn.solvers.torch.shared_fista import solve_output_lasso


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--neurons", type=int, default=300)
    parser.add_argument("--tol", type=float, nargs="+", default=[1e-3, 1e-5])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    X, y, _, _ = split()
    U = bn_basis(PCA(50, random_state=0).fit_transform(X)).Uprime
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((args.neurons, U.shape[1]))
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    A, Y = np.maximum(U @ Z.T, 0.0), np.eye(10)[y]
    squared = get_loss("squared")

    class OnA(type(squared)):
        quadratic = False

    rows = []
    for tol in args.tol:
        row = {"n": A.shape[0], "neurons": A.shape[1], "tol": tol}
        for label, loss in (("gram", squared), ("on_A", OnA())):
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                V, objective, gap = solve_output_lasso(A, Y, 1.0, loss, tol=tol)
                times.append(time.perf_counter() - start)
            active = int((np.linalg.norm(V, axis=1) > 0).sum())
            row.update({f"{label}_s": float(np.median(times)), f"{label}_objective": objective,
                        f"{label}_gap": gap, f"{label}_active": active})  # fmt: skip
        row["speedup"] = row["on_A_s"] / row["gram_s"]
        print(row, flush=True)
        rows.append(row)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
