"""Inputs with hundreds of features: 4,000 digit images of 28 x 28 pixels, 10 classes (issue 30).

    python benchmarks/bench_wide_inputs.py --pca 50 --default-timeout 300 \
        --out benchmarks/results/speed/wide_inputs.json

The images: scikit-learn's 8 x 8 digits (``load_digits``), each drawn at random, scaled to 20 x 20,
placed at a random offset in a 28 x 28 canvas, rotated by up to 12 degrees and given pixel noise (MNIST's
layout; the machines that run this have no network for MNIST itself): 784 features of full rank, 4,000
training and 1,000 test images. Rows, each timed on the same machine one after the other:

* ``MLPClassifier(hidden_layer_sizes=(100,))`` (scikit-learn's defaults): time and test accuracy;
* ``make_pipeline(PCA(m), ConvexBNClassifier(random_state=0))`` for each ``--pca m``: the documented path
  for wide inputs (docs/solvers.md, "Inputs with hundreds of features"): time, test accuracy, neurons,
  ``gap_`` / ``estimated_gap_``; with ``--beta b ...`` also one row per ``beta=b`` (per sample) besides
  ``beta="auto"``;
* ``ConvexBNClassifier(random_state=0)`` with its defaults on the 784 features, in a child process
  stopped after ``--default-timeout`` seconds (``finished`` says whether it ended).

``--task binary`` asks the same of two classes, ``digit >= 5``: one output column, a scalar program.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import time

import numpy as np


def digit_images(n: int, seed: int = 0, noise: float = 0.05):
    """``n`` 28 x 28 digit images (flattened, values in [0, 1]) and their labels (module docstring)."""
    from scipy import ndimage
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(seed)
    X8, y8 = load_digits(return_X_y=True)
    idx = rng.integers(0, len(y8), n)
    out = np.empty((n, 28, 28))
    for j, i in enumerate(idx):
        img = ndimage.zoom(X8[i].reshape(8, 8) / 16.0, 20 / 8, order=1)
        canvas = np.zeros((28, 28))
        dx, dy = rng.integers(2, 7, 2)
        canvas[dy : dy + 20, dx : dx + 20] = img
        canvas = ndimage.rotate(canvas, rng.uniform(-12, 12), reshape=False, order=1)
        out[j] = np.clip(canvas + noise * rng.standard_normal((28, 28)), 0, 1)
    return out.reshape(n, 784), y8[idx]


def split(n_train: int = 4000, n_test: int = 1000, task: str = "10-class"):
    """Training and test images; ``task="binary"``: the labels ``digit >= 5`` (one output column)."""
    X, y = digit_images(n_train + n_test)
    if task == "binary":
        y = (y >= 5).astype(int)
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


def convex_row(est, X, y, Xt, yt) -> dict:
    start = time.perf_counter()
    est.fit(X, y)
    seconds = time.perf_counter() - start
    last = est[-1] if hasattr(est, "steps") else est
    return {"seconds": seconds, "test_accuracy": float(est.score(Xt, yt)), "n_neurons": last.n_neurons_,
            "gap": last.gap_, "estimated_gap": last.estimated_gap_, "neurons": last.neurons_,
            "solver": last.solver_, "beta": last.beta_, "rounds": len(last.history_)}  # fmt: skip


def _default_child(queue, task: str) -> None:
    from convexbn import ConvexBNClassifier

    X, y, Xt, yt = split(task=task)
    queue.put(convex_row(ConvexBNClassifier(random_state=0), X, y, Xt, yt))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pca", type=int, nargs="*", default=[50])
    parser.add_argument("--beta", type=float, nargs="*", default=[], help="per-sample betas besides 'auto'")
    parser.add_argument(
        "--default-timeout",
        type=float,
        default=300.0,
        help="seconds for the defaults on 784 features (0: skip that row)",
    )
    parser.add_argument("--task", choices=["10-class", "binary"], default="10-class",
                        help="the ten digits, or digit >= 5 (one output column)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    from sklearn.decomposition import PCA
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline

    from convexbn import ConvexBNClassifier

    X, y, Xt, yt = split(task=args.task)
    rows = {"machine": platform.processor(), "task": args.task, "n_train": len(y), "n_test": len(yt),
            "d": X.shape[1]}
    start = time.perf_counter()
    mlp = MLPClassifier(hidden_layer_sizes=(100,), random_state=0).fit(X, y)
    rows["mlp"] = {"seconds": time.perf_counter() - start, "test_accuracy": float(mlp.score(Xt, yt))}
    print("MLPClassifier(100):", rows["mlp"], flush=True)
    for m in args.pca:
        for beta in ["auto", *args.beta]:
            pipe = make_pipeline(PCA(m, random_state=0), ConvexBNClassifier(beta=beta, random_state=0))
            key = f"pca{m}_convexbn" + ("" if beta == "auto" else f"_beta{beta:g}")
            rows[key] = convex_row(pipe, X, y, Xt, yt)
            print(f"PCA({m}) + ConvexBNClassifier(beta={beta!r}):", rows[key], flush=True)
    if args.default_timeout > 0:
        queue = mp.get_context("spawn").Queue()
        child = mp.get_context("spawn").Process(target=_default_child, args=(queue, args.task))
        start = time.perf_counter()
        child.start()
        child.join(args.default_timeout)
        finished = not child.is_alive()
        if not finished:
            child.terminate()
            child.join()
        row = queue.get() if finished and not queue.empty() else {}
        rows["default_784"] = {"finished": finished, "timeout_s": args.default_timeout,
                               "wall_s": time.perf_counter() - start, **row}  # fmt: skip
        print("ConvexBNClassifier() on 784 features:", rows["default_784"], flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
