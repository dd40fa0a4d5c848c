"""The size of a job before it runs: its videos probed (all, or a sample when there are very many).

Each video becomes a `VideoWork`: its resolution, codec, frame count and the frame counts of the
segments `run` will cut it into (the same keyframe rule, `task.plan_segments`). With more inputs than
`sample`, a seeded random sample is probed and stands for the rest: `Workload.scale` says how many
videos each probed one represents.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from itertools import pairwise

from framefleet.errors import CorruptVideoError, NotAVideoError
from framefleet.files.remote_inputs import InputOpener
from framefleet.files.sources import VideoRef, expand_inputs
from framefleet.jobs.results import Segment
from framefleet.jobs.task import plan_segments
from framefleet.settings import DEFAULT_SAMPLE
from framefleet.video import VideoInfo, probe


@dataclass(frozen=True)
class VideoWork:
    """One probed video: what it costs to process depends on these."""

    uri: str
    width: int
    height: int
    codec: str
    frames: int
    duration: float
    segment_frames: tuple[int, ...]
    """Frames per segment, in order (one entry when the video is not split)."""
    probe_seconds: float = 0.0
    """What probing it took here (a job's first task for each video does the same)."""
    info: VideoInfo | None = field(default=None, compare=False, repr=False)
    """The probe (keyframes included), to cut the video at another segment length
    (`framefleet.plan.segmenting`)."""

    @property
    def resolution(self) -> tuple[int, int]:
        return self.width, self.height


@dataclass(frozen=True)
class Workload:
    """The probed videos of a job and how many videos they stand for."""

    videos: tuple[VideoWork, ...]
    total_videos: int
    segment_seconds: float
    left_out: tuple[str, ...] = ()
    """Videos that could not be probed, each with why (`run` would fail them too): not planned."""

    @property
    def scale(self) -> float:
        """Videos of the job each probed video stands for (1 when every input was probed)."""
        return self.total_videos / len(self.videos) if self.videos else 0.0

    @property
    def sampled(self) -> bool:
        return self.total_videos > len(self.videos)

    @property
    def frames(self) -> float:
        """Frames in the whole job (estimated from the sample when sampled)."""
        return sum(video.frames for video in self.videos) * self.scale

    @property
    def hours(self) -> float:
        """Hours of video in the whole job."""
        return sum(video.duration for video in self.videos) * self.scale / 3600

    def resolutions(self) -> list[tuple[tuple[int, int], float]]:
        """Each distinct resolution with the share of the job's frames at it, most frames first."""
        frames: Counter[tuple[int, int]] = Counter()
        for video in self.videos:
            frames[video.resolution] += video.frames
        total = sum(frames.values()) or 1
        return [(resolution, count / total) for resolution, count in frames.most_common()]

    def cut_at(self, segment_seconds: float) -> Workload:
        """The same videos cut as `run` cuts them at `segment_seconds` (those probed here: `VideoWork.info`)."""
        videos = tuple(video if video.info is None else replace(
            video, segment_frames=_segment_frames(plan_segments(video.info, segment_seconds), video.frames,
                                                  video.duration, video.info.keyframe_pts or (), video.info.time_base))
            for video in self.videos)
        return replace(self, videos=videos, segment_seconds=segment_seconds)

    def describe(self) -> dict:
        return {
            "videos": self.total_videos,
            "probed": len(self.videos),
            "frames": round(self.frames),
            "hours": round(self.hours, 3),
            "segments": round(sum(len(v.segment_frames) for v in self.videos) * self.scale),
            "resolutions": [{"width": w, "height": h, "share": round(share, 4)}
                            for (w, h), share in self.resolutions()],
        }


def measure_workload(inputs: Sequence[str], *, segment_seconds: float, sample: int = DEFAULT_SAMPLE,
                     seed: int = 0) -> Workload:
    """Probe the videos `inputs` name (all of them, or `sample` of them chosen at random with `seed`)."""
    refs = expand_inputs(inputs).refs
    chosen = refs if len(refs) <= sample else sorted(random.Random(seed).sample(refs, sample),
                                                     key=lambda ref: ref.relpath)
    opener = InputOpener()
    videos, left_out = [], []
    for ref in chosen:
        try:
            videos.append(probe_work(ref, opener, segment_seconds))
        except (NotAVideoError, CorruptVideoError) as exc:
            left_out.append(str(exc))
    return Workload(videos=tuple(videos), total_videos=len(refs) - len(left_out) * len(refs) // len(chosen)
                    if chosen else 0, segment_seconds=segment_seconds, left_out=tuple(left_out))


def probe_work(ref: VideoRef, opener: InputOpener, segment_seconds: float) -> VideoWork:
    """Probe one video (keyframes included) and cut it as `run` would."""
    started = time.perf_counter()
    info = probe(opener.open(ref.uri), keyframes=True)
    probe_seconds = time.perf_counter() - started
    frames = info.frame_count_header or 0
    duration = info.duration or (float(frames / info.average_rate) if info.average_rate else 0.0)
    segments = plan_segments(info, segment_seconds)
    return VideoWork(uri=ref.uri, width=info.width, height=info.height, codec=info.video.codec or "?",
                     frames=frames, duration=duration,
                     segment_frames=_segment_frames(segments, frames, duration, info.keyframe_pts or (),
                                                    info.time_base),
                     probe_seconds=probe_seconds, info=info)


def _segment_frames(segments: Sequence[Segment], frames: int, duration: float, keyframe_pts: Sequence[int],
                    time_base: Fraction) -> tuple[int, ...]:
    """Frames in each segment, shared out by the segments' spans of presentation time."""
    if len(segments) == 1 or not keyframe_pts or duration <= 0:
        return (frames,)
    first = min(keyframe_pts)
    end = first + round(Fraction(duration).limit_denominator(1_000_000) / time_base)
    bounds = [first, *(segment.end_pts for segment in segments[:-1]), end]
    spans = [max(0, later - earlier) for earlier, later in pairwise(bounds)]
    whole = sum(spans) or 1
    counts = [round(frames * span / whole) for span in spans[:-1]]
    return (*counts, max(0, frames - sum(counts)))
