"""Model runtimes: OpenVINO against onnxruntime fp32 on the real models and PyAV-made clips, the choices
`--runtime`/`--precision` make, what `auto` records, and the one-line errors.

OpenVINO is part of the base install; these tests skip without it (a user who removed it runs
onnxruntime only). bf16 tests skip on CPUs without bf16.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from cli_helpers import cli, stderr_lines, stdout_json
from media_checks import decoded_times, frame_count
from onnx import TensorProto, helper

from framefleet.errors import DeviceUnavailableError, OpError
from framefleet.ops.base import Device
from framefleet.ops.onnx_model import OnnxModelOp
from framefleet.ops.runtime_choice import GATES, Trial, best_trial, compare
from framefleet.ops.style import StyleTransferOp
from framefleet.processing.batch import FrameBatch

pytest.importorskip("openvino", reason="openvino is not installed")

from framefleet.ops.runtimes import cpu_has_int8, cpu_precisions  # noqa: E402 - needs openvino

CPU = Device(kind="cpu", threads=1)
needs_bf16 = pytest.mark.skipif("bf16" not in cpu_precisions(), reason="this CPU has no bf16")


@pytest.fixture(scope="module")
def clip(clip_factory) -> Path:
    return clip_factory("runtimes.mp4", width=320, height=180, frames=12)


@pytest.fixture(scope="module")
def frames(clip) -> np.ndarray:
    """The clip's frames as PyAV decodes them (what the op sees in a run)."""
    with av.open(str(clip)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def stylize(frames: np.ndarray, **fields) -> tuple[np.ndarray, str | None]:
    """The frames through a set-up style op, and what ran its model."""
    op = StyleTransferOp(device="cpu", batch_size=len(frames), **fields)
    op.setup(CPU)
    try:
        batch = FrameBatch(frames, np.arange(len(frames), dtype=np.int64), index=0)
        return op.process(batch).frames, op.runtime_used()
    finally:
        op.teardown()


def test_openvino_fp32_matches_onnxruntime_fp32(frames):
    reference, ran_reference = stylize(frames[:4], runtime="onnxruntime")
    styled, ran = stylize(frames[:4], runtime="openvino", precision="fp32")
    assert (ran_reference, ran) == ("onnxruntime fp32", "openvino fp32")
    psnr, mad = compare([reference], [styled])
    assert mad <= GATES["fp32"].max_mad and psnr >= GATES["fp32"].min_psnr, (psnr, mad)


@needs_bf16
def test_bf16_is_within_one_level_of_fp32_and_still_stylizes(frames):
    reference, _ = stylize(frames[:4], runtime="onnxruntime")
    styled, ran = stylize(frames[:4], runtime="openvino", precision="bf16")
    assert ran == "openvino bf16"
    psnr, mad = compare([reference], [styled])
    assert mad <= 1.0 and psnr >= GATES["bf16"].min_psnr, (psnr, mad)
    assert compare([frames[:4]], [styled])[1] > 20  # stylized, not passed through


@pytest.mark.parametrize("precision", ["fp32", pytest.param("int8", marks=pytest.mark.skipif(
    not cpu_has_int8(), reason="OpenVINO runs no int8 on this CPU"))])
def test_stylize_on_openvino_is_frame_exact_and_says_what_ran(clip, tmp_path, precision):
    output = tmp_path / "openvino.mp4"
    result = cli("stylize", clip, "-o", output, "--runtime", "openvino", "--precision", precision, "--json")
    assert result.exit_code == 0, result.output
    assert stdout_json(result)["runtime"] == f"style: openvino {precision}"
    assert frame_count(output) == frame_count(clip) == 12
    assert decoded_times(output, relative=False) == decoded_times(clip, relative=False)


def test_auto_records_the_fastest_choice_that_passed_the_gate(clip, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # measured afresh
    result = cli("stylize", clip, "-o", tmp_path / "auto.mp4", "--temporal", "none", "--json")
    assert result.exit_code == 0, result.output
    (profile,) = (tmp_path / "cache" / "framefleet" / "runtimes").glob("profile-*.json")
    trials = json.loads(profile.read_text())
    int8 = ["openvino int8"] if cpu_has_int8() else []
    assert {t["choice"] for t in trials} == {"onnxruntime fp32", *(f"openvino {p}" for p in cpu_precisions()), *int8}
    best = best_trial([Trial(**t) for t in trials if t["rejected"] is None])
    assert stdout_json(result)["runtime"] == f"style: {best.choice}"


def test_a_choice_failing_the_gate_is_left_out_under_auto(painting_file):
    # OpenVINO computes the arbitrary-style transform differently (several levels off, fp32 included)
    op = StyleTransferOp(style_image=painting_file, device="cpu")
    op.setup(CPU)
    assert op.runtime_used() == "onnxruntime fp32"


@pytest.fixture
def painting_file(tmp_path) -> str:
    path = tmp_path / "painting.png"
    gradient = np.linspace(0, 255, 96 * 96 * 3).reshape(96, 96, 3).astype(np.uint8)
    from PIL import Image

    Image.fromarray(gradient).save(path)
    return str(path)


@pytest.fixture
def det_model(tmp_path) -> Path:
    """A model onnxruntime runs and OpenVINO cannot convert (ONNX Det): 3 determinants per 8 x 8 frame."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, 8, 8])
    det = helper.make_tensor_value_info("det", TensorProto.FLOAT, ["n", 3])
    graph = helper.make_graph([helper.make_node("Det", ["image"], ["det"])], "det", [image], [det])
    path = tmp_path / "det.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return path


def test_a_model_openvino_cannot_compile_falls_back_under_auto(det_model, caplog):
    op = OnnxModelOp(model=str(det_model), device="cpu")
    op.setup(CPU)
    assert op.runtime_used() == "onnxruntime fp32"
    assert any("openvino" in r.message and "Det" in r.message for r in caplog.records if r.levelname == "WARNING")


def test_a_model_openvino_cannot_compile_is_one_line_when_asked_for(det_model):
    op = OnnxModelOp(model=str(det_model), device="cpu", runtime="openvino")
    with pytest.raises(OpError) as error:
        op.setup(CPU)
    message = str(error.value)
    assert "\n" not in message and "openvino fp32 rejected: cannot compile it" in message and "Det-17" in message
    assert message.endswith("; use --runtime onnxruntime")


def test_options_no_runtime_offers_are_refused(clip, tmp_path):
    result = cli("stylize", clip, "-o", tmp_path / "x.mp4", "--runtime", "onnxruntime", "--precision", "bf16")
    assert result.exit_code == 2
    assert stderr_lines(result) == ["error: --precision bf16 runs on OpenVINO; use --runtime openvino or auto "
                                    "(onnxruntime runs fp32 on the CPU)"]


def test_an_explicit_runtime_that_is_not_installed_is_one_line(clip, tmp_path):
    # the command in a process where `openvino` cannot be imported, as without the extra
    code = ("import sys; sys.modules['openvino'] = None; from framefleet.cli import main; "
            f"sys.argv = ['framefleet', 'stylize', {str(clip)!r}, '-o', {str(tmp_path / 'x.mp4')!r}, "
            "'--runtime', 'openvino']; main()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == DeviceUnavailableError.exit_code
    assert done.stderr.strip().splitlines() == [
        'error: --runtime openvino: OpenVINO is not installed; pip install openvino']
    assert not (tmp_path / "x.mp4").exists()


def test_without_openvino_auto_runs_onnxruntime(clip, tmp_path):
    code = ("import sys; sys.modules['openvino'] = None; from framefleet.cli import main; "
            f"sys.argv = ['framefleet', 'stylize', {str(clip)!r}, '-o', {str(tmp_path / 'x.mp4')!r}, '--json', "
            "'--temporal', 'none']; main()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["runtime"] == "style: onnxruntime fp32"


def test_run_records_what_ran_in_the_ledger_and_its_json(clip, tmp_path):
    out = tmp_path / "out"
    result = cli("run", clip, "-o", out, "--runtime", "openvino", "--precision", "fp32", "--temporal", "none",
                 "--workers", "1", "--json")
    assert result.exit_code == 0, result.stderr
    assert stdout_json(result)["runtimes"] == ["style: openvino fp32"]
    assert frame_count(out / clip.name) == frame_count(clip)


BROADCAST = Path(__file__).resolve().parents[2].parent / "shared" / "videos" / "tsduck__test-025.ts"
"""A real broadcast clip with one or two faces in nearly every frame (../shared/videos/MANIFEST.md)."""


def detected_faces(frames: np.ndarray, runtime: str, precision: str) -> tuple[dict[int, np.ndarray], str | None]:
    """The boxes the faces op records per frame, and what ran its model."""
    from framefleet.ops.faces import FaceAnonymizerOp

    op = FaceAnonymizerOp(device="cpu", anonymize="none", batch_size=len(frames), runtime=runtime,
                          precision=precision)
    op.setup(CPU)
    try:
        records = op.process(FrameBatch(frames, np.arange(len(frames), dtype=np.int64))).records
    finally:
        op.teardown()
    boxes = {i: np.array([[r["x1"], r["y1"], r["x2"], r["y2"]] for r in records if r["frame"] == i]).reshape(-1, 4)
             for i in range(len(frames))}
    return boxes, op.runtime_used()


@pytest.mark.skipif(not BROADCAST.is_file(), reason="needs ../shared/videos")
def test_faces_on_openvino_agree_with_onnxruntime_on_real_footage():
    from framefleet.ops.faces import box_iou

    with av.open(str(BROADCAST)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for _, f in zip(range(24), container.decode(video=0))])
    reference, ran_reference = detected_faces(frames, "onnxruntime", "fp32")
    found, ran = detected_faces(frames, "openvino", "fp32")
    assert (ran_reference, ran) == ("onnxruntime fp32", "openvino fp32")
    assert sum(len(b) for b in reference.values()) >= 20  # faces in most frames: the comparison means something
    for frame, boxes in reference.items():
        assert len(found[frame]) == len(boxes), frame
        for box in boxes:
            assert box_iou(box, found[frame]).max() >= 0.9, (frame, box, found[frame])
