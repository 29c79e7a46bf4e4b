import numpy as np
import pytest

from convexbn import (
    bn_basis,
    enumerate_arrangements,
    make_arrangements,
    max_arrangements,
    sample_arrangements,
)


def test_basis_is_orthonormal_and_reproduces_centered_data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 4)) * [1, 10, 0.1, 3] + 5
    b = bn_basis(X)
    assert b.rank == 4 and b.dim == 5
    Up = b.Uprime
    np.testing.assert_allclose(Up.T @ Up, np.eye(5), atol=1e-12)
    np.testing.assert_allclose(b.U @ np.diag(b.S) @ b.V.T * b.scale, X - X.mean(0), atol=1e-12)
    np.testing.assert_allclose(b.scale, X.std(0), rtol=1e-12)
    # transform of the training data is U' itself (inference uses the training statistics)
    np.testing.assert_allclose(b.transform(X), Up, atol=1e-12)


def test_basis_rank_deficient_and_constant_columns():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((20, 2))
    X = np.column_stack([A, A[:, 0] * 3, np.ones(20), A.sum(1)])
    b = bn_basis(X)
    assert b.rank == 2
    assert b.S_dropped.size == 3 and b.S_dropped.max() < 1e-10 * b.S[0]
    # w = V S^-1 q gives P X w = U q
    q = np.array([[0.6], [0.8]])
    w = b.directions_to_weights(q)
    np.testing.assert_allclose((X - X.mean(0)) @ w, b.U @ q, atol=1e-12)


def test_basis_wide_data_is_overparameterized():
    X = np.random.default_rng(2).standard_normal((7, 20))
    assert bn_basis(X).dim == 7


def test_basis_rank_tol_is_relative():
    X = np.random.default_rng(3).standard_normal((20, 3)) * [1.0, 1.0, 1e-7]
    assert bn_basis(X).rank == 3
    assert bn_basis(X, rank_tol=1e-5, scale_features=False).rank == 2
    # scaled columns: the small feature is a full direction whatever rank_tol
    assert bn_basis(X, rank_tol=1e-5).rank == 3


@pytest.mark.parametrize(
    "X, match",
    [
        (np.ones((5, 3)), "no variance"),
        (np.array([[1.0, np.nan], [2.0, 3.0]]), "NaN"),
        (np.array([[1.0, np.inf], [2.0, 3.0]]), "infinity"),
        (np.array([[1.0, 2.0]]), "minimum of 2"),
        (np.arange(5.0), "X must be 2-D"),
    ],
)
def test_basis_bad_input(X, match):
    with pytest.raises(ValueError, match=match):
        bn_basis(X)


def test_transform_checks_feature_count():
    b = bn_basis(np.random.default_rng(0).standard_normal((10, 3)))
    with pytest.raises(ValueError, match="has 4 features"):
        b.transform(np.zeros((2, 4)))


def test_sampled_arrangements_are_distinct_nonzero_and_seeded():
    X = np.random.default_rng(0).standard_normal((40, 3))
    b = bn_basis(X)
    a1 = sample_arrangements(b, 300, random_state=0)
    a2 = sample_arrangements(b, 300, random_state=0)
    np.testing.assert_array_equal(a1.mask, a2.mask)
    assert a1.mask.dtype == bool and a1.mask.shape[0] == 40
    assert a1.mask.any(axis=0).all()
    assert len({c.tobytes() for c in a1.mask.T}) == a1.n_patterns <= 300
    # every stored generator produces its pattern
    np.testing.assert_array_equal(b.Uprime @ a1.generators.T >= 0, a1.mask)
    assert not a1.exact


def test_enumeration_hits_cover_bound_in_general_position():
    X = np.random.default_rng(0).standard_normal((6, 2))
    b = bn_basis(X)  # 6 hyperplanes in R^3
    arr = enumerate_arrangements(b)
    assert arr.exact
    assert max_arrangements(6, 3) == 32
    assert arr.n_patterns == 31  # all cells but the all-zero one
    np.testing.assert_array_equal(b.Uprime @ arr.generators.T >= 0, arr.mask)


def test_enumeration_contains_every_sampled_pattern():
    X = np.random.default_rng(5).standard_normal((12, 3))
    b = bn_basis(X)
    exact = {c.tobytes() for c in enumerate_arrangements(b).mask.T}
    sampled = {c.tobytes() for c in sample_arrangements(b, 20000, random_state=1).mask.T}
    assert sampled <= exact
    assert len(exact) == max_arrangements(12, 4) - 1


def test_enumeration_refuses_huge_problems_and_auto_chooses():
    b = bn_basis(np.random.default_rng(0).standard_normal((200, 10)))
    with pytest.raises(ValueError, match="sample arrangements instead"):
        enumerate_arrangements(b)
    assert not make_arrangements(b, 50, random_state=0).exact
    small = bn_basis(np.random.default_rng(0).standard_normal((5, 1)))
    assert make_arrangements(small, 50).exact


@pytest.mark.parametrize("bad, exc", [(0, ValueError), (-3, ValueError), (2.5, TypeError)])
def test_sample_arrangements_bad_count(bad, exc):
    b = bn_basis(np.random.default_rng(0).standard_normal((10, 2)))
    with pytest.raises(exc, match="n_arrangements"):
        sample_arrangements(b, bad)
