"""The installed ``convexbn`` entry point, run in a subprocess, and its one-line errors (exit status 2)."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import HAS_NUMBA

from convexbn.cli import main
from convexbn.data import load_dataset
from convexbn.persistence import load_network

EXE = shutil.which("convexbn")


def _run(*args, cwd=None):
    cmd = [EXE] if EXE else [sys.executable, "-m", "convexbn.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=cwd, timeout=1800)


@pytest.fixture
def regression_csv(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    y = np.sin(2 * X[:, 0]) + X[:, 1]
    path = tmp_path / "data.csv"
    lines = ["a,b,c,response"] + [",".join(f"{v:.17g}" for v in [*x, t]) for x, t in zip(X, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path, X, y


def test_entry_point_is_installed():
    assert EXE is not None, "pip install -e . should install the convexbn command"


def test_solve_csv_end_to_end(regression_csv, tmp_path):
    path, X, y = regression_csv
    out = tmp_path / "out"
    res = _run(
        "solve", "--data", str(path), "--beta", "0.1", "--arrangements", "20", "--out", str(out), "--quiet"
    )
    assert res.returncode == 0, res.stderr
    assert "objective" in res.stdout and "certificate" in res.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["loss"] == "squared" and report["n_samples"] == 40 and report["status"] == "optimal"
    assert report["equivalence_gap"] < 1e-6
    # the saved network, loaded back, gives the reported objective by a plain forward pass
    network, stored = load_network(out / "network.npz")
    assert stored == report
    assert network.objective(X, y) == pytest.approx(report["objective"], rel=1e-6)
    assert network.n_neurons == report["n_neurons"] > 0
    assert (out / "fit.png").stat().st_size > 1000


def test_solve_with_implicit_reg(regression_csv, tmp_path):
    from convexbn import bn_basis, implicit_objective

    path, X, y = regression_csv
    out = tmp_path / "out"
    res = _run("solve", "--data", str(path), "--beta", "0.1", "--arrangements", "20", "--implicit-reg",
               "power:0.5", "--solver", "clarabel", "--out", str(out), "--quiet")  # fmt: skip
    assert res.returncode == 0, res.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["implicit_reg"] == "power:0.5" and report["equivalence_gap"] < 1e-6
    network, _ = load_network(out / "network.npz")
    value = implicit_objective(network, X, y, bn_basis(X), "power:0.5")
    assert value == pytest.approx(report["objective"], rel=1e-6)
    assert network.objective(X, y) <= report["objective"] + 1e-9
    res = _run("solve", "--data", str(path), "--implicit-reg", "whiten", "--out", str(out), "--quiet")
    assert res.returncode == 2 and "cannot parse implicit_reg='whiten'" in res.stderr


def test_solve_npz_classification_and_bundled(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((50, 2))
    labels = np.where(X[:, 0] * X[:, 1] > 0, 3, 7)
    np.savez(tmp_path / "d.npz", X=X, labels=labels)
    res = _run("solve", "--data", str(tmp_path / "d.npz"), "--target", "labels", "--arrangements", "15",
               "--out", str(tmp_path / "o"), "--quiet")  # fmt: skip
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["loss"] == "logistic" and report["classes"] == ["3", "7"]
    assert report["equivalence_gap"] < 1e-6
    res = _run("solve", "--data", "iris", "--arrangements", "8", "--beta", "5", "--solver", "torch",
               "--out", str(tmp_path / "iris"), "--quiet")  # fmt: skip
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "iris" / "report.json").read_text())
    assert report["loss"] == "cross_entropy" and report["solver"].startswith("torch")
    assert report["equivalence_gap"] < 1e-6


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "missing.csv"], "no such data file 'missing.csv'"),
        (["--data", "BAD", "--target", "nope"], "has no column 'nope'; its columns are ['a', 'b', 'label']"),
        (["--data", "BAD"], "column 'b' is not numeric (line 4: 'six'); encode it or drop it"),
        (["--data", "iris", "--beta", "-1"], "argument --beta: must be a finite number > 0, got '-1'"),
        (["--data", "iris", "--loss", "logistic"], "loss 'logistic' needs two classes"),
        (["--data", "iris", "--arrangements", "0"], "argument --arrangements: must be >= 1, got '0'"),
        pytest.param(
            ["--data", "iris", "--solver", "torch", "--device", "cuda"],
            "device='cuda' was requested but torch finds no CUDA device",
            marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is present"),
        ),
        (["--data", "NAN"], "line 3, column 'b' has a missing value ('nan')"),
    ],
)
def test_errors_are_one_line_with_status_2(tmp_path, args, message, capsys, monkeypatch):
    # in this process (the entry point itself runs in a subprocess in the tests around): the same main(),
    # without a 3-4 s interpreter start per case
    (tmp_path / "bad.csv").write_text("a,b,label\n1,2,x\n3,4,y\n5,six,x\n")
    (tmp_path / "nan.csv").write_text("a,b,y\n1,2,0\n3,nan,1\n5,6,0\n7,8,1\n")
    args = [{"BAD": "bad.csv", "NAN": "nan.csv"}.get(a, a) for a in args]
    monkeypatch.chdir(tmp_path)
    from convexbn.cli import main

    try:
        status = main(["solve", *args, "--quiet"])
    except SystemExit as exc:  # argparse's errors exit from parse_args, as in the entry point
        status = exc.code
    stderr = capsys.readouterr().err
    assert status == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convexbn solve: error: ")
    assert message in lines[0]


def test_argparse_errors_exit_2():
    res = _run("solve", "--solver", "gurobi")
    assert res.returncode == 2 and "invalid choice: 'gurobi'" in res.stderr


def test_solver_not_installed_is_one_line(monkeypatch, capsys):
    import cvxpy

    monkeypatch.setattr(cvxpy, "installed_solvers", lambda: ["CLARABEL"])
    assert main(["solve", "--data", "iris", "--solver", "scs", "--arrangements", "5", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("convexbn solve: error: cvxpy solver 'SCS' is not installed (pip install scs)")


def test_solvers_command():
    res = _run("solvers")
    assert res.returncode == 0 and "clarabel" in res.stdout and "torch" in res.stdout
    # the torch line names its devices and which cone projections it runs on the CPU
    torch_line = next(line for line in res.stdout.splitlines() if line.startswith("torch"))
    assert "CPU" in torch_line
    assert ("numba cone projections" in torch_line) == HAS_NUMBA


def test_load_dataset_paths(tmp_path):
    ds = load_dataset("diabetes")
    assert ds.X.shape == (442, 10) and not ds.classification
    assert load_dataset("wine").classification
    np.savez(tmp_path / "bad.npz", X=np.zeros(3), y=np.zeros(3))
    with pytest.raises(ValueError, match=r"X must be 2-D"):
        load_dataset(str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "noy.npz", X=np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"has no array 'y'; it holds \['X'\]"):
        load_dataset(str(tmp_path / "noy.npz"))
    (tmp_path / "x.txt").write_text("1")
    with pytest.raises(ValueError, match="unknown data format"):
        load_dataset(str(tmp_path / "x.txt"))
    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n3\n")
    with pytest.raises(ValueError, match="line 3 has 1 fields, the header has 2"):
        load_dataset(str(tmp_path / "ragged.csv"))


# ------------------------------------------------------------------------- compare, path and certify
def test_compare_end_to_end(tmp_path):
    out = tmp_path / "cmp"
    res = _run("compare", "--data", "breast_cancer", "--arrangements", "20", "--epochs", "3", "--variants",
               "bn-sgd", "bn-adam", "--landscape-every", "0", "--out", str(out), "--quiet")  # fmt: skip
    assert res.returncode == 0, res.stderr
    record = json.loads((out / "compare.json").read_text())
    assert set(record["variants"]) == {"bn-sgd", "bn-adam"}
    assert record["n_samples"] == 426 and record["loss"] == "logistic"
    convex, grown = record["convex"], record["convex_with_sgd_patterns"]
    assert convex["forward_objective"] == pytest.approx(convex["objective"], rel=1e-6)
    # the trained networks are feasible for the grown program, so its optimum is below each of them
    for run in record["variants"].values():
        assert grown["objective"] <= run["objective"] * (1 + 1e-6)
    # the default row is the pattern search: one curve point per round, falling to the reported objective
    assert convex["arrangements_method"] == "search" and len(convex["curve"]) >= 2
    objectives = [p["objective"] for p in convex["curve"]]
    assert objectives[-1] == pytest.approx(convex["objective"], rel=1e-12)
    assert objectives[-1] < objectives[0]
    # one output column with n k above UNIT_NEURONS_MIN_SIZE: the shared program's unit neurons, grown
    # from none (the per-output search's sample of --arrangements 20 is not its start)
    assert convex["solver"].startswith("torch-unit-neurons")
    assert convex["curve"][0]["n_patterns"] == 0 < convex["n_arrangements"]
    assert convex["lower_bound"] <= convex["estimated_lower_bound"] <= convex["objective"]
    table = (out / "table.txt").read_text()
    assert table in res.stdout and "bn-adam" in table
    assert f"convex (search, P={convex['n_arrangements']}, {len(objectives) - 1} rounds)" in table
    assert "bound: certified lower bound" in table
    assert (out / "objective_vs_time.png").stat().st_size > 1000


def test_compare_unknown_variant_is_one_line():
    res = _run("compare", "--variants", "bn-sgd", "lbfgs", "--quiet")
    assert res.returncode == 2
    assert res.stderr.strip() == (
        "convexbn compare: error: unknown --variants ['lbfgs']; choose from ['bn-sgd', 'bn-adam', "
        "'batchnorm1d-adam', 'fn-sgd', 'pn-sgd', 'pn-gamma-decay-sgd', 'bnp-sgd', 'plain-sgd']"
    )


def test_path_end_to_end(regression_csv, tmp_path):
    path, _, _ = regression_csv
    out = tmp_path / "path"
    res = _run(
        "path", "--data", str(path), "--arrangements", "15", "--n-betas", "3", "--rounds", "2",
        "--out", str(out), "--quiet",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    record = json.loads((out / "path.json").read_text())
    betas = [p["beta"] for p in record["points"]]
    assert betas == sorted(betas, reverse=True) and betas[0] == pytest.approx(0.95 * record["critical_beta"])
    for p in record["points"]:
        assert p["forward_objective"] == pytest.approx(p["objective"], rel=1e-6)
    neurons = [p["n_neurons"] for p in record["points"]]
    assert neurons[0] >= 1 and neurons[-1] >= neurons[0]
    assert (out / "path.png").stat().st_size > 1000
    res = _run("path", "--data", str(path), "--betas", "1", "-2", "--quiet", "--out", str(out))
    assert res.returncode == 2 and "argument --betas: must be a finite number > 0, got '-2'" in res.stderr


@pytest.fixture
def tiny_csv(tmp_path):
    """n = 12, d = 2: small enough to enumerate every arrangement."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((12, 2))
    y = np.sin(2 * X[:, 0]) + 0.5 * X[:, 1]
    path = tmp_path / "tiny.csv"
    path.write_text(
        "a,b,y\n" + "\n".join(f"{a:.17g},{b:.17g},{t:.17g}" for (a, b), t in zip(X, y, strict=True))
    )
    return path, X, y


def test_certify_saved_network(tiny_csv, tmp_path):
    from convexbn.persistence import save_network

    path, X, y = tiny_csv
    out = tmp_path / "solved"
    res = _run("solve", "--data", str(path), "--beta", "0.1", "--solver", "torch", "--arrangements", "1000",
               "--out", str(out), "--quiet")  # fmt: skip
    assert res.returncode == 0, res.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["exact_arrangements"]  # Cover's bound is below 1000: every pattern was used
    res = _run("certify", str(out / "network.npz"), "--data", str(path), "--exact")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "CERTIFIED" in res.stdout and "bound on the global optimum" in res.stdout
    # a perturbed network is not optimal: exit status 1
    network, _ = load_network(out / "network.npz")
    network.output = network.output * 1.2
    save_network(network, tmp_path / "worse.npz")
    res = _run("certify", str(tmp_path / "worse.npz"), "--data", str(path), "--exact")
    assert res.returncode == 1 and "NOT certified" in res.stdout
    # the training data is required
    res = _run("certify", str(out / "network.npz"), "--data", "iris")
    assert res.returncode == 2
    assert "the network was trained on 12 samples of 2 features; --data iris has shape (150, 4)" in res.stderr
    res = _run("certify", str(tmp_path / "missing.npz"), "--data", str(path))
    assert res.returncode == 2 and res.stderr.startswith("convexbn certify: error: ")


def test_certify_network_matches_solution_certificate(tiny_csv):
    """certify_network (no solver) gives the solution's own certificate when the network is the solution."""
    from convexbn import ConvexBNProblem, bn_basis, enumerate_arrangements, recover_network
    from convexbn.network_certificate import certify_network

    _, X, y = tiny_csv
    basis = bn_basis(X)
    every = enumerate_arrangements(basis)
    for loss, target in (("squared", y), ("logistic", np.sign(y))):
        problem = ConvexBNProblem(basis, every, target, beta=0.2, loss=loss)
        solution = problem.solve("torch", tol=1e-10)
        by_solution = problem.certificate(solution)
        by_network = certify_network(recover_network(solution), X, target, arrangements=every)
        assert by_network.exact and by_network.certified
        assert by_network.lower_bound == pytest.approx(by_solution.lower_bound, rel=1e-9)
        assert by_network.objective == pytest.approx(solution.objective, rel=1e-9)
        assert by_network.relative_gap < 1e-8
    # a network whose neurons feed several outputs is checked against condition (8b) of the shared class
    from convexbn import BNNetwork

    shared = BNNetwork.from_parameters(X, np.eye(2), np.ones(2), np.zeros(2), np.ones((2, 2)), beta=1.0)
    cert = certify_network(shared, X, np.c_[y, y])
    assert cert.objective == pytest.approx(shared.objective(X, np.c_[y, y]), rel=1e-12)
    assert cert.lower_bound <= cert.objective and cert.worst_pattern == -1
    hinge = BNNetwork.from_parameters(X, np.eye(2), np.ones(2), np.zeros(2), np.ones((2, 2)), beta=1.0,
                                      loss="hinge")  # fmt: skip
    with pytest.raises(ValueError, match="shared-neuron certificate needs a smooth loss"):
        certify_network(hinge, X, np.sign(np.c_[y, y]))


def test_critical_beta_is_where_the_network_empties(tiny_csv):
    from convexbn import ConvexBNProblem, bn_basis, sample_arrangements
    from convexbn.path import critical_beta

    _, X, y = tiny_csv
    basis = bn_basis(X)
    arrangements = sample_arrangements(basis, 30, random_state=0)
    for loss, target in (("squared", y), ("logistic", np.sign(y))):
        beta = critical_beta(basis, arrangements, target, loss=loss)
        above = ConvexBNProblem(basis, arrangements, target, beta=1.001 * beta, loss=loss).solve("cvxpy")
        below = ConvexBNProblem(basis, arrangements, target, beta=0.95 * beta, loss=loss).solve("cvxpy")
        assert above.n_neurons == 0 and below.n_neurons >= 1


# ------------------------------------------------------------------------------------ MNIST / CIFAR-10
def _write_idx(path, array, magic):
    with open(path, "wb") as handle:
        handle.write(magic.to_bytes(4, "big"))
        for size in array.shape:
            handle.write(int(size).to_bytes(4, "big"))
        handle.write(array.astype(np.uint8).tobytes())


@pytest.fixture
def mnist_root(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem, n in (("train", 30), ("t10k", 10)):
        images = rng.integers(0, 256, (n, 28, 28))
        labels = np.arange(n) % 3
        _write_idx(raw / f"{stem}-images-idx3-ubyte", images, 0x803)
        _write_idx(raw / f"{stem}-labels-idx1-ubyte", labels, 0x801)
    return tmp_path / "mnist"


def test_mnist_reader_and_cli(mnist_root, tmp_path):
    ds = load_dataset(f"mnist:{mnist_root}")
    images = np.fromfile(mnist_root / "MNIST/raw/train-images-idx3-ubyte", dtype=np.uint8)[16:]
    assert ds.X.shape == (30, 784) and ds.classification
    np.testing.assert_array_equal(ds.X.ravel(), images / 255.0)
    np.testing.assert_array_equal(ds.y, np.arange(30) % 3)
    assert load_dataset(f"mnist:{mnist_root}", split="test").X.shape == (10, 784)
    assert load_dataset(f"mnist:{mnist_root}", max_samples=7).X.shape == (7, 784)
    res = _run("solve", "--data", f"mnist:{mnist_root}", "--arrangements", "5", "--beta", "1",
               "--out", str(tmp_path / "m"), "--quiet")  # fmt: skip
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "m" / "report.json").read_text())
    assert (
        report["loss"] == "cross_entropy" and report["n_features"] == 784 and report["equivalence_gap"] < 1e-6
    )
    # a truncated file is named
    data = (mnist_root / "MNIST/raw/train-images-idx3-ubyte").read_bytes()
    (mnist_root / "MNIST/raw/train-images-idx3-ubyte").write_bytes(data[:-5])
    with pytest.raises(ValueError, match="is truncated"):
        load_dataset(f"mnist:{mnist_root}")
    with pytest.raises(FileNotFoundError, match="no MNIST train-images-idx3-ubyte"):
        load_dataset(f"mnist:{tmp_path}")


def test_cifar10_readers(tmp_path):
    import pickle

    rng = np.random.default_rng(1)
    images = {stem: rng.integers(0, 256, (4, 3072)).astype(np.uint8) for stem in
              [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]}  # fmt: skip
    labels = {stem: [int(v) for v in rng.integers(0, 10, 4)] for stem in images}
    py, binary = tmp_path / "py" / "cifar-10-batches-py", tmp_path / "bin" / "cifar-10-batches-bin"
    py.mkdir(parents=True)
    binary.mkdir(parents=True)
    for stem in images:
        with open(py / stem, "wb") as handle:
            pickle.dump(
                {"data": images[stem], "labels": labels[stem], "batch_label": stem}, handle, protocol=2
            )
        records = np.c_[np.array(labels[stem], dtype=np.uint8), images[stem]]
        records.tofile(binary / f"{stem}.bin")
    train_X = np.concatenate([images[f"data_batch_{i}"] for i in range(1, 6)]) / 255.0
    train_y = np.concatenate([labels[f"data_batch_{i}"] for i in range(1, 6)])
    for root in (tmp_path / "py", tmp_path / "bin"):
        ds = load_dataset(f"cifar10:{root}")
        np.testing.assert_array_equal(ds.X, train_X)
        np.testing.assert_array_equal(ds.y, train_y)
        test = load_dataset(f"cifar10:{root}", split="test")
        np.testing.assert_array_equal(test.X, images["test_batch"] / 255.0)

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    with open(py / "data_batch_1", "wb") as handle:
        pickle.dump({"data": Evil(), "labels": []}, handle)
    with pytest.raises(ValueError, match="refusing to unpickle builtins.print"):
        load_dataset(f"cifar10:{tmp_path / 'py'}")
    with pytest.raises(FileNotFoundError, match="no cifar-10-batches-bin/ or cifar-10-batches-py/"):
        load_dataset(f"cifar10:{tmp_path}")
