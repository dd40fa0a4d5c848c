"""Joining encoded segments of one video into the final file, without re-encoding.

Segments are written (by `VideoWriter`, video only) with the source's own timestamps, so joining is a
packet copy. Decode timestamps are recomputed for the whole stream, because each segment's encoder
started its B-frame delay afresh (a segment's first decode time would fall before the previous segment's
last). The source's audio, subtitle and data streams are carried in by `StreamCarrier`, as for a whole
video, and the result appears atomically.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import av
import av.error

from framefleet.errors import CorruptVideoError, OutputError
from framefleet.files.temporary import temporary_path
from framefleet.video.container import VideoSource
from framefleet.video.remux import CarriedStream, StreamCarrier

_MAX_REORDER = 16


def join_segments(
    parts: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    carry_from: VideoSource | None,
    carry_skip_index: int,
    offset: Fraction,
    time_base: Fraction | None = None,
) -> tuple[int, list[CarriedStream]]:
    """Concatenate the video packets of `parts` (in order) into `output`; return (frames, carried).

    `time_base` (the source video's) is given to the output stream, so its timestamps read back in the
    same units as the source's."""
    output = Path(output)
    presentation = [packet.pts for packet in _packets(parts)]  # first pass: timestamps only
    if not presentation:
        raise CorruptVideoError(f"{output}: the segments to join hold no video packets")
    decode_times = _decode_times(presentation)
    tmp = temporary_path(output)
    try:
        container = av.open(str(tmp), mode="w")
    except (av.error.FFmpegError, OSError) as exc:
        raise OutputError(f"{output}: cannot create the output ({exc})") from None
    carrier = None
    try:
        with av.open(str(parts[0])) as first:
            stream = container.add_stream_from_template(first.streams.video[0])
        if time_base is not None:
            stream.time_base = time_base
        carrier = StreamCarrier(carry_from, container, video_index=carry_skip_index, offset=offset) if carry_from else None
        for packet, dts in zip(_packets(parts), decode_times):  # second pass: copy, streaming
            packet.dts = dts
            if carrier is not None:
                carrier.advance(dts * packet.time_base)
            packet.stream = stream
            container.mux(packet)
        if carrier is not None:
            carrier.finish()
        container.close()
    except BaseException:
        if carrier is not None:
            carrier.close()
        container.close()
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, output)
    return len(presentation), carrier.carried if carrier else []


def _packets(parts: Sequence[str | os.PathLike[str]]) -> Iterator[av.Packet]:
    """Every video packet of every part, in order, read lazily."""
    time_base = None
    for part in parts:
        with av.open(str(part)) as container:
            stream = container.streams.video[0]
            if time_base is None:
                time_base = stream.time_base
            elif stream.time_base != time_base:
                raise CorruptVideoError(f"{part}: its time base {stream.time_base} differs from {time_base}")
            for packet in container.demux(stream):
                if packet.size == 0 or packet.pts is None:
                    continue
                yield packet


def _decode_times(pts: list[int]) -> list[int]:
    """Strictly increasing decode times no later than each packet's presentation time.

    With frames in decode order and a reorder depth of at most `d`, the i-th decode time is the
    (i - d)-th smallest presentation time (extrapolated before the start); the smallest workable `d` is
    used.
    """
    ordered = sorted(pts)
    step = max(1, min((b - a for a, b in zip(ordered, ordered[1:])), default=1))
    for depth in range(_MAX_REORDER + 1):
        times = [ordered[i - depth] if i >= depth else ordered[0] - (depth - i) * step for i in range(len(pts))]
        if all(t <= p for t, p in zip(times, pts)):
            return times
    raise CorruptVideoError("the segments reorder frames more deeply than H.264 allows")
