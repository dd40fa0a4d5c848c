"""ffprobe-level facts about a media file, read with PyAV alone, as an oracle independent of framefleet.

Tests import it as ``import media_checks`` (tests/ is on ``sys.path`` because tests/conftest.py lives
there). Nothing here uses framefleet, so a bug in framefleet's reader cannot hide itself in the
expected values. Every function opens the file, reads what it needs and closes it again.

- `decoded_pts` / `decoded_times`: presentation timestamps of the frames that really decode
  (like ``ffprobe -show_frames``), in stream ticks or in seconds.
- `frame_count`: how many frames decode (like ``ffprobe -count_frames``).
- `salvaged_pts`: the frames of a damaged file that decode, as the ffmpeg CLI gets them (packets the
  decoder rejects skipped, the file read until its container breaks off).
- `packet_payloads` / `packet_digests`: the bytes of every packet of a stream, in file order, to check
  a stream-copy is byte-identical.
- `streams_of_kind`: the indexes of the streams of one kind, in file order.
- `audio_seconds`: how long an audio stream lasts, from its decoded samples.
- `rgb_frames`: decoded frames as plain RGB arrays (no display matrix applied).
"""

from __future__ import annotations

import hashlib
import os
from fractions import Fraction

import av
import av.error
import numpy as np

Pathish = str | os.PathLike[str]


def _video(container: av.container.InputContainer, index: int | None) -> av.video.stream.VideoStream:
    if index is None:
        return container.streams.best("video")
    return container.streams[index]


def decoded_pts(path: Pathish, stream: int | None = None) -> list[int]:
    """PTS (in the stream's time base) of every frame of a video stream that decodes, in output order (a
    frame without one, as MPEG-PS leaves some, takes its packet's decode time, and AVI's frames are timed by
    decode time: FFmpeg's best-effort timestamps).

    `stream` is a stream index; None picks the stream FFmpeg ranks best (as framefleet does).
    """
    with av.open(str(path)) as container:
        vs = _video(container, stream)
        if container.format.name == "avi":  # AVI stores decode times only; its demuxer's pts are guesses
            return [frame.dts for frame in container.decode(vs)]
        return [frame.pts if frame.pts is not None else frame.dts for frame in container.decode(vs)]


def salvaged_pts(path: Pathish, stream: int | None = None) -> list[int]:
    """PTS of the frames the ffmpeg CLI keeps from a possibly damaged file: each packet decoded on its own,
    the ones the decoder rejects skipped, reading stopped (and the decoder flushed) where the container
    breaks off, and a frame timed before one already kept dropped. Frames without a presentation time take
    their packet's decode time (as FFmpeg's best-effort timestamp does). The decoder runs frame-threaded,
    as the ffmpeg CLI's does: which frames of a damaged stream survive depends on that."""
    pts: list[int] = []
    with av.open(str(path)) as container:
        vs = _video(container, stream)
        vs.thread_type = "AUTO"
        packets = container.demux(vs)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError:
                packet = None
            try:
                frames = vs.codec_context.decode(packet)
            except av.error.FFmpegError:
                frames = []
            for frame in frames:
                time = frame.pts if frame.pts is not None else frame.dts
                if time is not None and (not pts or time > pts[-1]):
                    pts.append(time)
            if packet is None:
                break
    return pts


def video_time_base(path: Pathish, stream: int | None = None) -> Fraction:
    """Time base of a video stream (None: the best one)."""
    with av.open(str(path)) as container:
        return Fraction(_video(container, stream).time_base)


def decoded_times(path: Pathish, stream: int | None = None, *, relative: bool = True) -> list[Fraction]:
    """Presentation times in exact seconds of every decoded frame; `relative` subtracts the first."""
    tb = video_time_base(path, stream)
    pts = decoded_pts(path, stream)
    base = pts[0] if relative and pts else 0
    return [(p - base) * tb for p in pts]


def frame_count(path: Pathish, stream: int | None = None) -> int:
    """Number of frames of a video stream that decode."""
    return len(decoded_pts(path, stream))


def rgb_frames(path: Pathish, stream: int | None = None, limit: int | None = None) -> list[np.ndarray]:
    """Decoded frames as H x W x 3 uint8 RGB, as stored (no display matrix applied), at most `limit`."""
    out: list[np.ndarray] = []
    with av.open(str(path)) as container:
        for frame in container.decode(_video(container, stream)):
            out.append(frame.to_ndarray(format="rgb24"))
            if limit is not None and len(out) >= limit:
                break
    return out


def streams_of_kind(path: Pathish, kind: str) -> list[int]:
    """Indexes of the streams of `kind` ("video", "audio", "subtitle", "data"), in file order."""
    with av.open(str(path)) as container:
        return [s.index for s in container.streams if s.type == kind]


def stream_codecs(path: Pathish) -> list[tuple[str, str]]:
    """(kind, codec name) of every stream, in file order."""
    with av.open(str(path)) as container:
        return [(s.type, s.codec_context.name if s.codec_context else "unknown") for s in container.streams]


def packet_payloads(path: Pathish, stream: int) -> list[bytes]:
    """The bytes of every non-empty packet of stream `stream`, in file order."""
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(container.streams[stream]) if p.size]


def packet_digests(path: Pathish) -> dict[int, list[str]]:
    """For each stream index, the sha256 of each of its non-empty packets, in file order."""
    digests: dict[int, list[str]] = {}
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.size:
                digests.setdefault(packet.stream.index, []).append(hashlib.sha256(bytes(packet)).hexdigest())
    return digests


def audio_seconds(path: Pathish, stream: int) -> float:
    """Duration of an audio stream in seconds: decoded samples over the sample rate."""
    with av.open(str(path)) as container:
        audio = container.streams[stream]
        samples = 0
        rate = 0
        for frame in container.decode(audio):
            samples += frame.samples
            rate = frame.sample_rate
        return samples / rate if rate else 0.0


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two same-shaped uint8 pictures, in 0..255 levels."""
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}"
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())
