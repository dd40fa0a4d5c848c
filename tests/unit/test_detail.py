"""Detail kept, SSIM and the band split of the warping error, on synthetic frames with known answers."""

from __future__ import annotations

import cv2
import numpy as np

from framefleet.processing.detail import detail_kept, split_bands, ssim
from framefleet.processing.temporal import FlowEstimator, pair_error


def textured(seed: int = 0, size: tuple[int, int] = (96, 128)) -> np.ndarray:
    """Fine random texture over a smooth gradient, uint8 RGB."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(60, 190, size[1], dtype=np.float32)[None, :, None]
    return np.clip(ramp + rng.normal(0, 25, (*size, 3)), 0, 255).astype(np.uint8)


def test_an_identical_copy_keeps_all_detail_and_a_blurred_one_less():
    frame = textured()
    assert detail_kept(frame, frame) == 1.0 and abs(ssim(frame, frame) - 1.0) < 1e-6
    blurred = cv2.GaussianBlur(frame, (0, 0), 1.0)
    assert detail_kept(blurred, frame) < 0.5
    assert ssim(blurred, frame) < 0.9


def test_bands_add_up_and_the_high_band_holds_the_texture():
    frame = textured().astype(np.float32)
    low, high = split_bands(frame)
    assert np.allclose(low + high, frame, atol=1e-3)
    assert high.std() > 4 * np.abs(np.diff(low, axis=1)).mean()


def test_shimmer_shows_in_the_high_band_and_a_pulse_in_the_low():
    still = textured(1)
    estimator = FlowEstimator()
    rng = np.random.default_rng(2)
    shimmer = np.clip(still + rng.choice([-12, 12], still.shape), 0, 255).astype(np.uint8)
    pulse = np.clip(still.astype(np.int16) + 12, 0, 255).astype(np.uint8)
    shimmering = pair_error(estimator, (still, still), (still, shimmer), 1)
    pulsing = pair_error(estimator, (still, still), (still, pulse), 1)
    assert shimmering.high > 5 * shimmering.low
    assert pulsing.low > 20 * pulsing.high
    assert abs(shimmering.low + shimmering.high - shimmering.error) < 0.2 * shimmering.error
