"""What a task reports when it is done: its result (`ProbeResult`, `SegmentResult`, `JoinResult`), its
metrics and, for a probe, the segments planned. Plain data: the worker makes them, the store keeps them as
JSON in the task's row (docs/ledger.md), the readers query that JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Union


@dataclass(frozen=True)
class Segment:
    """A frame range [start_pts, end_pts) of a video (None = open end), planned by a probe."""

    start_pts: int | None
    end_pts: int | None


@dataclass
class TaskMetrics:
    """What one finished task measured (`Ledger.complete` stores it). Seconds are wall time of the task and
    the time its stages took (summed over their threads); bytes what it read and wrote."""

    frames: int = 0
    seconds: float = 0.0
    decode_s: float = 0.0
    ops_s: float = 0.0
    encode_s: float = 0.0
    upload_s: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    steps_s: dict[str, float] = field(default_factory=dict)
    """`ops_s` by step of the op chain (`ops.chain.step_names`), to find the slow step of a pipeline."""


@dataclass(frozen=True)
class ProbeResult:
    """What a probe found: the frame count its header claims, duration, size, and the video stream."""

    frames: int | None = None
    duration: float | None = None
    width: int | None = None
    height: int | None = None
    video_index: int | None = None
    time_base: str | None = None
    """The video stream's time base ("1/12800"), in which the segments' `start_pts` and `end_pts` count."""
    adopted: str | None = None
    """The output found already committed with a matching manifest (`framefleet.jobs.manifest`): the item is
    done without running, with the manifest's `frames`."""


@dataclass(frozen=True)
class DamageReport:
    """What a partly damaged input lost in one task (without --strict its frames that decode are kept)."""

    summary: str
    frames_claimed: int | None = None
    decode_errors: int = 0
    frames_dropped: int = 0
    cut_short: bool = False


@dataclass(frozen=True)
class SegmentResult:
    """A processed segment (or a whole video): its frames and where it went."""

    frames: int
    output: str
    """The part (or, for a whole video, the output) written; the records file when no video is written."""
    records: int | None = None
    """Records the ops filed, where they file any."""
    runtime: str | None = None
    """What ran the models ("openvino bf16", ...), where the ops run any."""
    damage: DamageReport | None = None
    adopted: bool | None = None
    """True when the part (or output) was found already committed with a matching manifest, not made."""
    cut_at: int | None = None
    """Where the segment was cut on a preemption notice: the part holds [start_pts, cut_at), a new task the
    rest (docs/reliability.md#cutting-a-segment-at-frame-n)."""


@dataclass(frozen=True)
class JoinResult:
    """A video joined from its segments: the output, its frames and the source streams carried over."""

    output: str
    frames: int | None = None
    records: int | None = None
    streams: list[dict[str, Any]] | None = None
    adopted: bool | None = None
    """True when the output was found already committed with a matching manifest (an earlier attempt
    committed it and was lost before it reported), not joined again."""


TaskOutcome = Union[ProbeResult, SegmentResult, JoinResult]
"""A task's result, by its kind."""


def outcome_json(outcome: TaskOutcome) -> str:
    """How the store keeps a result: its fields that are set, as JSON."""
    return json.dumps({key: value for key, value in dataclasses.asdict(outcome).items() if value is not None})
