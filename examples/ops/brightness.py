"""Two small custom ops, the ones docs/ops.md builds step by step.

Brightness writes records (no pixels change): each frame's mean brightness, its contrast, a sharpness
score and whether it is dark. Gamma writes frames: it brightens (or darkens) every pixel.

    framefleet run clips/ -o out/ --op brightness:Brightness -p dark=50
    framefleet run clips/ -o out/ --op brightness:Gamma -p gamma=0.7

Run it from the folder holding this file (framefleet imports `brightness` from the current directory),
or put the folder on PYTHONPATH.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from framefleet import FrameBatch, Op
from framefleet.errors import OptionError

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
"""Rec. 601 weights: grey = 0.299 R + 0.587 G + 0.114 B."""


@dataclass(kw_only=True)
class Brightness(Op):
    """Per-frame picture statistics as records: brightness and contrast (mean and standard deviation of the
    grey picture, 0-255), sharpness (variance of its Laplacian: low for blurred or flat frames) and dark
    (brightness below `dark`)."""

    name = "brightness"
    writes_frames = False
    writes_records = True

    dark: float = 40.0
    """Frames whose mean grey level is below this are marked dark."""
    step: int = 2
    """Measure every step-th pixel in each direction (2: a quarter of the pixels; 1: all of them)."""
    batch_size: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.dark, bool) or not isinstance(self.dark, (int, float)) or not 0 <= self.dark <= 255:
            raise OptionError(f"brightness: dark must be a grey level from 0 to 255, got {self.dark!r}")
        if isinstance(self.step, bool) or not isinstance(self.step, int) or self.step < 1:
            raise OptionError(f"brightness: step must be a whole number of at least 1, got {self.step!r}")

    def process(self, batch: FrameBatch) -> FrameBatch:
        for row, frame in enumerate(batch.frames):
            grey = frame[::self.step, ::self.step].astype(np.float32) @ LUMA
            laplacian = (4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1]
                         - grey[1:-1, :-2] - grey[1:-1, 2:])
            brightness = float(grey.mean())
            batch.add_record(row, brightness=brightness, contrast=float(grey.std()),
                             sharpness=float(laplacian.var()), dark=brightness < self.dark)
        return batch


@dataclass(kw_only=True)
class Gamma(Op):
    """A gamma curve on every pixel: below 1 brightens the shadows, above 1 darkens them."""

    name = "gamma"
    gamma: float = 0.7
    batch_size: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, (int, float)) or not 0 < self.gamma <= 10:
            raise OptionError(f"gamma: gamma must be a number above 0 and at most 10, got {self.gamma!r}")
        levels = np.arange(256, dtype=np.float64) / 255
        self._table = np.round(255 * levels ** self.gamma).astype(np.uint8)

    def process(self, batch: FrameBatch) -> FrameBatch:
        return batch.with_frames(self._table[batch.frames])
