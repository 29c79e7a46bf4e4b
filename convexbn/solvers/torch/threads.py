"""How many threads a torch solve uses (torch's intra-op pool and, through it, the numba cone projections).

A thread pool only pays when its threads have cores to run on. Two cases lose badly (docs/solvers.md,
"Threads"; ``benchmarks/bench_busy.py``): a small problem, whose tensors are too small to split, and a
machine where another process keeps a core busy, where every parallel step waits for the thread that
shares its core. So a solve runs on one thread below :data:`ONE_THREAD_MAX_WORK`, and above it on at most
the cores that were idle when it started (sampled from ``/proc/stat`` on Linux, where it is available;
the sample is reused for a second),
never more than ``torch.get_num_threads()`` (which already follows ``threadpoolctl.threadpool_limits``,
``OMP_NUM_THREADS`` and joblib's workers). ``threads=`` overrides the choice.

A solve does not wait for the sample (:func:`solve_threads`): when it needs a fresh one, it starts on one
thread, and its iteration loop (:func:`poll_threads`, from
:meth:`~convexbn.solvers.torch.loop.IterationLoop.tick`) switches to the chosen count once
:data:`IDLE_SAMPLE_S` has passed. A waiting sample cost every such solve 50 ms; the certified solve at
summed beta 5 of docs/solvers.md's weak-regularization table takes 0.034 s in all (docs/solvers.md,
"Threads").
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

import torch

__all__ = ["ONE_THREAD_MAX_WORK", "idle_cores", "poll_threads", "solve_threads", "solve_work", "threads_for",
           "threads_for_work", "torch_threads"]

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
    if _fresh_sample():
        return _last_sample[1]
    first = _cpu_times()
    if first is None:
        return None
    time.sleep(sample_s)
    return _record_sample(first, _cpu_times())


def _record_sample(first, second) -> float | None:
    """The idle cores between two :func:`_cpu_times` readings, kept as the last sample."""
    global _last_sample
    total, cores = second[1] - first[1], os.cpu_count() or 1
    # the two files are read at different instants and count whole jiffies: over a short window our own
    # time can exceed its share of the total, so the ratio is kept within [0, cores]
    idle = None if total <= 0 else min(max((second[0] - first[0]) / total, 0.0), 1.0) * cores
    _last_sample = (time.monotonic(), idle)
    return idle


def _fresh_sample() -> bool:
    return time.monotonic() - _last_sample[0] < IDLE_SAMPLE_REUSE_S


def solve_work(problem) -> int:
    """A solve's multiply-adds per operator application, ``C n P k``: what its thread count follows."""
    return problem.n_outputs * problem.n_samples * problem.n_patterns * problem.dim


def threads_for(problem, settings) -> int:
    """torch's threads for this solve: :func:`threads_for_work` of its :func:`solve_work`."""
    return threads_for_work(solve_work(problem), settings.threads, settings.device)


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
    return _count_for(idle_cores(), current)


def _count_for(idle: float | None, current: int) -> int:
    """The threads for ``idle`` idle cores (None: unknown), at most ``current``."""
    return current if idle is None else max(1, min(current, int(idle + 0.5)))


# the choice a running solve is waiting for, per Python thread: (first reading, its time, torch's count)
_pending = threading.local()


@contextlib.contextmanager
def solve_threads(work: int, threads: int | None = None, device="cpu"):
    """torch on :func:`threads_for_work`'s count inside the block (restored after), without waiting for the
    idle sample: when the choice needs a fresh one, the block starts on one thread and
    :func:`poll_threads` switches to the chosen count once :data:`IDLE_SAMPLE_S` has passed."""
    current = torch.get_num_threads()
    first = None
    deferred = (threads is None and torch.device(device).type == "cpu" and current > 1
                and work >= ONE_THREAD_MAX_WORK and not _fresh_sample())  # fmt: skip
    if deferred:
        first = _cpu_times()
    if first is None:  # nothing to wait for (or no /proc/stat: threads_for_work does not wait either)
        with torch_threads(threads_for_work(work, threads, device)):
            yield
        return
    previous = getattr(_pending, "choice", None)
    _pending.choice = (first, time.monotonic(), current)
    try:
        with torch_threads(1):
            yield
    finally:
        _pending.choice = previous


def poll_threads() -> None:
    """Inside :func:`solve_threads`: once :data:`IDLE_SAMPLE_S` has passed since the block started on one
    thread, take the idle sample and switch torch to the chosen count. Cheap otherwise (a clock read)."""
    choice = getattr(_pending, "choice", None)
    if choice is None or time.monotonic() - choice[1] < IDLE_SAMPLE_S:
        return
    _pending.choice = None
    second = _cpu_times()
    count = choice[2] if second is None else _count_for(_record_sample(choice[0], second), choice[2])
    if count != torch.get_num_threads():
        torch.set_num_threads(count)


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
