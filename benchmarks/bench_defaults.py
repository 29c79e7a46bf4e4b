"""The default estimator against Adam and scikit-learn's MLP, on five datasets at two betas.

For each dataset (70/30 split, inputs standardized on the training part; diabetes' target too):

* the default ``ConvexBNClassifier()`` / ``ConvexBNRegressor()`` (pattern search, ``beta="auto"``), and the
  same at a weaker ``beta`` (``--weak-factor`` times smaller): training objective (3) in the spec's summed
  scaling, wall time, the certified (universal) gap and the estimated gap, neurons, patterns;
* 5 full-batch Adam runs (:func:`convexbn.training.train_bn_network`, 2000 epochs, lr 1e-2) of the same BN
  network (the width of the convex solution) on the same objective (3): the best objective, one run's wall
  time, and the time that run took to reach the convex objective (``-`` if it never did);
* test accuracy (R^2 for diabetes) of the convex network and of ``MLPClassifier`` / ``MLPRegressor`` with
  the same hidden width.

Multi-class datasets (wine, iris, digits 10-class) are fitted by the estimator's default for several
classes: since issue 29 one shared-neuron network (one-vs-rest logistic columns, docs/math.md section 8),
the same model class as Adam's network. Rows written before that (the per-output programs) say so in
``neurons``; ``benchmarks/bench_multiclass.py`` compares the two.

The first fit of each process loads numba's compiled kernels and torch's operators (about 1-2 s); the script
runs one small fit first so the timed rows are warm (a cold first call is measured by issue 30).

    python benchmarks/bench_defaults.py --out benchmarks/results/defaults
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris, load_wine
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.preprocessing import StandardScaler

from convexbn import ConvexBNClassifier, ConvexBNRegressor
from convexbn.estimators import class_targets
from convexbn.training import train_bn_network


def datasets(names):
    out = {}
    for name in names:
        if name == "breast_cancer":
            X, y = load_breast_cancer(return_X_y=True)
        elif name == "diabetes":
            X, y = load_diabetes(return_X_y=True)
        elif name == "wine":
            X, y = load_wine(return_X_y=True)
        elif name == "iris":
            X, y = load_iris(return_X_y=True)
        elif name == "digits_4v9":
            X, y = load_digits(return_X_y=True)
            keep = np.isin(y, (4, 9))
            X, y = X[keep], (y[keep] == 9).astype(int)
        elif name == "digits_10":
            X, y = load_digits(return_X_y=True)
        else:
            raise ValueError(f"unknown dataset {name!r}")
        out[name] = (X.astype(np.float64), y)
    return out


def split(name, X, y, seed):
    regression = name == "diabetes"
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=seed,
                                          stratify=None if regression else y)  # fmt: skip
    scaler = StandardScaler().fit(Xtr)
    Xtr, Xte = scaler.transform(Xtr), scaler.transform(Xte)
    # constant pixels of the digits have no variance: drop them (BN cannot use them either)
    varying = Xtr.std(axis=0) > 0
    Xtr, Xte = Xtr[:, varying], Xte[:, varying]
    if regression:
        mu, sd = ytr.mean(), ytr.std()
        ytr, yte = (ytr - mu) / sd, (yte - mu) / sd
    return Xtr, Xte, ytr, yte


def adam_runs(X, Y, width, beta, loss, target, n_runs, epochs):
    runs = []
    for seed in range(n_runs):
        res = train_bn_network(X, Y, width, beta, loss=loss, epochs=epochs, random_state=seed)
        reach = next((t for t, _, obj in res.history if obj <= target), None)
        runs.append({"seed": seed, "best_objective": res.best_objective, "objective": res.objective,
                     "seconds": res.history[-1][0], "seconds_to_convex": reach})  # fmt: skip
    return runs


def row(name, beta_label, est, Xtr, Xte, ytr, yte, n_runs, epochs):
    n = len(ytr)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit(Xtr, ytr)
    seconds = time.perf_counter() - start
    objective = est.objective_ * n
    width = max(1, est.n_neurons_)
    regression = isinstance(est, ConvexBNRegressor)
    if regression:
        Y, loss = ytr, "squared"
    else:
        Y, loss = class_targets(np.searchsorted(est.classes_, ytr), len(est.classes_), est.loss), est.loss
    runs = adam_runs(Xtr, Y, width, est.beta_ * n, loss, objective, n_runs, epochs)
    best = min(r["best_objective"] for r in runs)
    if regression:
        mlp = MLPRegressor(hidden_layer_sizes=(width,), max_iter=2000, random_state=0).fit(Xtr, ytr)
    else:
        mlp = MLPClassifier(hidden_layer_sizes=(width,), max_iter=2000, random_state=0).fit(Xtr, ytr)
    out = {
        "dataset": name,
        "beta": beta_label,
        "beta_summed": est.beta_ * n,
        "n_train": n,
        "n_features": Xtr.shape[1],
        "programs": len(est.fit_.programs),
        "neurons": getattr(est, "neurons_", "per_output"),
        "objective": objective,
        "seconds": seconds,
        "lower_bound": est.lower_bound_ * n,
        "gap": est.gap_,
        "estimated_gap": est.estimated_gap_,
        "dual_ratio": est.dual_ratio_,
        "method": est.arrangements_method_,
        "rounds": len(est.history_) - 1,
        "n_patterns": est.n_arrangements_,
        "n_neurons": est.n_neurons_,
        "adam_runs": runs,
        "adam_best": best,
        "objective_vs_adam": (objective - best) / abs(best),
        "adam_run_seconds": float(np.median([r["seconds"] for r in runs])),
        "adam_seconds_to_convex": runs[0]["seconds_to_convex"],
        "test_convex": est.score(Xte, yte),
        "test_mlp": mlp.score(Xte, yte),
        "warnings": sorted({f"{w.category.__name__}: {str(w.message)[:120]}" for w in caught}),
    }
    print(f"{name:14s} {beta_label:5s} obj {objective:11.5g} ({out['seconds']:6.1f} s)  adam best "
          f"{best:11.5g} ({out['objective_vs_adam']:+.2%}, run {out['adam_run_seconds']:.1f} s)  test "
          f"{out['test_convex']:.3f} / mlp {out['test_mlp']:.3f}", flush=True)  # fmt: skip
    return out


def markdown(rows, meta) -> str:
    order = ["breast_cancer", "diabetes", "wine", "iris", "digits_4v9", "digits_10"]
    rows = sorted(rows, key=lambda r: (order.index(r["dataset"]) if r["dataset"] in order else 99))
    lines = [
        f"Default estimator vs Adam and MLP ({meta['machine']}), from:",
        "",
        *[f"    {c}" for c in meta["commands"]],
        "",
        "| dataset | beta | beta (summed) | objective (3) | time [s] | certified gap | estimated gap | "
        "rounds / P | neurons | best of 5 Adam | vs Adam | Adam run [s] | Adam to convex [s] | "
        "test (convex) | test (MLP) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        reach = "-" if r["adam_seconds_to_convex"] is None else f"{r['adam_seconds_to_convex']:.1f}"
        per_output = f" ({r['programs']} programs)" if r["programs"] > 1 else ""
        if r.get("neurons") == "shared":
            per_output = " (shared neurons)"
        lines.append(
            f"| {r['dataset']}{per_output} | {r['beta']} | {r['beta_summed']:.4g} | {r['objective']:.6g} | "
            f"{r['seconds']:.1f} | {r['gap']:.1%} | {r['estimated_gap']:.2%} | {r['rounds']} / "
            f"{r['n_patterns']} | {r['n_neurons']} | {r['adam_best']:.6g} | {r['objective_vs_adam']:+.3%} | "
            f"{r['adam_run_seconds']:.1f} | {reach} | {r['test_convex']:.3f} | {r['test_mlp']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = ["breast_cancer", "diabetes", "wine", "iris", "digits_4v9", "digits_10"]
    parser.add_argument("--datasets", nargs="+", default=names)
    parser.add_argument("--weak-factor", type=float, default=5.0, help="second beta = auto beta / this")
    parser.add_argument("--runs", type=int, default=5, help="Adam runs per row")
    parser.add_argument("--epochs", type=int, default=2000, help="Adam epochs (full batch)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--search-rounds", type=int, default=None,
                        help="the estimators' search_rounds (default: theirs, 10)")  # fmt: skip
    parser.add_argument("--out", default="benchmarks/results/defaults")
    parser.add_argument("--append", action="store_true",
                        help="keep the rows already in OUT.json (other datasets) and add these")  # fmt: skip
    args = parser.parse_args(argv)

    warm = ConvexBNRegressor(random_state=0)
    rng = np.random.default_rng(0)
    warm.fit(rng.standard_normal((50, 4)), rng.standard_normal(50))  # load the kernels: warm timings

    rows, commands = [], []
    if args.append and os.path.exists(args.out + ".json"):
        with open(args.out + ".json") as handle:
            old = json.load(handle)
        rows = [r for r in old["rows"] if r["dataset"] not in args.datasets]
        commands = old["meta"]["commands"]
    command = "python benchmarks/bench_defaults.py " + " ".join(argv if argv is not None else os.sys.argv[1:])

    def save():
        meta = {
            "commands": commands + [command],
            "machine": f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}",
        }
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out + ".json", "w") as handle:
            json.dump({"meta": meta, "rows": rows}, handle, indent=1)
        with open(args.out + ".md", "w") as handle:
            handle.write(markdown(rows, meta))
        return meta

    for name, (X, y) in datasets(args.datasets).items():
        Xtr, Xte, ytr, yte = split(name, X, y, args.seed)
        cls = ConvexBNRegressor if name == "diabetes" else ConvexBNClassifier
        budget = {} if args.search_rounds is None else {"search_rounds": args.search_rounds}
        default = cls(random_state=args.seed, **budget)
        rows.append(row(name, "auto", default, Xtr, Xte, ytr, yte, args.runs, args.epochs))
        save()
        weak_beta = rows[-1]["beta_summed"] / len(ytr) / args.weak_factor
        weak = cls(beta=weak_beta, random_state=args.seed, **budget)
        rows.append(row(name, f"/{args.weak_factor:g}", weak, Xtr, Xte, ytr, yte, args.runs, args.epochs))
        save()
    print(markdown(rows, save()))


if __name__ == "__main__":
    main()
