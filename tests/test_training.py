"""The full-batch Adam/SGD trainer of objective (3), and stacking networks side by side."""

import numpy as np
import pytest

from convexbn import BNNetwork, concatenate_networks
from convexbn.training import train_bn_network


def _data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((30, 4))
    return X, np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2]


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_training_decreases_objective_3(optimizer):
    X, y = _data()
    lr = 1e-2 if optimizer == "adam" else 3e-3
    result = train_bn_network(X, y, 8, beta=0.1, optimizer=optimizer, lr=lr, epochs=500, random_state=0)
    first = result.history[0][2]
    assert result.best_objective < 0.5 * first
    # the recorded final value is the numpy forward pass of the returned network: objective (3)
    assert result.objective == pytest.approx(result.network.objective(X, y), rel=1e-12)
    # eval mode on the training data reproduces the training-mode outputs (stored statistics)
    np.testing.assert_allclose(
        result.network.forward(X, training=False), result.network.forward(X, training=True), atol=1e-12
    )


def test_training_errors():
    X, y = _data()
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        train_bn_network(X, y, 4, beta=0.1, optimizer="lbfgs")
    with pytest.raises(ValueError, match="y has 29 samples but X has 30"):
        train_bn_network(X, y[:-1], 4, beta=0.1)


def test_concatenate_networks_is_block_diagonal():
    X, y = _data(1)
    a = train_bn_network(X, y, 3, beta=0.1, epochs=50, random_state=0).network
    b = train_bn_network(X, -y, 2, beta=0.1, epochs=50, random_state=1).network
    both = concatenate_networks([a, b])
    assert (both.n_neurons, both.n_outputs) == (5, 2)
    np.testing.assert_allclose(both.forward(X), np.column_stack([a.forward(X), b.forward(X)]), atol=1e-12)
    assert both.penalty() == pytest.approx(a.penalty() + b.penalty(), rel=1e-12)
    odd = BNNetwork(**{**a.__dict__, "beta": 0.2})
    with pytest.raises(ValueError, match="must share n_train, beta, loss"):
        concatenate_networks([a, odd])


def test_network_patterns_bound_the_convex_optimum_by_the_trained_objective():
    # with the trained network's own patterns added, the convex optimum is at most its objective (3)
    from convexbn import (
        ConvexBNProblem,
        bn_basis,
        merge_arrangements,
        network_arrangements,
        recover_network,
        sample_arrangements,
    )

    X, y = _data(2)
    trained = train_bn_network(X, y, 6, beta=0.5, epochs=800, random_state=0)
    basis = bn_basis(X)
    own = network_arrangements(basis, trained.network)
    # the generators reproduce the network's training-mode activation pattern
    pre = trained.network.hidden(X, training=True) > 0
    assert all(
        any((own.mask[:, i] == pre[:, j]).all() for i in range(own.n_patterns))
        for j in range(6)
        if pre[:, j].any()
    )
    arr = merge_arrangements(sample_arrangements(basis, 5, random_state=0), own)
    assert arr.n_patterns <= 5 + own.n_patterns
    solution = ConvexBNProblem(basis, arr, y, beta=0.5).solve("clarabel")
    assert solution.objective <= trained.objective * (1 + 1e-7)
    assert recover_network(solution).objective(X, y) == pytest.approx(solution.objective, rel=1e-6)
