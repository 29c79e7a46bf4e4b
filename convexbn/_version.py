"""The package version (one place; ``convexbn.__version__`` re-exports it)."""

__version__ = "0.2.0.dev0"
