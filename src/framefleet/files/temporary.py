"""Temporary names for writing a file beside its target before renaming it into place (atomic outputs).

Every writer of framefleet (the video writer, the segment join, downloads, `ingest`) uses `temporary_path`,
so `remove_stale_temporaries` can find what a killed writer left behind, and listings skip them (hidden).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path


def temporary_path(target: Path) -> Path:
    """A hidden sibling of `target` with the same extension, for writing before the atomic rename."""
    return target.with_name(f".{target.stem}.part-{os.getpid()}{target.suffix}")


def remove_stale_temporaries(target: Path) -> None:
    """Delete the `temporary_path`s that killed writers (any process) left beside `target`."""
    for stale in target.parent.glob(f".{glob.escape(target.stem)}.part-*{glob.escape(target.suffix)}"):
        stale.unlink(missing_ok=True)


def write_text_atomically(target: Path, text: str) -> None:
    """Write `text` to `target` through its `temporary_path`, so readers see the old file or the new one."""
    write_bytes_atomically(target, text.encode())


def write_bytes_atomically(target: Path, data: bytes) -> None:
    """Write `data` to `target` through its `temporary_path`, so readers see the old file or the new one."""
    staging = temporary_path(target)
    try:
        staging.write_bytes(data)
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
