"""What the scheduler knows of each worker of its pool."""

from __future__ import annotations

from dataclasses import dataclass

from framefleet.jobs.transitions import Task


@dataclass
class WorkerSlot:
    """One worker: whether it is ready, the task it runs and since when."""

    ready: bool = False
    task: Task | None = None
    started: float = 0.0
    last_activity: float = 0.0
    last_renewal: float = 0.0
    frames: int = 0
    """Frames the task reported so far."""
    leaving_at: float | None = None
    """Its node's preemption deadline (`time.time()` seconds): it takes no more tasks, and what it runs is
    given back just before then."""
