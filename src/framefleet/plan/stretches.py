"""Where a profile reads a video: up to three stretches from keyframes early, midway and late in it (a
video's first seconds are often unlike the rest), each long enough for a warm-up, a short and a long run."""

from __future__ import annotations

from dataclasses import dataclass

from framefleet.errors import CorruptVideoError, OptionError
from framefleet.video import VideoReader, probe


class TooShortToSample(OptionError):
    """A video with too few frames for a profiling run."""


@dataclass(frozen=True)
class Stretch:
    """A stretch of the video a profile runs over: from a keyframe (None: the start), ending after a
    warm-up's, a short run's or a long run's worth of frames."""

    start: int | None
    warm: int
    short: int
    long: int


def stretches(source, frames: int) -> list[Stretch]:
    """Up to three stretches of the video (one per 8 of `frames`) that together hold `frames` frames, from
    keyframes early, midway and late in it (a video's first seconds are often not like the rest); one
    from its start when it is too short for them."""
    keys = sorted(probe(source, keyframes=True).keyframe_pts or ())
    places = {1: (0.5,), 2: (0.25, 0.75), 3: (0.15, 0.5, 0.85)}[max(1, min(3, frames // 8, len(keys)))]
    # the first keyframe is the video's start: read from there without a seek (a seek in an MPEG-TS with
    # one keyframe can land past it, and then nothing decodes), as `run`'s first segment does
    starts = sorted({keys[round(q * (len(keys) - 1))] for q in places} - {keys[0]}) if keys else []
    starts = [None, *starts] if keys and len(starts) < len(places) else starts or [None]
    per_chunk = max(4, frames // len(starts))
    chunks = []
    for start in starts:
        try:
            ends = pts_after(source, start, (2, max(3, per_chunk // 3), per_chunk))
        except CorruptVideoError:
            continue  # nothing decodes after this keyframe: the other stretches will do
        if ends is None:
            break  # too near the end: the stretches before it will do
        chunks.append(Stretch(start, *ends))
    if not chunks:
        ends = pts_after(source, None, (2, max(3, frames // 3), max(4, frames)))
        if ends is None:
            raise TooShortToSample(f"{source}: too short to profile (fewer than {max(4, frames) + 1} frames); "
                                   "lower --sample-frames or profile with a longer video")
        chunks.append(Stretch(None, *ends))
    return chunks


def pts_after(source, start: int | None, counts: tuple[int, ...]) -> tuple[int, ...] | None:
    """The timestamps of the frames `counts` places after `start` (each the end of a run of that many
    frames), or None when the video ends first."""
    wanted = dict.fromkeys(counts)
    with VideoReader(source) as reader:
        for index, (pts, _) in enumerate(reader.frames(start)):
            if index in wanted:
                wanted[index] = pts
            if index >= max(counts):
                return tuple(wanted[count] for count in counts)
    return None
