"""Cross-validated model selection with ConvexBNClassifier, next to scikit-learn baselines and an
SGD-trained BN network of the same width.

    python examples/model_selection.py [--datasets wine breast_cancer digits] [--n-arrangements 20]
                                       [--betas 1e-3 1e-2] [--cv 3] [--loss squared] [--out table.json]

For each bundled dataset: a fixed stratified 75/25 split (seed 0), standardized on the training part.
ConvexBNClassifier's ``beta`` is chosen by ``GridSearchCV`` (``cv`` folds, 2 jobs), refit on the whole
training part; then, on the same split:

- ``MLPClassifier`` with one hidden layer of the same width as the convex network (``n_neurons_``);
- ``LogisticRegression``;
- the same BN network (same width, ``beta``, loss and targets) trained on objective (3) by full-batch Adam
  from a random start (``convexbn.training.train_bn_network``): its final training objective is printed
  next to the convex one, which is the optimum over the *sampled* patterns only;
- with ``--add-adam-patterns``: the convex programs again, on the sample plus the Adam network's own
  patterns (``network_arrangements``), whose optimum is then at most Adam's objective for one output.
  (For several classes Adam's neurons feed every output, the per-output programs' neurons one each: a
  different model class, spec section 8.)

Prints a markdown table of test accuracies (and training objectives, mean scaling).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

from convexbn import (
    ConvexBNClassifier,
    ConvexBNProblem,
    bn_basis,
    concatenate_networks,
    make_arrangements,
    merge_arrangements,
    network_arrangements,
    recover_network,
)
from convexbn.estimators import class_targets
from convexbn.training import train_bn_network

LOADERS = {"wine": load_wine, "breast_cancer": load_breast_cancer, "digits": load_digits}


def _sgd_accuracy(network, X, y_index, C, loss):
    F = network.forward(X)
    if loss != "cross_entropy" and C == 2:
        pred = (F[:, 0] > 0).astype(int)
    else:
        pred = F.argmax(axis=1)
    return float(np.mean(pred == y_index))


def run(name: str, args) -> dict:
    X, y = LOADERS[name](return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    n = len(y_train)

    start = time.perf_counter()
    grid = GridSearchCV(
        ConvexBNClassifier(n_arrangements=args.n_arrangements, loss=args.loss, random_state=0,
                           search_rounds=args.search_rounds),  # fmt: skip
        {"beta": args.betas},
        cv=args.cv,
        n_jobs=2,
    ).fit(X_train, y_train)
    convex_time = time.perf_counter() - start
    clf = grid.best_estimator_
    width = max(clf.n_neurons_, 1)

    mlp = MLPClassifier(hidden_layer_sizes=(width,), max_iter=2000, random_state=0).fit(X_train, y_train)
    logreg = LogisticRegression(max_iter=5000).fit(X_train, y_train)

    classes, y_index = np.unique(y_train, return_inverse=True)
    C = classes.size
    start = time.perf_counter()
    sgd = train_bn_network(
        X_train, class_targets(y_index, C, args.loss), width, clf.beta * n, loss=args.loss,
        optimizer="adam", lr=args.lr, epochs=args.epochs, random_state=0,
    )  # fmt: skip
    sgd_time = time.perf_counter() - start
    test_index = np.searchsorted(classes, y_test)
    seeded = {}
    if args.add_adam_patterns:
        # the same convex programs on the sampled patterns plus the Adam network's own patterns
        basis = bn_basis(X_train)
        arr = merge_arrangements(
            make_arrangements(basis, args.n_arrangements, random_state=np.random.RandomState(0)),
            network_arrangements(basis, sgd.network),
        )
        T = class_targets(y_index, C, args.loss)
        columns = [T] if args.loss == "cross_entropy" else [T[:, c] for c in range(T.shape[1])]
        start = time.perf_counter()
        nets = [
            recover_network(
                ConvexBNProblem(basis, arr, t, beta=clf.beta * n, loss=args.loss).solve("clarabel")
            )
            for t in columns
        ]
        net = concatenate_networks(nets)
        seeded = {
            "seeded_patterns": arr.n_patterns,
            "seeded_objective": net.objective(X_train, class_targets(y_index, C, args.loss)) / n,
            "seeded_acc": _sgd_accuracy(net, X_test, test_index, C, args.loss),
            "seeded_neurons": net.n_neurons,
            "seeded_s": time.perf_counter() - start,
        }
    return {
        "dataset": name,
        "n_train": n,
        "n_features": X.shape[1],
        "classes": int(C),
        "best_beta": clf.beta,
        "width": width,
        "solver": clf.solver_,
        "convex_acc": clf.score(X_test, y_test),
        "convex_objective": clf.objective_,
        "convex_gridsearch_s": convex_time,
        "mlp_acc": mlp.score(X_test, y_test),
        "logreg_acc": logreg.score(X_test, y_test),
        "sgd_bn_acc": _sgd_accuracy(sgd.network, X_test, test_index, C, args.loss),
        "sgd_bn_objective": sgd.objective / n,
        "sgd_bn_best_objective": sgd.best_objective / n,
        "sgd_bn_s": sgd_time,
        **seeded,
    }


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(LOADERS), choices=list(LOADERS))
    parser.add_argument("--n-arrangements", type=int, default=20)
    parser.add_argument("--search-rounds", type=lambda v: v if v == "auto" else int(v), default="auto",
                        help="the estimator's search_rounds (default auto)")  # fmt: skip
    parser.add_argument("--betas", type=float, nargs="+", default=[1e-3, 1e-2])
    parser.add_argument("--cv", type=int, default=3)
    parser.add_argument(
        "--loss", default="squared", choices=["squared", "logistic", "hinge", "cross_entropy"]
    )
    parser.add_argument("--epochs", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument(
        "--add-adam-patterns",
        action="store_true",
        help="also solve the convex programs with the Adam network's patterns added to the sample",
    )
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args(argv)

    rows = []
    for name in args.datasets:
        rows.append(run(name, args))
        print(json.dumps(rows[-1]), flush=True)
    print()
    print(
        "| dataset | n_train | best beta | width | ConvexBN | MLP | LogReg | SGD-BN (Adam) "
        "| convex objective | Adam objective (final / best) | grid search s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['dataset']} | {r['n_train']} | {r['best_beta']:g} | {r['width']} | {r['convex_acc']:.3f} "
            f"| {r['mlp_acc']:.3f} | {r['logreg_acc']:.3f} | {r['sgd_bn_acc']:.3f} "
            f"| {r['convex_objective']:.5f} | {r['sgd_bn_objective']:.5f} / {r['sgd_bn_best_objective']:.5f} "
            f"| {r['convex_gridsearch_s']:.0f} |"
        )
    if any("seeded_objective" in r for r in rows):
        print()
        print(
            "| dataset | patterns (sample + Adam) | convex objective | Adam objective | accuracy | neurons |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        for r in rows:
            print(
                f"| {r['dataset']} | {r['seeded_patterns']} | {r['seeded_objective']:.5f} "
                f"| {r['sgd_bn_objective']:.5f} | {r['seeded_acc']:.3f} | {r['seeded_neurons']} |"
            )
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=1)
    return rows


if __name__ == "__main__":
    main()
