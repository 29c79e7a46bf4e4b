"""The comparison harness, its figures, and the compare_sgd example in smoke mode."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.preprocessing import StandardScaler

from convexbn.compare import compare_with_sgd, evaluate_predictions
from convexbn.compare_experiments import batch_size_experiment, sorted_batches_experiment

ROOT = Path(__file__).resolve().parents[1]


def _data():
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    y = np.where(y == 0, 1.0, -1.0)
    return X[:120], y[:120], X[120:200], y[120:200]


def test_compare_with_sgd_record(tmp_path):
    X, y, X_te, y_te = _data()
    record = compare_with_sgd(
        X, y, beta=1.0, X_test=X_te, y_test=y_te, loss="logistic", n_arrangements=30, epochs=20,
        batch_size=16, landscape_every=10, variants=("bn-adam", "fn-sgd", "bnp-sgd"),
    )  # fmt: skip
    convex = record["convex"]
    # the recovered network's plain forward pass reproduces the solver's objective
    assert convex["forward_objective"] == pytest.approx(convex["objective"], rel=1e-6)
    assert convex["curve"][-1]["objective"] == convex["objective"]
    assert len(convex["curve"]) > 1 and convex["landscape"]
    assert 0.5 < convex["test"]["accuracy"] <= 1.0
    grown = record["convex_with_sgd_patterns"]
    assert grown["forward_objective"] == pytest.approx(grown["objective"], rel=1e-6)
    for name in ("bn-adam", "fn-sgd"):
        run = record["variants"][name]
        assert run["n_neurons"] == max(1, convex["n_neurons"])
        assert run["objective"] < run["curve"][0]["objective"]
        # every trained BN network is feasible for the grown program: its optimum is below them all
        assert grown["objective"] <= run["objective"] * (1 + 1e-6)
        assert len(run["lr_tuning"]) == 4 and run["lr"] in [float(k) for k in run["lr_tuning"]]
        assert run["landscape"] and all(p["beta_smoothness"] >= 0 for p in run["landscape"])
    assert grown["objective"] <= convex["objective"] * (1 + 1e-6)
    assert not record["variants"]["bnp-sgd"]["comparable_to_convex"]
    json.dumps(record, default=float)  # JSON-ready

    from convexbn.plotting import plot_comparison

    paths = plot_comparison(record, tmp_path)
    assert [p.name for p in paths] == ["objective_vs_time.png", "test_metric.png", "landscape.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_compare_errors_and_metrics():
    X, y, _, _ = _data()
    with pytest.raises(ValueError, match="unknown variants"):
        compare_with_sgd(X, y, beta=1.0, variants=("bn-lbfgs",))
    assert evaluate_predictions(np.array([1.0, -2.0, 3.0]), [1, 1, 1], "logistic") == {"accuracy": 2 / 3}
    # the empty network's outputs are 0: the class -1, as ConvexBNClassifier.predict (not neither class)
    assert evaluate_predictions(np.zeros(4), [-1, -1, 1, -1], "logistic") == {"accuracy": 0.75}
    assert evaluate_predictions(np.zeros(4), [-1, 1, 1, 1], "hinge") == {"accuracy": 0.25}
    metrics = evaluate_predictions(np.array([1.0, 2.0, 3.0]), [1.0, 2.0, 4.0], "squared")
    assert metrics["mse"] == pytest.approx(1 / 3)
    assert metrics["r2"] == pytest.approx(1 - (1 / 3) / np.var([1.0, 2.0, 4.0]))


def test_batch_size_and_sorted_experiments_small():
    X, y, _, _ = _data()
    record = batch_size_experiment(
        X, y, beta=1.0, loss="logistic", batch_sizes=(1, 8), epochs=1, lrs=[1e-6, 3e-6, 1e-5]
    )
    assert "error" in record["runs"][1]["bn"] and "2 samples" in record["runs"][1]["bn"]["error"]
    assert record["runs"][1]["bnp"]["objective"] < 0.9 * record["runs"][1]["bnp"]["initial"]
    assert record["runs"][8]["bn"]["objective"] < record["initial_bn_objective"]
    sorted_record = sorted_batches_experiment(X, y, beta=1.0, loss="logistic", epochs=2, seeds=(0,))
    assert set(sorted_record["runs"]) == {"batch", "full"}
    assert all(np.isfinite(v["median"]) for r in sorted_record["runs"].values() for v in r.values())


def test_compare_sgd_example_smoke(tmp_path):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import compare_sgd
    finally:
        sys.path.pop(0)
    records = compare_sgd.main(["--smoke", "--out", str(tmp_path)])
    assert set(records) == {"compare", "sorted", "batch_size"}
    for name in ("compare.json", "sorted_batches.json", "batch_sizes.json", "objective_vs_time.png",
                 "sorted_batches.png", "batch_sizes.png"):  # fmt: skip
        assert (tmp_path / name).stat().st_size > 100
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert saved["convex"]["objective"] == pytest.approx(records["compare"]["convex"]["objective"])


def test_format_report_aligns_keys_and_rounds_floats():
    from convexbn.compare import format_report

    text = format_report({"a": 1.23456789012345, "longer key": True, "n": 3}, precision=4)
    assert text.splitlines() == ["a           1.235", "longer key  True", "n           3"]
