"""The commands of ``convexbn`` (:mod:`convexbn.cli` parses the command line and calls them): ``solve``,
``compare``, ``path``, ``certify`` and ``solvers``, each returning a JSON-ready record, and the printing
and plotting of each record.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings

import numpy as np

__all__ = ["UserError"]  # the commands are private: convexbn.cli calls them


class UserError(Exception):
    """An error the user can fix: printed as one line, exit status 2."""


def _solver_options(args) -> dict:
    """The torch solver's options from the command line (the fit core passes them to it only; no progress
    bars: a search solves one program per round)."""
    if args.device != "cpu" and args.solver not in ("auto", "torch"):
        raise UserError(f"--device {args.device} applies to the torch solver only (--solver {args.solver})")
    return {"device": args.device}


def _search_options(args):
    from .fit import SearchOptions

    if args.rounds is None:
        return SearchOptions(time_limit=args.time_limit)
    return SearchOptions(rounds=args.rounds, shared_rounds=args.rounds, time_limit=args.time_limit)


def _bounds_report(fit) -> dict:
    """The fit's distance to the global optimum, as ``solve`` / ``compare`` report it."""
    return {
        "arrangements_method": fit.method,
        "lower_bound": fit.lower_bound,
        "relative_gap": fit.gap,
        "estimated_lower_bound": fit.estimated_lower_bound,
        "estimated_gap": fit.estimated_gap,
        "dual_ratio": fit.dual_ratio,
        "certified": bool(fit.certified),
        "global": bool(all(p.solution.arrangements.exact for p in fit.programs)),
    }


def _load(args):
    from .data import load_dataset

    return load_dataset(args.data, target=args.target, max_samples=args.max_samples)


def _json_ready(obj):
    """Non-finite floats to None, NumPy scalars and arrays to Python, keys to strings (valid JSON)."""
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_ready(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _write_json(path: str, obj) -> None:
    with open(path, "w") as handle:
        json.dump(_json_ready(obj), handle, indent=1)


def _pyplot():
    """matplotlib's pyplot (Agg), or None without matplotlib: the CLI's figures are optional ([plot])."""
    from .plotting import _pyplot as pyplot

    try:
        return pyplot()
    except ImportError:
        return None


def _quality(F: np.ndarray, y: np.ndarray, classes) -> dict:
    if classes is None:
        return {"r2": float(1 - np.sum((F[:, 0] - y) ** 2) / np.sum((y - y.mean()) ** 2))}
    if F.shape[1] == 1:
        return {"accuracy": float(np.mean(np.sign(F[:, 0]) == y))}
    return {"accuracy": float(np.mean(F.argmax(1) == y))}


# ------------------------------------------------------------------------------------------------ solve
def _solve(args) -> dict:
    from .data import encode_task
    from .fit import fit_convex_bn
    from .persistence import save_network

    dataset = _load(args)
    loss, y, classes = encode_task(dataset, args.loss)
    X = dataset.X
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = fit_convex_bn(
            X, [y], args.beta, loss=loss, arrangements=args.patterns, n_arrangements=args.arrangements,
            search=_search_options(args), solver=args.solver.replace("-", "_"),
            solver_options=_solver_options(args), implicit_reg=args.implicit_reg, random_state=args.seed,
            owner="convexbn solve", neurons=args.neurons,
        )  # fmt: skip
    (program,) = fit.programs
    solution, network = program.solution, fit.network
    F = network.forward(X, training=False)
    quality = {f"train_{k}" if k == "accuracy" else k: v for k, v in _quality(F, y, classes).items()}
    report = {
        "data": dataset.source,
        "n_samples": int(X.shape[0]),
        "n_features": int(X.shape[1]),
        "rank": fit.basis.rank,
        "loss": loss,
        "beta": fit.beta,
        "beta_requested": args.beta,
        "implicit_reg": str(solution.problem.implicit_reg),
        "neurons": fit.info.get("neurons", "per_output"),
        "arrangements": solution.arrangements.n_patterns,
        "exact_arrangements": bool(solution.arrangements.exact),
        "solver": solution.solver,
        "status": solution.status,
        "objective": solution.objective,
        "forward_objective": program.bounds["forward_objective"],
        "equivalence_gap": program.bounds["equivalence_gap"],
        "constraint_violation": solution.constraint_violation,
        "n_neurons": network.n_neurons,
        "solve_time_s": fit.seconds,
        "rounds": fit.history,
        "certificate": _bounds_report(fit),
        **quality,
        "classes": None if classes is None else [str(c) for c in classes],
        "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
    }
    report = _json_ready(report)
    os.makedirs(args.out, exist_ok=True)
    save_network(network, os.path.join(args.out, "network.npz"), report=report)
    _write_json(os.path.join(args.out, "report.json"), report)
    _plot_fit(F, y, classes, report, os.path.join(args.out, "fit.png"))
    return report


def _plot_fit(F, y, classes, report, path) -> None:
    plt = _pyplot()
    if plt is None:
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


def _bound_lines(cert: dict, patterns: int) -> list:
    """How far the fit may be from the global optimum, in words."""
    if cert["global"]:
        scope = "all patterns enumerated (global optimum)"
    else:
        scope = f"universal bound; {patterns} patterns ({cert['arrangements_method']})"
    lines = [
        f"certificate lower bound {cert['lower_bound']:.10g}, relative gap "
        f"{cert['relative_gap']:.1e} ({scope})" + (", CERTIFIED" if cert["certified"] else ""),
    ]
    if not cert["global"]:
        lines.append(
            f"search      largest dual value / beta {cert['dual_ratio']:.4g}; estimated bound "
            f"{cert['estimated_lower_bound']:.10g}, gap {cert['estimated_gap']:.1e} (if no pattern is more "
            "violated than the oracle found)"
        )
    return lines


def _print_solve(report: dict) -> None:
    cert = report["certificate"]
    r = report
    rounds = len(r.get("rounds") or [])
    lines = [
        f"data        {r['data']}: n={r['n_samples']}, d={r['n_features']}, rank {r['rank']}",
        f"program     loss={report['loss']}, beta={report['beta']:g}"
        + (" (auto)" if r.get("beta_requested") == "auto" else "")
        + f", P={report['arrangements']} ({cert['arrangements_method']}"
        + (f", {rounds - 1} rounds)" if cert["arrangements_method"] == "search" else ")")
        + ("" if r.get("implicit_reg", "none") == "none" else f", implicit_reg={r['implicit_reg']}"),
        f"solver      {report['solver']} ({report['status']}), {report['solve_time_s']:.2f} s",
        f"objective   {report['objective']:.10g} (convex, eq. (4))",
        f"network     {r['n_neurons']} neurons; forward objective (3) {r['forward_objective']:.10g}, "
        f"gap {r['equivalence_gap']:.1e}",
        *_bound_lines(cert, report["arrangements"]),
    ]
    quality = {k: report[k] for k in ("r2", "train_accuracy") if k in report}
    lines += [f"fit         {k} {v:.4f}" for k, v in quality.items()]
    print("\n".join(lines))


# ---------------------------------------------------------------------------------------------- compare
def _compare(args) -> dict:
    from .compare import VARIANTS, compare_with_sgd, format_comparison_table
    from .data import encode_task, split_and_standardize

    dataset = _load(args)
    loss, y, _ = encode_task(dataset, args.loss)
    X, X_test, y, y_test = split_and_standardize(
        dataset.X, y, test_size=args.test_size, random_state=args.seed, scale_target=loss == "squared"
    )
    variants = args.variants or list(VARIANTS)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise UserError(f"unknown --variants {unknown}; choose from {list(VARIANTS)}")
    solver = args.solver.replace("-", "_")
    options = _solver_options(args)
    start = time.perf_counter()
    record = compare_with_sgd(
        X, y, beta=args.beta, X_test=X_test, y_test=y_test, loss=loss, arrangements=args.patterns,
        n_arrangements=args.arrangements, search=_search_options(args), solver=solver,
        solver_options=options, variants=variants, epochs=args.epochs,
        batch_size=args.batch_size or None, resolve_with_sgd_patterns=not args.no_sgd_patterns,
        landscape_every=args.landscape_every or None, random_state=args.seed, progress=not args.quiet,
        neurons=args.neurons,
    )  # fmt: skip
    record["data"] = dataset.source
    record["total_time_s"] = time.perf_counter() - start
    table = format_comparison_table(record, dataset.source)
    os.makedirs(args.out, exist_ok=True)
    _write_json(os.path.join(args.out, "compare.json"), record)
    with open(os.path.join(args.out, "table.txt"), "w") as handle:
        handle.write(table + "\n")
    if _pyplot() is not None:
        from .plotting import plot_comparison

        record["figures"] = [str(p) for p in plot_comparison(record, args.out)]
    record["table"] = table
    return record


def _print_compare(record: dict) -> None:
    print(record["table"])
    figures = ", ".join(record.get("figures", [])) or "none (pip install 'convexbn[plot]')"
    print(f"\ntotal {record['total_time_s']:.1f} s; figures: {figures}")


# ------------------------------------------------------------------------------------------------- path
def _path(args) -> dict:
    from .basis import bn_basis
    from .compare import evaluate_predictions
    from .data import encode_task, split_and_standardize
    from .fit import estimate_critical_beta, estimate_shared_critical_beta, fit_convex_bn, warm_state
    from .losses import get_loss

    dataset = _load(args)
    loss, y, _ = encode_task(dataset, args.loss)
    X, X_test, y, y_test = split_and_standardize(
        dataset.X, y, test_size=args.test_size, random_state=args.seed, scale_target=loss == "squared"
    )
    basis = bn_basis(X)
    Y = get_loss(loss).encode_targets(y)
    shared = args.neurons == "shared" or (
        args.neurons == "auto"
        and Y.shape[1] >= 2
        and get_loss(loss).smooth
        and args.solver in ("auto", "torch")
    )
    if shared:  # the empty network's dual value over shared neurons (eq. (8b))
        beta_max = estimate_shared_critical_beta(basis, Y, loss, random_state=args.seed)
    else:
        beta_max = estimate_critical_beta(basis, y, loss, random_state=args.seed)
    if args.betas:
        betas = np.sort(np.asarray(args.betas, dtype=np.float64))[::-1]  # positive: checked by argparse
    else:
        if not 0 < args.min_ratio < 1:
            raise UserError(f"--min-ratio must be in (0, 1), got {args.min_ratio}")
        betas = beta_max * np.geomspace(0.95, args.min_ratio, args.n_betas)
    options = _solver_options(args)
    start = time.perf_counter()
    points, warm, solvers = [], None, []
    for beta in betas:
        # each point starts from the previous one's patterns and groups (largest beta first)
        fit = fit_convex_bn(
            X, [y], float(beta), loss=loss, arrangements=args.patterns, n_arrangements=args.arrangements,
            search=_search_options(args), solver=args.solver.replace("-", "_"), solver_options=options,
            random_state=args.seed, warm=warm, basis=basis, owner="convexbn path", neurons=args.neurons,
        )  # fmt: skip
        (program,) = fit.programs
        solution, network = program.solution, fit.network
        warm = [warm_state(solution)]
        solvers.append(solution.solver)
        points.append(
            {
                "beta": fit.beta,
                "objective": solution.objective,
                "forward_objective": program.bounds["forward_objective"],
                "n_neurons": network.n_neurons,
                "n_arrangements": solution.arrangements.n_patterns,
                "status": solution.status,
                "n_iter": solution.n_iter,
                "solve_time_s": fit.seconds,
                **_bounds_report(fit),
                "train": evaluate_predictions(network.forward(X, training=False), y, loss),
                "test": evaluate_predictions(network.forward(X_test, training=False), y_test, loss),
            }
        )
    total = time.perf_counter() - start
    record = {
        "data": dataset.source,
        "loss": loss,
        "n_samples": int(X.shape[0]),
        "arrangements": points[-1]["n_arrangements"],
        "arrangements_method": points[-1]["arrangements_method"],
        "solver": ",".join(dict.fromkeys(solvers)),
        "critical_beta": beta_max,
        "total_time_s": total,
        "points": points,
    }
    os.makedirs(args.out, exist_ok=True)
    _write_json(os.path.join(args.out, "path.json"), record)
    plt = _pyplot()
    if plt is not None:
        record["figures"] = [_plot_path(plt, record, os.path.join(args.out, "path.png"))]
    return record


def _plot_path(plt, record: dict, path: str) -> str:
    points = record["points"]
    metric = "accuracy" if "accuracy" in points[0]["test"] else "r2"
    betas = [p["beta"] for p in points]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    axes[0].plot(betas, [p["objective"] for p in points], "o-")
    axes[0].set_ylabel("objective (3) = (4)")
    axes[1].plot(betas, [p["n_neurons"] for p in points], "o-")
    axes[1].set_ylabel("neurons")
    axes[2].plot(betas, [p["train"][metric] for p in points], "o-", label="train")
    axes[2].plot(betas, [p["test"][metric] for p in points], "s-", label="test")
    axes[2].set_ylabel(metric)
    axes[2].legend()
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("beta")
        ax.axvline(record["critical_beta"], color="gray", ls=":", lw=1)
    fig.suptitle(f"{record['data']}: regularization path ({record['loss']}, P={record['arrangements']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _print_path(record: dict) -> None:
    metric = "accuracy" if "accuracy" in record["points"][0]["test"] else "r2"
    print(f"{record['data']}: loss={record['loss']}, P={record['arrangements']}, solver {record['solver']}, "
          f"critical beta {record['critical_beta']:.6g} (zero network at or above)")  # fmt: skip
    print(
        f"{'beta':>12s} {'objective':>14s} {'neurons':>8s} {'train ' + metric:>14s} {'test ' + metric:>14s}"
    )
    for p in record["points"]:
        print(f"{p['beta']:12.5g} {p['objective']:14.8g} {p['n_neurons']:8d} {p['train'][metric]:14.4f} "
              f"{p['test'][metric]:14.4f}")  # fmt: skip
    figures = ", ".join(record.get("figures", [])) or "none (pip install 'convexbn[plot]')"
    print(f"total {record['total_time_s']:.1f} s; figure: {figures}")


# ---------------------------------------------------------------------------------------------- certify
def _certify(args) -> dict:
    from .arrangements import make_arrangements
    from .basis import bn_basis
    from .data import encode_task
    from .network_certificate import certify_network
    from .persistence import load_network

    network, report = load_network(args.model)
    dataset = _load(args)
    _, y, _ = encode_task(dataset, network.loss)
    if dataset.X.shape != (network.n_train, network.n_features):
        raise UserError(
            f"the network was trained on {network.n_train} samples of {network.n_features} features; "
            f"--data {args.data} has shape {dataset.X.shape} (certify needs the training data)"
        )
    method = "exact" if args.exact else "auto"
    arrangements = make_arrangements(bn_basis(dataset.X), args.arrangements, method=method,
                                     random_state=args.seed)  # fmt: skip
    start = time.perf_counter()
    cert = certify_network(network, dataset.X, y, arrangements=arrangements, tol=args.tol)
    return {
        "model": str(args.model),
        "data": dataset.source,
        "loss": network.loss,
        "beta": network.beta,
        "n_neurons": network.n_neurons,
        "objective": cert.objective,
        "stored_objective": report.get("objective"),
        "lower_bound": cert.lower_bound,
        "relative_gap": cert.relative_gap,
        "ratio": cert.ratio,
        "n_checked": cert.n_checked,
        "global": cert.exact,
        "certified": cert.certified,
        "tol": cert.tol,
        "time_s": time.perf_counter() - start,
    }


def _print_certify(record: dict) -> None:
    scope = (
        "every pattern: a bound on the global optimum of (3)"
        if record["global"]
        else "the network's own patterns and a fresh sample"
    )
    verdict = "CERTIFIED" if record["certified"] else "NOT certified"
    print(
        f"network     {record['model']}: {record['n_neurons']} neurons, loss={record['loss']}, "
        f"beta={record['beta']:g}\n"
        f"objective   {record['objective']:.10g} (forward pass on {record['data']})\n"
        f"dual        max dual value / beta = {record['ratio']:.4g} over {record['n_checked']} patterns "
        f"({scope})\n"
        f"bound       lower bound {record['lower_bound']:.10g}, relative gap {record['relative_gap']:.2e}\n"
        f"verdict     {verdict} at tolerance {record['tol']:g} ({record['time_s']:.1f} s)"
    )


def _solvers(_args) -> dict:
    from .solvers import available_solvers

    table = available_solvers()
    for name, state in table.items():
        print(f"{name:12s} {state}")
    return table
