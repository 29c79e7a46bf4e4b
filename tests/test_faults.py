"""Reliability, round 2 (issue 32): each test here failed on main before the fix it covers.

Silent wrong answers (missing CSV values, large or tiny magnitudes, huge targets), checkpoint integrity
and validation, failed checkpoint writes, resource guards on sizes and files, the command line's
one-line errors, crafted model metadata.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

from convexbn import ConvexBNProblem, ConvexBNRegressor, SolverWarning, bn_basis, sample_arrangements
from convexbn.cli import main
from convexbn.data import load_dataset
from convexbn.exceptions import CheckpointError
from convexbn.persistence import ModelFileError, load_network
from convexbn.solvers.torch.checkpoint import state_digest

RNG = np.random.default_rng(7)
X0 = RNG.standard_normal((40, 3))
Y0 = np.sin(X0[:, 0]) + 0.1 * X0[:, 1]


def _regressor(**kw):
    return ConvexBNRegressor(**{"arrangements": "sample", "n_arrangements": 8, "random_state": 0, **kw})


def _cli(capsys, *argv):
    status = main(list(argv))
    err = capsys.readouterr().err
    return status, err


# ----------------------------------------------------------------------------- silent wrong answers
@pytest.mark.parametrize("cell", ["", "NA", "nan", "N/A", "?", "null"])
def test_csv_missing_target_is_an_error_naming_line_and_column(tmp_path, cell):
    path = tmp_path / "data.csv"
    rows = ["a,b,label"] + [f"{i},{i % 3},{i % 2}" for i in range(9)]
    rows[4] = f"3,0,{cell}"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=r"line 5, column 'label' has a missing value"):
        load_dataset(str(path))


def test_csv_missing_feature_and_infinite_cells_are_errors(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("a,b,y\n1,2,3\n4,NaN,5\n6,7,8\n")
    with pytest.raises(ValueError, match=r"line 3, column 'b' has a missing value \('NaN'\)"):
        load_dataset(str(path))
    path.write_text("a,b,y\n1,2,3\n4,inf,5\n6,7,8\n")
    with pytest.raises(ValueError, match=r"line 3, column 'b' is not finite"):
        load_dataset(str(path))


def test_large_magnitude_columns_are_data_not_constants():
    # a timestamp in milliseconds: magnitude 1.7e12, spread of seconds; and the whole data scaled to the
    # ends of float64. BN is scale invariant: every version has the same basis (up to column signs)
    ts = 1.7e12 + 1000.0 * RNG.standard_normal(40)
    reference = bn_basis(np.c_[X0, ts - 1.7e12])
    stamped = bn_basis(np.c_[X0, ts])
    assert stamped.rank == reference.rank == 4
    np.testing.assert_allclose(np.abs(stamped.U.T @ reference.U).max(axis=0), 1.0, atol=1e-6)
    base = bn_basis(X0)
    for factor in (1e150, 1e-170, 1e300):
        scaled = bn_basis(X0 * factor)
        assert scaled.rank == 3
        np.testing.assert_allclose(np.abs(scaled.U), np.abs(base.U), atol=1e-10)
    with pytest.raises(ValueError, match="too large for this SVD"):
        bn_basis(X0 * 1e300, scale_features=False)
    with pytest.raises(ValueError, match="no variance"):
        bn_basis(np.full((10, 2), 1.7e12))
    model = _regressor().fit(np.c_[X0, ts], Y0)
    assert np.all(np.isfinite(model.predict(np.c_[X0, ts])))


def test_huge_targets_are_refused_not_predicted_as_nan():
    with pytest.raises(ValueError, match="too large for the squared loss"):
        _regressor().fit(X0, Y0 * 1e300)
    basis = bn_basis(X0)
    problem = ConvexBNProblem(basis, sample_arrangements(basis, 6, random_state=0), Y0 * 1e20, beta=1e-3)
    with pytest.raises(ValueError, match="overflow float32"):
        problem.solve("torch", dtype=torch.float32)


@pytest.mark.parametrize("solver", ["torch", "clarabel"])
def test_nonpositive_iteration_limits_are_refused(solver):
    basis = bn_basis(X0)
    problem = ConvexBNProblem(basis, sample_arrangements(basis, 6, random_state=0), Y0, beta=1e-2)
    with pytest.raises(ValueError, match="max_iter must be >= 1, got -5"):
        problem.solve(solver, max_iter=-5)


# ------------------------------------------------------------------------------------------ checkpoints
def _problem():
    basis = bn_basis(X0)
    return ConvexBNProblem(basis, sample_arrangements(basis, 12, random_state=0), Y0, beta=0.02)


def _partial(problem, path, method="fista"):
    with pytest.warns(SolverWarning):
        problem.solve("torch", method=method, checkpoint=path, checkpoint_every=10, max_iter=30)


def test_a_flipped_bit_in_a_checkpoint_is_refused(tmp_path):
    problem = _problem()
    path = tmp_path / "state.ckpt"
    _partial(problem, path)
    raw = path.read_bytes()
    X = torch.load(path, weights_only=True)["state"]["X"]
    pos = raw.find(X.numpy().tobytes()[:64])
    assert pos > 0
    for offset in (0, 7, 63):
        flipped = tmp_path / f"flipped{offset}.ckpt"
        flipped.write_bytes(raw[: pos + offset] + bytes([raw[pos + offset] ^ 0x10]) + raw[pos + offset + 1 :])
        with pytest.raises(CheckpointError, match="checksum mismatch"):
            problem.solve("torch", method="fista", checkpoint=flipped, resume=True)


def _crafted(tmp_path, source, edit, name):
    obj = torch.load(source, weights_only=True)
    edit(obj["state"])
    obj["sha256"] = state_digest(obj["state"])  # a consistent checksum: only validation can refuse it
    path = tmp_path / name
    torch.save(obj, path)
    return path


@pytest.mark.parametrize(
    "method, field, value, message",
    [
        ("fista", "it", -10**15, "'it' is -1000000000000000, not a non-negative integer"),
        ("fista", "L", float("nan"), "'L' is nan, not a finite number > 0"),
        ("fista", "t", 0.0, "'t' is 0.0, not a finite number > 0"),
        ("fista", "faces", 10**6, "'faces' holds indices in"),
        ("fista", "X", "shape", "'X' has shape"),
        ("fista", "X", float("inf"), "'X' holds non-finite values"),
        ("admm", "rho", -1.0, "'rho' is -1.0, not a finite number > 0"),
        ("admm", "it", 2.5, "'it' is 2.5, not a non-negative integer"),
        ("admm", "ls", "missing", "'ls' is missing"),
        ("al", "total", -1, "'total' is -1, not a non-negative integer"),
        ("al", "phase", "bogus", "phase is 'bogus'"),
    ],
)
def test_crafted_checkpoint_states_are_refused(tmp_path, method, field, value, message):
    problem = _problem()
    source = tmp_path / "state.ckpt"
    _partial(problem, source, method)

    def edit(state):
        if value == "shape":
            state[field] = state[field][..., :-1].clone()
        elif value == "missing":
            del state[field]
        elif isinstance(state.get(field), torch.Tensor) and field == "faces":
            state[field] = state[field].clone().fill_(value)
        elif isinstance(state.get(field), torch.Tensor):
            state[field] = state[field].clone()
            state[field].view(-1)[0] = value
        else:
            state[field] = value

    crafted = _crafted(tmp_path, source, edit, "crafted.ckpt")
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        problem.solve("torch", method=method, checkpoint=crafted, resume=True)


def test_a_failed_checkpoint_write_warns_and_the_solve_goes_on(tmp_path):
    problem = _problem()
    reference = problem.solve("torch", method="fista")
    target = tmp_path / "a_directory"
    target.mkdir()
    with pytest.warns(SolverWarning, match="could not write the checkpoint"):
        sol = problem.solve("torch", method="fista", checkpoint=target, checkpoint_every=5)
    np.testing.assert_array_equal(sol.W_pos, reference.W_pos)
    assert sorted(os.listdir(tmp_path)) == ["a_directory"] and not os.listdir(target)  # no temporary files


# --------------------------------------------------------------------------------------- resource guards
def test_a_huge_pattern_count_is_refused_up_front_naming_the_memory():
    # 2000 samples in 3 dimensions have more than 10^9 patterns (Cover's bound): sampled, not enumerated
    X = RNG.standard_normal((2000, 3))
    with pytest.raises(MemoryError, match=r"sampling 1000000000 patterns of 2000 samples needs about \d"):
        _regressor(n_arrangements=10**9).fit(X, X[:, 0])


def _model_file(tmp_path):
    path = tmp_path / "model.npz"
    _regressor().fit(X0, Y0).save(path)
    with np.load(path) as data:
        contents = {name: data[name] for name in data.files}
    return path, contents


def test_a_zip_bomb_model_is_refused_before_it_is_expanded(tmp_path):
    _, contents = _model_file(tmp_path)
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in contents.items():
            with archive.open(name + ".npy", "w") as handle:
                np.lib.format.write_array(handle, array)
        with archive.open("padding.npy", "w", force_zip64=True) as handle:
            np.lib.format.write_array(handle, np.zeros(2**23))  # 64 MiB of zeros, 65 KiB compressed
    assert bomb.stat().st_size < 2**20
    with pytest.raises(ModelFileError, match="declare .* of data in a .* file \\(a zip bomb\\?"):
        ConvexBNRegressor.load(bomb)


def test_an_npy_header_claiming_a_trillion_entries_is_refused(tmp_path):
    path, contents = _model_file(tmp_path)
    liar = tmp_path / "liar.npz"
    with zipfile.ZipFile(liar, "w") as archive:
        for name, array in contents.items():
            with archive.open(name + ".npy", "w") as handle:
                if name == "weights":
                    header = {"descr": "<f8", "fortran_order": False, "shape": (10**12,)}
                    np.lib.format.write_array_header_1_0(handle, header)
                    handle.write(array.tobytes())
                else:
                    np.lib.format.write_array(handle, array)
    with pytest.raises(ModelFileError, match=r"claims shape \(1000000000000,\)"):
        ConvexBNRegressor.load(liar)
    data = tmp_path / "data.npz"
    os.replace(liar, data)
    with pytest.raises(ValueError, match=r"claims shape \(1000000000000,\)"):
        load_dataset(str(data))


def test_a_fifo_given_as_a_model_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "model.npz"
    os.mkfifo(fifo)
    with pytest.raises(ModelFileError, match="is not a regular file"):
        ConvexBNRegressor.load(fifo)
    with pytest.raises(ModelFileError, match="is not a regular file"):
        load_network(fifo)


def test_a_gzipped_mnist_file_that_expands_past_its_header_is_refused(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    images = (0x803).to_bytes(4, "big") + b"".join(v.to_bytes(4, "big") for v in (2, 28, 28))
    with gzip.open(raw / "train-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(images + bytes(2 * 784) + bytes(2**22))  # 4 MiB more than the header's shape
    with gzip.open(raw / "train-labels-idx1-ubyte.gz", "wb") as handle:
        handle.write((0x801).to_bytes(4, "big") + (2).to_bytes(4, "big") + bytes(2))
    with pytest.raises(ValueError, match="holds more data than its header's shape"):
        load_dataset(f"mnist:{tmp_path}")
    with gzip.open(raw / "train-images-idx3-ubyte.gz", "wb") as handle:
        handle.write((0x803).to_bytes(4, "big") + b"".join(v.to_bytes(4, "big") for v in (10**9, 280, 280)))
    with pytest.raises(ValueError, match="over the memory budget"):
        load_dataset(f"mnist:{tmp_path}")


def test_a_cifar_pickle_of_shared_references_is_refused_fast(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    row = list(range(256)) * 12  # 3072 values, referenced a million times: a small file, a huge list
    for stem in [f"data_batch_{i}" for i in range(1, 6)]:
        with open(folder / stem, "wb") as handle:
            pickle.dump({"data": [row] * 10**6, "labels": [0] * 10**6}, handle, protocol=2)
    assert (folder / "data_batch_1").stat().st_size < 2**22
    with pytest.raises(ValueError, match="'data' is not uint8 with 3072 columns"):
        load_dataset(f"cifar10:{tmp_path}")


# ----------------------------------------------------------------------------------------- command line
@pytest.mark.parametrize(
    "argv, message",
    [
        (["solve", "--device", "cdua"], "argument --device: must be cpu, cuda or cuda:N"),
        (["certify", "m.npz", "--tol", "inf"], "argument --tol: must be a finite number > 0"),
        (["compare", "--landscape-every", "-1"], "argument --landscape-every: must be >= 0"),
        (["solve", "--beta", "nan"], "argument --beta: must be a finite number > 0"),
        (["path", "--n-betas", "0"], "argument --n-betas: must be >= 1"),
        (["compare", "--test-size", "1.5"], "argument --test-size: must be between 0 and 1"),
        (["solve", "--rounds", "x"], "argument --rounds: must be an integer"),
    ],
)
def test_meaningless_arguments_are_one_line_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert message in err and err.count("\n") == 1


def test_output_paths_that_cannot_be_written_are_refused_before_the_work(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    status, err = _cli(capsys, "solve", "--out", str(a_file))
    assert status == 2 and "is a file, not a folder" in err and err.count("\n") == 1
    status, err = _cli(capsys, "solve", "--out", str(a_file / "under"))
    assert status == 2 and "cannot be written: Not a directory" in err
    status, err = _cli(capsys, "solve", "--data", str(tmp_path), "--out", str(tmp_path / "o"))
    assert status == 2 and "is a directory, not a data file" in err


def test_oversized_csv_fields_and_missing_targets_are_one_line_errors(tmp_path, capsys):
    long = tmp_path / "long.csv"
    long.write_text("a,y\n1," + "x" * 200_000 + "\n")
    status, err = _cli(capsys, "solve", "--data", str(long), "--out", str(tmp_path / "o"))
    assert status == 2 and "field larger than field limit" in err and err.count("\n") == 1
    blank = tmp_path / "blank.csv"
    blank.write_text("a,b,y\n" + "".join(f"{i},{i * i % 7},{i % 2}\n" for i in range(20)) + "3,4,\n")
    status, err = _cli(capsys, "solve", "--data", str(blank), "--out", str(tmp_path / "o"))
    assert status == 2 and "line 22, column 'y' has a missing value" in err


@pytest.mark.parametrize(
    "exc, message, status",
    [
        (KeyboardInterrupt(), "interrupted (Ctrl-C)", 2),
        (OSError(28, "No space left on device", "o/n.npz"), "No space left on device (o/n.npz)", 2),
        (PermissionError(13, "Permission denied", "o/r.json"), "Permission denied (o/r.json)", 2),
        (RuntimeError("a bug"), "internal error RuntimeError: a bug", 3),
    ],
)
def test_interrupts_full_disks_and_bugs_are_one_line(tmp_path, capsys, monkeypatch, exc, message, status):
    import convexbn.cli as cli

    def boom(_args):
        raise exc

    monkeypatch.setattr(cli, "_solvers", boom)
    monkeypatch.delenv("CONVEXBN_TRACEBACK", raising=False)
    got, err = _cli(capsys, "solvers")
    assert got == status and message in err and err.count("\n") == 1


# ----------------------------------------------------------------------------------------- model metadata
def _rewrite(tmp_path, contents, edit, name="edited.npz"):
    contents = dict(contents)
    meta = json.loads(contents.pop("metadata").tobytes().decode())
    meta = edit(meta, contents)
    path = tmp_path / name
    payload = json.dumps(meta).encode() if not isinstance(meta, bytes) else meta
    np.savez(path, metadata=np.frombuffer(payload, dtype=np.uint8), **contents)
    return path


def _resign(meta, contents):
    from convexbn.persistence import _digest

    meta["sha256"] = {name: _digest(a) for name, a in contents.items()}
    return meta


def _nan_weights(meta, contents):
    contents["weights"] = contents["weights"].copy()
    contents["weights"][0, 0] = np.nan
    return _resign(meta, contents)


def _shrink_gamma(meta, contents):
    contents["gamma"] = contents["gamma"][:-1].copy()
    return _resign(meta, contents)


EDITS = {
    "metadata is a list": lambda m, c: [m],
    "metadata nested 100000 deep": lambda m, c: ("[" * 100_000 + "]" * 100_000).encode(),
    "params missing": lambda m, c: {k: v for k, v in m.items() if k != "params"},
    "params a list": lambda m, c: {**m, "params": [1, 2]},
    "unknown parameter": lambda m, c: {**m, "params": {**m["params"], "bogus": 1}},
    "fitted sets __class__": lambda m, c: {**m, "fitted": {"__class__": 1}},
    "fitted a string": lambda m, c: {**m, "fitted": "x"},
    "network fields missing": lambda m, c: {**m, "network": {}},
    "n_train negative": lambda m, c: {**m, "network": {**m["network"], "n_train": -3}},
    "loss unknown": lambda m, c: {**m, "network": {**m["network"], "loss": "l7"}},
    "sha256 a list": lambda m, c: {**m, "sha256": []},
    "feature count mismatch": lambda m, c: {**m, "fitted": {**m["fitted"], "n_features_in_": 99}},
    "NaN weights, checksums recomputed": _nan_weights,
    "gamma of the wrong length, checksums recomputed": _shrink_gamma,
}


@pytest.mark.parametrize("case", sorted(EDITS))
def test_crafted_model_metadata_is_a_model_file_error(tmp_path, case):
    _, contents = _model_file(tmp_path)
    path = _rewrite(tmp_path, contents, EDITS[case])
    with pytest.raises(ModelFileError):
        ConvexBNRegressor.load(path)


def test_a_real_ctrl_c_during_a_solve_is_one_line(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    # a process started in the background of a non-interactive shell inherits SIGINT *ignored* (POSIX),
    # and Python then installs no KeyboardInterrupt handler: give the child the default disposition, as a
    # terminal's foreground process has
    child = subprocess.Popen(
        [sys.executable, "-m", "convexbn.cli", "solve", "--data", "digits", "--quiet", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        # the output folder is made (and checked) before any work: then the solve is under way
        while not out.exists() and child.poll() is None:
            time.sleep(0.05)
        time.sleep(1.0)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=600)  # a hang guard, not a timing assertion
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 2, err
    assert err.count("\n") == 1 and "error: interrupted (Ctrl-C)" in err


def test_auto_enumerates_only_when_the_enumeration_is_cheap():
    from convexbn import make_arrangements
    from convexbn.arrangements import AUTO_ENUMERATE_WORK, enumeration_is_cheap, max_arrangements
    from convexbn.fit import _resolve_method

    # 40 samples in 3 dimensions: at most 19,840 patterns, but enumerating them solves ~200,000 LPs
    # (minutes); asking for 10^5 patterns used to start that enumeration
    basis = bn_basis(RNG.standard_normal((40, 3)))
    assert max_arrangements(40, basis.dim) <= 10**5
    assert not enumeration_is_cheap(40, basis.dim) and 40 * max_arrangements(40, 4) > AUTO_ENUMERATE_WORK
    arr = make_arrangements(basis, 10**5, method="auto", random_state=0)
    assert not arr.exact and arr.n_patterns > 1000
    assert _resolve_method("auto", basis, 10**5, smooth=True) == "search"
    tiny = bn_basis(RNG.standard_normal((8, 2)))
    assert make_arrangements(tiny, 10**5, method="auto").exact
    assert _resolve_method("auto", tiny, 10, smooth=True) == "enumerate"
