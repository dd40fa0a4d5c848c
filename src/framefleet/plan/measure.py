"""Measuring a pipeline on this machine: timed tasks of a real `Worker`, set up as `run` sets one up (in this
process), alone or one per core at once; the join; the quality of reduced inference sizes; the temporal
step. `measure_resolution` makes one profile entry from them (`framefleet.plan.profile` keeps it).

A resolution is measured in two steps. Its `Pilot` comes first: a task of 2 and one of up to 10 frames
from the video's start at the base setting, which tell the fixed cost of a task from the cost of a frame
and size the job before the rest is sampled (`framefleet.plan.budget`). The rest then runs with the
frames per run the budget allows.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import queue
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from framefleet._version import __version__
from framefleet.errors import CorruptVideoError
from framefleet.files.remote_inputs import InputOpener
from framefleet.jobs.task import TaskRequest
from framefleet.jobs.worker import Worker
from framefleet.ops import Op
from framefleet.ops.base import Device
from framefleet.ops.chain import chain_output_size
from framefleet.pipeline import Pipeline
from framefleet.plan.knobs import Knobs, max_sizes, op_with_knobs
from framefleet.plan.stretches import Stretch, TooShortToSample, pts_after, stretches
from framefleet.plan.workload import VideoWork
from framefleet.processing.streaming import gpu_names
from framefleet.processing.temporal import TEMPORAL_MODES, flow_size, temporal_filter
from framefleet.util.processes import start_worker_process
from framefleet.video import VideoReader

ALL_CORES_FRAMES = 2
"""The all-cores run takes this many times the frames per run, per worker: every option's throughput is
scaled from it, so it gets the longest window."""
PILOT_FRAMES = 10
"""The pilot's longer task (at most the frames per run): with its 2-frame task, the fixed cost of a task."""
QUALITY_FRAMES = 4
TEMPORAL_FRAMES = 12
"""Frames the temporal step is timed on (at most the frames per run): its cost per frame is even, frame to frame."""
log = logging.getLogger(__name__)
_STAGES = ("frames", "cpu", "wall", "decode", "ops", "encode")


@dataclass(frozen=True)
class Pilot:
    """A resolution's first measurement: one worker at the base setting, on a task of 2 and one of up to
    `PILOT_FRAMES` frames from the video's start (after a warm-up task)."""

    uri: str
    wall_per_frame: float
    cpu_per_frame: float
    """CPU seconds per frame (all the worker's threads)."""
    task_wall: float
    """Fixed cost of a task (open, probe, writer, flush), wall seconds."""
    task_cpu: float
    setup_seconds: float
    """The op's set-up in a worker (the model load)."""


def pilot(video: VideoWork, pipeline: Pipeline, knobs: Knobs, frames: int) -> Pilot:
    """`video`'s pilot at `knobs` (its longer task at most `frames` frames); raises `TooShortToSample`
    when the video has too few frames, `CorruptVideoError` when none decodes."""
    source = InputOpener().open(video.uri)
    ends = pts_after(source, None, (2, max(4, min(PILOT_FRAMES, frames))))
    if ends is None:
        raise TooShortToSample(f"{video.uri}: too short to profile (fewer than {max(4, min(PILOT_FRAMES, frames)) + 1} "
                               "frames); lower --sample-frames or profile with a longer video")
    with tempfile.TemporaryDirectory(prefix="framefleet-profile-") as scratch:
        started = time.perf_counter()
        with closing(_worker(pipeline, knobs)) as worker:
            setup_seconds = time.perf_counter() - started
            worker.run(_segment(video.uri, Path(scratch), 0, None, ends[0]))  # warm-up
            short, long = (_timed(worker, _segment(video.uri, Path(scratch), 0, None, end)) for end in ends)
    extra = max(1.0, long["frames"] - short["frames"])
    # between the op's time and the longer task's time, a frame: a hiccup in one short task moves it less
    per_frame = {k: min(long[k] / max(1.0, long["frames"]),
                        max(long["ops"] / max(1.0, long["frames"]), (long[k] - short[k]) / extra)) for k in ("cpu", "wall")}
    return Pilot(uri=video.uri, wall_per_frame=per_frame["wall"], cpu_per_frame=per_frame["cpu"],
                 task_wall=max(0.0, short["wall"] - per_frame["wall"] * short["frames"]),
                 task_cpu=max(0.0, short["cpu"] - per_frame["cpu"] * short["frames"]), setup_seconds=setup_seconds)


def measure_resolution(video: VideoWork, pipeline: Pipeline, cpus: int, frames: int, base: Knobs,
                       fixed: Mapping[str, Any], swept: list[Knobs], first: Pilot,
                       say: Callable[[str], None]) -> dict[str, Any]:
    """Every measurement for one resolution, `frames` frames per run, knobs in `fixed` held at `base`'s
    value and the batch sizes and thread counts of `swept` measured as ratios (see the profile module's
    docstring); `first` is this video's pilot, which gives the fixed cost of a task. A JSON-ready entry."""
    op = pipeline.ops[0]
    source = InputOpener().open(video.uri)
    chunks = stretches(source, frames)
    sizes = [base.max_size] if "max_size" in fixed else max_sizes(op, video.width, video.height)
    fixed_cost = {"wall": first.task_wall, "cpu": first.task_cpu}
    with tempfile.TemporaryDirectory(prefix="framefleet-profile-") as scratch:
        out = Path(scratch)

        ran: dict[str, str] = {}  # what ran the models, per thread count (`auto` chooses per threads)

        def run(knobs: Knobs) -> dict[str, float]:
            timed = timed_run(pipeline, knobs, video.uri, chunks, "long", out)
            if timed["runtime"]:
                ran.setdefault(f"threads={knobs.threads}", timed["runtime"])
            return per_frame(timed, fixed_cost, len(chunks))

        settings: dict[str, dict[str, float]] = {}
        for size in sizes:
            knobs = replace(base, max_size=size)
            settings[f"max_size={size}"] = run(knobs)
            say(f"  {knobs.label()}: {settings[f'max_size={size}']['wall']:.3f} s/frame")
        reference = settings[f"max_size={base.max_size}"]
        ratios: dict[str, dict[str, float]] = {}
        for knobs in swept:
            cost = run(knobs)
            key = f"threads={knobs.threads}" if knobs.threads != base.threads else f"batch_size={knobs.batch_size}"
            ratios[key] = {"cpu": cost["cpu"] / reference["cpu"], "wall": cost["wall"] / reference["wall"]}
            say(f"  {knobs.label()}: {cost['wall']:.3f} s/frame")
        workers = node_workers(pipeline, cpus, base)
        if workers > 1:
            node_fps = all_cores_fps(pipeline, base, video.uri, stretches(source, ALL_CORES_FRAMES * frames), workers,
                                     first.task_wall)
        else:
            node_fps = 1.0 / reference["wall"]
        say(f"  all {workers} workers: {node_fps:.2f} fps")
        try:
            join_seconds = _join_seconds(pipeline, video.uri, chunks[0], out)
        except CorruptVideoError as exc:  # no second keyframe to start a segment at: `run` never splits it
            log.info("%s: no join measured (%s)", video.uri, exc)
            join_seconds = 0.0
        quality = {f"max_size={size}": psnr for size, psnr in
                   _quality(op, source, sizes, min(frames, QUALITY_FRAMES)).items()}
        temporal = _temporal_costs(pipeline, source, min(frames, TEMPORAL_FRAMES))
        say("  temporal step: " + ", ".join(f"{mode} {cost['wall']:.4f} s/frame" for mode, cost in temporal.items()))
    return {
        "pixels": video.width * video.height,
        "largest_side": max(video.width, video.height),
        "device": op.resolve_device(),
        "runtime": ran,
        "frames_per_run": frames,
        "base_batch_size": base.batch_size,
        "setup_seconds": first.setup_seconds,
        "base_max_size": base.max_size,
        "base_threads": base.threads,
        "task_seconds": first.task_wall,
        "join_seconds": join_seconds,
        "settings": settings,
        "ratios": ratios,
        "node_fps": node_fps,
        "temporal": temporal,
        "quality_psnr": quality,
        "measured_at": time.time(),
        "framefleet": __version__,
    }


def node_workers(pipeline: Pipeline, cpus: int, base: Knobs) -> int:
    """Workers of a busy node at `base`: one per `threads` cores; a GPU pipeline runs one per GPU (as `run` does)."""
    if any(o.resources.gpus for o in pipeline.ops):
        return max(1, len(gpu_names()))
    return max(1, cpus // base.threads)


def _worker(pipeline: Pipeline, knobs: Knobs) -> Worker:
    """A `Worker` as `run` sets one up (in this process), with the first op's knobs turned to `knobs`.
    Without the temporal blend: a segment of the blend first runs frames before its start through the
    ops (its pre-roll), a fixed cost that would swamp the short runs a profile times."""
    ops = (op_with_knobs(pipeline.ops[0], knobs), *pipeline.ops[1:])
    return Worker(replace(pipeline, ops=ops, temporal="none"), knobs.threads, own_process=False)


def _segment(uri: str, scratch: Path, seq: int, start: int | None, end: int | None) -> TaskRequest:
    """The task of processing frames [start, end) of `uri` into a part file under `scratch`."""
    return TaskRequest(task_id=seq, lease_id=seq, kind="segment", item_id=0, seq=seq, uri=uri,
                       output_uri=str(scratch / "output.mp4"), start_pts=start, end_pts=end, parts_dir=str(scratch))


def _timed(worker: Worker, request: TaskRequest) -> dict[str, Any]:
    """One task's wall and CPU seconds, frames and stage times, and what ran its models (`runtime`:
    "style: openvino bf16"; "" when no op runs a model)."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    done = worker.run(request)
    metrics = done.metrics
    return {"cpu": time.process_time() - cpu0, "wall": time.perf_counter() - wall0, "frames": metrics.frames,
            "decode": metrics.decode_s, "ops": metrics.ops_s, "encode": metrics.encode_s,
            "runtime": getattr(done.result, "runtime", None) or ""}


def timed_run(pipeline: Pipeline, knobs: Knobs, uri: str, chunks: list[Stretch], length: str,
              scratch: Path) -> dict[str, Any]:
    """A worker's tasks over each chunk's `length` ("short" or "long") of frames, after a warm-up task:
    wall and CPU seconds, frames and stage times, summed over the chunks, and what ran the models."""
    with closing(_worker(pipeline, knobs)) as worker:
        worker.run(_segment(uri, scratch, 0, chunks[0].start, chunks[0].warm))
        return _chunks(worker, uri, chunks, length, scratch)


def _chunks(worker: Worker, uri: str, chunks: list[Stretch], length: str, scratch: Path) -> dict[str, Any]:
    totals: dict[str, Any] = dict.fromkeys(_STAGES, 0.0)
    for chunk in chunks:
        timed = _timed(worker, _segment(uri, scratch, 0, chunk.start, getattr(chunk, length)))
        for stage in _STAGES:
            totals[stage] += timed[stage]
        totals["runtime"] = timed["runtime"]
    return totals


def per_frame(result: dict[str, Any], fixed: dict[str, float], tasks: int) -> dict[str, float]:
    """Per-frame costs of a run over `tasks` chunks, less the fixed cost of each."""
    frames = max(1, result["frames"])
    ops = result["ops"] / frames  # the op runs in one session: a frame takes at least its op time
    return {"cpu": max(ops, (result["cpu"] - fixed["cpu"] * tasks) / frames),
            "wall": max(ops, (result["wall"] - fixed["wall"] * tasks) / frames),
            **{stage: result[stage] / frames for stage in ("decode", "ops", "encode")}}


def all_cores_fps(pipeline: Pipeline, knobs: Knobs, uri: str, chunks: list[Stretch], cpus: int,
                  task_seconds: float) -> float:
    """Frames per second of `cpus` worker processes running the same frames together, each started at
    the same moment; each worker's frames over its seconds less the fixed cost of its tasks
    (`task_seconds` each, as measured for one worker)."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(cpus)
    results = context.Queue()
    workers = [context.Process(target=_concurrent_worker, args=(pipeline, knobs, uri, chunks, barrier, results))
               for _ in range(cpus)]
    for worker in workers:
        start_worker_process(worker, _concurrent_worker, pipeline, knobs, uri, chunks)
    timings: list[tuple[float, float] | str] = []
    try:
        while len(timings) < cpus:
            try:
                timings.append(results.get(timeout=1.0))
            except queue.Empty:
                if any(w.exitcode not in (None, 0) for w in workers):
                    raise RuntimeError("profiling with all cores failed: a worker process died") from None
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
    failures = [t for t in timings if isinstance(t, str)]
    if failures:
        raise RuntimeError(f"profiling with all cores failed: {failures[0]}")
    return sum(frames / max(1e-6, seconds - task_seconds * len(chunks)) for frames, seconds in timings)  # type: ignore[misc]


def _concurrent_worker(pipeline: Pipeline, knobs: Knobs, uri: str, chunks: list[Stretch], barrier,
                       results) -> None:
    """One of `all_cores_fps`'s processes: sets up and warms up its worker, then, started with the others,
    puts the frames and wall seconds of its run, or the error that stopped it."""
    try:
        with tempfile.TemporaryDirectory(prefix="framefleet-profile-") as scratch, \
                closing(_worker(pipeline, knobs)) as worker:
            worker.run(_segment(uri, Path(scratch), 0, chunks[0].start, chunks[0].warm))
            barrier.wait(timeout=300)
            timed = _chunks(worker, uri, chunks, "long", Path(scratch))
            results.put((timed["frames"], timed["wall"]))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        results.put(f"{type(exc).__name__}: {exc}")


def _join_seconds(pipeline: Pipeline, uri: str, chunk: Stretch, scratch: Path) -> float:
    """Seconds of the join task that makes two segments one video (the source's other streams carried in)."""
    with closing(_worker(pipeline, Knobs(max_size=64))) as worker:
        worker.run(_segment(uri, scratch, 0, chunk.start, chunk.warm))
        worker.run(_segment(uri, scratch, 1, chunk.warm, chunk.short))
        join = replace(_segment(uri, scratch, 2, None, None), kind="join", parts=(0, 1))
        started = time.perf_counter()
        worker.run(join)
    return time.perf_counter() - started


def _quality(op: Op, source, sizes: Iterable[int | None], count: int) -> dict[int | None, float]:
    """PSNR (dB) of each reduced inference size's output against full-size inference, over `count` frames."""
    reduced = [size for size in sizes if size is not None]
    if not reduced:
        return {}
    with VideoReader(source) as reader:
        batch = next(reader.batches(count))
    outputs = {}
    for size in [None, *reduced]:
        instance = op_with_knobs(op, Knobs(max_size=size, batch_size=count))
        instance.setup(Device(kind=instance.resolve_device(), threads=1))
        try:
            outputs[size] = instance.process(batch).frames.astype(np.float64)
        finally:
            instance.teardown()
    return {size: _psnr(outputs[size], outputs[None]) for size in reduced}


def _temporal_costs(pipeline: Pipeline, source, frames: int) -> dict[str, dict[str, float]]:
    """CPU and wall seconds per frame of each temporal mode's step on `frames` frames of the video: the
    motion planned from the input and the blend of outputs of the ops' output size (the input's frames
    stand in for them: what the pixels show does not change the step's cost)."""
    with VideoReader(source) as reader:
        batch = next(reader.batches(max(2, frames)))
    width, height = chain_output_size(pipeline.ops, *batch.size)
    small, outputs = batch.frames_at(*flow_size(*batch.size)), batch.frames_at(width, height)
    costs = {}
    for mode in TEMPORAL_MODES:
        if mode == "none":
            continue
        blend = temporal_filter(mode, pipeline.temporal_strength if mode == pipeline.temporal else None)
        cpu, wall = time.process_time(), time.perf_counter()
        blend(blend.plan(None, small, width, height), outputs)
        blended = max(1, len(outputs) - 1)  # the first frame starts afresh
        costs[mode] = {"cpu": (time.process_time() - cpu) / blended, "wall": (time.perf_counter() - wall) / blended}
    return costs


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return 99.0 if mse == 0 else round(10 * math.log10(255.0**2 / mse), 2)


def worker_start_seconds() -> float:
    """Seconds for a fresh interpreter to import what a worker imports (the model set-up is apart)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import framefleet.jobs.task, framefleet.engines.local, onnxruntime"],
                   check=True, capture_output=True)
    return time.perf_counter() - started
