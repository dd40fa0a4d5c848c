"""Opening inputs with PyAV, and turning FFmpeg's failures into framefleet errors."""

from __future__ import annotations

import os
from pathlib import Path

import av
import av.error

from framefleet.errors import CorruptVideoError, InputNotFoundError, NotAVideoError

# Extensions a user names for video files; an unreadable file with one of these is "corrupt",
# anything else FFmpeg cannot read is "not a video".
VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .ts .mts .m2ts .mpg .mpeg .wmv .flv .3gp .ogv .mxf .vob".split()
)
# Demuxers that read still images: a single picture is not a video job.
_IMAGE_FORMAT_SUFFIXES = ("_pipe",)
_IMAGE_FORMATS = frozenset({"image2", "apng"})



def open_input(path: str | os.PathLike[str]) -> av.container.InputContainer:
    """Open a local video for reading, or raise a one-line framefleet error."""
    p = Path(path)
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
        reason = exc.strerror or str(exc)
        if p.suffix.lower() in VIDEO_EXTENSIONS:
            raise CorruptVideoError(f"{p}: corrupt video, FFmpeg cannot read its container ({reason})") from None
        raise NotAVideoError(f"{p}: not a video file, FFmpeg does not recognise its format ({reason})") from None
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
