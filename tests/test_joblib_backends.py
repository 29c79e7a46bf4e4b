"""Many solves on Dask or Ray through joblib: GridSearchCV, cross_val_score and the per-class solves of
the estimators run unchanged on a local Dask cluster and a local Ray instance (worker processes on this
machine) and give what the default (loky) backend gives."""

import warnings

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris, make_classification
from sklearn.model_selection import GridSearchCV, cross_val_score

from convexbn import ConvexBNClassifier, ConvexBNRegressor


def _workload() -> dict:
    """Everything parallel in convexbn's estimators, with n_jobs > 1 so joblib's active backend runs it."""
    X, y = make_classification(60, 5, n_informative=3, random_state=0)
    grid = GridSearchCV(
        ConvexBNClassifier(n_arrangements=10, random_state=0), {"beta": [1e-2, 1e-1, 1.0]}, cv=3, n_jobs=2
    ).fit(X, y)
    Xi, yi = load_iris(return_X_y=True)
    scores = cross_val_score(ConvexBNRegressor(beta=0.1, n_arrangements=10, random_state=0), Xi[:, :3],
                             Xi[:, 3], cv=3, n_jobs=2)  # fmt: skip
    per_class = ConvexBNClassifier(beta=0.1, n_arrangements=10, random_state=0, n_jobs=2,
                                   neurons="per_output").fit(Xi, yi)  # one-vs-rest programs in parallel
    return {
        "best_params": grid.best_params_,
        "mean_test_score": grid.cv_results_["mean_test_score"],
        "best_decision": grid.best_estimator_.decision_function(X),
        "cv_scores": scores,
        "per_class_decision": per_class.decision_function(Xi),
    }


@pytest.fixture(scope="module")
def reference():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _workload()


def _assert_same(result, reference):
    assert result["best_params"] == reference["best_params"]
    np.testing.assert_allclose(result["mean_test_score"], reference["mean_test_score"], rtol=0, atol=0)
    np.testing.assert_allclose(result["cv_scores"], reference["cv_scores"], rtol=1e-10)
    np.testing.assert_allclose(result["best_decision"], reference["best_decision"], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(result["per_class_decision"], reference["per_class_decision"], rtol=1e-8,
                               atol=1e-10)  # fmt: skip


def test_dask_local_cluster_gives_the_default_backends_results(reference):
    import distributed  # the dask extra (in the test extra, so CI never skips this)
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
        as cluster,
        distributed.Client(cluster) as client,
    ):  # fmt: skip
        with distributed.get_task_stream(client) as stream, joblib.parallel_backend("dask"):
            result = _workload()
        known = set(client.scheduler_info()["workers"])
    # the fits ran as Dask tasks on the cluster's worker processes (the stream is filled on exit)
    assert len(stream.data) >= 9 + 3 + 3
    assert {task["worker"] for task in stream.data} <= known and known
    _assert_same(result, reference)


def test_ray_local_instance_gives_the_default_backends_results(reference):
    import ray  # the ray extra (in the test extra)
    from ray.util.joblib import register_ray

    # Ray's `local_mode` is gone (Ray >= 2.5x raises on it): a local instance with worker processes on
    # this machine is what "local" means now
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        register_ray()
        with joblib.parallel_backend("ray"):
            backend, _ = joblib.parallel.get_active_backend()
            result = _workload()
        assert type(backend).__name__ == "RayBackend"
        assert ray.is_initialized()
    finally:
        ray.shutdown()
    _assert_same(result, reference)
