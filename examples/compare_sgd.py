"""Compare the convex global optimum with SGD/Adam-trained BN networks and the BN variants.

    python examples/compare_sgd.py --dataset breast_cancer --beta 1.0 --out results/compare
    python examples/compare_sgd.py --smoke            # seconds; what CI runs

Writes ``compare.json`` (:func:`convexbn.compare.compare_with_sgd`), ``sorted_batches.json`` (BN vs Full
Normalization with class-sorted batches), ``batch_sizes.json`` (BN preconditioning vs BN at batch sizes
1, 2, 8, 128) and their figures, and prints a table. Every objective is (3) on the full training set with
the same ``beta`` (summed loss) and loss; the networks have as many neurons as the convex solution.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from sklearn import datasets
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from convexbn.compare import compare_with_sgd, format_comparison_table
from convexbn.compare_experiments import batch_size_experiment, sorted_batches_experiment
from convexbn.plotting import plot_batch_sizes, plot_comparison, plot_sorted_batches

LOADERS = {
    "breast_cancer": (datasets.load_breast_cancer, "logistic"),
    "iris": (datasets.load_iris, "logistic"),
    "wine": (datasets.load_wine, "logistic"),
    "digits": (datasets.load_digits, "logistic"),
    "diabetes": (datasets.load_diabetes, "squared"),
}


def load(name: str, seed: int):
    loader, loss = LOADERS[name]
    X, y = loader(return_X_y=True)
    labels = y.copy()
    if loss == "logistic":  # binary task: class 0 against the rest, as +-1
        y = np.where(y == 0, 1.0, -1.0)
    else:
        y = (y - y.mean()) / y.std()
    X_tr, X_te, y_tr, y_te, l_tr, _ = train_test_split(X, y, labels, test_size=0.25, random_state=seed)
    scaler = StandardScaler().fit(X_tr)
    return scaler.transform(X_tr), scaler.transform(X_te), y_tr, y_te, l_tr, loss


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(type(obj).__name__)


def _clean(obj):
    """Replace non-finite floats with None and make keys strings (valid JSON)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, float | np.floating) and not math.isfinite(float(obj)):
        return None
    return obj


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(LOADERS), default="breast_cancer")
    parser.add_argument("--beta", type=float, default=1.0, help="weight decay of (3), summed loss")
    parser.add_argument("--arrangements", type=int, default=200)
    parser.add_argument("--solver", default="torch")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--sorted-dataset", choices=sorted(LOADERS), default="iris",
                        help="dataset of the class-sorted batches experiment")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--experiments", nargs="+", default=["compare", "sorted", "batch-size"],
                        choices=["compare", "sorted", "batch-size"])  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/compare")
    parser.add_argument("--smoke", action="store_true", help="tiny budgets (CI)")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.arrangements = 5, 20

    X, X_test, y, y_test, labels, loss = load(args.dataset, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = {}
    if "compare" in args.experiments:
        record = compare_with_sgd(
            X, y, beta=args.beta, X_test=X_test, y_test=y_test, loss=loss, n_arrangements=args.arrangements,
            solver=args.solver, epochs=args.epochs, batch_size=args.batch_size,
            landscape_every=max(1, args.epochs // 2) if args.smoke else 20, random_state=args.seed,
            progress=args.progress,
        )  # fmt: skip
        records["compare"] = record
        (out / "compare.json").write_text(json.dumps(_clean(record), indent=1, default=_json_default))
        plot_comparison(record, out)
        print(format_comparison_table(record, args.dataset))
    if "sorted" in args.experiments:
        Xs, _, ys, _, labels, loss_s = load(args.sorted_dataset, args.seed)
        record = sorted_batches_experiment(
            Xs, ys, beta=args.beta, loss=loss_s, labels=labels, epochs=3 if args.smoke else 60,
            seeds=(0,) if args.smoke else (0, 1, 2),
        )  # fmt: skip
        records["sorted"] = record
        (out / "sorted_batches.json").write_text(json.dumps(_clean(record), indent=1, default=_json_default))
        plot_sorted_batches(record, out)
        print(
            f"\n{args.sorted_dataset}: full-data objective (3) after SGD, median over seeds (batches of 10):"
        )
        for norm, orders in record["runs"].items():
            print(f"  {norm:10s} shuffled {orders['shuffle']['median']:10.4g}   sorted by class "
                  f"{orders['sorted']['median']:10.4g}")  # fmt: skip
    if "batch-size" in args.experiments:
        record = batch_size_experiment(
            X, y, beta=args.beta, loss=loss, epochs=1 if args.smoke else 10,
            batch_sizes=(1, 8) if args.smoke else (1, 2, 8, 128),
        )  # fmt: skip
        records["batch_size"] = record
        (out / "batch_sizes.json").write_text(json.dumps(_clean(record), indent=1, default=_json_default))
        plot_batch_sizes(record, out)
        print(f"\nfull-data objective after {record['epochs']} epochs, best of 3 steps (bn: objective (3); "
              "bnp and plain: the plain net's objective):")  # fmt: skip
        for bs, methods in record["runs"].items():
            cells = "  ".join(
                f"{m}={v['objective']:.4g} (init {v['initial']:.4g})" if "objective" in v else f"{m}=n/a"
                for m, v in methods.items()
            )
            print(f"  batch size {bs:4d}: {cells}")
    return records


if __name__ == "__main__":
    main()
