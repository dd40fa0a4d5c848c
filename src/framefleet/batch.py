"""`FrameBatch`: the unit of work between decoding, ops and encoding (plain numpy, no PyAV).

A batch carries consecutive frames of one video, their timestamps and frame numbers, and the records
ops wrote about them so far (`add_record`). A pipeline step that runs on some frames only (after a
sampling step, or a conditional one) gets a batch of just those frames: `frame_numbers` then has gaps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

RESERVED_COLUMNS = frozenset({"input", "frame", "pts", "time", "op", "frames"})
"""Record columns framefleet fills in itself; an op's values may not use these names."""


@dataclass
class FrameBatch:
    """A batch of RGB frames from one video, in decode order, with the records written about them."""

    frames: np.ndarray
    """N x H x W x 3, uint8, displayed orientation."""
    pts: np.ndarray
    """N presentation timestamps (int64) in the source video stream's time base."""
    index: int = 0
    """Position of the first frame in the decoded sequence (0-based)."""
    time_base: Fraction | None = None
    """Seconds per `pts` tick (None when the batch was made by hand)."""
    frame_rate: Fraction | None = None
    """The stream's nominal frames per second, when known."""
    frame_numbers: np.ndarray | None = None
    """N positions in the decoded sequence; by default index, index + 1, ..."""
    records: list[dict[str, Any]] = field(default_factory=list)
    """Rows written by ops (see `add_record`); the pipeline adds each row's op name."""
    selected: np.ndarray | None = None
    """Which frames the following steps see (N booleans, set by a sampling step); None means all."""

    def __post_init__(self) -> None:
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ValueError(f"frames must be N x H x W x 3 uint8, got {self.frames.shape} {self.frames.dtype}")
        if len(self.pts) != len(self.frames):
            raise ValueError(f"{len(self.frames)} frames but {len(self.pts)} timestamps")
        if self.frame_numbers is None:
            self.frame_numbers = np.arange(self.index, self.index + len(self.frames), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.frames)

    def seconds(self) -> np.ndarray:
        """Each frame's presentation time in seconds (float64); needs `time_base`."""
        if self.time_base is None:
            raise ValueError("this batch has no time base, so its frames have no times")
        return self.pts.astype(np.float64) * float(self.time_base)

    def with_frames(self, frames: np.ndarray) -> FrameBatch:
        """The same timestamps, numbers and records with new pixels (what a frame-to-frame op returns)."""
        return FrameBatch(frames=frames, pts=self.pts, index=self.index, time_base=self.time_base,
                          frame_rate=self.frame_rate, frame_numbers=self.frame_numbers, records=self.records,
                          selected=self.selected)

    def add_record(self, row: int | None = None, /, **values: Any) -> None:
        """Write a record about frame `row` of this batch (0-based), or, with no row, about the batch as a
        clip (it is filed under its first frame, with `frames` = the batch's length).

        Values are numbers, strings, booleans, or vectors (lists or numpy arrays); a frame may get any
        number of records (e.g. one per detected face). framefleet adds the input, frame number, pts,
        time and op name when the records are written.
        """
        clash = RESERVED_COLUMNS.intersection(values)
        if clash:
            raise ValueError(f"record values may not be named {', '.join(sorted(clash))} (framefleet fills those)")
        first = 0 if row is None else row
        if not 0 <= first < len(self):
            raise IndexError(f"row {row} is outside this batch of {len(self)} frames")
        record: dict[str, Any] = {"frame": int(self.frame_numbers[first]), "pts": int(self.pts[first])}
        if row is None:
            record["frames"] = len(self)
        record.update({key: _plain(value) for key, value in values.items()})
        self.records.append(record)

    def subset(self, mask: np.ndarray) -> FrameBatch:
        """The frames where `mask` is true, as a batch of their own (with no records yet)."""
        numbers = self.frame_numbers[mask]
        return FrameBatch(frames=self.frames[mask], pts=self.pts[mask],
                          index=int(numbers[0]) if len(numbers) else self.index, time_base=self.time_base,
                          frame_rate=self.frame_rate, frame_numbers=numbers)


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as Python values, so any record serialises."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
