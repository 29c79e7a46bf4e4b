"""scikit-learn's own estimator checks (sklearn.utils.estimator_checks), none skipped.

The checked instances differ from the defaults only in ``n_arrangements=20`` and ``search_rounds=1``
(speed: each check fits several times; one round still runs the pattern search) and a fixed
``random_state`` (the checks set one anyway where they need determinism).
"""

from sklearn.utils.estimator_checks import parametrize_with_checks

from convexbn import ConvexBNClassifier, ConvexBNRegressor

ESTIMATORS = [
    ConvexBNClassifier(n_arrangements=20, search_rounds=1, random_state=0),
    ConvexBNClassifier(loss="cross_entropy", n_arrangements=20, search_rounds=1, random_state=0),
    ConvexBNClassifier(loss="squared", n_arrangements=20, search_rounds=1, random_state=0),
    ConvexBNRegressor(n_arrangements=20, search_rounds=1, random_state=0),
]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
