"""The service's configuration: watch rules, allowed storage prefixes, engine, and where state lives.

A YAML file (`framefleet serve --config service.yaml`) may hold several watch rules:

    state_dir: /var/lib/framefleet      # registry and job ledgers (default ~/.local/state/framefleet)
    allow: [az://media/incoming, az://media/stylized]   # what HTTP submissions may read and write
    ops: [mycompany.ops:Detector]       # user ops HTTP submissions may name (built-in ops always)
    engine: local                       # or ray, with ray_address: auto; any run flag's name
    workers: 2                          # per job (max_attempts, hang_timeout, ... as `framefleet run`)
    max_jobs: 2                         # submitted jobs that run at once (watch jobs always run)
    watch:
      - name: uploads
        source: az://media/incoming
        output: az://media/stylized
        interval: 10
        pipeline: {style: 7, max_size: 720}
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from framefleet.errors import FramefleetError, OptionError
from framefleet.files import storage
from framefleet.pipeline import Pipeline, read_pipeline_file
from framefleet.service.watcher import WatchRule
from framefleet.settings import RUN_FLAG_NAMES, RunSettings
from framefleet.util.yaml_files import read_yaml_mapping

_RULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_CONFIG_KEYS = {"state_dir", "allow", "ops", "max_jobs", "watch"} | RUN_FLAG_NAMES
_FILE_OPTIONS = ("model", "style_image")
"""Op options that name a file the service would read: submissions must keep them inside `allow`."""
_RULE_KEYS = {"name", "source", "output", "interval", "pipeline"}


class ForbiddenLocationError(FramefleetError):
    """A submission names a location outside the service's allowed prefixes, or an op it does not run."""


def default_state_dir() -> Path:
    """`$XDG_STATE_HOME/framefleet` (default `~/.local/state/framefleet`)."""
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "framefleet"


@dataclass(frozen=True)
class ServiceConfig:
    """Everything `framefleet serve` runs with."""

    state_dir: Path = field(default_factory=default_state_dir)
    watch: tuple[WatchRule, ...] = ()
    allow: tuple[str, ...] = ()
    """Storage prefixes (folders, store URIs) that HTTP submissions may read from and write to."""
    ops: tuple[str, ...] = ()
    """User ops (`module:Class`) HTTP submissions may name; importing a module runs its code, so no other."""
    max_jobs: int = 2
    """Submitted jobs that run at the same time; the others wait, queued."""
    run: RunSettings = field(default_factory=RunSettings)
    """How the service runs each of its jobs (engine local or ray, workers per job, retries, ...): in a
    service file, the run flags' names at the top level (`engine: ray`, `workers: 2`, `ray_address: auto`)."""

    def __post_init__(self) -> None:
        if self.run.engine not in ("local", "ray"):
            raise OptionError(f"engine must be local or ray, got {self.run.engine!r}")
        if self.max_jobs < 1:
            raise OptionError(f"max_jobs must be at least 1, got {self.max_jobs}")
        names = [rule.name for rule in self.watch]
        if len(set(names)) != len(names):
            raise OptionError(f"watch rule names must be unique, got {', '.join(names)}")
        object.__setattr__(self, "allow", tuple(storage.canonical_uri(p) for p in self.allow))
        object.__setattr__(self, "state_dir", Path(self.state_dir).expanduser())

    @classmethod
    def from_yaml(cls, path: str | Path) -> ServiceConfig:
        """Read a service file (see the module's docstring)."""
        data = read_yaml_mapping(path, "--config")
        unknown = set(data) - _CONFIG_KEYS
        if unknown:
            raise OptionError(f"--config {path}: unknown key(s) {', '.join(sorted(unknown))}; "
                              f"known: {', '.join(sorted(_CONFIG_KEYS))}")
        rules = [watch_rule(entry, source=f"--config {path}") for entry in data.pop("watch", None) or []]
        for key in ("allow", "ops"):
            if key in data:
                data[key] = tuple(data[key])
        try:
            run = RunSettings().given(**{key: data.pop(key) for key in RUN_FLAG_NAMES & set(data)})
            return cls(watch=tuple(rules), run=run, **data)
        except TypeError as exc:
            raise OptionError(f"--config {path}: {exc}") from None


def watch_rule(entry: Any, *, source: str) -> WatchRule:
    """A watch rule from its YAML mapping, checked (name, paths, interval, pipeline options)."""
    if not isinstance(entry, dict):
        raise OptionError(f"{source}: each watch rule is a mapping with source and output")
    unknown = set(entry) - _RULE_KEYS
    if unknown:
        raise OptionError(f"{source}: unknown watch key(s) {', '.join(sorted(unknown))}; "
                          f"known: {', '.join(sorted(_RULE_KEYS))}")
    if not entry.get("source") or not entry.get("output"):
        raise OptionError(f"{source}: a watch rule needs a source and an output")
    name = str(entry.get("name") or "watch")
    if not _RULE_NAME.match(name):
        raise OptionError(f"{source}: watch rule name {name!r} must be letters, digits, '-', '_' or '.'")
    pipeline = entry.get("pipeline") or {}
    if isinstance(pipeline, str):  # a pipeline file
        pipeline = read_pipeline_file(pipeline)
    if not isinstance(pipeline, dict):
        raise OptionError(f"{source}: a watch rule's pipeline is a mapping of options or a YAML file")
    Pipeline.from_options(pipeline, source=f"{source}: watch rule {name}")  # fail now, not in the job thread
    try:
        interval = float(entry.get("interval", 10.0))
    except (TypeError, ValueError):
        raise OptionError(f"{source}: watch rule {name}: interval must be a number of seconds") from None
    if not interval > 0:
        raise OptionError(f"{source}: watch rule {name}: interval must be positive")
    return WatchRule(name=name, source=storage.canonical_uri(str(entry["source"])),
                     output=storage.canonical_uri(str(entry["output"])), pipeline=dict(pipeline), interval=interval)


def check_allowed(uri: str, allow: tuple[str, ...], *, what: str) -> str:
    """`uri` in canonical form, if it lies inside one of the `allow`ed prefixes; else ForbiddenLocationError.

    Globs, list files and stdin are refused: a submission names folders, prefixes or files. Local paths
    are compared after resolving `..` and symbolic links.
    """
    if not allow:
        raise ForbiddenLocationError("this service accepts no submissions: start it with --allow PREFIX "
                                     "(or `allow:` in its config) to name what jobs may read and write")
    if not isinstance(uri, str) or not uri or uri == "-" or uri.startswith("@") or "\x00" in uri:
        raise ForbiddenLocationError(f"{what}: give a folder, a file or a store prefix")
    try:
        canonical = storage.canonical_uri(uri)
        glob = storage.is_glob(canonical)
    except (FramefleetError, ValueError):
        raise ForbiddenLocationError(f"{what} {uri!r}: not a path or store URI this service can use") from None
    if glob:
        raise ForbiddenLocationError(f"{what} {uri!r}: globs are not accepted; name a folder or prefix")
    if not any(storage.is_inside(canonical, prefix) for prefix in allow):
        raise ForbiddenLocationError(f"{what} {uri!r} is outside the prefixes this service allows")
    return canonical


def check_submitted_pipeline(pipeline: Any, config: ServiceConfig) -> dict[str, Any]:
    """A submitted pipeline, if it names only built-in ops or the user ops the service allows, and keeps
    the files its ops read (models, style images) inside the allowed prefixes (made canonical)."""
    if not isinstance(pipeline, dict):
        raise OptionError("pipeline: a mapping of options")
    checked = dict(pipeline)
    steps = checked.get("steps")
    step_list = [dict(step) if isinstance(step, dict) else step for step in steps] if isinstance(steps, list) else None
    for step in step_list if step_list is not None else [checked]:
        if not isinstance(step, dict):
            continue  # Pipeline.from_options says what is wrong
        op = step.get("op", "style")
        if isinstance(op, str) and ":" in op and op not in config.ops:
            raise ForbiddenLocationError(f"op {op!r}: this service runs built-in ops and the user ops it was "
                                         "started with (--allow-op) only")
        for key in _FILE_OPTIONS:
            if step.get(key) is not None:
                step[key] = check_allowed(step[key], config.allow, what=key)
    if step_list is not None:
        checked["steps"] = step_list
    return checked
