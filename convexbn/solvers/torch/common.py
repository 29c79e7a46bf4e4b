"""Helpers every torch solver uses (FISTA, ADMM, the augmented Lagrangian, the shared-neuron FISTA): the
device and dtype check, the finished groups, warm-start arrays and the cone violation. A bottom module of
the solver layer: :mod:`convexbn.solvers.torch` dispatches to the solvers, which import these from
here, not from it (no import cycle).
"""

from __future__ import annotations

import numpy as np
import torch

from ...exceptions import SolverError

__all__ = ["check_device_dtype", "cone_violation", "finished_groups", "warm_start_arrays"]


def check_device_dtype(device, dtype) -> torch.dtype:
    """The torch dtype named by ``dtype`` (a dtype or its name), after checking it is float32 or float64 and
    that a CUDA ``device`` has a CUDA device to run on; raises ``ValueError`` otherwise."""
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but torch finds no CUDA device")
    return dtype


def finished_groups(X, method: str, device, dtype):
    """``(W_pos, W_neg, solver_name)`` from a (2, C, P, k) tensor; ``SolverError`` if it is not finite."""
    V = X.detach().to("cpu", torch.float64).numpy()
    if not np.all(np.isfinite(V)):
        raise SolverError(f"{method} diverged (non-finite iterates)")
    name = f"torch-{method.lower()}:{torch.device(device).type}:{str(dtype).replace('torch.', '')}"
    return V[0], V[1], name


def warm_start_arrays(warm_start):
    """``(W_pos, W_neg)`` numpy arrays from a ConvexBNSolution, a dict with those keys, or a pair."""
    if hasattr(warm_start, "W_pos"):
        Wp, Wn = warm_start.W_pos, warm_start.W_neg
    elif isinstance(warm_start, dict):
        Wp, Wn = warm_start["W_pos"], warm_start["W_neg"]
    else:
        Wp, Wn = warm_start
    return np.asarray(Wp), np.asarray(Wn)


def cone_violation(signs, pre, X, reduce_max=None):
    """Largest relative violation of ``signs * pre(x) >= 0`` over the blocks of X (2, C, P, k).

    ``reduce_max`` takes the maximum over the processes of a distributed solve (rows are sharded).
    """
    scale = float(X.norm(dim=-1).max())
    if scale == 0:
        return 0.0
    worst = max(float((-signs * pre(X[j])).max()) for j in range(X.shape[0]))
    if reduce_max is not None:
        worst = reduce_max(worst)
    return max(worst, 0.0) / scale
