"""How much of a reference frame's detail a processed frame keeps, and the split of a picture into a low
and a high band of spatial frequencies.

- `laplacian_variance`: the variance of the Laplacian of the grey frame (values in [0, 1]); fine texture
  and sharp edges raise it, blur lowers it. `detail_kept` is its ratio between a processed frame and the
  reference (the per-frame output), at the frames' full size: 1 keeps every detail, below 1 is softer.
- `ssim`: the structural similarity of Wang et al. (2004) on the grey frames, Gaussian window sigma 1.5.
- `split_bands`: low = Gaussian blur of sigma `BAND_SIGMA` (3 px at output size), high = the rest; texture
  shimmer lives in the high band, colour and lighting pulses in the low.
"""

from __future__ import annotations

import cv2
import numpy as np

BAND_SIGMA = 3.0
"""Sigma in pixels, at the output's size, of the Gaussian that separates the low band from the high."""
_SSIM_C1, _SSIM_C2 = 0.01 ** 2, 0.03 ** 2


def grey(rgb: np.ndarray) -> np.ndarray:
    """H x W float32 in [0, 1] from an H x W x 3 uint8 RGB frame."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0


def laplacian_variance(rgb: np.ndarray) -> float:
    """The variance of the grey frame's Laplacian (3 x 3 aperture)."""
    return float(cv2.Laplacian(grey(rgb), cv2.CV_32F, ksize=1).var())


def detail_kept(processed: np.ndarray, reference: np.ndarray) -> float:
    """Laplacian variance of `processed` over that of `reference` (frames of the same size); 1.0 when the
    reference is flat."""
    if processed.shape != reference.shape:
        raise ValueError(f"frames of different sizes: {processed.shape} and {reference.shape}")
    base = laplacian_variance(reference)
    return laplacian_variance(processed) / base if base > 0 else 1.0


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean structural similarity of two RGB frames of the same size (1.0: identical)."""
    x, y = grey(a), grey(b)

    def smooth(values: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(values, (0, 0), 1.5)

    mx, my = smooth(x), smooth(y)
    vx, vy, cxy = smooth(x * x) - mx * mx, smooth(y * y) - my * my, smooth(x * y) - mx * my
    index = ((2 * mx * my + _SSIM_C1) * (2 * cxy + _SSIM_C2)) / ((mx * mx + my * my + _SSIM_C1) * (vx + vy + _SSIM_C2))
    return float(index.mean())


def low_band(values: np.ndarray, sigma: float = BAND_SIGMA) -> np.ndarray:
    """The float32 low band of `values` (any channels): their Gaussian blur of `sigma` px."""
    return cv2.GaussianBlur(values.astype(np.float32, copy=False), (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def split_bands(values: np.ndarray, sigma: float = BAND_SIGMA) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) float32 bands of `values` (any channels): low + high == values."""
    values = values.astype(np.float32, copy=False)
    low = low_band(values, sigma)
    return low, cv2.subtract(values, low)
