"""A segment cut at frame N on a preemption notice (docs/reliability.md#cutting-a-segment-at-frame-n): the part
[start, N) and the rest [N, end), a task of a later seq that starts at a frame that is not a keyframe, join into
one frame-exact output in the order of their frames.
"""

from __future__ import annotations

import threading
from pathlib import Path

import media_checks
import pytest

from framefleet.jobs.task import TaskRequest, plan_segments, run_task
from framefleet.pipeline import Pipeline
from framefleet.processing.streaming import FrameProcessor
from framefleet.video import probe

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def clip(clip_factory) -> Path:
    """96 frames at 24 fps, a keyframe every second, B-frames and an audio track."""
    return clip_factory("cut.mp4", width=64, height=48, frames=96, gop=24, bframes=2, audio=("aac",))


def request(kind: str, seq: int, start: int | None, end: int | None, clip: Path, tmp_path: Path,
            parts: tuple[int, ...] = ()) -> TaskRequest:
    return TaskRequest(task_id=seq, lease_id=seq, kind=kind, item_id=1, seq=seq, uri=str(clip),
                       output_uri=str(tmp_path / "out.mp4"), start_pts=start, end_pts=end,
                       parts_dir=str(tmp_path / "parts"), parts=parts)


def frames_in(pts: list[int], start: int | None, end: int | None) -> int:
    return sum(1 for p in pts if (start is None or p >= start) and (end is None or p < end))


def test_parts_of_a_cut_segment_join_frame_exact_in_the_order_of_their_frames(clip, tmp_path):
    info = probe(clip, keyframes=True)
    (_, first_end), (second_start, _) = [(s.start_pts, s.end_pts) for s in plan_segments(info, 2.0)]
    pts = media_checks.decoded_pts(clip)
    cut_at = pts[pts.index(first_end) - 17]  # frame 31 of 48: not a keyframe, after B-frames
    assert cut_at not in info.keyframe_pts
    pipeline = Pipeline.from_options({"op": "identity", "segment_seconds": 2})
    with FrameProcessor(pipeline, sessions=1) as processor:
        # segment 0 cut at N: its part [start, N) keeps seq 0, the rest [N, end) is seq 2, after segment 1
        for seq, start, end in ((0, None, cut_at), (1, second_start, None), (2, cut_at, first_end)):
            done = run_task(request("segment", seq, start, end, clip, tmp_path), pipeline, processor)
            assert done.result.frames == frames_in(pts, start, end)
        joined = run_task(request("join", 0, None, None, clip, tmp_path, parts=(0, 2, 1)), pipeline, processor)
    output = tmp_path / "out.mp4"
    assert joined.result.frames == len(pts) == 96
    assert media_checks.video_time_base(output) == media_checks.video_time_base(clip)
    assert media_checks.decoded_pts(output) == pts
    assert len(media_checks.streams_of_kind(output, "audio")) == 1


def test_a_segment_told_to_cut_commits_its_frames_so_far_and_the_rest_joins_frame_exact(clip, tmp_path):
    info = probe(clip, keyframes=True)
    (_, first_end), (second_start, _) = [(s.start_pts, s.end_pts) for s in plan_segments(info, 2.0)]
    pts = media_checks.decoded_pts(clip)
    pipeline = Pipeline.from_options({"op": "identity", "segment_seconds": 2})
    cut = threading.Event()
    written: list[int] = []

    def progress(frames: int) -> None:  # the scheduler's notice, once 10 frames are written
        written.append(frames)
        if sum(written) >= 10:
            cut.set()

    with FrameProcessor(pipeline, sessions=1) as processor:
        done = run_task(request("segment", 0, None, first_end, clip, tmp_path), pipeline, processor,
                        progress=progress, cut=cut)
        cut_at = done.result.cut_at
        assert cut_at is not None and cut_at == pts[sum(written)]  # the first frame it did not write
        assert done.result.frames == done.metrics.frames == sum(written) < pts.index(first_end)
        part = tmp_path / "parts" / "item-1" / "00000.nut"
        assert media_checks.frame_count(part) == sum(written)  # flushed: every frame it wrote
        for seq, start, end in ((1, second_start, None), (2, cut_at, first_end)):
            rest = run_task(request("segment", seq, start, end, clip, tmp_path), pipeline, processor)
            assert rest.result.frames == frames_in(pts, start, end)
        whole = request("segment", 3, None, None, clip, tmp_path)
        assert run_task(whole, pipeline, processor, cut=cut).result.cut_at is None  # a whole video is never cut
        joined = run_task(request("join", 0, None, None, clip, tmp_path, parts=(0, 2, 1)), pipeline, processor)
    output = tmp_path / "out.mp4"
    assert joined.result.frames == len(pts)
    assert media_checks.decoded_pts(output) == pts
