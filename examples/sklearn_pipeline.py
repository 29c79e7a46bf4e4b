"""ConvexBNClassifier in a scikit-learn Pipeline, tuned by GridSearchCV, saved and loaded.

    python examples/sklearn_pipeline.py [--n-arrangements 100] [--cv 3]
    python examples/sklearn_pipeline.py --smoke

Breast cancer, a stratified 75/25 split. The pipeline standardizes (for the baselines' sake: the convex
program itself is invariant to feature scales), then fits the globally optimal BN network over the
sampled patterns; ``beta`` (per sample, the mean-loss scaling scikit-learn users expect) is chosen by
cross-validation. The fitted network is saved in the portable format and loaded back, bit for bit.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from convexbn import ConvexBNClassifier
from convexbn.compare import format_report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-arrangements", type=int, default=100)
    parser.add_argument("--betas", type=float, nargs="+", default=[1e-4, 1e-3, 1e-2])
    parser.add_argument("--cv", type=int, default=3)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CI)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.n_arrangements, args.betas, args.cv = 10, [1e-4, 1e-3], 2

    X, y = load_breast_cancer(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    pipeline = make_pipeline(
        StandardScaler(), ConvexBNClassifier(n_arrangements=args.n_arrangements, random_state=0)
    )
    search = GridSearchCV(pipeline, {"convexbnclassifier__beta": args.betas}, cv=args.cv, n_jobs=args.n_jobs)
    search.fit(X_train, y_train)
    clf = search.best_estimator_[-1]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.npz")
        clf.save(path)
        loaded = ConvexBNClassifier.load(path)
    scaled_test = search.best_estimator_[0].transform(X_test)
    report = {
        "best beta": search.best_params_["convexbnclassifier__beta"],
        "cv accuracy": search.best_score_,
        "test accuracy": search.score(X_test, y_test),
        "neurons": clf.n_neurons_,
        "solver": clf.solver_,
        "objective (4)": clf.objective_,
        "equivalence gap (3) vs (4)": clf.equivalence_gap_,
        "loaded model predicts the same": bool(
            np.array_equal(loaded.predict_proba(scaled_test), clf.predict_proba(scaled_test))
        ),
    }
    print(format_report(report, precision=6))
    return report


if __name__ == "__main__":
    main()
