"""What the scheduler knows of each worker of its pool, and how the cores of idle ones are handed out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

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


@dataclass
class DispatchRound:
    """One round of claims, and what each claimed task gets of the workers that would otherwise idle.

    A probe claimed while fewer tasks wait than there are workers cuts its video into more segments (its
    `spread`); a segment claimed while more workers are idle than tasks wait may use their shares of the
    cores as well (its `share`: its encoder's threads), when the pool's workers share one machine. The
    waiting tasks and idle workers are counted once a round, at its first probe or segment (`count`), and
    kept up to date after each claim: a bounded query however large the job.
    """

    workers: int
    count: Callable[[], tuple[int, int]]
    """(tasks waiting to be claimed, workers without a task including the one claiming), after a claim."""
    one_machine: bool
    """The workers share this machine's cores (local and inline pools; not Ray's nodes)."""
    _pending: int | None = field(default=None, init=False)
    _free: int = field(default=0, init=False)

    def sizes(self, kind: str) -> tuple[int, int]:
        """(spread, share) of a task of `kind` just claimed."""
        if self._pending is None and kind not in ("probe", "segment"):
            return 1, 1
        if self._pending is None:
            self._pending, self._free = self.count()
        else:
            self._pending = max(0, self._pending - 1)
        spread = max(1, self.workers - self._pending) if kind == "probe" else 1
        share = max(1, self._free // (self._pending + 1)) if kind == "segment" and self.one_machine else 1
        self._free = max(0, self._free - share)
        return spread, share
