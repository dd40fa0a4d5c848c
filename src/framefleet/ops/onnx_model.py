"""`onnx`: run any ONNX model over frames, declaring how frames go in and what comes out.

Going in, each frame is resized (bilinear) to `size`, put in `channels` order, its pixels 0..255 mapped
linearly onto `value_range`, normalised per channel as (x - mean) / std, and laid out as `layout` in the
type the model's input declares: float32, float16 or float64; a uint8 input takes the pixels as they are
(value_range [0, 255], no mean or std). The model must take that image as its only input.

Coming out, by `produces`:

- records: one record per frame, with a column per kept output (each output's first dimension is the
  batch). An output whose declared shape gives one value per frame ([N], [N, 1], ...) becomes a number;
  any other (including one of unknown or dynamic shape) becomes a flat list in row-major order, so a
  column keeps one type across frames. Values keep their kind (float, int, bool).
- frames: the model maps images to images. Its first kept output is mapped back through the inverse of
  the input mapping (a uint8 output is taken as pixels), rounded to uint8 and resized back to the frame's
  size, so the video keeps its size.

A model whose batch dimension is dynamic gets the whole batch in one run; one with a fixed batch of B
(often 1) gets B frames per run, the last run padded with copies of the last frame.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnxruntime as ort
from PIL import Image

from framefleet.errors import OpError, OptionError
from framefleet.ops.base import Device, Knob
from framefleet.ops.onnx_session import OnnxOp
from framefleet.ops.runtime_choice import gate_frames
from framefleet.ops.runtimes import Engine
from framefleet.processing.batch import RESERVED_COLUMNS, FrameBatch
from framefleet.processing.images import resize, to_uint8

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
           "tensor(uint8)": np.uint8}
_CHANNEL_AXIS = {"NCHW": 1, "NHWC": 3}
_SPATIAL_AXES = {"NCHW": (3, 2), "NHWC": (2, 1)}
"""Where width and height sit in each layout."""


class _Tensor(NamedTuple):
    """A model input or output as onnxruntime declares it (dims: int, a symbol's name, or None)."""

    name: str
    shape: list[Any]
    type: str


@dataclass(kw_only=True)
class OnnxModelOp(OnnxOp):
    """Run a user's ONNX model on every frame: records from its outputs, or new frames (`produces`)."""

    name = "onnx"
    picture = "sdr"  # models are trained on SDR pictures
    knobs = (
        Knob("batch_size", "frames per process call (one model run when its batch size is dynamic)",
             (1, 8, 32), False),
        Knob("device", "where the model runs", ("cpu", "cuda"), False),
    )

    model: str = ""
    """The ONNX file (kept as an absolute path; on a cluster every node must read it there)."""
    input: str | None = None
    """The image input's name (None: the model's only input)."""
    outputs: list[str] | None = None
    """The outputs to keep (None: all; with produces: frames, the first is the image)."""
    layout: str = "NCHW"
    """NCHW or NHWC, for the input and, with produces: frames, the output."""
    value_range: list[float] = field(default_factory=lambda: [0.0, 1.0])
    """[lo, hi]: pixel 0 maps to lo, 255 to hi."""
    mean: list[float] | None = None
    """Per-channel values subtracted after the range mapping, in the model's channel order."""
    std: list[float] | None = None
    """Per-channel divisors applied after `mean`, in the model's channel order."""
    channels: str = "RGB"
    """RGB or BGR: the channel order the model expects."""
    size: list[int] | None = None
    """[width, height] the model sees (None: its fixed input size, else the frame's own)."""
    produces: str = "records"
    """records or frames."""
    batch_size: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.model, os.PathLike):
            self.model = os.fspath(self.model)
        if not isinstance(self.model, str) or not self.model:
            raise OptionError("onnx: give the model file, e.g. model: detector.onnx")
        self.model = os.path.abspath(self.model)  # workers and later runs may start elsewhere
        for option, choices in (("layout", ("NCHW", "NHWC")), ("channels", ("RGB", "BGR")),
                                ("produces", ("records", "frames"))):
            value = getattr(self, option)
            if value not in choices:
                raise OptionError(f"onnx: {option} must be {' or '.join(choices)}, got {value!r}")
        self.value_range = _numbers("value_range", self.value_range, 2, "e.g. [0, 1] or [-1, 1]")
        if not self.value_range[0] < self.value_range[1]:
            raise OptionError(f"onnx: value_range must be [lo, hi] with lo < hi, got {self.value_range}")
        if self.mean is not None:
            self.mean = _numbers("mean", self.mean, 3, "one per channel, e.g. [0.485, 0.456, 0.406]")
        if self.std is not None:
            self.std = _numbers("std", self.std, 3, "one per channel, e.g. [0.229, 0.224, 0.225]")
            if min(self.std) <= 0:
                raise OptionError(f"onnx: std values must be positive, got {self.std}")
        if self.size is not None:
            if (not isinstance(self.size, (list, tuple)) or len(self.size) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in self.size)):
                raise OptionError(f"onnx: size must be [width, height] in whole pixels, got {self.size!r}")
            self.size = list(self.size)
        inputs, outputs = _signature(self.model)
        self._check_input(inputs)
        self._check_outputs(outputs)
        self._session: Engine | None = None

    @property
    def writes_frames(self) -> bool:  # type: ignore[override]
        """True with produces: frames."""
        return self.produces == "frames"

    @property
    def writes_records(self) -> bool:  # type: ignore[override]
        """True with produces: records."""
        return self.produces == "records"

    def model_files(self) -> list[Path]:
        return [Path(self.model)]

    def setup(self, device: Device) -> None:
        self._session = self.open_engine(Path(self.model), device, self._gate_feeds, f"onnx model {self.model}")

    def _gate_feeds(self) -> dict[str, np.ndarray]:
        """The model's input for the gate frames (`runtime_choice`), in one of its batches."""
        frames = gate_frames(self._batch or 2)
        height, width = frames.shape[1:3]
        return {self._input: self._tensor(frames, self._size[0] or width, self._size[1] or height)}

    def teardown(self) -> None:
        self._session = None

    def process(self, batch: FrameBatch) -> FrameBatch:
        height, width = batch.frames.shape[1:3]
        results = self._run(self._tensor(batch.frames, self._size[0] or width, self._size[1] or height))
        if self.produces == "frames":
            return batch.with_frames(self._frames(results[0], width, height))
        for row in range(len(batch)):
            batch.add_record(row, **{name: _value(values[row], name in self._scalars)
                                     for name, values in zip(self._kept, results)})
        return batch

    def _check_input(self, inputs: list[_Tensor]) -> None:
        names = [t.name for t in inputs]
        if self.input is not None and self.input not in names:
            raise OptionError(f"onnx: model {self.model} has no input {self.input!r}; its inputs are "
                              f"{', '.join(names)}")
        if len(inputs) != 1:
            raise OptionError(f"onnx: model {self.model} takes inputs {', '.join(names)}, but this op feeds "
                              "one image; export the model with the image as its only input")
        image = inputs[0]
        if image.type not in _DTYPES:
            raise OptionError(f"onnx: input {image.name} is {image.type}; this op feeds float, float16, "
                              "double or uint8 images")
        self._input = image.name
        self._dtype = _DTYPES[image.type]
        if self._dtype == np.uint8 and (self.value_range != [0.0, 255.0] or self.mean or self.std):
            raise OptionError(f"onnx: input {image.name} takes uint8 pixels; set value_range: [0, 255] "
                              "and drop mean and std")
        shape = image.shape
        self._batch: int | None = None
        self._size: tuple[int | None, int | None] = tuple(self.size) if self.size else (None, None)
        if not shape:  # rank unknown: nothing to check
            return
        _check_image_shape(f"input {image.name}", shape, self.layout)
        self._batch = _fixed(shape[0])
        fixed = tuple(_fixed(shape[axis]) for axis in _SPATIAL_AXES[self.layout])
        if self.size and any(f is not None and f != s for f, s in zip(fixed, self.size)):
            raise OptionError(f"onnx: size {self.size} does not match the model's input {image.name} "
                              f"({_describe(shape)}, {self.layout}); drop size or match it")
        self._size = tuple(s or f for s, f in zip(self._size, fixed))

    def _check_outputs(self, outputs: list[_Tensor]) -> None:
        names = [t.name for t in outputs]
        kept = names if self.outputs is None else self.outputs
        if not isinstance(kept, (list, tuple)) or not kept or not all(isinstance(n, str) for n in kept):
            raise OptionError(f"onnx: outputs must be a list of output names, got {kept!r}")
        if self.outputs is not None:
            self.outputs = list(self.outputs)
        unknown = [n for n in kept if n not in names]
        if unknown:
            raise OptionError(f"onnx: model {self.model} has no output {unknown[0]!r}; its outputs are "
                              f"{', '.join(names)}")
        if len(set(kept)) != len(kept):
            raise OptionError(f"onnx: outputs {kept} name an output twice; list each once")
        declared = {t.name: t for t in outputs}
        if self.produces == "frames":
            image = declared[kept[0]]
            if image.shape:
                _check_image_shape(f"output {image.name}", image.shape, self.layout)
            self._kept = kept[:1]
            self._scalars: frozenset[str] = frozenset()
            return
        clash = RESERVED_COLUMNS.intersection(kept)
        if clash:
            raise OptionError(f"onnx: output {min(clash)} would clash with a record column framefleet fills; "
                              "keep other outputs with outputs: [...]")
        self._kept = list(kept)
        self._scalars = frozenset(
            n for n in kept
            if len(declared[n].shape) >= 1 and all(_fixed(d) == 1 for d in declared[n].shape[1:])
        )

    def _tensor(self, frames: np.ndarray, width: int, height: int) -> np.ndarray:
        """The model's input for `frames` (N x H x W x 3 uint8)."""
        pixels = np.stack([resize(frame, width, height, Image.BILINEAR) for frame in frames])
        if self.channels == "BGR":
            pixels = pixels[..., ::-1]
        values: np.ndarray = pixels
        if self._dtype != np.uint8:
            lo, hi = self.value_range
            values = pixels.astype(np.float32) * np.float32((hi - lo) / 255.0) + np.float32(lo)
            if self.mean is not None or self.std is not None:
                values = (values - self._channel_values(self.mean, 0.0)) / self._channel_values(self.std, 1.0)
        if self.layout == "NCHW":
            values = values.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(values, dtype=self._dtype)

    def _run(self, tensor: np.ndarray) -> list[np.ndarray]:
        """The kept outputs for every frame of `tensor`, run in one go or in the model's fixed batches."""
        count = len(tensor)
        step = self._batch or count
        parts = []
        for start in range(0, count, step):
            chunk = tensor[start:start + step]
            if len(chunk) < step:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - len(chunk), axis=0)])
            results = self._session.run(self._kept, {self._input: chunk})
            for name, values in zip(self._kept, results):
                if values.ndim == 0 or values.shape[0] != step:
                    raise OpError(f"onnx: output {name} has shape {list(values.shape)} for {step} frames; "
                                  "keep outputs with one row per frame (outputs: [...])")
            parts.append(results)
        return [np.concatenate([part[i] for part in parts])[:count] for i in range(len(self._kept))]

    def _frames(self, values: np.ndarray, width: int, height: int) -> np.ndarray:
        """Frames of width x height from the model's image output (the input mapping undone)."""
        if values.ndim != 4 or values.shape[_CHANNEL_AXIS[self.layout]] != 3:
            raise OpError(f"onnx: output {self._kept[0]} has shape {list(values.shape)}, not 3-channel "
                          f"{self.layout} images; check layout and outputs")
        if self.layout == "NCHW":
            values = values.transpose(0, 2, 3, 1)
        if values.dtype != np.uint8:
            values = values.astype(np.float32)
            if self.mean is not None or self.std is not None:
                values = values * self._channel_values(self.std, 1.0) + self._channel_values(self.mean, 0.0)
            lo, hi = self.value_range
            values = to_uint8((values - lo) / (hi - lo))
        if self.channels == "BGR":
            values = values[..., ::-1]
        return np.stack([resize(np.ascontiguousarray(image), width, height, Image.BILINEAR)
                         for image in values])

    @staticmethod
    def _channel_values(values: list[float] | None, default: float) -> np.ndarray:
        return np.asarray(values if values is not None else [default] * 3, dtype=np.float32)


def _signature(model: str) -> tuple[list[_Tensor], list[_Tensor]]:
    """The inputs and outputs `model` declares, read with a throwaway CPU session."""
    if not Path(model).is_file():
        raise OptionError(f"onnx: model {model}: no such file")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for bad or unsupported files
        reason = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", str(exc).strip()).splitlines()[0][:300]
        raise OptionError(f"onnx: model {model}: cannot load it as an ONNX model ({reason})") from None
    return ([_Tensor(t.name, list(t.shape), t.type) for t in session.get_inputs()],
            [_Tensor(t.name, list(t.shape), t.type) for t in session.get_outputs()])


def _numbers(option: str, values: Any, count: int, hint: str) -> list[float]:
    """`values` as `count` finite floats, or an `OptionError` naming `option`."""
    numbers = isinstance(values, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    if not numbers or len(values) != count:
        raise OptionError(f"onnx: {option} must be {count} numbers ({hint}), got {values!r}")
    return [float(v) for v in values]


def _value(values: np.ndarray, scalar: bool) -> Any:
    """One frame's slice of an output as a record value: a number, or a flat list."""
    return values.item() if scalar else values.ravel().tolist()


def _fixed(dim: Any) -> int | None:
    """A declared dimension's size, or None when it is symbolic or unknown."""
    return dim if isinstance(dim, int) and dim > 0 else None


def _describe(shape: list[Any]) -> str:
    return " x ".join("?" if _fixed(d) is None else str(d) for d in shape)


def _check_image_shape(what: str, shape: list[Any], layout: str) -> None:
    """Refuse a declared shape that cannot hold 3-channel images in `layout`."""
    if len(shape) != 4:
        raise OptionError(f"onnx: {what} has shape {_describe(shape)}; this op works on images, "
                          "N x C x H x W (layout: NCHW) or N x H x W x C (layout: NHWC)")
    channels = _fixed(shape[_CHANNEL_AXIS[layout]])
    other = "NHWC" if layout == "NCHW" else "NCHW"
    if channels not in (None, 3):
        fix = "this op needs 3 channels"
        if _fixed(shape[_CHANNEL_AXIS[other]]) == 3:
            fix = f"set layout: {other}"
        raise OptionError(f"onnx: {what} has shape {_describe(shape)}, so with layout {layout} it has "
                          f"{channels} channels, not 3; {fix}")
    if channels is None and _fixed(shape[_CHANNEL_AXIS[other]]) == 3:
        raise OptionError(f"onnx: {what} has shape {_describe(shape)}: 3 channels where {other} has them and "
                          f"any number where {layout} has them; set layout: {other}")
