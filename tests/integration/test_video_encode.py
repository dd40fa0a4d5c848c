"""Decode -> encode end to end (`process_video` with `IdentityOp`), checked with PyAV as the oracle:
every frame kept at its time, displayed size and orientation, other streams carried, atomic output."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import media_checks
import numpy as np
import pytest

from framefleet.errors import CorruptVideoError
from framefleet.ops import IdentityOp
from framefleet.processing.batch import FrameBatch
from framefleet.processing.streaming import process_video
from framefleet.video import VideoFormat, VideoReader, VideoWriter, probe
from framefleet.video.synth import MARKER, picture

SMALL = dict(width=160, height=120)
CLOSE = 6.0  # mean absolute difference in 0..255 levels (two lossy encodes of a smooth picture)


def transcode(src: Path, dst: Path, **kwargs):
    return process_video(src, dst, [IdentityOp(batch_size=4)], sessions=1, **kwargs)


def leftovers(folder: Path) -> list[str]:
    """Temporary files the writer leaves behind (hidden `.name.part-PID.ext` siblings)."""
    return sorted(p.name for p in folder.iterdir() if ".part-" in p.name)


def first_frame(path) -> np.ndarray:
    with VideoReader(path) as reader:
        return next(reader.frames())[1]


# --- timing ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fields"),
    [
        ("cfr.mp4", dict(frames=30, bframes=2)),
        ("vfr.mp4", dict(frames=30, bframes=2, vfr=True)),
        ("vfr.mkv", dict(frames=30, bframes=0, vfr=True)),
    ],
    ids=["cfr", "vfr", "vfr-mkv-to-mp4"],
)
def test_every_frame_keeps_its_time(clip_factory, tmp_path, name, fields):
    src = clip_factory(f"enc_{name}", **SMALL, **fields)
    dst = tmp_path / "out.mp4"
    result = transcode(src, dst)
    assert result.frames == fields["frames"]
    assert media_checks.frame_count(dst) == fields["frames"]
    # same times relative to the first frame, exactly (the time bases may differ, e.g. mkv's 1/1000)
    assert media_checks.decoded_times(dst) == media_checks.decoded_times(src)
    assert media_checks.decoded_pts(dst)[0] == 0


def test_output_probes_like_its_input(clip_factory, tmp_path):
    src = clip_factory("enc_cfr.mp4", **SMALL, frames=30, bframes=2)
    dst = tmp_path / "out.mp4"
    transcode(src, dst)
    before, after = probe(src, exact=True), probe(dst, exact=True)
    assert after.frame_count == before.frame_count == 30
    assert (after.width, after.height) == (before.width, before.height)
    assert after.time_base == before.time_base
    assert after.average_rate == before.average_rate
    assert after.pix_fmt == "yuv420p"
    with VideoReader(dst) as reader:
        for index, (_, rgb) in enumerate(reader.frames()):
            assert media_checks.mean_abs_diff(rgb, picture(index, 160, 120)) < CLOSE


# --- size and orientation --------------------------------------------------------------------------------


def test_odd_size_is_padded_to_even_and_keeps_the_picture(clip_factory, tmp_path):
    src = clip_factory("enc_odd.mp4", width=161, height=121, frames=10, bframes=0, pix_fmt="yuv444p")
    dst = tmp_path / "out.mp4"
    result = transcode(src, dst)
    assert (result.width, result.height) == (161, 121)
    info = probe(dst, exact=True)
    assert (info.width, info.height) == (162, 122)
    assert info.frame_count == 10
    assert media_checks.decoded_times(dst) == media_checks.decoded_times(src)
    with VideoReader(src) as a, VideoReader(dst) as b:
        for (_, before), (_, after) in zip(a.frames(), b.frames()):
            assert media_checks.mean_abs_diff(after[:121, :161], before) < CLOSE


def test_odd_size_vp9_webm_is_padded_to_even(clip_factory, tmp_path):
    src = clip_factory("enc_odd.webm", width=161, height=121, frames=10, codec="libvpx-vp9", bframes=0)
    dst = tmp_path / "out.mp4"
    transcode(src, dst)
    info = probe(dst, exact=True)
    assert (info.width, info.height) == (162, 122) and info.frame_count == 10
    assert media_checks.mean_abs_diff(first_frame(dst)[:121, :161], picture(0, 161, 121)) < CLOSE


@pytest.mark.parametrize(("rotation", "hflip"), [(90, False), (270, False), (180, True)])
def test_rotated_input_is_written_upright_without_a_display_matrix(clip_factory, tmp_path, rotation, hflip):
    src = clip_factory(f"enc_rot{rotation}_{hflip}.mp4", **SMALL, frames=8, bframes=0, rotation=rotation, hflip=hflip)
    dst = tmp_path / "out.mp4"
    transcode(src, dst)
    info = probe(dst, exact=True)
    assert info.rotation == 0 and not info.mirrored
    assert (info.coded_width, info.coded_height) == (info.width, info.height) == (160, 120)
    assert info.frame_count == 8
    stored = media_checks.rgb_frames(dst, limit=1)[0]  # the pixels themselves are upright
    block = stored[2 : MARKER - 2, 2 : MARKER - 2].reshape(-1, 3).mean(axis=0)
    assert block[0] > 200 and block[1] < 50 and block[2] < 50
    assert media_checks.mean_abs_diff(stored, picture(0, 160, 120)) < CLOSE


# --- carried streams -------------------------------------------------------------------------------------


def test_two_audio_tracks_are_copied_byte_for_byte(clip_factory, tmp_path):
    src = clip_factory("enc_two_audio.mp4", **SMALL, frames=24, audio=("aac", "aac"))
    dst = tmp_path / "out.mp4"
    result = transcode(src, dst)
    assert [(c.source_index, c.kind, c.codec, c.action) for c in result.carried] == [
        (1, "audio", "aac", "copy"),
        (2, "audio", "aac", "copy"),
    ]
    src_audio = media_checks.streams_of_kind(src, "audio")
    dst_audio = media_checks.streams_of_kind(dst, "audio")
    assert len(dst_audio) == len(src_audio) == 2
    for a, b in zip(src_audio, dst_audio):
        before, after = media_checks.packet_payloads(src, a), media_checks.packet_payloads(dst, b)
        assert len(before) > 0
        assert after == before
    assert media_checks.frame_count(dst) == 24


def test_mulaw_audio_is_transcoded_to_aac_for_mp4(clip_factory, tmp_path):
    # Matroska in this FFmpeg cannot hold pcm_mulaw, so the source is a .mov (which can, unlike .mp4).
    src = clip_factory("enc_mulaw.mov", **SMALL, frames=24, audio=("pcm_mulaw",))
    dst = tmp_path / "out.mp4"
    result = transcode(src, dst)
    assert len(result.carried) == 1
    carried = result.carried[0]
    assert (carried.kind, carried.codec, carried.action) == ("audio", "pcm_mulaw", "transcode")
    assert "pcm_mulaw" in carried.reason
    assert media_checks.stream_codecs(dst) == [("video", "h264"), ("audio", "aac")]
    (src_audio,) = media_checks.streams_of_kind(src, "audio")
    (dst_audio,) = media_checks.streams_of_kind(dst, "audio")
    assert media_checks.audio_seconds(dst, dst_audio) == pytest.approx(
        media_checks.audio_seconds(src, src_audio), abs=0.05
    )
    assert media_checks.frame_count(dst) == 24


def test_video_writer_reports_carried_streams_without_ops(clip_factory, tmp_path):
    src = clip_factory("enc_two_audio.mp4", **SMALL, frames=24, audio=("aac", "aac"))
    info = probe(src)
    fmt = VideoFormat(info.time_base, info.average_rate, 5, 2, 2)
    dst = tmp_path / "direct.mp4"
    with VideoReader(src) as reader, VideoWriter(
        dst, width=160, height=120, video_format=fmt, carry_from=str(src), carry_skip_index=0
    ) as writer:
        for batch in reader.batches(8):
            writer.write(batch)
        assert not dst.exists()  # still under its temporary name
        assert len(leftovers(tmp_path)) == 1
    assert dst.exists() and leftovers(tmp_path) == []
    assert [c.action for c in writer.carried] == ["copy", "copy"]
    assert media_checks.decoded_times(dst) == media_checks.decoded_times(src)


# --- atomic output ---------------------------------------------------------------------------------------


def test_successful_output_leaves_no_temporary_files(clip_factory, tmp_path):
    src = clip_factory("enc_cfr.mp4", **SMALL, frames=30, bframes=2)
    dst = tmp_path / "out.mp4"
    transcode(src, dst)
    assert dst.exists()
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_corrupt_input_leaves_no_output(tmp_path):
    src = tmp_path / "corrupt.mp4"
    src.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    dst = tmp_path / "out.mp4"
    with pytest.raises(CorruptVideoError):
        transcode(src, dst)
    assert not dst.exists()
    assert leftovers(tmp_path) == []


class FailingOp(IdentityOp):
    """Passes the first batches through, then fails: a model crashing half-way through a video."""

    name = "failing"

    def process(self, batch: FrameBatch) -> FrameBatch:
        if batch.index >= 8:
            raise RuntimeError("model crashed")
        return batch


def test_failure_half_way_leaves_no_output_and_no_temporary_file(clip_factory, tmp_path):
    src = clip_factory("enc_cfr.mp4", **SMALL, frames=30, bframes=2)
    dst = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="model crashed"):
        process_video(src, dst, [FailingOp(batch_size=4)], sessions=1)
    assert not dst.exists()
    assert leftovers(tmp_path) == []


def test_failure_leaves_an_existing_output_untouched(clip_factory, tmp_path):
    src = clip_factory("enc_cfr.mp4", **SMALL, frames=30, bframes=2)
    dst = tmp_path / "out.mp4"
    dst.write_bytes(b"previous result")
    with pytest.raises(RuntimeError):
        process_video(src, dst, [FailingOp(batch_size=4)], sessions=1)
    assert dst.read_bytes() == b"previous result"
    assert leftovers(tmp_path) == []


# --- real clips ------------------------------------------------------------------------------------------


def test_real_clip_keeps_both_aac_tracks_and_both_subtitle_tracks_byte_identical(shared_videos, tmp_path):
    src = shared_videos / "torchcodec__nasa_13013.mp4"
    dst = tmp_path / "nasa.mp4"
    result = transcode(src, dst, video_stream=0)
    actions = {(c.kind, c.codec, c.action) for c in result.carried}
    assert actions == {("video", "h264", "drop"), ("audio", "aac", "copy"), ("subtitle", "mov_text", "copy")}
    for kind in ("audio", "subtitle"):
        before, after = media_checks.streams_of_kind(src, kind), media_checks.streams_of_kind(dst, kind)
        assert len(before) == len(after) == 2
        for a, b in zip(before, after):
            assert media_checks.packet_payloads(dst, b) == media_checks.packet_payloads(src, a)
    assert media_checks.frame_count(dst) == 325
    assert media_checks.decoded_times(dst) == media_checks.decoded_times(src, 0)


def test_real_iphone_clip_is_written_upright_portrait(shared_videos, tmp_path):
    dst = tmp_path / "portrait.mp4"
    transcode(shared_videos / "decord__video_90.mov", dst)
    info = probe(dst, exact=True)
    assert (info.width, info.height) == (320, 568) and info.rotation == 0
    assert info.frame_count == 3
    assert media_checks.decoded_times(dst) == [Fraction(0), Fraction(1, 30), Fraction(2, 30)]
