"""`JobSpec`: what a job does (inputs, output, pipeline) and how it runs (`RunSettings`), as one typed value.

The CLI builds one from its flags (or a plan's choice with the flags over it), the service from its
configuration, a program by hand; `framefleet.run` takes it whole. A run stores its settings in the job's
ledger (never credentials: storage options travel apart), so `framefleet retry` runs the job as it was
started, on the same engine, unless told otherwise; the service resumes and retries a submitted job with
its stored settings too (a watch job follows the service's configuration, where its rule lives).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from framefleet.errors import OptionError
from framefleet.pipeline import Pipeline
from framefleet.settings import RunSettings


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

    def to_dict(self) -> dict[str, Any]:
        """The job, JSON-ready, as the service's registry keeps it: inputs, output, the pipeline's `spec()`
        and the settings (`from_dict` reads it back)."""
        return {"inputs": list(self.inputs), "output": self.output, "pipeline": self.pipeline.spec(),
                "settings": json.loads(self.settings.to_json())}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        """The job `to_dict` described."""
        return cls(data["inputs"], data["output"], Pipeline.from_spec(data["pipeline"]),
                   RunSettings.from_json(json.dumps(data["settings"])))
