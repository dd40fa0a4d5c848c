"""Where framefleet keeps what it can make again: `$XDG_CACHE_HOME/framefleet` (default ~/.cache/framefleet)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """A folder under framefleet's cache root (not created here)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root.joinpath("framefleet", *parts)
