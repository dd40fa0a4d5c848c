"""Profiles: what a pipeline costs on a machine, measured on real frames of the job's own videos.

For each resolution of the workload (the most common few), `profile_pipeline` runs a real `Worker`, set
up as `run` sets one up, on segment tasks (decode, ops, encode) over frames from up to three places in a
video at that resolution (its first seconds are often unlike the rest), for each setting of the knobs:

- `max_size` (inference resolution) at every value the op offers below the frame's size, with the
  quality it costs measured as PSNR against full-resolution inference on the same frames;
- `batch_size` and `threads` (intra-op threads per worker), each varied alone at full resolution;
  their effect is applied as a ratio to the other settings (a factorized sweep: far fewer runs);
- a pilot first (a task of 2 and one of up to 10 frames), which tells the fixed cost of a task (open,
  probe, writer, flush) from the cost per frame and sizes the job: the rest samples as many frames per
  run as the job's budget allows (`framefleet.plan.budget`);
- all cores at once: as many worker processes as cores run the same frames together (the measuring is
  in `framefleet.plan.measure`), which measures
  the node's real throughput (cores contend for memory and caches); a pipeline on CUDA runs one worker
  per GPU instead, as `run` does;
- the start-up of a worker (a fresh interpreter, imports, the model's set-up) and the join of segments;
- what ran the models (runtime and precision, "style: openvino bf16"), per thread count, as the workers
  reported it: under `auto` the op's runtime profile chose it for this machine (`framefleet.plan.runtime_pins`);
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
import os
import platform
import re
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from framefleet.errors import CorruptVideoError, NotAVideoError, OptionError
from framefleet.files.temporary import write_text_atomically
from framefleet.ops import Op
from framefleet.pipeline import Pipeline, file_sha256
from framefleet.plan.budget import Pending, Sampling, choose_sampling, job_seconds
from framefleet.plan.knobs import Knobs, base_knobs, max_sizes, swept_knobs
from framefleet.plan.measure import Pilot, measure_resolution, node_workers, pilot, worker_start_seconds
from framefleet.plan.runtime_pins import entry_runtime
from framefleet.plan.stretches import TooShortToSample
from framefleet.plan.workload import VideoWork, Workload
from framefleet.processing.streaming import available_cores, gpu_names
from framefleet.settings import DEFAULT_FRAMES
from framefleet.util.cache import cache_dir
from framefleet.video import EncodeOptions

log = logging.getLogger(__name__)

KNOB_FIELDS = ("max_size", "batch_size", "device")
"""Op fields that are knobs: left out of the op's identity (each setting is its own measurement)."""
RESOLUTIONS_PROFILED = 3
PROFILE_FORMAT = 5
"""Bumped when entries change shape, or what they measured changed (5: OpenVINO's fixed-shape copies made
its models faster than format 4 recorded): profiles of another format are measured afresh."""
NOISE = 0.12
"""Relative differences between two short profiling runs smaller than this are taken as no difference."""


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
    runtime: str | None = None
    """What ran the models when this was measured, by step ("style: openvino bf16"); None: no op runs one."""


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
    sampling: Sampling | None = None
    """How much was sampled within the job's budget (None when nothing was measured)."""
    seconds: float = 0.0
    """What profiling took."""

    def describe(self) -> dict[str, Any]:
        """The profiling a plan reports: its seconds, and the sampling and budget when it measured."""
        return {"seconds": round(self.seconds, 1), **(self.sampling.to_dict() if self.sampling else {})}


@dataclass(frozen=True)
class _Size:
    """A resolution the cache lacks: the setting to measure against, its videos (same codec first) and keys."""

    resolution: tuple[int, int]
    base: Knobs
    videos: list[VideoWork]
    keys: dict[str, str]


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
    only those settings are measured. Each resolution's pilot comes first; with them the job is estimated
    and the sampling (at most `frames` frames per run) is fitted to its budget (`framefleet.plan.budget`).
    A video that cannot be sampled is replaced by a sibling at the same resolution (same codec first); when
    none can be, that resolution is left to the nearest measured one and the video is listed in
    `unsampled`. Each resolution is saved as soon as it is measured."""
    if frames < 4:
        raise OptionError(f"--sample-frames must be at least 4, got {frames}")
    started = time.perf_counter()
    op, fixed, cores = pipeline.ops[0], dict(fixed or {}), store.machine.cpus
    ids = chain_identity(pipeline.ops), encode_identity(pipeline.encode)
    done = Profiled()
    if refresh or store.get(store.machine.name, "worker_start") is None:
        say("measuring worker start-up")
        store.put("worker_start", worker_start_seconds())
        done.measured.append("worker_start")
    missing = []
    for (width, height), _ in workload.resolutions()[:RESOLUTIONS_PROFILED]:
        siblings = [video for video in workload.videos if video.resolution == (width, height)]
        base = base_knobs(op, width, height, fixed)
        keys = {video.uri: _run_prefix(ids, video, op.resolve_device()) for video in siblings}
        cached = [key for key in keys.values() if not refresh and store.get(store.machine.name, key) is not None
                  and _covers(store.get(store.machine.name, key), op, width, height, base, fixed)]
        if cached:  # a sibling's profile stands for the size, whichever sibling made it
            done.covered.append(cached[0])
        else:
            missing.append(_Size((width, height), base, _same_codec_first(siblings), keys))
    reasons: dict[tuple[int, int], list[str]] = {size.resolution: [] for size in missing}
    failed: set[str] = set()

    def cannot_sample(size: _Size, video: VideoWork, exc: Exception) -> None:
        say(f"  cannot sample it: {exc}")
        reasons[size.resolution].append(str(exc) if video.uri in str(exc) else f"{video.uri}: {exc}")
        failed.add(video.uri)

    pilots: dict[tuple[int, int], Pilot] = {}
    for size in missing:
        for video in size.videos:
            say(f"piloting {size.resolution[0]}x{size.resolution[1]} {video.codec} on {store.machine.name}")
            try:
                pilots[size.resolution] = pilot(video, pipeline, size.base, frames)
                break
            except (CorruptVideoError, NotAVideoError, TooShortToSample) as exc:
                cannot_sample(size, video, exc)
    sampling = None
    if pilots:
        job = job_seconds(workload, pilots, cores, node_workers(pipeline, cores, Knobs(threads=fixed.get("threads") or 1)))
        pending = [Pending(pilot=pilots[size.resolution],
                           runs=1 if "max_size" in fixed else len(max_sizes(op, *size.resolution)),
                           swept=len(swept_knobs(op, size.base, fixed, cores)),
                           workers=node_workers(pipeline, cores, size.base),
                           worker_start=store.get(store.machine.name, "worker_start") or 0.0)
                   for size in missing if size.resolution in pilots]
        sampling = done.sampling = choose_sampling(pending, job, time.perf_counter() - started, frames)
        say(sampling.describe())
    for size in missing:
        first = pilots.get(size.resolution)
        for video in [video for video in size.videos if video.uri not in failed] if sampling and first else []:
            say(f"profiling {size.resolution[0]}x{size.resolution[1]} {video.codec} on {store.machine.name} "
                f"({sampling.frames} frames per setting)")
            swept = swept_knobs(op, size.base, fixed, cores) if sampling.sweep else []
            try:
                own = first if video.uri == first.uri else pilot(video, pipeline, size.base, frames)
                entry = measure_resolution(video, pipeline, cores, sampling.frames, size.base, fixed, swept, own, say)
            except (CorruptVideoError, NotAVideoError, TooShortToSample) as exc:
                cannot_sample(size, video, exc)
                continue
            store.put(size.keys[video.uri], entry)
            store.save()
            done.measured.append(size.keys[video.uri])
            done.covered.append(size.keys[video.uri])
            done.unsampled += [f"{reason}; profiled from {video.uri}, a video of its size"
                               for reason in reasons[size.resolution]]
            break
        else:
            done.unsampled += [f"{reason}; planned from the nearest size profiled" for reason in reasons[size.resolution]]
    store.save()
    done.seconds = time.perf_counter() - started
    return done


def _same_codec_first(videos: Sequence[VideoWork]) -> list[VideoWork]:
    """Videos of one resolution, the first one's codec first (its siblings of the same class)."""
    return sorted(videos, key=lambda video: video.codec != videos[0].codec) if videos else []


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
                   measured=measured, temporal_per_frame=step["cpu"] * scale,
                   runtime=entry_runtime(entry, knobs.threads))


def _beyond_noise(ratio: float) -> float:
    """A knob's measured effect, or none when it is within the noise of short runs (`NOISE`): a batch
    size that is 5% faster in a dozen frames is as likely luck, and choosing by luck biases the plan."""
    return 1.0 if abs(ratio - 1.0) < NOISE else ratio


# -- helpers -----------------------------------------------------------------------------------------


def _covers(entry: dict[str, Any], op: Op, width: int, height: int, base: Knobs, fixed: Mapping[str, Any]) -> bool:
    """Whether a cached entry holds every setting a plan for `op` at this size needs (with `fixed` knobs:
    those settings only)."""
    wanted = [base.max_size] if "max_size" in fixed else max_sizes(op, width, height)
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


