"""Small built-in steps for pipelines: sample frames, resize, blur."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageFilter

from framefleet.errors import OptionError
from framefleet.ops.base import Op
from framefleet.processing.batch import FrameBatch
from framefleet.processing.images import fit_within


@dataclass(kw_only=True)
class SampleOp(Op):
    """Keep `fps` frames per second for the steps after it: the first frame at or after each 1/fps tick of
    its timestamp (a quarter frame early counts, for timestamps rounded to their time base), so variable
    frame rates and segments sample alike; frames pass through unchanged."""

    name = "sample"
    writes_frames = False
    fps: float = 1.0
    batch_size: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.fps, bool) or not isinstance(self.fps, (int, float)) or not 0 < self.fps < math.inf:
            raise OptionError(f"sample: fps must be a positive number, got {self.fps!r}")

    def input_size(self, width: int, height: int) -> None:
        return None  # timestamps only

    def process(self, batch: FrameBatch) -> FrameBatch:
        times = batch.seconds()
        step = float(1 / batch.frame_rate) if batch.frame_rate else _typical_step(times)
        # A frame is kept when a tick k/fps falls in the frame interval that ends at its time, shifted by a
        # quarter frame so that timestamps rounded to the time base's ticks land on the right side.
        end = times + step / 4
        keep = np.floor(end * self.fps) > np.floor((end - step) * self.fps)
        out = batch.copy()
        out.selected = keep if batch.selected is None else batch.selected & keep
        return out


def _typical_step(times: np.ndarray) -> float:
    steps = np.diff(times)
    return float(np.median(steps)) if len(steps) else 1 / 30


@dataclass(kw_only=True)
class ResizeOp(Op):
    """Scale frames so the longest side is `max_size` (never enlarged; even sizes, as video needs). The
    output video has the new size."""

    name = "resize"
    high_bit_depth = True
    max_size: int = 720
    batch_size: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.max_size, bool) or not isinstance(self.max_size, int) or self.max_size < 16:
            raise OptionError(f"resize: max_size must be a whole number of at least 16, got {self.max_size!r}")

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        return fit_within(width, height, self.max_size, even=True)

    def input_size(self, width: int, height: int) -> tuple[int, int]:
        return self.output_size(width, height)  # scaled while converting from the decoder's frames

    def process(self, batch: FrameBatch) -> FrameBatch:
        return batch.with_frames(batch.frames_at(*self.output_size(*batch.size)))


@dataclass(kw_only=True)
class BlurOp(Op):
    """Gaussian blur of whole frames (with `when`, of the frames another op flagged)."""

    name = "blur"
    high_bit_depth = True
    radius: float = 12.0
    batch_size: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.radius, bool) or not isinstance(self.radius, (int, float)) or not 0 < self.radius < 1000:
            raise OptionError(f"blur: radius must be a positive number of pixels, got {self.radius!r}")

    def process(self, batch: FrameBatch) -> FrameBatch:
        if batch.frames.dtype == np.uint16:  # Pillow blurs 8-bit pictures only; its radius is the sigma
            return batch.with_frames(np.stack([cv2.GaussianBlur(f, (0, 0), self.radius) for f in batch.frames]))
        blur = ImageFilter.GaussianBlur(self.radius)
        return batch.with_frames(np.stack([np.asarray(Image.fromarray(f).filter(blur)) for f in batch.frames]))
