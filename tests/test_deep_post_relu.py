"""Spec section 10: the layerwise deep BN network and BN after the ReLU, each against its convex program."""

import numpy as np
import pytest
import torch

from convexbn import BNNetwork, ConvexBNProblem, bn_basis, make_arrangements
from convexbn.arrangements import max_arrangements, relu_arrangements
from convexbn.deep import DeepBNNetwork, fit_layerwise
from convexbn.post_relu import PostReLUBNProblem, recover_post_relu_network
from convexbn.solvers.closed_form import closed_form_objective


@pytest.fixture(scope="module")
def regression():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 4))
    return X, np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2]


def _bn_relu(A, W, gamma, alpha):
    """relu(BN(A W)) written out from the spec's eq. (1), independent of convexbn.network."""
    H = A @ W
    Hc = H - H.mean(axis=0)
    return np.maximum(gamma * Hc / np.linalg.norm(Hc, axis=0) + alpha / np.sqrt(A.shape[0]), 0.0)


# --- deep, layerwise ----------------------------------------------------------------------------------
@pytest.mark.parametrize("n_layers", [2, 3])
def test_layerwise_convex_optimum_equals_forward_objective(regression, n_layers):
    X, y = regression
    beta = 0.3
    result = fit_layerwise(X, y, n_layers, beta, n_arrangements=60, random_state=0)
    deep = result.network
    assert deep.n_layers == n_layers and len(result.solutions) == n_layers
    # forward pass written out layer by layer from the parameters
    A = X
    inner = 0.0
    for layer in deep.hidden:
        A = _bn_relu(A, layer.weights, layer.gamma, layer.alpha)
        inner += np.sum(layer.gamma**2) + np.sum(layer.alpha**2)
    head = deep.head
    F = _bn_relu(A, head.weights, head.gamma, head.alpha) @ head.output
    penalty = inner + np.sum(head.gamma**2) + np.sum(head.alpha**2) + np.sum(head.output**2)
    direct = 0.5 * np.sum((F[:, 0] - y) ** 2) + 0.5 * beta * penalty
    assert direct == pytest.approx(result.objective, rel=1e-10)
    # convex optimum of the last layer + the inner layers' penalty == the deep network's objective
    last = result.solutions[-1].objective
    assert result.objective == pytest.approx(last + 0.5 * beta * inner, rel=1e-7)
    assert result.equivalence_gap < 1e-7
    # each stage builds on the last: the last layer's optimum is below the two-layer one's
    assert result.solutions[-1].objective < result.solutions[0].objective


def test_inner_scale_carries_no_information(regression):
    X, y = regression
    deep = fit_layerwise(X, y, 3, 0.3, n_arrangements=60, random_state=0).network
    small = deep.rescale_hidden(1e-3)
    np.testing.assert_allclose(small.forward(X, training=True), deep.forward(X, training=True), atol=1e-12)
    X_new = np.random.default_rng(5).standard_normal((7, 4))
    np.testing.assert_allclose(small.forward(X_new), deep.forward(X_new), atol=1e-12)
    assert small.inner_penalty() == pytest.approx(1e-6 * deep.inner_penalty(), rel=1e-12)
    with pytest.raises(ValueError, match="factor must be > 0"):
        deep.rescale_hidden(0.0)


def test_wide_inner_layer_gives_the_closed_form(regression):
    """A random BN layer of width >= n makes the centered activations of rank n - 1: the last layer's
    program is then the closed form of spec section 7 (soft-thresholded labels)."""
    X, y = regression
    n = X.shape[0]
    rng = np.random.default_rng(1)
    m = 3 * n
    W, gamma, alpha = rng.standard_normal((4, m)), rng.uniform(0.5, 1.5, m), rng.standard_normal(m)
    layer = BNNetwork.from_parameters(X, W, gamma, alpha, np.zeros((m, 1)), beta=0.5)
    A = layer.hidden(X, training=True)
    basis = bn_basis(A)
    assert basis.rank == n - 1
    problem = ConvexBNProblem(basis, make_arrangements(basis, 40, random_state=0), y, beta=0.5)
    closed = problem.solve("closed_form")
    assert closed.objective == pytest.approx(closed_form_objective(y[:, None], 0.5), rel=1e-9)
    conic = problem.solve("clarabel")  # sampled patterns: an upper bound the closed form attains
    assert conic.objective >= closed.objective - 1e-6
    from convexbn import recover_network

    deep = DeepBNNetwork(hidden=[layer], head=recover_network(closed))
    assert deep.objective(X, y) == pytest.approx(closed.objective + deep.inner_penalty(), rel=1e-9)


def test_layerwise_errors(regression):
    X, y = regression
    with pytest.raises(ValueError, match="layer 1 of 2 has no neuron at beta=1e\\+06"):
        fit_layerwise(X, y, 2, 1e6, n_arrangements=10, random_state=0)
    with pytest.raises(ValueError, match="n_arrangements has 1 entries for 2 layers"):
        fit_layerwise(X, y, 2, 0.1, n_arrangements=[10])


# --- BN after the ReLU ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(2)
    Z = rng.standard_normal((9, 2))
    X = np.hstack([Z, np.ones((9, 1))])  # a first-layer bias
    y = np.sin(3 * Z[:, 0]) + Z[:, 1]
    return X, y


def _post_relu_sgd(X, y, beta, m, seed, steps=2500):
    """Adam on the nonconvex BN-after-ReLU objective, written out in torch (independent of convexbn)."""
    g = torch.Generator().manual_seed(seed)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    n = X.shape[0]
    W = torch.randn(X.shape[1], m, generator=g, dtype=torch.float64).requires_grad_()
    gamma = torch.rand(m, generator=g, dtype=torch.float64).requires_grad_()
    alpha = (0.1 * torch.randn(m, generator=g, dtype=torch.float64)).requires_grad_()
    v = (torch.randn(m, generator=g, dtype=torch.float64) / m**0.5).requires_grad_()
    opt = torch.optim.Adam([W, gamma, alpha, v], lr=0.02)

    def objective():
        H = torch.relu(Xt @ W)
        Hc = H - H.mean(0)
        bn = gamma * Hc / torch.sqrt((Hc**2).sum(0) + 1e-30) + alpha / n**0.5
        f = bn @ v
        return 0.5 * ((f - yt) ** 2).sum() + 0.5 * beta * ((gamma**2).sum() + (alpha**2).sum() + (v**2).sum())

    best = float("inf")
    for _ in range(steps):
        opt.zero_grad()
        value = objective()
        value.backward()
        opt.step()
        best = min(best, float(value.detach()))
    return min(best, float(objective().detach()))


def test_post_relu_exact_program_is_the_global_optimum(tiny):
    X, y = tiny
    beta = 0.2
    arrangements = relu_arrangements(X, 1000, method="exact")
    assert arrangements.exact and arrangements.n_patterns <= max_arrangements(*X.shape)
    problem = PostReLUBNProblem(X, arrangements, y, beta)
    solution = problem.solve()
    network = recover_post_relu_network(solution)
    # the recovered network realizes the convex optimum by a plain forward pass
    np.testing.assert_allclose(network.forward(X, training=True), solution.predict_train(), atol=1e-7)
    assert network.objective(X, y) == pytest.approx(solution.objective, rel=1e-7)
    # eval mode on the training data is training mode
    np.testing.assert_allclose(network.forward(X), network.forward(X, training=True), atol=1e-12)
    # no run of the nonconvex network from many starts goes below the convex optimum, and the best is close
    width = max(2 * network.n_neurons, 4)
    runs = [_post_relu_sgd(X, y, beta, width, seed) for seed in range(8)]
    assert min(runs) >= solution.objective - 1e-6
    assert min(runs) <= 1.05 * solution.objective
    # a sample of the patterns gives an upper bound
    sampled = PostReLUBNProblem(X, relu_arrangements(X, 6, method="sample", random_state=0), y, beta)
    assert sampled.solve().objective >= solution.objective - 1e-7


def test_post_relu_solvers_agree_and_errors(tiny):
    X, y = tiny
    problem = PostReLUBNProblem(X, relu_arrangements(X, 30, method="sample", random_state=1), y, 0.2)
    clarabel = problem.solve("clarabel")
    scs = problem.solve("scs", eps_abs=1e-8, eps_rel=1e-8, max_iters=200_000)
    assert scs.objective == pytest.approx(clarabel.objective, rel=1e-4)
    with pytest.raises(ValueError, match="unknown solver 'torch' for the BN-after-ReLU program"):
        problem.solve("torch")
    with pytest.raises(ValueError, match="arrangements have 9 samples, X 8"):
        PostReLUBNProblem(X[:8], problem.arrangements, y[:8], 0.2)


def test_post_relu_torch_export(tiny):
    X, y = tiny
    problem = PostReLUBNProblem(X, relu_arrangements(X, 20, method="sample", random_state=0), y, 0.2)
    network = recover_post_relu_network(problem.solve())
    module = network.to_torch()
    X_new = np.random.default_rng(7).standard_normal((5, 3))
    with torch.no_grad():
        out = module(torch.as_tensor(X_new)).numpy()
    np.testing.assert_allclose(out, network.forward(X_new), atol=1e-10)
    module.train()
    with torch.no_grad():
        out = module(torch.as_tensor(X)).numpy()
    np.testing.assert_allclose(out, network.forward(X, training=True), atol=1e-4)  # BN's eps = 1e-5
