"""Conversions between PyAV frames and RGB numpy arrays, colour matrix and range included."""

from __future__ import annotations

import threading
from collections.abc import Callable

import av
import numpy as np
from av.sidedata.sidedata import SideData
from av.sidedata.sidedata import Type as SideDataType
from av.video.frame import PictureType
from av.video.reformatter import Interpolation, VideoReformatter

# FFmpeg enum values (AVColorSpace / AVColorRange), as PyAV reports them.
COLORSPACE_BT709 = 1
COLORSPACE_UNSPECIFIED = 2
COLORSPACE_BT601 = 5
RANGE_LIMITED = 1
RANGE_FULL = 2
# Matrices swscale can convert with; anything else falls back to the convention for the picture size.
_SWSCALE_COLORSPACES = frozenset({1, 4, 5, 6, 7, 9})


_local = threading.local()


def thread_reformatter(purpose: str) -> VideoReformatter:
    """This thread's swscale context holder for one kind of conversion (e.g. "rgb", "encoder"): threads that
    convert side by side each keep their own, and each kind keeps its context instead of rebuilding it."""
    reformatters = _local.__dict__.setdefault("reformatters", {})
    if purpose not in reformatters:
        reformatters[purpose] = VideoReformatter()
    return reformatters[purpose]


def side_data_of(frame: av.VideoFrame) -> list[SideData]:
    """The frame's side data: PyAV 18.1.0 iterates the items themselves, 18.1.1 their types (a mapping)."""
    container = frame.side_data
    return [container[item] if isinstance(item, SideDataType) else item for item in container]


def display_matrix(frame: av.VideoFrame) -> list[int] | None:
    """The frame's display matrix (9 ints, 16.16 fixed point) or None."""
    for side_data in side_data_of(frame):
        if side_data.type == SideDataType.DISPLAYMATRIX:
            return np.frombuffer(bytes(side_data), dtype="<i4", count=9).tolist()
    return None


def effective_colorspace(colorspace: int, height: int) -> int:
    """The YUV matrix to use: the tagged one when swscale knows it, else BT.709 for HD, BT.601 for SD."""
    if colorspace in _SWSCALE_COLORSPACES:
        return colorspace
    return COLORSPACE_BT709 if height >= 720 else COLORSPACE_BT601


def source_range(frame: av.VideoFrame) -> int:
    """The frame's colour range (full for JPEG-style yuvj formats, else as tagged, limited by default)."""
    return RANGE_FULL if frame.color_range == RANGE_FULL or frame.format.name.startswith("yuvj") else RANGE_LIMITED


def frame_to_rgb(frame: av.VideoFrame, reformatter: VideoReformatter, width: int | None = None,
                 height: int | None = None, *, threads: int = 0,
                 to_sdr: Callable[[np.ndarray], np.ndarray] | None = None, deep: bool = False) -> np.ndarray:
    """Decode-side conversion to H x W x 3 uint8 RGB, honouring the frame's matrix and range; scaled to
    width x height in the same pass when given (Lanczos, for downscaling without aliasing). `threads`: 1 in
    threads that already run side by side, 0 (swscale chooses) elsewhere. `to_sdr` renders HDR code values
    (16-bit RGB) as SDR (`framefleet.video.tone_map.ToSdr`); `deep` gives uint16 RGB instead of uint8.

    Pass the same `reformatter` for every frame of a stream: it keeps FFmpeg's conversion context."""
    scaled = (width or frame.width, height or frame.height) != (frame.width, frame.height)
    if frame.format.name == "rgb24" and not scaled and to_sdr is None and not deep:
        return frame.to_ndarray()
    rgb = reformatter.reformat(
        frame,
        width=width,
        height=height,
        format="rgb48le" if to_sdr is not None or deep else "rgb24",
        src_colorspace=effective_colorspace(int(frame.colorspace), frame.height),
        src_color_range=source_range(frame),
        dst_color_range=RANGE_FULL,
        interpolation=Interpolation.LANCZOS if scaled else None,
        threads=threads,
    )
    return rgb.to_ndarray() if to_sdr is None else to_sdr(rgb.to_ndarray())


def yuv_for_encoder(frame: av.VideoFrame, pix_fmt: str, colorspace: int, reformatter: VideoReformatter, *,
                    threads: int = 0) -> av.VideoFrame:
    """A decoded frame ready for an encoder of `pix_fmt` tagged `colorspace`, limited range: the frame itself
    when it already is (no copy, no conversion), else one swscale pass YUV to YUV (never through RGB)."""
    src_colorspace = effective_colorspace(int(frame.colorspace), frame.height)
    src_range = source_range(frame)
    if frame.format.name != pix_fmt or src_range != RANGE_LIMITED or src_colorspace != colorspace:
        frame = reformatter.reformat(frame, format=pix_fmt, src_colorspace=src_colorspace, dst_colorspace=colorspace,
                                     src_color_range=src_range, dst_color_range=RANGE_LIMITED, threads=threads)
    frame.pict_type = PictureType.NONE  # the decoder's I/P/B type would force the encoder's choice
    return frame


def rgb_to_frame(rgb: np.ndarray, size: tuple[int, int] | None = None, *, pix_fmt: str, colorspace: int,
                 reformatter: VideoReformatter, threads: int = 0) -> av.VideoFrame:
    """Encode-side conversion of H x W x 3 RGB (uint8, or uint16 for 10 bits and more) to a limited-range YUV
    frame with `colorspace`, scaled to `size` (width, height) in the same pass when given."""
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb48le" if rgb.dtype == np.uint16 else "rgb24")
    width, height = size or (None, None)
    return reformatter.reformat(
        frame,
        width=width,
        height=height,
        interpolation=Interpolation.BICUBIC if size else None,
        format=pix_fmt,
        src_colorspace=colorspace,
        dst_colorspace=colorspace,
        src_color_range=RANGE_FULL,
        dst_color_range=RANGE_LIMITED,
        threads=threads,
    )
