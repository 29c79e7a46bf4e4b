"""Solver checkpoints: the on-disk format, its integrity check and the validation of a state before a
solve resumes from it.

A checkpoint is one ``torch.save`` archive ``{"format", "version", "fingerprint", "sha256", "state"}``,
read back with ``torch.load(weights_only=True)`` (no code from the file runs):

- ``fingerprint``: SHA-256 of everything that determines the iterates (data, patterns, targets, beta, loss,
  formulation, method, dtype), so that a stale file of another problem is refused;
- ``sha256``: SHA-256 of the state itself (every tensor's dtype, shape and bytes, every scalar), so that a
  flipped bit is refused instead of resumed to another answer;
- the state is then checked against the problem (:class:`StateSpec`): tensor shapes, finite values, index
  ranges, iteration counters and step sizes, so that a crafted file cannot crash or hang the solver.

Writes are atomic (temporary file in the same folder, then ``os.replace``). A periodic write that fails
(full disk, a directory given as the path, no permission) warns once with :class:`SolverWarning` and the
solve carries on; no temporary file is left behind. Version-1 files (before the checksum) are still read,
validated, without the checksum.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
import tempfile
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from ...exceptions import CheckpointError, SolverWarning

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "StateSpec",
    "atomic_save",
    "load_checkpoint",
    "problem_fingerprint",
    "save_checkpoint",
    "state_digest",
]

CHECKPOINT_FORMAT = "convexbn-checkpoint"
CHECKPOINT_VERSION = 2  # 2: the state's SHA-256; 1 (read without it): format, version, fingerprint, state


def atomic_save(obj, path) -> None:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace``: never a torn file, and
    no temporary file is left when the write fails."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def problem_fingerprint(problem, method: str, dtype) -> str:
    """SHA-256 of everything that determines a solve's iterates: data, patterns, targets, beta, loss,
    formulation, method and dtype (not the device: a CPU checkpoint may resume on a GPU)."""
    h = hashlib.sha256()
    h.update(f"{method}|{problem.formulation}|{problem.loss.name}|{problem.beta!r}|{dtype}|".encode())
    for array in (problem.Uprime, problem.mask, problem.Y):
        h.update(f"{array.dtype.str}{array.shape}".encode())
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def _feed(h, value) -> None:
    """Hash ``value`` canonically (type tags, so that 1, 1.0, "1" and [1] differ)."""
    if isinstance(value, torch.Tensor):
        t = value.detach().to("cpu").contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(value, np.ndarray):
        h.update(f"A{value.dtype.str}{value.shape}|".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, dict):
        h.update(f"D{len(value)}|".encode())
        for key in sorted(value, key=str):
            _feed(h, str(key))
            _feed(h, value[key])
    elif isinstance(value, (list, tuple)):
        h.update(f"L{len(value)}|".encode())
        for item in value:
            _feed(h, item)
    elif value is None or isinstance(value, (bool, numbers.Number, str)):
        h.update(f"{type(value).__name__}:{value!r}|".encode())
    else:
        raise TypeError(f"cannot checksum a {type(value).__name__} in a solver state")


def state_digest(state: dict) -> str:
    """SHA-256 of a solver state: every tensor's dtype, shape and bytes and every scalar."""
    h = hashlib.sha256()
    _feed(h, state)
    return h.hexdigest()


_warned_paths: set = set()


def save_checkpoint(state: dict, path, fingerprint: str) -> bool:
    """Write a solver state with its format tag, problem fingerprint and checksum (atomically).

    Returns True when written. A failed write (``OSError``, or torch's ``RuntimeError`` on a full disk)
    warns with :class:`SolverWarning` (once per path) and returns False: a checkpoint is insurance, and
    losing it must not abort the solve it protects.
    """
    obj = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "fingerprint": fingerprint,
        "sha256": state_digest(state),
        "state": state,
    }
    try:
        atomic_save(obj, path)
    except (OSError, RuntimeError) as exc:
        key = os.fspath(path)
        if key not in _warned_paths:
            _warned_paths.add(key)
            warnings.warn(
                f"could not write the checkpoint {key!r} ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                "the solve goes on without it",
                SolverWarning,
                stacklevel=3,
            )
        return False
    _warned_paths.discard(os.fspath(path))
    return True


@dataclass
class StateSpec:
    """What a resumable state must hold, checked before a solve resumes from it.

    Attributes
    ----------
    tensors : dict
        Name -> (shape, kind), kind ``"float"`` (finite values of a floating dtype) or ``"index"`` (an
        integer tensor); a shape entry of None matches any size.
    index_ranges : dict
        Name -> (low, high): every entry of the integer tensor in ``[low, high)``.
    counters : tuple of str
        Non-negative integers (iteration counts).
    positive : tuple of str
        Finite floats > 0 (step sizes, Lipschitz estimates, penalty parameters).
    nonnegative : tuple of str
        Finite floats >= 0.
    optional : tuple of str
        Names that may be None or absent (e.g. fields added in later versions).
    """

    tensors: dict = field(default_factory=dict)
    index_ranges: dict = field(default_factory=dict)
    counters: tuple = ()
    positive: tuple = ()
    nonnegative: tuple = ()
    optional: tuple = ()

    def check(self, state, where: str) -> None:
        if not isinstance(state, dict):
            raise CheckpointError(f"{where}: the state is a {type(state).__name__}, not a dict")

        def bad(name, what):
            raise CheckpointError(
                f"{where}: state field {name!r} {what}; delete the file or pass resume=False"
            )

        for name, (shape, kind) in self.tensors.items():
            value = state.get(name)
            if value is None:
                if name in self.optional:
                    continue
                bad(name, "is missing")
            if not isinstance(value, torch.Tensor):
                bad(name, f"is a {type(value).__name__}, not a tensor")
            if len(shape) != value.dim() or any(
                s is not None and s != v for s, v in zip(shape, value.shape, strict=True)
            ):
                bad(name, f"has shape {tuple(value.shape)}, this problem needs {shape}")
            if kind == "float":
                if not value.is_floating_point():
                    bad(name, f"has dtype {value.dtype}, not a floating dtype")
                if not bool(torch.isfinite(value).all()):
                    bad(name, "holds non-finite values")
            elif value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
                bad(name, f"has dtype {value.dtype}, not an integer dtype")
        for name, (low, high) in self.index_ranges.items():
            value = state.get(name)
            if isinstance(value, torch.Tensor) and value.numel():
                lo, hi = int(value.min()), int(value.max())
                if lo < low or hi >= high:
                    bad(name, f"holds indices in [{lo}, {hi}], outside [{low}, {high})")
        for name in self.counters:
            value = state.get(name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
                bad(name, f"is {value!r}, not a non-negative integer")
        for names, test, what in ((self.positive, lambda v: v > 0, "> 0"),
                                  (self.nonnegative, lambda v: v >= 0, ">= 0")):  # fmt: skip
            for name in names:
                value = state.get(name)
                if value is None and name in self.optional:
                    continue
                if (
                    isinstance(value, bool)
                    or not isinstance(value, numbers.Real)
                    or not (math.isfinite(value) and test(value))
                ):
                    bad(name, f"is {value!r}, not a finite number {what}")


def load_checkpoint(path, fingerprint: str, device, spec: StateSpec | None = None) -> dict:
    """Read a state written by :func:`save_checkpoint` for the same problem.

    Raises
    ------
    CheckpointError
        For a path that is not a regular file, a truncated or corrupt file, a file that is not a convexbn
        checkpoint, another format version, a checkpoint of another problem (a stale file is never silently
        resumed), a checksum mismatch, or a state that fails ``spec``.
    """
    where = f"checkpoint {os.fspath(path)!r}"
    if not os.path.isfile(path):
        raise CheckpointError(f"{where} is not a regular file")
    try:
        obj = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # zip/pickle errors of every kind on a torn or foreign file
        raise CheckpointError(f"{where} cannot be read (truncated or corrupt?): {exc}") from exc
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{os.fspath(path)!r} is not a convexbn solver checkpoint")
    version = obj.get("version")
    if version not in (1, CHECKPOINT_VERSION):
        raise CheckpointError(
            f"{where} has format version {version!r}, this convexbn reads versions 1 and {CHECKPOINT_VERSION}"
        )
    if obj.get("fingerprint") != fingerprint:
        raise CheckpointError(
            f"{where} was written for another problem (data, patterns, targets, "
            "beta, loss, method or dtype differ); delete it or pass resume=False"
        )
    state = obj.get("state")
    if version >= 2:
        try:
            digest = state_digest(state)
        except TypeError as exc:
            raise CheckpointError(f"{where} is corrupt: {exc}") from None
        if digest != obj.get("sha256"):
            raise CheckpointError(f"{where} is corrupt: checksum mismatch; delete it or pass resume=False")
    if spec is not None:
        spec.check(state, where)
    return state
