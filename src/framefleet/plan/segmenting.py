"""Segments sized to a preemption notice: the longest segment length at which the 90th percentile of the
job's segment times, at the predicted frames per second of one worker, is at most the notice / 1.5.

A preempted node has `notice` seconds between the cloud's warning and the end; a segment that finishes in
that time is not redone. `run --preemption-notice` and `plan --preemption-notice` (or a node type's
`preemption_notice` in the hardware catalogue) choose the length this way, over the job's own videos cut
as `run` cuts them (at keyframes, `jobs.task.plan_segments`), so a long GOP or a long last segment counts.

Where the time of a frame comes from, in order:
- a plan: the chosen option's fleet rate over its workers (`plan`);
- this machine's profile of the pipeline (`framefleet plan` or `profile` made it; `run` without a plan);
- else an estimate (`ESTIMATE_*`): a worker of a pipeline that runs a model takes 0.5 s for a 1280x720
  frame (scaled by pixels; style transfer on one CPU core is 2-4 fps at 720p, so this errs towards short
  segments), one without a model 0.02 s; a task costs `ESTIMATE_TASK_SECONDS` on top of its frames.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import numpy as np

from framefleet.jobs.task import plan_segments
from framefleet.pipeline import Pipeline
from framefleet.plan.profile import Knobs, ProfileStore, run_cost
from framefleet.plan.workload import VideoWork, measure_workload

NOTICE_MARGIN = 1.5
"""The p90 segment time is at most the notice divided by this."""
PERCENTILE = 0.9
SHORTEST = 1.0
"""Seconds: no segment length below this is chosen (a segment's fixed cost would dominate)."""
STEP = 0.5
"""Seconds between the segment lengths tried."""
ESTIMATE_MODEL_SECONDS_720P = 0.5
ESTIMATE_PLAIN_SECONDS = 0.02
ESTIMATE_TASK_SECONDS = 1.0
RUN_SAMPLE = 5
"""Videos `run` probes to size segments (a plan uses the videos it probed)."""
Basis = Literal["plan", "profile", "estimate"]


@dataclass(frozen=True)
class SegmentChoice:
    """The segment length chosen for a notice, and what it was chosen from."""

    segment_seconds: float
    notice_seconds: float
    p90_task_seconds: float
    """The 90th percentile of the predicted segment times at that length."""
    seconds_per_frame: float
    """Predicted seconds of one worker per frame."""
    task_seconds: float
    """Predicted fixed cost of a task."""
    basis: Basis
    fits: bool
    """False when even the shortest length tried leaves the p90 over the notice / 1.5."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        text = (f"{self.segment_seconds:g} s segments (p90 {self.p90_task_seconds:.1f} s of work for a "
                f"{self.notice_seconds:g} s notice; from the {self.basis})")
        return text if self.fits else text + f"; even {SHORTEST:g} s segments do not fit the notice"


def segment_times(videos: Sequence[VideoWork], segment_seconds: float, seconds_per_frame: float,
                  task_seconds: float) -> list[float]:
    """Predicted seconds of every segment of `videos` cut at `segment_seconds`, as `run` cuts them."""
    times: list[float] = []
    for video in videos:
        rate = video.frames / video.duration if video.duration > 0 else 0.0
        for span in segment_spans(video, segment_seconds):
            times.append(task_seconds + span * rate * seconds_per_frame)
    return times


def segment_spans(video: VideoWork, segment_seconds: float) -> list[float]:
    """Seconds of video in each segment `run` cuts `video` into at `segment_seconds`."""
    info = video.info
    if info is None or not info.keyframe_pts:
        return [video.duration]
    segments = plan_segments(info, segment_seconds)
    first = min(info.keyframe_pts)
    end = first + round(Fraction(video.duration).limit_denominator(1_000_000) / info.time_base)
    bounds = [first, *(segment.end_pts for segment in segments[:-1]), end]
    return [float(max(0, later - earlier) * info.time_base) for earlier, later in zip(bounds, bounds[1:])]


def choose_segment_seconds(videos: Sequence[VideoWork], notice: float, seconds_per_frame: float,
                           task_seconds: float, longest: float, basis: Basis) -> SegmentChoice:
    """The longest length up to `longest` (in `STEP`s, down to `SHORTEST`) whose p90 segment time is at
    most `notice` / `NOTICE_MARGIN`; the shortest, marked as not fitting, when none is."""
    budget = notice / NOTICE_MARGIN
    length = longest
    while True:
        p90 = _percentile(segment_times(videos, length, seconds_per_frame, task_seconds))
        if p90 <= budget or length <= SHORTEST:
            return SegmentChoice(length, notice, p90, seconds_per_frame, task_seconds, basis, p90 <= budget)
        length = max(SHORTEST, math.floor(length / STEP - 1) * STEP)  # the next step down


def estimated_seconds_per_frame(pipeline: Pipeline, videos: Sequence[VideoWork]) -> float:
    """The documented estimate (module docstring), for the largest frames of `videos`."""
    if not any(op.model_files() for op in pipeline.ops):
        return ESTIMATE_PLAIN_SECONDS
    pixels = max((video.width * video.height for video in videos), default=1280 * 720)
    return ESTIMATE_MODEL_SECONDS_720P * pixels / (1280 * 720)


def size_for_notice(uris: Sequence[str], pipeline: Pipeline, notice: float, workers: int,
                    store: ProfileStore | None = None, sample: int = RUN_SAMPLE) -> SegmentChoice:
    """The segment length for `run` without a plan: over a sample of the job's videos (probed here), from
    this machine's profile of the pipeline when it has one (`workers` sharing the machine), else from the
    estimate."""
    chosen = list(uris) if len(uris) <= sample else random.Random(0).sample(list(uris), sample)
    workload = measure_workload(chosen, segment_seconds=pipeline.segment_seconds, sample=sample)
    store = store or ProfileStore()
    op = pipeline.ops[0]
    knobs = Knobs(max_size=getattr(op, "max_size", None), batch_size=op.batch_size, threads=1)
    costs = [run_cost(store, store.machine.name, pipeline, video, knobs) for video in workload.videos]
    if costs and all(cost is not None for cost in costs):
        per_frame = max(max(cost.wall_per_frame, workers / cost.node_fps) for cost in costs if cost is not None)
        task = max(cost.task_seconds for cost in costs if cost is not None)
        return choose_segment_seconds(workload.videos, notice, per_frame, task, pipeline.segment_seconds, "profile")
    return choose_segment_seconds(workload.videos, notice, estimated_seconds_per_frame(pipeline, workload.videos),
                                  ESTIMATE_TASK_SECONDS, pipeline.segment_seconds, "estimate")


def _percentile(values: list[float]) -> float:
    """The nearest-rank `PERCENTILE` of `values` (one of them, never interpolated); 0 for none."""
    return float(np.percentile(values, PERCENTILE * 100, method="inverted_cdf")) if values else 0.0
