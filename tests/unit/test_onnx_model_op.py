"""OnnxModelOp: tiny ONNX models built here, their records and frames against numpy on the same pixels,
and the one-line errors for models and options that cannot work."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from framefleet.errors import OptionError
from framefleet.ops.base import Device
from framefleet.ops.onnx_model import OnnxModelOp
from framefleet.processing.batch import FrameBatch
from framefleet.processing.images import resize

onnx = pytest.importorskip("onnx")
helper = onnx.helper
TensorProto = onnx.TensorProto
CPU = Device(kind="cpu", threads=1)
FLOAT = TensorProto.FLOAT


def save_model(path: Path, nodes: list, inputs: list, outputs: list, initializers: tuple = ()) -> str:
    """Check and save a one-graph model (opset 17) to `path`; returns its path as a string."""
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def image_shape(layout: str, batch: int | str = "n", height: int | str = "h", width: int | str = "w") -> list:
    return [batch, 3, height, width] if layout == "NCHW" else [batch, height, width, 3]


def tensor(name: str, shape: list, elem_type: int = FLOAT):
    return helper.make_tensor_value_info(name, elem_type, shape)


def features_model(path: Path, layout: str, batch: int | str = "n", elem_type: int = FLOAT,
                   height: int | str = "h", width: int | str = "w") -> str:
    """image -> channel_mean (N x 3), overall (N) and overall_kept (N x 1): means over the pixels."""
    spatial = [2, 3] if layout == "NCHW" else [1, 2]
    source, nodes = "image", []
    if elem_type != FLOAT:
        nodes.append(helper.make_node("Cast", ["image"], ["as_float"], to=FLOAT))
        source = "as_float"
    nodes += [
        helper.make_node("ReduceMean", [source], ["channel_mean"], axes=spatial, keepdims=0),
        helper.make_node("ReduceMean", [source], ["overall"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Unsqueeze", ["overall", "one"], ["overall_kept"]),
    ]
    return save_model(path, nodes, [tensor("image", image_shape(layout, batch, height, width), elem_type)],
                      [tensor("channel_mean", [batch, 3]), tensor("overall", [batch]),
                       tensor("overall_kept", [batch, 1])],
                      [helper.make_tensor("one", TensorProto.INT64, [1], [1])])


def scale_model(path: Path, layout: str, weights: tuple[float, float, float], batch: int | str = "n",
                height: int | str = "h", width: int | str = "w") -> str:
    """image -> image * weights, one weight per channel (in the model's channel order)."""
    shape = [1, 3, 1, 1] if layout == "NCHW" else [1, 1, 1, 3]
    return save_model(path, [helper.make_node("Mul", ["image", "weights"], ["scaled"])],
                      [tensor("image", image_shape(layout, batch, height, width))],
                      [tensor("scaled", image_shape(layout, batch, height, width))],
                      [helper.make_tensor("weights", FLOAT, shape, list(weights))])


def negate_model(path: Path, layout: str, **dims: int | str) -> str:
    """image -> -image: with value_range [-1, 1], pixel p becomes 255 - p."""
    return save_model(path, [helper.make_node("Neg", ["image"], ["negated"])],
                      [tensor("image", image_shape(layout, **dims))],
                      [tensor("negated", image_shape(layout, **dims))])


def random_frames(count: int = 5, height: int = 12, width: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def run(op: OnnxModelOp, frames: np.ndarray) -> FrameBatch:
    """Set up `op` on one CPU thread and process one batch of `frames`."""
    op.setup(CPU)
    try:
        return op.process(FrameBatch(frames, np.arange(len(frames), dtype=np.int64) * 100, index=10))
    finally:
        op.teardown()


def model_values(frames: np.ndarray, value_range=(0.0, 1.0), mean=None, std=None,
                 channels="RGB") -> np.ndarray:
    """What the model should see, N x H x W x C in float64: the op's mapping done independently."""
    pixels = frames[..., ::-1] if channels == "BGR" else frames
    lo, hi = value_range
    values = lo + pixels.astype(np.float64) / 255.0 * (hi - lo)
    return (values - np.asarray(mean if mean else [0.0] * 3)) / np.asarray(std if std else [1.0] * 3)


MAPPINGS = [
    {},
    {"value_range": [-1, 1], "channels": "BGR"},
    {"value_range": [0, 255], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    {"value_range": [-2.0, 3.0], "mean": [10, -5, 0.5], "std": [2, 0.5, 4], "channels": "BGR"},
]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("mapping", MAPPINGS, ids=["default", "bgr-pm1", "imagenet", "odd-bgr"])
def test_feature_records_match_numpy(tmp_path, layout, mapping):
    frames = random_frames()
    op = OnnxModelOp(model=features_model(tmp_path / "features.onnx", layout), layout=layout, **mapping)
    assert op.writes_records and not op.writes_frames
    out = run(op, frames)

    values = model_values(frames, **mapping)
    assert [r["frame"] for r in out.records] == [10, 11, 12, 13, 14]
    for record, expected in zip(out.records, values):
        assert set(record) == {"frame", "pts", "channel_mean", "overall", "overall_kept"}
        assert isinstance(record["channel_mean"], list) and len(record["channel_mean"]) == 3
        assert isinstance(record["overall"], float) and isinstance(record["overall_kept"], float)
        scale = max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(record["channel_mean"], expected.mean(axis=(0, 1)), atol=1e-5 * scale)
        np.testing.assert_allclose(record["overall"], expected.mean(), atol=1e-5 * scale)
        assert record["overall_kept"] == pytest.approx(record["overall"], abs=1e-6 * scale)


def test_outputs_keeps_only_the_named_ones(tmp_path):
    op = OnnxModelOp(model=features_model(tmp_path / "features.onnx", "NCHW"), outputs=["overall"])
    records = run(op, random_frames(2)).records
    assert [set(r) for r in records] == [{"frame", "pts", "overall"}] * 2


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_fixed_batch_runs_give_the_records_of_one_dynamic_run(tmp_path, layout):
    frames = random_frames(5)
    mapping = {"value_range": [-1, 1], "mean": [0.1, 0.2, 0.3], "channels": "BGR", "layout": layout}
    dynamic = run(OnnxModelOp(model=features_model(tmp_path / "dyn.onnx", layout), **mapping), frames)
    for batch in (1, 2):  # 5 frames: 2 runs of 2 and a padded one
        fixed = run(OnnxModelOp(model=features_model(tmp_path / f"b{batch}.onnx", layout, batch=batch),
                                **mapping), frames)
        assert len(fixed.records) == 5
        for a, b in zip(fixed.records, dynamic.records):
            assert a.keys() == b.keys() and a["frame"] == b["frame"]
            np.testing.assert_allclose(a["channel_mean"], b["channel_mean"], rtol=1e-6, atol=1e-6)
            assert a["overall"] == pytest.approx(b["overall"], abs=1e-6)


def test_fixed_spatial_size_resizes_frames_in(tmp_path):
    frames = random_frames(3, height=12, width=16)
    op = OnnxModelOp(model=features_model(tmp_path / "fixed.onnx", "NCHW", batch=1, height=6, width=8))
    records = run(op, frames).records
    small = np.stack([resize(f, 8, 6, Image.BILINEAR) for f in frames]).astype(np.float64) / 255.0
    np.testing.assert_allclose([r["channel_mean"] for r in records], small.mean(axis=(1, 2)), atol=1e-5)
    assert not np.allclose(small.mean(axis=(1, 2)), frames.mean(axis=(1, 2)) / 255.0, atol=1e-5)


@pytest.mark.parametrize(("elem_type", "mapping", "scale"), [
    (TensorProto.FLOAT16, {}, 1 / 255.0),
    (TensorProto.DOUBLE, {"value_range": [-1, 1]}, 2 / 255.0),
    (TensorProto.UINT8, {"value_range": [0, 255]}, 1.0),
], ids=["float16", "double", "uint8"])
def test_input_type_follows_the_model(tmp_path, elem_type, mapping, scale):
    frames = random_frames(2)
    op = OnnxModelOp(model=features_model(tmp_path / "typed.onnx", "NHWC", elem_type=elem_type),
                     layout="NHWC", **mapping)
    records = run(op, frames).records
    offset = mapping.get("value_range", [0])[0]
    expected = offset + frames.astype(np.float64).mean(axis=(1, 2)) * scale
    tolerance = 2e-3 * max(1.0, float(np.abs(expected).max())) if elem_type == TensorProto.FLOAT16 else 1e-4
    np.testing.assert_allclose([r["channel_mean"] for r in records], expected, atol=tolerance)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("channels", ["RGB", "BGR"])
def test_image_model_frames_undo_the_input_mapping(tmp_path, layout, channels):
    frames = random_frames(4)
    op = OnnxModelOp(model=scale_model(tmp_path / "scale.onnx", layout, (1.0, 0.5, 0.0)), layout=layout,
                     channels=channels, produces="frames", value_range=[0, 1])
    assert op.writes_frames and not op.writes_records
    out = run(op, frames)

    weights = np.array([1.0, 0.5, 0.0])[::-1 if channels == "BGR" else 1]  # in RGB order
    expected = frames * weights
    assert out.frames.shape == frames.shape and out.frames.dtype == np.uint8
    assert np.abs(out.frames.astype(np.int16) - expected).max() <= 1
    assert out.records == []


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_negation_with_mean_and_std_inverts_pixels(tmp_path, layout):
    """-x in the normalised space of a symmetric mapping is 255 - p in pixels."""
    frames = random_frames(3)
    op = OnnxModelOp(model=negate_model(tmp_path / "neg.onnx", layout), layout=layout, produces="frames",
                     value_range=[-1, 1], channels="BGR", std=[0.5, 2.0, 0.25], batch_size=3)
    out = run(op, frames)
    assert np.abs(out.frames.astype(np.int16) - (255 - frames.astype(np.int16))).max() <= 1


@pytest.mark.parametrize("fixed_model", [True, False], ids=["model-size", "size-option"])
def test_resize_in_and_back_out_keeps_the_frame_shape(tmp_path, fixed_model):
    colours = np.array([[10, 200, 30], [255, 0, 128], [77, 77, 77]], dtype=np.uint8)
    frames = np.broadcast_to(colours[:, None, None, :], (3, 12, 16, 3)).copy()
    frames[0, 4:8, 5:11] = 250  # a feature that resizing blurs but keeps in place
    if fixed_model:
        op = OnnxModelOp(model=negate_model(tmp_path / "neg.onnx", "NCHW", batch=1, height=6, width=8),
                         produces="frames", value_range=[-1, 1])
    else:
        op = OnnxModelOp(model=negate_model(tmp_path / "neg.onnx", "NCHW"), produces="frames",
                         value_range=[-1, 1], size=[8, 6])
    assert op.output_size(16, 12) == (16, 12)
    out = run(op, frames)
    assert out.frames.shape == frames.shape
    np.testing.assert_array_equal(out.frames[1:], 255 - frames[1:])  # flat frames survive any resize
    assert out.frames[0, 6, 8].astype(int).sum() < 3 * 40 and out.frames[0, 0, 0].tolist() == [245, 55, 225]


def two_inputs(tmp_path: Path) -> str:
    return save_model(tmp_path / "two.onnx", [helper.make_node("Add", ["a", "b"], ["sum"])],
                      [tensor("a", image_shape("NCHW")), tensor("b", image_shape("NCHW"))],
                      [tensor("sum", image_shape("NCHW"))])


def reserved_output(tmp_path: Path) -> str:
    return save_model(tmp_path / "frame.onnx",
                      [helper.make_node("ReduceMean", ["image"], ["frame"], axes=[1, 2, 3], keepdims=0)],
                      [tensor("image", image_shape("NCHW"))], [tensor("frame", ["n"])])


def not_onnx(tmp_path: Path) -> str:
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a model\n")
    return str(path)


def features(tmp_path: Path, **dims) -> str:
    return features_model(tmp_path / "features.onnx", "NCHW", **dims)


def nhwc_fixed(tmp_path: Path) -> str:
    return features_model(tmp_path / "nhwc.onnx", "NHWC", batch=1, height=6, width=8)


def uint8_model(tmp_path: Path) -> str:
    return features_model(tmp_path / "uint8.onnx", "NCHW", elem_type=TensorProto.UINT8)


ERRORS = [
    (lambda p: {}, "onnx: give the model file, e.g. model: detector.onnx"),
    (lambda p: {"model": str(p / "missing.onnx")}, "missing.onnx: no such file"),
    (lambda p: {"model": not_onnx(p)}, "cannot load it as an ONNX model"),
    (lambda p: {"model": features(p), "input": "pixels"}, "has no input 'pixels'; its inputs are image"),
    (lambda p: {"model": features(p), "outputs": ["boxes"]},
     "has no output 'boxes'; its outputs are channel_mean, overall, overall_kept"),
    (lambda p: {"model": features(p), "outputs": ["overall", "overall"]}, "name an output twice"),
    (lambda p: {"model": features(p), "outputs": []}, "outputs must be a list of output names"),
    (lambda p: {"model": two_inputs(p)}, "takes inputs a, b, but this op feeds one image"),
    (lambda p: {"model": two_inputs(p), "input": "a"}, "takes inputs a, b, but this op feeds one image"),
    (lambda p: {"model": features(p), "layout": "CHW"}, "layout must be NCHW or NHWC, got 'CHW'"),
    (lambda p: {"model": features(p), "produces": "boxes"}, "produces must be records or frames"),
    (lambda p: {"model": features(p), "channels": "RGBA"}, "channels must be RGB or BGR"),
    (lambda p: {"model": features(p), "value_range": [1, 0]}, "value_range must be [lo, hi] with lo < hi"),
    (lambda p: {"model": features(p), "value_range": [0]}, "value_range must be 2 numbers"),
    (lambda p: {"model": features(p), "value_range": "0..1"}, "value_range must be 2 numbers"),
    (lambda p: {"model": features(p), "value_range": [0, float("inf")]}, "value_range must be 2 numbers"),
    (lambda p: {"model": features(p), "mean": [0.5]}, "mean must be 3 numbers"),
    (lambda p: {"model": features(p), "std": [1, 0, 1]}, "std values must be positive"),
    (lambda p: {"model": features(p), "size": [0, 10]}, "size must be [width, height] in whole pixels"),
    (lambda p: {"model": features(p), "size": [10]}, "size must be [width, height] in whole pixels"),
    (lambda p: {"model": nhwc_fixed(p)}, "with layout NCHW it has 6 channels, not 3; set layout: NHWC"),
    (lambda p: {"model": features_model(p / "nhwc-any.onnx", "NHWC")}, "any number where NCHW has them; set layout: NHWC"),
    (lambda p: {"model": nhwc_fixed(p), "layout": "NHWC", "size": [6, 8]}, "size [6, 8] does not match"),
    (lambda p: {"model": uint8_model(p)}, "takes uint8 pixels; set value_range: [0, 255]"),
    (lambda p: {"model": uint8_model(p), "value_range": [0, 255], "mean": [1, 2, 3]}, "drop mean and std"),
    (lambda p: {"model": reserved_output(p)}, "output frame would clash with a record column"),
    (lambda p: {"model": features(p), "produces": "frames"}, "output channel_mean has shape ? x 3"),
]


@pytest.mark.parametrize(("options", "message"), ERRORS, ids=[m[:40] for _, m in ERRORS])
def test_bad_models_and_options_raise_one_line_option_errors(tmp_path, options, message):
    with pytest.raises(OptionError) as caught:
        OnnxModelOp(**options(tmp_path))
    text = str(caught.value)
    assert message in text
    assert text.startswith("onnx: ") and "\n" not in text and len(text) < 400


def test_pickles_before_setup_and_params_are_json(tmp_path):
    path = features_model(tmp_path / "features.onnx", "NHWC")
    op = OnnxModelOp(model=path, layout="NHWC", value_range=[-1, 1], mean=[0, 0.5, 1], std=[1, 2, 3],
                     size=[8, 6], outputs=["overall"])
    copy = pickle.loads(pickle.dumps(op))
    assert copy == op and copy.writes_records
    frames = random_frames(2)
    assert run(copy, frames).records == run(op, frames).records

    params = json.loads(json.dumps(op.params()))
    assert params["op"] == "onnx" and params["model"] == path and params["value_range"] == [-1.0, 1.0]
    assert op.model_files() == [Path(path)]
    assert OnnxModelOp(model=Path(path), layout="NHWC").model == path
