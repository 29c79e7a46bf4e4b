"""The unit-neuron search with and without the merge of near-copies (``SearchOptions(merge_min_cos=)``).

    python benchmarks/bench_merge.py [--out FILE.json]

The estimators' default route (``neurons="auto"``: the shared program, unit neurons), at several summed
betas, each fitted twice, one after the other, with the same seed: ``merge_min_cos=None`` (no merge) and
the default (:data:`convexbn.neuron_merge.MERGE_MIN_COS`). Reported per fit: objective (the
summed loss plus ``beta`` times the penalty, as program (4)), live neurons, seconds and the estimated gap
(``(objective - estimated_lower_bound) / objective``). Cases:

* breast cancer, logistic loss, split and standardized as ``convexbn path`` does (75% of 569 samples, seed
  0), at the betas of ``convexbn path``'s default path (fractions 0.95 ... 1e-3 of the critical beta);
* the wide synthetic regression of ``tests/test_unit_neurons.py`` (n = 220, d = 140, squared loss);
* ``bench_torch_vs_cvxpy``'s data (n = 1000, d = 20, squared loss);
* scikit-learn's digits (10 classes), iris and wine (3), 75% of the samples (seed 0), logistic loss
  one-vs-rest (the classifier's default: an output column per class), at the estimator's ``beta="auto"``
  and a tenth of it. Digits has ``n k`` above 10,000 (unit neurons); iris and wine are small data, whose
  search runs on atoms (merged after its last round).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from bench_torch_vs_cvxpy import make_data
from sklearn.model_selection import train_test_split

from convexbn import bn_basis
from convexbn.data import encode_task, load_dataset, split_and_standardize
from convexbn.fit import AUTO_BETA_FRACTION, SearchOptions, estimate_critical_beta, fit_convex_bn
from convexbn.fit_shared import estimate_shared_critical_beta


def cases():
    dataset = load_dataset("breast_cancer")
    loss, y, _ = encode_task(dataset, "auto")
    X, _, y, _ = split_and_standardize(dataset.X, y, test_size=0.25, random_state=0, scale_target=False)
    critical = estimate_critical_beta(bn_basis(X), y, loss, random_state=0)
    yield "breast_cancer", X, [y], loss, critical * np.geomspace(0.95, 1e-3, 8)[1:]
    rng = np.random.default_rng(2)
    X = rng.standard_normal((220, 140))
    yield "wide_220x140", X, [X[:, 0] - 2 * np.maximum(X[:, 1], 0) + 0.1 * rng.standard_normal(220)], \
        "squared", [20.0, 10.0, 3.0, 1.0]  # fmt: skip
    X, y = make_data(1000, 20)
    yield "regression_1000x20", X, [y], "squared", [5.0, 1.0, 0.3]
    for name in ("digits", "iris", "wine"):
        dataset = load_dataset(name)
        X, _, labels, _ = train_test_split(dataset.X, dataset.y, test_size=0.25, random_state=0)
        X = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1.0)
        classes = np.unique(labels)
        Y = np.where(labels[:, None] == classes[None, :], 1.0, -1.0)
        auto = AUTO_BETA_FRACTION * estimate_shared_critical_beta(bn_basis(X), Y, "logistic", random_state=0)
        yield f"{name}_{classes.size}", X, list(Y.T), "logistic", [auto, auto / 10]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    rows = []
    for name, X, targets, loss, betas in cases():
        for beta in betas:
            row = {"case": name, "n": X.shape[0], "d": X.shape[1], "loss": loss, "beta": float(beta)}
            for label, cos in (("no_merge", None), ("merge", SearchOptions().merge_min_cos)):
                start = time.perf_counter()
                fit = fit_convex_bn(X, targets, float(beta), loss=loss, random_state=0,
                                    search=SearchOptions(merge_min_cos=cos))  # fmt: skip
                seconds = time.perf_counter() - start
                gap = (fit.objective - fit.estimated_lower_bound) / fit.objective
                row[label] = {"objective": fit.objective, "neurons": fit.network.n_neurons,
                              "seconds": seconds, "estimated_gap": gap,
                              "route": fit.info.get("shared_inner", "per_output")}  # fmt: skip
            rows.append(row)
            a, b = row["no_merge"], row["merge"]
            print(f"{name:20s} beta {beta:9.4g}  no merge {a['objective']:.6f} {a['neurons']:4d} neurons "
                  f"{a['seconds']:6.1f} s gap {a['estimated_gap']:.1e}   merge {b['objective']:.6f} "
                  f"{b['neurons']:4d} neurons {b['seconds']:6.1f} s gap {b['estimated_gap']:.1e}  "
                  f"({b['route']})", flush=True)  # fmt: skip
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
