"""`Pipeline`: what a job does to every video (its ops, encoding, segmenting), and its fingerprint.

A pipeline comes from CLI flags or from a YAML file whose keys are the flags' names (with `_` or `-`).
One op:

    op: style            # a built-in op (style, identity, faces, onnx, sample, resize, blur)
    style: "3:0.5,12:0.5"   # ... or your own: op: mypackage.module:MyOp
    max_size: 720
    crf: 20
    segment_seconds: 20
    temporal: bands      # flow-guided flicker removal that keeps detail (blend: softer; none: each frame on its own)
    strict: false        # true: refuse partly damaged inputs instead of processing what decodes
    limits:              # what an untrusted input may claim or cost (framefleet.processing.limits; these are defaults)
      max_pixels: 67108864
      max_streams: 256

Several ops run in order as `steps`, each a mapping with its `op` and parameters; `when: NAME` makes a
step run only on the frames an earlier op of that name wrote records about:

    steps:
      - op: faces
        anonymize: none
      - op: blur
        when: faces

The pipeline writes a video when one of its ops returns frames, and a Parquet file of records when one
writes records. Unknown keys and wrong types are errors. The fingerprint covers everything that changes
the outputs: the ops and their parameters, the model files' hashes, the source of user ops, the
encoding options and framefleet's version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from framefleet._version import __version__
from framefleet.errors import OptionError
from framefleet.ops import Op
from framefleet.ops.names import is_builtin
from framefleet.ops.registry import resolve_op
from framefleet.ops.simple import SampleOp
from framefleet.processing.temporal import check_mode, check_strength, default_mode
from framefleet.settings import InputLimits
from framefleet.util.yaml_files import read_yaml_mapping
from framefleet.video import EncodeOptions

_ENCODE_KEYS = {f.name for f in dataclasses.fields(EncodeOptions)}
_PIPELINE_KEYS = {"op", "steps", "segment_seconds", "temporal", "temporal_strength", "strict", "limits"}
_ALL_STEPS_KEYS = {"device", "runtime", "precision"}
"""Options given beside `steps` that apply to every step that takes them (device: every step that can use a
GPU; runtime, precision: every step that runs an ONNX model); any other goes to the first step that takes it."""


@dataclass(frozen=True)
class Pipeline:
    """The ops a job runs, how it encodes, and how long a video may be before it is split."""

    ops: tuple[Op, ...]
    encode: EncodeOptions = field(default_factory=EncodeOptions)
    segment_seconds: float = 20.0
    """Videos longer than this are split at keyframes into segments of at least this length."""
    temporal: str = "none"
    """none, bands or blend: each output frame (its colour and stroke bands, or all of it) blended with the
    previous one moved along the input's motion (`framefleet.processing.temporal`), which removes the flicker of models
    that see one frame at a time."""
    temporal_strength: float | None = None
    """How steady, 0 (off) to 1 (most; also softer with blend); None: the mode's default."""
    strict: bool = False
    """Refuse partly damaged inputs (frames missing from the index, packets the decoder rejects, a container
    that breaks off) instead of processing every frame that decodes."""
    limits: InputLimits = field(default_factory=InputLimits)
    """What an untrusted input may claim (size, frames, streams) or cost (decode errors, a worker's memory)."""

    def __post_init__(self) -> None:
        if not self.ops:
            raise OptionError("a pipeline needs at least one op")
        if not self.segment_seconds > 0:
            raise OptionError(f"segment_seconds must be positive, got {self.segment_seconds}")
        check_mode(self.temporal)
        if self.temporal_strength is not None:
            check_strength(self.temporal_strength)
        _check_steps(self.ops)

    @classmethod
    def of(cls, ops: Sequence[Op], **fields: Any) -> Pipeline:
        """A pipeline of `ops` and any other fields given (`encode=...`, `strict=True`); flicker removal as
        `from_options` chooses it (bands for ops that flicker, such as style transfer), unless given."""
        return cls(ops=tuple(ops), **{"temporal": default_mode(list(ops)), **fields})

    @property
    def writes_video(self) -> bool:
        """Whether outputs include a video (some op returns frames)."""
        return any(op.writes_frames for op in self.ops)

    @property
    def writes_records(self) -> bool:
        """Whether outputs include a Parquet file of records (some op writes records)."""
        return any(op.writes_records for op in self.ops)

    @classmethod
    def from_options(cls, options: dict[str, Any], *, source: str = "options") -> Pipeline:
        """Build from flag-named options (None values mean "default"): one op's (`op` and its parameters)
        or `steps`, plus encoding and segmenting; unknown keys are errors."""
        values = {key.replace("-", "_"): value for key, value in options.items() if value is not None}
        steps = values.pop("steps", None)
        encode_values = {key: values.pop(key) for key in list(values) if key in _ENCODE_KEYS}
        segment_seconds = values.pop("segment_seconds", 20.0)
        temporal = values.pop("temporal", None)
        temporal_strength = values.pop("temporal_strength", None)
        strict = values.pop("strict", False)
        limit_values = values.pop("limits", None)
        if limit_values is not None and not isinstance(limit_values, dict):
            raise OptionError(f"{source}: limits must be a mapping of limit names to numbers, got {limit_values!r}")
        try:
            limits = InputLimits.from_options(limit_values)
        except OptionError as exc:
            raise OptionError(f"{source}: {exc}") from None
        if steps is None:
            ops = (build_op(values, source=source, extra_keys=_ENCODE_KEYS | _PIPELINE_KEYS - {"op"}),)
        else:
            ops = _build_steps(steps, values, source)
        if "codec" not in encode_values and any(op.device == "cuda" for op in ops):
            encode_values["codec"] = "auto"  # the GPU's encoder too, where it opens
        if temporal is None:  # an op that flickers (style transfer) gets its flicker removed unless told not to
            temporal = default_mode(ops)
        try:
            encode = EncodeOptions(**encode_values)
            if isinstance(segment_seconds, bool) or not isinstance(segment_seconds, (int, float)):
                raise ValueError(f"segment_seconds must be a number of seconds, got {segment_seconds!r}")
            if not isinstance(strict, bool):
                raise ValueError(f"strict must be true or false, got {strict!r}")
        except (TypeError, ValueError) as exc:
            raise OptionError(f"{source}: {exc}") from None
        try:
            return cls(ops=ops, encode=encode, segment_seconds=float(segment_seconds), temporal=temporal,
                       temporal_strength=temporal_strength, strict=strict, limits=limits)
        except OptionError as exc:
            raise OptionError(f"{source}: {exc}") from None

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> Pipeline:
        """Read a pipeline file; `overrides` (e.g. flags given on the command line) win over it."""
        options = read_pipeline_file(path)
        overrides = dict(overrides or {})
        if isinstance(options.get("limits"), dict) and isinstance(overrides.get("limits"), dict):
            overrides["limits"] = {**options["limits"], **overrides["limits"]}  # --limit adds to the file's
        return cls.from_options({**options, **overrides}, source=f"--pipeline {path}")

    @classmethod
    def from_spec(cls, spec: dict[str, Any], overrides: dict[str, Any] | None = None, *,
                  source: str = "the job's stored pipeline") -> Pipeline:
        """Rebuild a pipeline from `spec()` (as stored in a job's ledger or a plan); `overrides` (flag-named
        options) win over it: `device` for every step, any other op option for the first step taking it."""
        return cls.from_options({"steps": [dict(params) for params in spec["ops"]], **spec["encode"],
                                 "segment_seconds": spec["segment_seconds"], "temporal": spec.get("temporal", "none"),
                                 "temporal_strength": spec.get("temporal_strength"), "strict": spec.get("strict", False),
                                 "limits": spec.get("limits") or None,
                                 **(overrides or {})}, source=source)

    def for_worker(self, threads: int) -> Pipeline:
        """This pipeline as one of several workers runs it: the encoder gets the worker's share of the cores
        (`threads`) unless the pipeline sets its own count, so workers do not oversubscribe the machine."""
        if self.encode.threads:
            return self
        return dataclasses.replace(self, encode=dataclasses.replace(self.encode, threads=threads))

    def spec(self) -> dict[str, Any]:
        """A JSON-ready description: ops with parameters, encoding and segmenting."""
        return {
            "ops": [op.params() for op in self.ops],
            "encode": dataclasses.asdict(self.encode),
            "segment_seconds": self.segment_seconds,
            "temporal": self.temporal,
            "temporal_strength": self.temporal_strength,
            "strict": self.strict,
            "limits": self.limits.changed(),
        }

    def fingerprint(self) -> str:
        """A hash of everything that changes the outputs (segment length does not)."""
        identity: dict[str, Any] = {
            "ops": [op.params() for op in self.ops],
            "models": {str(p.name): file_sha256(p) for op in self.ops for p in op.model_files()},
            "encode": dataclasses.asdict(self.encode),
            "framefleet": __version__,
        }
        if self.encode.hdr == "sdr":  # (absent by default, so earlier jobs keep their fingerprints)
            del identity["encode"]["hdr"]
        if self.temporal != "none":  # (absent when off, so earlier jobs keep their fingerprints)
            identity["temporal"] = self.temporal
        if self.temporal_strength is not None:
            identity["temporal_strength"] = self.temporal_strength
        user_code = {op.params()["op"]: _source_sha256(type(op)) for op in self.ops if not is_builtin(type(op))}
        if user_code:
            identity["code"] = user_code
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def build_op(options: dict[str, Any], *, source: str = "options", extra_keys: set[str] = frozenset()) -> Op:
    """One op from its options: `op` (a built-in name or module:Class, default style) and its parameters.
    `extra_keys` are other keys allowed beside them (and ignored here)."""
    values = dict(options)
    reference = values.pop("op", "style")
    try:
        op_class = resolve_op(reference)
    except OptionError as exc:
        raise OptionError(f"{source}: {exc}") from None
    op_keys = {f.name for f in dataclasses.fields(op_class) if f.init}
    unknown = set(values) - op_keys - extra_keys
    if unknown:
        known = ", ".join(sorted(op_keys | extra_keys))
        raise OptionError(f"{source}: unknown key(s) {', '.join(sorted(unknown))} for op {reference}; known: {known}")
    try:
        return op_class(**{key: value for key, value in values.items() if key in op_keys})
    except (TypeError, ValueError) as exc:
        raise OptionError(f"{source}: op {reference}: {exc}") from None


def _build_steps(steps: Any, overrides: dict[str, Any], source: str) -> tuple[Op, ...]:
    """The ops of a `steps` list, with the options given beside it applied (see `from_spec`)."""
    if "op" in overrides:
        raise OptionError(f"{source}: give either op (one op) or steps (several), not both")
    if not isinstance(steps, list) or not steps or not all(isinstance(step, dict) for step in steps):
        raise OptionError(f"{source}: steps must be a list of mappings, each with an op and its parameters")
    steps = [{key.replace("-", "_"): value for key, value in step.items()} for step in steps]
    classes = [resolve_op(step.get("op", "style")) for step in steps]
    for key, value in overrides.items():
        takers = [i for i, op_class in enumerate(classes) if key in {f.name for f in dataclasses.fields(op_class)}]
        if not takers:
            raise OptionError(f"{source}: unknown key {key}: no step of this pipeline takes it")
        if key == "device":  # the steps that choose a device (GPU ops); CPU-only steps keep theirs
            takers = [i for i in takers if classes[i].uses_gpu()] or takers
        for i in takers if key in _ALL_STEPS_KEYS else takers[:1]:
            steps[i][key] = value
    return tuple(build_op(step, source=f"{source}: step {n}") for n, step in enumerate(steps, 1))


def _check_steps(ops: tuple[Op, ...]) -> None:
    """Conditions name earlier ops that write records; steps that resize run on every frame."""
    earlier: dict[str, Op] = {}
    sampled = False
    for n, op in enumerate(ops, 1):
        if op.when is not None:
            if op.when not in earlier:
                raise OptionError(f"step {n} ({op.name}): when: {op.when} names no earlier op "
                                  f"(earlier: {', '.join(earlier) or 'none'})")
            if not earlier[op.when].writes_records:
                raise OptionError(f"step {n} ({op.name}): when: {op.when}, but {op.when} writes no records")
            if isinstance(op, SampleOp):
                raise OptionError(f"step {n}: a sample step cannot have a condition")
        resizes = op.writes_frames and op.output_size(7681, 4321) != (7681, 4321)
        if resizes and (op.when is not None or sampled):
            raise OptionError(f"step {n} ({op.name}) changes the frame size, so it must run on every frame: "
                              "move it before any sample step and drop its when")
        sampled = sampled or isinstance(op, SampleOp)
        earlier[op.name] = op
    if not any(op.writes_frames or op.writes_records for op in ops):
        raise OptionError(f"the pipeline ({', '.join(op.name for op in ops)}) writes nothing: no op returns frames "
                          "or records; add one that does")


def _source_sha256(op_class: type) -> str:
    """A hash of the file that defines a user op (its code shapes the outputs)."""
    try:
        return file_sha256(Path(inspect.getsourcefile(op_class) or ""))
    except (OSError, TypeError):
        return "unknown"


def read_pipeline_file(path: str | Path) -> dict[str, Any]:
    """The options in a pipeline file, unchecked (`Pipeline.from_options` checks them)."""
    return read_yaml_mapping(path, "--pipeline", "a mapping of option names to values")


@cache
def file_sha256(path: Path) -> str:
    """SHA-256 of a file's content (cached for the process)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
