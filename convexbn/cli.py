"""The ``convexbn`` command line.

    convexbn solve --data breast_cancer --beta 1 --arrangements 200 --out results/solve
    convexbn solvers

``solve`` builds the convex program of a dataset, solves it, recovers the BN network, checks the
equivalence (3) == (4) by a forward pass, computes the dual certificate over the program's patterns,
prints a summary and writes ``network.npz`` (portable format, :func:`convexbn.persistence.save_network`),
``report.json`` and ``fit.png``. Any user error (missing file, bad column, non-numeric data, a solver that
is not installed, bad parameters) is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np

__all__ = ["main"]

LOSSES = ("auto", "squared", "logistic", "hinge", "cross_entropy")
SOLVERS = ("auto", "cvxpy", "clarabel", "mosek", "scs", "torch", "closed-form")


class UserError(Exception):
    """An error the user can fix: printed as one line, exit status 2."""


def _targets(dataset, loss: str):
    """``(loss, y_for_the_program, classes)`` for the dataset and the requested loss."""
    y = dataset.y
    if loss == "auto":
        if not dataset.classification:
            loss = "squared"
        else:
            loss = "logistic" if np.unique(y).size == 2 else "cross_entropy"
    if loss == "squared":
        if y.dtype == object:
            raise UserError(f"target {dataset.target_name!r} is not numeric; use a classification loss")
        return loss, y.astype(np.float64), None
    classes, index = np.unique(y, return_inverse=True)
    if classes.size < 2:
        raise UserError(f"target {dataset.target_name!r} has a single class ({classes[0]!r})")
    if loss in ("logistic", "hinge"):
        if classes.size != 2:
            raise UserError(
                f"loss {loss!r} needs two classes, target {dataset.target_name!r} has {classes.size}; "
                "use --loss cross_entropy"
            )
        return loss, np.where(index == 1, 1.0, -1.0), classes
    return loss, index, classes


#: ``--solver auto`` uses Clarabel up to this many cone rows (2 n P) for the exponential-cone losses
#: (logistic, cross-entropy) and the hinge loss, where it is slow and often inaccurate beyond; the
#: squared loss keeps the estimators' limit.
AUTO_CVXPY_MAX_ROWS_NONSQUARED = 20_000


def _pick_solver(problem, requested: str) -> str:
    from .estimators import _choose_solver

    solver = _choose_solver(problem, requested)
    rows = 2 * problem.n_samples * problem.n_patterns
    if requested == "auto" and solver == "clarabel" and problem.loss.name != "squared":
        return "clarabel" if rows <= AUTO_CVXPY_MAX_ROWS_NONSQUARED else "torch"
    return solver


def _solve(args) -> dict:
    from . import ConvexBNProblem, bn_basis, recover_network
    from .arrangements import make_arrangements
    from .data import load_dataset
    from .persistence import save_network

    dataset = load_dataset(args.data, target=args.target)
    loss, y, classes = _targets(dataset, args.loss)
    X = dataset.X
    basis = bn_basis(X)
    arrangements = make_arrangements(basis, args.arrangements, random_state=args.seed)
    problem = ConvexBNProblem(basis, arrangements, y, beta=args.beta, loss=loss)
    solver = _pick_solver(problem, args.solver.replace("-", "_"))
    options = {}
    if solver == "torch":
        options = {"device": args.device, "progress": not args.quiet}
    elif args.device != "cpu":
        raise UserError(f"--device {args.device} applies to the torch solver only (the solver is {solver})")
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        solution = problem.solve(solver, **options)
    elapsed = time.perf_counter() - start
    network = recover_network(solution)
    forward = network.objective(X, y)
    gap = abs(forward - solution.objective) / max(abs(solution.objective), 1e-12)
    certificate = problem.certificate(solution)
    F = network.forward(X, training=False)
    if classes is None:
        quality = {"r2": float(1 - np.sum((F[:, 0] - y) ** 2) / np.sum((y - y.mean()) ** 2))}
    elif F.shape[1] == 1:
        quality = {"train_accuracy": float(np.mean(np.sign(F[:, 0]) == y))}
    else:
        quality = {"train_accuracy": float(np.mean(F.argmax(1) == y))}
    report = {
        "data": dataset.source,
        "n_samples": int(X.shape[0]),
        "n_features": int(X.shape[1]),
        "rank": basis.rank,
        "loss": loss,
        "beta": args.beta,
        "arrangements": arrangements.n_patterns,
        "exact_arrangements": bool(arrangements.exact),
        "solver": solution.solver,
        "status": solution.status,
        "objective": solution.objective,
        "forward_objective": forward,
        "equivalence_gap": gap,
        "constraint_violation": solution.constraint_violation,
        "n_neurons": network.n_neurons,
        "solve_time_s": elapsed,
        "certificate": {
            "lower_bound": certificate.lower_bound,
            "relative_gap": certificate.relative_gap,
            "certified": bool(certificate.certified),
            "global": bool(certificate.exact),
        },
        **quality,
        "classes": None if classes is None else [str(c) for c in classes],
        "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
    }
    os.makedirs(args.out, exist_ok=True)
    save_network(network, os.path.join(args.out, "network.npz"), report=report)
    with open(os.path.join(args.out, "report.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    _plot_fit(F, y, classes, report, os.path.join(args.out, "fit.png"))
    return report


def _plot_fit(F, y, classes, report, path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the figure is optional ([plot] extra)
        return
    fig, ax = plt.subplots(figsize=(5, 4))
    target = y if classes is None or F.shape[1] == 1 else y.astype(float)
    output = F[:, 0] if F.shape[1] == 1 else F.argmax(1)
    ax.scatter(target, output, s=8, alpha=0.6)
    ax.set_xlabel("target" if classes is None else "label (encoded)")
    ax.set_ylabel("network output" if F.shape[1] == 1 else "predicted class")
    ax.set_title(f"objective {report['objective']:.5g}, {report['n_neurons']} neurons")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _print_summary(report: dict) -> None:
    cert = report["certificate"]
    scope = "all patterns (global optimum)" if cert["global"] else f"the {report['arrangements']} patterns"
    r = report
    lines = [
        f"data        {r['data']}: n={r['n_samples']}, d={r['n_features']}, rank {r['rank']}",
        f"program     loss={report['loss']}, beta={report['beta']:g}, P={report['arrangements']}",
        f"solver      {report['solver']} ({report['status']}), {report['solve_time_s']:.2f} s",
        f"objective   {report['objective']:.10g} (convex, eq. (4))",
        f"network     {r['n_neurons']} neurons; forward objective (3) {r['forward_objective']:.10g}, "
        f"gap {r['equivalence_gap']:.1e}",
        f"certificate lower bound {cert['lower_bound']:.10g}, relative gap {cert['relative_gap']:.1e} "
        f"over {scope}",
    ]
    quality = {k: report[k] for k in ("r2", "train_accuracy") if k in report}
    lines += [f"fit         {k} {v:.4f}" for k, v in quality.items()]
    print("\n".join(lines))


def _solvers(_args) -> dict:
    from .solvers import available_solvers

    table = available_solvers()
    for name, state in table.items():
        print(f"{name:12s} {state}")
    return table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convexbn", description="Globally optimal two-layer BN networks.")
    sub = parser.add_subparsers(dest="command", required=True)
    solve = sub.add_parser("solve", help="solve the convex program, recover the network, certify it")
    solve.add_argument("--data", default="breast_cancer",
                       help="breast_cancer|digits|wine|iris|diabetes, or a .csv/.npz file")  # fmt: skip
    solve.add_argument("--target", default=None, help="target column (CSV; default last) or array (NPZ)")
    solve.add_argument("--beta", type=float, default=1.0, help="weight decay of (3) (summed loss)")
    solve.add_argument("--arrangements", type=int, default=200, help="patterns to sample (exact if fewer)")
    solve.add_argument("--solver", choices=SOLVERS, default="auto")
    solve.add_argument("--loss", choices=LOSSES, default="auto")
    solve.add_argument("--device", default="cpu", help="cpu or cuda (torch solver)")
    solve.add_argument("--seed", type=int, default=0)
    solve.add_argument("--out", default="convexbn-out")
    solve.add_argument("--quiet", action="store_true", help="no progress bar")
    solve.set_defaults(run=_solve, show=_print_summary)
    solvers = sub.add_parser("solvers", help="which solvers can run here, and why not")
    solvers.set_defaults(run=_solvers, show=None)
    return parser


def main(argv=None) -> int:
    from .persistence import ModelFileError
    from .problem import SolverError
    from .solvers.torch_backend import CheckpointError

    args = build_parser().parse_args(argv)
    try:
        result = args.run(args)
    except (UserError, FileNotFoundError, ValueError, TypeError, SolverError, ModelFileError,
            CheckpointError) as exc:  # fmt: skip
        message = " ".join(str(exc).split())
        print(f"convexbn {args.command}: error: {message}", file=sys.stderr)
        return 2
    if args.show is not None:
        args.show(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
