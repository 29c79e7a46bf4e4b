"""The bookkeeping every torch method's iteration loop shares: resuming from a checkpoint, the progress bar,
the checkpoint cadence and the user's callback. The methods (:mod:`~convexbn.solvers.torch.fista`,
:mod:`~convexbn.solvers.torch.al`, :mod:`~convexbn.solvers.torch.admm`) keep their own state and steps.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from .checkpoint import StateSpec, load_checkpoint, problem_fingerprint, save_checkpoint
from .settings import TorchSettings
from .threads import poll_threads

__all__ = ["IterationLoop"]


class IterationLoop:
    """Checkpoints, progress and callback of one solve.

    Parameters
    ----------
    problem : ConvexBNProblem
    settings : TorchSettings
    method : str
        The method's name in the checkpoint fingerprint (``"fista"``, ``"al"``, ``"admm"``).
    callback : callable or None
        ``callback(n_iter, W_pos, W_neg)`` with numpy copies; True asks to stop.
    comm : communicator or None
        A distributed solve's: the callback runs on rank 0 and its answer is broadcast.
    """

    def __init__(self, problem, settings: TorchSettings, method: str, callback=None, comm=None):
        self.settings, self.callback, self.comm = settings, callback, comm
        self.path = settings.checkpoint
        # hashing the data costs a pass over it: only when there is a checkpoint to write or check
        self.fingerprint = None if self.path is None else problem_fingerprint(problem, method, settings.dtype)
        self.bar = None
        self.desc = f"convexbn {method}"

    def resume(self, device, spec: StateSpec) -> dict | None:
        """The checkpoint's validated state when ``resume`` is set and the file exists, else None."""
        if self.settings.resume and self.path is not None and os.path.exists(self.path):
            return load_checkpoint(self.path, self.fingerprint, device, spec)
        return None

    def start(self, initial: int) -> None:
        """Open the progress bar (when asked for) at iteration ``initial``."""
        if self.settings.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.settings.max_iter, initial=initial, desc=self.desc, leave=False)

    def save(self, state: dict) -> None:
        """Write ``state`` to the checkpoint (when there is one)."""
        if self.path is not None:
            save_checkpoint(state, self.path, self.fingerprint)

    def tick(self, it: int, state) -> None:
        """One iteration done (``it`` in all): the thread count is chosen when due, the bar moves, and
        every ``checkpoint_every`` iterations ``state()`` (a callable, so that nothing is built between
        checkpoints) is saved."""
        poll_threads()  # the thread count, once the idle sample is due (threads.solve_threads)
        if self.bar is not None:
            self.bar.update(1)
        every = self.settings.checkpoint_every
        if every and it % every == 0:
            self.save(state())

    def report(self, it: int, X) -> bool:
        """Call the callback with the groups X (1 or 2, C, P, k); True asks to stop. In a distributed solve
        the callback runs on rank 0 only, and its answer is broadcast so that every process stops."""
        if self.callback is None:
            return False
        stop = False
        if self.comm is None or self.comm.rank == 0:
            V = X.detach().to("cpu", torch.float64).numpy()
            stop = bool(self.callback(it, V[0], V[1] if V.shape[0] > 1 else np.zeros_like(V[0])))
        return stop if self.comm is None else self.comm.broadcast_flag(stop)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
