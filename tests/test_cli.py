"""The installed ``convexbn`` entry point, run in a subprocess, and its one-line errors (exit status 2)."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from convexbn.cli import main
from convexbn.data import load_dataset
from convexbn.persistence import load_network

EXE = shutil.which("convexbn")


def _run(*args, cwd=None):
    cmd = [EXE] if EXE else [sys.executable, "-m", "convexbn.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


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
        (["--data", "iris", "--beta", "-1"], "beta must be > 0, got -1.0"),
        (["--data", "iris", "--loss", "logistic"], "loss 'logistic' needs two classes"),
        (["--data", "iris", "--arrangements", "0"], "n_arrangements must be >= 1, got 0"),
        pytest.param(
            ["--data", "iris", "--solver", "torch", "--device", "cuda"],
            "device='cuda' was requested but torch finds no CUDA device",
            marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is present"),
        ),
        (["--data", "NAN"], "Input X contains NaN"),
    ],
)
def test_errors_are_one_line_with_status_2(tmp_path, args, message):
    (tmp_path / "bad.csv").write_text("a,b,label\n1,2,x\n3,4,y\n5,six,x\n")
    (tmp_path / "nan.csv").write_text("a,b,y\n1,2,0\n3,nan,1\n5,6,0\n7,8,1\n")
    args = [{"BAD": "bad.csv", "NAN": "nan.csv"}.get(a, a) for a in args]
    res = _run("solve", *args, "--quiet", cwd=tmp_path)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
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
