"""framefleet's version: the one place it is written (pyproject.toml reads it when the package is built)."""

__version__ = "0.1.0"
