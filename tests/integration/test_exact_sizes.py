"""Sizes and times the ffmpeg CLI keeps exactly, framefleet keeps too: odd sizes wherever the encoder takes
them, and AVI outputs at their frames' exact times."""

from __future__ import annotations

import av
import media_checks
import numpy as np
import pytest

from framefleet.ops.identity import IdentityOp
from framefleet.ops.simple import BlurOp
from framefleet.pipeline import Pipeline
from framefleet.processing.streaming import process_video
from framefleet.video import EncodeOptions, probe
from framefleet.video.synth import ClipSpec, write_clip


def presented(path) -> list[int | None]:
    """The frames' presentation timestamps as FFmpeg's decoder gives them (what players show them at)."""
    with av.open(str(path)) as container:
        return [frame.pts for frame in container.decode(video=0)]


@pytest.mark.parametrize(("name", "codec", "size"), [
    ("out.webm", None, (161, 121)),  # VP9
    ("out.avi", None, (161, 121)),  # MPEG-4 part 2, AVI's default
    ("out.mkv", "libsvtav1", (161, 121)),  # AV1
    ("out.mp4", None, (162, 122)),  # H.264 in 4:2:0 needs even sizes: padded by one edge column and row
])
@pytest.mark.parametrize("op", [IdentityOp(), BlurOp(radius=1.0)], ids=["identity", "blur"])
def test_odd_sizes_are_kept_wherever_the_encoder_takes_them(tmp_path, name, codec, size, op):
    source = tmp_path / "in.mkv"
    write_clip(source, ClipSpec(width=161, height=121, frames=12, bframes=0, codec="libx264", pix_fmt="yuv444p"))
    out = tmp_path / name
    process_video(source, out, Pipeline.of([op], encode=EncodeOptions(codec=codec)))
    info = probe(out, keyframes=False)
    assert (info.width, info.height) == size
    assert media_checks.decoded_times(out) == media_checks.decoded_times(source)
    shown = media_checks.rgb_frames(out, limit=1)[0][:121, :161].astype(float)
    expected = media_checks.rgb_frames(source, limit=1)[0].astype(float)
    if isinstance(op, IdentityOp):  # the picture is where it was, not shifted or scaled by padding
        assert np.abs(shown - expected).mean() < 6


def test_the_shared_odd_sized_vp9_clip_keeps_its_size(tmp_path, shared_videos):
    source = shared_videos / "androidx__bear-vp9-odd-dimensions.webm"
    out = tmp_path / "out.webm"
    result = process_video(source, out, [IdentityOp()])
    assert (result.width, result.height) == (161, 121) and probe(out, keyframes=False).width == 161
    assert media_checks.decoded_times(out) == media_checks.decoded_times(source)


def test_an_avi_output_shows_every_frame_at_its_exact_time(tmp_path, shared_videos):
    source = shared_videos / "androidx__sample.avi"  # MPEG-4 part 2 with gaps of 0.125 s
    out = tmp_path / "out.avi"
    result = process_video(source, out, [BlurOp(radius=0.5)])
    assert result.encoder == "mpeg4"  # as the ffmpeg CLI chooses for AVI
    assert presented(out) == presented(source)
    assert media_checks.decoded_times(out, relative=False) == media_checks.decoded_times(source, relative=False)


def test_a_stream_whose_size_changes_part_way_is_scaled_to_its_first_size(tmp_path, caplog):
    """Two H.264 MPEG-TS parts of different sizes, one after the other in time, joined byte for byte (what a
    broadcast capture with a resolution switch looks like)."""
    from fractions import Fraction

    from framefleet.ops.style import StyleTransferOp
    from framefleet.video.synth import picture

    parts = []
    for index, (width, height) in enumerate([(64, 64), (96, 64)]):
        part = tmp_path / f"part{index}.ts"
        with av.open(str(part), "w") as out:
            stream = out.add_stream("libx264", rate=24)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.options = {"preset": "ultrafast", "bframes": "0"}
            for n in range(12 * index, 12 * index + 12):
                frame = av.VideoFrame.from_ndarray(picture(n, width, height), format="rgb24").reformat(format="yuv420p")
                frame.pts, frame.time_base = n * 3750, Fraction(1, 90000)
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        parts.append(part.read_bytes())
    source = tmp_path / "switch.ts"
    source.write_bytes(b"".join(parts))
    out = tmp_path / "out.mp4"
    result = process_video(source, out, Pipeline.of([StyleTransferOp(max_size=64)], temporal="bands"))
    assert (result.width, result.height, result.frames) == (64, 64, 24)
    assert probe(out, keyframes=False).width == 64 and media_checks.frame_count(out) == 24
    assert "the frames change size part-way (96x64, was 64x64)" in caplog.text
