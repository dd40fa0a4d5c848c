"""Conversions between PyAV frames and RGB numpy arrays, colour matrix and range included."""

from __future__ import annotations

import av
import numpy as np
from av.sidedata.sidedata import Type as SideDataType
from av.video.reformatter import VideoReformatter

# FFmpeg enum values (AVColorSpace / AVColorRange), as PyAV reports them.
COLORSPACE_BT709 = 1
COLORSPACE_BT601 = 5
RANGE_LIMITED = 1
RANGE_FULL = 2
# Matrices swscale can convert with; anything else falls back to the convention for the picture size.
_SWSCALE_COLORSPACES = frozenset({1, 4, 5, 6, 7, 9})


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


def frame_to_rgb(frame: av.VideoFrame, reformatter: VideoReformatter) -> np.ndarray:
    """Decode-side conversion to H x W x 3 uint8 RGB, honouring the frame's matrix and range.

    Pass the same `reformatter` for every frame of a stream: it keeps FFmpeg's conversion context."""
    if frame.format.name == "rgb24":
        return frame.to_ndarray()
    src_range = RANGE_FULL if frame.color_range == RANGE_FULL or frame.format.name.startswith("yuvj") else RANGE_LIMITED
    rgb = reformatter.reformat(
        frame,
        format="rgb24",
        src_colorspace=effective_colorspace(int(frame.colorspace), frame.height),
        src_color_range=src_range,
        dst_color_range=RANGE_FULL,
    )
    return rgb.to_ndarray()


def rgb_to_frame(rgb: np.ndarray, *, pix_fmt: str, colorspace: int, reformatter: VideoReformatter) -> av.VideoFrame:
    """Encode-side conversion of H x W x 3 uint8 RGB to a limited-range YUV frame with `colorspace`."""
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    return reformatter.reformat(
        frame,
        format=pix_fmt,
        src_colorspace=colorspace,
        dst_colorspace=colorspace,
        src_color_range=RANGE_FULL,
        dst_color_range=RANGE_LIMITED,
    )
