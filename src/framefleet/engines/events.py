"""What worker pools report to the scheduler, and what an engine reports to its caller while it runs.

Worker processes import this module, not the scheduler: a worker needs the events, not the ledger's
reads, the preemption policy or the notice watcher.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from framefleet.errors import FramefleetError

if TYPE_CHECKING:
    from framefleet.jobs.task import TaskResult
    from framefleet.spot.notices import Notice


@dataclass
class EngineProgress:
    """What an engine reports while it runs."""

    frames: int = 0
    """Frames processed in this run so far (live, from the workers' progress)."""
    frames_before: int = 0
    """Frames earlier runs of the job finished (a resumed job starts with them done)."""
    frames_expected: int = 0
    """Frames the job's items hold: their probes' counts, estimated from file sizes for items not probed yet."""
    unprobed: int = 0
    """Items not probed yet (while any is, `frames_expected` is partly an estimate)."""
    counts: dict[str, int] = field(default_factory=dict)
    """Items per state."""
    workers: int = 0
    busy: int = 0
    stopping: bool = False


@dataclass(frozen=True)
class Ready:
    """A worker has set its ops up and can take tasks."""

    worker: str


@dataclass(frozen=True)
class Progressed:
    """A busy worker processed `frames` more frames."""

    worker: str
    frames: int


@dataclass(frozen=True)
class Finished:
    """A worker finished its task."""

    worker: str
    result: TaskResult


@dataclass(frozen=True)
class Errored:
    """A worker's task raised (the input's fault, a bug, or an unreachable store); the worker lives on."""

    worker: str
    error_type: str
    message: str
    log_tail: str | None = None
    retryable: bool = True
    """False: the input settles it (`FramefleetError.retryable`), so its item fails without another attempt."""

    @classmethod
    def of(cls, worker: str, exc: BaseException, log_tail: str | None = None) -> Errored:
        """A framefleet error as itself; anything else (a bug, a library's surprise) with `log_tail`."""
        if isinstance(exc, FramefleetError):
            return cls(worker, exc.error_class, str(exc), retryable=exc.retryable)
        return cls(worker, type(exc).__name__, f"{type(exc).__name__}: {exc}", log_tail)


@dataclass(frozen=True)
class Died:
    """A worker is gone; `outcome` says whose fault that was."""

    worker: str
    outcome: Literal["lost", "crashed"]
    error_type: str
    """What the ledger records, e.g. WorkerKilled, WorkerCrashed, NodeLost."""
    message: str


@dataclass(frozen=True)
class Noticed:
    """A worker's node got a preemption notice (the Ray engine: a watcher on each worker's node)."""

    worker: str
    notice: Notice


Event = Ready | Progressed | Finished | Errored | Died | Noticed
