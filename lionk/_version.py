"""The version of lionk (one place; ``lionk.__version__`` and checkpoint metadata read it)."""

__version__ = "0.1.0"
