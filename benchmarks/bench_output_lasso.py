"""The shared-neuron search's output lasso: iterations on ``A^T A`` (squared loss) against on ``A``; and,
for the logistic loss, the backtracked step against the fixed one.

    python benchmarks/bench_output_lasso.py --out benchmarks/results/speed/output_lasso.json
    python benchmarks/bench_output_lasso.py --loss logistic --pca 0 --neurons 500 --beta 4 --tol 1e-4 \
        --out benchmarks/results/speed/output_lasso_logistic.json

``solve_output_lasso`` (the realignment of every round of the shared-neuron search, docs/math.md section 8)
on the activations ``A = (U' Z^T)_+`` of ``--neurons`` random unit neurons over the basis of the 4,000
PCA(50) digit images of ``bench_wide_inputs.py``, 10 one-hot classes, summed ``beta`` 1. Side by side in
one run, median of ``--repeats``: the squared loss (which declares itself quadratic: the Gram path) and the
same loss without that declaration (the path on ``A``, two products per iteration). Reported: seconds,
objective and relative gap per ``--tol``.

``--loss logistic`` (labels +-1, as the classifiers fit them): the default step (a local estimate from
``LASSO_STEP_START`` of the loss's global bound, shrunk by ``LASSO_STEP_DECAY`` each step, doubled on a
failed test) against the fixed step at the bound (what the lasso did before), side by side. Random
neurons from zero: the loss's curvature there is its bound, so this shows the cold case; the search's
calls are warm-started from confident predictions. ``--pca 0``: the 784 pixels.
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
    parser.add_argument("--loss", choices=["squared", "logistic"], default="squared")
    parser.add_argument("--pca", type=int, default=50, help="PCA components (0: the 784 pixels)")
    parser.add_argument("--beta", type=float, default=1.0, help="summed beta")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    X, y, _, _ = split()
    U = bn_basis(PCA(args.pca, random_state=0).fit_transform(X) if args.pca else X).Uprime
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((args.neurons, U.shape[1]))
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    A, Y = np.maximum(U @ Z.T, 0.0), np.eye(10)[y]
    if args.loss == "logistic":
        rows = [_logistic_steps(A, 2 * Y - 1, args, tol) for tol in args.tol]
        if args.out:
            with open(args.out, "w") as f:
                json.dump(rows, f, indent=1)
        return
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


def _logistic_steps(A, Y, args, tol):
    """The logistic loss: the default (backtracked) step against the fixed one at the global bound."""
    from convexbn.solvers.torch import shared_fista

    logistic = get_loss("logistic")
    row = {"n": A.shape[0], "neurons": A.shape[1], "tol": tol, "beta": args.beta,
           "step_start": shared_fista.LASSO_STEP_START}  # fmt: skip
    default = shared_fista.LASSO_STEP_START, shared_fista.LASSO_STEP_DECAY
    row["step_decay"] = default[1]
    # the fixed step: the estimate starts at the bound and never shrinks, so no step is ever tested
    for label, (start, decay) in (("fixed", (1.0, 1.0)), ("backtracked", default)):
        shared_fista.LASSO_STEP_START, shared_fista.LASSO_STEP_DECAY = start, decay
        times = []
        try:
            for _ in range(args.repeats):
                begin = time.perf_counter()
                V, objective, gap = solve_output_lasso(A, Y, args.beta, logistic, tol=tol)
                times.append(time.perf_counter() - begin)
        finally:
            shared_fista.LASSO_STEP_START, shared_fista.LASSO_STEP_DECAY = default
        active = int((np.linalg.norm(V, axis=1) > 0).sum())
        row.update({f"{label}_s": float(np.median(times)), f"{label}_objective": objective,
                    f"{label}_gap": gap, f"{label}_active": active})  # fmt: skip
    row["speedup"] = row["fixed_s"] / row["backtracked_s"]
    print(row, flush=True)
    return row


if __name__ == "__main__":
    main()
