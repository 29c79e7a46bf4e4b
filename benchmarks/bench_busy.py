"""A solve on a shared machine: the same solve alone and while another process keeps one core busy.

    python benchmarks/bench_busy.py [--repeats 3] [--out FILE.json]

Cases (each in this process, in turn):

* ``gated_hinge``: the gated hinge problem of ``tests/test_torch_solver.py`` (50 x 5 Gaussian data, 40
  patterns, beta 0.1, ``max_iter`` 100,000, ``hinge_mu_min`` 1e-7): the augmented-Lagrangian path;
* ``admm_hinge``: the same data, exact program (ADMM);
* ``fista_1000``: ``bench_torch_vs_cvxpy``'s n = 1000, d = 20, P = 200, beta 0.1, certified gap 1e-4 (FISTA);
* ``shared_unit``: the shared-neuron search over unit neurons (numpy BLAS and torch) on
  ``bench_shared_inner.py``'s images, PCA(20), n = 1000, 10 classes, logistic loss, summed beta 2
  (``threads=`` of :func:`convexbn.unit_neurons.search_unit_neurons`).

Each runs with the thread choice of the solver (``threads=None``: one thread below
``ONE_THREAD_MAX_WORK``) and with every core (``threads=os.cpu_count()``, what a torch solve did before for
the AL and ADMM), first alone, then beside a busy process (``python -c "while True: pass"``, one core).
Reported: the median seconds of ``--repeats`` runs and the ratio busy / quiet. The numba kernels are
loaded before the first timing (their compile time is reported apart), and each case is solved once,
untimed, before its timings.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np

from convexbn import ConvexBNProblem, bn_basis, sample_arrangements
from convexbn.exceptions import SolverWarning


def _data(n, d, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, np.sin(2 * X[:, 0]) + 0.5 * X[:, 1] + 0.1 * rng.standard_normal(n)


def cases():
    X, y = _data(50, 5)
    pm1 = np.where(y > np.median(y), 1.0, -1.0)
    basis = bn_basis(X)
    arr = sample_arrangements(basis, 40, random_state=0)
    gated = ConvexBNProblem(basis, arr, pm1, beta=0.1, loss="hinge", formulation="gated")
    exact = ConvexBNProblem(basis, arr, pm1, beta=0.1, loss="hinge")
    X2, y2 = _data(1000, 20)
    basis2 = bn_basis(X2)
    big = ConvexBNProblem(basis2, sample_arrangements(basis2, 200, random_state=0), y2, beta=0.1)
    return {
        "gated_hinge": (gated, {"max_iter": 100_000, "hinge_mu_min": 1e-7}),
        "admm_hinge": (exact, {"method": "admm"}),
        "fista_1000": (big, {"tol": 1e-4}),
        "shared_unit": (SharedUnitCase(), {}),
    }


class SharedUnitCase:
    """The shared-neuron search over unit neurons as a case with ``solve("torch", threads=...)``."""

    def __init__(self):
        from bench_wide_inputs import digit_images
        from sklearn.decomposition import PCA

        X, y = digit_images(1000)
        self.basis = bn_basis(PCA(20, random_state=0).fit_transform(X))
        self.Y = np.where(y[:, None] == np.arange(10), 1.0, -1.0)

    def solve(self, _backend, threads=None, **_options):
        from types import SimpleNamespace

        from convexbn.unit_neurons import search_unit_neurons

        sol, history, _ = search_unit_neurons(self.basis, self.Y, 2.0, loss="logistic", threads=threads,
                                              random_state=0)  # fmt: skip
        return SimpleNamespace(objective=sol.objective, n_iter=len(history))


def timed(problem, options, repeats) -> tuple[float, list, dict]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SolverWarning)
            sol = problem.solve("torch", **options)
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, {"objective": sol.objective, "n_iter": sol.n_iter}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    import torch

    from convexbn.solvers.torch.projection import project_cones

    project_cones(torch.ones((2, 3), dtype=torch.float64), torch.eye(3, dtype=torch.float64),
                  torch.ones((2, 3), dtype=torch.float64))  # fmt: skip
    rows = [{"numba_load_s": time.perf_counter() - start, "cpu_count": os.cpu_count(),
             "torch_threads": torch.get_num_threads()}]  # fmt: skip
    print(rows[0])
    for name, (problem, options) in cases().items():
        if args.cases and name not in args.cases:
            continue
        timed(problem, options, 1)  # a first, untimed solve: first calls of the kernels, page faults
        for policy, threads in (("auto", None), ("all_cores", os.cpu_count())):
            opts = {**options, "threads": threads}
            quiet, quiet_all, info = timed(problem, opts, args.repeats)
            busy_process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                time.sleep(0.5)
                busy, busy_all, _ = timed(problem, opts, args.repeats)
            finally:
                busy_process.kill()
                busy_process.wait()
            row = {"case": name, "threads": policy, "quiet_s": quiet, "busy_s": busy, "ratio": busy / quiet,
                   "quiet_all_s": quiet_all, "busy_all_s": busy_all, **info}  # fmt: skip
            rows.append(row)
            print(f"{name:12s} {policy:9s} quiet {quiet:8.2f} s  busy {busy:8.2f} s  "
                  f"ratio {busy / quiet:6.2f}  ({info['n_iter']} iterations)")  # fmt: skip
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
