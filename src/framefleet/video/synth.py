"""Synthetic clips made with PyAV: the demo's example video and the test suite's media.

The picture is a smooth colour field with moving shapes (natural enough for a style model to show its
style) and, in the displayed top-left corner, a solid red marker block, so tests can check orientation.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np
from PIL import Image

MARKER = 16
"""Side of the red marker square in the displayed top-left corner, in pixels."""


@dataclass(frozen=True)
class ClipSpec:
    """What to put in a synthetic clip."""

    width: int = 320
    height: int = 240
    """Displayed size (before any rotation is stored)."""
    frames: int = 48
    rate: Fraction = Fraction(24)
    vfr: bool = False
    """Vary frame durations (1 to 3 ticks of `rate`) to make a variable-frame-rate clip."""
    codec: str = "libx264"
    pix_fmt: str = "yuv420p"
    gop: int = 12
    bframes: int = 2
    rotation: int = 0
    """Counter-clockwise display rotation to store in the display matrix (0, 90, 180, 270)."""
    hflip: bool = False
    color_range: int = 1
    """1 limited, 2 full."""
    audio: tuple[str, ...] = ()
    """Audio codecs, one track each (e.g. ("aac", "aac")); each track gets its own tone."""
    audio_rate: int = 48000
    time_base: Fraction = field(default=Fraction(1, 12800))
    transfer: str = "sdr"
    """sdr, or pq / hlg for an HDR clip: BT.2020, 10-bit (`hdr_picture`'s code values; pick a 10-bit `pix_fmt`
    and an encoder that takes it), PQ with HDR10 metadata (1,000 cd/m2 mastering and MaxCLL) when x265 or
    x264 writes it."""
    lossless: bool = False
    """Encode losslessly (x264 and x265), so a test can compare the decoded samples with what was written."""


HDR_MASTERING = "G(8500,39850)B(6550,2300)R(35400,14600)WP(15635,16450)L(10000000,50)"
"""The HDR10 mastering display of HDR clips (BT.2020 primaries, D65, 1,000 cd/m2), in x265's notation."""
HDR_MAX_CLL = (1000, 400)


def hdr_picture(index: int, width: int, height: int) -> np.ndarray:
    """The displayed HDR picture of frame `index`: H x W x 3 uint16 R'G'B' code values (full range): a
    brightness ramp from black to near the coding's top across the width, smooth colour waves, and a moving
    bright disk, so the dark, the mid-tones and the highlights are all present; the red marker as in `picture`."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    t = index / 12.0
    ramp = 0.05 + 0.8 * x / max(width - 1, 1)
    r = ramp * (0.85 + 0.15 * np.sin(y / max(height, 1) * 5.0 + t))
    g = ramp * (0.85 + 0.15 * np.sin(x / max(width, 1) * 4.0 - t * 0.7))
    b = ramp * (0.85 + 0.15 * np.sin((x + y) / max(width + height, 1) * 6.0 + t * 1.3))
    img = np.stack([r, g, b], axis=-1)
    cx, cy, rad = (0.2 + 0.6 * ((index * 7) % 100) / 100) * width, height * 0.6, max(4, min(width, height) // 6)
    img[(x - cx) ** 2 + (y - cy) ** 2 < rad**2] = (0.78, 0.74, 0.45)
    img[:MARKER, :MARKER] = (0.7, 0.0, 0.0)
    return (img * 65535 + 0.5).astype(np.uint16)


def picture(index: int, width: int, height: int) -> np.ndarray:
    """The displayed RGB picture of frame `index`."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    t = index / 12.0
    r = 127 + 100 * np.sin(x / max(width, 1) * 6.0 + t)
    g = 127 + 100 * np.sin(y / max(height, 1) * 5.0 - t * 0.7)
    b = 127 + 100 * np.sin((x + y) / max(width + height, 1) * 8.0 + t * 1.3)
    img = np.stack([r, g, b], axis=-1)
    cx = int((0.2 + 0.6 * ((index * 7) % 100) / 100) * width)
    cy = height // 2
    rad = max(4, min(width, height) // 6)
    disk = (x - cx) ** 2 + (y - cy) ** 2 < rad**2
    img[disk] = (240, 230, 60)
    img[height // 4 : height // 4 + max(2, height // 12), :] = (30, 60, 160)
    img[:MARKER, :MARKER] = (255, 0, 0)
    return np.clip(img, 0, 255).astype(np.uint8)


def _stored(displayed: np.ndarray, rotation: int, hflip: bool) -> np.ndarray:
    """Invert the display transform: the pixels to store so that the player shows `displayed`."""
    img = displayed[:, ::-1] if hflip else displayed
    return np.ascontiguousarray(np.rot90(img, k=-(rotation // 90)))


def frame_times(spec: ClipSpec) -> list[int]:
    """Presentation timestamps of the clip's frames in `spec.time_base` units."""
    step = 1 / (spec.rate * spec.time_base)
    times, t = [], Fraction(0)
    for i in range(spec.frames):
        times.append(round(t))
        t += step * ((i % 3) + 1 if spec.vfr else 1)
    return times


def panning(image: np.ndarray, width: int, height: int, *, scale: float = 0.6) -> Callable[[int], np.ndarray]:
    """Pictures of `image` (H x W x 3 uint8, e.g. a photo with a face) scaled to `scale` of the frame's
    height, gliding 2 pixels a frame across a grey gradient of width x height: a moving clip from a still."""
    side = max(2, round(height * scale))
    small = np.asarray(Image.fromarray(image).resize((round(side * image.shape[1] / image.shape[0]), side),
                                                     Image.LANCZOS))
    background = np.repeat(np.linspace(60, 200, width, dtype=np.float32)[None, :, None], height, 0)
    background = np.repeat(background, 3, 2).astype(np.uint8)
    travel = max(1, width - small.shape[1])
    top = (height - small.shape[0]) // 2

    def picture_at(index: int) -> np.ndarray:
        left = (2 * index) % travel
        frame = background.copy()
        frame[top:top + small.shape[0], left:left + small.shape[1]] = small[:, :width - left]
        return frame

    return picture_at


def write_clip(path: str | os.PathLike[str], spec: ClipSpec = ClipSpec(),
               pictures: Callable[[int], np.ndarray] | None = None) -> list[int]:
    """Write a clip per `spec` (its pictures from `pictures(index)`, default `picture`, in displayed
    orientation); return the video pts written (stream time base of `spec`)."""
    pts_list = frame_times(spec)
    with av.open(str(path), mode="w") as out:
        stored_w, stored_h = (spec.height, spec.width) if spec.rotation % 180 else (spec.width, spec.height)
        vs = out.add_stream(spec.codec, rate=spec.rate)
        vs.width, vs.height, vs.pix_fmt = stored_w, stored_h, spec.pix_fmt
        vs.time_base = spec.time_base
        vs.codec_context.time_base = spec.time_base
        vs.codec_context.color_range = spec.color_range
        vs.codec_context.gop_size = spec.gop
        vs.codec_context.max_b_frames = spec.bframes
        if spec.codec == "libx264":
            vs.codec_context.options = {"preset": "ultrafast" if not spec.bframes else "veryfast",
                                        "crf": "0" if spec.lossless else "18",
                                        "keyint": str(spec.gop), "min-keyint": str(spec.gop),
                                        "scenecut": "0", "bframes": str(spec.bframes)}
        if spec.codec == "libx265":
            params = ["log-level=error", f"keyint={spec.gop}", f"bframes={spec.bframes}"] + ["lossless=1"] * spec.lossless
            if spec.transfer == "pq":
                params += ["hdr10=1", f"master-display={HDR_MASTERING}", "max-cll={},{}".format(*HDR_MAX_CLL)]
            vs.codec_context.options = {"preset": "ultrafast", "x265-params": ":".join(params)}
        matrix = 1 if spec.height >= 720 else 5
        if spec.transfer != "sdr":
            matrix = 9
            vs.codec_context.color_primaries, vs.codec_context.colorspace = 9, 9
            vs.codec_context.color_trc = {"pq": 16, "hlg": 18}[spec.transfer]
        if spec.rotation or spec.hflip:
            vs.set_display_rotation(spec.rotation, hflip=spec.hflip)
        tracks = [out.add_stream(codec, rate=spec.audio_rate) for codec in spec.audio]
        for track in tracks:
            track.layout = "stereo" if track.codec_context.name != "pcm_mulaw" else "mono"
        duration = float((pts_list[-1] + 1 / (spec.rate * spec.time_base)) * spec.time_base)
        for i, pts in enumerate(pts_list):
            default = picture if spec.transfer == "sdr" else hdr_picture
            shown = pictures(i) if pictures is not None else default(i, spec.width, spec.height)
            rgb = _stored(shown, spec.rotation, spec.hflip)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb48le" if rgb.dtype == np.uint16 else "rgb24").reformat(
                format=spec.pix_fmt, src_colorspace=matrix, dst_colorspace=matrix, src_color_range=2,
                dst_color_range=spec.color_range,
            )
            frame.pts, frame.time_base = pts, spec.time_base
            frame.color_range = spec.color_range
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        for n, track in enumerate(tracks):
            _write_tone(out, track, 330.0 * (n + 1), duration, spec.audio_rate)
    return pts_list


def _write_tone(out: av.container.OutputContainer, track, hz: float, seconds: float, rate: int) -> None:
    chunk = track.codec_context.frame_size or 1024
    total = int(seconds * rate)
    fmt = track.codec_context.format.name
    layout = track.layout.name
    channels = track.layout.nb_channels
    for start in range(0, total, chunk):
        n = min(chunk, total - start)
        t = (np.arange(start, start + n) / rate).astype(np.float32)
        wave = 0.3 * np.sin(2 * np.pi * hz * t)
        planar = fmt.endswith("p")
        if fmt.startswith("s16"):
            samples = (wave * 32767).astype(np.int16)
        elif fmt.startswith("s32"):  # e.g. libmp3lame's
            samples = (wave * 2147483647).astype(np.int32)
        else:
            samples = wave.astype(np.float32)
        data = np.tile(samples, (channels, 1)) if planar else np.repeat(samples, channels)[None, :]
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        out.mux(track.encode(frame))
    out.mux(track.encode(None))
