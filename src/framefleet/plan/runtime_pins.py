"""Runtime and precision as knobs per node type: what a profile entry records as having run the models, and
pinning a plan's on the pipeline that `run --plan` runs.

They are not swept within a profile: under `--runtime auto` / `--precision auto` each op's runtime profile
(`framefleet.ops.runtime_choice`) has already measured every candidate on the machine against the quality
gate and chosen the fastest that passes. A profile entry records what that choice was on its machine, per
thread count (the choice is made per threads), as the workers reported it ("style: openvino bf16"); a plan
shows it per option and `apply_plan` pins it, so that the run runs what was predicted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def entry_runtime(entry: Mapping[str, Any], threads: int) -> str | None:
    """What ran the models of a profile entry's runs at `threads` op threads ("style: openvino bf16"), or at
    the entry's base thread count where that one was not measured; None when no op runs a model."""
    ran = entry.get("runtime") or {}
    return ran.get(f"threads={threads}") or ran.get(f"threads={entry.get('base_threads', 1)}")

