"""The CUDA path end to end, on a machine with an NVIDIA GPU and onnxruntime-gpu (skipped elsewhere).

`benchmarks/gpu_check.sh` runs these (`pytest -m needs_gpu`) on a GPU machine before measuring.
"""

from __future__ import annotations

import media_checks
import numpy as np
import onnxruntime as ort
import pytest

from framefleet.ops import Device, StyleTransferOp
from framefleet.pipeline import Pipeline
from framefleet.processing.batch import FrameBatch
from framefleet.processing.streaming import process_video
from framefleet.video import EncodeOptions, VideoReader
from framefleet.video.encode import hardware_encoder_problem
from framefleet.video.synth import ClipSpec, picture, write_clip

pytestmark = [
    pytest.mark.needs_gpu,
    pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(),
                       reason="needs onnxruntime-gpu and a CUDA device"),
]
CUDA = Device(kind="cuda")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpu") / "vfr.mp4"
    write_clip(path, ClipSpec(width=640, height=360, frames=40, vfr=True, audio=("aac",)))
    return path


def test_a_batch_on_cuda_matches_frame_by_frame_and_the_cpu():
    frames = np.stack([picture(i, 320, 180) for i in range(8)])
    batch = FrameBatch(frames, np.arange(8, dtype=np.int64))
    op = StyleTransferOp(style="7", device="cuda", batch_size=8)
    op.setup(CUDA)
    whole = op.process(batch).frames
    single = np.concatenate([op.process(FrameBatch(frames[i:i + 1], np.zeros(1, np.int64))).frames
                             for i in range(8)])
    cpu = StyleTransferOp(style="7", device="cpu")
    cpu.setup(Device())
    on_cpu = cpu.process(batch).frames
    assert np.abs(whole.astype(int) - single).max() <= 2  # cuDNN picks other kernels for other batch sizes
    assert np.abs(whole.astype(int) - on_cpu).mean() < 1.0


@pytest.mark.parametrize("max_size", [None, 192])
def test_stylize_on_cuda_is_frame_exact_with_audio_copied(tmp_path, clip, max_size):
    out = tmp_path / "out.mp4"
    ops = [StyleTransferOp(style="7", device="cuda", max_size=max_size, batch_size=8)]
    result = process_video(clip, out, Pipeline.of(ops, encode=EncodeOptions(codec="auto")))
    assert result.device == "cuda" and result.frames == 40
    assert media_checks.decoded_pts(out) == media_checks.decoded_pts(clip)
    assert media_checks.packet_digests(out)[1] == media_checks.packet_digests(clip)[1]
    cpu_out = tmp_path / "cpu.mp4"
    process_video(clip, cpu_out, [StyleTransferOp(style="7", device="cpu", max_size=max_size)])
    diffs = [media_checks.mean_abs_diff(a, b)
             for a, b in zip(media_checks.rgb_frames(out), media_checks.rgb_frames(cpu_out), strict=True)]
    assert max(diffs) < 4.0, diffs  # two encoders' losses apart, the same pictures


def test_nvenc_is_chosen_by_auto_where_it_opens(tmp_path, clip):
    if hardware_encoder_problem("h264_nvenc") is not None:
        pytest.skip(f"NVENC does not open here: {hardware_encoder_problem('h264_nvenc')}")
    out = tmp_path / "nvenc.mp4"
    result = process_video(clip, out, Pipeline.of([StyleTransferOp(style="7", device="cuda")], encode=EncodeOptions(codec="auto")))
    assert result.encoder == "h264_nvenc"
    assert media_checks.decoded_pts(out) == media_checks.decoded_pts(clip)


def test_nvdec_decodes_the_same_frames_as_the_cpu(clip):
    with VideoReader(clip) as cpu, VideoReader(clip, hwaccel="cuda") as gpu:
        on_cpu = list(cpu.frames())
        on_gpu = list(gpu.frames())
        assert gpu.decoder == "cuda"
    assert [pts for pts, _ in on_gpu] == [pts for pts, _ in on_cpu]
    # the same pictures: about 1 level apart on average on an H200 (NV12 reaches RGB through another swscale
    # path; a wrong matrix, orientation or frame would be several levels off)
    assert max(media_checks.mean_abs_diff(a, b) for (_, a), (_, b) in zip(on_cpu, on_gpu)) < 1.5
