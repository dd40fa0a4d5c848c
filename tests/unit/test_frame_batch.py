"""`FrameBatch.frames_at`: scaled copies for pictures (Lanczos) and for analysis (area averages)."""

from __future__ import annotations

import numpy as np

from framefleet.processing.batch import FrameBatch


def test_an_analysis_copy_averages_areas_and_a_picture_copy_is_lanczos():
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (2, 36, 64, 3), dtype=np.uint8)
    batch = FrameBatch(frames, np.arange(2, dtype=np.int64), index=0)
    analysis = batch.frames_at(32, 18, analysis=True)
    blocks = frames.reshape(2, 18, 2, 32, 2, 3).astype(np.float32).mean(axis=(2, 4))
    assert analysis.shape == (2, 18, 32, 3) and np.abs(analysis - blocks).max() <= 1
    picture = batch.frames_at(32, 18)
    assert np.abs(picture.astype(np.float32) - blocks).mean() > 2  # Lanczos sharpens: not the plain average
    assert batch.frames_at(32, 18, analysis=True) is analysis and batch.frames_at(32, 18) is picture  # kept
