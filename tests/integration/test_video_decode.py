"""`VideoReader`: every frame once, with its timestamp, upright, in 8-bit RGB, whole or by segments."""

from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction

import media_checks
import numpy as np
import pytest

from framefleet.errors import CorruptVideoError
from framefleet.video import VideoReader, probe
from framefleet.video.synth import MARKER, ClipSpec, frame_times, picture

SMALL = dict(width=160, height=120)
# Mean absolute difference (0..255 levels) below which a decoded frame "is" the synthetic picture:
# CRF-18 H.264 of these smooth pictures stays near 3; a wrong orientation or colour matrix gives 30+.
CLOSE = 6.0


def decode_all(path, **kwargs) -> list[tuple[int, np.ndarray]]:
    with VideoReader(path, **kwargs) as reader:
        return list(reader.frames())


def assert_red_marker_top_left(rgb: np.ndarray) -> None:
    block = rgb[2 : MARKER - 2, 2 : MARKER - 2].astype(int)  # inner part: edges blur with chroma subsampling
    r, g, b = block[..., 0].mean(), block[..., 1].mean(), block[..., 2].mean()
    assert r > 200 and g < 50 and b < 50, f"top-left block is not red: mean RGB ({r:.0f}, {g:.0f}, {b:.0f})"


# --- orientation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("hflip", [False, True], ids=["plain", "mirrored"])
@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_every_display_matrix_decodes_upright_with_the_marker_top_left(clip_factory, rotation, hflip):
    path = clip_factory(f"orient_{rotation}_{hflip}.mp4", **SMALL, frames=4, bframes=0, rotation=rotation, hflip=hflip)
    frames = decode_all(path)
    assert len(frames) == 4
    for index, (_, rgb) in enumerate(frames):
        assert rgb.shape == (120, 160, 3)
        assert_red_marker_top_left(rgb)
        assert media_checks.mean_abs_diff(rgb, picture(index, 160, 120)) < CLOSE


@pytest.mark.parametrize("rotation", [90, 270])
def test_rotated_frames_are_stored_sideways_but_come_out_in_displayed_size(clip_factory, rotation):
    path = clip_factory(f"orient_{rotation}_False.mp4", **SMALL, frames=4, bframes=0, rotation=rotation, hflip=False)
    stored = media_checks.rgb_frames(path, limit=1)[0]
    assert stored.shape == (160, 120, 3)  # what is in the file: no display matrix applied
    _, shown = decode_all(path)[0]
    assert shown.shape == (120, 160, 3)


@pytest.mark.parametrize("rotation", [90, 270])
def test_rotated_first_frame_matches_the_ffmpeg_cli_autorotate(clip_factory, rotation):
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("the ffmpeg CLI is not installed")
    path = clip_factory(f"orient_{rotation}_False.mp4", **SMALL, frames=4, bframes=0, rotation=rotation, hflip=False)
    raw = subprocess.run(
        [ffmpeg, "-v", "error", "-i", str(path), "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True,
        check=True,
    ).stdout
    _, ours = decode_all(path)[0]
    assert len(raw) == ours.size, "ffmpeg's autorotated frame has a different size"
    theirs = np.frombuffer(raw, np.uint8).reshape(ours.shape)
    assert media_checks.mean_abs_diff(ours, theirs) < 2.0


def test_real_iphone_clip_decodes_upright_as_portrait(shared_videos):
    frames = decode_all(shared_videos / "decord__video_90.mov")
    assert len(frames) == 3
    assert all(rgb.shape == (568, 320, 3) for _, rgb in frames)


# --- timestamps ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("vfr", [False, True], ids=["cfr", "vfr"])
def test_pts_are_exactly_those_written(clip_factory, vfr):
    spec = dict(**SMALL, frames=30, bframes=2, vfr=vfr)
    path = clip_factory(f"pts_{vfr}.mp4", **spec)
    written = frame_times(ClipSpec(**spec))
    with VideoReader(path) as reader:
        assert reader.time_base == ClipSpec().time_base
        got = [pts for pts, _ in reader.frames()]
    assert got == written
    assert got == media_checks.decoded_pts(path)


def test_pts_in_a_millisecond_container_are_the_written_times_rounded(clip_factory):
    spec = dict(**SMALL, frames=30, bframes=2, vfr=True)
    path = clip_factory("pts_vfr.mkv", **spec)
    written = frame_times(ClipSpec(**spec))
    with VideoReader(path) as reader:
        assert reader.time_base == Fraction(1, 1000)
        got = [pts for pts, _ in reader.frames()]
    expected = [round(p * ClipSpec().time_base * 1000) for p in written]
    assert len(got) == len(expected)
    assert all(abs(g - e) <= 1 for g, e in zip(got, expected)), (got, expected)


def test_decoded_pixels_match_the_synthetic_pictures(clip_factory):
    path = clip_factory("pts_False.mp4", **SMALL, frames=30, bframes=2, vfr=False)
    for index, (_, rgb) in enumerate(decode_all(path)):
        assert rgb.dtype == np.uint8 and rgb.shape == (120, 160, 3)
        assert media_checks.mean_abs_diff(rgb, picture(index, 160, 120)) < CLOSE


# --- segments ------------------------------------------------------------------------------------------


def _segments(path, bounds: list[int | None]) -> list[tuple[int, np.ndarray]]:
    out: list[tuple[int, np.ndarray]] = []
    with VideoReader(path) as reader:
        for start, end in zip(bounds[:-1], bounds[1:]):
            got = list(reader.frames(start, end))
            assert all((start is None or pts >= start) and (end is None or pts < end) for pts, _ in got)
            out.extend(got)
    return out


def _assert_same_frames(got, full) -> None:
    assert [pts for pts, _ in got] == [pts for pts, _ in full]
    for (pts, a), (_, b) in zip(got, full):
        assert np.array_equal(a, b), f"frame at pts {pts} differs from the full decode"


@pytest.mark.parametrize("vfr", [False, True], ids=["cfr", "vfr"])
def test_segments_at_keyframes_yield_each_frame_once(clip_factory, vfr):
    path = clip_factory(f"seg_{vfr}.mp4", **SMALL, frames=40, gop=12, bframes=2, vfr=vfr)
    full = decode_all(path)
    keys = list(probe(path).keyframe_pts)
    assert len(keys) == 4
    _assert_same_frames(_segments(path, [*keys, None]), full)


@pytest.mark.parametrize("vfr", [False, True], ids=["cfr", "vfr"])
def test_segments_between_any_frames_yield_each_frame_once(clip_factory, vfr):
    path = clip_factory(f"seg_{vfr}.mp4", **SMALL, frames=40, gop=12, bframes=2, vfr=vfr)
    full = decode_all(path)
    pts = [p for p, _ in full]
    # keyframes, frames just before and after them, B-frames in the middle of a GOP, and a 1-frame segment
    cuts = sorted({pts[i] for i in (1, 5, 11, 12, 13, 17, 18, 23, 25, 26, 35)})
    _assert_same_frames(_segments(path, [None, *cuts, None]), full)


def test_one_frame_segments_yield_every_frame(clip_factory):
    path = clip_factory("seg_False.mp4", **SMALL, frames=40, gop=12, bframes=2, vfr=False)
    full = decode_all(path)
    pts = [p for p, _ in full]
    _assert_same_frames(_segments(path, [*pts, None]), full)


def test_segment_bounds_between_timestamps_select_the_frames_inside(clip_factory):
    path = clip_factory("seg_False.mp4", **SMALL, frames=40, gop=12, bframes=2, vfr=False)
    pts = [p for p, _ in decode_all(path)]
    with VideoReader(path) as reader:
        got = [p for p, _ in reader.frames(pts[14] - 1, pts[20] + 1)]
    assert got == pts[14:21]


def test_batches_cover_a_segment_in_order(clip_factory):
    path = clip_factory("seg_True.mp4", **SMALL, frames=40, gop=12, bframes=2, vfr=True)
    full = decode_all(path)
    pts = [p for p, _ in full]
    with VideoReader(path) as reader:
        batches = list(reader.batches(5, pts[7], pts[30]))
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
    assert [b.index for b in batches] == [0, 5, 10, 15, 20]
    assert np.concatenate([b.pts for b in batches]).tolist() == pts[7:30]
    assert np.array_equal(np.concatenate([b.frames for b in batches]), np.stack([f for _, f in full[7:30]]))


def test_reading_again_starts_from_the_beginning(clip_factory):
    path = clip_factory("seg_False.mp4", **SMALL, frames=40, gop=12, bframes=2, vfr=False)
    with VideoReader(path) as reader:
        first = [p for p, _ in reader.frames()]
        second = [p for p, _ in reader.frames()]
        late = reader.frame_at(1.0)
        start = reader.frame_at(0)
    assert first == second and len(first) == 40
    assert media_checks.mean_abs_diff(late, picture(24, 160, 120)) < CLOSE
    assert media_checks.mean_abs_diff(start, picture(0, 160, 120)) < CLOSE


# --- colour and bit depth ------------------------------------------------------------------------------


def test_full_and_limited_range_clips_decode_to_the_same_rgb(clip_factory):
    limited = decode_all(clip_factory("range1.mp4", **SMALL, frames=6, bframes=0, color_range=1))
    full = decode_all(clip_factory("range2.mp4", **SMALL, frames=6, bframes=0, color_range=2))
    assert len(limited) == len(full) == 6
    for index, ((_, a), (_, b)) in enumerate(zip(limited, full)):
        assert media_checks.mean_abs_diff(a, b) < 4.0
        assert media_checks.mean_abs_diff(a, picture(index, 160, 120)) < CLOSE
        assert media_checks.mean_abs_diff(b, picture(index, 160, 120)) < CLOSE


def test_ten_bit_h264_decodes_to_8bit_rgb_close_to_the_picture(clip_factory):
    path = clip_factory("ten_bit.mp4", **SMALL, frames=6, bframes=0, pix_fmt="yuv420p10le")
    assert probe(path).pix_fmt == "yuv420p10le"
    frames = decode_all(path)
    assert len(frames) == 6
    for index, (_, rgb) in enumerate(frames):
        assert rgb.dtype == np.uint8 and rgb.shape == (120, 160, 3)
        assert media_checks.mean_abs_diff(rgb, picture(index, 160, 120)) < CLOSE


def test_odd_sized_vp9_decodes_at_its_odd_size(clip_factory):
    path = clip_factory("odd.webm", width=161, height=121, frames=6, codec="libvpx-vp9", bframes=0)
    frames = decode_all(path)
    assert len(frames) == 6
    for index, (_, rgb) in enumerate(frames):
        assert rgb.shape == (121, 161, 3)
        assert media_checks.mean_abs_diff(rgb, picture(index, 161, 121)) < CLOSE


def test_real_ten_bit_vp9_decodes_all_72_frames(shared_videos):
    path = shared_videos / "androidx__roadtrip-vp92-10bit.webm"
    frames = decode_all(path)
    assert len(frames) == 72
    assert all(rgb.dtype == np.uint8 and rgb.shape == (240, 426, 3) for _, rgb in frames)
    pts = [p for p, _ in frames]
    assert pts == sorted(set(pts)) == media_checks.decoded_pts(path)
    assert np.mean([rgb.std() for _, rgb in frames]) > 10  # real pictures, not a flat grey


# --- errors --------------------------------------------------------------------------------------------


def test_corrupt_input_raises_corrupt_video_error(tmp_path):
    bad = tmp_path / "bad.mkv"
    bad.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(CorruptVideoError):
        VideoReader(bad)
