"""`job_status`: what a job's ledger says about it: counts, throughput, ETA, workers, losses."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from framefleet.job import RUN_SETTINGS_KEY
from framefleet.job_dir import open_ledger
from framefleet.ledger import Losses

_RECENT_SECONDS = 120.0


@dataclass(frozen=True)
class JobStatus:
    """A snapshot of one job."""

    job_dir: str
    items: dict[str, int]
    tasks: dict[str, int]
    frames_done: int
    frames_expected: int
    fps_recent: float
    """Frames per second over the last two minutes of finished tasks (0 when idle)."""
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
    prediction: dict[str, Any] | None = None
    """What the plan the job ran with predicted (`framefleet run --plan`): wall_seconds, fps, ..."""
    step_seconds: dict[str, float] | None = None
    """Op time by step of the op chain (`resize`, `style`, ...) over the finished tasks: the slow step."""
    settings: dict[str, Any] | None = None
    """How the job's latest run was set up (`RunSettings`: engine, options, limits, ...), which `retry` reuses."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) lines for a table."""
        items = self.items
        eta = f"{self.eta_seconds:.0f} s" if self.eta_seconds is not None else "unknown"
        return [
            ("job", self.job_dir),
            ("items", f"{items['done']} done, {items['failed']} failed, {items['running']} running, "
                      f"{items['pending']} pending"),
            ("tasks", ", ".join(f"{n} {state}" for state, n in self.tasks.items() if n)),
            ("frames", f"{self.frames_done} of {self.frames_expected} expected"),
            ("throughput", f"{self.fps_recent:.1f} fps (last {_RECENT_SECONDS:.0f} s)"),
            ("ETA", eta),
            ("workers", f"{len(self.workers)} busy" + (f": {', '.join(self.workers)}" if self.workers else "")),
            ("losses", str(Losses(self.input_failures, self.crashes, self.infra_losses))),
            *([("op steps", ", ".join(f"{step} {seconds:.1f} s" for step, seconds in self.step_seconds.items()))]
              if self.step_seconds else []),
            *self._settings_rows(),
            *self._prediction_rows(),
        ]

    def _settings_rows(self) -> list[tuple[str, str]]:
        if not self.settings:
            return []
        workers = self.settings["options"]["workers"]
        return [("engine", f"{self.settings['engine']}, {workers or 'default'} workers, "
                           f"{self.settings['limits']['max_attempts']} attempts")]

    def _prediction_rows(self) -> list[tuple[str, str]]:
        """The plan's prediction beside the measured figures."""
        if not self.prediction:
            return []
        predicted = self.prediction
        done = self.frames_done
        projected = (self.elapsed_seconds + (self.eta_seconds or 0.0)) if done else None
        return [
            ("predicted", f"{predicted['wall_seconds']:.0f} s wall, {predicted['fps']:.1f} fps "
                          f"({predicted.get('node', '?')} x {predicted.get('nodes', '?')})"),
            ("actual", f"{self.elapsed_seconds:.0f} s so far, {self.fps_overall:.1f} fps"
                       + (f", {projected:.0f} s projected" if projected else "")),
        ]

    @property
    def fps_overall(self) -> float:
        """Frames per second since the job's first attempt."""
        return self.frames_done / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0


def job_status(job_dir: str | Path, now: float | None = None) -> JobStatus:
    """Read a job's state from its ledger (safe while the job runs)."""
    now = time.time() if now is None else now
    with open_ledger(job_dir) as ledger:
        done, expected = ledger.frame_totals()
        recent = [frames for finished, frames in ledger.throughput() if finished >= now - _RECENT_SECONDS]
        fps = sum(recent) / _RECENT_SECONDS if recent else 0.0
        attempts = ledger.attempts()
        prediction = json.loads(ledger.setting("prediction") or "null")
        settings = json.loads(ledger.setting(RUN_SETTINGS_KEY) or "null")
        rate = fps or (prediction or {}).get("fps", 0.0)
        eta = (expected - done) / rate if rate > 0 and expected > done else None
        losses = ledger.losses()
        running = {a["worker"] for a in attempts if a["outcome"] is None}
        return JobStatus(
            job_dir=str(job_dir),
            items=ledger.counts(),
            tasks=ledger.task_counts(),
            frames_done=done,
            frames_expected=expected,
            fps_recent=fps,
            eta_seconds=eta,
            workers=sorted(running),
            input_failures=losses.input_failures,
            crashes=losses.crashes,
            infra_losses=losses.infra_losses,
            elapsed_seconds=_elapsed(attempts, now),
            prediction=prediction,
            step_seconds=ledger.step_seconds(),
            settings=settings,
        )


def _elapsed(attempts: list[dict[str, Any]], now: float) -> float:
    """Seconds from the first attempt's start to the last one's end (now while one runs)."""
    if not attempts:
        return 0.0
    ends = [now if a["ended"] is None else a["ended"] for a in attempts]
    return max(ends) - min(a["started"] for a in attempts)
