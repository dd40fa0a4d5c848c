"""Profiles: what a pipeline costs on a machine, measured on real frames of the job's own videos.

For each resolution of the workload (the most common few), `profile_pipeline` runs a real `Worker`, set
up as `run` sets one up, on segment tasks (decode, ops, encode) over frames from up to three places in a
video at that resolution (its first seconds are often unlike the rest), for each setting of the knobs:

- `max_size` (inference resolution) at every value the op offers below the frame's size, with the
  quality it costs measured as PSNR against full-resolution inference on the same frames;
- `batch_size` and `threads` (intra-op threads per worker), each varied alone at full resolution;
  their effect is applied as a ratio to the other settings (a factorized sweep: far fewer runs);
- two lengths of run, so the fixed cost of a task (open, probe, writer, flush) is told apart from the
  cost per frame;
- all cores at once: as many worker processes as cores run the same frames together, which measures
  the node's real throughput (cores contend for memory and caches); a pipeline on CUDA runs one worker
  per GPU instead, as `run` does;
- the start-up of a worker (a fresh interpreter, imports, the model's set-up) and the join of segments;
- the temporal step of each mode (`bands`, `blend`: the input's motion and the blend of the outputs), apart
  from the runs above (a blended segment's pre-roll would swamp their short runs), added to the cost of a
  frame for pipelines that have it on.

Profiles are kept per machine under `~/.cache/framefleet/profiles/<machine>.json`; an entry's key holds
the op's identity (its parameters other than knobs and the hashes of its model files), the encoder
settings, the codec and resolution, so a changed model or parameter is measured afresh. A profile made on
another machine (`framefleet profile ... --export gpu-box.json`) is imported with `--profiles`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import platform
import queue
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from framefleet._version import __version__
from framefleet.errors import CorruptVideoError, NotAVideoError, OptionError
from framefleet.files.remote_inputs import InputOpener
from framefleet.files.temporary import write_text_atomically
from framefleet.jobs.task import TaskRequest
from framefleet.jobs.worker import Worker
from framefleet.ops import Op
from framefleet.ops.base import Device
from framefleet.ops.chain import chain_output_size
from framefleet.pipeline import Pipeline, file_sha256
from framefleet.plan.stretches import Stretch, TooShortToSample, stretches
from framefleet.plan.workload import VideoWork, Workload
from framefleet.processing.streaming import available_cores, gpu_names
from framefleet.processing.temporal import TEMPORAL_MODES, flow_size, temporal_filter
from framefleet.util.cache import cache_dir
from framefleet.video import EncodeOptions, VideoReader

log = logging.getLogger(__name__)

KNOB_FIELDS = ("max_size", "batch_size", "device")
"""Op fields that are knobs: left out of the op's identity (each setting is its own measurement)."""
RESOLUTIONS_PROFILED = 3
PROFILE_FORMAT = 3
"""Bumped when entries change shape: profiles of another format are measured afresh."""
DEFAULT_FRAMES = 24
ALL_CORES_FRAMES = 2
"""The all-cores run takes this many times `--sample-frames` per worker: every option's throughput is
scaled from it, so it gets the longest window (3 took half of a profile's time; 2 keeps a plan of three
clips in a minute on 2 cores)."""
TEMPORAL_FRAMES = 12
"""Frames the temporal step is timed on (at most `--sample-frames`): its cost per frame is even, frame to frame."""
NOISE = 0.12
"""Relative differences between two short profiling runs smaller than this are taken as no difference."""
THREADS = (1, 2, 4, 8)
"""Op threads per worker a profile measures (up to the machine's cores)."""


@dataclass(frozen=True)
class MachineInfo:
    """The machine a profile was measured on."""

    name: str
    cpus: int
    cpu_model: str
    memory_gb: float
    gpus: tuple[str, ...] = ()

    @classmethod
    def here(cls, name: str | None = None) -> MachineInfo:
        """This machine, named after its host unless `name` is given."""
        return cls(name=name or _slug(socket.gethostname()), cpus=available_cores(), cpu_model=_cpu_model(),
                   memory_gb=round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
                   gpus=gpu_names())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MachineInfo:
        return cls(name=str(data["name"]), cpus=int(data["cpus"]), cpu_model=str(data.get("cpu_model", "")),
                   memory_gb=float(data.get("memory_gb", 0)), gpus=tuple(data.get("gpus", ())))


@dataclass(frozen=True)
class Knobs:
    """One setting of the knobs a plan may turn."""

    max_size: int | None = None
    batch_size: int = 4
    threads: int = 1

    def label(self) -> str:
        return f"max_size={self.max_size or 'full'} batch={self.batch_size} threads={self.threads}"


@dataclass(frozen=True)
class RunCost:
    """What one worker spends on a frame, and on each task, at one knob setting and resolution."""

    cpu_per_frame: float
    """CPU seconds (all threads of the worker) per frame."""
    wall_per_frame: float
    """Seconds per frame of one worker running alone."""
    task_seconds: float
    """Fixed cost of a task (open, probe, writer, flush), on top of its frames."""
    setup_seconds: float
    """A worker's set-up of the op (model load), once per worker."""
    join_seconds: float
    """Joining the segments of a video."""
    node_fps: float
    """Frames per second of the whole machine, all its workers busy."""
    decode_per_frame: float
    ops_per_frame: float
    encode_per_frame: float
    quality_psnr: float | None
    """PSNR (dB) of this setting's output against full-resolution inference; None at full resolution."""
    device: str
    temporal_per_frame: float = 0.0
    """CPU seconds per frame of the pipeline's temporal step (0 with `temporal: none`), in the figures above."""
    measured: bool = True
    """False when scaled from another resolution (no measurement at this one)."""


class ProfileStore:
    """The profiles of this machine (cached on disk) and of machines imported from files."""

    def __init__(self, directory: str | Path | None = None, machine: MachineInfo | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_profile_dir()
        self.machine = machine or MachineInfo.here()
        self._profiles: dict[str, dict[str, Any]] = {}
        self._profiles[self.machine.name] = self._read(self._path(self.machine.name)) or self._empty(self.machine)

    def import_file(self, path: str | Path) -> str:
        """Load a profile exported on another machine; returns that machine's name."""
        data = self._read(Path(path))
        if data is None:
            raise OptionError(f"--profiles {path}: no such file, or not a profile of this framefleet version "
                              f"(format {PROFILE_FORMAT}); make it with framefleet profile --export")
        name = data["machine"]["name"]
        if name == self.machine.name:
            raise OptionError(f"--profiles {path}: it is a profile of this machine ({name}); no need to import it")
        self._profiles[name] = data
        return name

    def machines(self) -> list[str]:
        return list(self._profiles)

    def machine_info(self, name: str) -> MachineInfo:
        return MachineInfo.from_dict(self._profiles[name]["machine"])

    def get(self, machine: str, key: str) -> Any:
        return self.entries(machine).get(key)

    def entries(self, machine: str) -> dict[str, Any]:
        return self._profiles.get(machine, {}).get("entries", {})

    def put(self, key: str, value: Any) -> None:
        """Record a measurement of this machine (kept on disk by `save`)."""
        self._profiles[self.machine.name]["entries"][key] = value

    def save(self) -> Path:
        """Write this machine's profile (atomically)."""
        return self.export(self._path(self.machine.name))

    def export(self, path: str | Path) -> Path:
        """Write this machine's profile to `path`, for `--profiles` on another machine."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, json.dumps(self._profiles[self.machine.name], indent=1, sort_keys=True))
        return path

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    @staticmethod
    def _empty(machine: MachineInfo) -> dict[str, Any]:
        return {"format": PROFILE_FORMAT, "machine": asdict(machine), "entries": {}}

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or "machine" not in data:
            return None
        if data.get("format") != PROFILE_FORMAT:
            log.info("%s: a profile of another format (%s); it is measured afresh", path, data.get("format"))
            return None
        return data


def default_profile_dir() -> Path:
    return cache_dir("profiles")


def op_identity(op: Op) -> str:
    """A hash of what shapes an op's cost other than its knobs: its parameters and its model files."""
    params = {k: v for k, v in op.params().items() if k not in KNOB_FIELDS}
    models = sorted(file_sha256(path) for path in op.model_files())
    return _digest({"params": params, "models": models})


def chain_identity(ops: Sequence[Op]) -> str:
    """`op_identity` of a pipeline's first op (whose knobs the planner turns), with the other ops'
    parameters and models when there are any."""
    first = op_identity(ops[0])
    if len(ops) == 1:
        return first
    rest = [{"params": op.params(), "models": sorted(file_sha256(p) for p in op.model_files())} for op in ops[1:]]
    return _digest({"first": first, "rest": rest})


def encode_identity(encode: EncodeOptions) -> str:
    """A hash of the encoder settings (threads aside: workers get their share of the cores)."""
    return _digest({k: v for k, v in asdict(encode).items() if k != "threads"})


def knob_grid(op: Op, width: int, height: int, cpus: int) -> list[Knobs]:
    """The knob settings worth planning with for frames of this size on a machine with `cpus` cores."""
    sizes = _max_sizes(op, width, height)
    batches = [op.batch_size, *sorted(set(_knob_values(op, "batch_size", ())) - {op.batch_size})]  # own first: ties keep it
    threads = [t for t in THREADS if t <= cpus]
    return [Knobs(max_size=m, batch_size=b, threads=t) for m in sizes for b in batches for t in threads]


def video_key(video: VideoWork) -> str:
    return f"{video.codec}|{video.width}x{video.height}"


@dataclass
class Profiled:
    """What `profile_pipeline` did: the keys it measured, and the videos it could not sample (each with why)."""

    measured: list[str] = field(default_factory=list)
    unsampled: list[str] = field(default_factory=list)
    """Each video that could not be sampled: why, and what stands for it."""
    covered: list[str] = field(default_factory=list)
    """The keys of the resolutions profiled, measured now or found in the cache."""


def profile_pipeline(
    workload: Workload,
    pipeline: Pipeline,
    store: ProfileStore,
    *,
    frames: int = DEFAULT_FRAMES,
    refresh: bool = False,
    fixed: Mapping[str, Any] | None = None,
    say: Callable[[str], None] = log.info,
) -> Profiled:
    """Measure `pipeline` on this machine for the workload's most common resolutions (cached: only what is
    missing is measured, everything with `refresh`). `fixed` pins knobs (max_size, batch_size, threads):
    only those settings are measured. A video that cannot be sampled is replaced by a sibling at the same
    resolution (same codec first); when none can be, that resolution is left to the nearest measured one and
    the video is listed in `unsampled`. Each resolution is saved as soon as it is measured."""
    if frames < 4:
        raise OptionError(f"--sample-frames must be at least 4, got {frames}")
    op = pipeline.ops[0]
    ids = chain_identity(pipeline.ops), encode_identity(pipeline.encode)
    done = Profiled()
    if refresh or store.get(store.machine.name, "worker_start") is None:
        say("measuring worker start-up")
        store.put("worker_start", _worker_start_seconds())
        done.measured.append("worker_start")
    for (width, height), _ in workload.resolutions()[:RESOLUTIONS_PROFILED]:
        siblings = [video for video in workload.videos if video.resolution == (width, height)]
        base = _base_knobs(op, width, height, fixed or {})
        keys = {video.uri: _run_prefix(ids, video, op.resolve_device()) for video in siblings}
        cached = [key for key in keys.values() if not refresh and store.get(store.machine.name, key) is not None
                  and _covers(store.get(store.machine.name, key), op, width, height, base, fixed or {})]
        if cached:  # a sibling's profile stands for the size, whichever sibling made it
            done.covered.append(cached[0])
            continue
        reasons = []
        for video in _same_codec_first(siblings):
            key = keys[video.uri]
            say(f"profiling {width}x{height} {video.codec} on {store.machine.name} ({frames} frames per setting)")
            try:
                entry = _profile_resolution(video, pipeline, store.machine.cpus, frames, base, fixed or {}, say)
            except (CorruptVideoError, NotAVideoError, TooShortToSample) as exc:
                say(f"  cannot sample it: {exc}")
                reasons.append(str(exc) if video.uri in str(exc) else f"{video.uri}: {exc}")
                continue
            store.put(key, entry)
            store.save()
            done.measured.append(key)
            done.covered.append(key)
            done.unsampled += [f"{reason}; profiled from {video.uri}, a video of its size" for reason in reasons]
            break
        else:
            done.unsampled += [f"{reason}; planned from the nearest size profiled" for reason in reasons]
    store.save()
    return done


def _same_codec_first(videos: Sequence[VideoWork]) -> list[VideoWork]:
    """Videos of one resolution, the first one's codec first (its siblings of the same class)."""
    return sorted(videos, key=lambda video: video.codec != videos[0].codec) if videos else []


def _base_knobs(op: Op, width: int, height: int, fixed: Mapping[str, Any]) -> Knobs:
    """The setting every other is measured against: full size, the op's batch, one thread; or the fixed ones."""
    size = fixed.get("max_size")
    return Knobs(max_size=size if size is not None and size < max(width, height) else None,
                 batch_size=fixed.get("batch_size") or op.batch_size, threads=fixed.get("threads") or 1)


def run_cost(store: ProfileStore, machine: str, pipeline: Pipeline, video: VideoWork, knobs: Knobs) -> RunCost | None:
    """What `knobs` cost for `video` on `machine`, from its profile: measured at this resolution, else
    scaled by pixels from the nearest measured one; None when the machine has no profile for this op.
    The device is the op's (`auto`: CUDA where that machine's profile has it, else the CPU)."""
    op = pipeline.ops[0]
    ids = chain_identity(pipeline.ops), encode_identity(pipeline.encode)
    entries = store.entries(machine)
    prefix = _op_prefix(ids)
    found: list[tuple[str, dict[str, Any]]] = []
    for device in ("cuda", "cpu") if op.device == "auto" else (op.device,):
        found = [(key, value) for key, value in entries.items() if key.startswith(prefix) and value["device"] == device]
        if found:
            break
    if not found:
        return None
    exact = [value for key, value in found if key.split("|")[3:5] == video_key(video).split("|")]
    measured = bool(exact)
    if exact:
        entry, scale = exact[0], 1.0
    else:
        pixels = video.width * video.height
        entry = min((value for _, value in found), key=lambda v: abs(math.log(v["pixels"] / pixels)))
        scale = pixels / entry["pixels"]
    return _cost_from_entry(entry, knobs, scale, measured, pipeline.temporal)


# -- measuring ---------------------------------------------------------------------------------------


def _profile_resolution(video: VideoWork, pipeline: Pipeline, cpus: int, frames: int, base: Knobs,
                        fixed: Mapping[str, Any], say: Callable[[str], None]) -> dict[str, Any]:
    """Every measurement for one resolution (see the module docstring), knobs in `fixed` held at `base`'s
    value; a JSON-ready entry."""
    op = pipeline.ops[0]
    source = InputOpener().open(video.uri)
    chunks = stretches(source, frames)
    sizes = [base.max_size] if "max_size" in fixed else _max_sizes(op, video.width, video.height)
    with tempfile.TemporaryDirectory(prefix="framefleet-profile-") as scratch:
        out = Path(scratch)

        def run(knobs: Knobs, length: str) -> dict[str, float]:
            return _timed_run(pipeline, knobs, video.uri, chunks, length, out)

        setup_started = time.perf_counter()
        with closing(_worker(pipeline, base)):
            setup_seconds = time.perf_counter() - setup_started
        short, long = run(base, "short"), run(base, "long")
        extra = max(1, long["frames"] - short["frames"])
        fixed_cost = {k: max(0.0, short[k] - (long[k] - short[k]) / extra * short["frames"]) / len(chunks)
                      for k in ("cpu", "wall")}
        settings: dict[str, dict[str, float]] = {}
        for size in sizes:
            knobs = replace(base, max_size=size)
            settings[f"max_size={size}"] = _per_frame(long if size == base.max_size else run(knobs, "long"),
                                                      fixed_cost, len(chunks))
            say(f"  {knobs.label()}: {settings[f'max_size={size}']['wall']:.3f} s/frame")
        reference = settings[f"max_size={base.max_size}"]
        ratios: dict[str, dict[str, float]] = {}
        varied = [] if "batch_size" in fixed else [
            replace(base, batch_size=b) for b in _knob_values(op, "batch_size", ()) if b != base.batch_size]
        varied += [] if "threads" in fixed else [replace(base, threads=t) for t in THREADS[1:] if t <= cpus]
        for knobs in varied:
            cost = _per_frame(run(knobs, "long"), fixed_cost, len(chunks))
            key = f"threads={knobs.threads}" if knobs.threads != base.threads else f"batch_size={knobs.batch_size}"
            ratios[key] = {"cpu": cost["cpu"] / reference["cpu"], "wall": cost["wall"] / reference["wall"]}
            say(f"  {knobs.label()}: {cost['wall']:.3f} s/frame")
        # a GPU pipeline runs one worker per GPU (as `run` does), not one CUDA session per core
        workers = (max(1, len(gpu_names())) if any(o.resources.gpus for o in pipeline.ops)
                   else max(1, cpus // base.threads))
        if workers > 1:
            node_fps = _all_cores_fps(pipeline, base, video.uri, stretches(source, ALL_CORES_FRAMES * frames), workers)
        else:
            node_fps = 1.0 / reference["wall"]
        say(f"  all {workers} workers: {node_fps:.2f} fps")
        try:
            join_seconds = _join_seconds(pipeline, video.uri, chunks[0], out)
        except CorruptVideoError as exc:  # no second keyframe to start a segment at: `run` never splits it
            log.info("%s: no join measured (%s)", video.uri, exc)
            join_seconds = 0.0
        quality = {f"max_size={size}": psnr for size, psnr in _quality(op, source, sizes, min(frames, 4)).items()}
        temporal = _temporal_costs(pipeline, source, min(frames, TEMPORAL_FRAMES))
        say("  temporal step: " + ", ".join(f"{mode} {cost['wall']:.4f} s/frame" for mode, cost in temporal.items()))
    return {
        "pixels": video.width * video.height,
        "largest_side": max(video.width, video.height),
        "device": op.resolve_device(),
        "frames_per_run": long["frames"],
        "base_batch_size": base.batch_size,
        "setup_seconds": setup_seconds,
        "base_max_size": base.max_size,
        "base_threads": base.threads,
        "task_seconds": fixed_cost["wall"],
        "join_seconds": join_seconds,
        "settings": settings,
        "ratios": ratios,
        "node_fps": node_fps,
        "temporal": temporal,
        "quality_psnr": quality,
        "measured_at": time.time(),
        "framefleet": __version__,
    }


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


def _timed_run(pipeline: Pipeline, knobs: Knobs, uri: str, chunks: list[Stretch], length: str,
               scratch: Path) -> dict[str, float]:
    """A worker's tasks over each chunk's `length` ("short" or "long") of frames, after a warm-up task:
    wall and CPU seconds, frames and stage times, summed over the chunks."""
    totals = dict.fromkeys(("frames", "cpu", "wall", "decode", "ops", "encode"), 0.0)
    with closing(_worker(pipeline, knobs)) as worker:
        worker.run(_segment(uri, scratch, 0, chunks[0].start, chunks[0].warm))
        for chunk in chunks:
            cpu0, wall0 = time.process_time(), time.perf_counter()
            metrics = worker.run(_segment(uri, scratch, 0, chunk.start, getattr(chunk, length))).metrics
            totals["cpu"] += time.process_time() - cpu0
            totals["wall"] += time.perf_counter() - wall0
            totals["frames"] += metrics.frames
            totals["decode"] += metrics.decode_s
            totals["ops"] += metrics.ops_s
            totals["encode"] += metrics.encode_s
    return totals


def _per_frame(result: dict[str, float], fixed: dict[str, float], tasks: int) -> dict[str, float]:
    """Per-frame costs of a run over `tasks` chunks, less the fixed cost of each."""
    frames = max(1, result["frames"])
    ops = result["ops"] / frames  # the op runs in one session: a frame takes at least its op time
    return {"cpu": max(ops, (result["cpu"] - fixed["cpu"] * tasks) / frames),
            "wall": max(ops, (result["wall"] - fixed["wall"] * tasks) / frames),
            **{stage: result[stage] / frames for stage in ("decode", "ops", "encode")}}


def _all_cores_fps(pipeline: Pipeline, knobs: Knobs, uri: str, chunks: list[Stretch], cpus: int) -> float:
    """Frames per second of `cpus` worker processes running the same frames together: each runs a short
    and a long run, started together, and the difference (extra frames over extra seconds) leaves out
    the fixed cost of a task, as for one worker."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(cpus)
    results = context.Queue()
    workers = [context.Process(target=_concurrent_worker, args=(pipeline, knobs, uri, chunks, barrier, results))
               for _ in range(cpus)]
    for worker in workers:
        worker.start()
    timings: list[tuple[int, float] | str] = []
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
    return sum(frames / seconds for frames, seconds in timings)


def _concurrent_worker(pipeline: Pipeline, knobs: Knobs, uri: str, chunks: list[Stretch], barrier,
                       results) -> None:
    """One of `_all_cores_fps`'s processes: puts (extra frames, extra seconds) of its long runs over its
    short ones, or the error that stopped it."""
    try:
        with tempfile.TemporaryDirectory(prefix="framefleet-profile-") as scratch:
            timed = []
            for length in ("short", "long"):
                barrier.wait(timeout=300)
                timed.append(_timed_run(pipeline, knobs, uri, chunks, length, Path(scratch)))
            short, long = timed
            results.put((long["frames"] - short["frames"], max(1e-6, long["wall"] - short["wall"])))
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


def _worker_start_seconds() -> float:
    """Seconds for a fresh interpreter to import what a worker imports (the model set-up is apart)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import framefleet.jobs.task, framefleet.engines.local, onnxruntime"],
                   check=True, capture_output=True)
    return time.perf_counter() - started


# -- costs from a profile ----------------------------------------------------------------------------


def _cost_from_entry(entry: dict[str, Any], knobs: Knobs, scale: float, measured: bool,
                     temporal: str = "none") -> RunCost | None:
    """The cost of `knobs` from a profile entry (None when a setting was not measured), with the `temporal`
    mode's step added to each frame; `scale` is the ratio of pixels when the entry is of another
    resolution."""
    size = knobs.max_size
    if size is not None and size >= entry["largest_side"]:
        size = None  # no smaller than the frame: the op runs at full size
    setting = entry["settings"].get(f"max_size={size}")
    if setting is None:
        return None
    cpu_ratio = wall_ratio = 1.0
    for name, value, base in (("batch_size", knobs.batch_size, entry["base_batch_size"]),
                              ("threads", knobs.threads, entry.get("base_threads", 1))):
        if value == base:
            continue
        ratio = entry["ratios"].get(f"{name}={value}")
        if ratio is None:
            return None
        cpu_ratio *= _beyond_noise(ratio["cpu"])
        wall_ratio *= _beyond_noise(ratio["wall"])
    step = {"cpu": 0.0, "wall": 0.0} if temporal == "none" else entry.get("temporal", {}).get(temporal)
    if step is None:
        return None
    reference = entry["settings"][f"max_size={entry.get('base_max_size')}"]  # what node_fps was measured at
    cpu, wall = setting["cpu"] * cpu_ratio + step["cpu"], setting["wall"] * wall_ratio + step["wall"]
    # all cores busy: the node's measured rate, scaled by how much less (or more) each frame costs; on a
    # GPU the device's time per frame sets the pace, on a CPU the CPU time
    per_frame, reference_per_frame = (wall, reference["wall"]) if entry["device"] == "cuda" else (cpu, reference["cpu"])
    node_fps = entry["node_fps"] * reference_per_frame / per_frame / scale
    return RunCost(cpu_per_frame=cpu * scale, wall_per_frame=wall * scale, task_seconds=entry["task_seconds"],
                   setup_seconds=entry["setup_seconds"], join_seconds=entry["join_seconds"],
                   node_fps=node_fps, decode_per_frame=setting["decode"] * scale,
                   ops_per_frame=setting["ops"] * scale * wall_ratio, encode_per_frame=setting["encode"] * scale,
                   quality_psnr=entry["quality_psnr"].get(f"max_size={size}"), device=entry["device"],
                   measured=measured, temporal_per_frame=step["cpu"] * scale)


def _beyond_noise(ratio: float) -> float:
    """A knob's measured effect, or none when it is within the noise of short runs (`NOISE`): a batch
    size that is 5% faster in a dozen frames is as likely luck, and choosing by luck biases the plan."""
    return 1.0 if abs(ratio - 1.0) < NOISE else ratio


# -- helpers -----------------------------------------------------------------------------------------


def op_with_knobs(op: Op, knobs: Knobs) -> Op:
    """A copy of `op` with the knob fields it has set to `knobs`."""
    values: dict[str, Any] = {"batch_size": knobs.batch_size}
    if hasattr(op, "max_size"):
        values["max_size"] = knobs.max_size
    return replace(op, **values)


def _covers(entry: dict[str, Any], op: Op, width: int, height: int, base: Knobs, fixed: Mapping[str, Any]) -> bool:
    """Whether a cached entry holds every setting a plan for `op` at this size needs (with `fixed` knobs:
    those settings only)."""
    wanted = [base.max_size] if "max_size" in fixed else _max_sizes(op, width, height)
    sizes = {f"max_size={size}" for size in wanted}
    if not sizes <= set(entry["settings"]):
        return False
    base_threads = entry.get("base_threads", 1)
    if "threads" in fixed:
        threads = base.threads == base_threads or f"threads={base.threads}" in entry["ratios"]
    else:
        threads = base_threads == 1  # a profile made with threads fixed measured no other
    batch = base.batch_size == entry["base_batch_size"] or f"batch_size={base.batch_size}" in entry["ratios"]
    return threads and batch


def _max_sizes(op: Op, width: int, height: int) -> list[int | None]:
    """Inference sizes worth trying: full size, and the op's `max_size` values below the frame's side."""
    if not hasattr(op, "max_size"):
        return [None]
    values = [*_knob_values(op, "max_size", (None,)), op.max_size]  # the pipeline's own setting too
    return [None, *sorted({v for v in values if v is not None and v < max(width, height)}, reverse=True)]


def _knob_values(op: Op, name: str, default: tuple[Any, ...]) -> list[Any]:
    for knob in op.knobs:
        if knob.name == name:
            return list(knob.values)
    return list(default)


def _run_prefix(ids: tuple[str, str], video: VideoWork, device: str) -> str:
    return f"{_op_prefix(ids)}{video_key(video)}|{device}"


def _op_prefix(ids: tuple[str, str]) -> str:
    return f"run|{ids[0]}|{ids[1]}|"


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "machine"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


