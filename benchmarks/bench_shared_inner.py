"""The shared-neuron search's two inner programs side by side: atoms (FISTA on (8a) with exact cone
projections) against unit neurons (the output lasso and a local slide, no projections; the default).

    python benchmarks/bench_shared_inner.py --n 1000 --pca 20 --loss squared --betas 0.3 3 \
        --out benchmarks/results/speed/shared_inner_pca20_squared.json

The data: ``bench_wide_inputs.py``'s 28 x 28 digit images (10 classes), the first ``--n`` of them,
reduced by ``PCA(--pca)`` (0: the 784 pixels themselves); or, with ``--dataset``, split 0 of one of
``bench_multiclass.py``'s datasets as it prepares them (linnerud: the squared loss on its 3 standardized
targets). Targets one-hot (squared loss) or one-vs-rest +-1 (logistic). ``--betas auto`` is the
estimators' default (5% of the estimated critical value). For each summed ``beta``,
:func:`convexbn.fit.fit_shared` with ``arrangements="search"`` and the estimator's defaults otherwise, once
per ``--inner``, one after the other in this process: seconds,
objective, the estimated relative gap (from the best violation the ascent oracle found), the oracle's
value over ``beta``, neurons and rounds. ``--atoms-max-dim`` skips the atoms' program above that ``k``
(at ``k`` = 785 its first round does not end in 300 s; docs/solvers.md).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings

import numpy as np
from bench_multiclass import DATASETS


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--pca", type=int, default=20, help="PCA components (0: the 784 pixels)")
    parser.add_argument("--loss", choices=["squared", "logistic"], default="squared")
    parser.add_argument("--dataset", default="images", choices=["images", *DATASETS])
    parser.add_argument("--betas", nargs="+", default=["0.3", "3"], help="summed betas, or auto")
    parser.add_argument("--inner", nargs="+", default=["unit_neurons", "atoms"])
    parser.add_argument("--atoms-max-dim", type=int, default=200)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    from bench_wide_inputs import digit_images
    from sklearn.decomposition import PCA

    from convexbn.basis import bn_basis
    from convexbn.fit import fit_shared
    from convexbn.fit_common import SearchOptions

    if args.dataset == "images":
        X, y = digit_images(args.n)
        if args.pca:
            X = PCA(args.pca, random_state=0).fit_transform(X)
    else:
        from bench_multiclass import load, split

        X, _, y, _ = split(args.dataset, *load(args.dataset), 0)
    if args.dataset == "linnerud":
        Y, args.loss = y, "squared"
    else:
        classes = np.unique(y)
        Y = (y[:, None] == classes).astype(float)
        Y = Y if args.loss == "squared" else 2 * Y - 1
    basis = bn_basis(X)
    out = {"machine": platform.processor(), "dataset": args.dataset, "n": basis.n_samples, "pca": args.pca,
           "k": basis.dim, "loss": args.loss, "rows": []}  # fmt: skip
    for beta in [b if b == "auto" else float(b) for b in args.betas]:
        for inner in args.inner:
            if inner == "atoms" and basis.dim > args.atoms_max_dim:
                continue
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit = fit_shared(X, Y, beta, loss=args.loss, arrangements="search", basis=basis,
                                 search=SearchOptions(shared_inner=inner), random_state=0)  # fmt: skip
            row = {
                "beta": fit.beta, "inner": inner, "seconds": time.perf_counter() - start,
                "objective": fit.objective, "estimated_gap": fit.estimated_gap,
                "oracle_over_beta": fit.programs[0].bounds["found_value"] / fit.beta,
                "n_neurons": fit.network.n_neurons, "rounds": len(fit.history),
                "status": fit.programs[0].solution.status,
            }  # fmt: skip
            out["rows"].append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
