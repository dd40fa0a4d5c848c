"""How much profiling a job is worth, and the sampling that fits in it.

A plan's profile is budgeted from the job it plans: `SHARE` (10%) of a first estimate of the job on this
machine, never less than `FLOOR_SECONDS`, so that a tiny job still gets a usable profile. The estimate
comes from the pilots (`framefleet.plan.measure.Pilot`, one per resolution to measure): each video's
frames at the CPU seconds per frame of the nearest resolution piloted (scaled by pixels), spread over the
machine's cores, plus the fixed cost of each of its segments, spread over its workers.

The sampling is the most frames per run, from `--sample-frames` down to `MIN_FRAMES`, whose predicted
profile fits in what the budget leaves after the pilots, with batch sizes and thread counts swept; when
none fits, the same without that sweep (the plan then holds them at the base setting); when still none
fits, `MIN_FRAMES` without the sweep: the floor, over the budget, and the plan says so. A profile's time is
predicted from each resolution's pilot: every run's frames and tasks at the pilot's costs, the all-cores
run's frames halfway between its workers sharing the cores perfectly and not at all, and the join,
quality and temporal steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from framefleet.plan.measure import ALL_CORES_FRAMES, QUALITY_FRAMES, TEMPORAL_FRAMES, Pilot
from framefleet.plan.workload import Workload

SHARE = 0.10
"""Profiling gets at most this share of the job's first estimate..."""
FLOOR_SECONDS = 40.0
"""... and never less than this (a tiny job still gets a usable profile)."""
MIN_FRAMES = 8
"""The fewest frames per run the budget may choose (`--sample-frames` lower than this is kept)."""
WARM_UP_FRAMES = 2
"""A run's warm-up task (`framefleet.plan.stretches.Stretch.warm`)."""


@dataclass(frozen=True)
class Pending:
    """A resolution the profile has yet to measure, with its pilot and the runs it needs."""

    pilot: Pilot
    runs: int
    """Runs of one worker alone: one per `max_size` value measured."""
    swept: int
    """Runs of other batch sizes and thread counts (made only when the sampling sweeps)."""
    workers: int
    """Worker processes of the all-cores run (1: none)."""
    worker_start: float
    """Seconds a fresh worker process takes to start (interpreter and imports)."""


@dataclass(frozen=True)
class Sampling:
    """How much a profile samples, and why: the budget and what the sampling is predicted to take."""

    frames: int
    """Frames per run."""
    sweep: bool
    """Whether batch sizes and thread counts are measured (else held at the base setting; true when there is
    nothing to sweep: fixed by flags)."""
    job_seconds: float
    """The first estimate of the job on this machine, from the pilots."""
    budget_seconds: float
    pilot_seconds: float
    """What the pilots took (part of the budget)."""
    predicted_seconds: float
    """The profile's predicted time at this sampling, pilots included."""

    @property
    def within_budget(self) -> bool:
        return self.predicted_seconds <= self.budget_seconds

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "within_budget": self.within_budget}

    def describe(self) -> str:
        sweep = "" if self.sweep else ", batch size and threads not swept"
        return (f"profiled {self.frames} frames per run{sweep}: about {self.predicted_seconds:.0f} s for a job of "
                f"about {self.job_seconds:.0f} s (budget {self.budget_seconds:.0f} s: {SHARE:.0%} of the job, "
                f"at least {FLOOR_SECONDS:.0f} s)")


def budget_seconds(job_seconds: float) -> float:
    """Seconds of profiling a job of `job_seconds` is worth: `SHARE` of it, at least `FLOOR_SECONDS`."""
    return max(FLOOR_SECONDS, SHARE * job_seconds)


def job_seconds(workload: Workload, pilots: dict[tuple[int, int], Pilot], cores: int, workers: int) -> float:
    """A first estimate of the job on this machine (see the module docstring); 0 without a pilot."""
    if not pilots:
        return 0.0
    busy_cpu = busy_tasks = 0.0
    for video in workload.videos:
        resolution, found = min(pilots.items(), key=lambda item: abs(item[0][0] * item[0][1] - video.width * video.height))
        scale = video.width * video.height / (resolution[0] * resolution[1])
        busy_cpu += video.frames * max(found.cpu_per_frame, found.wall_per_frame) * scale
        busy_tasks += len(video.segment_frames) * found.task_wall
    return (busy_cpu / max(1, cores) + busy_tasks / max(1, workers)) * workload.scale


def profile_seconds(pending: Sequence[Pending], frames: int, sweep: bool) -> float:
    """Predicted seconds of measuring `pending` at `frames` frames per run (the pilots apart)."""
    chunks = max(1, min(3, frames // 8))  # `stretches`: up to three, one per 8 frames
    total = 0.0
    for item in pending:
        pilot = item.pilot
        run = pilot.setup_seconds + (WARM_UP_FRAMES + frames) * pilot.wall_per_frame + (1 + chunks) * pilot.task_wall
        runs = item.runs + (item.swept if sweep else 0)
        all_cores = 0.0
        if item.workers > 1:
            all_cores = (item.worker_start + pilot.setup_seconds + (1 + chunks) * pilot.task_wall
                         + (WARM_UP_FRAMES + ALL_CORES_FRAMES * frames) * pilot.wall_per_frame * (1 + item.workers) / 2)
        # the join (two short segments at a small size), quality (full size and each reduced one) and the
        # temporal step: each about a run's set-up and a few frames
        extras = (3 * pilot.setup_seconds + 3 * pilot.task_wall
                  + (frames / 3 + QUALITY_FRAMES * (1 + item.runs) + min(frames, TEMPORAL_FRAMES)) * pilot.wall_per_frame)
        total += runs * run + all_cores + extras
    return total


def choose_sampling(pending: Sequence[Pending], job: float, pilot_seconds: float, most_frames: int) -> Sampling:
    """The sampling for `pending` within the budget of a job of `job` seconds (see the module docstring)."""
    budget = budget_seconds(job)
    fewest = min(MIN_FRAMES, most_frames)
    nothing_to_sweep = not any(item.swept for item in pending)
    for sweep in (True,) if nothing_to_sweep else (True, False):
        for frames in range(most_frames, fewest - 1, -1):
            predicted = pilot_seconds + profile_seconds(pending, frames, sweep)
            if predicted <= budget:
                return Sampling(frames, sweep, job, budget, pilot_seconds, predicted)
    return Sampling(fewest, nothing_to_sweep, job, budget, pilot_seconds,
                    pilot_seconds + profile_seconds(pending, fewest, False))
