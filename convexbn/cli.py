"""The ``convexbn`` command line.

    convexbn compare                                   # convex optimum vs SGD/Adam BN nets (breast cancer)
    convexbn solve --data breast_cancer --beta 1 --arrangements 200 --out results/solve
    convexbn path --data diabetes --n-betas 8
    convexbn certify results/solve/network.npz --data breast_cancer
    convexbn solvers

``solve`` builds the convex program of a dataset, solves it, recovers the BN network, checks the
equivalence (3) == (4) by a forward pass, computes the dual certificate over the program's patterns,
prints a summary and writes ``network.npz`` (portable format, :func:`convexbn.persistence.save_network`),
``report.json`` and ``fit.png``. ``compare`` runs :func:`convexbn.compare.compare_with_sgd` on a
train/test split and writes its table, JSON record and figures. ``path`` solves a regularization path
(largest ``beta`` first, warm-started) and ``certify`` checks a saved network against the dual
certificate (:func:`convexbn.network_certificate.certify_network`). Any user error (missing file, bad column,
non-numeric data, a solver that is not installed, bad parameters) is one line on stderr and exit status 2;
``certify`` exits with 1 when the network is not certified.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile

from .cli_commands import (
    UserError,
    _certify,
    _compare,
    _path,
    _print_certify,
    _print_compare,
    _print_path,
    _print_solve,
    _solve,
    _solvers,
)

__all__ = ["build_parser", "main"]

LOSSES = ("auto", "squared", "logistic", "hinge", "cross_entropy")
ARRANGEMENT_METHODS = ("auto", "search", "sample", "enumerate")
SOLVERS = ("auto", "cvxpy", "clarabel", "mosek", "scs", "torch", "closed-form")


def _positive_float(value: str) -> float:
    """A finite number > 0 (``--beta``, ``--time-limit``, ``--tol``, ...)."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {value!r}") from None
    if not (math.isfinite(number) and number > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {value!r}")
    return number


def _fraction(value: str) -> float:
    """A number strictly between 0 and 1 (``--test-size``, ``--min-ratio``, ``certify --tol``)."""
    number = _positive_float(value)
    if number >= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {value!r}")
    return number


def _integer(low: int):
    """An integer >= ``low``."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {value!r}") from None
        if number < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value!r}")
        return number

    parse.__name__ = f"integer >= {low}"
    return parse


def _beta(value: str):
    """``--beta``: a finite number > 0 or ``auto``."""
    return value if value == "auto" else _positive_float(value)


def _count(value: str):
    """``--arrangements``: a positive count or ``auto``."""
    return value if value == "auto" else _integer(1)(value)


def _device(value: str) -> str:
    """``--device``: ``cpu``, ``cuda`` or ``cuda:N``."""
    name, _, index = value.partition(":")
    if name not in ("cpu", "cuda") or (index and (name == "cpu" or not index.isdigit())):
        raise argparse.ArgumentTypeError(f"must be cpu, cuda or cuda:N, got {value!r}")
    return value


def _prepare_out(path: str) -> str:
    """Create the output folder ``--out`` before any work, and check that it can be written: a long
    solve must not fail at its end on a path that is a file, lies under a file or is read-only."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"--out {path!r} is a file, not a folder")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise UserError(f"--out {path!r} cannot be written: {exc.strerror or exc}") from None
    return path


# ------------------------------------------------------------------------------------------------ parser
def _data_arguments(parser: argparse.ArgumentParser, default: str | None = "breast_cancer") -> None:
    parser.add_argument("--data", default=default, required=default is None,
                        help="breast_cancer|digits|wine|iris|diabetes, a .csv/.npz file, or mnist:DIR / "
                        "cifar10:DIR (a local copy)")  # fmt: skip
    parser.add_argument("--target", default=None, help="target column (CSV; default last) or array (NPZ)")
    parser.add_argument("--max-samples", type=_integer(2), default=None, help="keep the first N samples")
    parser.add_argument("--seed", type=int, default=0, help="seeds the patterns, split and training")


def _program_arguments(parser: argparse.ArgumentParser, beta, solver: str) -> None:
    if beta is not None:
        parser.add_argument("--beta", type=_beta, default=beta,
                            help="weight decay of (3) (summed loss), or auto: a fraction of the critical "
                            f"beta (default {beta})")  # fmt: skip
    parser.add_argument("--patterns", choices=ARRANGEMENT_METHODS, default="auto",
                        help="how the activation patterns are chosen: search (grow a sample by the "
                        "dual oracle), sample (the sample only: fast, weaker), enumerate (every "
                        "pattern), auto (enumerate when cheap, else search)")  # fmt: skip
    parser.add_argument("--arrangements", type=_count, default="auto",
                        help="initial sample size (auto: clip(4 (rank + 1), 50, 1000))")  # fmt: skip
    parser.add_argument("--neurons", choices=("auto", "shared", "per_output"), default="auto",
                        help="several outputs (classes): shared (one network whose hidden neurons feed "
                        "every output, the joint program), per_output (one program per output, or one "
                        "per pattern and output for cross-entropy), auto (shared for smooth losses with "
                        "the auto/torch solver)")  # fmt: skip
    parser.add_argument("--rounds", type=_integer(0), default=None,
                        help="search rounds at most (default 10 pattern rounds; 30 atom rounds with "
                        "shared neurons)")  # fmt: skip
    parser.add_argument("--time-limit", type=_positive_float, default=None,
                        help="seconds after which the search starts no new round")  # fmt: skip
    parser.add_argument("--solver", choices=SOLVERS, default=solver)
    parser.add_argument("--loss", choices=LOSSES, default="auto")
    parser.add_argument("--device", type=_device, default="cpu", help="cpu, cuda or cuda:N (torch solver)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``PROG: error: MESSAGE (see PROG --help)``, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``convexbn`` argument parser (one subcommand per job)."""
    parser = _Parser(prog="convexbn", description="Globally optimal two-layer BN networks.")
    sub = parser.add_subparsers(dest="command", required=True)

    solve = sub.add_parser("solve", help="solve the convex program, recover the network, certify it")
    _data_arguments(solve)
    _program_arguments(solve, beta="auto", solver="auto")
    solve.add_argument(
        "--implicit-reg",
        default=None,
        metavar="SPEC",
        help="spectral filter of docs/math.md section 9: power:T, top:K or tau:X (default: none)",
    )
    solve.add_argument("--out", default="convexbn-out")
    solve.set_defaults(run=_solve, show=_print_solve)

    compare = sub.add_parser("compare", help="convex optimum vs SGD/Adam-trained BN networks and variants")
    _data_arguments(compare)
    _program_arguments(compare, beta=1.0, solver="auto")
    compare.add_argument("--epochs", type=_integer(1), default=200, help="training epochs of every network")
    compare.add_argument("--batch-size", type=_integer(0), default=32, help="mini-batch size (0: full batch)")
    compare.add_argument("--variants", nargs="+", default=None, help="subset of the harness's variants")
    compare.add_argument("--test-size", type=_fraction, default=0.25)
    compare.add_argument("--landscape-every", type=_integer(0), default=20,
                         help="steps between probes (0: none)")  # fmt: skip
    compare.add_argument("--no-sgd-patterns", action="store_true",
                         help="skip the re-solve with the trained networks' patterns")  # fmt: skip
    compare.add_argument("--out", default="convexbn-compare")
    compare.set_defaults(run=_compare, show=_print_compare)

    path = sub.add_parser("path", help="regularization path over beta (largest first, warm-started)")
    _data_arguments(path)
    _program_arguments(path, beta=None, solver="auto")
    path.add_argument("--betas", type=_positive_float, nargs="+", default=None,
                      help="weight decays (default: --n-betas values below the critical beta)")  # fmt: skip
    path.add_argument("--n-betas", type=_integer(1), default=8)
    path.add_argument("--min-ratio", type=_fraction, default=1e-3, help="smallest beta / critical beta")
    path.add_argument("--test-size", type=_fraction, default=0.25)
    path.add_argument("--out", default="convexbn-path")
    path.set_defaults(run=_path, show=_print_path)

    certify = sub.add_parser("certify", help="check a saved network against the dual certificate")
    certify.add_argument("model", help="a network.npz written by `convexbn solve` (or save_network)")
    _data_arguments(certify)
    certify.add_argument("--arrangements", type=_integer(1), default=1000,
                         help="fresh patterns to check besides the network's own (all if fewer)")  # fmt: skip
    certify.add_argument("--exact", action="store_true", help="enumerate every pattern (small problems)")
    certify.add_argument("--tol", type=_fraction, default=1e-4, help="relative gap that counts as certified")
    certify.set_defaults(run=_certify, show=_print_certify)

    solvers = sub.add_parser("solvers", help="which solvers can run here, and why not")
    solvers.set_defaults(run=_solvers, show=None)
    return parser


def main(argv=None) -> int:
    """Run the command line; returns the exit status (0; 1 = not certified; 2 = an error the user can
    fix, printed as one line; 3 = an internal error, one line too)."""
    from .exceptions import CheckpointError
    from .persistence import ModelFileError
    from .problem import SolverError

    args = build_parser().parse_args(argv)

    def fail(message: str, status: int = 2) -> int:
        print(f"convexbn {args.command}: error: {' '.join(str(message).split())}", file=sys.stderr)
        return status

    try:
        for name in ("out",):  # the output folder is checked before any work
            if getattr(args, name, None) is not None:
                _prepare_out(getattr(args, name))
        result = args.run(args)
    except (UserError, ValueError, TypeError, SolverError, ModelFileError, CheckpointError) as exc:
        return fail(exc)
    except OSError as exc:  # a missing file, a full disk, no permission, a directory for a file
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return fail(f"{exc.strerror or exc}{where}" if exc.strerror else exc)
    except MemoryError as exc:
        return fail(str(exc) or "out of memory; use fewer samples (--max-samples) or --arrangements")
    except KeyboardInterrupt:
        return fail("interrupted (Ctrl-C); nothing was written after the last finished step")
    except Exception as exc:  # a bug: one line, exit 3; CONVEXBN_TRACEBACK=1 shows where
        if os.environ.get("CONVEXBN_TRACEBACK"):
            raise
        return fail(f"internal error {type(exc).__name__}: {exc} (please report it; set "
                    "CONVEXBN_TRACEBACK=1 for the traceback)", 3)  # fmt: skip
    if args.show is not None:
        args.show(result)
    if args.command == "certify" and not result["certified"]:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
