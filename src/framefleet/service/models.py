"""The HTTP API's request and response bodies (they make the published OpenAPI spec)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from framefleet.jobs.reads import ItemMetrics

JobState = Literal["queued", "running", "finished", "cancelled", "error"]
JobKind = Literal["watch", "submitted"]
Scalar = str | int | float | bool
OptionValue = Scalar | list[Scalar]
PipelineValue = OptionValue | list[dict[str, OptionValue]]
"""A pipeline option: a scalar, a list (e.g. an ONNX model's value_range), or `steps` (a list of ops)."""


class JobSubmission(BaseModel):
    """A batch job: videos under `inputs` processed by `pipeline` into `output` (mirroring paths)."""

    model_config = ConfigDict(extra="forbid")
    inputs: list[str] = Field(min_length=1, max_length=1000,
                              description="Files, folders or store prefixes inside the service's allowed prefixes.")
    output: str = Field(min_length=1, max_length=4096, description="Output root inside an allowed prefix.")
    pipeline: dict[str, PipelineValue] = Field(default_factory=dict,
                                               description="Pipeline options, as in a --pipeline file.")
    name: str | None = Field(default=None, max_length=200)

    @field_validator("inputs", "output", "pipeline", "name")
    @classmethod
    def _storable(cls, value):
        """Refuse lone surrogates (a JSON `\\ud800` escape) and non-finite numbers (`Infinity`, `NaN`, which
        Python's JSON parser accepts): a job holding one could not be listed, or not run as asked."""
        for item in _leaves(value):
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError("numbers must be finite")
            if isinstance(item, str):
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    raise ValueError("strings must be valid Unicode (no lone surrogates)") from None
        return value


def _leaves(value: object) -> list[object]:
    """The keys and scalar values of nested dicts and lists."""
    if isinstance(value, dict):
        return [*value, *(leaf for item in value.values() for leaf in _leaves(item))]
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


class Job(BaseModel):
    """A job as listed."""

    id: str
    kind: JobKind
    name: str
    state: JobState
    created: float
    updated: float
    error: str | None
    inputs: list[str] = Field(description="What the job reads: its inputs, or a watch rule's source.")
    output: str
    pipeline: dict[str, PipelineValue]
    items: dict[str, int] = Field(description="Items (videos) per state; none before the job first runs.")


class WatchInfo(BaseModel):
    polls: int
    last_error: str | None


class JobDetail(Job):
    """A job with its progress."""

    tasks: dict[str, int] = Field(description="Tasks (probes, segments, joins) per state.")
    frames_done: int
    frames_expected: int
    fps: float = Field(description="Frames per second over the last two minutes (over the time since the job "
                                   "started when that is shorter), as `framefleet status` shows it.")
    eta_seconds: float | None
    workers: int = Field(description="Worker processes (or Ray actors) the job holds now.")
    busy_workers: int
    stages: dict[str, float] = Field(description="Seconds spent in decode, ops, encode and upload, summed.")
    input_failures: int
    crashes: int
    infra_losses: int
    preempted: int = Field(0, description="Attempts given back on a preemption notice (never counted against "
                                          "the retry budget).")
    adopted: int = Field(0, description="Items done by adopting an output already committed with a matching "
                                        "manifest (a new ledger over the same outputs), not processed again.")
    watch: WatchInfo | None


class JobList(BaseModel):
    jobs: list[Job]
    total: int
    limit: int
    offset: int


class ItemList(BaseModel):
    items: list[ItemMetrics]
    """Each video's state, error and totals (bytes counted once for a split video)."""
    total: int
    limit: int
    offset: int


class ThroughputPoint(BaseModel):
    t: float = Field(description="Start of the bucket, seconds since the epoch.")
    fps: float


class Throughput(BaseModel):
    bucket_seconds: float
    points: list[ThroughputPoint]


class Retried(BaseModel):
    retried: int = Field(description="Failed items put back to pending.")


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    uptime_seconds: float
    jobs: dict[str, int]
