"""The errors framefleet raises for problems a user can fix.

Every `FramefleetError` carries a one-line message that names the file, the cause and the fix; the CLI
prints that line and exits with `exit_code`. Anything else escaping framefleet is a bug (exit code 1).
"""

from __future__ import annotations


class FramefleetError(Exception):
    """Base class: a problem with the user's input, options or environment."""

    exit_code = 2

    @property
    def error_class(self) -> str:
        """What the ledger records as the error's type: the class name (`limit:...` for a broken limit)."""
        return type(self).__name__


class InputNotFoundError(FramefleetError):
    """The named input does not exist."""


class NotAVideoError(FramefleetError):
    """The input exists but FFmpeg finds no video in it."""


class CorruptVideoError(FramefleetError):
    """The input is a video, but its data cannot be decoded."""


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


INFRASTRUCTURE_ERRORS = frozenset({StorageUnavailableError.__name__})
"""Names of the errors a task reports that are not its input's fault (the ledger counts them as losses)."""
