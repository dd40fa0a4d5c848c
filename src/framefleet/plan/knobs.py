"""The knobs a plan turns (inference size, batch size, op threads per worker) and the settings worth trying."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from framefleet.ops import Op

THREADS = (1, 2, 4, 8)
"""Op threads per worker a profile measures (up to the machine's cores)."""


@dataclass(frozen=True)
class Knobs:
    """One setting of the knobs a plan may turn."""

    max_size: int | None = None
    batch_size: int = 4
    threads: int = 1

    def label(self) -> str:
        return f"max_size={self.max_size or 'full'} batch={self.batch_size} threads={self.threads}"


def knob_grid(op: Op, width: int, height: int, cpus: int) -> list[Knobs]:
    """The knob settings worth planning with for frames of this size on a machine with `cpus` cores."""
    sizes = max_sizes(op, width, height)
    batches = [op.batch_size, *sorted(set(knob_values(op, "batch_size", ())) - {op.batch_size})]  # own first: ties keep it
    threads = [t for t in THREADS if t <= cpus]
    return [Knobs(max_size=m, batch_size=b, threads=t) for m in sizes for b in batches for t in threads]


def base_knobs(op: Op, width: int, height: int, fixed: Mapping[str, Any]) -> Knobs:
    """The setting every other is measured against: full size, the op's batch, one thread; or the fixed ones."""
    size = fixed.get("max_size")
    return Knobs(max_size=size if size is not None and size < max(width, height) else None,
                 batch_size=fixed.get("batch_size") or op.batch_size, threads=fixed.get("threads") or 1)


def swept_knobs(op: Op, base: Knobs, fixed: Mapping[str, Any], cpus: int) -> list[Knobs]:
    """The settings a profile runs besides `base` to measure batch size and threads (each varied alone)."""
    varied = [] if "batch_size" in fixed else [
        replace(base, batch_size=b) for b in knob_values(op, "batch_size", ()) if b != base.batch_size]
    return varied + ([] if "threads" in fixed else [replace(base, threads=t) for t in THREADS[1:] if t <= cpus])


def op_with_knobs(op: Op, knobs: Knobs) -> Op:
    """A copy of `op` with the knob fields it has set to `knobs`."""
    values: dict[str, Any] = {"batch_size": knobs.batch_size}
    if hasattr(op, "max_size"):
        values["max_size"] = knobs.max_size
    return replace(op, **values)


def max_sizes(op: Op, width: int, height: int) -> list[int | None]:
    """Inference sizes worth trying: full size, and the op's `max_size` values below the frame's side."""
    if not hasattr(op, "max_size"):
        return [None]
    values = [*knob_values(op, "max_size", (None,)), op.max_size]  # the pipeline's own setting too
    return [None, *sorted({v for v in values if v is not None and v < max(width, height)}, reverse=True)]


def knob_values(op: Op, name: str, default: tuple[Any, ...]) -> list[Any]:
    for knob in op.knobs:
        if knob.name == name:
            return list(knob.values)
    return list(default)
