"""int8 models by post-training static quantization, cached on disk by the model's and calibration's hash.

onnxruntime's `quantize_static` writes the model in QDQ form: the weights of every Conv and ConvTranspose
quantized per output channel (signed int8), their input activations per tensor (unsigned int8, ranges
from MinMax calibration). Only the convolutions are quantized: instance normalisation, the upsampling and
the wrapper's pixel arithmetic (`ops.fused`) stay in floating point, so int8 speeds up the convolutions
alone (docs/benchmarks.md, int8). OpenVINO runs the QDQ graph with int8 convolutions (VNNI where the CPU
has it) and the rest at the CPU's best float precision; onnxruntime runs it too, hardly faster than fp32.

The calibration feeds are a model's inputs on representative frames; the quantized model is kept in
framefleet's cache under the hash of the model and of those feeds, so a machine quantizes a model for a
given calibration once (about a second at 640 x 360), as it builds the fused model once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from framefleet.files.temporary import temporary_path
from framefleet.util.cache import cache_dir

log = logging.getLogger(__name__)

FORMAT = 1
"""Bumped when the quantization recipe changes, so cached int8 models of an older recipe are made afresh."""
QUANTIZED_OPS = ("Conv", "ConvTranspose")

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class Calibration:
    """What an op gives for its model to be quantized."""

    feeds: Callable[[], list[Feeds]]
    """The model's inputs on representative frames, one run each."""
    keep_float: tuple[str, ...] = ()
    """Names of convolutions left in floating point."""


class QuantizationError(Exception):
    """The model could not be quantized (the message is the reason, one line)."""


def cached_int8(model: bytes, calibration: Calibration) -> bytes:
    """`model` quantized to int8 (QDQ, per-channel weights) on `calibration`'s feeds: read from the cache,
    else made and kept there. QuantizationError when onnxruntime cannot quantize it."""
    feeds = calibration.feeds()
    digest = hashlib.sha256(model)
    digest.update(repr(calibration.keep_float).encode())
    for item in feeds:
        for name in sorted(item):
            digest.update(name.encode() + np.ascontiguousarray(item[name]).tobytes())
    target = cache_dir("models") / f"int8-{digest.hexdigest()[:20]}-v{FORMAT}.onnx"
    try:
        return target.read_bytes()
    except OSError:
        pass
    log.info("quantizing a model to int8 on %d calibration inputs", len(feeds))
    quantized = quantize_int8(model, feeds, calibration.keep_float)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = temporary_path(target)
        staging.write_bytes(quantized)
        os.replace(staging, target)
    except OSError as exc:  # a read-only home: quantize in every process instead
        log.info("cannot cache %s (%s)", target, exc)
    return quantized


def quantize_int8(model: bytes, feeds: list[Feeds], keep_float: tuple[str, ...] = ()) -> bytes:
    """`model` with its convolutions (but those named in `keep_float`) quantized to int8 (QDQ; weights per
    channel, activations per tensor, MinMax ranges over `feeds`)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds: Iterator[Feeds] = iter(feeds)

        def get_next(self) -> Feeds | None:
            return next(self._feeds, None)

    with tempfile.TemporaryDirectory(prefix="framefleet-int8-") as folder:
        source, prepared, quantized = (Path(folder) / name for name in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        source.write_bytes(model)
        try:
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            quantize_static(str(prepared), str(quantized), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_exclude=list(keep_float))
        except Exception as exc:  # noqa: BLE001 - onnx and onnxruntime raise many types here
            raise QuantizationError(" ".join(str(exc).split())[:300] or type(exc).__name__) from None
        return quantized.read_bytes()
