"""The cases of the reliability issue, round 2 (issue 32), for ``benchmarks/fault_table.py``.

Each case is ``(area, name, run, expect)``: ``run()`` does what a user would (in this process; the command
line through :func:`convexbn.cli.main`), ``expect`` is ``"error"`` (bad input: a clear error must come) or
a check ``expect(result) -> bool`` (valid input: the answer must be right). :func:`classify` runs a case in a
thread with a time limit and counts it as

- ``clear error``: an error of a documented type (``ValueError``, ``TypeError``, ``FileNotFoundError``,
  ``MemoryError`` from a size guard, naming the size, ``ModelFileError``, ``CheckpointError``,
  ``SolverError``), or the command line's exit status 2 with one line on stderr;
- ``handled``: valid input, and the check on its answer passes (``("error or", check)``: either is right,
  e.g. a flipped bit that a checkpoint either refuses or does not depend on);
- ``refused valid input``: a clear error where the input was valid;
- ``traceback``: any other exception, or the command line's exit status 3 or several lines of output;
- ``hang``: not finished within the time limit;
- ``silent wrong``: bad input that ran without an error, or valid input whose answer fails its check.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import pickle
import tempfile
import threading
import warnings
import zipfile

import numpy as np
import torch

from convexbn import ConvexBNClassifier, ConvexBNProblem, ConvexBNRegressor, bn_basis, sample_arrangements
from convexbn.cli import main as cli_main
from convexbn.data import encode_task, load_dataset
from convexbn.exceptions import CheckpointError, SolverError
from convexbn.persistence import ModelFileError, _digest, load_network
from convexbn.solvers.torch.checkpoint import state_digest

CLEAR = (ValueError, TypeError, FileNotFoundError, MemoryError, ModelFileError, CheckpointError, SolverError)
COLUMNS = ("clear error", "handled", "refused valid input", "traceback", "hang", "silent wrong")


class CliResult:
    def __init__(self, status, err):
        self.status, self.err = status, err


def cli(*argv) -> CliResult:
    """Run the command line in this process: its exit status and stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = cli_main([str(a) for a in argv])
        except SystemExit as exc:  # argparse's own errors
            status = exc.code
    return CliResult(status, err.getvalue())


def classify(run, expect, limit: float = 120.0) -> tuple[str, str]:
    """``(column, what the user saw)`` for one case (see the module docstring)."""
    box = {}

    def target():
        try:
            box["result"] = run()
        except BaseException as exc:  # noqa: BLE001 - the point is to see every outcome
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        return "hang", f"no answer in {limit:.0f} s"
    either = isinstance(expect, tuple)
    check = expect[1] if either else expect
    refusing = expect == "error" or either
    if "error" in box:
        exc = box["error"]
        text = f"{type(exc).__name__}: {str(exc).splitlines()[0][:140] if str(exc) else ''}"
        named = not isinstance(exc, MemoryError) or bool(str(exc))  # a guard's MemoryError names the size
        if isinstance(exc, CLEAR) and named:
            return ("clear error" if refusing else "refused valid input"), text
        return "traceback", text
    result = box.get("result")
    if isinstance(result, CliResult):
        lines = [line for line in result.err.splitlines() if line.strip()]
        text = f"exit {result.status}: {lines[0][:140] if lines else ''}"
        if result.status == 2 and len(lines) == 1:
            return ("clear error" if refusing else "refused valid input"), text
        if result.status in (1, 0) and expect != "error":
            return ("handled" if check(result) else "silent wrong"), text
        if result.status == 0 and expect == "error":
            return "silent wrong", text
        return "traceback", text
    if expect == "error":
        return "silent wrong", "ran without an error"
    try:
        ok = check(result)
    except Exception as exc:  # noqa: BLE001
        return "silent wrong", f"check failed: {type(exc).__name__}: {exc}"
    return ("handled" if ok else "silent wrong"), "works" if ok else "wrong answer"


# ------------------------------------------------------------------------------------------------ fixtures
RNG = np.random.default_rng(11)
X0 = RNG.standard_normal((40, 3))
Y0 = np.sin(X0[:, 0]) + 0.1 * X0[:, 1]
C0 = (X0[:, 0] + 0.3 * X0[:, 2] > 0).astype(int)


def regressor(**kw):
    return ConvexBNRegressor(**{"arrangements": "sample", "n_arrangements": 8, "random_state": 0, **kw})


def write_csv(folder, name, text, encoding="utf-8"):
    path = os.path.join(folder, name)
    with open(path, "w", encoding=encoding, newline="") as handle:
        handle.write(text)
    return path


def csv_text(rows, header="a,b,y", sep=",", eol="\n"):
    return eol.join([header.replace(",", sep)] + [sep.join(str(v) for v in r) for r in rows]) + eol


def base_rows(n=30):
    return [[f"{X0[i, 0]:.6f}", f"{X0[i, 1]:.6f}", int(C0[i])] for i in range(n)]


def same_predictions(reference_X, reference_y, transform, tol=1e-6):
    """Check: a model fitted on ``transform(X)`` predicts what one fitted on ``X`` does (BN's scale and
    shift invariance makes the fits the same problem)."""
    expected = regressor().fit(reference_X, reference_y).predict(reference_X)

    def check(model):
        got = model.predict(transform(reference_X))
        return bool(np.all(np.isfinite(got)) and np.allclose(got, expected, rtol=tol, atol=tol))

    return check


def input_cases(folder):
    cases = []
    rows = base_rows()

    def add(name, run, expect="error"):
        cases.append(("inputs", name, run, expect))

    for cell in ("", "NA", "nan", "N/A", "?", "null", "None", "#N/A", "-nan"):
        bad = [list(r) for r in rows]
        bad[5][2] = cell
        path = write_csv(folder, f"target_{len(cases)}.csv", csv_text(bad))
        add(f"CSV target cell {cell!r} (load_dataset)", lambda p=path: load_dataset(p))
    bad = [list(r) for r in rows]
    bad[3][1] = ""
    path = write_csv(folder, "feature_blank.csv", csv_text(bad))
    add("CSV blank feature cell", lambda p=path: load_dataset(p))
    for cell in ("inf", "-inf", "1e999"):
        bad = [list(r) for r in rows]
        bad[3][0] = cell
        path = write_csv(folder, f"feature_{cell}.csv", csv_text(bad))
        add(f"CSV feature cell {cell!r}", lambda p=path: load_dataset(p))
    bad = [list(r) for r in rows]
    bad[7][2] = "inf"
    path = write_csv(folder, "target_inf.csv", csv_text(bad, header="a,b,y"))
    add("CSV target cell 'inf'", lambda p=path: load_dataset(p))
    path = write_csv(folder, "semicolon.csv", csv_text(rows, sep=";"))
    add("CSV with ';' separators", lambda p=path: load_dataset(p))
    path = write_csv(folder, "latin1.csv", csv_text(rows, header="a,b,\u00e9t\u00e9"), encoding="latin-1")
    add("CSV in Latin-1", lambda p=path: load_dataset(p))
    path = write_csv(folder, "bom.csv", "\ufeff" + csv_text(rows))
    add(
        "CSV with a UTF-8 BOM (valid)",
        lambda p=path: load_dataset(p),
        lambda d: d.feature_names == ["a", "b"] and d.target_name == "y",
    )
    path = write_csv(folder, "crlf.csv", csv_text(rows, eol="\r\n"))
    add("CSV with CRLF line ends (valid)", lambda p=path: load_dataset(p), lambda d: d.X.shape == (30, 2))
    path = write_csv(folder, "blank_lines.csv", csv_text(rows) + "\n\n\n")
    add(
        "CSV with trailing blank lines (valid)",
        lambda p=path: load_dataset(p),
        lambda d: d.X.shape == (30, 2),
    )
    path = write_csv(folder, "quoted.csv", csv_text([[f'"{r[0]}"', r[1], r[2]] for r in rows]))
    add(
        "CSV with quoted numbers (valid)",
        lambda p=path: load_dataset(p),
        lambda d: np.allclose(d.X[:, 0], [float(r[0]) for r in rows]),
    )
    path = write_csv(folder, "text_feature.csv", csv_text([["x", r[1], r[2]] for r in rows]))
    add("CSV text feature column", lambda p=path: load_dataset(p))
    path = write_csv(folder, "ragged.csv", csv_text(rows) + "1,2\n")
    add("CSV row with a missing field", lambda p=path: load_dataset(p))
    path = write_csv(folder, "one_class.csv", csv_text([[r[0], r[1], 1] for r in rows]))
    add("CSV target of one class (encode_task)", lambda p=path: encode_task(load_dataset(p), "logistic"))

    ts = 1.7e12 + 1000.0 * RNG.standard_normal(40)
    add(
        "a timestamp column in ms (1.7e12)",
        lambda: regressor().fit(np.c_[X0, ts], Y0),
        lambda m: m.n_features_in_ == 4 and np.all(np.isfinite(m.predict(np.c_[X0, ts]))),
    )
    for factor in (1e150, 1e-170, 1e300, 1e-300, 1e12):
        add(
            f"X * {factor:g} (same fit as X)",
            lambda f=factor: regressor().fit(X0 * f, Y0),
            same_predictions(X0, Y0, lambda A, f=factor: A * f),
        )
    add(
        "X + 1e9 offset (same fit as X)",
        lambda: regressor().fit(X0 + 1e9, Y0),
        same_predictions(X0, Y0, lambda A: A + 1e9, tol=1e-4),
    )
    mixed = np.array([1e-300, 1.0, 1e200])
    add(
        "columns scaled 1e-300 / 1 / 1e200 (same fit as X)",
        lambda: regressor().fit(X0 * mixed, Y0),
        same_predictions(X0, Y0, lambda A: A * mixed),
    )
    add(
        "int64 X of magnitude 1e15",
        lambda: regressor().fit((X0 * 1e15).astype(np.int64), Y0),
        lambda m: np.all(np.isfinite(m.predict((X0 * 1e15).astype(np.int64)))),
    )
    for scale in (1e300, 1e200, 1e160):
        add(f"targets of scale {scale:g}", lambda s=scale: regressor().fit(X0, Y0 * s))
    add(
        "targets of scale 1e-300 (valid: predictions finite)",
        lambda: regressor().fit(X0, Y0 * 1e-300),
        lambda m: np.all(np.isfinite(m.predict(X0))),
    )
    basis = bn_basis(X0)
    problem = ConvexBNProblem(basis, sample_arrangements(basis, 6, random_state=0), Y0 * 1e20, beta=1e-3)
    add("float32 torch solve of targets 1e20", lambda: problem.solve("torch", dtype=torch.float32))
    small = ConvexBNProblem(basis, sample_arrangements(basis, 6, random_state=0), Y0, beta=1e-2)
    for solver, key, value in (
        ("torch", "max_iter", -5),
        ("torch", "max_iter", 0),
        ("clarabel", "max_iter", -5),
        ("torch", "tol", -1.0),
        ("torch", "tol", float("nan")),
        ("scs", "max_iters", 0),
    ):
        add(
            f"problem.solve({solver!r}, {key}={value})",
            lambda s=solver, k=key, v=value: small.solve(s, **{k: v}),
        )
    npz = os.path.join(folder, "obj.npz")
    np.savez(npz, X=np.array([[object()]] * 3, dtype=object), y=np.zeros(3))
    add("NPZ with an object array X", lambda: load_dataset(npz))
    npz_nan = os.path.join(folder, "nan.npz")
    np.savez(npz_nan, X=np.where(X0 > 2, np.nan, X0), y=Y0)
    add("NPZ X with NaN, then fit", lambda: regressor().fit(load_dataset(npz_nan).X, Y0))
    return cases


# ---------------------------------------------------------------------------------------------- checkpoints
def checkpoint_cases(folder):
    cases = []
    basis = bn_basis(X0)
    problem = ConvexBNProblem(basis, sample_arrangements(basis, 12, random_state=0), Y0, beta=0.02)
    full = {m: problem.solve("torch", method=m) for m in ("fista", "admm", "al")}
    sources = {}
    for method in ("fista", "admm", "al"):
        path = os.path.join(folder, f"{method}.ckpt")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            problem.solve("torch", method=method, checkpoint=path, checkpoint_every=10, max_iter=30)
        sources[method] = path

    def resumed_equals(method):
        def check(sol):
            return np.array_equal(sol.W_pos, full[method].W_pos) and np.array_equal(
                sol.W_neg, full[method].W_neg
            )

        return check

    def resume(path, method):
        return lambda: problem.solve("torch", method=method, checkpoint=path, resume=True)

    # single-bit flips spread over the FISTA file (headers, pickle, tensor data): refused or, where the
    # byte does not matter, the same answer as an uninterrupted solve
    raw = open(sources["fista"], "rb").read()
    for j, pos in enumerate(np.linspace(0, len(raw) - 1, 24).astype(int)):
        path = os.path.join(folder, f"flip{j}.ckpt")
        with open(path, "wb") as handle:
            handle.write(raw[:pos] + bytes([raw[pos] ^ (1 << (j % 8))]) + raw[pos + 1 :])
        cases.append(
            (
                "checkpoints",
                f"bit {j % 8} flipped at byte {pos} of {len(raw)}",
                resume(path, "fista"),
                ("error or", resumed_equals("fista")),
            )
        )

    def crafted(method, name, edit):
        obj = torch.load(sources[method], weights_only=True)
        edit(obj["state"])
        obj["sha256"] = state_digest(obj["state"])
        path = os.path.join(folder, f"crafted_{method}_{name}.ckpt".replace(" ", "_"))
        torch.save(obj, path)
        cases.append(
            ("checkpoints", f"{method}: crafted {name} (checksum recomputed)", resume(path, method), "error")
        )

    def setter(field, value):
        def edit(state):
            if isinstance(state.get(field), torch.Tensor):
                state[field] = state[field].clone()
                state[field].view(-1)[0] = value
            else:
                state[field] = value

        return edit

    for method, field, value in (
        ("fista", "it", -(10**15)),
        ("fista", "it", 2.5),
        ("fista", "L", float("nan")),
        ("fista", "L", 0.0),
        ("fista", "t", float("inf")),
        ("fista", "bounds_from", -1),
        ("fista", "X", float("nan")),
        ("admm", "it", -1),
        ("admm", "rho", 0.0),
        ("admm", "rho", float("inf")),
        ("admm", "lF", float("nan")),
        ("al", "total", -1),
        ("al", "outer", "x"),
        ("al", "rho", -2.0),
        ("al", "mu", -1.0),
        ("al", "phase", "x"),
        ("al", "L", float("nan")),
    ):
        crafted(method, f"{field}={value!r}", setter(field, value))
    crafted("fista", "faces out of range", lambda s: s.__setitem__("faces", s["faces"].clone().fill_(10**6)))
    crafted("fista", "faces below -1", lambda s: s.__setitem__("faces", s["faces"].clone().fill_(-7)))
    crafted("fista", "faces as floats", lambda s: s.__setitem__("faces", s["faces"].double()))
    crafted("fista", "X of another shape", lambda s: s.__setitem__("X", s["X"][..., :-1].clone()))
    crafted("admm", "ls missing", lambda s: s.pop("ls"))
    crafted("admm", "x a list", lambda s: s.__setitem__("x", [1, 2]))
    crafted(
        "al",
        "X with one block in phase main",
        lambda s: (
            s.__setitem__("phase", "main"),
            s.__setitem__("X", s["X"][:1].clone()),
            s.__setitem__("X_prev", s["X_prev"][:1].clone()),
        ),
    )

    def state_swap(state):
        state.clear()

    crafted("fista", "an empty state", state_swap)
    empty = os.path.join(folder, "empty.ckpt")
    open(empty, "wb").close()
    cases.append(("checkpoints", "an empty file", resume(empty, "fista"), "error"))
    text = os.path.join(folder, "text.ckpt")
    with open(text, "w") as handle:
        handle.write("not a checkpoint\n")
    cases.append(("checkpoints", "a text file", resume(text, "fista"), "error"))
    cases.append(("checkpoints", "a directory as the resume path", resume(folder, "fista"), "error"))
    cases.append(
        ("checkpoints", "an FISTA checkpoint resumed by ADMM", resume(sources["fista"], "admm"), "error")
    )

    def write_to(path):
        def run():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                sol = problem.solve("torch", method="fista", checkpoint=path, checkpoint_every=5)
            return sol, caught

        return run

    def warned_and_same(result):
        sol, caught = result
        leftovers = [p for p in os.listdir(folder) if p.endswith(".tmp")]
        return (
            resumed_equals("fista")(sol)
            and not leftovers
            and any("could not write the checkpoint" in str(w.message) for w in caught)
        )

    target_dir = os.path.join(folder, "a_dir")
    os.makedirs(target_dir, exist_ok=True)
    cases.append(
        (
            "checkpoints",
            "periodic write to a directory path (solve goes on)",
            write_to(target_dir),
            warned_and_same,
        )
    )
    missing = os.path.join(folder, "no", "such", "dir", "state.ckpt")
    cases.append(
        (
            "checkpoints",
            "periodic write under a missing folder (solve goes on)",
            write_to(missing),
            warned_and_same,
        )
    )

    def full_disk():
        import convexbn.solvers.torch.checkpoint as ck

        real = ck.torch.save

        def fail(obj, f, *a, **k):
            raise RuntimeError(
                "[enforce fail at inline_container.cc] PytorchStreamWriter failed writing file"
            )

        ck.torch.save = fail
        try:
            return write_to(os.path.join(folder, "full.ckpt"))()
        finally:
            ck.torch.save = real

    cases.append(("checkpoints", "periodic write on a full disk (solve goes on)", full_disk, warned_and_same))
    return cases


# ------------------------------------------------------------------------------------------ resource guards
def resource_cases(folder, model_path, contents):
    cases = []
    X = RNG.standard_normal((2000, 3))

    def add(name, run, expect="error"):
        cases.append(("resources", name, run, expect))

    for p in (10**9, 10**8):
        add(f"n_arrangements={p:g} on 2000 x 3", lambda p=p: regressor(n_arrangements=p).fit(X, X[:, 0]))
    add(
        "CLI --arrangements 1e9 on 2000 x 3",
        lambda: cli(
            "solve",
            "--data",
            _npz(folder, X),
            "--arrangements",
            10**9,
            "--patterns",
            "sample",
            "--out",
            os.path.join(folder, "o"),
        ),
    )

    from convexbn import make_arrangements

    small = bn_basis(RNG.standard_normal((40, 3)))
    add(
        "make_arrangements(10^5) on 40 x 3 (auto must sample: enumerating takes minutes)",
        lambda: make_arrangements(small, 10**5, method="auto", random_state=0),
        lambda arr: not arr.exact and arr.n_patterns > 1000,
    )

    bomb = os.path.join(folder, "bomb.npz")
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in contents.items():
            with archive.open(name + ".npy", "w") as handle:
                np.lib.format.write_array(handle, array)
        with archive.open("padding.npy", "w", force_zip64=True) as handle:
            np.lib.format.write_array(handle, np.zeros(2**24))  # 128 MiB of zeros
    add("model zip bomb (128 MiB in 130 KiB)", lambda: ConvexBNRegressor.load(bomb))
    add("network zip bomb (certify)", lambda: load_network(bomb))

    def liar(name, shape):
        path = os.path.join(folder, f"liar_{name}.npz")
        with zipfile.ZipFile(path, "w") as archive:
            for key, array in contents.items():
                with archive.open(key + ".npy", "w") as handle:
                    if key == name:
                        np.lib.format.write_array_header_1_0(
                            handle, {"descr": "<f8", "fortran_order": False, "shape": shape}
                        )
                        handle.write(array.tobytes())
                    else:
                        np.lib.format.write_array(handle, array)
        return path

    add(
        ".npy header claiming 10^12 weights (model)",
        lambda: ConvexBNRegressor.load(liar("weights", (10**12,))),
    )
    add(
        ".npy header claiming (10^6, 10^6) gamma",
        lambda: ConvexBNRegressor.load(liar("gamma", (10**6, 10**6))),
    )
    add(".npy header claiming fewer entries than stored", lambda: ConvexBNRegressor.load(liar("alpha", (1,))))
    data_liar = os.path.join(folder, "data_liar.npz")
    with zipfile.ZipFile(data_liar, "w") as archive:
        with archive.open("X.npy", "w") as handle:
            np.lib.format.write_array_header_1_0(
                handle, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)}
            )
            handle.write(np.zeros(10).tobytes())
        with archive.open("y.npy", "w") as handle:
            np.lib.format.write_array(handle, np.zeros(10))
    add(".npy header claiming 10^12 entries (data file)", lambda: load_dataset(data_liar))

    mnist = os.path.join(folder, "mnist_big", "raw")
    os.makedirs(mnist, exist_ok=True)
    head = (0x803).to_bytes(4, "big") + b"".join(v.to_bytes(4, "big") for v in (2, 28, 28))
    with gzip.open(os.path.join(mnist, "train-images-idx3-ubyte.gz"), "wb", compresslevel=1) as handle:
        handle.write(head + bytes(2 * 784))
        for _ in range(64):
            handle.write(bytes(2**22))  # 256 MiB more than the header's shape, 250 KiB compressed
    with gzip.open(os.path.join(mnist, "train-labels-idx1-ubyte.gz"), "wb") as handle:
        handle.write((0x801).to_bytes(4, "big") + (2).to_bytes(4, "big") + bytes(2))
    add("gzipped MNIST expanding past its header", lambda: load_dataset(f"mnist:{os.path.dirname(mnist)}"))
    mnist2 = os.path.join(folder, "mnist_claim", "raw")
    os.makedirs(mnist2, exist_ok=True)
    with gzip.open(os.path.join(mnist2, "train-images-idx3-ubyte.gz"), "wb") as handle:
        handle.write((0x803).to_bytes(4, "big") + b"".join(v.to_bytes(4, "big") for v in (10**9, 280, 280)))
    with gzip.open(os.path.join(mnist2, "train-labels-idx1-ubyte.gz"), "wb") as handle:
        handle.write((0x801).to_bytes(4, "big") + (2).to_bytes(4, "big") + bytes(2))
    add(
        "MNIST header claiming 10^9 images of 280x280",
        lambda: load_dataset(f"mnist:{os.path.dirname(mnist2)}"),
    )

    cifar = os.path.join(folder, "cifar_refs", "cifar-10-batches-py")
    os.makedirs(cifar, exist_ok=True)
    row = list(range(256)) * 12
    for stem in [f"data_batch_{i}" for i in range(1, 6)]:
        with open(os.path.join(cifar, stem), "wb") as handle:
            pickle.dump({"data": [row] * 10**6, "labels": [0] * 10**6}, handle, protocol=2)
    add(
        "CIFAR pickle of shared references (3 GB as a list)",
        lambda: load_dataset(f"cifar10:{os.path.dirname(cifar)}"),
    )
    cifar2 = os.path.join(folder, "cifar_labels", "cifar-10-batches-py")
    os.makedirs(cifar2, exist_ok=True)
    for stem in [f"data_batch_{i}" for i in range(1, 6)]:
        with open(os.path.join(cifar2, stem), "wb") as handle:
            pickle.dump({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 99]}, handle, protocol=2)
    add("CIFAR batch with a label of 99", lambda: load_dataset(f"cifar10:{os.path.dirname(cifar2)}"))

    fifo = os.path.join(folder, "fifo.npz")
    if not os.path.exists(fifo):
        os.mkfifo(fifo)
    add("a FIFO as the model path", lambda: ConvexBNRegressor.load(fifo))
    add("a FIFO as the network path", lambda: load_network(fifo))
    add("a FIFO as the data file", lambda: load_dataset(fifo))
    add("/dev/zero as the model path", lambda: ConvexBNRegressor.load("/dev/zero"))
    add("a directory as the model path", lambda: ConvexBNRegressor.load(folder))
    return cases


def _npz(folder, X):
    path = os.path.join(folder, f"X{X.shape[0]}.npz")
    np.savez(path, X=X, y=X[:, 0])
    return path


# ------------------------------------------------------------------------------------------- command line
def cli_cases(folder, network_path):
    cases = []
    out = os.path.join(folder, "cli_out")
    a_file = os.path.join(folder, "a_file")
    open(a_file, "w").close()
    long_csv = write_csv(folder, "long.csv", "a,y\n1," + "x" * 200_000 + "\n")
    na_csv = write_csv(
        folder, "na.csv", csv_text([r[:2] + ["NA" if i == 4 else r[2]] for i, r in enumerate(base_rows())])
    )

    def add(name, *argv):
        cases.append(("command line", name, lambda a=argv: cli(*a), "error"))

    add("--out is a file", "solve", "--out", a_file)
    add("--out lies under a file", "solve", "--out", os.path.join(a_file, "sub"))
    add("compare --out is a file", "compare", "--out", a_file)
    add("path --out under a file", "path", "--out", os.path.join(a_file, "x"))
    add("--data names a directory", "solve", "--data", folder, "--out", out)
    add("--data names a missing file", "solve", "--data", os.path.join(folder, "none.csv"), "--out", out)
    add("--data with an unknown extension", "solve", "--data", a_file, "--out", out)
    add("--data with an over-long CSV field", "solve", "--data", long_csv, "--out", out)
    add("--data with a missing target (NA)", "solve", "--data", na_csv, "--out", out)
    add("--target names no column", "solve", "--data", na_csv, "--target", "zzz", "--out", out)
    for value in ("cdua", "cuda:x", "cpu:0", "gpu"):
        add(f"--device {value}", "solve", "--device", value, "--out", out)
    if not torch.cuda.is_available():
        add("--device cuda without a GPU", "solve", "--device", "cuda", "--out", out)
    for value in ("inf", "nan", "0", "-1", "2"):
        add(f"certify --tol {value}", "certify", network_path, "--tol", value)
    add("certify a missing model", "certify", os.path.join(folder, "none.npz"), "--data", "iris")
    add("certify against data of another shape", "certify", network_path, "--data", "iris")
    add("certify --arrangements 0", "certify", network_path, "--data", "iris", "--arrangements", "0")
    for flag, value in (
        ("--landscape-every", "-1"),
        ("--epochs", "0"),
        ("--batch-size", "-1"),
        ("--test-size", "0"),
        ("--test-size", "1"),
        ("--variants", "bogus"),
    ):
        add(f"compare {flag} {value}", "compare", flag, value, "--out", out)
    for flag, value in (
        ("--n-betas", "0"),
        ("--min-ratio", "0"),
        ("--min-ratio", "1.5"),
        ("--betas", "-1"),
        ("--betas", "nan"),
    ):
        add(f"path {flag} {value}", "path", flag, value, "--out", out)
    for flag, value in (
        ("--beta", "inf"),
        ("--beta", "-1"),
        ("--beta", "0"),
        ("--arrangements", "0"),
        ("--arrangements", "x"),
        ("--rounds", "-1"),
        ("--time-limit", "0"),
        ("--max-samples", "1"),
        ("--loss", "bogus"),
        ("--solver", "bogus"),
        ("--patterns", "bogus"),
        ("--neurons", "bogus"),
    ):
        add(f"solve {flag} {value}", "solve", flag, value, "--out", out)
    add(
        "--device cuda with --solver clarabel",
        "solve",
        "--device",
        "cuda:0",
        "--solver",
        "clarabel",
        "--out",
        out,
    )

    import convexbn.cli as cli_module

    def raising(exc):
        def run():
            real = cli_module._solvers

            def boom(_args):
                raise exc

            cli_module._solvers = boom
            try:
                return cli("solvers")
            finally:
                cli_module._solvers = real

        return run

    def real_sigint():
        import signal
        import subprocess
        import sys
        import time

        target = os.path.join(folder, "sigint_out")
        child = subprocess.Popen(
            [sys.executable, "-m", "convexbn.cli", "solve", "--data", "digits", "--quiet", "--out", target],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a terminal's foreground job
        )
        while not os.path.exists(target) and child.poll() is None:
            time.sleep(0.05)
        time.sleep(1.0)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate()
        return CliResult(child.returncode, err)

    cases.append(("command line", "SIGINT (a real Ctrl-C) during `convexbn solve`", real_sigint, "error"))
    cases.append(("command line", "Ctrl-C during a command", raising(KeyboardInterrupt()), "error"))
    cases.append(
        (
            "command line",
            "a full disk while writing",
            raising(OSError(28, "No space left on device", "o/n.npz")),
            "error",
        )
    )
    cases.append(
        (
            "command line",
            "permission denied while writing",
            raising(PermissionError(13, "Permission denied", "o")),
            "error",
        )
    )
    cases.append(("command line", "memory exhausted", raising(MemoryError()), "error"))
    return cases


# ----------------------------------------------------------------------------------------- model metadata
def metadata_cases(folder, contents, classifier_contents):
    cases = []

    def write(name, edit, source=contents):
        arrays = dict(source)
        meta = json.loads(arrays.pop("metadata").tobytes().decode())
        meta = edit(meta, arrays)
        payload = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
        path = os.path.join(folder, f"meta_{len(cases)}.npz")
        np.savez(path, metadata=np.frombuffer(payload, dtype=np.uint8), **arrays)
        return path

    def resign(meta, arrays):
        meta["sha256"] = {k: _digest(a) for k, a in arrays.items()}
        return meta

    def array_edit(name, fn):
        def edit(meta, arrays):
            arrays[name] = fn(arrays[name].copy())
            return resign(meta, arrays)

        return edit

    def nan_at(a):
        a.reshape(-1)[0] = np.nan
        return a

    edits = {
        "metadata a JSON list": lambda m, a: [m],
        "metadata a JSON string": lambda m, a: "x",
        "metadata nested 100000 deep": lambda m, a: ("[" * 100_000 + "]" * 100_000).encode(),
        "metadata not UTF-8": lambda m, a: b"\xff\xfe{}",
        "format of another kind": lambda m, a: {**m, "format": "other"},
        "format_version 99": lambda m, a: {**m, "format_version": 99},
        "class unknown": lambda m, a: {**m, "class": "Pipeline"},
        "class a list": lambda m, a: {**m, "class": ["ConvexBNRegressor"]},
        "params missing": lambda m, a: {k: v for k, v in m.items() if k != "params"},
        "params a list": lambda m, a: {**m, "params": [1]},
        "params with an unknown key": lambda m, a: {**m, "params": {**m["params"], "bogus": 1}},
        "fitted missing": lambda m, a: {k: v for k, v in m.items() if k != "fitted"},
        "fitted sets __class__": lambda m, a: {**m, "fitted": {"__class__": 1}},
        "fitted sets network_": lambda m, a: {**m, "fitted": {**m["fitted"], "network_": 1}},
        "fitted a string": lambda m, a: {**m, "fitted": "x"},
        "network fields missing": lambda m, a: {**m, "network": {}},
        "network a list": lambda m, a: {**m, "network": [1]},
        "n_train negative": lambda m, a: {**m, "network": {**m["network"], "n_train": -3}},
        "n_train a string": lambda m, a: {**m, "network": {**m["network"], "n_train": "40"}},
        "beta negative": lambda m, a: {**m, "network": {**m["network"], "beta": -1.0}},
        "beta 1e999 (inf)": lambda m, a: (
            json.dumps({**m, "network": {**m["network"], "beta": 1}})
            .replace('"beta": 1,', '"beta": 1e999,')
            .encode()
        ),
        "loss unknown": lambda m, a: {**m, "network": {**m["network"], "loss": "l7"}},
        "sha256 missing": lambda m, a: {k: v for k, v in m.items() if k != "sha256"},
        "sha256 a list": lambda m, a: {**m, "sha256": []},
        "n_features_in_ wrong": lambda m, a: {**m, "fitted": {**m["fitted"], "n_features_in_": 99}},
        "feature_names_in_ of the wrong length": lambda m, a: {**m, "feature_names_in_": ["a"]},
        "NaN weights (checksums recomputed)": array_edit("weights", nan_at),
        "inf output weights (checksums recomputed)": array_edit("output", lambda x: x * np.inf),
        "NaN running_norm (checksums recomputed)": array_edit("running_norm", nan_at),
        "gamma one short (checksums recomputed)": array_edit("gamma", lambda x: x[:-1]),
        "output of another width (checksums recomputed)": array_edit("output", lambda x: x[:-1]),
        "weights 1-D (checksums recomputed)": array_edit("weights", lambda x: x.reshape(-1)),
        "weights as int64 (checksums recomputed)": array_edit("weights", lambda x: x.astype(np.int64)),
        "an array dropped": lambda m, a: (a.pop("alpha"), m)[1],
    }
    for name, edit in edits.items():
        path = write(name, edit)
        cases.append(("model metadata", name, lambda p=path: ConvexBNRegressor.load(p), "error"))

    def drop_classes(meta, arrays):
        arrays.pop("classes")
        return resign(meta, arrays)

    for name, edit in {
        "classifier without classes": drop_classes,
        "classifier without classes_dtype": lambda m, a: {k: v for k, v in m.items() if k != "classes_dtype"},
        "classes 0-d (checksums recomputed)": array_edit("classes", lambda x: x[:1].reshape(())),
    }.items():
        path = write(name, edit, classifier_contents)
        cases.append(("model metadata", name, lambda p=path: ConvexBNClassifier.load(p), "error"))
    return cases


def all_cases(folder):
    """Every case, building the fixtures (a saved regressor, classifier and network) in ``folder``."""
    model_path = os.path.join(folder, "model.npz")
    regressor().fit(X0, Y0).save(model_path)
    with np.load(model_path) as data:
        contents = {name: data[name] for name in data.files}
    clf_path = os.path.join(folder, "classifier.npz")
    ConvexBNClassifier(arrangements="sample", n_arrangements=8, random_state=0).fit(X0, C0).save(clf_path)
    with np.load(clf_path) as data:
        classifier_contents = {name: data[name] for name in data.files}
    network_path = os.path.join(folder, "network.npz")
    from convexbn.persistence import save_network

    save_network(ConvexBNRegressor.load(model_path).network_, network_path)
    return (
        input_cases(folder)
        + checkpoint_cases(folder)
        + resource_cases(folder, model_path, contents)
        + cli_cases(folder, network_path)
        + metadata_cases(folder, contents, classifier_contents)
    )


def run_all(limit: float = 120.0):
    """``[(area, name, column, text)]`` for every case, in a temporary folder."""
    with tempfile.TemporaryDirectory() as folder:
        return [(area, name, *classify(run, expect, limit)) for area, name, run, expect in all_cases(folder)]
