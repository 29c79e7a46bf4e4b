"""How many threads a torch solve uses (torch's intra-op pool and, through it, the numba cone projections).

A thread pool only pays when its threads have cores to run on. Two cases lose badly (docs/solvers.md,
"Threads"; ``benchmarks/bench_busy.py``): a small problem, whose tensors are too small to split, and a
machine where another process keeps a core busy, where every parallel step waits for the thread that
shares its core. So a solve runs on one thread below :data:`ONE_THREAD_MAX_WORK`, and above it on at most
the cores that were idle when it started (sampled from ``/proc/stat`` on Linux, where it is available;
the sample is reused for a few seconds),
never more than ``torch.get_num_threads()`` (which already follows ``threadpoolctl.threadpool_limits``,
``OMP_NUM_THREADS`` and joblib's workers). ``threads=`` overrides the choice.
"""

from __future__ import annotations

import contextlib
import os
import time

import torch

__all__ = ["ONE_THREAD_MAX_WORK", "idle_cores", "threads_for", "threads_for_work", "torch_threads"]

#: A CPU solve with fewer than this many ``C n P k`` per operator application runs on one thread.
ONE_THREAD_MAX_WORK = 2_000_000
#: Seconds over which the idle cores are sampled before a multi-threaded solve.
IDLE_SAMPLE_S = 0.05
_last_sample: tuple[float, float | None] = (-1e9, None)


def _cpu_times() -> tuple[float, float] | None:
    """(idle + iowait + this process's own, total) jiffies over all cores, from ``/proc/stat`` and
    ``/proc/self/stat`` (our own threads' time counts as idle: an idle thread pool spin-waits for a while
    after a parallel step); None where they cannot be read."""
    try:
        with open("/proc/stat") as handle:
            fields = handle.readline().split()[1:]
        with open("/proc/self/stat") as handle:
            own = handle.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    except OSError:
        return None
    values = [float(v) for v in fields]
    mine = float(own[11]) + float(own[12])  # utime, stime (fields 14 and 15 of proc(5))
    return values[3] + (values[4] if len(values) > 4 else 0.0) + mine, sum(values)


#: A sample is reused for this many seconds (a run of solves pays the 50 ms at most once per window: at most
#: 5% of their time; a longer window would miss a neighbour that started since, as bench_busy.py measures).
IDLE_SAMPLE_REUSE_S = 1.0


def idle_cores(sample_s: float = IDLE_SAMPLE_S) -> float | None:
    """The number of cores idle over the last ``sample_s`` seconds (re-sampled at most every
    :data:`IDLE_SAMPLE_REUSE_S`), or None where ``/proc/stat`` is not available."""
    global _last_sample
    now = time.monotonic()
    if now - _last_sample[0] < IDLE_SAMPLE_REUSE_S:
        return _last_sample[1]
    first = _cpu_times()
    if first is None:
        return None
    time.sleep(sample_s)
    second = _cpu_times()
    total = second[1] - first[1]
    idle = None if total <= 0 else (second[0] - first[0]) / total * (os.cpu_count() or 1)
    _last_sample = (time.monotonic(), idle)
    return idle


def threads_for(problem, settings) -> int:
    """torch's threads for this solve: :func:`threads_for_work` of its ``C n P k``."""
    work = problem.n_outputs * problem.n_samples * problem.n_patterns * problem.dim
    return threads_for_work(work, settings.threads, settings.device)


def threads_for_work(work: int, threads: int | None = None, device="cpu") -> int:
    """Threads for a computation of ``work`` multiply-adds per step: ``threads`` when given; on a GPU the
    current count; on the CPU 1 below :data:`ONE_THREAD_MAX_WORK`, else the current count capped by the
    idle cores."""
    current = torch.get_num_threads()
    if threads is not None:
        return int(threads)
    if torch.device(device).type != "cpu" or current == 1:
        return current
    if work < ONE_THREAD_MAX_WORK:
        return 1
    idle = idle_cores()
    return current if idle is None else max(1, min(current, int(idle + 0.5)))


@contextlib.contextmanager
def torch_threads(count: int):
    """torch on ``count`` threads inside the block, restored after."""
    before = torch.get_num_threads()
    if count == before:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
