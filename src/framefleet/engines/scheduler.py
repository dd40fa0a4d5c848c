"""The scheduler every engine shares: it moves tasks from the ledger to a pool of workers and back.

A pool (local processes, Ray actors) only starts workers, hands them tasks and reports what happened
as events. The scheduler owns the policy:

- it claims a task from the ledger for every ready, idle worker; a probe claimed while fewer tasks wait
  than there are workers (one short video, the job's tail) asks for its video to be cut into one segment
  per worker left without work, where keyframes allow (`TaskRequest.spread`, `jobs.task.plan_segments`);
  a segment that cannot be cut finer, claimed while workers of this machine idle, gets their shares of the
  cores for its encoder (`TaskRequest.share`, `slots.DispatchRound`);
- it records each result (`complete`) or error (`fail`, an input failure) under the task's lease;
- a worker that died is replaced; the pool says whether the death was the input's fault (a crash,
  capped per task so a poison input ends failed) or not (SIGKILL, a lost node: an infrastructure loss);
- a worker that shows no progress for `hang_timeout` seconds, or whose task runs past `task_timeout`,
  is killed and replaced (a hang, capped like a crash);
- when nothing at all happens for `stall_timeout` seconds while work is pending (no worker can start,
  say), the job stops with an error that says so, instead of waiting silently;
- on a stop request (`request_stop`, or the `stop` event set) it claims nothing more, lets running tasks
  finish for `grace_seconds`, then releases what is left (infrastructure losses) and returns;
- on a preemption notice (`notices.preempt`) it claims nothing more, lets the running tasks that fit before the
  deadline finish, cuts segments short where that fits (`WorkerPool.cut`) and gives the others back at once
  as `preempted` (`framefleet.engines.preemption`).

Workers are started only while the ledger holds unfinished work. A batch run returns when no work is
left; a standing run (`standing=True`, a long-running service) keeps polling the ledger for tasks that
another connection adds, and stops its workers once it has been idle for `idle_seconds`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from framefleet.engines.events import (
    Died,
    EngineProgress,
    Errored,
    Event,
    Finished,
    Noticed,
    Progressed,
    Ready,
)
from framefleet.engines.preemption import NoticeResponse, PreemptionPolicy
from framefleet.engines.slots import DispatchRound, WorkerSlot
from framefleet.errors import INFRASTRUCTURE_ERRORS, FramefleetError
from framefleet.jobs.reads import LedgerReads
from framefleet.jobs.store import Ledger
from framefleet.jobs.task import TaskRequest, remove_task_temporaries
from framefleet.jobs.transitions import Task
from framefleet.settings import EngineOptions
from framefleet.spot.notices import Notice

log = logging.getLogger(__name__)


class JobStalledError(FramefleetError):
    """Work is pending but nothing has happened for too long."""


class WorkerPool(Protocol):
    """Starts workers, hands them tasks, and reports events. Knows nothing of the ledger."""

    def spawn(self) -> str:
        """Start a worker; it reports `Ready` when it can take tasks. Returns its name."""

    def submit(self, worker: str, request: TaskRequest) -> bool:
        """Hand a task to a ready, idle worker; False when the worker is already gone."""

    def events(self, timeout: float) -> list[Event]:
        """What happened since the last call, waiting up to `timeout` seconds for something."""

    one_machine: bool
    """Whether the workers share this machine's cores: a lone task may then use idle workers' shares."""

    def cut(self, worker: str) -> bool:
        """Ask a busy worker to cut its segment short at the next frame it can stop at: it commits the part and
        reports `Finished` with the result's `cut_at` (or finishes whole). False when the worker is gone."""

    def kill(self, worker: str) -> None:
        """Stop a worker now and forget it (no `Died` event follows)."""

    def close(self) -> None:
        """Stop every worker."""


@dataclass
class Scheduler:
    """Runs a job's unfinished tasks on `pool` until none is left (unless `standing`) or a stop comes."""

    ledger: Ledger
    pool: WorkerPool
    parts_dir: str
    """Where segment files wait for their join (see `TaskRequest.parts_dir`)."""
    workers: int
    options: EngineOptions = field(default_factory=EngineOptions)
    on_progress: Callable[[EngineProgress], None] | None = None
    standing: bool = False
    """Keep running when no work is left, for tasks added to the ledger meanwhile, until a stop."""
    stop: threading.Event | None = None
    """Set from any thread: a stop request, as `request_stop`."""
    preemption: PreemptionPolicy = field(default_factory=PreemptionPolicy)

    def __post_init__(self) -> None:
        self.reads = LedgerReads(self.ledger)
        self._slots: dict[str, WorkerSlot] = {}
        self._stop_requested_at: float | None = None
        self._stop_now = False
        self._idle_since: float | None = None
        self._progress = EngineProgress(frames_before=self.reads.frames()[0])
        self._early_deaths = 0
        self._last_report = 0.0
        self._last_event = time.monotonic()
        self._lease_seconds = max(60.0, 2 * self.options.hang_timeout)
        job = self.ledger.job()
        self._fingerprint = job.fingerprint if job is not None else None
        self.notices = NoticeResponse(self.preemption, self.reads, self._give_back, self.pool.cut)
        """This node's preemption notices (`notices.preempt`, from any thread) and what became of them."""

    def request_stop(self, *, now: bool = False) -> None:
        """Stop claiming work; running tasks get `grace_seconds` to finish, or none when `now` (a second Ctrl-C)."""
        if now:
            if self._stop_now:
                return
            self._stop_now = True
            log.warning("stopping now: giving up the running tasks (they run again when the job resumes)")
        if self._stop_requested_at is None:
            self._stop_requested_at = time.monotonic()
            self._progress.stopping = True
            if not now:
                log.warning("stopping: no new tasks; waiting up to %.0f s for running ones (Ctrl-C again to stop "
                            "now)", self.options.grace_seconds)

    def run(self) -> bool:
        """Run until no work is left (True; never in a standing run) or a stop was requested (False)."""
        try:
            while True:
                if self.stop is not None and self.stop.is_set():
                    self.request_stop()
                notice = self.notices.due()
                if notice is not None:
                    self._act_on_notice(notice)
                unfinished = self.ledger.has_unfinished()
                if self._stop_requested_at is None:
                    self._spawn_wanted(unfinished)
                    with self.ledger.batch():  # one commit for the round's claims
                        self._dispatch(time.time())
                busy = any(slot.task is not None for slot in self._slots.values())
                done = not unfinished and not self.standing
                if not busy and (self._stop_requested_at is not None or done):
                    break
                if self._stopping_too_long():
                    if self.notices.notice is not None:
                        self._abandon_running("preempted", "the node's preemption deadline came before this task "
                                              "finished")
                    else:
                        self._abandon_running("interrupted", "the job was stopped before this task finished")
                    break
                self._release_idle(busy, unfinished)
                events = self.pool.events(self._timeout(busy))
                with self.ledger.batch():  # one commit for the results the pool reported together
                    for event in events:
                        self._last_event = time.monotonic()
                        self._handle(event)
                self._check_hangs()
                self._check_stall()
                self._renew_leases()
                self._report()
        finally:
            self.pool.close()
        return self._stop_requested_at is None

    # -- workers, dispatching and events ---------------------------------------------------------

    def _spawn_wanted(self, unfinished: bool) -> None:
        """Start workers up to `workers` (new ones, or replacements of lost ones) while there is work."""
        if unfinished:
            while len(self._slots) < self.workers:
                self._slots[self.pool.spawn()] = WorkerSlot()

    def _release_idle(self, busy: bool, unfinished: bool) -> None:
        """In a standing run, stop every worker once there has been no work for `idle_seconds`."""
        if not self.standing or busy or unfinished:
            self._idle_since = None
            return
        now = time.monotonic()
        if self._idle_since is None:
            self._idle_since = now
        elif self._slots and now - self._idle_since >= self.options.idle_seconds:
            log.info("no work for %.0f s: stopping %d idle workers", now - self._idle_since, len(self._slots))
            for name in list(self._slots):
                self._drop(name)

    def _dispatch(self, now: float) -> None:
        claims = DispatchRound(self.workers, lambda: (self.reads.pending_tasks(self.workers), self._without_work()),
                               one_machine=self.pool.one_machine)
        for name, slot in self._idle():
            task = self.ledger.claim(name, self._lease_seconds, now)
            if task is None:
                return
            parts = self.reads.join_parts(task.item_id) if task.kind == "join" else ()
            spread, share = claims.sizes(task.kind)
            request = TaskRequest.of(task, self.parts_dir, parts=parts, job_fingerprint=self._fingerprint,
                                     spread=spread, share=share)
            if not self.pool.submit(name, request):
                self.ledger.fail(task, "lost", error_type="WorkerLost", message="the worker went away before the task")
                continue
            slot.task, slot.started, slot.last_activity, slot.last_renewal = task, now, now, now
            slot.frames = 0

    def _idle(self) -> list[tuple[str, WorkerSlot]]:
        """Workers ready for a task that hold none and are not leaving."""
        return [(name, slot) for name, slot in self._slots.items()
                if slot.ready and slot.task is None and slot.leaving_at is None]

    def _without_work(self) -> int:
        """Workers that hold no task and are not leaving, those still starting included (they will idle)."""
        return self.workers - sum(1 for slot in self._slots.values() if slot.task is not None or slot.leaving_at is not None)

    def _handle(self, event: Event) -> None:
        slot = self._slots.get(event.worker)
        if slot is None:
            return
        now = time.time()
        if isinstance(event, Ready):
            slot.ready = True
            self._early_deaths = 0
        elif isinstance(event, Progressed):
            slot.last_activity = now
            slot.frames += event.frames
            self._progress.frames += event.frames
        elif isinstance(event, Finished) and slot.task is not None:
            outcome = event.result
            self.ledger.complete(slot.task, result=outcome.result, metrics=outcome.metrics,
                                 segments=outcome.segments, now=now)
            slot.task = None
            if slot.leaving_at is not None:
                self._drop(event.worker)  # its node goes: a replacement starts elsewhere
        elif isinstance(event, Noticed):
            self.notices.act_for_worker(event.worker, slot, event.notice, self._drop)
        elif isinstance(event, Errored) and slot.task is not None and event.error_type == "Preempted":
            self._abandon(event.worker, slot.task, "preempted", event.message)  # it refused the task
        elif isinstance(event, Errored) and slot.task is not None:
            outcome = "lost" if event.error_type in INFRASTRUCTURE_ERRORS else "input_error"
            state = self.ledger.fail(slot.task, outcome, error_type=event.error_type, message=event.message,
                                     log_tail=event.log_tail, now=now, final=not event.retryable)
            log.info("%s failed (%s): %s", slot.task.uri, state, event.message)
            slot.task = None
        elif isinstance(event, Died):
            del self._slots[event.worker]
            if slot.task is not None:
                remove_task_temporaries(slot.task, self.parts_dir)
                self.ledger.fail(slot.task, event.outcome, error_type=event.error_type, message=event.message,
                                 now=now)
            elif not slot.ready:
                self._early_deaths += 1
                if self._early_deaths >= 3:
                    raise FramefleetError(f"workers keep dying while starting ({event.message}); "
                                          "rerun with --debug and --workers 1")

    # -- watching for trouble --------------------------------------------------------------------

    def _check_hangs(self) -> None:
        now = time.time()
        for name, slot in list(self._slots.items()):
            if slot.task is None:
                continue
            if self.notices.leaving_now(slot, now):
                self._give_back(name, slot.task, "its node's preemption deadline came before it finished")
                continue
            silent = now - slot.last_activity
            if silent > self.options.hang_timeout:
                reason = f"no progress for {silent:.0f} s"
            elif self.options.task_timeout is not None and now - slot.started > self.options.task_timeout:
                reason = f"still running after the task timeout of {self.options.task_timeout:.0f} s"
            else:
                continue
            self._drop(name)
            remove_task_temporaries(slot.task, self.parts_dir)
            self.ledger.fail(slot.task, "hung", error_type="limit:time", message=f"the worker hung ({reason})", now=now)

    def _check_stall(self) -> None:
        if not self.ledger.has_unfinished():
            self._last_event = time.monotonic()  # nothing to wait for (an idle standing run): no stall
            return
        silent = time.monotonic() - self._last_event
        if silent <= self.options.stall_timeout:
            return
        ready = sum(1 for slot in self._slots.values() if slot.ready)
        raise JobStalledError(
            f"no progress for {silent:.0f} s with work pending ({ready} of {len(self._slots)} workers ready); "
            "check that the cluster has the resources the workers ask for, then run the command again"
        )

    def _renew_leases(self) -> None:
        now = time.time()
        for name, slot in list(self._slots.items()):
            if slot.task is not None and now - slot.last_renewal > self._lease_seconds / 3:
                if not self.ledger.heartbeat(slot.task, self._lease_seconds, now):
                    log.warning("lost the lease on task %d; abandoning it", slot.task.id)
                    self._drop(name)
                    continue
                slot.last_renewal = now

    def _stopping_too_long(self) -> bool:
        if self.notices.notice is not None:
            return self.notices.deadline_near()
        return self._stop_requested_at is not None and (
            self._stop_now or time.monotonic() - self._stop_requested_at > self.options.grace_seconds)

    def _abandon_running(self, outcome: Literal["interrupted", "preempted"], message: str) -> None:
        for name, slot in list(self._slots.items()):
            if slot.task is not None:
                self._abandon(name, slot.task, outcome, message)

    def _act_on_notice(self, notice: Notice) -> None:
        """This node's notice: claim nothing more; each running task finishes, is cut short or is given back."""
        if self._stop_requested_at is None:
            self._stop_requested_at = time.monotonic()
        self._progress.stopping = True
        self.notices.act(notice, self._slots)

    def _give_back(self, name: str, task: Task, message: str) -> None:
        self._abandon(name, task, "preempted", message)

    def _abandon(self, name: str, task: Task, outcome: Literal["interrupted", "preempted"], message: str) -> None:
        """Kill the worker running `task` and give its lease back with `outcome`."""
        self._drop(name)
        remove_task_temporaries(task, self.parts_dir)
        self.ledger.fail(task, outcome, error_type=outcome.capitalize(), message=message)
        self.notices.given_back += outcome == "preempted"

    def _drop(self, name: str) -> None:
        self.pool.kill(name)
        self._slots.pop(name, None)

    # -- reporting -------------------------------------------------------------------------------

    def _timeout(self, busy: bool) -> float:
        timeout = self.options.poll_seconds
        if not busy:
            ready_at = self.reads.next_ready_time()
            if ready_at is not None:
                timeout = min(max(0.05, ready_at - time.time()), 5.0)
        return min(timeout, 1.0) if self.standing else timeout

    def _report(self) -> None:
        if self.on_progress is None or time.monotonic() - self._last_report < 0.25:
            return
        self._last_report = time.monotonic()
        self._progress.workers = len(self._slots)
        self._progress.busy = sum(1 for slot in self._slots.values() if slot.task is not None)
        self._progress.counts = self.ledger.counts()
        self._progress.frames_expected, self._progress.unprobed = self.reads.frames_estimate()
        self.on_progress(self._progress)
