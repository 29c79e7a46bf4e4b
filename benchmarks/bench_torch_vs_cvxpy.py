"""Side-by-side: the torch solver vs cvxpy + Clarabel, SCS and pyscnn on the exact convex BN program.

    python benchmarks/bench_torch_vs_cvxpy.py --n 500 1000 2000 --d 20 --P 100 200 200 \
        [--scs] [--pyscnn] [--clarabel-loose] [--out FILE.json]

Synthetic data (Gaussian X, y = sin(2 x0) + 0.5 x1 + noise), squared loss, program ``beta`` = ``--beta``
(default 0.1, summed loss). Per size, one solver after the other on the same problem:

* Clarabel (defaults): the reference objective and time. ``--clarabel-loose``: Clarabel again with its
  gap and feasibility tolerances at ``--target`` (what a user who only needs that accuracy would run).
* the torch solver (``method="auto"``: FISTA with the exact cone prox) for each ``--tol``, stopping on
  its *certified* relative duality gap ``tol``: time (median of ``--repeats``), objective against
  Clarabel's, cone violation, iterations, and the recovered network's forward objective against the
  reported one. ``--unpolished``: also FISTA without its Newton polish (``polish=False``) at the first
  ``--tol``, key ``torch_unpolished``.
* ``torch_to_target``: the same solver stopped (by its callback, checked every 10 iterations, the
  callback's cost included; it evaluates the objective on one BLAS thread, since numpy's spinning BLAS
  threads otherwise slow the solver) as soon as its objective is within ``--target`` (1e-4) of Clarabel's: the
  time "to the same objective" of the issue. Every iterate is feasible, so this is a usable solution.
* ``--scs``: SCS at eps 1e-5. ``--pyscnn``: pyscnn's augmented Lagrangian (``scnn.solvers.AL``, the
  constrained ReLU program, on the same whitened data U' and the same patterns, ``lambda = beta / n``),
  at its defaults and at tight tolerances; pyscnn is optional (``pip install --no-deps pyscnn
  linalg_backends opt_einsum``: its wheel asks for torchvision, which it does not import).

``--projection`` picks the cone projections of the torch solver (default ``auto``: the compiled numba
kernel when numba is installed, else torch; see docs/solvers.md). The kernel's one-time load (numba's
import and its compiled code from the on-disk cache; compiling, about 10 s, when the cache is empty) is
paid before the first solve, timed and reported as ``numba_load_s``, and not in the torch times;
``torch_to_target_speedup_vs_clarabel_with_load`` adds it back.

Runs on whatever cores torch and Clarabel find (2 on our CI machine kind).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from convexbn import ConvexBNProblem, bn_basis, recover_network, sample_arrangements
from convexbn.problem import SolverWarning


def add_size_arguments(parser) -> None:
    """``--n``, ``--d``, ``--P`` and ``--beta`` of the synthetic problems (shared by other benchmarks)."""
    parser.add_argument("--n", type=int, nargs="+", default=[500, 1000])
    parser.add_argument("--d", type=int, default=20)
    parser.add_argument("--P", type=int, nargs="+", default=[100, 200])
    parser.add_argument("--beta", type=float, default=0.1)


def size_pairs(args) -> list[tuple[int, int]]:
    """``(n, P)`` per size: ``--P`` paired with ``--n``, or one ``--P`` for every ``n``."""
    return list(zip(args.n, args.P if len(args.P) == len(args.n) else args.P * len(args.n), strict=False))


def write_rows(rows, path) -> None:
    """The result rows as a JSON list at ``path`` (nothing when it is None)."""
    if path:
        with open(path, "w") as f:
            json.dump(rows, f, indent=1)


def make_data(n: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.sin(2 * X[:, 0]) + 0.5 * X[:, 1] + 0.1 * rng.standard_normal(n)
    return X, y


def run_pyscnn(problem, arr, y, beta, options):
    """pyscnn's AL on the same U', patterns and objective; our objective and violation of its answer."""
    from scnn.activations import compute_activation_patterns
    from scnn.metrics import Metrics
    from scnn.models import ConvexReLU
    from scnn.optimize import optimize_model
    from scnn.regularizers import NeuronGL1
    from scnn.solvers import AL

    Up, n = problem.Uprime, problem.n_samples
    model = ConvexReLU(arr.generators.T, c=1)
    start = time.perf_counter()
    cvx, _ = optimize_model(model, AL(model, **options), Metrics(), Up, y,
                            regularizer=NeuronGL1(beta / n), return_convex=True, unitize_data=False,
                            dtype="float64", device="cpu")  # fmt: skip
    seconds = time.perf_counter() - start
    # pyscnn deduplicates and reorders the patterns: map its groups back onto ours by their masks
    D, _ = compute_activation_patterns(Up, arr.generators.T)
    ours = {arr.mask[:, i].tobytes(): i for i in range(arr.n_patterns)}
    order = [ours[D[:, j].astype(bool).tobytes()] for j in range(D.shape[1])]
    W_pos, W_neg = np.zeros((2, 1, arr.n_patterns, Up.shape[1]))
    W_pos[0, order], W_neg[0, order] = cvx.parameters[0][0], cvx.parameters[1][0]
    objective = problem.objective(W_pos, W_neg)
    return {"s": seconds, "objective": objective, "violation": problem.constraint_violation(W_pos, W_neg),
            "options": options}  # fmt: skip


def load_projection(projection: str, dtypes=(torch.float64,)) -> tuple[str, float]:
    """The projection backend ``projection`` stands for here, and the seconds its first calls took (one
    per dtype: numba compiles, or loads from its cache, one version of its kernel per dtype)."""
    from convexbn.solvers.torch.projection import project_cones, resolve_projection_backend

    backend = resolve_projection_backend(projection, "cpu")
    start = time.perf_counter()
    for dtype in dtypes:
        a, U = torch.ones((2, 3), dtype=dtype), torch.eye(3, dtype=dtype)
        project_cones(a, U, torch.ones((2, 3), dtype=dtype), backend=backend)
    return backend, time.perf_counter() - start


def run_one(n, d, P, beta, scs, tol, method="auto", seed=0, repeats=1, target=1e-4, clarabel_loose=False,
            pyscnn=False, projection="auto", load_s=0.0, unpolished=False):  # fmt: skip
    X, y = make_data(n, d, seed)
    basis = bn_basis(X)
    arr = sample_arrangements(basis, P, random_state=seed)
    problem = ConvexBNProblem(basis, arr, y, beta=beta)
    row = {"n": n, "d": d, "P": arr.n_patterns, "beta": beta, "projection": projection}
    start = time.perf_counter()
    ref = problem.solve("clarabel")
    row["clarabel_s"] = time.perf_counter() - start
    row["clarabel_objective"] = ref.objective
    runs = [("torch" if i == 0 else f"torch_tol{tol_i:g}", tol_i, True) for i, tol_i in enumerate(tol)]
    if unpolished:  # FISTA without its Newton polish, side by side
        runs.append(("torch_unpolished", tol[0], False))
    for key, tol_i, polish in runs:
        options = {"feas_tol": 1e-6} if method in ("admm", "al") else {}
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            sol = problem.solve("torch", method=method, tol=tol_i, projection=projection, polish=polish,
                                **options)  # fmt: skip
            times.append(time.perf_counter() - start)
        row[f"{key}_s"] = float(np.median(times))
        row[f"{key}_all_s"] = times
        row[f"{key}_solver"] = sol.solver
        row[f"{key}_tol"] = tol_i
        row[f"{key}_objective"] = sol.objective
        row[f"{key}_iters"] = sol.n_iter
        row[f"{key}_polished"] = sol.info.get("polished")
        row[f"{key}_violation"] = sol.constraint_violation
        row[f"{key}_rel_diff"] = (sol.objective - ref.objective) / abs(ref.objective)
        row[f"{key}_certified_gap"] = sol.info.get("relative_gap")
        net_obj = recover_network(sol).objective(X, y)
        row[f"{key}_network_rel_diff"] = abs(net_obj - sol.objective) / sol.objective
        row[f"{key}_speedup_vs_clarabel"] = row["clarabel_s"] / row[f"{key}_s"]
    # time to reach Clarabel's objective within `target`, the solver's own stop disabled
    hit = {}
    start = time.perf_counter()

    def reached(n_iter, W_pos, W_neg):
        # numpy's BLAS threads would keep spinning after the product and slow the solver's own threads:
        # the check runs on one BLAS thread
        with threadpool_limits(1, user_api="blas"):
            value = problem.objective(W_pos, W_neg)
        if value <= ref.objective * (1 + target):
            hit.update(s=time.perf_counter() - start, it=n_iter)
            return True
        return False

    with warnings.catch_warnings():  # stopped by the callback: status "optimal_inaccurate" by design
        warnings.simplefilter("ignore", SolverWarning)
        sol = problem.solve("torch", method=method, tol=1e-12, callback=reached, projection=projection)
    row["torch_to_target"] = target
    row["torch_to_target_s"] = hit.get("s", float("nan"))
    row["torch_to_target_iters"] = hit.get("it")
    row["torch_to_target_rel_diff"] = (sol.objective - ref.objective) / abs(ref.objective)
    row["torch_to_target_violation"] = sol.constraint_violation
    row["torch_to_target_speedup_vs_clarabel"] = row["clarabel_s"] / row["torch_to_target_s"]
    with_load = row["torch_to_target_s"] + (load_s if projection == "numba" else 0.0)
    row["torch_to_target_speedup_vs_clarabel_with_load"] = row["clarabel_s"] / with_load
    if clarabel_loose:
        eps = {"tol_gap_abs": target, "tol_gap_rel": target, "tol_feas": target, "tol_ktratio": target}
        start = time.perf_counter()
        loose = problem.solve("clarabel", **eps)
        row["clarabel_loose_s"] = time.perf_counter() - start
        row["clarabel_loose_rel_diff"] = (loose.objective - ref.objective) / abs(ref.objective)
        row["torch_to_target_speedup_vs_clarabel_loose"] = row["clarabel_loose_s"] / row["torch_to_target_s"]
    if pyscnn:
        for label, opts in (("pyscnn", {}), ("pyscnn_tight", {"tol": 1e-10, "constraint_tol": 1e-8})):
            row.update({f"{label}_{k}": v for k, v in run_pyscnn(problem, arr, y, beta, opts).items()})
            row[f"{label}_rel_diff"] = (row[f"{label}_objective"] - ref.objective) / abs(ref.objective)
            row[f"torch_to_target_speedup_vs_{label}"] = row[f"{label}_s"] / row["torch_to_target_s"]
    if scs:
        start = time.perf_counter()
        s = problem.solve("scs", eps_abs=1e-5, eps_rel=1e-5)
        row["scs_s"] = time.perf_counter() - start
        row["scs_rel_diff"] = (s.objective - ref.objective) / abs(ref.objective)
        row["speedup_vs_scs"] = row["scs_s"] / row["torch_s"]
        row["scs_violation"] = s.constraint_violation
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_size_arguments(parser)
    parser.add_argument(
        "--tol",
        type=float,
        nargs="+",
        default=[1e-4, 1e-6],
        help="torch tolerances; the first one is the headline speedup",
    )
    parser.add_argument("--scs", action="store_true")
    parser.add_argument("--pyscnn", action="store_true", help="add pyscnn's AL (optional dependency)")
    parser.add_argument("--clarabel-loose", action="store_true", help="add Clarabel at tolerance --target")
    parser.add_argument("--target", type=float, default=1e-4, help="relative objective for torch_to_target")
    parser.add_argument("--method", default="auto", choices=["auto", "fista", "admm", "al"])
    parser.add_argument("--repeats", type=int, default=1, help="torch solves per tolerance (median time)")
    parser.add_argument("--projection", default="auto", choices=["auto", "torch", "numba"],
                        help="the torch solver's cone projections (auto: numba when installed)")
    parser.add_argument("--unpolished", action="store_true",
                        help="add FISTA without its Newton polish (polish=False) at the first --tol")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    sizes = size_pairs(args)
    rows = []
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {platform.processor()}")
    projection, load_s = load_projection(args.projection)
    print(f"cone projections: {projection} (first call {load_s:.2f} s)")
    for n, P in sizes:
        row = run_one(n, args.d, P, args.beta, args.scs, args.tol, args.method, repeats=args.repeats,
                      target=args.target, clarabel_loose=args.clarabel_loose, pyscnn=args.pyscnn,
                      projection=projection, load_s=load_s, unpolished=args.unpolished)
        row["numba_load_s"] = load_s if projection == "numba" else None
        rows.append(row)
        print(json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}))
    write_rows(rows, args.out)
    return rows


if __name__ == "__main__":
    main()
