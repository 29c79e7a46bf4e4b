"""Import time of convexbn, each statement in a fresh interpreter (median of ``--repeats``).

    python benchmarks/bench_import.py [--path CHECKOUT] [--repeats 5] [--out FILE.json]

``--path`` puts another checkout first on ``sys.path`` (e.g. a ``git worktree`` of an older commit), so
that two versions are measured side by side on the same machine. For each statement: the wall time and
whether torch, cvxpy and scikit-learn were imported by it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

STATEMENTS = {  # each probe also prints the file it imported, to show which checkout it measured
    "import convexbn": "import convexbn",
    "core (basis, patterns, program)": "from convexbn import ConvexBNProblem, bn_basis, sample_arrangements",
    "estimators": "from convexbn import ConvexBNClassifier",
}

PROBE = """
import sys, time
start = time.perf_counter()
{statement}
seconds = time.perf_counter() - start
loaded = (name in sys.modules for name in ("torch", "cvxpy", "sklearn"))
print(seconds, *loaded, sys.modules["convexbn"].__file__)
"""


def measure(statement: str, path: str | None, repeats: int) -> dict:
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = path + os.pathsep + env.get("PYTHONPATH", "")
    times, loaded = [], None
    for _ in range(repeats):
        # from a neutral folder: ``python -c`` puts the working directory first on sys.path
        out = subprocess.run([sys.executable, "-c", PROBE.format(statement=statement)], env=env,
                             cwd=tempfile.gettempdir(), capture_output=True, text=True,
                             check=True).stdout.split()  # fmt: skip
        times.append(float(out[0]))
        loaded = dict(zip(("torch", "cvxpy", "sklearn"), (flag == "True" for flag in out[1:4]), strict=True))
        source = out[4]
    return {"seconds": statistics.median(times), "all_s": times, **loaded, "file": source}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", default=None, help="a checkout to import convexbn from")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    rows = []
    for name, statement in STATEMENTS.items():
        row = {"statement": name, **measure(statement, args.path, args.repeats)}
        rows.append(row)
        print(f"{name:34s} {row['seconds']:.3f} s  torch={row['torch']} cvxpy={row['cvxpy']} "
              f"sklearn={row['sklearn']}  ({row['file']})")  # fmt: skip
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"path": args.path or "installed", "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
