"""ConvexBNClassifier / ConvexBNRegressor: agreement with the problem API, forward-pass objectives,
parallel per-output programs, persistence, warm starts and errors."""

import json
import os
import pickle
import re
import warnings

import joblib
import numpy as np
import pytest
import torch
from sklearn.datasets import load_iris, make_classification
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import convexbn
from convexbn import (
    ConvexBNClassifier,
    ConvexBNProblem,
    ConvexBNRegressor,
    ModelFileError,
    bn_basis,
    make_arrangements,
)
from convexbn.solvers.closed_form import closed_form_objective
from convexbn.training import train_bn_network


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    idx = np.arange(0, 150, 2)
    return StandardScaler().fit_transform(X[idx]), y[idx]


@pytest.fixture(scope="module")
def binary():
    X, y = make_classification(60, 5, n_informative=3, random_state=0)
    return StandardScaler().fit_transform(X), y


def _ovr(y_index, C):
    return np.where(np.arange(C)[None, :] == y_index[:, None], 1.0, -1.0)


def test_binary_matches_problem_api(binary):
    X, y = binary
    clf = ConvexBNClassifier(
        beta=1e-2, arrangements="sample", n_arrangements=30, solver="clarabel", random_state=0
    ).fit(X, y)
    n = len(y)
    basis = bn_basis(X)
    arrangements = make_arrangements(basis, 30, random_state=np.random.RandomState(0))
    problem = ConvexBNProblem(basis, arrangements, 2.0 * y - 1.0, beta=1e-2 * n, loss="logistic")
    solution = problem.solve("clarabel")
    assert clf.solver_ == "clarabel"
    assert clf.objective_ == pytest.approx(solution.objective / n, rel=1e-9)
    # the recovered network's plain forward pass gives the same objective (3), in the mean scaling
    assert clf.network_.objective(X, 2.0 * y - 1.0) / n == pytest.approx(clf.objective_, rel=1e-6)
    assert clf.n_neurons_ == solution.n_neurons == clf.network_.n_neurons
    assert clf.decision_function(X).shape == (n,)
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(X))


@pytest.mark.parametrize("loss", ["logistic", "squared", "hinge", "cross_entropy"])
def test_multiclass_objective_equals_forward_pass(iris, loss):
    X, y = iris
    # (3 search rounds: the equivalence holds after any number of rounds)
    clf = ConvexBNClassifier(beta=1e-3, loss=loss, n_arrangements=20, random_state=1, search_rounds=3)
    clf.fit(X, y)
    n, C = len(y), 3
    Y = {"logistic": _ovr(y, C), "hinge": _ovr(y, C), "squared": np.eye(C)[y], "cross_entropy": np.eye(C)[y]}
    assert clf.network_.objective(X, Y[loss]) / n == pytest.approx(clf.objective_, rel=1e-6)
    assert clf.constraint_violation_ < 1e-6
    assert clf.score(X, y) > 0.9
    assert clf.decision_function(X).shape == (n, C)
    assert hasattr(clf, "predict_proba") == (loss in ("logistic", "cross_entropy"))
    if hasattr(clf, "predict_proba"):
        np.testing.assert_array_equal(
            clf.predict_proba(X).argmax(axis=1), clf.decision_function(X).argmax(axis=1)
        )


def test_string_labels_and_parallel_programs(iris):
    X, y = iris
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    # per-output programs: the ones n_jobs runs in parallel
    options = {"n_arrangements": 20, "random_state": 0, "neurons": "per_output"}
    serial = ConvexBNClassifier(**options).fit(X, names)
    parallel = ConvexBNClassifier(**options, n_jobs=2).fit(X, names)
    np.testing.assert_array_equal(serial.classes_, ["setosa", "versicolor", "virginica"])
    np.testing.assert_array_equal(serial.predict(X), parallel.predict(X))
    np.testing.assert_allclose(serial.decision_function(X), parallel.decision_function(X), rtol=1e-12)
    assert serial.objective_ == parallel.objective_


def test_auto_picks_closed_form_and_agrees_with_clarabel():
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((12, 20)), rng.standard_normal(12)  # rank + 1 == n: closed form applies
    auto = ConvexBNRegressor(beta=0.01, n_arrangements=50, random_state=0).fit(X, y)
    conic = ConvexBNRegressor(beta=0.01, n_arrangements=50, random_state=0, solver="clarabel").fit(X, y)
    assert auto.solver_ == "closed_form" and conic.solver_ == "clarabel"
    # the closed form is the optimum over all patterns: the spec's value, below the sampled program's
    assert auto.objective_ * 12 == pytest.approx(closed_form_objective(y[:, None], 0.01 * 12), rel=1e-12)
    assert auto.objective_ <= conic.objective_ + 1e-9
    assert auto.network_.objective(X, y) / 12 == pytest.approx(auto.objective_, rel=1e-9)
    assert auto.n_iter_ == 1


def test_regressor_multioutput_and_torch_agree(iris):
    X, _ = iris
    Y = np.column_stack([np.sin(X[:, 0]), X[:, 1] * X[:, 2]])
    same = {"beta": 1e-2, "arrangements": "sample", "n_arrangements": 20, "random_state": 0,
            "neurons": "per_output"}  # fmt: skip
    conic = ConvexBNRegressor(solver="clarabel", **same).fit(X, Y)
    fo = ConvexBNRegressor(solver="torch", tol=1e-8, **same).fit(X, Y)
    assert conic.predict(X).shape == Y.shape
    assert fo.objective_ == pytest.approx(conic.objective_, rel=1e-5)
    assert conic.network_.objective(X, Y) / len(Y) == pytest.approx(conic.objective_, rel=1e-6)
    one = ConvexBNRegressor(solver="clarabel", **same).fit(X, Y[:, 0])
    assert one.predict(X).shape == (len(Y),)
    # the two-output fit is the two one-output programs side by side
    np.testing.assert_allclose(conic.predict(X)[:, 0], one.predict(X), rtol=1e-6, atol=1e-8)


def test_pipeline_and_grid_search(binary):
    X, y = binary
    pipe = make_pipeline(StandardScaler(), ConvexBNClassifier(n_arrangements=20, random_state=0))
    score = pipe.fit(X, y).score(X, y)
    alone = ConvexBNClassifier(n_arrangements=20, random_state=0).fit(StandardScaler().fit_transform(X), y)
    assert pipe[-1].objective_ == pytest.approx(alone.objective_, rel=1e-9)
    # the two-layer BN network fits what a linear model cannot (logistic regression: 0.67 here)
    assert score >= LogisticRegression().fit(X, y).score(X, y) + 0.15
    grid = GridSearchCV(
        ConvexBNClassifier(n_arrangements=20, random_state=0), {"beta": [1e-3, 1e-2, 1e-1]}, cv=3, n_jobs=2
    ).fit(X, y)
    assert grid.best_params_["beta"] in (1e-3, 1e-2, 1e-1)
    assert len(grid.cv_results_["mean_test_score"]) == 3


def test_torch_export_matches_predictions(iris):
    X, y = iris
    clf = ConvexBNClassifier(n_arrangements=20, random_state=0, search_rounds=3).fit(X, y)
    model = clf.network_.to_torch()
    with torch.no_grad():
        out = model(torch.as_tensor(X)).numpy()
    np.testing.assert_allclose(out, clf.decision_function(X), rtol=1e-8, atol=1e-10)


def test_pickle_and_joblib_round_trip(iris, tmp_path):
    X, y = iris
    clf = ConvexBNClassifier(n_arrangements=20, random_state=0, search_rounds=3).fit(X, y)
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
    joblib.dump(clf, tmp_path / "m.joblib")
    np.testing.assert_array_equal(
        joblib.load(tmp_path / "m.joblib").decision_function(X), clf.decision_function(X)
    )


def test_save_load_bit_for_bit(iris, tmp_path):
    pd = pytest.importorskip("pandas")
    X, y = iris
    frame = pd.DataFrame(X, columns=["sl", "sw", "pl", "pw"])
    labels = np.array(["a", "b", "c"], dtype=object)[y]
    clf = ConvexBNClassifier(loss="cross_entropy", n_arrangements=20, random_state=0, search_rounds=3)
    clf.fit(frame, labels)
    path = tmp_path / "model.npz"
    clf.save(path)
    loaded = ConvexBNClassifier.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(frame), clf.predict_proba(frame))
    np.testing.assert_array_equal(loaded.predict(frame), clf.predict(frame))
    assert loaded.predict(frame).dtype == object
    np.testing.assert_array_equal(loaded.feature_names_in_, clf.feature_names_in_)
    assert loaded.get_params() == clf.get_params()
    for attr in ("n_neurons_", "objective_", "solver_", "n_iter_", "n_features_in_"):
        assert getattr(loaded, attr) == getattr(clf, attr)

    reg = ConvexBNRegressor(n_arrangements=20, random_state=0).fit(X, X[:, 0] ** 2)
    reg.save(tmp_path / "reg")  # the .npz suffix is added
    np.testing.assert_array_equal(ConvexBNRegressor.load(tmp_path / "reg.npz").predict(X), reg.predict(X))
    with pytest.raises(ModelFileError, match="holds a ConvexBNRegressor, not a ConvexBNClassifier"):
        ConvexBNClassifier.load(tmp_path / "reg.npz")


def test_load_refuses_bad_files(iris, tmp_path, monkeypatch):
    X, y = iris
    clf = ConvexBNClassifier(n_arrangements=20, random_state=0, search_rounds=3).fit(X, y)
    path = tmp_path / "model.npz"
    clf.save(path)
    raw = path.read_bytes()

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelFileError, match="corrupt or truncated"):
        ConvexBNClassifier.load(truncated)

    # a flipped byte inside the stored weights: the zip CRC catches it
    with np.load(path) as data:
        contents = {name: data[name] for name in data.files}
    weights = contents["weights"]
    pos = raw.find(weights.tobytes())
    assert pos > 0
    flipped = tmp_path / "flipped.npz"
    flipped.write_bytes(raw[:pos] + bytes([raw[pos] ^ 1]) + raw[pos + 1 :])
    with pytest.raises(ModelFileError, match="corrupt or truncated"):
        ConvexBNClassifier.load(flipped)
    # a consistent archive whose weights were changed after saving: our own checksum catches it
    contents["weights"] = weights + 1e-12
    rewritten = tmp_path / "rewritten.npz"
    np.savez(rewritten, **contents)
    with pytest.raises(ModelFileError, match="checksum mismatch in array 'weights'"):
        ConvexBNClassifier.load(rewritten)

    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    with pytest.raises(ModelFileError, match="not a convexbn model file"):
        ConvexBNClassifier.load(other)
    with pytest.raises(FileNotFoundError):
        ConvexBNClassifier.load(tmp_path / "missing.npz")

    written = re.escape(f"written by convexbn {convexbn.__version__}, this is convexbn 99.0.0")
    monkeypatch.setattr(convexbn._version, "__version__", "99.0.0")  # the one place the version lives
    with pytest.raises(ModelFileError, match=written):
        ConvexBNClassifier.load(path)
    loaded = ConvexBNClassifier.load(path, check_version=False)
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))


def test_convergence_warning_and_warm_start(iris):
    X, _ = iris
    y = np.sin(2 * X[:, 0]) + X[:, 1]
    with pytest.warns(ConvergenceWarning, match="increase max_iter"):
        ConvexBNRegressor(n_arrangements=20, random_state=0, solver="torch", max_iter=5).fit(X, y)

    # warm starts on a fixed pattern set (a search grows its own from the previous fit's: test_fit.py)
    same = {"arrangements": "sample", "n_arrangements": 20, "random_state": 0, "solver": "torch"}
    reg = ConvexBNRegressor(beta=1e-2, warm_start=True, **same)
    reg.fit(X, y)
    reg.set_params(beta=1.1e-2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        reg.fit(X, y)
    warm_iters, warm_obj = reg.n_iter_, reg.objective_
    cold = ConvexBNRegressor(beta=1.1e-2, **same).fit(X, y)
    assert warm_obj == pytest.approx(cold.objective_, rel=1e-5)
    assert warm_iters < cold.n_iter_


def test_float32_matches_float64(iris):
    X, _ = iris
    y = np.sin(2 * X[:, 0]) + X[:, 1]
    # the same sampled patterns: one program, solved in both dtypes (a pattern search's path, and so the
    # patterns it ends with, depends on every solve's rounding)
    options = {"beta": 1e-2, "arrangements": "sample", "n_arrangements": 40, "random_state": 0,
               "solver": "torch"}  # fmt: skip
    f64 = ConvexBNRegressor(**options).fit(X, y)
    f32 = ConvexBNRegressor(**options, dtype="float32").fit(X, y)
    assert f32.n_arrangements_ == f64.n_arrangements_
    assert f32.objective_ == pytest.approx(f64.objective_, rel=1e-5)


def test_sgd_trained_network_is_not_below_the_convex_optimum():
    # every activation pattern enumerated: the convex optimum is the global optimum of (3)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((8, 2))
    y = np.sin(3 * X[:, 0]) + X[:, 1]
    reg = ConvexBNRegressor(beta=0.1 / 8, n_arrangements=100, solver="clarabel").fit(X, y)
    # Cover's count for n=8 points in k=3 dimensions, less the all-zero pattern
    assert reg.n_arrangements_ == 2 * (1 + 7 + 21) - 1
    p_star = reg.objective_ * 8
    best = min(
        train_bn_network(X, y, max(reg.n_neurons_, 4), 0.1, epochs=1500, random_state=s).best_objective
        for s in range(5)
    )
    assert best >= p_star - 1e-8
    assert best <= p_star * 1.01


def test_errors(binary):
    X, y = binary
    with pytest.raises(ValueError, match="at least 2 classes"):
        ConvexBNClassifier().fit(X, np.zeros(len(y)))
    with pytest.raises(ValueError, match="Unknown label type"):
        ConvexBNClassifier().fit(X, np.linspace(0, 1, len(y)))
    with pytest.raises(ValueError, match="beta must be > 0"):
        ConvexBNClassifier(beta=0).fit(X, y)
    with pytest.raises(ValueError, match="unknown solver 'ecos'"):
        ConvexBNClassifier(solver="ecos").fit(X, y)
    with pytest.raises(ValueError, match="unknown loss 'logistic'"):
        ConvexBNRegressor(loss="logistic").fit(X, y)
    with pytest.raises(ValueError, match="unknown dtype 'float16'"):
        ConvexBNRegressor(dtype="float16").fit(X, y)
    with pytest.raises(ValueError, match="NaN"):
        ConvexBNClassifier().fit(np.where(X > 2, np.nan, X), y)
    with pytest.raises(ValueError, match="no variance"):
        ConvexBNClassifier().fit(np.ones_like(X), y)
    with pytest.raises(NotFittedError):
        ConvexBNClassifier().predict(X)
    clf = ConvexBNClassifier(n_arrangements=10, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="X has 4 features, but ConvexBNClassifier is expecting 5"):
        clf.predict(X[:, :4])
    assert not os.path.exists("model.npz")


def test_model_file_from_0_1_0_loads_or_names_its_version(iris, tmp_path):
    # a file as convexbn 0.1.0 wrote it: no arrangements / search_rounds / time_limit parameters, none of
    # the bound attributes, and its version in the metadata
    X, y = iris
    clf = ConvexBNClassifier(beta=1e-3, arrangements="sample", n_arrangements=20, random_state=0).fit(X, y)
    path = tmp_path / "new.npz"
    clf.save(path)
    with np.load(path) as data:
        contents = {name: data[name] for name in data.files}
    meta = json.loads(contents.pop("metadata").tobytes().decode())
    meta["convexbn_version"] = "0.1.0"
    for name in ("arrangements", "search_rounds", "time_limit"):
        del meta["params"][name]
    for name in ("beta_", "lower_bound_", "gap_", "estimated_gap_", "certified_", "dual_ratio_",
                 "arrangements_method_", "history_"):  # fmt: skip
        del meta["fitted"][name]
    old = tmp_path / "old.npz"
    np.savez(old, metadata=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **contents)
    message = re.escape(f"written by convexbn 0.1.0, this is convexbn {convexbn.__version__}; pass "
                        "check_version=False")  # fmt: skip
    with pytest.raises(ModelFileError, match=message):
        ConvexBNClassifier.load(old)
    loaded = ConvexBNClassifier.load(old, check_version=False)
    np.testing.assert_array_equal(loaded.decision_function(X), clf.decision_function(X))
    assert loaded.objective_ == clf.objective_ and not hasattr(loaded, "lower_bound_")
    # the parameters it lacks take today's defaults, so a refit uses the pattern search
    assert loaded.get_params()["arrangements"] == "auto" and loaded.beta == 1e-3
    # and a file of this version round-trips the new attributes exactly
    again = ConvexBNClassifier.load(path)
    for name in ("beta_", "lower_bound_", "gap_", "estimated_gap_", "certified_", "dual_ratio_",
                 "arrangements_method_", "history_"):  # fmt: skip
        assert getattr(again, name) == getattr(clf, name)
