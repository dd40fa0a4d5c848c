"""How a job runs, as plain data: the engine and its options, Ray's resources, retry rules, input limits,
remote reads, and the keys under which a job's ledger keeps its settings.

This module imports nothing heavy (no PyAV, no model runtime, no scheduler), so a spec can be built, stored
and read anywhere: the CLI, the service, a plan, a program. `JobSpec` (`framefleet.jobs.spec`) puts these
settings beside the inputs, the output and the pipeline.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from framefleet.errors import LimitError, OptionError

Engine = Literal["local", "ray", "inline"]
ENGINES: tuple[str, ...] = get_args(Engine)
ReadMode = Literal["auto", "range", "spool"]
READ_MODES: tuple[str, ...] = get_args(ReadMode)
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
"""x264's presets, fastest first: what `--preset` takes (here, for the command line's help, without PyAV)."""
DEFAULT_SAMPLE = 40
"""Videos a plan probes at most, chosen at random, to size the job (`--sample`)."""
DEFAULT_FRAMES = 24
"""Frames per profiling run, at most (`--sample-frames`): a job's budget may choose fewer."""
DEFAULT_SIDE = 480
"""`framefleet flicker` compares frames scaled so that their longest side is at most this (`--side`)."""
DEFAULT_CACHE_BYTES = 8 << 30
"""The spool cache's default size limit (8 GiB)."""
RUN_SETTINGS_KEY = "run_settings"
"""The ledger setting under which `run` keeps the `RunSettings` of the job's latest run."""
PREDICTION_KEY = "prediction"
"""The ledger setting under which `run` keeps what a plan predicted."""
SEGMENTING_KEY = "segmenting"
"""The ledger setting under which `run` keeps the segment length it chose for a preemption notice."""
_RENAMED = {"retry": "limits"}
"""Parts of stored settings under the name an earlier framefleet gave them."""


@dataclass(frozen=True)
class EngineOptions:
    """How an engine runs a job."""

    workers: int | None = None
    """Workers; default: one per core on this machine (local), one per worker slot of the cluster (Ray)."""
    threads_per_worker: int | None = None
    """Op threads in each worker; default: the cores divided among the local workers, or the CPUs of a Ray worker."""
    hang_timeout: float = 300.0
    """Seconds without progress before a worker is declared hung."""
    task_timeout: float | None = None
    """Seconds a task may run in all (None: no limit)."""
    stall_timeout: float = 900.0
    """Seconds without any event while work is pending before the job stops with an error."""
    grace_seconds: float = 30.0
    """After a stop request, how long running tasks may take to finish."""
    poll_seconds: float = 0.5
    """Seconds between looks at the ledger while no worker reports anything (at most 1 s when standing)."""
    idle_seconds: float = 60.0
    """A standing run stops its workers after this many seconds with no work, and starts them again when
    work appears (a quiet service holds no worker processes)."""
    worker_network: str = "auto"
    """Whether local workers keep network access: "off" cuts it (`processing.limits.cut_network`, where the platform
    allows), "on" keeps it, "auto" cuts it when nothing needs it (built-in ops, local inputs and outputs)."""


@dataclass(frozen=True)
class RayOptions:
    """Where the Ray cluster is and what each worker asks of it."""

    address: str | None = None
    """The cluster: "auto" (a running cluster this machine belongs to), "ray://HOST:10001" (Ray Client), or
    None to start a private local cluster for this job."""
    cpus_per_worker: float | None = None
    """CPUs each worker (actor) reserves; default: what the op declares."""
    gpus_per_worker: float | None = None
    """GPUs each worker reserves (fractions share a GPU, e.g. 0.25); default: what the op declares."""
    object_store_memory: int | None = None
    """Bytes of object store for a private local cluster (only small results travel through it)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Retry rules."""

    max_attempts: int = 3
    """Input failures a task may have before its item fails."""
    max_crashes: int = 3
    """Worker crashes or hangs a task may cause before its item fails as poison."""
    backoff_seconds: float = 1.0
    """Delay before retry n is backoff_seconds x 2^(n-1)."""


@dataclass(frozen=True)
class InputLimits:
    """What one input may claim or cost. The defaults admit any real camera, phone or broadcast file
    (8K, days long, dozens of tracks) and refuse what only a crafted file claims."""

    max_pixels: int = 8192 * 8192
    """Width x height of a frame, as the header claims it or as decoded."""
    max_side: int = 16384
    """Width or height of a frame."""
    max_frames: int = 50_000_000
    """Frames the header claims (or its duration times its frame rate): 23 days at 25 fps."""
    max_seconds: float = 7 * 24 * 3600.0
    """Duration the header claims."""
    max_streams: int = 256
    """Streams in the container."""
    max_decode_errors: int = 1000
    """Packets the decoder may reject before decoding stops (a stream of noise is not worth reading on)."""
    memory_mb: int | None = 16384
    """A job worker's address-space cap in MiB (Linux; None: none). It covers the worker's model too."""

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if value is None and item.name == "memory_mb":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise OptionError(f"limit {item.name} must be a positive number, got {value!r}")

    @classmethod
    def from_options(cls, values: dict[str, Any] | None) -> InputLimits:
        """From a pipeline file's `limits:` mapping or `--limit KEY=VALUE` flags; unknown keys are errors."""
        values = dict(values or {})
        known = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise OptionError(f"unknown limit {unknown[0]!r}; limits are {', '.join(sorted(known))}")
        return cls(**values)

    def changed(self) -> dict[str, Any]:
        """The limits that differ from the defaults (what a job stores)."""
        default = InputLimits()
        return {item.name: getattr(self, item.name) for item in dataclasses.fields(self)
                if getattr(self, item.name) != getattr(default, item.name)}

    def check_frame_size(self, source: object, width: int, height: int) -> None:
        """Refuse a frame of width x height (claimed or decoded) above the limits."""
        if width <= 0 or height <= 0:
            return  # unknown until decoded
        if max(width, height) > self.max_side or width * height > self.max_pixels:
            raise LimitError("pixels", f"{source}: limit:pixels: its video is {width}x{height} "
                             f"({width * height / 1e6:.0f} Mpx), above the limit of {self.max_side} px a side "
                             f"and {self.max_pixels / 1e6:.0f} Mpx (limit max_pixels, max_side)")

    def check_header(self, source: object, *, streams: int, width: int, height: int, frames: int | None,
                     seconds: float | None) -> None:
        """Refuse what a container's header claims beyond the limits."""
        if streams > self.max_streams:
            raise LimitError("streams", f"{source}: limit:streams: it has {streams} streams, above the limit "
                             f"of {self.max_streams} (limit max_streams)")
        self.check_frame_size(source, width, height)
        if frames is not None and frames > self.max_frames:
            raise LimitError("frames", f"{source}: limit:frames: it claims {frames} frames, above the limit "
                             f"of {self.max_frames} (limit max_frames)")
        if seconds is not None and seconds > self.max_seconds:
            raise LimitError("duration", f"{source}: limit:duration: it claims {seconds:.0f} s, above the "
                             f"limit of {self.max_seconds:.0f} s (limit max_seconds)")

    def check_decode_errors(self, source: object, errors: int) -> None:
        """Stop decoding after too many rejected packets."""
        if errors > self.max_decode_errors:
            raise LimitError("decode-errors", f"{source}: limit:decode-errors: the decoder rejected "
                             f"{errors} packets, above the limit of {self.max_decode_errors} "
                             "(limit max_decode_errors)")


@dataclass(frozen=True)
class InputAccess:
    """How workers read remote inputs."""

    mode: ReadMode = "auto"
    cache_dir: str | None = None
    """Where spooled copies go (default: a folder under the system's temporary directory)."""
    cache_bytes: int = DEFAULT_CACHE_BYTES
    """The spool cache's size limit; the least recently used copies are evicted beyond it."""

    def __post_init__(self) -> None:
        if self.mode not in READ_MODES:
            raise OptionError(f"--remote-read must be one of {', '.join(READ_MODES)}, got {self.mode!r}")
        if self.cache_bytes < 0:
            raise OptionError(f"the spool cache size must not be negative, got {self.cache_bytes}")


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """How a job runs: the engine and its options, retry limits, Ray's resources, remote reads."""

    engine: Engine = "local"
    """local (worker processes here), ray (actors on a Ray cluster) or inline (threads of this process)."""
    options: EngineOptions = field(default_factory=EngineOptions)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    ray: RayOptions = field(default_factory=RayOptions)
    input_access: InputAccess = field(default_factory=InputAccess)
    parts_dir: str | None = None
    """Where segments wait for their join (default: the job directory); a job keeps the one of its first run."""
    preemption_notice: float | None = None
    """Seconds of warning the machines get before they are taken away (spot / preemptible): `run` cuts
    videos into segments whose p90 time fits in the notice / 1.5 (`framefleet.plan.segmenting`)."""

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise OptionError(f"--engine must be {', '.join(ENGINES[:-1])} or {ENGINES[-1]}, got {self.engine!r}")
        notice = self.preemption_notice
        if notice is not None and (isinstance(notice, bool) or not isinstance(notice, (int, float)) or not notice > 0):
            raise OptionError(f"--preemption-notice must be a positive number of seconds, got {notice!r}")

    def given(self, **flags: Any) -> RunSettings:
        """These settings with the flags that are not None over them. Flags (`RUN_FLAG_NAMES`): `engine`,
        `parts_dir`, any field of `EngineOptions` (`workers`, `hang_timeout`, ...), `max_attempts`,
        `ray_address`, `cpus_per_worker`, `gpus_per_worker` and `remote_read`."""
        top: dict[str, Any] = {}
        parts: dict[str, dict[str, Any]] = {}
        for key, value in flags.items():
            if key not in _FLAG_PLACES:
                raise TypeError(f"no run setting {key!r}")
            if value is None:
                continue
            part, name = _FLAG_PLACES[key]
            _check_type(key, value, _FIELD_TYPES[part or ""][name])
            if part is None:
                top[name] = value
            else:
                parts.setdefault(part, {})[name] = value
        return dataclasses.replace(self, **top, **{part: dataclasses.replace(getattr(self, part), **values)
                                                   for part, values in parts.items()})

    def to_json(self) -> str:
        """The settings as the job's ledger stores them."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunSettings:
        """Settings a job stored; keys a later or earlier framefleet does not know are left out."""
        stored = json.loads(text)
        parts = {name: kind(**_known(kind, stored.get(name) or stored.get(_RENAMED.get(name, "")) or {}))
                 for name, kind in (("options", EngineOptions), ("retry", RetryPolicy), ("ray", RayOptions),
                                    ("input_access", InputAccess))}
        return cls(engine=stored.get("engine", "local"), parts_dir=stored.get("parts_dir"),
                   preemption_notice=stored.get("preemption_notice"), **parts)


def _field_names(kind: type) -> set[str]:
    return {item.name for item in dataclasses.fields(kind)}


def _known(kind: type, values: dict[str, Any]) -> dict[str, Any]:
    names = _field_names(kind)
    return {key: value for key, value in values.items() if key in names}


_FLAG_PLACES: dict[str, tuple[str | None, str]] = {
    "engine": (None, "engine"), "parts_dir": (None, "parts_dir"), "preemption_notice": (None, "preemption_notice"),
    **{name: ("options", name) for name in _field_names(EngineOptions)},
    "max_attempts": ("retry", "max_attempts"), "ray_address": ("ray", "address"),
    "cpus_per_worker": ("ray", "cpus_per_worker"), "gpus_per_worker": ("ray", "gpus_per_worker"),
    "remote_read": ("input_access", "mode"),
}
RUN_FLAG_NAMES: frozenset[str] = frozenset(_FLAG_PLACES)
"""The flat names `RunSettings.given` takes: the CLI's run flags, a service file's run keys."""
_FIELD_TYPES: dict[str, dict[str, str]] = {
    part: {item.name: str(item.type) for item in dataclasses.fields(kind)}
    for part, kind in (("", RunSettings), ("options", EngineOptions), ("retry", RetryPolicy), ("ray", RayOptions),
                       ("input_access", InputAccess))}
"""Each settings part's field types, as annotated: what `given` checks a flag's value against."""


def _check_type(key: str, value: Any, annotation: str) -> None:
    """A number where the field holds one (a service file may say `workers: two`; the CLI's flags are typed)."""
    numeric = "int" in annotation or "float" in annotation
    if numeric and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise OptionError(f"{key} must be a number, got {value!r}")
