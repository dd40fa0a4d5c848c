"""Opening inputs with PyAV, and turning FFmpeg's failures into framefleet errors."""

from __future__ import annotations

import io
import logging
import os
import posixpath
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Union

import av
import av.error
from av.codec.hwaccel import HWAccel

from framefleet.errors import CorruptVideoError, FramefleetError, InputNotFoundError, NotAVideoError

_log = logging.getLogger(__name__)

# Extensions a user names for video files; an unreadable file with one of these is "corrupt",
# anything else FFmpeg cannot read is "not a video".
VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .ts .mts .m2ts .mpg .mpeg .wmv .flv .3gp .ogv .mxf .vob".split()
)
# Demuxers that read still images: a single picture is not a video job.
_IMAGE_FORMAT_SUFFIXES = ("_pipe",)
_IMAGE_FORMATS = frozenset({"image2", "apng"})
# PyAV's read size for file objects: large enough that each read of a remote file is one cache lookup.
_REMOTE_BUFFER_BYTES = 1 << 20


@dataclass(frozen=True, eq=False)
class RemoteVideo:
    """A video read through a file object (an object store's range reads) instead of a local path.

    FFmpeg treats a failed read as the end of the file, so the file objects this opens record the
    first error; `check()` raises it. The video layer calls `check_reads` wherever it reaches the end of
    a source, so a connection lost mid-video is an error, never a silently truncated output.
    """

    name: str
    """Its URI, shown in messages."""
    size: int
    opener: Callable[[], BinaryIO]
    """Opens the video for reading; its `read` raises framefleet errors (storage errors) on failure."""
    _errors: list[FramefleetError] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __str__(self) -> str:
        return self.name

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name.split("?", 1)[0])[1]

    def open(self) -> BinaryIO:
        """A file object over the video that records its read errors."""
        return _RecordingReader(self.opener(), self)

    def check(self) -> None:
        """Raise the first read error seen since the last check."""
        with self._lock:
            errors, self._errors[:] = list(self._errors), []
        if errors:
            raise errors[0]

    def _record(self, error: FramefleetError) -> None:
        with self._lock:
            self._errors.append(error)


class _RecordingReader(io.RawIOBase):
    """Passes reads and seeks to `inner`; a framefleet error is recorded on the video, then re-raised."""

    def __init__(self, inner: BinaryIO, video: RemoteVideo) -> None:
        self._inner, self._video = inner, video
        self.name = video.name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            return self._inner.read(size)
        except FramefleetError as exc:
            self._video._record(exc)
            raise

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._inner.seek(offset, whence)

    def tell(self) -> int:
        return self._inner.tell()

    def close(self) -> None:
        self._inner.close()
        super().close()


VideoSource = Union[str, "os.PathLike[str]", RemoteVideo]
"""A local path or a `RemoteVideo`."""


def source_size(source: VideoSource) -> int:
    """The size in bytes of a video source."""
    return source.size if isinstance(source, RemoteVideo) else Path(source).stat().st_size


def check_reads(source: VideoSource) -> None:
    """Raise the read error a remote source met (FFmpeg took it for the end of the file); no-op locally."""
    if isinstance(source, RemoteVideo):
        source.check()


def open_input(source: VideoSource, *, hwaccel: str | None = None) -> av.container.InputContainer:
    """Open a video for reading, or raise a one-line framefleet error. `hwaccel` ("cuda") decodes on that
    device where FFmpeg can (frames still arrive in system memory); where it cannot, the video is decoded
    on the CPU and the reason logged."""
    if isinstance(source, RemoteVideo):
        return _open_remote(source)
    p = Path(source)
    if hwaccel is not None and p.is_file():
        try:
            return _checked(av.open(str(p), mode="r", metadata_errors="replace",
                                    hwaccel=HWAccel(hwaccel, allow_software_fallback=True)), p)
        except av.error.FFmpegError as exc:
            _log.warning("%s: cannot decode on %s (%s); decoding on the CPU", p, hwaccel, exc.strerror or exc)
    if not p.exists():
        raise InputNotFoundError(f"{p}: no such file")
    if p.is_dir():
        raise NotAVideoError(f"{p}: is a directory, not a video file")
    if p.stat().st_size == 0:
        raise NotAVideoError(f"{p}: the file is empty")
    try:
        container = av.open(str(p), mode="r", metadata_errors="replace")
    except PermissionError:
        raise InputNotFoundError(f"{p}: permission denied (check the file's read permission)") from None
    except av.error.FFmpegError as exc:
        raise _unreadable(p, p.suffix, exc) from None
    return _checked(container, p)


def _open_remote(video: RemoteVideo) -> av.container.InputContainer:
    if video.size == 0:
        raise NotAVideoError(f"{video}: the file is empty")
    try:
        container = av.open(video.open(), mode="r", metadata_errors="replace", buffer_size=_REMOTE_BUFFER_BYTES)
    except av.error.FFmpegError as exc:
        video.check()  # a read that failed is the cause, not the data
        raise _unreadable(video, video.suffix, exc) from None
    video.check()
    return _checked(container, video)


def _unreadable(p: object, suffix: str, exc: av.error.FFmpegError) -> FramefleetError:
    reason = exc.strerror or str(exc)
    if suffix.lower() in VIDEO_EXTENSIONS:
        return CorruptVideoError(f"{p}: corrupt video, FFmpeg cannot read its container ({reason})")
    return NotAVideoError(f"{p}: not a video file, FFmpeg does not recognise its format ({reason})")


def _checked(container: av.container.InputContainer, p: object) -> av.container.InputContainer:
    fmt = container.format.name
    if fmt in _IMAGE_FORMATS or fmt.endswith(_IMAGE_FORMAT_SUFFIXES):
        container.close()
        raise NotAVideoError(f"{p}: is a still image ({fmt}), not a video")
    if not container.streams.video:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "no streams"
        container.close()
        raise NotAVideoError(f"{p}: has no video stream ({kinds})")
    return container


def select_video_stream(container: av.container.InputContainer, index: int | None) -> av.video.stream.VideoStream:
    """The video stream to process: `index` when given, else the one FFmpeg ranks best."""
    if index is None:
        return container.streams.best("video")
    for stream in container.streams.video:
        if stream.index == index:
            return stream
    available = ", ".join(str(s.index) for s in container.streams.video)
    raise NotAVideoError(f"{container.name}: stream {index} is not a video stream (video streams: {available})")
