"""`FrameBatch`: the unit of work between decoding, ops and encoding (plain numpy, no PyAV)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FrameBatch:
    """A batch of consecutive RGB frames from one video."""

    frames: np.ndarray
    """N x H x W x 3, uint8, displayed orientation."""
    pts: np.ndarray
    """N presentation timestamps (int64) in the source video stream's time base."""
    index: int = 0
    """Position of the first frame in the decoded sequence (0-based)."""

    def __post_init__(self) -> None:
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ValueError(f"frames must be N x H x W x 3 uint8, got {self.frames.shape} {self.frames.dtype}")
        if len(self.pts) != len(self.frames):
            raise ValueError(f"{len(self.frames)} frames but {len(self.pts)} timestamps")

    def __len__(self) -> int:
        return len(self.frames)

    def with_frames(self, frames: np.ndarray) -> FrameBatch:
        """The same timestamps and position with new pixels (what a frame-to-frame op returns)."""
        return FrameBatch(frames=frames, pts=self.pts, index=self.index)
