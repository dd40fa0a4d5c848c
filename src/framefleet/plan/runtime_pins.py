"""Runtime and precision as knobs per node type: what a profile entry records as having run the models, and
pinning a plan's on the pipeline that `run --plan` runs.

They are not swept within a profile: under `--runtime auto` / `--precision auto` each op's runtime profile
(`framefleet.ops.runtime_choice`) has already measured every candidate on the machine against the quality
gate and chosen the fastest that passes. A profile entry records what that choice was on its machine, per
thread count (the choice is made per threads), as the workers reported it ("style: openvino bf16"); a plan
shows it per option and `apply_plan` pins it, so that the run runs what was predicted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from framefleet.ops.chain import step_names
from framefleet.pipeline import Pipeline


def entry_runtime(entry: Mapping[str, Any], threads: int) -> str | None:
    """What ran the models of a profile entry's runs at `threads` op threads ("style: openvino bf16"), or at
    the entry's base thread count where that one was not measured; None when no op runs a model."""
    ran = entry.get("runtime") or {}
    return ran.get(f"threads={threads}") or ran.get(f"threads={entry.get('base_threads', 1)}")


def step_runtimes(runtime: str) -> dict[str, tuple[str, str]]:
    """"style: openvino bf16; faces: onnxruntime fp32" -> {step: (runtime, precision)}; a step whose models
    ran on several choices ("openvino bf16, onnxruntime fp32") is left out: no one choice pins it."""
    steps = {}
    for part in runtime.split(";"):
        name, _, ran = part.partition(":")
        words = ran.split()
        if len(words) == 2 and "," not in ran:
            steps[name.strip()] = (words[0], words[1])
    return steps


def pin_runtimes(pipeline: Pipeline, runtime: str) -> Pipeline:
    """`pipeline` with each step's runtime and precision set to what `runtime` (a plan's record of what ran,
    "style: openvino bf16") names for it; steps it does not name, and ops that run no model, as they were.
    A runtime this installation cannot run is refused here, as `--runtime` is (one line)."""
    pinned = step_runtimes(runtime)
    ops = tuple(dataclasses.replace(op, runtime=pinned[name][0], precision=pinned[name][1])
                if name in pinned and hasattr(op, "runtime") else op
                for name, op in zip(step_names(pipeline.ops), pipeline.ops))
    return dataclasses.replace(pipeline, ops=ops)
