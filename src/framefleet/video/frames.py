"""Frames as numpy arrays: the batch type ops receive, and conversions between PyAV frames and RGB."""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np
from av.sidedata.sidedata import Type as SideDataType

# FFmpeg enum values (AVColorSpace / AVColorRange), as PyAV reports them.
COLORSPACE_BT709 = 1
COLORSPACE_UNSPECIFIED = 2
COLORSPACE_BT601 = 5
COLORSPACE_BT2020 = 9
RANGE_UNSPECIFIED = 0
RANGE_LIMITED = 1
RANGE_FULL = 2
# Matrices swscale can convert with; anything else falls back to the convention for the picture size.
_SWSCALE_COLORSPACES = frozenset({1, 4, 5, 6, 7, 9})


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


def display_matrix(frame: av.VideoFrame) -> list[int] | None:
    """The frame's display matrix (9 ints, 16.16 fixed point) or None."""
    for side_data in frame.side_data:
        if side_data.type == SideDataType.DISPLAYMATRIX:
            return np.frombuffer(bytes(side_data), dtype="<i4", count=9).tolist()
    return None


def effective_colorspace(colorspace: int, height: int) -> int:
    """The YUV matrix to use: the tagged one when swscale knows it, else BT.709 for HD, BT.601 for SD."""
    if colorspace in _SWSCALE_COLORSPACES:
        return colorspace
    return COLORSPACE_BT709 if height >= 720 else COLORSPACE_BT601


def frame_to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """Decode-side conversion to H x W x 3 uint8 RGB, honouring the frame's matrix and range."""
    if frame.format.name == "rgb24":
        return frame.to_ndarray()
    src_range = RANGE_FULL if frame.color_range == RANGE_FULL or frame.format.name.startswith("yuvj") else RANGE_LIMITED
    rgb = frame.reformat(
        format="rgb24",
        src_colorspace=effective_colorspace(int(frame.colorspace), frame.height),
        src_color_range=src_range,
        dst_color_range=RANGE_FULL,
    )
    return rgb.to_ndarray()


def rgb_to_frame(rgb: np.ndarray, *, pix_fmt: str, colorspace: int) -> av.VideoFrame:
    """Encode-side conversion of H x W x 3 uint8 RGB to a limited-range YUV frame with `colorspace`."""
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    return frame.reformat(
        format=pix_fmt,
        src_colorspace=colorspace,
        dst_colorspace=colorspace,
        src_color_range=RANGE_FULL,
        dst_color_range=RANGE_LIMITED,
    )
