"""`FrameBatch`: the unit of work between decoding, ops and encoding (plain numpy, no PyAV).

A batch carries consecutive frames of one video, their timestamps and frame numbers, and the records
ops wrote about them so far (`add_record`). A pipeline step that runs on some frames only (after a
sampling step, or a conditional one) gets a batch of just those frames: `frame_numbers` then has gaps.

Pixels are converted only when asked for. A batch read from a video holds the decoder's frames as they
are (`DecodedFrames`, in the decoder's YUV format) and turns them into RGB the first time an op reads
`frames`; `frames_at(width, height)` scales and converts in one pass for ops that want a smaller copy.
A batch whose pixels nobody read is encoded from the decoded frames directly, never through RGB.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Protocol

import numpy as np

DEPTHS = (np.dtype(np.uint8), np.dtype(np.uint16))
"""Pixel types of frames: uint8, or uint16 (0-65535) for a source of more than 8 bits whose ops all take it
(`Op.high_bit_depth`)."""
RESERVED_COLUMNS = frozenset({"input", "frame", "pts", "time", "op", "frames"})
"""Record columns framefleet fills in itself; an op's values may not use these names."""


class DecodedFrames(Protocol):
    """Frames as the decoder made them, converted on demand (the video layer implements this)."""

    def __len__(self) -> int: ...

    @property
    def size(self) -> tuple[int, int]:
        """Displayed (width, height)."""
        ...

    def rgb(self, width: int, height: int) -> np.ndarray:
        """N x height x width x 3 uint8 RGB in display orientation, scaled from the decoded frames."""
        ...

    def subset(self, mask: np.ndarray) -> DecodedFrames:
        """The frames where `mask` is true."""
        ...

    def for_encoder(self, pix_fmt: str, colorspace: int, size: tuple[int, int]) -> list[Any] | None:
        """The frames as the video layer's encoder takes them at `size` (width, height), without going through
        RGB (None: they must)."""
        ...


class FrameBatch:
    """A batch of RGB frames from one video, in decode order, with the records written about them."""

    def __init__(
        self,
        frames: np.ndarray | None = None,
        pts: np.ndarray | None = None,
        index: int = 0,
        *,
        time_base: Fraction | None = None,
        frame_rate: Fraction | None = None,
        frame_numbers: np.ndarray | None = None,
        records: list[dict[str, Any]] | None = None,
        selected: np.ndarray | None = None,
        decoded: DecodedFrames | None = None,
    ) -> None:
        if (frames is None) == (decoded is None):
            raise ValueError("a batch needs either frames or decoded frames")
        if frames is not None and (frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype not in DEPTHS):
            raise ValueError(f"frames must be N x H x W x 3 uint8 (or uint16), got {frames.shape} {frames.dtype}")
        self._frames = frames
        self._scaled: dict[tuple[int, int, bool], np.ndarray] = {}
        self.decoded = decoded
        """The decoder's frames these pixels come from; None once an op returned new pixels."""
        count = len(frames) if frames is not None else len(decoded)
        self.pts = np.asarray(pts if pts is not None else [], dtype=np.int64)
        """N presentation timestamps (int64) in the source video stream's time base."""
        if len(self.pts) != count:
            raise ValueError(f"{count} frames but {len(self.pts)} timestamps")
        self.index = index
        """Position of the first frame in the decoded sequence (0-based)."""
        self.time_base = time_base
        """Seconds per `pts` tick (None when the batch was made by hand)."""
        self.frame_rate = frame_rate
        """The stream's nominal frames per second, when known."""
        self.frame_numbers = (np.arange(index, index + count, dtype=np.int64) if frame_numbers is None
                              else frame_numbers)
        """N positions in the decoded sequence; by default index, index + 1, ..."""
        self.records: list[dict[str, Any]] = [] if records is None else records
        """Rows written by ops (see `add_record`); the pipeline adds each row's op name."""
        self.selected = selected
        """Which frames the following steps see (N booleans, set by a sampling step); None means all."""

    @property
    def frames(self) -> np.ndarray:
        """N x H x W x 3 RGB, displayed orientation (converted from the decoded frames on first use): uint8, or
        uint16 where the source has more bits and every op takes them (`Op.high_bit_depth`)."""
        if self._frames is None:
            assert self.decoded is not None
            self._frames = self.decoded.rgb(*self.decoded.size)
        return self._frames

    @property
    def pixels_read(self) -> bool:
        """Whether the RGB pixels exist (an op read them or returned new ones)."""
        return self._frames is not None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frames."""
        if self._frames is None:
            assert self.decoded is not None
            return self.decoded.size
        return self._frames.shape[2], self._frames.shape[1]

    def frames_at(self, width: int, height: int, *, analysis: bool = False) -> np.ndarray:
        """The frames scaled to width x height (N x height x width x 3 uint8; Lanczos): one conversion from
        the decoded frames when the full-size RGB was never needed, else a resize of it. Kept for reuse.
        `analysis`: for measuring (motion), not for pictures: a resize averages areas instead (OpenCV;
        10-60x faster than Lanczos, and no sharper is needed)."""
        if (width, height) == self.size:
            return self.frames
        key = (width, height, analysis and self._frames is not None)
        if key not in self._scaled:
            if self._frames is None:
                assert self.decoded is not None
                self._scaled[key] = self.decoded.rgb(width, height)
            elif analysis:
                import cv2

                self._scaled[key] = np.stack([cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
                                              for frame in self._frames])
            else:
                from framefleet.processing.images import resize

                self._scaled[key] = np.stack([resize(frame, width, height) for frame in self._frames])
        return self._scaled[key]

    def __len__(self) -> int:
        return len(self.pts)

    def __repr__(self) -> str:
        width, height = self.size
        return f"FrameBatch({len(self)} frames {width}x{height}, index {self.index}, {len(self.records)} records)"

    def seconds(self) -> np.ndarray:
        """Each frame's presentation time in seconds (float64); needs `time_base`."""
        if self.time_base is None:
            raise ValueError("this batch has no time base, so its frames have no times")
        return self.pts.astype(np.float64) * float(self.time_base)

    def with_frames(self, frames: np.ndarray) -> FrameBatch:
        """The same timestamps, numbers and records with new pixels (what a frame-to-frame op returns)."""
        return FrameBatch(frames, self.pts, self.index, time_base=self.time_base, frame_rate=self.frame_rate,
                          frame_numbers=self.frame_numbers, records=self.records, selected=self.selected)

    def copy(self) -> FrameBatch:
        """The same pixels (still unconverted if they were), timestamps, numbers, records and selection."""
        twin = FrameBatch(self._frames, self.pts, self.index, time_base=self.time_base,
                          frame_rate=self.frame_rate, frame_numbers=self.frame_numbers, records=self.records,
                          selected=self.selected, decoded=None if self._frames is not None else self.decoded)
        twin._scaled = self._scaled
        return twin

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
        lazy = self._frames is None
        return FrameBatch(None if lazy else self._frames[mask], self.pts[mask],
                          int(numbers[0]) if len(numbers) else self.index, time_base=self.time_base,
                          frame_rate=self.frame_rate, frame_numbers=numbers,
                          decoded=self.decoded.subset(mask) if lazy else None)


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as Python values, so any record serialises."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
