"""`hold_lock_file`: an exclusive, non-blocking lock on a file, held for a block (a run, a service's life);
`is_held`: whether some process holds one now."""

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
            os.ftruncate(handle.fileno(), 0)  # no process id: nobody holds it
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_held(path: Path) -> bool:
    """Whether a process holds the lock on `path` now. Asked of the lock only where the file names a live
    process (a process id may be reused), so a reader never makes a starting holder fail as busy."""
    try:
        pid = int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return False
    if pid <= 0 or not _alive(pid):
        return False
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
