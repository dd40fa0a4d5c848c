"""How `run` cuts a video into segments (`framefleet.jobs.task.plan_segments`), on a real probed clip: at
keyframes, at the segment length, and finer when idle workers should share a short video."""

from __future__ import annotations

from fractions import Fraction

import pytest

from framefleet.jobs.task import SHORTEST_SPREAD_SECONDS, plan_segments
from framefleet.video import VideoInfo, probe
from framefleet.video.synth import ClipSpec, write_clip


@pytest.fixture(scope="module")
def ten_seconds(tmp_path_factory) -> VideoInfo:
    """10 s at 25 fps with a keyframe every second."""
    path = tmp_path_factory.mktemp("plan") / "ten.mp4"
    write_clip(path, ClipSpec(width=64, height=48, frames=250, rate=Fraction(25), gop=25, bframes=0))
    return probe(path, keyframes=True)


def lengths(info: VideoInfo, segments, seconds: int = 10) -> list[float]:
    """Seconds of video in each segment of a clip `seconds` long."""
    bounds = [0, *(segment.end_pts for segment in segments[:-1]), round(seconds / info.time_base)]
    return [float((later - earlier) * info.time_base) for earlier, later in zip(bounds, bounds[1:])]


def test_a_video_shorter_than_the_segment_length_is_one_segment_unless_workers_would_idle(ten_seconds):
    assert len(plan_segments(ten_seconds, 20.0)) == 1
    assert lengths(ten_seconds, plan_segments(ten_seconds, 20.0, spread=2)) == [5.0, 5.0]
    assert sorted(lengths(ten_seconds, plan_segments(ten_seconds, 20.0, spread=4))) == [2.0, 2.0, 3.0, 3.0]


def test_cutting_finer_starts_every_segment_on_a_keyframe_and_stops_at_the_shortest_length(ten_seconds):
    keyframes = set(ten_seconds.keyframe_pts)
    segments = plan_segments(ten_seconds, 20.0, spread=16)
    assert len(segments) == 10 // SHORTEST_SPREAD_SECONDS
    assert all(segment.start_pts in keyframes for segment in segments[1:])
    assert min(lengths(ten_seconds, segments)) >= SHORTEST_SPREAD_SECONDS


def test_a_video_the_segment_length_cuts_into_a_multiple_of_the_idle_workers_is_cut_as_before(ten_seconds):
    assert lengths(ten_seconds, plan_segments(ten_seconds, 3.0)) == [3.0, 3.0, 4.0]
    assert plan_segments(ten_seconds, 3.0, spread=3) == plan_segments(ten_seconds, 3.0)
    assert plan_segments(ten_seconds, 2.0, spread=5) == plan_segments(ten_seconds, 2.0)  # 5 segments


def test_a_long_video_is_cut_into_a_multiple_of_the_idle_workers_so_that_none_idles_at_its_end(ten_seconds):
    """3 segments on 2 workers: the third runs alone while the other worker idles (7 s of the 10 on one
    worker); 4 pieces of about 2.5 s keep both busy to the end (5 s each)."""
    assert sorted(lengths(ten_seconds, plan_segments(ten_seconds, 3.0, spread=2))) == [2.0, 2.0, 3.0, 3.0]
    assert sorted(lengths(ten_seconds, plan_segments(ten_seconds, 3.0, spread=4))) == [2.0, 2.0, 3.0, 3.0]
    assert lengths(ten_seconds, plan_segments(ten_seconds, 4.0, spread=2)) == [4.0, 4.0, 2.0]  # 4 pieces: 6 s too


def test_keyframes_far_apart_are_cut_finer_when_that_balances_the_workers(tmp_path):
    """60 s with a keyframe every 10 s, segments of 20 s, 2 workers: 3 segments leave one worker alone for
    the last 20 s; 4 pieces can only be 10, 20, 10 and 20 s (still 40 s of work on one worker); 6 of 10 s
    end after 30 s."""
    path = tmp_path / "sixty.mp4"
    write_clip(path, ClipSpec(width=32, height=32, frames=1500, rate=Fraction(25), gop=250, bframes=0))
    info = probe(path, keyframes=True)
    assert len(plan_segments(info, 20.0)) == 3
    assert lengths(info, plan_segments(info, 20.0, spread=2), seconds=60) == [10.0] * 6
