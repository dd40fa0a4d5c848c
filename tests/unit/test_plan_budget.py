"""The profiling budget: 10% of the job's first estimate (at least a floor), the job estimated from the
pilots, and the sampling chosen to fit. Pure computations on hand-written pilots: nothing is measured."""

from __future__ import annotations

import pytest

from framefleet.plan.budget import (
    FLOOR_SECONDS,
    MIN_FRAMES,
    SHARE,
    Pending,
    budget_seconds,
    choose_sampling,
    job_seconds,
    profile_seconds,
)
from framefleet.plan.measure import Pilot
from framefleet.plan.workload import VideoWork, Workload


def pilot(wall: float = 0.1, cpu: float | None = None, task: float = 0.1) -> Pilot:
    """A pilot of one worker: `wall` seconds a frame, `task` seconds of fixed cost a task."""
    return Pilot(uri="/videos/a.mp4", wall_per_frame=wall, cpu_per_frame=wall if cpu is None else cpu,
                 task_wall=task, task_cpu=task, setup_seconds=0.3)


def pending(wall: float = 0.1, runs: int = 1, swept: int = 3, workers: int = 2) -> Pending:
    return Pending(pilot=pilot(wall), runs=runs, swept=swept, workers=workers, worker_start=0.6)


def workload(videos: int, frames: int = 480, width: int = 1280, height: int = 720, total: int | None = None) -> Workload:
    made = tuple(VideoWork(uri=f"/videos/v{i}.mp4", width=width, height=height, codec="h264", frames=frames,
                           duration=frames / 24, segment_frames=(frames,)) for i in range(videos))
    return Workload(videos=made, total_videos=total or videos, segment_seconds=20.0)


def test_budget_is_a_tenth_of_the_job_and_never_below_the_floor() -> None:
    assert budget_seconds(0) == FLOOR_SECONDS
    assert budget_seconds(60) == FLOOR_SECONDS
    assert budget_seconds(3600) == pytest.approx(SHARE * 3600) == pytest.approx(360)
    # the floor is no more than a tenth of a ten-minute job: past 10 minutes, the budget is 10% of the job
    assert FLOOR_SECONDS <= 0.1 * 600
    assert all(budget_seconds(job) == pytest.approx(0.1 * job) for job in (600.0, 601.0, 7200.0, 86_400.0))


def test_job_estimate_spreads_the_frames_over_the_cores() -> None:
    pilots = {(1280, 720): pilot(wall=0.2, cpu=0.3, task=0.5)}
    # 10 videos of 480 frames at 0.3 CPU seconds a frame over 2 cores, and a task of 0.5 s each over 2 workers
    assert job_seconds(workload(10), pilots, cores=2, workers=2) == pytest.approx(10 * 480 * 0.3 / 2 + 10 * 0.5 / 2)
    # a sample of 10 standing for 1,000 videos, and a resolution without a pilot scaled by pixels
    assert job_seconds(workload(10, total=1000), pilots, 2, 2) == pytest.approx(100 * job_seconds(workload(10), pilots, 2, 2))
    quarter = job_seconds(workload(10, width=640, height=360), pilots, 2, 2)
    assert quarter == pytest.approx(10 * 480 * 0.3 / 4 / 2 + 10 * 0.5 / 2)
    assert job_seconds(workload(10), {}, 2, 2) == 0.0


def test_profile_time_grows_with_frames_sweeps_and_resolutions() -> None:
    one = [pending()]
    assert profile_seconds(one, 24, True) > profile_seconds(one, 12, True) > profile_seconds(one, 8, True)
    assert profile_seconds(one, 24, True) > profile_seconds(one, 24, False)
    assert profile_seconds([pending(), pending(wall=0.3)], 24, True) > profile_seconds(one, 24, True)
    # a machine of one core has no all-cores run
    assert profile_seconds([pending(workers=1)], 24, True) < profile_seconds(one, 24, True)


def test_a_big_job_gets_every_frame_asked_for_within_a_tenth_of_it() -> None:
    job = 3600.0
    sampling = choose_sampling([pending(), pending(wall=0.2)], job, pilot_seconds=5.0, most_frames=24)
    assert (sampling.frames, sampling.sweep) == (24, True)
    assert sampling.budget_seconds == pytest.approx(0.1 * job)
    assert sampling.within_budget and sampling.predicted_seconds <= 0.1 * job


def test_a_tiny_job_samples_fewer_frames_to_fit_the_floor() -> None:
    heavy = [pending(wall=0.125), pending(wall=0.08), pending(wall=0.03)]  # three sizes, as 1080p, 720p and 270p
    assert profile_seconds(heavy, 24, True) > FLOOR_SECONDS  # all it asks for does not fit
    sampling = choose_sampling(heavy, job=45.0, pilot_seconds=4.0, most_frames=24)
    assert MIN_FRAMES <= sampling.frames < 24
    assert sampling.within_budget and sampling.predicted_seconds <= FLOOR_SECONDS
    assert sampling.budget_seconds == FLOOR_SECONDS


def test_without_room_for_the_sweep_it_is_left_out_then_the_floor_is_taken() -> None:
    slow = [pending(wall=0.25), pending(wall=0.2)]  # with the sweep, even 8 frames a run are over the floor
    sampling = choose_sampling(slow, job=45.0, pilot_seconds=4.0, most_frames=24)
    assert not sampling.sweep and sampling.frames >= MIN_FRAMES and sampling.within_budget
    slowest = [pending(wall=3.0)]  # 4K at full size: even the least usable profile is over the floor
    floor = choose_sampling(slowest, job=45.0, pilot_seconds=10.0, most_frames=24)
    assert (floor.frames, floor.sweep, floor.within_budget) == (MIN_FRAMES, False, False)
    assert "not swept" in floor.describe()


@pytest.mark.parametrize("wall", [0.01, 0.05, 0.125, 0.5, 1.0])
def test_past_ten_minutes_the_profile_stays_within_a_tenth_of_the_job(wall: float) -> None:
    """For jobs from 10 minutes to a day, with sizes from fast to slow, the chosen sampling is predicted within
    10% of the job whenever the least usable profile fits in it, and more job never buys fewer frames."""
    sizes = [pending(wall=wall), pending(wall=wall / 2), pending(wall=wall / 4)]
    least = 2.0 + profile_seconds(sizes, MIN_FRAMES, False)
    frames_before = 0
    for job in (600.0, 900.0, 1800.0, 3600.0, 4 * 3600.0, 86_400.0):
        sampling = choose_sampling(sizes, job, pilot_seconds=2.0, most_frames=24)
        assert sampling.frames >= frames_before
        frames_before = sampling.frames
        if least <= 0.1 * job:
            assert sampling.within_budget and sampling.predicted_seconds <= 0.1 * job, (wall, job, sampling)


def test_fewer_frames_asked_for_than_the_minimum_are_kept() -> None:
    sampling = choose_sampling([pending(wall=3.0)], job=45.0, pilot_seconds=1.0, most_frames=6)
    assert sampling.frames == 6


def test_knobs_all_fixed_leave_nothing_to_sweep_and_nothing_to_say_about_it() -> None:
    fixed = [pending(wall=3.0, swept=0)]
    sampling = choose_sampling(fixed, job=45.0, pilot_seconds=10.0, most_frames=24)
    assert (sampling.frames, sampling.sweep, sampling.within_budget) == (MIN_FRAMES, True, False)
    assert "not swept" not in sampling.describe()
