"""`Pipeline`: what a job does to every video (its op, encoding, segmenting), and its fingerprint.

A pipeline comes from CLI flags or from a YAML file whose keys are the flags' names (with `_` or `-`):

    op: style            # style (default) or identity
    style: "3:0.5,12:0.5"
    strength: 0.8
    max_size: 720
    crf: 20
    preset: veryfast
    segment_seconds: 20

Unknown keys and wrong types are errors. The fingerprint covers everything that changes the outputs:
the op and its parameters, the model files' hashes, the encoding options and framefleet's version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from framefleet import __version__
from framefleet.errors import OptionError
from framefleet.ops import IdentityOp, Op, StyleTransferOp
from framefleet.video import EncodeOptions
from framefleet.yaml_files import read_yaml_mapping

OPS: dict[str, type[Op]] = {"style": StyleTransferOp, "identity": IdentityOp}
_ENCODE_KEYS = {f.name for f in dataclasses.fields(EncodeOptions)}
_PIPELINE_KEYS = {"op", "segment_seconds"}


@dataclass(frozen=True)
class Pipeline:
    """The ops a job runs, how it encodes, and how long a video may be before it is split."""

    ops: tuple[Op, ...]
    encode: EncodeOptions = field(default_factory=EncodeOptions)
    segment_seconds: float = 20.0
    """Videos longer than this are split at keyframes into segments of at least this length."""

    def __post_init__(self) -> None:
        if not self.ops:
            raise OptionError("a pipeline needs at least one op")
        if not self.segment_seconds > 0:
            raise OptionError(f"segment_seconds must be positive, got {self.segment_seconds}")

    @classmethod
    def from_options(cls, options: dict[str, Any], *, source: str = "options") -> Pipeline:
        """Build from flag-named options (None values mean "default"); unknown keys are errors."""
        values = {key.replace("-", "_"): value for key, value in options.items() if value is not None}
        op_name = values.pop("op", "style")
        if op_name not in OPS:
            raise OptionError(f"{source}: unknown op {op_name!r}; choose one of {', '.join(OPS)}")
        op_class = OPS[op_name]
        op_keys = {f.name for f in dataclasses.fields(op_class) if f.init}
        unknown = set(values) - op_keys - _ENCODE_KEYS - _PIPELINE_KEYS
        if unknown:
            known = ", ".join(sorted(op_keys | _ENCODE_KEYS | _PIPELINE_KEYS - {"op"}))
            raise OptionError(f"{source}: unknown key(s) {', '.join(sorted(unknown))} for op {op_name}; known: {known}")
        try:
            op = op_class(**{k: v for k, v in values.items() if k in op_keys})
            encode = EncodeOptions(**{k: v for k, v in values.items() if k in _ENCODE_KEYS})
            segment_seconds = values.get("segment_seconds", 20.0)
            if isinstance(segment_seconds, bool):
                raise ValueError(f"segment_seconds must be a number of seconds, got {segment_seconds}")
            segment_seconds = float(segment_seconds)
        except (TypeError, ValueError) as exc:
            raise OptionError(f"{source}: {exc}") from None
        return cls(ops=(op,), encode=encode, segment_seconds=segment_seconds)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> Pipeline:
        """Read a pipeline file; `overrides` (e.g. flags given on the command line) win over it."""
        return cls.from_options({**read_pipeline_file(path), **(overrides or {})}, source=f"--pipeline {path}")

    @classmethod
    def from_spec(cls, spec: dict[str, Any], overrides: dict[str, Any] | None = None, *,
                  source: str = "the job's stored pipeline") -> Pipeline:
        """Rebuild a pipeline from `spec()` (as stored in a job's ledger or a plan); `overrides` (flag-named
        options) win over it."""
        params = dict(spec["ops"][0])
        return cls.from_options({**params, **spec["encode"], "segment_seconds": spec["segment_seconds"],
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
        }

    def fingerprint(self) -> str:
        """A hash of everything that changes the outputs (segment length does not)."""
        identity = {
            "ops": [op.params() for op in self.ops],
            "models": {str(p.name): file_sha256(p) for op in self.ops for p in op.model_files()},
            "encode": dataclasses.asdict(self.encode),
            "framefleet": __version__,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


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
