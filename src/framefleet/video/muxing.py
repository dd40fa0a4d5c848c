"""Which streams an output container can hold.

FFmpeg's muxers declare the codecs they take in three ways: a list (MP4, AVI), a check that refuses what
they cannot take (WebM), or nothing at all (MPEG-TS, MPEG-PS, and Matroska for some subtitles). PyAV's
`supported_codecs` lists only the first kind, so MPEG-TS would seem unable to hold H.264 or E-AC-3. Here a
codec the muxer does not list is tried: a header with such a stream is written to memory, which is what the
muxer checks when the real output starts. Answers for encoders are cached per muxer and codec; a stream to
copy is tried as it is, each time (a damaged one can describe a codec the muxer takes in a way it refuses).
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from functools import cache

import av
import av.error

from framefleet.errors import OutputError

VIDEO_ENCODERS = ("libx264", "libvpx-vp9", "libsvtav1", "libx265", "mpeg4", "mpeg2video")
"""The video encoders framefleet picks from, in order, when none is asked for: H.264 where the container
holds it, else VP9 (WebM), AV1, HEVC, MPEG-4 part 2, MPEG-2."""
AUDIO_ENCODERS = ("aac", "libopus", "libmp3lame", "mp2", "ac3")
"""Encoders for audio that must be transcoded (the container cannot hold it as it is), in order."""


def output_format(name: str) -> str:
    """The FFmpeg muxer that writes the file `name` by its extension ("a.mp4" -> "mp4", "a.mkv" -> "matroska");
    a one-line OutputError when FFmpeg knows none."""
    suffix = os.path.splitext(name)[1].lower()
    found = _muxer_for(suffix)
    if found is None:
        raise OutputError(f"{name}: cannot create the output: FFmpeg writes no container named "
                          f"*{suffix or ' (no extension)'}; name it .mp4, .mkv, .mov, .webm, .ts or .avi")
    return found


@cache
def _muxer_for(suffix: str) -> str | None:
    with tempfile.TemporaryDirectory(prefix="framefleet-format-") as folder:
        try:
            with av.open(os.path.join(folder, f"probe{suffix}"), mode="w") as container:
                return container.format.name
        except (ValueError, av.error.FFmpegError):
            return None


@cache
def holds_encoder(format_name: str, codec: str) -> bool:
    """Whether the `format_name` muxer can hold what the encoder `codec` writes."""
    encoder = av.Codec(codec, "w")

    def add(container: av.container.OutputContainer) -> None:
        if encoder.type == "audio":
            rates = encoder.audio_rates
            stream = container.add_stream(codec, rate=48000 if not rates or 48000 in rates else rates[0])
            stream.layout = "stereo"
            stream.format = encoder.audio_formats[0] if encoder.audio_formats else "fltp"
        else:
            quiet = {"x265-params": "log-level=error"} if codec == "libx265" else None  # x265 prints a banner
            stream = container.add_stream(codec, rate=25, options=quiet)
            stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"

    return _header_written(format_name, add)


@cache
def encodes(codec: str, pix_fmt: str) -> bool:
    """Whether the encoder `codec` takes frames of `pix_fmt`."""
    return any(f.name == pix_fmt for f in av.Codec(codec, "w").video_formats or ())


def holds_copy(output: av.container.OutputContainer, stream: av.stream.Stream) -> bool:
    """Whether `output` can hold a packet-for-packet copy of the input `stream`, as the stream describes
    itself (not cached: see the module's docstring)."""
    if stream.codec_context is None:
        return False
    return _header_written(output.format.name, lambda c: c.add_stream_from_template(stream))


def audio_encoder_for(format_name: str) -> str | None:
    """The first of `AUDIO_ENCODERS` the muxer holds (None: none)."""
    return _first_held(format_name, AUDIO_ENCODERS, None)


def video_encoder_for(format_name: str, pix_fmt: str | None = None) -> str | None:
    """The first of `VIDEO_ENCODERS` the muxer holds (None: none), of those taking `pix_fmt` when given; for
    AVI, MPEG-4 part 2 first, as the ffmpeg CLI: AVI stores no presentation times, and FFmpeg reads H.264 in
    AVI a frame or two late (it guesses a reordering delay), where MPEG-4 part 2 comes out at its exact times."""
    preferred = ("mpeg4", *VIDEO_ENCODERS) if format_name == "avi" else VIDEO_ENCODERS
    return _first_held(format_name, preferred, pix_fmt)


def _first_held(format_name: str, encoders: tuple[str, ...], pix_fmt: str | None) -> str | None:
    return next((codec for codec in encoders if codec in av.codecs_available
                 and (pix_fmt is None or encodes(codec, pix_fmt)) and holds_encoder(format_name, codec)), None)


def _header_written(format_name: str, add: Callable[[av.container.OutputContainer], None]) -> bool:
    try:
        with av.open(io.BytesIO(), mode="w", format=format_name) as container:
            add(container)
            container.start_encoding()
    except (ValueError, TypeError, av.error.FFmpegError):
        return False
    return True
