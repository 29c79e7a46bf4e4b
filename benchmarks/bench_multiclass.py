"""Shared-neuron networks for several outputs: the joint program against Adam, per-output programs and MLP.

For each dataset (wine, iris, digits with 10 classes, and linnerud's 3-output regression), on split 0 of 5
(70/30, inputs standardized on the training part, linnerud's targets too):

* the default estimator (``neurons="auto"``: the shared-neuron program, docs/math.md section 8): training
  objective (3) in the spec's summed scaling, wall time, the estimated gap and the certified (universal)
  one, neurons, atoms;
* the per-output programs (``neurons="per_output"``) at the same ``beta``: objective and wall time;
* 5 full-batch Adam runs (:func:`convexbn.training.train_bn_network`, 2000 epochs, lr 1e-2) of the same
  shared network (width of the joint solution, one ``Linear(m, C)`` output layer) on the same objective:
  best objective and one run's wall time;

and over all 5 splits, the test accuracy (R^2 for linnerud) of the default estimator and of
``MLPClassifier`` / ``MLPRegressor`` with the same hidden width: mean and standard error.

    python benchmarks/bench_multiclass.py --out benchmarks/results/multiclass
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits, load_iris, load_linnerud, load_wine
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.preprocessing import StandardScaler

from convexbn import ConvexBNClassifier, ConvexBNRegressor
from convexbn.estimators import class_targets
from convexbn.training import train_bn_network

DATASETS = ("wine", "iris", "digits_10", "linnerud")


def load(name):
    if name == "wine":
        return load_wine(return_X_y=True)
    if name == "iris":
        return load_iris(return_X_y=True)
    if name == "digits_10":
        return load_digits(return_X_y=True)
    if name == "linnerud":
        return load_linnerud(return_X_y=True)
    raise ValueError(f"unknown dataset {name!r}")


def split(name, X, y, seed):
    regression = name == "linnerud"
    Xtr, Xte, ytr, yte = train_test_split(X.astype(np.float64), y, test_size=0.3, random_state=seed,
                                          stratify=None if regression else y)  # fmt: skip
    scaler = StandardScaler().fit(Xtr)
    Xtr, Xte = scaler.transform(Xtr), scaler.transform(Xte)
    varying = Xtr.std(axis=0) > 0  # constant pixels of the digits
    Xtr, Xte = Xtr[:, varying], Xte[:, varying]
    if regression:
        mu, sd = ytr.mean(axis=0), ytr.std(axis=0)
        ytr, yte = (ytr - mu) / sd, (yte - mu) / sd
    return Xtr, Xte, ytr, yte


def estimator(regression, **params):
    return (ConvexBNRegressor if regression else ConvexBNClassifier)(random_state=0, **params)


def timed_fit(est, X, y):
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit(X, y)
    return time.perf_counter() - start, [str(w.message)[:200] for w in caught]


def mlp(regression, width):
    cls = MLPRegressor if regression else MLPClassifier
    return cls(hidden_layer_sizes=(width,), max_iter=2000, random_state=0)


def run_dataset(name, n_splits, n_runs, epochs):
    X, y = load(name)
    regression = name == "linnerud"
    out = {"dataset": name, "n_samples": int(len(y)), "splits": []}
    for seed in range(n_splits):
        Xtr, Xte, ytr, yte = split(name, X, y, seed)
        n = len(ytr)
        est = estimator(regression)
        seconds, caught = timed_fit(est, Xtr, ytr)
        width = max(1, est.n_neurons_)
        ref = mlp(regression, width).fit(Xtr, ytr)
        row = {"seed": seed, "test_convex": float(est.score(Xte, yte)),
               "test_mlp": float(ref.score(Xte, yte)), "width": width, "seconds": seconds}  # fmt: skip
        if seed == 0:
            objective = est.objective_ * n
            per = estimator(regression, beta=est.beta_, neurons="per_output")
            per_seconds, per_caught = timed_fit(per, Xtr, ytr)
            if regression:
                Y, loss = ytr, "squared"
            else:
                Y = class_targets(np.searchsorted(est.classes_, ytr), len(est.classes_), est.loss)
                loss = est.loss
            runs = []
            for s in range(n_runs):
                res = train_bn_network(Xtr, Y, width, est.beta_ * n, loss=loss, epochs=epochs, random_state=s)
                runs.append({"seed": s, "best_objective": res.best_objective, "seconds": res.history[-1][0]})
            best = min(r["best_objective"] for r in runs)
            row.update({
                "n_train": n, "n_features": Xtr.shape[1], "n_outputs": int(est.network_.n_outputs),
                "beta_summed": est.beta_ * n, "neurons": est.neurons_, "objective": objective,
                "lower_bound": est.lower_bound_ * n, "gap": est.gap_, "estimated_gap": est.estimated_gap_,
                "rounds": len(est.history_) - 1, "n_atoms": est.n_arrangements_, "warnings": caught,
                "per_output_objective": per.objective_ * n, "per_output_seconds": per_seconds,
                "per_output_neurons": per.n_neurons_, "per_output_warnings": per_caught,
                "adam_runs": runs, "adam_best": best, "objective_vs_adam": (objective - best) / abs(best),
                "adam_run_seconds": float(np.median([r["seconds"] for r in runs])),
                "per_output_vs_joint": (per.objective_ * n - objective) / abs(objective),
            })  # fmt: skip
            print(f"{name:10s} joint {objective:.6g} ({seconds:.1f} s, {width} neurons, est. gap "
                  f"{est.estimated_gap_:.1e}) per-output {per.objective_ * n:.6g} ({per_seconds:.1f} s) "
                  "adam best "
                  f"{best:.6g} ({row['objective_vs_adam']:+.3%}, run {row['adam_run_seconds']:.1f} s)",
                  flush=True)  # fmt: skip
        print(f"{name:10s} split {seed}: test {row['test_convex']:.3f} vs MLP {row['test_mlp']:.3f} "
              f"({seconds:.1f} s)", flush=True)  # fmt: skip
        out["splits"].append(row)
    for key in ("test_convex", "test_mlp"):
        values = np.array([r[key] for r in out["splits"]])
        out[key + "_mean"] = float(values.mean())
        out[key + "_se"] = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
    return out


def table(rows, meta) -> str:
    lines = [
        f"Shared-neuron networks vs Adam, per-output programs and MLP ({meta['machine']}), from:",
        f"`{meta['command']}`",
        "",
        "Objective (3), summed scaling, split 0; test metric (accuracy, R^2 for linnerud) over "
        f"{meta['splits']} splits, mean +- standard error.",
        "",
        "| dataset | n x d, C | beta | joint objective | time [s] | est. gap | neurons | best of "
        f"{meta['runs']} Adam | vs Adam | Adam run [s] | per-output objective | per-output [s] | "
        "test joint | test MLP |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s0 = r["splits"][0]
        lines.append(
            f"| {r['dataset']} | {s0['n_train']} x {s0['n_features']}, {s0['n_outputs']} | "
            f"{s0['beta_summed']:.4g} | {s0['objective']:.6g} | {s0['seconds']:.1f} | "
            f"{s0['estimated_gap']:.1e} | "
            f"{s0['width']} | {s0['adam_best']:.6g} | {s0['objective_vs_adam']:+.3%} | "
            f"{s0['adam_run_seconds']:.1f} | {s0['per_output_objective']:.6g} "
            f"({s0['per_output_vs_joint']:+.1%}) | {s0['per_output_seconds']:.1f} | "
            f"{r['test_convex_mean']:.3f} +- {r['test_convex_se']:.3f} | "
            f"{r['test_mlp_mean']:.3f} +- {r['test_mlp_se']:.3f} |"
        )  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--runs", type=int, default=5, help="Adam runs")
    parser.add_argument("--epochs", type=int, default=2000)
    parser.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    parser.add_argument("--append", action="store_true", help="add the rows to an existing OUT.json")
    args = parser.parse_args(argv)
    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "command": "python benchmarks/bench_multiclass.py " + " ".join(argv or __import__("sys").argv[1:]),
        "splits": args.splits, "runs": args.runs, "epochs": args.epochs,
    }  # fmt: skip
    # warm up (numba kernels, torch operators) so the timed rows are not a cold first call
    Xw, yw = load_iris(return_X_y=True)
    ConvexBNClassifier(random_state=0, search_rounds=1).fit(StandardScaler().fit_transform(Xw), yw)
    rows = []
    if args.append and args.out and os.path.exists(args.out + ".json"):
        with open(args.out + ".json") as fh:
            saved = json.load(fh)
        rows = [r for r in saved["rows"] if r["dataset"] not in args.datasets]
    for name in args.datasets:
        rows.append(run_dataset(name, args.splits, args.runs, args.epochs))
    rows.sort(key=lambda r: DATASETS.index(r["dataset"]))
    text = table(rows, meta)
    print(text)
    if args.out:
        with open(args.out + ".json", "w") as fh:
            json.dump({"meta": meta, "rows": rows}, fh, indent=1)
        with open(args.out + ".md", "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
