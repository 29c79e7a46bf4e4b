"""Every example runs in smoke mode (a subprocess, as a user runs it) and prints what it promises."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(name, *args):
    res = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr
    return res.stdout


def _value(stdout: str, key: str) -> str:
    for line in stdout.splitlines():
        if line.startswith(key + " "):
            return line[len(key) :].strip()
    raise AssertionError(f"{key!r} not in output:\n{stdout}")


def test_every_example_is_tested():
    tested = {"solve_and_recover.py", "compare_sgd.py", "model_selection.py", "regularization_path.py",
              "closed_form.py", "certificate_enumerated.py", "sklearn_pipeline.py",
              "distributed_solve.py", "implicit_regularization.py"}  # fmt: skip
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_solve_and_recover():
    out = _run("solve_and_recover.py", "--arrangements", "10")
    assert float(_value(out, "relative_difference")) < 1e-6
    assert float(_value(out, "torch_max_abs_diff")) < 1e-8


def test_closed_form():
    out = _run("closed_form.py", "--smoke")
    closed = float(_value(out, "closed_form_objective"))
    assert float(_value(out, "spec_formula")) == pytest.approx(closed, rel=1e-12)
    assert float(_value(out, "network_objective")) == pytest.approx(closed, rel=1e-9)
    assert float(_value(out, "clarabel_minus_closed_form")) >= -1e-6 * closed  # sampled patterns: never lower
    assert int(_value(out, "network_neurons")) <= 2


def test_certificate_enumerated():
    out = _run("certificate_enumerated.py", "--smoke")
    assert _value(out, "certified global") == "True"
    assert int(_value(out, "Adam runs below p* - 1e-9")) == 0
    p_star = float(_value(out, "p* (exact program)"))
    assert float(_value(out, "its certified lower bound on p*")) <= p_star
    assert float(_value(out, "its certificate: max dual value / beta")) > 1  # the sample misses patterns


def test_regularization_path():
    out = _run("regularization_path.py", "--smoke")
    rows = [line.split() for line in out.splitlines()[2:-1]]
    assert len(rows) == 3
    for row in rows:
        assert float(row[2]) == pytest.approx(float(row[1]), rel=1e-6)  # network (3) == objective (4)
        assert float(row[6]) == pytest.approx(float(row[1]), rel=1e-4)  # cold solve, same optimum


def test_sklearn_pipeline():
    out = _run("sklearn_pipeline.py", "--smoke")
    assert _value(out, "loaded model predicts the same") == "True"
    assert float(_value(out, "test accuracy")) > 0.85
    assert float(_value(out, "equivalence gap (3) vs (4)")) < 1e-6


def test_model_selection():
    out = _run("model_selection.py", "--datasets", "wine", "--n-arrangements", "5", "--betas", "1e-2",
               "--cv", "2", "--epochs", "50", "--search-rounds", "2")  # fmt: skip
    assert "| wine |" in out


def test_distributed_solve_under_torchrun():
    """The real launcher: torchrun starts two Gloo ranks, each with its own rows; rank 0 compares the
    result with the same program solved in one process."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(EXAMPLES / "distributed_solve.py"), "--smoke", "--check"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert int(_value(out, "world_size")) == 2
    assert _value(out, "status") == "optimal"
    assert float(_value(out, "objective_rel_diff")) < 1e-8
    assert float(_value(out, "weights_max_abs_diff")) < 1e-8
    assert float(_value(out, "network_max_abs_diff")) < 1e-8
    assert float(_value(out, "forward_objective_rel_diff")) < 1e-6  # AL stops at feas_tol 1e-7
    assert int(_value(out, "allreduce_calls")) >= 2 * int(_value(out, "n_iter"))


def test_implicit_regularization(tmp_path):
    import json

    out = _run("implicit_regularization.py", "--smoke", "--out", str(tmp_path))
    assert "| beta | model |" in out
    rows = json.loads((tmp_path / "results.json").read_text())["results"][0]["rows"]
    assert [r["model"] for r in rows] == ["sgd", "none", "power:0.5", "top:5"]
    for r in rows:
        assert 0.5 <= r["test_accuracy"] <= 1 and 0 <= r["agreement"] <= 1
