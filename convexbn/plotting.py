"""Figures of the comparison records (:mod:`convexbn.compare`), with matplotlib (the ``plot`` extra).

Each function takes the record dict and an output folder, writes PNG files and returns their paths.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_comparison", "plot_sorted_batches", "plot_batch_sizes"]


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "convexbn's figures need matplotlib: pip install 'convexbn[plot]' (or pip install matplotlib)"
        ) from exc
    return plt


def plot_comparison(record: dict, out_dir) -> list[Path]:
    """Objective (3) vs wall time (convex optimum as a line), test metric, and landscape curves.

    Writes ``objective_vs_time.png``, ``test_metric.png`` (when the record has test metrics) and
    ``landscape.png`` (when it has probes).
    """
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    convex = record["convex"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, run in record["variants"].items():
        if not run["comparable_to_convex"]:
            continue  # the plain net's objective is a different function
        t = [max(h["time"], 1e-4) for h in run["curve"]]
        ax.plot(t, [h["objective"] for h in run["curve"]], label=name)
    curve = convex.get("curve", [])
    method = convex.get("arrangements_method", "sample")
    if curve:
        ax.plot(
            [max(h["time"], 1e-4) for h in curve],
            [h["objective"] for h in curve],
            "ko-",
            ms=3,
            label=f"convex, {method} (one point per round)" if method == "search" else f"convex ({method})",
        )
    ax.axhline(convex["objective"], color="k", lw=1.5, label=f"convex program {convex['objective']:.4g}")
    if "lower_bound" in convex:
        ax.axhline(convex["estimated_lower_bound"], color="gray", lw=1, ls=":",
                   label=f"estimated lower bound {convex['estimated_lower_bound']:.4g}")  # fmt: skip
    grown = record.get("convex_with_sgd_patterns")
    if grown:
        ax.axhline(grown["objective"], color="k", ls="--", lw=1,
                   label=f"convex, + trained nets' patterns {grown['objective']:.4g}")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("wall time [s]")
    ax.set_ylabel("training objective (3)")
    ax.set_title(f"beta = {record['beta']:g}, loss = {record['loss']}, m = {convex['n_neurons']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "objective_vs_time.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    if "test" in convex:
        metric = "accuracy" if "accuracy" in convex["test"] else "r2"
        names = ["convex"] + [k for k, v in record["variants"].items() if "test" in v]
        values = [convex["test"][metric]] + [record["variants"][k]["test"][metric] for k in names[1:]]
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.bar(range(len(names)), values, color=["k"] + ["C0"] * (len(names) - 1))
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(f"test {metric}")
        finite = [v for v in values if np.isfinite(v)]
        if finite:
            low = min(finite)
            ax.set_ylim(max(0.0, low - 0.1 * (1 - low + 1e-9)) if metric == "accuracy" else None, None)
        fig.tight_layout()
        paths.append(out / "test_metric.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)

    probes = {k: v["landscape"] for k, v in record["variants"].items() if v.get("landscape")}
    if probes or convex.get("landscape"):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for i, (name, rows) in enumerate(probes.items()):
            steps = [r["step"] for r in rows]
            axes[0].fill_between(steps, [r["loss_min"] for r in rows], [r["loss_max"] for r in rows],
                                 alpha=0.3, color=f"C{i}", label=name)  # fmt: skip
            axes[1].plot(steps, [r["beta_smoothness"] for r in rows], color=f"C{i}", label=name)
        if convex.get("landscape"):
            rows = convex["landscape"]
            axes[1].plot([r["iteration"] for r in rows], [r["beta_smoothness"] for r in rows], "k--",
                         label="convex program (iterations)")  # fmt: skip
        axes[0].set_yscale("log")
        axes[0].set_xlabel("step")
        axes[0].set_ylabel("loss along -g (min..max over eta)")
        axes[1].set_yscale("log")
        axes[1].set_xlabel("step / iteration")
        axes[1].set_ylabel("effective beta-smoothness")
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        paths.append(out / "landscape.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


def plot_sorted_batches(record: dict, out_dir) -> list[Path]:
    """Full-data objective vs epoch for each normalization with shuffled and sorted batches."""
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (norm, orders) in enumerate(record["runs"].items()):
        for order, style in (("shuffle", "-"), ("sorted", "--")):
            curve = orders[order]["curve"]
            ax.plot([h["epoch"] for h in curve], [h["objective"] for h in curve], style, color=f"C{i}",
                    label=f"{norm}, {order} batches")  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("full-data objective (3)")
    ax.legend()
    fig.tight_layout()
    path = out / "sorted_batches.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]


def plot_batch_sizes(record: dict, out_dir) -> list[Path]:
    """Best final objective of each method against the batch size (missing where BN is undefined)."""
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sizes = sorted(int(b) for b in record["runs"])
    fig, ax = plt.subplots(figsize=(6, 4))
    methods = sorted({m for b in record["runs"].values() for m in b})
    for method in methods:
        xs, ys = [], []
        for b in sizes:
            entry = record["runs"].get(b, record["runs"].get(str(b), {})).get(method, {})
            if "objective" in entry and np.isfinite(entry["objective"]):
                xs.append(b)
                ys.append(entry["objective"])
        ax.plot(xs, ys, "o-", label=method)
    ax.axhline(record["initial_bn_objective"], color="gray", ls=":", label="BN net at initialization")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel(f"full-data objective after {record['epochs']} epochs")
    ax.legend()
    fig.tight_layout()
    path = out / "batch_sizes.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]
