"""The torch networks, their trainer and BN's variants (FN, PN + gamma decay, BNP, landscape probes)."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_iris
from sklearn.preprocessing import StandardScaler
from torch import nn

from convexbn import ConvexBNProblem, bn_basis, enumerate_arrangements, recover_network
from convexbn.compare import VARIANTS
from convexbn.nn import (
    BNPreconditioner,
    GammaDecay,
    TwoLayerNet,
    convex_program_loss,
    frozen_statistics,
    make_batches,
    power_schedule,
    probe_landscape,
    train_network,
)


def _regression(n=40, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2]


def _iris_binary():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), np.where(y == 0, 1.0, -1.0), y


def _net(X, norm="batch", m=8, C=1, seed=0, **kw):
    return TwoLayerNet(
        X.shape[1], m, C, n_train=X.shape[0], norm=norm, generator=torch.Generator().manual_seed(seed), **kw
    )


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_variant_trains_and_decreases_its_objective(variant):
    X, y = _regression()
    norm, optimizer, extra = VARIANTS[variant]
    torch.manual_seed(0)
    model = _net(X, norm)
    lr = {"adam": 3e-2, "sgd": 5e-3}[optimizer]
    lr = {"bnp-sgd": 3e-4, "plain-sgd": 2e-3}.get(variant, lr)  # BNP steps in normalized coordinates
    run = train_network(
        model, X, y, beta=0.1, optimizer=optimizer, lr=lr, batch_size=10, epochs=100, random_state=0, **extra
    )
    assert not run.diverged
    first, last = run.history[0]["objective"], run.objective
    assert last < 0.5 * first, (variant, first, last)
    # the recorded value is objective (3) on the full data, equal to an independent numpy forward pass
    if model.has_bn:
        assert last == pytest.approx(model.to_network(X, 0.1).objective(X, y), rel=1e-10)
    assert [h["epoch"] for h in run.history] == list(range(101))
    assert all(h["effective_lr"] > 0 for h in run.history)


def test_full_batch_bn_objective_is_exactly_objective_3():
    X, y = _regression()
    model = _net(X)
    Xt, Yt = torch.as_tensor(X), torch.as_tensor(y[:, None])
    # train-mode forward on the full batch (eps = 0) is eq. (1): the spec network's numpy forward pass
    model.train()
    net = model.to_network(X, 0.3)
    np.testing.assert_allclose(
        model(Xt).detach().numpy(), net.forward(X, training=True), rtol=1e-12, atol=1e-12
    )
    assert float(model.objective(Xt, Yt, "squared", 0.3)) == pytest.approx(net.objective(X, y), rel=1e-13)


def test_fn_with_sorted_batches_beats_bn_with_sorted_batches():
    # Lian & Liu (2019): with class-sorted batches BN trains on the wrong statistics; FN's running estimates
    # of the full-data moments do not care how batches are built
    X, y, labels = _iris_binary()
    finals = {}
    for norm in ("batch", "full"):
        for order in ("shuffle", "sorted"):
            values = []
            for seed in range(3):
                model = _net(X, norm, seed=seed)
                run = train_network(
                    model, X, y, beta=1e-2, loss="logistic", optimizer="sgd", lr=1e-3, batch_size=10,
                    epochs=60, batch_order=order, sort_labels=labels, random_state=seed, record_every=60,
                )  # fmt: skip
                values.append(run.objective)
            finals[norm, order] = np.median(values)
    assert finals["full", "sorted"] < 0.1 * finals["batch", "sorted"], finals
    assert finals["batch", "shuffle"] < 0.1 * finals["batch", "sorted"], finals


def test_sorted_batches_hold_one_or_two_classes():
    _, _, labels = _iris_binary()
    batches = make_batches(150, 10, "sorted", labels, np.random.default_rng(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(150))
    assert max(len(np.unique(labels[b])) for b in batches) <= 2
    # a trailing one-sample batch is merged (batch statistics need two samples)
    assert [len(b) for b in make_batches(21, 10, "fixed", None, np.random.default_rng(0))] == [10, 11]


def test_fn_with_unit_steps_is_batch_norm():
    # a_k = 1: Y is the batch moment, so FN's forward value and gradient are BN's
    X, y = _regression()
    bn, fn = _net(X, "batch"), _net(X, "full", stat_schedule=lambda k: 1.0, eps=0.0)
    Xt, Yt = torch.as_tensor(X[:12]), torch.as_tensor(y[:12, None])
    grads = []
    for model in (bn, fn):
        model.train()
        out = model(Xt)
        ((out - Yt) ** 2).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    # with the default schedule the running estimate averages the batches
    sched = power_schedule(1.0, 0.5)
    assert [sched(k) for k in (0, 3, 99)] == [1.0, 0.5, 0.1]


def test_bnp_trains_at_batch_size_1_and_bn_cannot():
    X, y, _ = _iris_binary()
    torch.manual_seed(0)
    model = _net(X, "none", m=16)
    run = train_network(
        model, X, y, beta=1e-2, loss="logistic", optimizer="sgd", lr=1e-4, batch_size=1, epochs=3,
        preconditioner="bnp", random_state=0,
    )  # fmt: skip
    assert not run.diverged
    assert run.objective < 0.25 * run.history[0]["objective"]
    with pytest.raises(ValueError, match="batch_size=1: batch normalization needs at least 2 samples"):
        train_network(_net(X, "batch"), X, y, beta=1e-2, loss="logistic", batch_size=1)


def test_bnp_gradient_is_the_preconditioned_one():
    # G' = P G with P = U U^T, U = [[D^-1, 0], [-mu^T D^-1, 1]], on each row [w; b]
    torch.manual_seed(0)
    layer = nn.Linear(5, 3).double()
    pre = BNPreconditioner([layer], rho=0.9, eps=1e-3)
    A = torch.randn(40, 5, dtype=torch.float64) * torch.tensor([1.0, 2, 3, 0.1, 5]) + 2.0
    for batch in A.split(4):
        layer(batch)
    out = layer(A[:7]).square().sum()
    pre.active = False
    out.backward()
    GW, gb = layer.weight.grad.clone(), layer.bias.grad.clone()
    pre.precondition()
    mu, s = pre.statistics(0)
    # independent: the bias-corrected moving averages by hand (11 recorded passes)
    t = 11
    w = torch.tensor([0.9 ** (t - 1 - i) * 0.1 for i in range(t)], dtype=torch.float64)
    batches = list(A.split(4)) + [A[:7]]
    mean_hand = sum(wi * b.mean(0) for wi, b in zip(w, batches, strict=True)) / (1 - 0.9**t)
    sq_hand = sum(wi * b.square().mean(0) for wi, b in zip(w, batches, strict=True)) / (1 - 0.9**t)
    torch.testing.assert_close(mu, mean_hand)
    torch.testing.assert_close(s, (sq_hand - mean_hand**2).clamp_min(0))
    D_inv = torch.diag(1 / torch.sqrt(s + 1e-3))
    U = torch.zeros(6, 6, dtype=torch.float64)
    U[:5, :5] = D_inv
    U[5, :5] = -mu @ D_inv
    U[5, 5] = 1
    expected = (U @ U.T @ torch.cat([GW, gb[:, None]], 1).T).T
    torch.testing.assert_close(layer.weight.grad, expected[:, :5])
    torch.testing.assert_close(layer.bias.grad, expected[:, 5])
    pre.remove()


def test_population_norm_with_gamma_decay_behaves_and_decays_gamma():
    X, y, _ = _iris_binary()
    common = dict(
        beta=1e-2, loss="logistic", optimizer="sgd", lr=1e-3, batch_size=8, epochs=15, random_state=0
    )
    plain_pn = train_network(_net(X, "population"), X, y, **common)
    adaptive = train_network(_net(X, "population"), X, y, gamma_decay="adaptive", **common)
    strong = _net(X, "population")
    train_network(strong, X, y, gamma_decay=0.05, **common)
    assert adaptive.objective < 0.5 * adaptive.history[0]["objective"]
    assert all(h["zeta"] > 0 for h in adaptive.history[1:])
    # a strong constant decay shrinks gamma below PN's
    assert float(strong.norm.gamma.norm()) < float(_gamma_norm_after(X, y, common))
    assert plain_pn.objective < plain_pn.history[0]["objective"]


def _gamma_norm_after(X, y, common):
    model = _net(X, "population")
    train_network(model, X, y, **common)
    return model.norm.gamma.norm()


def test_adaptive_zeta_matches_per_sample_autograd():
    # independent check: per-sample gradients and curvatures from torch.func on a functional model
    X, y, _ = _iris_binary()
    model = _net(X, "population", m=5)
    train_network(model, X, y, beta=1e-2, loss="logistic", lr=1e-3, batch_size=16, epochs=2, random_state=0)
    model.train()
    layer = model.norm
    decay = GammaDecay("adaptive", loss="logistic", n_train=X.shape[0])
    Xb = torch.as_tensor(X[:16])
    Yb = torch.as_tensor(y[:16, None])
    with frozen_statistics(model):
        H = model.preactivation(Xb)
        F = model.output(torch.relu(H))
        zeta = decay.estimate(layer, H, F, Yb, model.output.weight)

    mean, var = layer.running_mean.detach(), layer.running_var.detach()
    W, V, n = model.first.weight.detach(), model.output.weight.detach(), X.shape[0]

    def sample_loss(gamma, shift, x, yy):
        zhat = (W @ x - mean) / torch.sqrt(var + layer.eps)
        u = gamma * zhat + layer.alpha.detach() + shift  # the BN output, standardized scale
        f = V @ torch.relu(u / np.sqrt(n))
        return torch.nn.functional.softplus(-yy * f).sum()

    gamma0, zero = layer.gamma.detach(), torch.zeros(5, dtype=torch.float64)
    g = torch.func.vmap(torch.func.grad(sample_loss), in_dims=(None, None, 0, 0))(gamma0, zero, Xb, Yb)
    hess = torch.func.vmap(torch.func.hessian(sample_loss, argnums=1), in_dims=(None, None, 0, 0))(
        gamma0, zero, Xb, Yb
    )
    second = torch.diagonal(hess, dim1=1, dim2=2).mean(0)
    expected = (layer.running_kurtosis + 2) / (8 * 16) * g.square().mean(0) + second / (2 * 16)
    torch.testing.assert_close(zeta, expected, rtol=1e-9, atol=1e-15)


def test_recompute_population_statistics_gives_full_data_statistics():
    X, y = _regression()
    model = _net(X, "population")
    train_network(model, X, y, beta=0.1, lr=1e-3, batch_size=10, epochs=1, recompute_statistics_every=1)
    # the last step set the statistics from the weights before that step's update
    Z = model.first(torch.as_tensor(X)).detach()
    model.norm.set_statistics(Z)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(torch.as_tensor(X)), model.full_data_forward(torch.as_tensor(X)))


def test_batchnorm1d_and_spec_network_are_the_same_function():
    X, y = _regression(n=30)
    X_new = np.random.default_rng(5).standard_normal((9, 4))
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2, bias=False)).double()
    with torch.no_grad():
        seq[1].weight.uniform_(0.5, 2.0)
        seq[1].bias.normal_()
    spec = TwoLayerNet.from_batchnorm1d(seq, X)
    Xt = torch.as_tensor(X)
    seq.train()
    spec.train()
    torch.testing.assert_close(spec(Xt), seq(Xt), rtol=1e-12, atol=1e-12)
    # ... and back: the recovered BNNetwork's PyTorch export, in eval mode on new data
    net = spec.to_network(X, beta=0.1)
    back = net.to_torch()
    spec.eval()
    Xn = torch.as_tensor(X_new)
    np.testing.assert_allclose(back(Xn).detach().numpy(), net.forward(X_new), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(spec(Xn).detach().numpy(), net.forward(X_new), rtol=1e-10, atol=1e-12)
    # PyTorch's parametrization trained as norm="batchnorm1d": objective (3) of its spec conversion
    wrapped = TwoLayerNet(4, 6, 2, n_train=30, norm="batchnorm1d")
    with torch.no_grad():
        wrapped.first.weight.copy_(seq[0].weight)
        wrapped.norm.weight.copy_(seq[1].weight)
        wrapped.norm.bias.copy_(seq[1].bias)
        wrapped.output.weight.copy_(seq[3].weight)
    Y = np.column_stack([y, -y])
    value = float(wrapped.objective(Xt, torch.as_tensor(Y), "squared", 0.1))
    assert value == pytest.approx(net.objective(X, Y), rel=1e-12)
    assert value == pytest.approx(wrapped.to_network(X, 0.1).objective(X, Y), rel=1e-12)
    with pytest.raises(ValueError, match="has a bias"):
        TwoLayerNet.from_batchnorm1d(
            nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 1)), X
        )


def test_no_sgd_run_ends_below_the_enumerated_convex_optimum():
    # all arrangements of a tiny problem: p* is the global minimum of (3) over every width
    rng = np.random.default_rng(3)
    X = rng.standard_normal((10, 2))
    y = np.abs(X[:, 0]) - X[:, 1] ** 2 + 0.3
    beta = 0.05
    basis = bn_basis(X)
    arrangements = enumerate_arrangements(basis)
    solution = ConvexBNProblem(basis, arrangements, y, beta).solve("clarabel")
    p_star = solution.objective
    assert recover_network(solution).objective(X, y) == pytest.approx(p_star, rel=1e-6)
    finals = []
    for m in (1, 3, 8):
        for seed in range(4):
            for optimizer, lr, bs in (("adam", 1e-2, None), ("sgd", 2e-3, 4)):
                model = _net(X, "batch", m=m, seed=seed)
                train_network(model, X, y, beta=beta, optimizer=optimizer, lr=lr, batch_size=bs,
                                    epochs=400, record_every=400, random_state=seed)  # fmt: skip
                finals.append(model.to_network(X, beta).objective(X, y))
    assert min(finals) >= p_star * (1 - 1e-7)
    assert min(finals) < 1.2 * p_star  # the bound is tight: the best runs come close


def test_landscape_probe_on_a_quadratic_matches_closed_form():
    rng = np.random.default_rng(0)
    M = rng.standard_normal((6, 6))
    A = torch.as_tensor(M @ M.T + np.eye(6))
    x = torch.as_tensor(rng.standard_normal(6)).requires_grad_()
    steps = [0.01, 0.02, 0.05]
    probe = probe_landscape(lambda: 0.5 * x @ A @ x, [x], steps)
    x0 = x.detach()
    g = A @ x0
    values = [float(0.5 * (x0 - e * g) @ A @ (x0 - e * g)) for e in steps]
    changes = [float(e * (A @ g).norm()) for e in steps]
    assert probe.loss_min == pytest.approx(min(values), rel=1e-12)
    assert probe.loss_max == pytest.approx(max(values), rel=1e-12)
    assert probe.grad_change_max == pytest.approx(max(changes), rel=1e-12)
    assert probe.beta_smoothness == pytest.approx(float((A @ g).norm() / g.norm()), rel=1e-12)
    torch.testing.assert_close(x.detach(), x0)  # restored
    with pytest.raises(ValueError, match="positive step sizes"):
        probe_landscape(lambda: x.sum(), [x], [0.0])


def test_convex_program_loss_is_the_programs_data_fit():
    X, y = _regression(n=20)
    basis = bn_basis(X)
    from convexbn import sample_arrangements

    problem = ConvexBNProblem(basis, sample_arrangements(basis, 15, random_state=0), y, 0.1)
    rng = np.random.default_rng(1)
    Wp, Wn = rng.standard_normal((2, problem.n_patterns, problem.dim))
    value = float(convex_program_loss(problem, torch.as_tensor(Wp), torch.as_tensor(Wn)))
    expected = problem.objective(Wp[None], Wn[None]) - problem.penalty(Wp[None], Wn[None])
    assert value == pytest.approx(expected, rel=1e-12)


def test_probes_leave_buffers_and_training_unchanged():
    X, y = _regression()
    a, b = _net(X), _net(X)
    common = dict(beta=0.1, optimizer="sgd", lr=1e-3, batch_size=10, epochs=3, random_state=0)
    ra = train_network(a, X, y, **common)
    rb = train_network(b, X, y, landscape_every=2, **common)
    assert len(rb.landscape) == 6 and not ra.landscape
    assert all(p["beta_smoothness"] > 0 for p in rb.landscape)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    bn = nn.BatchNorm1d(3).double()
    with frozen_statistics(bn):
        bn(torch.randn(5, 3, dtype=torch.float64))
    assert torch.equal(bn.running_mean, torch.zeros(3, dtype=torch.float64))


def test_trainer_errors():
    X, y = _regression()
    with pytest.raises(ValueError, match="gamma_decay needs a network with population normalization"):
        train_network(_net(X), X, y, beta=0.1, gamma_decay="adaptive")
    with pytest.raises(ValueError, match="unknown batch_order 'random'"):
        train_network(_net(X), X, y, beta=0.1, batch_order="random")
    with pytest.raises(ValueError, match="built for n_train=40, X has 39 samples"):
        train_network(_net(X), X[:-1], y[:-1], beta=0.1)
    with pytest.raises(ValueError, match="unknown norm 'layer'"):
        TwoLayerNet(4, 3, n_train=40, norm="layer")
    with pytest.raises(ValueError, match="zeta must be a non-negative float or 'adaptive'"):
        GammaDecay(-1.0, n_train=10)
    with pytest.raises(ValueError, match="preconditioner must be 'bnp'"):
        train_network(_net(X, "none"), X, y, beta=0.1, preconditioner="kfac")
    with pytest.raises(ValueError, match="plain network"):
        _net(X, "none").spec_parameters(torch.as_tensor(X))


def test_diverging_run_stops_and_says_so():
    X, y = _regression()
    run = train_network(_net(X, "none"), X, y * 1e3, beta=0.1, lr=10.0, epochs=50)
    assert run.diverged
    assert len(run.history) < 52
