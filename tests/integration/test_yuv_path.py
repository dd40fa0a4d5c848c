"""The YUV-native path: frames no op reads go from decoder to encoder without becoming RGB, exactly.

An identity transcode must keep every frame and timestamp and, encoded losslessly, every sample; where the
source's pixel format or range differs from the output's, frames are converted YUV to YUV once. Ops that
read a smaller copy get it scaled straight from the decoded frames, and the full-size RGB is never made.
"""

from __future__ import annotations

import math

import av
import media_checks
import numpy as np
import pytest

from framefleet.ops import IdentityOp, StyleTransferOp
from framefleet.ops.base import Device
from framefleet.ops.chain import run_chain
from framefleet.pipeline import Pipeline
from framefleet.processing.streaming import process_video
from framefleet.video import EncodeOptions, VideoReader
from framefleet.video.encode import hardware_encoder_problem
from framefleet.video.synth import ClipSpec, write_clip

LOSSLESS = EncodeOptions(crf=0)


def planes(path) -> list[np.ndarray]:
    """Every decoded frame of `path` as its yuv420p samples (Y, then U, then V)."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="yuv420p") for frame in container.decode(video=0)]


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


@pytest.fixture()
def no_rgb(monkeypatch):
    """Make every RGB conversion of the video layer fail, so a run that passes never made one."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("a frame was converted to or from RGB")

    monkeypatch.setattr("framefleet.video.decode.frame_to_rgb", refuse)
    monkeypatch.setattr("framefleet.video.encode.rgb_to_frame", refuse)


def test_an_identity_transcode_never_converts_to_rgb_and_keeps_every_sample(tmp_path, no_rgb):
    source = tmp_path / "in.mp4"
    write_clip(source, ClipSpec(width=320, height=180, frames=40, vfr=True, audio=("aac",)))
    out = tmp_path / "out.mp4"
    result = process_video(source, out, Pipeline.of([IdentityOp()], encode=LOSSLESS))
    assert result.frames == 40
    assert media_checks.decoded_pts(out) == media_checks.decoded_pts(source)
    for before, after in zip(planes(source), planes(out), strict=True):
        assert psnr(before, after) >= 45.0  # lossless: identical samples
    assert media_checks.packet_digests(out)[1] == media_checks.packet_digests(source)[1]  # audio copied


@pytest.mark.parametrize(("pix_fmt", "color_range"), [("yuv420p10le", 1), ("yuvj420p", 2), ("yuv444p", 1)])
def test_other_formats_are_converted_yuv_to_yuv_once_without_rgb(tmp_path, no_rgb, pix_fmt, color_range):
    source = tmp_path / "in.mkv"
    write_clip(source, ClipSpec(width=256, height=144, frames=12, pix_fmt=pix_fmt, color_range=color_range,
                                bframes=0))
    out = tmp_path / "out.mp4"
    process_video(source, out, Pipeline.of([IdentityOp()], encode=LOSSLESS))
    kept = "yuv420p10le" if pix_fmt == "yuv420p10le" else "yuv420p"  # 10 bits stay 10 bits (H.264 High 10)
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.pix_fmt == kept and stream.codec_context.color_range == 1
    assert media_checks.decoded_times(out) == media_checks.decoded_times(source)
    # against swscale's own conversion of the source's frames to limited-range 4:2:0
    with av.open(str(source)) as container:
        expected = [f.reformat(format=kept, src_color_range=color_range, dst_color_range=1).to_ndarray()
                    for f in container.decode(video=0)]
    with av.open(str(out)) as container:
        got = [f.to_ndarray() for f in container.decode(video=0)]
    assert len(got) == len(expected) == 12
    for a, b in zip(expected, got):
        assert psnr(a, b) >= 45.0


def test_rotated_and_odd_sized_clips_still_come_out_upright_and_padded(tmp_path):
    source = tmp_path / "in.mp4"
    write_clip(source, ClipSpec(width=161, height=90, frames=8, rotation=90, bframes=0, pix_fmt="yuv444p"))
    out = tmp_path / "out.mp4"
    result = process_video(source, out, Pipeline.of([IdentityOp()], encode=LOSSLESS))
    assert (result.width, result.height) == (161, 90)
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (162, 90)  # padded to even, stored upright
    with VideoReader(source) as reader:  # the source shown upright (orientation is tested elsewhere)
        before = [rgb for _, rgb in reader.frames()]
    after = media_checks.rgb_frames(out)
    assert len(after) == 8
    for a, b in zip(before, after):
        assert media_checks.mean_abs_diff(a, b[:, :161]) < 6.0  # 4:4:4 to 4:2:0 loses some colour detail


def test_a_model_on_a_smaller_copy_never_converts_the_full_frame(tmp_path):
    source = tmp_path / "in.mp4"
    write_clip(source, ClipSpec(width=640, height=360, frames=4, bframes=0))
    op = StyleTransferOp(style="7", max_size=96, device="cpu")
    op.setup(Device())
    with VideoReader(source) as reader:
        batch = next(reader.batches(4))
    styled = run_chain([op], batch)
    assert not batch.pixels_read  # only the 96 x 54 copy was made, scaled while converting
    assert batch.frames_at(96, 54).shape == (4, 54, 96, 3)
    assert styled.frames.shape == (4, 360, 640, 3)


def test_a_hardware_encoder_that_cannot_open_falls_back_to_libx264_with_a_reason(caplog):
    if hardware_encoder_problem("h264_nvenc") is None:
        pytest.skip("NVENC opens on this machine; the GPU tests cover it")
    resolved = EncodeOptions(codec="auto", crf=23, preset="fast").for_output("out.mp4")
    assert (resolved.codec, resolved.crf, resolved.preset) == ("libx264", 23, "fast")
    assert "h264_nvenc cannot encode here" in caplog.text
    assert EncodeOptions(codec="h264_nvenc", preset="p5").for_output("out.mkv").preset == "veryfast"
    assert EncodeOptions(codec="auto").for_output("out.webm").codec == "libvpx-vp9"


def test_codec_auto_is_taken_for_cuda_pipelines_only():
    assert Pipeline.from_options({"device": "cuda"}).encode.codec == "auto"
    assert Pipeline.from_options({"device": "cuda", "codec": "libx264"}).encode.codec == "libx264"
    assert Pipeline.from_options({}).encode.codec is None  # the output's container decides: H.264 where it can
    assert EncodeOptions(codec="h264_nvenc", crf=0).codec_options() == {"rc": "vbr", "cq": "1", "preset": "p2"}
