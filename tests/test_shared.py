"""The shared-neuron program for several outputs (docs/math.md section 8): exact oracle, certificate,
independent references (cvxpy on the same atoms, Adam from many starts), estimators, export, save/load."""

import cvxpy as cp
import numpy as np
import pytest
import torch

from convexbn import ConvexBNClassifier, ConvexBNRegressor, bn_basis, fit_convex_bn
from convexbn.arrangements import make_arrangements
from convexbn.losses import get_loss
from convexbn.neuron_search import ascent_neurons, exact_shared_value
from convexbn.shared_problem import SharedAtoms, SharedOutputProblem, universal_shared_value
from convexbn.solvers.torch.shared_fista import solve_output_lasso, solve_shared_fista
from convexbn.training import train_bn_network


def tiny(d, n=12, C=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal((n, C))


def test_exact_oracle_matches_a_fine_grid_in_two_dimensions():
    X, Y = tiny(1)
    basis = bn_basis(X)
    lam = Y - Y.mean(0)
    mask = make_arrangements(basis, 100, method="exact").mask
    value, z, pattern, direction = exact_shared_value(basis.Uprime, lam, mask)
    theta = np.linspace(0, 2 * np.pi, 200_001)
    Z = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    grid = np.linalg.norm(lam.T @ np.maximum(basis.Uprime @ Z.T, 0), axis=0)
    assert value >= grid.max() - 1e-12
    assert value == pytest.approx(grid.max(), rel=1e-6)
    # the maximizer attains the value, and the ascent oracle never reports more than the maximum
    assert np.linalg.norm(lam.T @ np.maximum(basis.Uprime @ z, 0)) == pytest.approx(value, rel=1e-9)
    assert ascent_neurons(basis.Uprime, lam, n_starts=50, random_state=0)[3][0] <= value + 1e-9
    assert universal_shared_value(basis.Uprime, lam) >= value


@pytest.mark.parametrize("d", [1, 2])
def test_enumerated_shared_fit_is_certified_and_below_per_output(d):
    X, Y = tiny(d)
    shared = fit_convex_bn(X, [Y], 0.3, neurons="shared", random_state=0)
    per = fit_convex_bn(X, list(Y.T), 0.3, neurons="per_output", random_state=0)
    assert shared.method == "enumerate" and shared.certified
    assert per.certified
    # the per-output networks are shared networks: the certified joint optimum is at or below theirs
    assert shared.objective <= per.objective + 1e-4 * per.objective
    assert shared.lower_bound <= shared.objective
    assert shared.gap <= 1e-4
    # objective (3) of the recovered network, by a plain forward pass, equals the program's (8a)
    assert shared.network.objective(X, Y) == pytest.approx(shared.objective, rel=1e-8)
    assert shared.network.output.shape[1] == 3


def test_adam_from_several_starts_is_never_below_the_certified_bound():
    X, Y = tiny(2, seed=1)
    fit = fit_convex_bn(X, [Y], 0.3, neurons="shared", random_state=0)
    assert fit.certified
    width = fit.network.n_neurons + 3
    runs = [train_bn_network(X, Y, width, 0.3, epochs=1000, random_state=s) for s in range(4)]
    best = min(r.best_objective for r in runs)
    assert best >= fit.lower_bound - 1e-7 * abs(fit.lower_bound)
    assert best <= 1.05 * fit.objective  # Adam gets near it: the objectives are the same function


def test_fista_on_fixed_atoms_matches_cvxpy():
    X, Y = tiny(2, n=15, seed=2)
    basis = bn_basis(X)
    rng = np.random.default_rng(0)
    mask = make_arrangements(basis, 12, random_state=0).mask
    dirs = rng.standard_normal((mask.shape[1], 3))
    atoms = SharedAtoms(mask, dirs / np.linalg.norm(dirs, axis=1, keepdims=True))
    problem = SharedOutputProblem(basis, atoms, Y, 0.2, "squared")
    ours = solve_shared_fista(problem, tol=1e-8, max_iter=50_000)
    U = basis.Uprime
    W = cp.Variable((atoms.n_atoms, basis.dim))
    F = sum(cp.multiply(mask[:, [i]], U @ W[i][:, None]) @ atoms.directions[[i]]
            for i in range(atoms.n_atoms))  # fmt: skip
    cons = [cp.multiply(np.where(mask[:, i], 1.0, -1.0), U @ W[i]) >= 0 for i in range(atoms.n_atoms)]
    obj = 0.5 * cp.sum_squares(F - Y) + 0.2 * cp.sum(cp.norm(W, 2, axis=1))
    ref = cp.Problem(cp.Minimize(obj), cons).solve(solver="CLARABEL")
    assert ours.status == "optimal"
    assert ours.objective == pytest.approx(ref, rel=1e-6)
    assert ours.lower_bound <= ref + 1e-7


@pytest.mark.parametrize("loss", ["squared", "cross_entropy"])
def test_output_lasso_matches_cvxpy(loss):
    rng = np.random.default_rng(3)
    A = np.maximum(rng.standard_normal((30, 8)), 0)
    lossf = get_loss(loss)
    Y = rng.standard_normal((30, 3)) if loss == "squared" else np.eye(3)[rng.integers(0, 3, 30)]
    V, value, gap = solve_output_lasso(A, Y, 0.5, lossf, tol=1e-9, max_iter=100_000)
    Vc = cp.Variable((8, 3))
    expr = lossf.cvxpy(A @ Vc, Y) + 0.5 * cp.sum(cp.norm(Vc, 2, axis=1))
    ref = cp.Problem(cp.Minimize(expr)).solve(solver="CLARABEL")
    assert value == pytest.approx(ref, rel=1e-6)
    assert gap <= 1e-9


@pytest.mark.parametrize("start", [1.0, 1 / 16, 1e-6])
def test_output_lasso_backtracking_from_any_first_step_reaches_the_same_optimum(monkeypatch, start):
    import convexbn.solvers.torch.shared_fista as SF

    rng = np.random.default_rng(6)
    A = np.maximum(rng.standard_normal((80, 15)), 0)
    Y = np.eye(4)[rng.integers(0, 4, 80)]
    lossf = get_loss("cross_entropy")
    reference, ref_value, _ = solve_output_lasso(A, Y, 0.3, lossf, tol=1e-11, max_iter=200_000)
    # start 1.0 without decay: the fixed step at the global bound, as before; 1e-6: far too long a first
    # step, doubled back by the test
    monkeypatch.setattr(SF, "LASSO_STEP_START", start)
    monkeypatch.setattr(SF, "LASSO_STEP_DECAY", 1.0 if start == 1.0 else SF.LASSO_STEP_DECAY)
    V, value, gap = solve_output_lasso(A, Y, 0.3, lossf, tol=1e-11, max_iter=200_000)
    assert gap <= 1e-11
    assert value == pytest.approx(ref_value, rel=1e-10)
    assert value == pytest.approx(lossf.value(A @ V, Y) + 0.3 * np.linalg.norm(V, axis=1).sum(), rel=1e-12)
    np.testing.assert_allclose(V, reference, atol=1e-4)


@pytest.mark.parametrize("shape", [(60, 12), (10, 25)])  # fewer neurons than samples (Gram path), more
def test_output_lasso_gram_path_matches_the_plain_path_and_cvxpy(shape):
    rng = np.random.default_rng(4)
    A = np.maximum(rng.standard_normal(shape), 0)
    Y = rng.standard_normal((shape[0], 4))
    squared = get_loss("squared")

    class PlainSquared(type(squared)):  # the same loss, without the declaration the Gram path needs
        quadratic = False

    V, value, gap = solve_output_lasso(A, Y, 0.7, squared, tol=1e-10, max_iter=200_000)
    Vp, value_p, gap_p = solve_output_lasso(A, Y, 0.7, PlainSquared(), tol=1e-10, max_iter=200_000)
    Vc = cp.Variable((shape[1], 4))
    ref = cp.Problem(cp.Minimize(squared.cvxpy(A @ Vc, Y) + 0.7 * cp.sum(cp.norm(Vc, 2, axis=1)))).solve(
        solver="CLARABEL")  # fmt: skip
    assert gap <= 1e-10 and gap_p <= 1e-10
    assert value == pytest.approx(value_p, rel=1e-9)
    assert value == pytest.approx(ref, rel=1e-6)
    # the reported value is the objective at V, computed from the predictions
    assert value == pytest.approx(squared.value(A @ V, Y) + 0.7 * np.linalg.norm(V, axis=1).sum(), rel=1e-12)
    assert np.abs(V - Vp).max() <= 1e-4 * max(np.abs(Vp).max(), 1.0)


def test_a_quadratic_loss_is_half_the_squared_distance():
    rng = np.random.default_rng(5)
    F, Y = rng.standard_normal((7, 3)), rng.standard_normal((7, 3))
    for name in ("squared", "logistic", "cross_entropy", "hinge"):
        loss = get_loss(name)
        if loss.quadratic:
            assert loss.value(F, Y) == pytest.approx(0.5 * np.sum((F - Y) ** 2), rel=1e-12)
            np.testing.assert_allclose(loss.grad(F, Y), F - Y, rtol=1e-12)
    assert get_loss("squared").quadratic and not get_loss("logistic").quadratic


def test_shared_atoms_are_validated():
    with pytest.raises(ValueError, match="unit vectors"):
        SharedAtoms(np.ones((4, 2), bool), np.ones((2, 3)))
    with pytest.raises(ValueError, match="masks \\(n, m\\) and directions \\(m, C\\)"):
        SharedAtoms(np.ones((4, 2), bool), np.eye(3))


def test_shared_needs_a_smooth_loss():
    X, Y = tiny(2)
    with pytest.raises(ValueError, match="neurons='shared' needs a smooth loss, got 'hinge'"):
        fit_convex_bn(X, [np.sign(Y)], 0.3, loss="hinge", neurons="shared")
    auto = fit_convex_bn(X, list(np.sign(Y).T), 0.3, loss="hinge", neurons="auto", random_state=0)
    assert auto.info.get("neurons", "per_output") == "per_output" and len(auto.programs) == 3


@pytest.fixture(scope="module")
def iris():
    from sklearn.datasets import load_iris
    from sklearn.preprocessing import StandardScaler

    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def test_classifier_shares_neurons_by_default_and_beats_per_output(iris):
    X, y = iris
    shared = ConvexBNClassifier(beta=2e-3, random_state=0, search_rounds=8).fit(X, y)
    per = ConvexBNClassifier(beta=2e-3, neurons="per_output", random_state=0, search_rounds=8).fit(X, y)
    assert shared.neurons_ == "shared" and per.neurons_ == "per_output"
    assert shared.network_.output.shape == (shared.n_neurons_, 3)
    # every neuron feeds several outputs, unlike the per-output network's block-diagonal layer
    assert np.mean((np.abs(shared.network_.output) > 0).sum(axis=1) > 1) > 0.5
    assert np.all((np.abs(per.network_.output) > 0).sum(axis=1) == 1)
    assert shared.objective_ < per.objective_
    assert shared.equivalence_gap_ < 1e-8
    assert shared.score(X, y) >= 0.95


def test_shared_classifier_exports_one_linear_layer_and_saves_bit_for_bit(iris, tmp_path):
    X, y = iris
    clf = ConvexBNClassifier(beta=2e-3, random_state=0, search_rounds=3).fit(X, y)
    model = clf.network_.to_torch()
    last = model[3]
    assert isinstance(last, torch.nn.Linear) and last.out_features == 3
    assert last.in_features == clf.n_neurons_
    with torch.no_grad():
        F = model(torch.as_tensor(X)).numpy()
    np.testing.assert_allclose(F, clf.decision_function(X), rtol=1e-9, atol=1e-9)
    path = tmp_path / "shared.npz"
    clf.save(path)
    back = ConvexBNClassifier.load(path)
    assert back.neurons == "auto" and back.neurons_ == "shared"
    np.testing.assert_array_equal(back.decision_function(X), clf.decision_function(X))
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))


def test_regressor_shares_neurons_across_targets():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    Y = np.column_stack([np.maximum(X[:, 0], 0), np.maximum(X[:, 0], 0) - X[:, 1]])
    shared = ConvexBNRegressor(beta=1e-2, random_state=0, search_rounds=8).fit(X, Y)
    per = ConvexBNRegressor(beta=1e-2, neurons="per_output", random_state=0, search_rounds=8).fit(X, Y)
    assert shared.neurons_ == "shared" and shared.predict(X).shape == (40, 2)
    assert shared.objective_ <= per.objective_ * (1 + 1e-4)
    one = ConvexBNRegressor(beta=1e-2, random_state=0, search_rounds=2).fit(X, Y[:, 0])
    assert one.neurons_ == "per_output"  # one output: the scalar program, shared or not


def test_warm_start_reuses_the_atoms(iris):
    X, y = iris
    clf = ConvexBNClassifier(beta=5e-3, warm_start=True, random_state=0, search_rounds=4).fit(X, y)
    first = clf.objective_
    clf.set_params(beta=4e-3).fit(X, y)
    cold = ConvexBNClassifier(beta=4e-3, random_state=0, search_rounds=4).fit(X, y)
    assert clf.neurons_ == "shared"
    assert clf.objective_ <= cold.objective_ * (1 + 1e-3)
    assert clf.objective_ < first


def test_certify_network_covers_shared_networks():
    from convexbn.network_certificate import certify_network

    X, Y = tiny(2, seed=1)
    fit = fit_convex_bn(X, [Y], 0.3, neurons="shared", random_state=0)
    exact = make_arrangements(bn_basis(X), 100, method="exact")
    cert = certify_network(fit.network, X, Y, arrangements=exact)
    assert cert.exact and cert.certified
    assert cert.lower_bound == pytest.approx(fit.lower_bound, rel=1e-6)
    assert cert.objective == pytest.approx(fit.objective, rel=1e-8)
    # a worse shared network (output layer halved) is not certified, and its bound is still below the optimum
    worse = fit.network
    worse.output = worse.output * 0.5
    bad = certify_network(worse, X, Y, arrangements=exact)
    assert not bad.certified and bad.ratio > 1
    assert bad.lower_bound <= fit.objective + 1e-9


def test_cli_solve_fits_a_shared_network(tmp_path):
    from convexbn.cli import main

    out = tmp_path / "wine"
    assert main(["solve", "--data", "wine", "--rounds", "3", "--quiet", "--out", str(out)]) == 0
    import json

    report = json.loads((out / "report.json").read_text())
    assert report["neurons"] == "shared" and report["loss"] == "cross_entropy"
    assert report["equivalence_gap"] < 1e-6
    assert report["train_accuracy"] > 0.95
    per = tmp_path / "per"
    assert main(["solve", "--data", "wine", "--rounds", "3", "--quiet", "--neurons", "per_output",
                 "--beta", str(report["beta"]), "--out", str(per)]) == 0  # fmt: skip
    per_report = json.loads((per / "report.json").read_text())
    assert per_report["neurons"] == "per_output"
    assert report["objective"] < per_report["objective"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_ascent_reports_values_attained_in_float64(dtype):
    """The oracle's ascent runs in ``dtype`` (float32 by default); what it reports is computed in float64
    at the returned directions, so every value is attained and at most the exact maximum of (8b)."""
    X, Y = tiny(2, n=20)
    basis = bn_basis(X)
    lam = Y - Y.mean(0)
    value = exact_shared_value(basis.Uprime, lam, make_arrangements(basis, 100, method="exact").mask)[0]
    D, Z, c, h = ascent_neurons(basis.Uprime, lam, n_starts=50, random_state=0, dtype=dtype)
    assert Z.dtype == h.dtype == c.dtype == np.float64
    H = basis.Uprime @ Z.T
    B = lam.T @ np.maximum(H, 0)
    np.testing.assert_allclose(h, np.linalg.norm(B, axis=0), rtol=1e-12)
    norms = np.maximum(np.linalg.norm(B, axis=0), 1e-300)
    np.testing.assert_allclose(c, (B / norms).T, rtol=1e-10, atol=1e-14)
    clear = np.abs(H) > 1e-9  # (a sample exactly on a neuron's hyperplane may round either way)
    assert np.array_equal(D[clear], (H >= 0)[clear])
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1.0, rtol=1e-12)
    assert np.all(np.diff(h) <= 0) and len(np.unique(np.packbits(D, axis=0), axis=1).T) == D.shape[1]
    assert value * (1 - 1e-4) <= h[0] <= value * (1 + 1e-9)  # (a heuristic: near the maximum)


def test_the_atoms_search_merges_near_copies_after_its_last_round():
    """Small data, several classes (the atoms' route): FISTA over atoms spreads a neuron's weight over
    near-copies as the output lasso does; the merge after the last round keeps a point no worse, with far
    fewer neurons, and the network reproduces it (docs/solvers.md, "The shared-neuron search")."""
    from sklearn.datasets import load_iris

    from convexbn.fit_common import SearchOptions

    X, labels = load_iris(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    Y = np.where(labels[:, None] == np.arange(3)[None, :], 1.0, -1.0)
    spread = fit_convex_bn(X, list(Y.T), 1.0, loss="logistic", random_state=0,
                           search=SearchOptions(merge_min_cos=None))  # fmt: skip
    merged = fit_convex_bn(X, list(Y.T), 1.0, loss="logistic", random_state=0)
    assert merged.info == spread.info == {"neurons": "shared", "shared_inner": "atoms"}
    # the same rounds up to the merge, so the merged point is kept only when it is no worse
    assert merged.objective <= spread.objective
    assert merged.network.n_neurons * 3 < spread.network.n_neurons
    assert merged.network.objective(X, Y) == pytest.approx(merged.objective, rel=1e-9)
    assert merged.estimated_lower_bound <= merged.objective
