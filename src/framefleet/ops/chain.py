"""Running a pipeline's ops over one batch: conditional steps, sampling, and checks on what ops return.

Each op sees the frames its step selects: all of them, those a sampling step kept (`batch.selected`), and
of those, with `when`, only the frames the named earlier op wrote records about. What an op returns is
checked (same frames, same timestamps, the size it declared) and merged back into the whole batch;
its records are stamped with its name.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from framefleet.errors import OpError
from framefleet.ops.base import Op
from framefleet.processing.batch import FrameBatch


def run_chain(ops: Sequence[Op], batch: FrameBatch, step_times: dict[str, float] | None = None) -> FrameBatch:
    """`batch` after every op of the chain, in order; with `step_times`, the seconds each step took are
    added to it (by `step_names`)."""
    for op, step in zip(ops, step_names(ops)):
        started = time.perf_counter()
        mask = step_mask(op, batch)
        if mask is None:
            batch = _apply(op, batch)
        elif mask.any():
            part = _apply(op, batch.subset(mask))
            if op.writes_frames:
                frames = batch.frames.copy()
                frames[mask] = part.frames
                merged = batch.with_frames(frames)
            else:
                merged = batch.copy()
            merged.records = [*batch.records, *part.records]
            batch = merged
        if step_times is not None:
            step_times[step] = step_times.get(step, 0.0) + time.perf_counter() - started
    return batch


def step_names(ops: Sequence[Op]) -> list[str]:
    """A name for each step of the chain: its op's name, numbered from the second time it comes
    (`resize`, `style`, `resize#2`)."""
    seen: dict[str, int] = {}
    names = []
    for op in ops:
        seen[op.name] = seen.get(op.name, 0) + 1
        names.append(op.name if seen[op.name] == 1 else f"{op.name}#{seen[op.name]}")
    return names


def chain_output_size(ops: Sequence[Op], width: int, height: int) -> tuple[int, int]:
    """The size of the frames the chain returns for frames of width x height."""
    for op in ops:
        if op.writes_frames:
            width, height = op.output_size(width, height)
    return width, height


def step_mask(op: Op, batch: FrameBatch) -> np.ndarray | None:
    """The frames of `batch` that `op` runs on (None: all of them)."""
    mask = batch.selected
    if op.when is not None:
        flagged = [record["frame"] for record in batch.records if record.get("op") == op.when]
        condition = np.isin(batch.frame_numbers, np.asarray(flagged, dtype=np.int64))
        mask = condition if mask is None else mask & condition
    return mask


def _apply(op: Op, batch: FrameBatch) -> FrameBatch:
    earlier = list(batch.records)  # an op may append to the batch's own list
    out = op.process(batch)
    if not isinstance(out, FrameBatch):
        raise OpError(f"op {op.name}: process() must return a FrameBatch, got {type(out).__name__}")
    if len(out) != len(batch) or not np.array_equal(out.pts, batch.pts):
        raise OpError(f"op {op.name}: process() must return the frames it was given, with their timestamps "
                      f"(got {len(out)} frames for {len(batch)})")
    result = batch.copy()
    if op.writes_frames and out is not batch:
        expected = op.output_size(*batch.size)
        if out.size != expected:
            raise OpError(f"op {op.name}: returned {out.size[0]}x{out.size[1]} frames; "
                          f"output_size() says {expected[0]}x{expected[1]}")
        result = out.copy()
    new = out.records[len(earlier):] if out.records is batch.records else out.records
    for record in new:
        record["op"] = op.name
    result.records, result.selected = [*earlier, *new], out.selected
    return result
