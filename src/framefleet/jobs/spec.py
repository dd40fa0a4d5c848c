"""`JobSpec`: what a job does (inputs, output, pipeline) and how it runs (`RunSettings`), as one typed value.

The CLI builds one from its flags (or a plan's choice with the flags over it), the service from its
configuration, a program by hand; `framefleet.run` takes it whole. A run stores its settings in the job's
ledger (never credentials: storage options travel apart), so `framefleet retry` runs the job as it was
started, on the same engine, unless told otherwise; the service resumes and retries a submitted job with
its stored settings too (a watch job follows the service's configuration, where its rule lives).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from framefleet.engines.ray_options import RayOptions
from framefleet.engines.scheduler import EngineOptions
from framefleet.errors import OptionError
from framefleet.jobs.store import Limits
from framefleet.pipeline import Pipeline
from framefleet.files.remote_inputs import InputAccess

Engine = Literal["local", "ray", "inline"]
ENGINES: tuple[str, ...] = get_args(Engine)


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """How a job runs: the engine and its options, retry limits, Ray's resources, remote reads."""

    engine: Engine = "local"
    """local (worker processes here), ray (actors on a Ray cluster) or inline (threads of this process)."""
    options: EngineOptions = field(default_factory=EngineOptions)
    limits: Limits = field(default_factory=Limits)
    ray: RayOptions = field(default_factory=RayOptions)
    input_access: InputAccess = field(default_factory=InputAccess)
    parts_dir: str | None = None
    """Where segments wait for their join (default: the job directory); a job keeps the one of its first run."""

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise OptionError(f"--engine must be {', '.join(ENGINES[:-1])} or {ENGINES[-1]}, got {self.engine!r}")

    def given(self, **flags: Any) -> RunSettings:
        """These settings with the flags that are not None over them. Flags: `engine`, `parts_dir`, any
        field of `EngineOptions` (`workers`, `hang_timeout`, ...), `max_attempts`, `ray_address`,
        `cpus_per_worker`, `gpus_per_worker` and `remote_read`."""
        flags = {key: value for key, value in flags.items() if value is not None}
        renamed = {"max_attempts": ("limits", "max_attempts"), "ray_address": ("ray", "address"),
                   "cpus_per_worker": ("ray", "cpus_per_worker"), "gpus_per_worker": ("ray", "gpus_per_worker"),
                   "remote_read": ("input_access", "mode")}
        renamed.update({name: ("options", name) for name in _field_names(EngineOptions)})
        parts: dict[str, dict[str, Any]] = {}
        top = {key: flags.pop(key) for key in ("engine", "parts_dir") if key in flags}
        for key, value in flags.items():
            if key not in renamed:
                raise TypeError(f"no run setting {key!r}")
            part, name = renamed[key]
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
        parts = {name: kind(**_known(kind, stored.get(name) or {}))
                 for name, kind in (("options", EngineOptions), ("limits", Limits), ("ray", RayOptions),
                                    ("input_access", InputAccess))}
        return cls(engine=stored.get("engine", "local"), parts_dir=stored.get("parts_dir"), **parts)


@dataclass(frozen=True)
class JobSpec:
    """A whole job: every video named by `inputs` processed by `pipeline` into `output` (mirroring
    relative paths), run as `settings` say. Inputs: files, folders, globs, `@list.txt`, `-` (stdin),
    object-store URIs; the output root may be a store URI too."""

    inputs: Sequence[str]
    output: str
    pipeline: Pipeline = field(default_factory=lambda: Pipeline.from_options({}))
    settings: RunSettings = field(default_factory=RunSettings)

    def __post_init__(self) -> None:
        if isinstance(self.inputs, str):
            raise OptionError("inputs must be a list of paths or URIs, not one string")
        object.__setattr__(self, "output", str(self.output))


def _field_names(kind: type) -> set[str]:
    return {item.name for item in dataclasses.fields(kind)}


def _known(kind: type, values: dict[str, Any]) -> dict[str, Any]:
    names = _field_names(kind)
    return {key: value for key, value in values.items() if key in names}
