"""The local engine: N worker processes on this machine, scheduled from the ledger.

The scheduler (this process) never decodes: workers probe, decode, run the ops and encode, so a file
that crashes FFmpeg takes down one worker, not the job. Each worker sets its ops up once and runs tasks
one at a time, reporting progress (frames) as heartbeats over its own pipe. The scheduler:

- claims a task from the ledger for every idle worker and sends it;
- records each result (`complete`) or error (`fail`, an input failure) under the task's lease;
- replaces a worker that died: SIGKILL counts as an infrastructure loss (out of memory, an operator,
  a preemption), any other death as a crash (capped per task, so a poison input ends failed);
- kills and replaces a worker that shows no progress for `hang_timeout` seconds, or whose task runs past
  `task_timeout` (a hang, capped like a crash);
- on Ctrl-C or SIGTERM claims nothing more, lets running tasks finish for `grace_seconds`, then
  releases what is left (infrastructure losses) and returns.
"""

from __future__ import annotations

import glob
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from framefleet.errors import FramefleetError
from framefleet.ledger import Ledger, Task
from framefleet.pipeline import Pipeline
from framefleet.storage import local_path
from framefleet.streaming import available_cores
from framefleet.task import TaskRequest, TaskResult, part_path, run_task

log = logging.getLogger(__name__)

_LOG_TAIL_LINES = 20


@dataclass(frozen=True)
class EngineOptions:
    """How the local engine runs."""

    workers: int | None = None
    """Worker processes; default: one per core (each with a single-threaded op)."""
    threads_per_worker: int | None = None
    """Op threads in each worker; default: the cores divided among the workers."""
    hang_timeout: float = 300.0
    """Seconds without progress before a worker is declared hung."""
    task_timeout: float | None = None
    """Seconds a task may run in all (None: no limit)."""
    grace_seconds: float = 30.0
    """After a stop request, how long running tasks may take to finish."""
    poll_seconds: float = 0.5


@dataclass
class EngineProgress:
    """What the engine reports while it runs."""

    frames: int = 0
    """Frames processed in this run so far (live, from the workers' heartbeats)."""
    frames_expected: int = 0
    """Frames the job's items hold, as far as their probes have told."""
    counts: dict[str, int] = field(default_factory=dict)
    """Items per state."""
    workers: int = 0
    busy: int = 0
    stopping: bool = False


@dataclass
class _Worker:
    name: str
    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    ready: bool = False
    task: Task | None = None
    started: float = 0.0
    last_activity: float = 0.0
    last_renewal: float = 0.0
    frames: int = 0


@dataclass
class LocalEngine:
    """Runs a job's pending tasks to completion (or until stopped) with worker processes."""

    ledger: Ledger
    pipeline: Pipeline
    job_dir: Path
    options: EngineOptions = field(default_factory=EngineOptions)
    on_progress: Callable[[EngineProgress], None] | None = None

    def __post_init__(self) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._workers: dict[str, _Worker] = {}
        self._serial = 0
        self._stop_requested_at: float | None = None
        self._progress = EngineProgress()
        self._early_deaths = 0
        self._last_report = 0.0
        count = self.options.workers or available_cores()
        self._count = max(1, count)
        self._threads = self.options.threads_per_worker or max(1, available_cores() // self._count)
        self._lease_seconds = max(60.0, 2 * self.options.hang_timeout)

    def request_stop(self) -> None:
        """Stop claiming work; running tasks get `grace_seconds` to finish."""
        if self._stop_requested_at is None:
            self._stop_requested_at = time.monotonic()
            self._progress.stopping = True
            log.warning("stopping: no new tasks; waiting up to %.0f s for running ones", self.options.grace_seconds)

    def run(self) -> bool:
        """Run until no work is left (True) or a stop was requested (False)."""
        try:
            for _ in range(self._count):
                self._spawn()
            while True:
                now = time.time()
                if self._stop_requested_at is None:
                    self._dispatch(now)
                busy = [w for w in self._workers.values() if w.task is not None]
                if not busy and (self._stop_requested_at is not None or self.ledger.unfinished() == 0):
                    break
                if self._stop_requested_at is not None and time.monotonic() - self._stop_requested_at > self.options.grace_seconds:
                    self._abandon_running("interrupted", "the job was stopped before this task finished")
                    break
                self._wait(self._timeout(busy))
                self._check_hangs()
                self._renew_leases()
                self._report()
        finally:
            self._shut_down()
        return self._stop_requested_at is None

    # -- workers ---------------------------------------------------------------------------------

    def _spawn(self) -> None:
        self._serial += 1
        name = f"local-{os.getpid()}-{self._serial}"
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=worker_main, args=(child, self.pipeline, self._threads), name=name, daemon=True
        )
        process.start()
        child.close()
        self._workers[name] = _Worker(name=name, process=process, conn=parent)
        self._progress.workers = len(self._workers)

    def _dispatch(self, now: float) -> None:
        for worker in self._workers.values():
            if not worker.ready or worker.task is not None:
                continue
            task = self.ledger.claim(worker.name, self._lease_seconds, now)
            if task is None:
                return
            request = TaskRequest(
                task_id=task.id, lease_id=task.lease_id, kind=task.kind, item_id=task.item_id, seq=task.seq,
                uri=task.uri, output_uri=task.output_uri, start_pts=task.start_pts, end_pts=task.end_pts,
                parts_dir=str(self.job_dir / "parts"),
                segments=self.ledger.segment_count(task.item_id) if task.kind == "join" else 0,
            )
            try:
                worker.conn.send(request)
            except (BrokenPipeError, OSError):
                self.ledger.fail(task, "lost", error_type="WorkerLost", message="the worker went away before the task")
                continue
            worker.task, worker.started, worker.last_activity, worker.last_renewal = task, now, now, now
            worker.frames = 0

    def _wait(self, timeout: float) -> None:
        waitables = {}
        for worker in self._workers.values():
            waitables[worker.conn] = worker
            waitables[worker.process.sentinel] = worker
        for ready in multiprocessing.connection.wait(list(waitables), timeout):
            worker = waitables[ready]
            if worker.name not in self._workers:
                continue
            if ready is worker.conn:
                self._receive(worker)
            elif not worker.process.is_alive():
                self._on_death(worker)

    def _receive(self, worker: _Worker) -> None:
        while worker.name in self._workers and worker.conn.poll():
            try:
                message = worker.conn.recv()
            except (EOFError, OSError):
                worker.process.join(timeout=5)
                self._on_death(worker)
                return
            now = time.time()
            kind = message[0]
            if kind == "ready":
                worker.ready = True
                self._early_deaths = 0
            elif kind == "beat":
                worker.last_activity = now
                worker.frames += message[1]
                self._progress.frames += message[1]
            elif kind == "done" and worker.task is not None:
                outcome: TaskResult = message[1]
                self.ledger.complete(worker.task, result=outcome.result, metrics=outcome.metrics,
                                     segments=outcome.segments, now=now)
                worker.task = None
            elif kind == "error" and worker.task is not None:
                _, error_type, text, tail = message
                state = self.ledger.fail(worker.task, "input_error", error_type=error_type, message=text,
                                         log_tail=tail, now=now)
                log.info("%s failed (%s): %s", worker.task.uri, state, text)
                worker.task = None
            elif kind == "fatal":
                raise FramefleetError(f"a worker could not start: {message[1]}")

    def _on_death(self, worker: _Worker) -> None:
        code = worker.process.exitcode
        self._discard(worker)
        if worker.task is not None:
            self._remove_temporaries(worker.task)
            if code == -signal.SIGKILL:
                self.ledger.fail(worker.task, "lost", error_type="WorkerKilled",
                                 message="the worker was killed (SIGKILL)")
            else:
                cause = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
                self.ledger.fail(worker.task, "crashed", error_type="WorkerCrashed",
                                 message=f"the worker died ({cause}) while running this task")
        elif not worker.ready:
            self._early_deaths += 1
            if self._early_deaths >= 3:
                raise FramefleetError("workers keep dying while starting; rerun with --debug and --workers 1")
        if self._stop_requested_at is None:
            self._spawn()

    def _check_hangs(self) -> None:
        now = time.time()
        for worker in list(self._workers.values()):
            if worker.task is None:
                continue
            silent = now - worker.last_activity
            running = now - worker.started
            if silent > self.options.hang_timeout:
                reason = f"no progress for {silent:.0f} s"
            elif self.options.task_timeout is not None and running > self.options.task_timeout:
                reason = f"still running after the task timeout of {self.options.task_timeout:.0f} s"
            else:
                continue
            task = worker.task
            worker.task = None
            self._discard(worker, kill=True)
            self._remove_temporaries(task)
            self.ledger.fail(task, "hung", error_type="WorkerHung", message=f"the worker hung ({reason})", now=now)
            if self._stop_requested_at is None:
                self._spawn()

    def _renew_leases(self) -> None:
        now = time.time()
        for worker in self._workers.values():
            if worker.task is not None and now - worker.last_renewal > self._lease_seconds / 3:
                if not self.ledger.heartbeat(worker.task, self._lease_seconds, now):
                    log.warning("lost the lease on task %d; abandoning it", worker.task.id)
                    self._discard(worker, kill=True)
                    if self._stop_requested_at is None:
                        self._spawn()
                    continue
                worker.last_renewal = now

    def _abandon_running(self, outcome: str, message: str) -> None:
        for worker in list(self._workers.values()):
            if worker.task is not None:
                task = worker.task
                worker.task = None
                self._discard(worker, kill=True)
                self._remove_temporaries(task)
                self.ledger.fail(task, outcome, error_type="Interrupted", message=message)

    def _remove_temporaries(self, task: Task) -> None:
        """Delete the temporary file that a worker which died or was killed in `task` left beside its target.

        A retry would delete it too, but an item that ends failed (crashes or hangs on every attempt) gets
        none. Only for a dead worker's task: while the task's lease is held, nobody else writes that target.
        """
        if task.kind == "probe":
            return
        whole = task.kind == "join" or (task.start_pts is None and task.end_pts is None)
        parts = self.job_dir / "parts"
        target = local_path(task.output_uri) if whole else part_path(parts, task.item_id, task.seq)
        for stale in target.parent.glob(f".{glob.escape(target.stem)}.part-*{glob.escape(target.suffix)}"):
            stale.unlink(missing_ok=True)

    def _discard(self, worker: _Worker, kill: bool = False) -> None:
        self._workers.pop(worker.name, None)
        if kill and worker.process.is_alive():
            worker.process.kill()
        worker.process.join(timeout=10)
        worker.conn.close()
        self._progress.workers = len(self._workers)

    def _shut_down(self) -> None:
        for worker in self._workers.values():
            try:
                worker.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        deadline = time.monotonic() + 10
        for worker in list(self._workers.values()):
            worker.process.join(timeout=max(0.1, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self._workers.clear()

    def _timeout(self, busy: list[_Worker]) -> float:
        timeout = self.options.poll_seconds
        if not busy:
            ready_at = self.ledger.next_ready_time()
            if ready_at is not None:
                timeout = min(max(0.05, ready_at - time.time()), 5.0)
        return timeout

    def _report(self) -> None:
        if self.on_progress is None or time.monotonic() - self._last_report < 0.25:
            return
        self._last_report = time.monotonic()
        self._progress.busy = sum(1 for w in self._workers.values() if w.task is not None)
        self._progress.counts = self.ledger.counts()
        self._progress.frames_expected = self.ledger.frame_totals()[1]
        self.on_progress(self._progress)


def worker_main(conn: multiprocessing.connection.Connection, pipeline: Pipeline, threads: int) -> None:
    """A worker process: set the ops up once, then run tasks until told to stop or the scheduler is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the scheduler decides
    from framefleet.streaming import FrameProcessor

    try:
        processor = FrameProcessor(pipeline.ops, sessions=1, threads=threads)
    except Exception as exc:  # noqa: BLE001 - reported to the scheduler, which stops the job
        conn.send(("fatal", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    try:
        while True:
            try:
                request = conn.recv()
            except (EOFError, OSError):
                return
            if request is None:
                return
            try:
                outcome = run_task(request, pipeline, processor, progress=lambda n: conn.send(("beat", n)))
            except (BrokenPipeError, EOFError):
                return  # the scheduler is gone: stop quietly
            except FramefleetError as exc:
                conn.send(("error", type(exc).__name__, str(exc), None))
            except Exception as exc:  # noqa: BLE001 - a bug or an unexpected library error: report it
                tail = "".join(traceback.format_exc().splitlines(keepends=True)[-_LOG_TAIL_LINES:])
                conn.send(("error", type(exc).__name__, f"{type(exc).__name__}: {exc}", tail))
            else:
                conn.send(("done", outcome))
    finally:
        processor.close()
