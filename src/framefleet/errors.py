"""The errors framefleet raises for problems a user can fix.

Every `FramefleetError` carries a one-line message that names the file, the cause and the fix; the CLI
prints that line and exits with `exit_code`. Anything else escaping framefleet is a bug (exit code 1).
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator


class FramefleetError(Exception):
    """Base class: a problem with the user's input, options or environment."""

    exit_code = 2
    retryable = True
    """Whether another attempt at the same input may succeed; False where the input itself settles it (a file
    that is not there, not a video, or that FFmpeg cannot read): a job fails such an item at its first attempt."""

    @property
    def error_class(self) -> str:
        """What the ledger records as the error's type: the class name (`limit:...` for a broken limit)."""
        return type(self).__name__


class InputNotFoundError(FramefleetError):
    """The named input does not exist."""

    retryable = False


class NotAVideoError(FramefleetError):
    """The input exists but FFmpeg finds no video in it."""

    retryable = False


class CorruptVideoError(FramefleetError):
    """The input is a video, but its data cannot be decoded."""

    retryable = False


class NoVideosError(FramefleetError):
    """A job's inputs name no video to process (an empty folder, only other files, only its own outputs)."""


class OutputError(FramefleetError):
    """The output cannot be written where the user asked."""


class OptionError(FramefleetError):
    """A bad option value: a style spec, a strength, a size, a device."""


class OpError(FramefleetError):
    """An op broke its contract: returned the wrong number of frames, changed timestamps, bad records."""


class StyleImageError(FramefleetError):
    """The style image cannot be read as a picture."""


class DeviceUnavailableError(FramefleetError):
    """The requested device (e.g. CUDA) is not available in this installation."""


class StorageError(FramefleetError):
    """An object store refused an operation: a missing permission, a missing container or bucket.

    The message names the operation and the URI, never a credential."""


class StorageUnavailableError(StorageError):
    """An object store could not be reached or answered with a server error (an infrastructure loss:
    the task is retried after a backoff and never fails its item for it)."""


class DiskFullError(FramefleetError):
    """A disk framefleet writes to (an output folder, a staging folder, the job's ledger) is full or over its
    quota: an infrastructure loss. A task is retried after a backoff; a job whose ledger cannot be written
    stops, and running it again once space is freed resumes it."""


INFRASTRUCTURE_ERRORS = frozenset({StorageUnavailableError.__name__, DiskFullError.__name__})
"""Names of the errors a task reports that are not its input's fault (the ledger counts them as losses)."""


def job_disk_full(where: object) -> DiskFullError:
    """The error that stops a job whose own state (`where`: its ledger, its directory) cannot be written."""
    return DiskFullError(f"{where}: no space left on the disk that holds the job's state; free some (or give "
                         "--job-dir on another disk) and run the same command again to resume the job")


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and the exceptions it was raised from or while handling, each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc`, or one it came from, says a disk or a quota is full (an OS, FFmpeg or SQLite error)."""
    return any(getattr(cause, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
               or getattr(cause, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL for cause in exception_chain(exc))


class LimitError(FramefleetError):
    """An input broke one of the `InputLimits`; `kind` names which (pixels, frames, duration, streams,
    decode-errors, memory)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    @property
    def error_class(self) -> str:
        return f"limit:{self.kind}"

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # pickled to the scheduler by Ray
        return LimitError, (self.kind, str(self))
