"""Pixel helpers the built-in ops share (Pillow resampling, value conversions)."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image


def resize(rgb: np.ndarray, width: int, height: int, resample: Image.Resampling = Image.LANCZOS) -> np.ndarray:
    """Resize an H x W x 3 uint8 frame (Lanczos unless told otherwise); a uint16 one with OpenCV's Lanczos
    (Pillow resizes 8-bit colour only)."""
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    if rgb.dtype == np.uint16:
        return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LANCZOS4)
    return np.asarray(Image.fromarray(rgb).resize((width, height), resample))


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] to uint8, rounding to nearest."""
    return (np.clip(values, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def fit_within(width: int, height: int, longest: int, *, even: bool = False) -> tuple[int, int]:
    """The size of width x height scaled so its longest side is `longest` (never enlarged); `even`
    rounds to even sizes (what 4:2:0 video needs)."""
    scale = min(1.0, longest / max(width, height))
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    if even:
        w, h = max(2, w - w % 2), max(2, h - h % 2)
    return w, h
