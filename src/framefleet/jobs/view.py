"""`JobView`: one job as its ledger tells it, the single reading that every reader of a job shows.

`framefleet status`, `failures` and `report`, the service's API and dashboard, and its Prometheus metrics
read a job through a `JobView`. Its queries are the ledger's reads (`framefleet.jobs.reads`); this module
adds what is computed from them (the recent frame rate, the ETA, frames over time, elapsed time), and each
reader only formats the result.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from framefleet.jobs.directory import JobDir, open_ledger
from framefleet.jobs.reads import LedgerReads, Losses
from framefleet.jobs.store import Ledger
from framefleet.settings import PREDICTION_KEY, RUN_SETTINGS_KEY, SEGMENTING_KEY, RunSettings

NICE_BUCKETS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400)
"""Seconds a bucket of `JobView.frame_series` may span (a longer job gets whole multiples of a minute)."""
RECENT_SECONDS = 120.0
"""The window of `JobStatus.fps_recent`."""


@dataclass(frozen=True)
class JobStatus:
    """A snapshot of one job (`framefleet status`, the API's job detail)."""

    job_dir: str
    items: dict[str, int]
    tasks: dict[str, int]
    frames_done: int
    frames_expected: int
    fps_recent: float
    """Frames per second of the tasks finished in the last two minutes, over those two minutes or, when the
    job (or its latest run) started less than two minutes ago, over the time since it started (0 when
    idle)."""
    eta_seconds: float | None
    """From the throughput measured over the last two minutes; when no task finished in them (at the start,
    or after a pause), from the plan's predicted fps."""
    workers: list[str]
    """Workers holding a lease now."""
    input_failures: int
    crashes: int
    infra_losses: int
    elapsed_seconds: float = 0.0
    """From the job's first attempt to its last (or to now while one runs)."""
    stages: dict[str, float] | None = None
    """Seconds by stage (decode, ops, encode, upload) over the finished tasks."""
    prediction: dict[str, Any] | None = None
    """What the plan the job ran with predicted (`framefleet run --plan`): wall_seconds, fps, ..."""
    step_seconds: dict[str, float] | None = None
    """Op time by step of the op chain (`resize`, `style`, ...) over the finished tasks: the slow step."""
    settings: dict[str, Any] | None = None
    """How the job's latest run was set up (`RunSettings`: engine, options, retry, ...), which `retry` reuses."""
    running: bool = False
    """Whether a run holds the job now. When none does, nothing runs: no ETA, and items counted `running`
    were started and stopped (they resume where they were when the job runs again)."""
    stopped: int = 0
    """Attempts given up because the job was stopped (Ctrl-C, SIGTERM); not losses."""
    preempted: int = 0
    """Attempts given back on a preemption notice (infrastructure losses, counted apart from `infra_losses`)."""
    adopted: int = 0
    """Items done by adopting an output already committed with a matching manifest, without running (a new
    ledger over outputs that an earlier one made: docs/ledger.md#adoption)."""
    segmenting: dict[str, Any] | None = None
    """The segment length `run` chose for the preemption notice (`framefleet.plan.segmenting.SegmentChoice`)."""

    @classmethod
    def not_started(cls, job_dir: str | Path) -> JobStatus:
        """The status of a job whose first run has not made its ledger yet."""
        return cls(job_dir=str(job_dir), items={}, tasks={}, frames_done=0, frames_expected=0, fps_recent=0.0,
                   eta_seconds=None, workers=[], input_failures=0, crashes=0, infra_losses=0, stages={})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def losses(self) -> Losses:
        return Losses(self.input_failures, self.crashes, self.infra_losses, self.stopped, self.preempted)

    @property
    def state(self) -> str:
        """running, stopped (work is left and no run holds the job), or finished."""
        if self.running:
            return "running"
        left = self.items.get("pending", 0) + self.items.get("running", 0)
        return "stopped" if left else "finished"

    @property
    def fps_overall(self) -> float:
        """Frames per second since the job's first attempt."""
        return self.frames_done / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) lines for a table."""
        items = self.items
        in_flight = (f"{items['running']} running, " if self.running
                     else f"{items['running']} stopped part-way, " if items['running'] else "")
        eta = (f"{self.eta_seconds:.0f} s" if self.eta_seconds is not None else "unknown") if self.running else "-"
        return [
            ("job", self.job_dir),
            ("state", {"running": "running", "finished": "finished: nothing left to do",
                       "stopped": "stopped: run the same command again to resume"}[self.state]),
            ("items", f"{items['done']} done" + (f" ({self.adopted} adopted)" if self.adopted else "")
                      + f", {items['failed']} failed, {in_flight}{items['pending']} pending"),
            ("tasks", ", ".join(f"{n} {state}" for state, n in self.tasks.items() if n)),
            ("frames", f"{self.frames_done} of {self.frames_expected} expected"),
            ("throughput", f"{self.fps_recent:.1f} fps (last {RECENT_SECONDS:.0f} s)"),
            ("ETA", eta),
            ("workers", f"{len(self.workers)} busy" + (f": {', '.join(self.workers)}" if self.workers else "")),
            ("losses", str(self.losses)),
            *([("op steps", ", ".join(f"{step} {seconds:.1f} s" for step, seconds in self.step_seconds.items()))]
              if self.step_seconds else []),
            *self._settings_rows(),
            *([("segments", f"{self.segmenting['segment_seconds']:g} s for a {self.segmenting['notice_seconds']:g} s "
                            f"preemption notice (p90 {self.segmenting['p90_task_seconds']:.1f} s of work, from the "
                            f"{self.segmenting['basis']})")] if self.segmenting else []),
            *self._prediction_rows(),
        ]

    def _settings_rows(self) -> list[tuple[str, str]]:
        if not self.settings:
            return []
        workers = self.settings["options"]["workers"]
        return [("engine", f"{self.settings['engine']}, {workers or 'default'} workers, "
                           f"{self.settings['retry']['max_attempts']} attempts")]

    def _prediction_rows(self) -> list[tuple[str, str]]:
        """The plan's prediction beside the measured figures."""
        if not self.prediction:
            return []
        predicted = self.prediction
        projected = (self.elapsed_seconds + (self.eta_seconds or 0.0)) if self.frames_done else None
        return [
            ("predicted", f"{predicted['wall_seconds']:.0f} s wall, {predicted['fps']:.1f} fps "
                          f"({predicted.get('node', '?')} x {predicted.get('nodes', '?')})"),
            ("actual", f"{self.elapsed_seconds:.0f} s so far, {self.fps_overall:.1f} fps"
                       + (f", {projected:.0f} s projected" if projected else "")),
        ]


@dataclass(frozen=True)
class FrameSeries:
    """Frames processed over time (`JobView.frame_series`), in equal buckets from `start`."""

    start: float
    """The first finished task's claim, seconds since the epoch."""
    bucket_seconds: float
    frames: list[float]
    """Frames per bucket: each finished task's frames spread evenly over the attempt that did them."""


class JobView(LedgerReads):
    """One job as its ledger tells it (safe while the job runs): the ledger's read queries, and the figures
    computed from them (recent frame rate, ETA, frames over time, the status snapshot). `now` is the time
    rates and elapsed time are measured to (the current time by default)."""

    def __init__(self, ledger: Ledger, job_dir: str | Path | None = None, now: float | None = None) -> None:
        super().__init__(ledger)
        self.job_dir = str(job_dir if job_dir is not None else ledger.path.parent)
        self.now = time.time() if now is None else now

    @classmethod
    @contextmanager
    def open(cls, job_dir: str | Path, now: float | None = None) -> Iterator[JobView]:
        """A view of the job in `job_dir`, its ledger closed on leaving."""
        with open_ledger(job_dir) as ledger:
            yield cls(ledger, job_dir, now)

    def frame_series(self, buckets: int, end: float | None = None) -> FrameSeries | None:
        """Frames processed over time, in at most `buckets` buckets (a `NICE_BUCKETS` span each when one
        fits) up to `end` (default: the last task's end); None before any task finished. A task's frames
        are only known when it ends: they are spread evenly from its claim to its end, not all put at
        the end (a nine-minute task shows nine minutes of work, not one spike)."""
        spans = self.task_spans()
        if not spans:
            return None
        start = spans[0][0]
        span = max((end or 0.0) - start, max(ended for _, ended, _ in spans) - start, 1.0)
        bucket = next((step for step in NICE_BUCKETS if span / step <= buckets), math.ceil(span / buckets))
        frames = [0.0] * math.ceil(span / bucket)
        for started, ended, count in spans:
            if ended <= started:
                frames[min(len(frames) - 1, int((ended - start) // bucket))] += count
                continue
            first, last = int((started - start) // bucket), min(len(frames) - 1, int((ended - start) // bucket))
            for index in range(first, last + 1):
                low, high = max(started, start + index * bucket), min(ended, start + (index + 1) * bucket)
                frames[index] += count * max(high - low, 0.0) / (ended - started)
        return FrameSeries(start=start, bucket_seconds=float(bucket), frames=frames)

    def setting(self, key: str) -> Any:
        """A JSON setting `run` stored (`PREDICTION_KEY`, `RUN_SETTINGS_KEY`), or None."""
        return json.loads(self.ledger.setting(key) or "null")

    def run_settings(self) -> RunSettings | None:
        """The `RunSettings` of the job's latest run, as this version reads them (keys another version
        wrote that this one does not know are left out, missing ones take their defaults), or None."""
        text = self.ledger.setting(RUN_SETTINGS_KEY)
        return None if text is None else RunSettings.from_json(text)

    def fps_recent(self) -> float:
        """Frames per second of the tasks finished in the last `RECENT_SECONDS`, over that window or, when
        the work going on in it began later (a job or a resumed run younger than the window), over the time
        since that work began (at least a second); 0 when none finished."""
        since = self.now - RECENT_SECONDS
        recent = sum(frames for finished, frames in self.throughput() if finished >= since)
        if not recent:
            return 0.0
        began = self.busy_since(since)
        return recent / max(self.now - max(since, began if began is not None else since), 1.0)

    def status(self) -> JobStatus:
        """Counts, frames, rates, ETA, workers, losses, stages and settings in one snapshot."""
        done, expected = self.frames()
        fps = self.fps_recent()
        prediction = self.setting(PREDICTION_KEY)
        rate = fps or (prediction or {}).get("fps", 0.0)
        activity = self.activity()
        losses = self.losses()
        running = JobDir.of(self.job_dir).held()
        settings = self.run_settings()
        return JobStatus(
            job_dir=self.job_dir,
            items=self.counts(),
            tasks=self.tasks(),
            frames_done=done,
            frames_expected=expected,
            fps_recent=fps,
            eta_seconds=(expected - done) / rate if running and rate > 0 and expected > done else None,
            workers=activity.running_workers,
            input_failures=losses.input_failures,
            crashes=losses.crashes,
            infra_losses=losses.infra_losses,
            elapsed_seconds=activity.elapsed(self.now),
            stages=self.stages(),
            prediction=prediction,
            step_seconds=self.step_seconds(),
            settings=None if settings is None else json.loads(settings.to_json()),
            running=running,
            stopped=losses.stopped,
            preempted=losses.preempted,
            adopted=self.adopted(),
            segmenting=self.setting(SEGMENTING_KEY),
        )


def job_status(job_dir: str | Path, now: float | None = None) -> JobStatus:
    """The status of the job in `job_dir`."""
    with JobView.open(job_dir, now) as view:
        return view.status()
