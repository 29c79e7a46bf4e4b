"""Starting the processes of a local distributed solve (:func:`launch_local`): one process per rank on this
machine, a free port for their rendezvous, each rank's result collected (:mod:`convexbn.distributed`).
"""

from __future__ import annotations

import queue
import socket
import traceback

import torch
import torch.distributed as dist

from ._validation import check_positive_int

__all__ = ["launch_local"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _local_worker(fn, rank, world_size, port, backend, threads, args, results):
    try:
        if threads:
            torch.set_num_threads(threads)
        dist.init_process_group(
            backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
        )
        try:
            results.put((rank, True, fn(rank, world_size, *args)))
        finally:
            dist.destroy_process_group()
    except BaseException:  # the parent re-raises it with this rank's traceback
        results.put((rank, False, traceback.format_exc()))


def launch_local(fn, world_size: int, args: tuple = (), *, backend: str = "gloo", threads: int | None = None,
                 timeout: float = 600.0) -> list:  # fmt: skip
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` new processes on this machine, joined by a
    ``torch.distributed`` process group on the loopback address (the ``torchrun --standalone`` setting,
    from Python: for tests, notebooks and benchmarks).

    Parameters
    ----------
    fn : callable
        Picklable by reference (a module-level function); its return values must be picklable.
    world_size : int
    args : tuple
        Extra arguments, pickled to every process.
    backend : str
        ``"gloo"`` (CPU) or ``"nccl"`` (one GPU per process).
    threads : int, optional
        ``torch.set_num_threads`` in each process (default: torch's own choice).
    timeout : float
        Seconds to wait for all results.

    Returns
    -------
    list
        ``fn``'s return value of each rank, in rank order.

    Raises
    ------
    RuntimeError
        With the traceback of the first rank that failed, or on a timeout (the processes are killed).
    """
    import torch.multiprocessing as mp

    world_size = check_positive_int(world_size, "world_size")
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = _free_port()
    procs = [
        ctx.Process(target=_local_worker, args=(fn, rank, world_size, port, backend, threads, args, results))
        for rank in range(world_size)
    ]
    for proc in procs:
        proc.start()
    out, failure = {}, None
    waited = 0.0
    try:
        while len(out) < world_size and failure is None:
            try:
                rank, ok, payload = results.get(timeout=1.0)
            except queue.Empty:
                waited += 1.0
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead or waited > timeout:
                    failure = "a process died" if dead else f"timed out after {timeout:.0f} s"
                continue
            if ok:
                out[rank] = payload
            else:
                failure = f"rank {rank} failed:\n{payload}"
    finally:
        for proc in procs:
            proc.join(timeout=5 if failure is None else 0.1)
            if proc.is_alive():
                proc.kill()
                proc.join()
    if failure is not None:
        raise RuntimeError(f"launch_local({getattr(fn, '__name__', fn)!r}, {world_size}): {failure}")
    return [out[rank] for rank in range(world_size)]
