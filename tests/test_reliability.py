"""Faults a user meets on real data and long runs: each bad input gets an error naming it, each numerical
corner keeps the equivalence (3) == (4) or says why not, solver failures are loud, nothing is lost."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import scipy.sparse
import torch
from sklearn.exceptions import ConvergenceWarning, DataConversionWarning

from convexbn import (
    ConvexBNClassifier,
    ConvexBNProblem,
    ConvexBNRegressor,
    bn_basis,
    recover_network,
    sample_arrangements,
)
from convexbn.exceptions import CheckpointError
from convexbn.persistence import ModelFileError
from convexbn.problem import SolverError, SolverWarning
from convexbn.solvers import cvxpy_backend

RNG = np.random.default_rng(0)
X0 = RNG.standard_normal((30, 4))
Y0 = np.sin(X0[:, 0]) + 0.1 * RNG.standard_normal(30)
C0 = (X0[:, 0] > 0).astype(int)


def _small_regressor(**kw):
    # six sampled patterns: these tests are about failures and their messages, not the pattern search
    return ConvexBNRegressor(arrangements="sample", n_arrangements=6, random_state=0, **kw)


# --- bad input: the same message at the library function and at both estimators ---------------------
def _with_nan(X):
    X = X.copy()
    X[3, 1] = np.nan
    return X


def _with_inf(X):
    X = X.copy()
    X[3, 1] = -np.inf
    return X


BAD_X = [
    ("NaN", _with_nan(X0), ValueError, "Input X contains NaN"),
    ("inf", _with_inf(X0), ValueError, "Input X contains infinity"),
    ("strings", X0.astype(str), TypeError, r"X holds strings \(dtype <U"),
    (
        "objects",
        np.array([["a", 1.0]] * 30, dtype=object),
        TypeError,
        "X is an object array with non-numeric",
    ),
    ("1-D", X0[:, 0], ValueError, r"X must be 2-D .* got a 1-D array of shape \(30,\)"),
    ("3-D", X0.reshape(30, 2, 2), ValueError, "dim 3"),
    ("no rows", np.zeros((0, 4)), ValueError, r"0 sample\(s\)"),
    ("no columns", np.zeros((30, 0)), ValueError, r"0 feature\(s\)"),
    ("one sample", X0[:1], ValueError, r"1 sample\(s\) .* minimum of 2"),
    ("all constant", np.ones((30, 4)), ValueError, "X has no variance: every column is constant"),
]


@pytest.mark.parametrize("label, X, exc, match", BAD_X, ids=[b[0] for b in BAD_X])
def test_bad_X_everywhere(label, X, exc, match):
    with pytest.raises(exc, match=match):
        bn_basis(X)
    with pytest.raises(exc, match=match):
        _small_regressor().fit(X, Y0[: len(X)] if len(X) <= 30 else Y0)
    with pytest.raises(exc, match=match):
        ConvexBNClassifier(n_arrangements=6).fit(X, C0[: len(X)] if len(X) <= 30 else C0)


@pytest.mark.parametrize("label, X, exc, match", BAD_X[:6], ids=[b[0] for b in BAD_X[:6]])
def test_bad_X_at_predict(label, X, exc, match):
    model = _small_regressor().fit(X0, Y0)
    with pytest.raises(exc, match=match):
        model.predict(X)
    with pytest.raises(exc, match=match):
        model.network_.predict(X)


def test_wrong_feature_count_at_predict():
    model = _small_regressor().fit(X0, Y0)
    with pytest.raises(ValueError, match="X has 3 features, but ConvexBNRegressor is expecting 4"):
        model.predict(X0[:, :3])


def test_sparse_input_is_densified_with_a_warning_and_gives_the_same_model():
    dense = _small_regressor().fit(X0, Y0)
    with pytest.warns(DataConversionWarning, match=r"X is a sparse matrix of shape \(30, 4\); densified"):
        sparse = _small_regressor().fit(scipy.sparse.csr_matrix(X0), Y0)
    np.testing.assert_array_equal(sparse.predict(X0), dense.predict(X0))
    with pytest.warns(DataConversionWarning):
        np.testing.assert_array_equal(sparse.predict(scipy.sparse.csc_array(X0)), dense.predict(X0))


def test_huge_sparse_input_is_refused(monkeypatch):
    from convexbn import _validation

    monkeypatch.setattr(_validation, "DENSIFY_MAX_ENTRIES", 100)
    with pytest.raises(ValueError, match=r"X is a sparse matrix of shape \(30, 4\); .*TruncatedSVD"):
        bn_basis(scipy.sparse.csr_matrix(X0))


def test_torch_tensors_are_accepted_in_any_float_dtype():
    ref = _small_regressor().fit(X0, Y0)
    for dtype in (torch.float64, torch.float32):
        model = _small_regressor().fit(torch.as_tensor(X0, dtype=dtype), Y0)
        if dtype == torch.float64:
            np.testing.assert_array_equal(model.predict(X0), ref.predict(X0))
        else:  # the float32 data itself differs from X0 by rounding
            np.testing.assert_allclose(model.predict(X0), ref.predict(X0), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "y, exc, match",
    [
        (np.zeros(30, dtype=int), ValueError, r"needs samples of at least 2 classes .* got 1 class"),
        (
            Y0,
            ValueError,
            r"y: ConvexBNClassifier needs discrete class labels \(Unknown label type: continuous",
        ),
        (np.r_[np.nan, C0[1:]].astype(float), ValueError, "Input y contains NaN"),
        (np.array(["a"] * 15 + [1] * 15, dtype=object), TypeError, r"y mixes label types \['int', 'str'\]"),
        (C0[:-1], ValueError, r"inconsistent numbers of samples: \[30, 29\]"),
    ],
)
def test_bad_class_labels(y, exc, match):
    with pytest.raises(exc, match=match):
        ConvexBNClassifier(n_arrangements=6).fit(X0, y)


def test_whole_number_float_labels_are_classes():
    clf = ConvexBNClassifier(n_arrangements=6, random_state=0).fit(X0, C0.astype(float))
    np.testing.assert_array_equal(clf.classes_, [0.0, 1.0])


@pytest.mark.parametrize(
    "params, exc, match",
    [
        ({"beta": 0.0}, ValueError, "beta must be > 0, got 0.0"),
        ({"beta": -1e-3}, ValueError, "beta must be > 0, got -0.001"),
        ({"beta": float("inf")}, ValueError, "beta must be finite"),
        ({"beta": "1e-3"}, TypeError, "beta must be a real number, got str"),
        ({"n_arrangements": 0}, ValueError, "n_arrangements must be >= 1, got 0"),
        ({"n_arrangements": -5}, ValueError, "n_arrangements must be >= 1, got -5"),
        ({"n_arrangements": 2.5}, TypeError, "n_arrangements must be an integer, got float"),
        ({"dtype": "float16"}, ValueError, "unknown dtype 'float16'"),
        ({"device": "tpu"}, ValueError, "unknown device 'tpu'"),
        ({"solver": "gurobi"}, ValueError, "unknown solver 'gurobi'"),
        ({"loss": "l1"}, ValueError, "unknown loss 'l1'"),
    ],
)
def test_bad_parameters(params, exc, match):
    with pytest.raises(exc, match=match):
        ConvexBNRegressor(**params).fit(X0, Y0)


def test_bad_parameters_at_the_core():
    basis = bn_basis(X0)
    with pytest.raises(ValueError, match="n_arrangements must be >= 1, got 0"):
        sample_arrangements(basis, 0)
    arr = sample_arrangements(basis, 5, random_state=0)
    problem = ConvexBNProblem(basis, arr, Y0, beta=0.1)
    with pytest.raises(ValueError, match="dtype must be torch.float32 or torch.float64, got torch.float16"):
        problem.solve("torch", dtype=torch.float16)
    with pytest.raises(TypeError, match="unexpected keyword argument 'foo'"):
        problem.solve("torch", foo=1)
    with pytest.raises(ValueError, match="prune_tol must be >= 0"):
        problem.solve("clarabel", prune_tol=-1.0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when there is no CUDA device")
def test_cuda_without_a_device_is_a_clear_error():
    with pytest.raises(ValueError, match="device='cuda' was requested but torch finds no CUDA device"):
        ConvexBNRegressor(solver="torch", device="cuda", n_arrangements=5).fit(X0, Y0)
    with pytest.raises(ValueError, match="device='cuda' was requested but torch finds no CUDA device"):
        ConvexBNRegressor(solver="auto", device="cuda", n_arrangements=5).fit(X0, Y0)


# --- numerics: the equivalence (3) == (4) holds in every corner, or the result says why not ----------
def _scenarios():
    rng = np.random.default_rng(1)
    n, d = 40, 5
    X = rng.standard_normal((n, d))
    y = np.sin(X[:, 0]) + 0.1 * rng.standard_normal(n)
    collinear = X.copy()
    collinear[:, 1] = X[:, 0] + 1e-9 * rng.standard_normal(n)
    constant = X.copy()
    constant[:, 2] = 7.0
    wide = rng.standard_normal((10, 200))
    tall = rng.standard_normal((1500, 2))
    return {
        "nearly collinear": (collinear, y, 0.1),
        "scales 1e-8..1e8": (X * np.logspace(-8, 8, d), y, 0.1),
        "duplicated samples": (np.vstack([X, X[:10]]), np.r_[y, y[:10]], 0.1),
        "d >> n": (wide, rng.standard_normal(10), 0.1),
        "n >> d": (tall, np.sin(3 * tall[:, 0]), 0.1),
        "constant feature": (constant, y, 0.1),
        "tiny beta": (X, y, 1e-8),
        "targets of size 1e6": (X, 1e6 * y, 0.1),
    }


SCENARIOS = _scenarios()


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_equivalence_holds_in_numerical_corners(name):
    X, y, beta = SCENARIOS[name]
    basis = bn_basis(X)
    problem = ConvexBNProblem(basis, sample_arrangements(basis, 20, random_state=0), y, beta=beta)
    sol = problem.solve("clarabel")
    assert sol.status == "optimal"
    net = recover_network(sol)
    assert net.objective(X, y) == pytest.approx(sol.objective, rel=1e-6)
    assert sol.objective <= 0.5 * np.sum(y**2) * (1 + 1e-9)  # never worse than the empty network


def test_scaled_basis_keeps_tiny_features_and_the_spec_basis_loses_them():
    X, y, _ = SCENARIOS["scales 1e-8..1e8"]
    assert bn_basis(X).rank == 5
    literal = bn_basis(X, scale_features=False)
    assert literal.rank == 4  # the 1e-8 column is below max(n, d) eps relative to the 1e8 one
    # the same program either way when no direction is lost: U spans the same space, so the exact
    # arrangements are the same set of patterns and the optima agree
    from convexbn import enumerate_arrangements

    Xs = np.random.default_rng(5).standard_normal((12, 2)) * [1e-3, 1e3]
    ys = np.cos(Xs[:, 0] * 1e3)
    optima, patterns = [], []
    for b in (bn_basis(Xs), bn_basis(Xs, scale_features=False)):
        arr = enumerate_arrangements(b)
        patterns.append({m.tobytes() for m in arr.mask.T})
        optima.append(ConvexBNProblem(b, arr, ys, beta=0.05).solve("clarabel").objective)
    assert patterns[0] == patterns[1]
    assert optima[0] == pytest.approx(optima[1], rel=1e-6)


def test_large_targets_are_solved_at_unit_scale():
    X, y, beta = SCENARIOS["targets of size 1e6"]
    basis = bn_basis(X)
    problem = ConvexBNProblem(basis, sample_arrangements(basis, 20, random_state=0), y, beta=beta)
    assert cvxpy_backend.target_scale(problem) == pytest.approx(np.sqrt(np.mean(y**2)))
    sol = problem.solve("clarabel")
    assert sol.info["target_scale"] > 1e5
    # the program at unit scale, solved by hand: objective / s^2 and beta / s
    s = sol.info["target_scale"]
    small = ConvexBNProblem(basis, problem.arrangements, y / s, beta=beta / s).solve("clarabel")
    assert sol.objective == pytest.approx(small.objective * s**2, rel=1e-6)


def test_huge_beta_is_a_valid_empty_network_in_the_estimator():
    model = _small_regressor(beta=1e9).fit(X0, Y0)
    assert model.n_neurons_ == 0
    np.testing.assert_array_equal(model.predict(X0), 0.0)
    assert model.objective_ == pytest.approx(0.5 * np.mean(Y0**2), rel=1e-9)
    assert model.equivalence_gap_ == 0.0


def test_tiny_beta_interpolates_and_the_torch_solver_says_when_it_is_not_done():
    X, y, beta = SCENARIOS["tiny beta"]
    model = ConvexBNRegressor(beta=beta / len(y), arrangements="sample", n_arrangements=20, random_state=0)
    model.fit(X, y)
    assert model.objective_ < 1e-7 and model.equivalence_gap_ < 1e-6
    basis = bn_basis(X)
    problem = ConvexBNProblem(basis, sample_arrangements(basis, 20, random_state=0), y, beta=beta)
    with pytest.warns(SolverWarning, match="returned status 'optimal_inaccurate'"):
        sol = problem.solve("torch", max_iter=200)
    assert sol.status == "optimal_inaccurate"
    # inaccurate, yet feasible: the recovered network is exactly what the objective says
    assert recover_network(sol).objective(X, y) == pytest.approx(sol.objective, rel=1e-9)


def test_estimator_reports_the_equivalence_gap_and_warns_when_it_fails(monkeypatch):
    model = _small_regressor(solver="clarabel").fit(X0, Y0)
    assert model.equivalence_gap_ < 1e-8
    # an infeasible "solution" (cone constraints broken): the gap is measured and explained
    import dataclasses

    from convexbn import fit

    real = fit._solve

    def broken(problem, requested, options, warm=None):
        solution, fallback = real(problem, requested, options, warm)
        broken = dataclasses.replace(solution, objective=0.9 * solution.objective, constraint_violation=0.25)
        return broken, fallback

    monkeypatch.setattr(fit, "_solve", broken)
    with pytest.warns(ConvergenceWarning, match=r"differs from the convex objective .* violation 2\.5e-01"):
        bad = _small_regressor(solver="clarabel").fit(X0, Y0)
    assert bad.equivalence_gap_ == pytest.approx(1 / 0.9 - 1, rel=1e-6)


# --- solver failures: loud, with the documented fallback ---------------------------------------------
def _problem(beta=1e-3):
    basis = bn_basis(X0)
    return ConvexBNProblem(basis, sample_arrangements(basis, 8, random_state=0), Y0, beta=beta)


def test_solver_not_installed(monkeypatch):
    with pytest.raises(ValueError, match=r"cvxpy solver 'GUROBI' is not installed; installed solvers: \["):
        _problem().solve("cvxpy", cvxpy_solver="GUROBI")
    import cvxpy

    monkeypatch.setattr(cvxpy, "installed_solvers", lambda: ["CLARABEL"])
    with pytest.raises(ValueError, match=r"'SCS' is not installed \(pip install scs\)"):
        _problem().solve("scs")


def test_mosek_without_license_falls_back_to_clarabel(monkeypatch):
    monkeypatch.setattr(
        cvxpy_backend, "mosek_license", lambda: (False, "MOSEK is installed but has no usable license (test)")
    )
    with pytest.warns(SolverWarning, match=r"no usable license \(test\); falling back to CLARABEL"):
        sol = _problem().solve("mosek")
    assert sol.solver == "cvxpy:CLARABEL" and sol.status == "optimal"
    with pytest.warns(SolverWarning, match="falling back to CLARABEL"):
        model = _small_regressor(solver="mosek").fit(X0, Y0)
    assert model.solver_ == "clarabel"


def test_interior_point_stopped_early_is_an_error_never_optimal():
    with pytest.raises(
        SolverError, match=r"CLARABEL found no optimal solution \(attempt 1: status 'user_limit'\)"
    ):
        _problem().solve("clarabel", max_iter=2)


def test_clarabel_failure_is_retried_then_reported(monkeypatch):
    calls = []
    real = cvxpy_backend._run

    def flaky(prob, name, verbose, options):
        calls.append(options)
        if len(calls) < 3:
            raise SolverError("cvxpy solver CLARABEL failed: injected")
        real(prob, name, verbose, options)

    monkeypatch.setattr(cvxpy_backend, "_run", flaky)
    sol = _problem().solve("clarabel")
    assert sol.status == "optimal" and sol.info["attempts"] == 3 and sol.info["retried"]
    assert calls[1:] == list(cvxpy_backend.CLARABEL_RETRIES[:2])
    ref = _problem()
    monkeypatch.setattr(cvxpy_backend, "_run", real)
    assert sol.objective == pytest.approx(ref.solve("clarabel").objective, rel=1e-6)

    def dead(prob, name, verbose, options):
        raise SolverError("cvxpy solver CLARABEL failed: injected")

    monkeypatch.setattr(cvxpy_backend, "_run", dead)
    with pytest.raises(SolverError, match=r"attempt 4: .*injected\)\. Try solver='torch'"):
        _problem().solve("clarabel")


def test_inaccurate_interior_point_is_labelled_and_warned(monkeypatch):
    import cvxpy

    real = cvxpy_backend._run

    def inaccurate(prob, name, verbose, options):
        real(prob, name, verbose, options)
        prob._status = cvxpy.OPTIMAL_INACCURATE

    monkeypatch.setattr(cvxpy_backend, "_run", inaccurate)
    with pytest.warns(SolverWarning, match="returned status 'optimal_inaccurate'"):
        sol = _problem().solve("clarabel")
    assert sol.status == "optimal_inaccurate" and sol.info["attempts"] == 2  # retried once, not four times
    with pytest.warns(ConvergenceWarning, match="stopped before reaching the requested accuracy"):
        _small_regressor(solver="clarabel").fit(X0, Y0)


def test_auto_falls_back_to_torch_when_the_conic_solver_fails(monkeypatch):
    def dead(prob, name, verbose, options):
        raise SolverError("cvxpy solver CLARABEL failed: injected")

    monkeypatch.setattr(cvxpy_backend, "_run", dead)
    # the hinge loss is the one "auto" gives to Clarabel (the smooth losses go to the torch solver)
    hinge = {"loss": "hinge", "arrangements": "sample", "n_arrangements": 6, "random_state": 0}
    with pytest.warns(SolverWarning, match="solved it with the torch solver instead"):
        model = ConvexBNClassifier(solver="auto", **hinge).fit(X0, C0)
    assert model.solver_ == "torch"
    with pytest.raises(SolverError, match="found no optimal solution"):
        ConvexBNClassifier(solver="clarabel", **hinge).fit(X0, C0)
    with pytest.raises(SolverError, match="found no optimal solution"):
        _small_regressor(solver="clarabel").fit(X0, Y0)


# --- nothing lost: checkpoints survive a killed process; model files are atomic and checked ---------
CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from convexbn import ConvexBNProblem, bn_basis, sample_arrangements

    rng = np.random.default_rng(3)
    X = rng.standard_normal((60, 5))
    y = np.sin(2 * X[:, 0]) + X[:, 1] ** 2
    basis = bn_basis(X)
    problem = ConvexBNProblem(basis, sample_arrangements(basis, 30, random_state=0), y, beta=0.05)

    def slow(*args):  # slows the child down without touching the iterates
        time.sleep(float(sys.argv[3]))
        return False

    sol = problem.solve("torch", method=sys.argv[2], checkpoint=sys.argv[1], checkpoint_every=20,
                        resume=True, callback=slow)
    print("finished", sol.n_iter)
    """
)


def _child_problem():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((60, 5))
    y = np.sin(2 * X[:, 0]) + X[:, 1] ** 2
    basis = bn_basis(X)
    return ConvexBNProblem(basis, sample_arrangements(basis, 30, random_state=0), y, beta=0.05)


@pytest.mark.parametrize("method", ["fista", "admm"])
def test_checkpoint_survives_a_killed_process(tmp_path, method):
    problem = _child_problem()
    full = problem.solve("torch", method=method)
    assert full.n_iter > 100  # long enough to be killed in the middle

    script = tmp_path / "child.py"
    script.write_text(CHILD)
    ckpt = tmp_path / "solve.ckpt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, str(script), str(ckpt), method, "0.05"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.time() + 900  # a hang guard for a loaded machine, not a timing assertion
        while not ckpt.exists() and time.time() < deadline and child.poll() is None:
            time.sleep(0.05)
        first = ckpt.stat().st_mtime_ns
        while ckpt.stat().st_mtime_ns == first and time.time() < deadline and child.poll() is None:
            time.sleep(0.05)  # a second checkpoint: the child is well inside the solve
        assert child.poll() is None, child.communicate()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    saved = torch.load(ckpt, weights_only=True)["state"]
    assert 0 < saved["it"] < full.n_iter
    # no temporary files left behind by the atomic writes (beyond a possible one being written)
    assert len([p for p in os.listdir(tmp_path) if p.endswith(".tmp")]) <= 1

    resumed = problem.solve("torch", method=method, checkpoint=ckpt, checkpoint_every=20, resume=True)
    assert resumed.n_iter == full.n_iter
    np.testing.assert_array_equal(resumed.W_pos, full.W_pos)
    np.testing.assert_array_equal(resumed.W_neg, full.W_neg)
    assert resumed.objective == full.objective


def test_bad_checkpoints_are_refused(tmp_path):
    problem = _child_problem()
    ckpt = tmp_path / "state.ckpt"
    with pytest.warns(SolverWarning):
        problem.solve("torch", method="fista", checkpoint=ckpt, checkpoint_every=20, max_iter=40)
    raw = ckpt.read_bytes()

    torn = tmp_path / "torn.ckpt"
    torn.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="cannot be read \\(truncated or corrupt\\?\\)"):
        problem.solve("torch", method="fista", checkpoint=torn, resume=True)

    other = ConvexBNProblem(problem.basis, problem.arrangements, problem.Y[:, 0] * 2, beta=0.05)
    with pytest.raises(CheckpointError, match="was written for another problem"):
        other.solve("torch", method="fista", checkpoint=ckpt, resume=True)
    with pytest.raises(CheckpointError, match="was written for another problem"):
        problem.solve("torch", method="admm", checkpoint=ckpt, resume=True)
    with pytest.raises(CheckpointError, match="was written for another problem"):
        problem.solve("torch", method="fista", dtype=torch.float32, checkpoint=ckpt, resume=True)

    foreign = tmp_path / "foreign.ckpt"
    torch.save({"X": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="is not a convexbn solver checkpoint"):
        problem.solve("torch", method="fista", checkpoint=foreign, resume=True)

    # a pickle that would run code when unpickled: weights_only loading refuses it, nothing runs
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    evil = tmp_path / "evil.ckpt"
    torch.save({"format": "convexbn-checkpoint", "payload": Evil()}, evil)
    with pytest.raises(CheckpointError, match="cannot be read"):
        problem.solve("torch", method="fista", checkpoint=evil, resume=True)
    assert not (tmp_path / "pwned").exists()


def test_model_files_never_unpickle_and_saves_are_atomic(tmp_path, monkeypatch):
    model = _small_regressor().fit(X0, Y0)
    path = tmp_path / "model.npz"
    model.save(path)
    before = path.read_bytes()

    # an archive holding a pickled object array: refused without unpickling
    with np.load(path) as data:
        contents = {name: data[name] for name in data.files}
    contents["weights"] = np.array([object()], dtype=object)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, **contents)
    with pytest.raises(ModelFileError, match="not a readable convexbn model file"):
        ConvexBNRegressor.load(pickled)

    # a save that dies half-way leaves the previous file untouched and no temporary file
    real = np.savez

    def dying(file, **arrays):
        real(file, **{k: arrays[k] for k in list(arrays)[:2]})
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(np, "savez", dying)
    with pytest.raises(KeyboardInterrupt):
        _small_regressor(beta=1.0).fit(X0, Y0).save(path)
    monkeypatch.setattr(np, "savez", real)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.npz", "pickled.npz"]
    np.testing.assert_array_equal(ConvexBNRegressor.load(path).predict(X0), model.predict(X0))


# --- determinism: same seed, same arrangements, same bits ---------------------------------------------
@pytest.mark.parametrize("solver", ["clarabel", "torch"])
def test_same_seed_gives_bit_identical_results(solver):
    fits = [ConvexBNRegressor(n_arrangements=15, random_state=7, solver=solver).fit(X0, Y0) for _ in range(2)]
    for name in ("weights", "gamma", "alpha", "output", "running_mean", "running_norm"):
        np.testing.assert_array_equal(getattr(fits[0].network_, name), getattr(fits[1].network_, name))
    assert fits[0].objective_ == fits[1].objective_
    other = ConvexBNRegressor(n_arrangements=15, random_state=8, solver=solver).fit(X0, Y0)
    assert other.objective_ != fits[0].objective_
    basis = bn_basis(X0)
    np.testing.assert_array_equal(
        sample_arrangements(basis, 15, random_state=7).mask,
        sample_arrangements(basis, 15, random_state=7).mask,
    )


# --- the torch network and its trainer ------------------------------------------------------------------
def test_network_and_trainer_inputs():
    from convexbn.nn import TwoLayerNet, train_network

    def net(**kw):
        return TwoLayerNet(4, 3, 1, n_train=30, **kw)

    with pytest.raises(ValueError, match="n_neurons must be >= 1, got 0"):
        TwoLayerNet(4, 0, 1, n_train=30)
    with pytest.raises(ValueError, match="n_train must be >= 2 for a normalized network"):
        TwoLayerNet(4, 3, 1, n_train=1)
    with pytest.raises(ValueError, match="unknown norm 'layer'"):
        net(norm="layer")
    with pytest.raises(ValueError, match="X has 3 features, the model expects 4"):
        net().to_network(X0[:, :3], beta=0.1)
    with pytest.raises(ValueError, match="X has 3 features, the model expects 4"):
        train_network(net(), X0[:, :3], Y0, beta=0.1, epochs=1)
    with pytest.raises(ValueError, match="targets contain NaN or infinity"):
        train_network(net(), X0, np.r_[np.nan, Y0[1:]], beta=0.1, epochs=1)
    with pytest.raises(ValueError, match="Input X contains NaN"):
        train_network(net(), _with_nan(X0), Y0, beta=0.1, epochs=1)
    with pytest.raises(ValueError, match="beta must be > 0"):
        train_network(net(), X0, Y0, beta=0.0, epochs=1)
    with pytest.raises(ValueError, match="lr must be > 0"):
        train_network(net(), X0, Y0, beta=0.1, epochs=1, lr=-1.0)
    # numpy float64 data into a float32 model, and torch tensors: converted to the model's dtype
    run32 = train_network(net(dtype=torch.float32), X0, Y0, beta=0.1, epochs=2, random_state=0)
    run64 = train_network(net(), torch.as_tensor(X0), Y0, beta=0.1, epochs=2, random_state=0)
    assert np.isfinite(run32.objective) and np.isfinite(run64.objective)
