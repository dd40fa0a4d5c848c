"""Acting on a preemption notice in a run whose process is the node (local and inline engines).

`watch_notices` runs a `framefleet.spot.NoticeWatcher` for the life of a run (configured from the
FRAMEFLEET_SPOT_* variables, docs/reliability.md) and hands each notice with a deadline to the scheduler
(`NoticeResponse.preempt`). The scheduler then claims nothing more and, for each task in flight, asks
`seconds_needed`: a task predicted to finish before the deadline (from the fps its worker measured, the
frames its segment holds, times `slack`, plus `margin_seconds`) finishes; a segment of a split video that has
written frames is cut short when `seconds_to_cut` fits (its worker stops at the next frame it can and
commits the part, a new task holds the rest); any other is given back at once as `preempted` (its worker is
killed). Whatever still runs `margin_seconds / 2` before the deadline is given back then. Once nothing runs, the run ends (exit code 75) and, on Azure, the event is acknowledged so the
eviction may start. A notice without a deadline (an AWS rebalance recommendation) is only logged.

On the Ray engine each worker actor watches its own node (`framefleet.engines.ray`) and the scheduler
applies the same rule to that worker alone (`Noticed`); the run goes on elsewhere.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Protocol

from framefleet.engines.slots import WorkerSlot
from framefleet.jobs.reads import LedgerReads
from framefleet.jobs.transitions import Task, TaskKind
from framefleet.spot import Notice, NoticeWatcher, WatchSettings

log = logging.getLogger("framefleet.spot")


@dataclass(frozen=True)
class PreemptionPolicy:
    """When a task in flight may finish after a notice."""

    margin_seconds: float = 1.0
    """A task must be predicted to finish this long before the cloud's deadline (the encoder's flush, the
    commit, the kill of what is left)."""
    slack: float = 1.25
    """Predicted seconds are multiplied by this: a video's speed varies along it."""
    cut_frames: int = 16
    """Frames a cut still costs: the batch its worker is on and the frames its encoder holds back, which the
    flush encodes (x264's veryfast looks 10 frames ahead); the commit is in the margin."""


@dataclass(frozen=True)
class InFlight:
    """A task running when the notice came."""

    kind: TaskKind
    frames_done: int
    """Frames its worker reported so far."""
    frames_expected: int | None
    """Frames its segment holds (None: unknown)."""
    seconds: float
    """How long it has run."""


def seconds_needed(flight: InFlight, policy: PreemptionPolicy, job_fps: float = 0.0) -> float | None:
    """Seconds before the deadline `flight` needs to finish (with the margin), or None when that cannot be
    told (a segment whose frames or speed are unknown): such a task is given back. Probes and joins (no
    frames, usually well under a second) need only the margin. The speed is the task's own fps once it has
    reported frames, else `job_fps` (a worker's fps over the job's finished segments)."""
    if flight.kind != "segment":
        return policy.margin_seconds
    if flight.frames_expected is None:
        return None
    fps = flight.frames_done / flight.seconds if flight.frames_done and flight.seconds > 0 else job_fps
    if fps <= 0:
        return None
    left = max(flight.frames_expected - flight.frames_done, 1)  # at least the frame under way
    return left / fps * policy.slack + policy.margin_seconds


def seconds_to_cut(flight: InFlight, policy: PreemptionPolicy) -> float | None:
    """Seconds before the deadline a cut of `flight` needs (`cut_frames` at its own fps, with the slack and
    the margin), or None when it cannot be cut: not a segment, or no frame written yet (nothing to keep)."""
    if flight.kind != "segment" or not flight.frames_done or flight.seconds <= 0:
        return None
    return policy.cut_frames / (flight.frames_done / flight.seconds) * policy.slack + policy.margin_seconds


class NoticeResponse:
    """A scheduler's answer to preemption notices: which tasks in flight finish and which are given back.

    `preempt` takes this node's notice from any thread; the scheduler acts on it at its next turn (`due`,
    `act`). On Ray a worker's node gets its own notice (`act_for_worker`): that worker alone is affected.
    """

    def __init__(self, policy: PreemptionPolicy, reads: LedgerReads,
                 give_back: Callable[[str, Task, str], None], cut: Callable[[str], bool]) -> None:
        self.policy, self._reads, self._give_back, self._cut = policy, reads, give_back, cut
        """`give_back(worker, task, message)` kills the worker and records its task `preempted`; `cut(worker)`
        asks the worker to cut its segment short (False: it is gone)."""
        self._incoming: Notice | None = None
        self.notice: Notice | None = None
        """This node's notice, once acted on."""
        self.given_back = 0
        """Tasks given back as `preempted`."""
        self.cut = 0
        """Segments asked to cut short."""

    def preempt(self, notice: Notice) -> None:
        """A preemption notice for this node, from any thread: acted on at the scheduler's next turn."""
        self._incoming = notice

    def due(self) -> Notice | None:
        """The node's notice, when it came and has not been acted on yet."""
        return self._incoming if self.notice is None else None

    def act(self, notice: Notice, slots: dict[str, WorkerSlot]) -> None:
        """Let each running task that fits before the deadline finish; give the others back now."""
        self.notice = notice
        for name, slot in list(slots.items()):
            self._finish_or_give_back(name, slot, notice, notice.seconds_left())

    def act_for_worker(self, name: str, slot: WorkerSlot, notice: Notice, drop: Callable[[str], None]) -> None:
        """A worker's node got a notice (deadline on the wall clock: the node's monotonic clock is not ours):
        it takes no more tasks; its task finishes if it fits, else is given back; an idle one is dropped."""
        if slot.leaving_at is not None or notice.deadline_wall is None:
            return
        slot.leaving_at = notice.deadline_wall
        if slot.task is None:
            drop(name)
        else:
            self._finish_or_give_back(name, slot, notice, max(0.0, notice.deadline_wall - time.time()))

    def deadline_near(self) -> bool:
        """Whether this node's deadline is half a margin away or past: what still runs goes back now."""
        deadline = self.notice.deadline_monotonic if self.notice is not None else None
        return deadline is not None and time.monotonic() >= deadline - self.policy.margin_seconds / 2

    def leaving_now(self, slot: WorkerSlot, now: float) -> bool:
        """Whether `slot`'s node deadline is half a margin away or past (`now`: `time.time()`)."""
        return slot.leaving_at is not None and now >= slot.leaving_at - self.policy.margin_seconds / 2

    def _finish_or_give_back(self, name: str, slot: WorkerSlot, notice: Notice, left: float) -> None:
        task = slot.task
        if task is None:
            return
        flight = InFlight(task.kind, slot.frames, self._reads.task_frames(task), time.time() - slot.started)
        needed = None if notice.immediate else seconds_needed(flight, self.policy, self._reads.segment_fps())
        if needed is not None and needed <= left:
            log.warning("preemption notice: %s %s %d finishes (needs about %.1f s of %.1f s left)",
                        task.uri, task.kind, task.seq, needed, left)
            return
        if not notice.immediate and self._cut_short(name, task, flight, left):
            return
        why = ("no time left" if notice.immediate else "its speed or frame count unknown" if needed is None
               else f"needs about {needed:.1f} s")
        self._give_back(name, task, f"given back on a {notice.cloud} {notice.kind} notice "
                        f"({left:.1f} s left, {why})")

    def _cut_short(self, name: str, task: Task, flight: InFlight, left: float) -> bool:
        """Ask the worker to cut a segment of a split video (a whole video writes its output, not a part) that
        does not fit whole, when the cut fits; False when it was not asked."""
        needed = seconds_to_cut(flight, self.policy)
        whole = task.start_pts is None and task.end_pts is None
        if needed is None or needed > left or whole or not self._cut(name):
            return False
        log.warning("preemption notice: %s segment %d is cut short after %d frames (a cut needs about %.1f s of "
                    "%.1f s left)", task.uri, task.seq, flight.frames_done, needed, left)
        self.cut += 1
        return True


class Preemptible(Protocol):
    def preempt(self, notice: Notice) -> None:
        """Take a notice (from the watcher's thread)."""

    @property
    def notice(self) -> Notice | None:
        """The notice acted on, once the scheduler has acted on it."""


@contextmanager
def watch_notices(scheduler: Preemptible, *, enabled: bool = True,
                  settings: WatchSettings | None = None) -> Iterator[NoticeWatcher | None]:
    """Watch this node's preemption notices while the block runs and hand them to `scheduler`; on a clean
    exit after a notice, acknowledge it (Azure: the VM may go now). SIGTERM is a notice only where
    FRAMEFLEET_SPOT_SOURCES names it and this is the main thread."""
    if not enabled:
        yield None
        return
    settings = settings or WatchSettings.from_env()
    if settings.sigterm and threading.current_thread() is not threading.main_thread():
        settings = replace(settings, sigterm=False)

    def on_notice(notice: Notice) -> None:
        if notice.deadline_monotonic is None:
            log.warning("%s %s notice without a deadline: working on", notice.cloud, notice.kind)
            return
        scheduler.preempt(notice)

    watcher = NoticeWatcher(on_notice, settings)
    if not watcher.sources:
        yield None
        return
    watcher.start()
    try:
        yield watcher
        if scheduler.notice is not None:
            watcher.acknowledge(scheduler.notice)
    finally:
        watcher.stop(timeout=0.0)  # daemon threads; one inside a request ends when it returns
