"""`run_task`: the one body every engine runs for a task (probe, segment or join), on a worker.

Engines only schedule; this module does the work: it reads the input through the storage module,
decodes, runs the ops, encodes, writes to a temporary name and renames into place (for an object-store
output: into a local staging file, then uploaded in one commit), and returns small results (metrics, the
segment plan). It never touches the ledger.
"""

from __future__ import annotations

import hashlib
import heapq
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Literal

from framefleet.files import storage
from framefleet.files.remote_inputs import InputOpener
from framefleet.files.temporary import remove_stale_temporaries
from framefleet.jobs import manifest as manifests
from framefleet.jobs.manifest import InputFingerprint, Manifest
from framefleet.jobs.records import join_records, records_frames, records_path, records_uri
from framefleet.jobs.results import (
    DamageReport,
    JoinResult,
    ProbeResult,
    Segment,
    SegmentResult,
    TaskMetrics,
    TaskOutcome,
)
from framefleet.jobs.transitions import Task
from framefleet.pipeline import Pipeline
from framefleet.processing.streaming import CutSignal, FrameProcessor, StreamResult
from framefleet.video import VideoInfo, VideoSource, probe
from framefleet.video.concat import join_segments

PART_SUFFIX = ".nut"  # FFmpeg's own container: keeps any time base and negative decode times exactly
SHORTEST_SPREAD_SECONDS = 2.0
"""Seconds: a video cut finer to keep workers busy (`plan_segments`'s `spread`) is cut into no piece shorter
than this, so a segment's fixed cost (seeking, the temporal pre-roll, its share of the join) stays small."""


@dataclass(frozen=True)
class TaskRequest:
    """What a worker needs to run one task (small and picklable)."""

    task_id: int
    lease_id: int
    kind: Literal["probe", "segment", "join"]
    item_id: int
    seq: int
    uri: str
    output_uri: str
    start_pts: int | None
    end_pts: int | None
    parts_dir: str
    """Where segment files wait for their join (each item has a subfolder): a local folder, by default in
    the job directory, or an object-store URI when workers share no disk."""
    parts: tuple[int, ...] = ()
    """For a join: the seqs of the segments to join, in the order of their frames (`LedgerReads.join_parts`)."""
    input_size: int | None = None
    input_version: str | None = None
    """The input's size and version as the ledger keeps them: with `uri`, its fingerprint in manifests."""
    job_fingerprint: str | None = None
    """The job's pipeline fingerprint: with it, every committed output and part gets a manifest and a
    matching one is adopted (`framefleet.jobs.manifest`); without it (a profile run), neither."""
    spread: int = 1
    """For a probe: cut the item into at least this many segments where its keyframes allow (workers that
    would otherwise idle get one each; `plan_segments`)."""
    share: int = 1
    """For a segment: how many workers' shares of the cores it may use (more than 1 while the others would
    idle: its encoder gets that many times the worker's threads, unless the pipeline fixes the count)."""

    @property
    def input(self) -> InputFingerprint:
        return InputFingerprint(self.uri, self.input_size, self.input_version)

    @classmethod
    def of(cls, task: Task, parts_dir: str, *, parts: tuple[int, ...] = (),
           job_fingerprint: str | None = None, spread: int = 1, share: int = 1) -> TaskRequest:
        """The request for a claimed `task` (`parts`: for a join, the seqs it joins in order; `spread`: for a
        probe, the segments wanted at least; `share`: for a segment, the workers' shares of the cores)."""
        return cls(task_id=task.id, lease_id=task.lease_id, kind=task.kind, item_id=task.item_id, seq=task.seq,
                   uri=task.uri, output_uri=task.output_uri, start_pts=task.start_pts, end_pts=task.end_pts,
                   parts_dir=parts_dir, parts=parts, input_size=task.input_size,
                   input_version=task.input_version, job_fingerprint=job_fingerprint, spread=spread,
                   share=share)


@dataclass
class TaskResult:
    """What a worker reports back: the result of its kind, metrics and, for a probe, the segment plan."""

    result: TaskOutcome
    metrics: TaskMetrics = field(default_factory=TaskMetrics)
    segments: list[Segment] | None = None


def plan_segments(info: VideoInfo, segment_seconds: float, spread: int = 1) -> list[Segment]:
    """Split at keyframes into segments of at least `segment_seconds` (the last may be up to 1.5x). When
    that count is not a multiple of `spread` (the workers that would otherwise idle), into a multiple of it
    instead where that ends sooner (`_balanced_bounds`), pieces as equal as keyframes at least
    `SHORTEST_SPREAD_SECONDS` apart allow: idle workers share a short video, and a long one ends with every
    worker busy, not one."""
    duration = info.duration or 0.0
    keys = sorted(info.keyframe_pts or ())
    if len(keys) < 2 or not info.time_base:
        return [Segment(None, None)]
    first = keys[0]
    end_of_video = first + round(Fraction(duration).limit_denominator(1_000_000) / info.time_base)
    bounds: list[int] = []
    if duration > segment_seconds:
        limit = round(Fraction(segment_seconds).limit_denominator(1000) / info.time_base)
        previous = first
        for key in keys[1:]:
            if key - previous >= limit and end_of_video - key >= limit // 2:
                bounds.append(key)
                previous = key
    if spread > 1 and (len(bounds) + 1) % spread:
        shortest = round(Fraction(SHORTEST_SPREAD_SECONDS).limit_denominator(1000) / info.time_base)
        bounds = _balanced_bounds(bounds, keys, first, end_of_video, spread, shortest)
    starts: list[int | None] = [None, *bounds]
    ends: list[int | None] = [*bounds, None]
    return [Segment(start, end) for start, end in zip(starts, ends)]


def _balanced_bounds(bounds: list[int], keys: list[int], first: int, end: int, workers: int,
                     shortest: int) -> list[int]:
    """Of `bounds` and cuts into the next few multiples of `workers` pieces of about equal length (at
    keyframes, none shorter than `shortest`), the cut that ends soonest on `workers` workers; the fewest
    pieces on a tie. Keyframes far apart make pieces unequal: a finer cut may then balance better."""
    multiple = -(-(len(bounds) + 1) // workers) * workers
    options = [bounds, *(_even_bounds(keys, first, end, multiple + k * workers, shortest) for k in range(4))]
    return min(options, key=lambda option: (_makespan([first, *option, end], workers), len(option)))


def _makespan(edges: list[int], workers: int) -> int:
    """When the last of the pieces between `edges` ends, each taken in order by the first worker free."""
    free = [0] * workers
    for start, stop in zip(edges, edges[1:]):
        heapq.heapreplace(free, free[0] + stop - start)
    return max(free)


def _even_bounds(keys: list[int], first: int, end: int, pieces: int, shortest: int) -> list[int]:
    """Keyframes that cut first..end into up to `pieces` of about equal length, none shorter than `shortest`:
    for each even cut point, the keyframe nearest to it that leaves `shortest` on both sides."""
    bounds: list[int] = []
    previous = first
    for k in range(1, pieces):
        target = first + (end - first) * k / pieces
        fitting = [key for key in keys if key - previous >= shortest and end - key >= shortest]
        if not fitting:
            break
        previous = min(fitting, key=lambda key: abs(key - target))
        bounds.append(previous)
    return bounds


def scratch_dir(parts_dir: str) -> Path:
    """Where a worker writes before committing: the parts folder itself when it is local, else a local
    folder of this machine set aside for that parts URI."""
    if storage.is_local(parts_dir):
        return storage.local_path(parts_dir)
    digest = hashlib.sha256(parts_dir.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"framefleet-scratch-{os.getuid()}" / digest


def _part_name(item_id: int, seq: int) -> str:
    return f"item-{item_id}/{seq:05d}{PART_SUFFIX}"


def part_path(parts_dir: str, item_id: int, seq: int) -> Path:
    """Where segment `seq` of an item is written locally before the join (or before its upload)."""
    return scratch_dir(parts_dir) / _part_name(item_id, seq)


def part_uri(parts_dir: str, item_id: int, seq: int) -> str:
    """Where segment `seq` of an item waits for the join: `part_path` for a local parts folder."""
    return storage.join(parts_dir, _part_name(item_id, seq)) if not storage.is_local(parts_dir) else str(
        part_path(parts_dir, item_id, seq))


def task_target(task: TaskRequest | Task, parts_dir: str) -> Path | None:
    """Where a task writes locally: the output for a whole video or a join (its staging file when the
    output is in an object store), a part file for a segment, None for a probe."""
    if task.kind == "probe":
        return None
    if task.kind == "join" or (task.start_pts is None and task.end_pts is None):
        if storage.is_local(task.output_uri):
            return storage.local_path(task.output_uri)
        suffix = Path(task.output_uri.rsplit("/", 1)[-1]).suffix
        return scratch_dir(parts_dir) / f"item-{task.item_id}" / f"output{suffix}"
    return part_path(parts_dir, task.item_id, task.seq)


def remove_task_temporaries(task: Task, parts_dir: str) -> None:
    """Delete the temporary files a worker that died or was killed in `task` left beside its targets.

    A retry would delete them too, but an item that ends failed (crashes or hangs on every attempt) gets
    none. Only for a dead worker's task: while the task's lease is held, nobody else writes that target.
    """
    target = task_target(task, parts_dir)
    if target is not None:
        remove_stale_temporaries(target)
        remove_stale_temporaries(records_path(target))


def run_task(
    request: TaskRequest,
    pipeline: Pipeline,
    processor: FrameProcessor,
    progress: Callable[[int], None] | None = None,
    inputs: InputOpener | None = None,
    cut: CutSignal | None = None,
) -> TaskResult:
    """Run one task. Raises framefleet errors (bad input, a store that refuses or is unreachable) or
    anything else (a bug) on failure. `inputs` opens remote inputs (the worker keeps one). `cut`, once set,
    stops a segment of a split video at the next frame it can stop at: its part holds the frames written
    and the result's `cut_at` says where the rest starts (a whole video is never cut).

    A task whose output (or part) is already committed with a matching manifest adopts it and returns at
    once, without reading the input."""
    adopted = _adopt(request, pipeline)
    if adopted is not None:
        return adopted
    source = (inputs or InputOpener()).open(request.uri)
    if request.kind == "probe":
        info = probe(source, keyframes=True, limits=pipeline.limits)
        return TaskResult(
            result=ProbeResult(frames=info.frame_count_header, duration=info.duration, width=info.width,
                               height=info.height, video_index=info.video_index,
                               time_base=str(info.time_base) if info.time_base else None),
            metrics=TaskMetrics(bytes_in=info.size_bytes),
            segments=plan_segments(info, pipeline.segment_seconds, request.spread),
        )
    info = probe(source, keyframes=False, limits=pipeline.limits)
    if request.kind == "join":
        return _join(request, info, source, pipeline)
    whole = request.start_pts is None and request.end_pts is None
    target = task_target(request, request.parts_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    video = target if pipeline.writes_video else None
    records = records_path(target) if pipeline.writes_records else None
    # a segment's part is a .nut file: its encoder is the one the final output's container needs
    encode = pipeline.encode if whole else pipeline.encode.for_output(request.output_uri)
    stream = processor.run(source, video, encode=encode, info=info, start_pts=request.start_pts,
                           end_pts=request.end_pts, carry=whole, progress=progress, records=records,
                           input_uri=request.uri, cut=None if whole else cut)
    metrics = _metrics(stream, info, [path for path in (video, records) if path is not None])
    destination = request.output_uri if whole else part_uri(request.parts_dir, request.item_id, request.seq)
    checks = _checks(request, destination, video, records)
    metrics.upload_s = _commit(records, records_uri(destination)) if records is not None else 0.0
    if video is not None:
        metrics.upload_s += _commit(video, destination)
    segment = None if whole else (request.start_pts, stream.cut_at if stream.cut_at is not None else request.end_pts)
    _write_manifest(request, destination, checks, stream.frames, stream.records if records is not None else None,
                    segment)
    damage = DamageReport(summary=stream.damage(), frames_claimed=stream.frames_claimed,
                          decode_errors=stream.decode_errors, frames_dropped=stream.frames_dropped,
                          cut_short=stream.cut_short) if stream.damaged else None
    result = SegmentResult(frames=stream.frames, output=destination if video is not None else records_uri(destination),
                           records=stream.records if records is not None else None, runtime=stream.runtime or None,
                           damage=damage, cut_at=stream.cut_at)
    return TaskResult(result=result, metrics=metrics)


def _adopt(request: TaskRequest, pipeline: Pipeline) -> TaskResult | None:
    """The result of a task whose output (or part) is already committed with a manifest that matches this
    input, pipeline and segment; None when there is none (the work runs). A probe that adopts finishes its
    item; a join adopts an output whose commit an earlier attempt made but did not report (its parts are
    removed as the join would)."""
    if request.job_fingerprint is None:
        return None
    whole = request.kind != "segment" or (request.start_pts is None and request.end_pts is None)
    destination = request.output_uri if whole else part_uri(request.parts_dir, request.item_id, request.seq)
    names = _file_names(destination, pipeline)
    found = manifests.adoptable(destination, request.input, request.job_fingerprint,
                                None if whole else (request.start_pts, request.end_pts), names)
    if found is None:
        return None
    output = destination if pipeline.writes_video else records_uri(destination)
    if request.kind == "probe":
        return TaskResult(result=ProbeResult(frames=found.frames, adopted=output))
    if request.kind == "join":
        _remove_parts(request, _remote_parts(request, pipeline))
        return TaskResult(result=JoinResult(output=output, frames=found.frames, records=found.records, adopted=True))
    return TaskResult(result=SegmentResult(frames=found.frames or 0, output=output, records=found.records,
                                           adopted=True),
                      metrics=TaskMetrics(frames=found.frames or 0))


def _file_names(destination: str, pipeline: Pipeline) -> list[str]:
    """The names of the files a task commits at `destination`: the video and/or its records file."""
    name = destination.rpartition("/")[2]
    return [*([name] if pipeline.writes_video else []), *([records_uri(name)] if pipeline.writes_records else [])]


def _checks(request: TaskRequest, destination: str, video: Path | None, records: Path | None
            ) -> list[tuple[manifests.FileCheck, str]]:
    """The checks of the files about to be committed at `destination`, with their URIs: computed from the
    local files before the commit (a staged upload is deleted by it), so write-only credentials suffice."""
    if request.job_fingerprint is None:
        return []
    return [(manifests.check_local(str(path), uri.rpartition("/")[2]), uri)
            for path, uri in ((video, destination), (records, records_uri(destination))) if path is not None]


def _write_manifest(request: TaskRequest, destination: str, checks: list[tuple[manifests.FileCheck, str]],
                    frames: int | None, records: int | None, segment: tuple[int | None, int | None] | None) -> None:
    """After the commit of the checked files: their manifest, with each file's version read back."""
    if request.job_fingerprint is None:
        return
    files = tuple(replace(check, version=manifests.committed_version(uri)) for check, uri in checks)
    manifests.write_manifest(destination, Manifest(input=request.input, pipeline=request.job_fingerprint,
                                                   frames=frames, files=files, segment=segment, records=records))


def _commit(target: Path, output_uri: str) -> float:
    """Upload a staged file to its object-store URI (a no-op for a local one, written in place); the
    seconds it took."""
    if storage.is_local(output_uri):
        return 0.0
    started = time.perf_counter()
    try:
        storage.upload(target, output_uri)
    finally:
        target.unlink(missing_ok=True)
    return time.perf_counter() - started


def _join(request: TaskRequest, info: VideoInfo, source: VideoSource, pipeline: Pipeline) -> TaskResult:
    """Join a video's segments: the video parts without re-encoding (and the source's other streams), the
    records parts into one file."""
    target = task_target(request, request.parts_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    seqs = request.parts
    video_parts = [part_path(request.parts_dir, request.item_id, seq)
                   for seq in seqs] if pipeline.writes_video else []
    record_parts = [records_path(part_path(request.parts_dir, request.item_id, seq))
                    for seq in seqs] if pipeline.writes_records else []
    parts = [*video_parts, *record_parts]
    remote_parts = _remote_parts(request, pipeline)
    for uri, local in zip(remote_parts, parts):
        storage.download(uri, local)
    bytes_in = sum(part.stat().st_size for part in parts if part.exists())
    result = JoinResult(output=request.output_uri)
    metrics = TaskMetrics(bytes_in=bytes_in)
    records = records_path(target) if record_parts else None
    if records is not None:
        result = replace(result, records=join_records(record_parts, records))
        if not video_parts:
            result = replace(result, output=records_uri(request.output_uri))
    if video_parts:
        offset = Fraction(info.start_time or 0).limit_denominator(1_000_000)
        frames, carried = join_segments(video_parts, target, carry_from=source,
                                        carry_skip_index=info.video_index, offset=offset, time_base=info.time_base)
        result = replace(result, frames=frames, streams=[vars(c) for c in carried])
    checks = _checks(request, request.output_uri, target if video_parts else None, records)
    frames = result.frames if video_parts or records is None else records_frames(records)
    if records is not None:
        metrics.bytes_out += records.stat().st_size
        metrics.upload_s += _commit(records, records_uri(request.output_uri))
    if video_parts:
        metrics.bytes_out += target.stat().st_size
        metrics.upload_s += _commit(target, request.output_uri)
    _write_manifest(request, request.output_uri, checks, frames, result.records, None)
    _remove_parts(request, remote_parts)
    return TaskResult(result=result, metrics=metrics)


def _remote_parts(request: TaskRequest, pipeline: Pipeline) -> list[str]:
    """The URIs of a join's parts in a store (video parts, then records parts); none for a local parts folder."""
    if storage.is_local(request.parts_dir):
        return []
    uris = [part_uri(request.parts_dir, request.item_id, seq) for seq in request.parts]
    return [*(uris if pipeline.writes_video else []), *(map(records_uri, uris) if pipeline.writes_records else [])]


def _remove_parts(request: TaskRequest, remote_parts: list[str]) -> None:
    """After the join's commit: its parts, their manifests first (none outlives its part)."""
    if remote_parts and request.job_fingerprint is not None:
        for seq in request.parts:
            manifests.delete_manifest(part_uri(request.parts_dir, request.item_id, seq))
    for uri in remote_parts:
        storage.delete(uri)
    shutil.rmtree(part_path(request.parts_dir, request.item_id, 0).parent, ignore_errors=True)


def _metrics(stream: StreamResult, info: VideoInfo, written: list[Path]) -> TaskMetrics:
    share = min(1.0, stream.frames / info.frame_count_header) if info.frame_count_header else 1.0
    return TaskMetrics(frames=stream.frames, seconds=stream.seconds, decode_s=stream.decode_seconds,
                       ops_s=stream.ops_seconds, encode_s=stream.encode_seconds,
                       bytes_in=round(info.size_bytes * share),
                       bytes_out=sum(path.stat().st_size for path in written), steps_s=stream.step_seconds)