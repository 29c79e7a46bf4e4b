"""The package's errors and warnings, in a module that imports nothing from convexbn (so every layer can
raise them without an import cycle)."""

from __future__ import annotations

__all__ = ["SolverError", "SolverWarning", "CheckpointError"]


class SolverError(RuntimeError):
    """A backend failed or returned no usable solution."""


class SolverWarning(UserWarning):
    """A backend returned a solution of reduced accuracy, or a requested solver was replaced."""


class CheckpointError(ValueError):
    """A checkpoint cannot be resumed: unreadable, corrupt (checksum), not a convexbn checkpoint, of
    another problem, or holding a state that does not fit the problem."""
