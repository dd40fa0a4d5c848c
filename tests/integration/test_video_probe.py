"""`probe`: what a video file holds, checked against what the synthetic clips were made with."""

from __future__ import annotations

import json
from fractions import Fraction

import av
import media_checks
import numpy as np
import pytest

from framefleet.errors import CorruptVideoError, InputNotFoundError, NotAVideoError
from framefleet.video import probe
from framefleet.video.synth import ClipSpec, frame_times

SMALL = dict(width=160, height=120)


def test_streams_of_a_clip_with_two_audio_tracks(clip_factory):
    path = clip_factory("two_audio.mp4", **SMALL, frames=24, audio=("aac", "aac"))
    info = probe(path)
    assert [(s.index, s.kind, s.codec) for s in info.streams] == [
        (0, "video", "h264"),
        (1, "audio", "aac"),
        (2, "audio", "aac"),
    ]
    assert info.video_index == 0
    assert info.video.width == 160 and info.video.height == 120
    for audio in info.streams[1:]:
        assert audio.sample_rate == 48000
        assert audio.channels == 2
        assert audio.duration == pytest.approx(1.0, abs=0.05)
    assert info.format_name.startswith("mov,mp4")
    assert info.duration == pytest.approx(1.0, abs=0.05)


def test_size_rate_and_format_of_a_plain_clip(clip_factory):
    path = clip_factory("plain.mp4", **SMALL, frames=24)
    info = probe(path)
    assert (info.width, info.height) == (160, 120)
    assert (info.coded_width, info.coded_height) == (160, 120)
    assert info.rotation == 0 and not info.mirrored and info.orientation.is_identity
    assert info.pix_fmt == "yuv420p"
    assert info.time_base == Fraction(1, 12800)
    assert info.average_rate == Fraction(24) and info.real_rate == Fraction(24)
    assert info.size_bytes == path.stat().st_size


def test_exact_frame_count_matches_the_header_and_the_frames_written(clip_factory):
    path = clip_factory("count.mp4", **SMALL, frames=37)
    info = probe(path, exact=True)
    assert info.frame_count == 37
    assert info.frame_count_header == 37
    assert media_checks.frame_count(path) == 37


def test_frame_count_is_only_counted_when_asked(clip_factory):
    path = clip_factory("count.mp4", **SMALL, frames=37)
    assert probe(path).frame_count is None


def test_header_frame_count_is_estimated_when_the_container_has_none(clip_factory):
    # Matroska stores no frame count; the header figure is then duration x average rate.
    path = clip_factory("count.mkv", **SMALL, frames=36)
    info = probe(path, exact=True)
    assert info.video.frames_header is None
    assert info.frame_count == 36
    assert info.frame_count_header == pytest.approx(36, abs=1)


def test_keyframes_sit_at_the_gop_positions(clip_factory):
    spec = ClipSpec(**SMALL, frames=40, gop=12, bframes=2)
    path = clip_factory("gop12.mp4", **SMALL, frames=40, gop=12, bframes=2)
    info = probe(path)
    written = frame_times(spec)
    assert info.keyframe_pts == tuple(written[i] for i in range(0, 40, 12))
    assert info.keyframe_times == pytest.approx([0.0, 0.5, 1.0, 1.5])
    assert info.packet_count == 40


def test_keyframes_are_not_read_when_not_asked(clip_factory):
    path = clip_factory("gop12.mp4", **SMALL, frames=40, gop=12, bframes=2)
    info = probe(path, keyframes=False)
    assert info.keyframe_pts is None and info.keyframe_times is None


def test_variable_frame_rate_average_is_below_the_real_rate(clip_factory):
    spec = ClipSpec(**SMALL, frames=30, vfr=True)
    path = clip_factory("vfr.mp4", **SMALL, frames=30, vfr=True)
    info = probe(path, exact=True)
    written = frame_times(spec)
    # durations cycle 1, 2, 3 ticks of 1/24 s: the real (base) rate stays 24, the average is about 12
    assert info.real_rate == Fraction(24)
    assert info.average_rate < info.real_rate
    span = float(written[-1] * spec.time_base)
    assert float(info.average_rate) == pytest.approx(len(written) / span, rel=0.1)
    assert info.frame_count == 30


def test_constant_frame_rate_average_equals_the_real_rate(clip_factory):
    info = probe(clip_factory("plain.mp4", **SMALL, frames=24))
    assert info.average_rate == info.real_rate == Fraction(24)


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_coded_size_swaps_for_quarter_turns_and_displayed_size_does_not(clip_factory, rotation):
    # ClipSpec's size is the displayed one: a quarter-turn clip stores its pixels as 120 x 160.
    path = clip_factory(f"rot{rotation}.mp4", **SMALL, frames=6, bframes=0, rotation=rotation)
    info = probe(path)
    assert info.rotation == rotation
    assert (info.width, info.height) == (160, 120)
    quarter = rotation in (90, 270)
    assert (info.coded_width, info.coded_height) == ((120, 160) if quarter else (160, 120))
    assert (info.video.width, info.video.height) == (info.coded_width, info.coded_height)
    assert not info.mirrored


def test_mirrored_clip_is_reported_as_mirrored(clip_factory):
    info = probe(clip_factory("rot90_flip.mp4", **SMALL, frames=6, bframes=0, rotation=90, hflip=True))
    assert info.rotation == 90 and info.mirrored


def test_to_dict_is_json_serialisable(clip_factory):
    path = clip_factory("two_audio.mp4", **SMALL, frames=24, audio=("aac", "aac"))
    data = probe(path, exact=True).to_dict()
    decoded = json.loads(json.dumps(data))
    assert decoded["width"] == 160 and decoded["frame_count"] == 24
    assert decoded["time_base"] == "1/12800"
    assert decoded["orientation"] == {"rotation": 0, "mirrored": False}
    assert decoded["keyframe_times"][0] == 0.0
    assert [s["kind"] for s in decoded["streams"]] == ["video", "audio", "audio"]


def test_to_dict_of_a_rotated_vfr_clip_is_json_serialisable(clip_factory):
    path = clip_factory("rot90_vfr.mkv", **SMALL, frames=12, vfr=True, rotation=90)
    data = json.loads(json.dumps(probe(path).to_dict()))
    assert data["orientation"] == {"rotation": 90, "mirrored": False}
    assert (data["width"], data["height"]) == (160, 120)
    assert (data["coded_width"], data["coded_height"]) == (120, 160)


def test_missing_file_is_input_not_found(tmp_path):
    with pytest.raises(InputNotFoundError):
        probe(tmp_path / "nope.mp4")


def test_garbage_with_a_video_extension_is_corrupt(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    with pytest.raises(CorruptVideoError):
        probe(bad)


def test_audio_only_file_is_not_a_video(tmp_path):
    path = tmp_path / "tone.m4a"
    with av.open(str(path), "w") as out:
        track = out.add_stream("aac", rate=48000)
        silence = np.zeros((2, 1024), dtype=np.float32)
        for n in range(10):
            frame = av.AudioFrame.from_ndarray(silence, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = 48000, n * 1024
            out.mux(track.encode(frame))
        out.mux(track.encode(None))
    with pytest.raises(NotAVideoError):
        probe(path)


# --- real clips --------------------------------------------------------------------------------------


def test_real_iphone_clip_probes_as_portrait_rotated_270(shared_videos):
    info = probe(shared_videos / "decord__video_90.mov", exact=True)
    assert (info.width, info.height) == (320, 568)
    assert (info.coded_width, info.coded_height) == (568, 320)
    assert info.rotation == 270 and not info.mirrored
    assert info.frame_count == 3


def test_real_10bit_vp9_probes_its_pixel_format_and_hidden_frames(shared_videos):
    info = probe(shared_videos / "androidx__roadtrip-vp92-10bit.webm", exact=True)
    assert info.pix_fmt == "yuv420p10le"
    assert (info.width, info.height) == (426, 240)
    assert info.frame_count == 72
    assert info.packet_count == 80  # alt-ref packets that show no frame of their own


def test_real_clip_with_two_video_streams_lists_all_six_streams(shared_videos):
    info = probe(shared_videos / "torchcodec__nasa_13013.mp4")
    kinds = [(s.kind, s.codec) for s in info.streams]
    assert sorted(kinds) == sorted(
        [("video", "h264")] * 2 + [("audio", "aac")] * 2 + [("subtitle", "mov_text")] * 2
    )
    first_video = probe(shared_videos / "torchcodec__nasa_13013.mp4", video_stream=0)
    assert first_video.video_index == 0 and (first_video.width, first_video.height) == (320, 180)
