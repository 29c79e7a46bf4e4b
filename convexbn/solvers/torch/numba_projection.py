"""The cone projections' compiled CPU kernel (:mod:`convexbn.solvers.torch._cone_kernels`): its view of the
basis, its memory of each group's last projection, and the call that checks the kernel's indices first.
See :func:`convexbn.solvers.torch.projection.project_cones` for the method (docs/solvers.md).
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

import torch

__all__ = ["ProjectionMemory", "NumbaBasis", "project_cones_numba", "PARALLEL_MIN_WORK",
           "kernel_load_seconds"]  # fmt: skip

_PARALLEL_PID: int | None = None  # the process that first ran the parallel numba kernel
#: Below this many ``rows * n * k`` a call runs the one-thread kernel: a parallel loop's start-up and its
#: threads' spin-waiting cost more than the work, and on a machine with another busy process they made a
#: small solve 10x slower (a 40 x 3 problem: 31.6 s with the parallel kernel, 3.0 s with one thread).
PARALLEL_MIN_WORK = 2_000_000
#: Seconds the first call of each kernel version (one-thread or parallel, per dtype) took in this process:
#: numba compiles it there, or loads it from its on-disk cache (docs/solvers.md, "The first solve").
_FIRST_CALLS: dict = {}


def kernel_load_seconds() -> float:
    """The seconds this process spent in the kernels' first calls so far (compiling or loading them)."""
    return float(sum(_FIRST_CALLS.values()))


class ProjectionMemory(NamedTuple):
    """What the numba kernel keeps of each group's last projection, carried from call to call.

    Row ``b`` of a call uses group ``groups[b]``. ``values[g] = U' points[g]`` (float64) where
    ``valid[g]``: a check at a point near ``points[g]`` then evaluates only the constraints that the
    distance could make violated (:func:`convexbn.solvers.torch._cone_kernels._most_violated`).
    ``factors[g]``: the Cholesky factor of the Gram matrix of the active normals ``factor_of[g]`` (-1 padded;
    ``factor_of[g, 0] = -2``: none), so that a warm start on the same active set needs no factorization.
    The results do not depend on what is kept. Memory ``G (n + k^2 + 2 k)`` float64.
    """

    values: torch.Tensor
    points: torch.Tensor
    valid: torch.Tensor
    factors: torch.Tensor
    factor_of: torch.Tensor

    @classmethod
    def empty(cls, n_groups: int, n: int, k: int) -> ProjectionMemory:
        """Nothing kept yet for ``n_groups`` groups of ``n`` constraints in ``R^k`` (float64 whatever the
        data's dtype: the kernel's own arithmetic is float64)."""
        f64 = torch.float64
        return cls(torch.empty((n_groups, n), dtype=f64), torch.empty((n_groups, k), dtype=f64),
                   torch.zeros(n_groups, dtype=torch.bool), torch.zeros((n_groups, k, k), dtype=f64),
                   torch.full((n_groups, k), -2, dtype=torch.long))  # fmt: skip

    @staticmethod
    def bytes_per_group(n: int, k: int) -> int:
        """Memory of one group's entry."""
        return 8 * (n + k * k + 2 * k) + 1


class NumbaBasis(NamedTuple):
    """``U'`` as the numba kernel reads it: rows ``(n, k)``, columns ``(k, n)`` (both contiguous), and the
    rows' norms ``(n,)``. Made once per solve by :meth:`of`, instead of at each call."""

    rows: torch.Tensor
    columns: torch.Tensor
    row_norms: torch.Tensor

    @classmethod
    def of(cls, Uprime: torch.Tensor) -> NumbaBasis:
        U = Uprime.detach().cpu().contiguous()
        return cls(U, U.T.contiguous(), U.norm(dim=1))


def _check_range(name: str, index: torch.Tensor, low: int, high: int) -> None:
    """A ``ValueError`` unless every entry of ``index`` is in ``[low, high)``."""
    if index.numel() and (int(index.min()) < low or int(index.max()) >= high):
        lo, hi = int(index.min()), int(index.max())
        raise ValueError(f"{name} holds indices outside [{low}, {high}): {lo}..{hi}")


def project_cones_numba(a, Uprime, signs, active, threshold, patterns, tol, max_steps, basis=None,
                        kept=None, groups=None):  # fmt: skip
    """:func:`convexbn.solvers.torch.projection.project_cones` by the compiled kernel (CPU tensors;
    arguments as there, already defaulted). Returns ``(u, active, done, below)``."""
    from . import _cone_kernels

    global _PARALLEL_PID
    # numba's OpenMP layer terminates a forked child that starts a parallel loop its parent had started:
    # such a child runs the one-thread version
    if _PARALLEL_PID is None:
        _PARALLEL_PID = os.getpid()
    forked = os.getpid() != _PARALLEL_PID

    B, k = a.shape
    n = Uprime.shape[0]
    # the kernel follows torch's thread count, which the solver set for this solve (threads.py)
    threads = torch.get_num_threads()
    serial = forked or threads == 1 or B * n * k < PARALLEL_MIN_WORK
    project_rows = _cone_kernels.project_rows_serial if serial else _cone_kernels.project_rows
    if not serial:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    basis = NumbaBasis.of(Uprime) if basis is None else basis
    rows = torch.arange(B) if patterns is None else patterns
    act = torch.full((B, k), -1, dtype=torch.long) if active is None else active
    if threshold is None:
        thr = torch.full((B,), -1.0, dtype=a.dtype)  # negative: never "below"
    elif torch.is_tensor(threshold):
        thr = threshold.detach().to(a.dtype).expand(B)
    else:
        thr = torch.full((B,), float(threshold), dtype=a.dtype)
    if kept is None:
        kept, groups = ProjectionMemory.empty(0, n, k), rows
    elif groups is None:
        raise ValueError("kept needs groups: the group (row of kept) of each row of a")
    # the kernel does not check its indices: out-of-range ones are refused here
    _check_range("active", act, -1, n)
    _check_range("patterns", rows, 0, signs.shape[0])
    if kept.values.shape[0]:
        _check_range("groups", groups, 0, kept.values.shape[0])
    u = torch.empty_like(a)
    out_act = torch.empty((B, k), dtype=torch.long)
    done = torch.empty(B, dtype=torch.bool)
    below = torch.empty(B, dtype=torch.bool)
    np_ = [t.contiguous().numpy() for t in (a.detach(), basis.rows, basis.columns, basis.row_norms,
                                             signs.detach().to(a.dtype), rows, groups, act, thr)]  # fmt: skip
    # the kernel computes in float64 whatever the data's dtype: its rounding is float64's
    version = (serial, str(a.dtype))
    first = version not in _FIRST_CALLS
    start = time.perf_counter()
    project_rows(*np_[:8], np_[8], float(tol), int(max_steps), float(torch.finfo(torch.float64).eps),
                 kept.values.numpy(), kept.points.numpy(), kept.valid.numpy(), kept.factors.numpy(),
                 kept.factor_of.numpy(), u.numpy(), out_act.numpy(), done.numpy(), below.numpy())  # fmt: skip
    if first:
        _FIRST_CALLS[version] = time.perf_counter() - start
    return u, out_act, done, below
