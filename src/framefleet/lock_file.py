"""`hold_lock_file`: an exclusive, non-blocking lock on a file, held for a block (a run, a service's life)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from framefleet.errors import FramefleetError, is_disk_full


@contextmanager
def hold_lock_file(path: Path, *, busy: FramefleetError, disk_full: FramefleetError) -> Iterator[None]:
    """Hold `path` (made if missing) for the block; the file names the holder's process id. Raises `busy`
    at once while another process (or another open of it) holds it, `disk_full` when the id cannot be
    written. The kernel releases the lock when the process ends, however it ends."""
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy from None
        try:  # unbuffered, so that closing the file has nothing left to write
            os.ftruncate(handle.fileno(), 0)
            os.pwrite(handle.fileno(), f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            raise disk_full from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
