"""The local engine: worker processes on this machine, each talking to the scheduler over its own pipe.

The scheduler process never decodes: workers probe, decode, run the ops and encode, so a file that
crashes FFmpeg takes down one worker, not the job. Each worker sets its ops up once and runs tasks one at
a time, reporting progress (frames) as it goes (`local_worker`, in processes `local_processes` starts). A
worker killed with SIGKILL (out of memory, an operator, a preemption) is an infrastructure loss; any other
death is a crash.
"""

from __future__ import annotations

import logging
import multiprocessing.connection
import signal

from framefleet.engines import local_processes
from framefleet.engines.events import Died, EngineProgress, Event, Finished, Progressed, Ready
from framefleet.engines.local_processes import WorkerProcess
from framefleet.engines.local_worker import WorkerSetup
from framefleet.errors import FramefleetError
from framefleet.files.remote_inputs import WorkerStorage
from framefleet.jobs.task import TaskRequest
from framefleet.pipeline import Pipeline
from framefleet.processing.streaming import available_cores, gpu_names
from framefleet.settings import EngineOptions
from framefleet.util.processes import refers_to_main

__all__ = ["EngineOptions", "EngineProgress", "LocalPool", "local_worker_count", "start_workers_early"]

log = logging.getLogger(__name__)


def local_worker_count(options: EngineOptions, pipeline: Pipeline | None = None) -> tuple[int, int]:
    """(workers, threads per worker): one single-threaded worker per core unless the options say otherwise;
    a pipeline on CUDA gets one worker per GPU (each with the cores' share for decoding and encoding)."""
    on_gpu = pipeline is not None and any(op.resources.gpus for op in pipeline.ops)
    workers = max(1, options.workers or (len(gpu_names()) if on_gpu else 0) or available_cores())
    threads = options.threads_per_worker or max(1, available_cores() // workers)
    return workers, threads


def start_workers_early(options: EngineOptions, pipeline: Pipeline, worker_storage: WorkerStorage) -> None:
    """Start the processes of a local pool for `pipeline` now, so that their imports overlap the job's set-up
    (`local_processes`); not where they must run the main script first (an op defined there)."""
    if not refers_to_main(pipeline, worker_storage):
        local_processes.start_early(local_worker_count(options, pipeline)[0])


class LocalPool:
    """Worker processes started with the spawn method (a fresh interpreter: no inherited state), without
    the parent's main script unless the pipeline needs it (`util.processes`); processes started early
    (`local_processes.start_early`) are taken first."""

    one_machine = True

    def __init__(self, pipeline: Pipeline, threads: int, worker_storage: WorkerStorage = WorkerStorage(), *,
                 offline: bool = False, insist: bool = False) -> None:
        self._pipeline = pipeline
        self._threads = threads
        self._storage = worker_storage
        self._offline = offline
        self._insist = insist
        """`offline` was asked for (`--worker-network off`): say so loudly when the platform refuses it."""
        self._network_refusal_told = False
        self._needs_main = refers_to_main(pipeline, worker_storage)
        self._workers: dict[str, WorkerProcess] = {}

    def spawn(self) -> str:
        worker = None if self._needs_main else local_processes.take_early()
        worker = worker or local_processes.start(self._pipeline, self._storage)
        setup = WorkerSetup(self._pipeline, self._threads, self._storage, self._offline,
                            logging.getLogger().getEffectiveLevel())
        try:
            worker.conn.send(setup)
        except (BrokenPipeError, OSError):
            pass  # it died meanwhile: `events` reports it
        self._workers[worker.name] = worker
        return worker.name

    def submit(self, worker: str, request: TaskRequest) -> bool:
        handle = self._workers.get(worker)
        if handle is None:
            return False
        try:
            handle.conn.send(request)
        except (BrokenPipeError, OSError):
            return False
        return True

    def cut(self, worker: str) -> bool:
        handle = self._workers.get(worker)
        if handle is None:
            return False
        handle.cut.set()
        return True

    def events(self, timeout: float) -> list[Event]:
        waitables = {}
        for name, handle in self._workers.items():
            waitables[handle.conn] = name
            waitables[handle.process.sentinel] = name
        events: list[Event] = []
        for ready in multiprocessing.connection.wait(list(waitables), timeout):
            name = waitables[ready]
            handle = self._workers.get(name)
            if handle is None:
                continue
            if ready is handle.conn:
                events.extend(self._receive(name, handle))
            elif not handle.process.is_alive():
                events.append(self._death(name, handle))
        return events

    def kill(self, worker: str) -> None:
        handle = self._workers.pop(worker, None)
        if handle is not None:
            if handle.process.is_alive():
                handle.process.kill()
            handle.process.join(timeout=10)
            handle.conn.close()

    def close(self) -> None:
        for handle in self._workers.values():
            try:
                handle.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for handle in self._workers.values():
            handle.process.join(timeout=10)
            if handle.process.is_alive():
                handle.process.kill()
                handle.process.join()
            handle.conn.close()
        self._workers.clear()

    def _receive(self, name: str, handle: WorkerProcess) -> list[Event]:
        events: list[Event] = []
        while name in self._workers and handle.conn.poll():
            try:
                message = handle.conn.recv()
            except (EOFError, OSError):
                handle.process.join(timeout=5)
                events.append(self._death(name, handle))
                break
            kind = message[0]
            if kind == "ready":
                self._tell_network_refusal(message[2])
                events.append(Ready(name))
            elif kind == "beat":
                events.append(Progressed(name, message[1]))
            elif kind == "done":
                events.append(Finished(name, message[1]))
            elif kind == "error":
                events.append(message[1])
            elif kind == "log":
                _relay(message[1])
            elif kind == "fatal":
                raise FramefleetError(f"a worker could not start: {message[1]}")
        return events

    def _tell_network_refusal(self, refusal: str | None) -> None:
        if refusal is None or self._network_refusal_told:
            return
        self._network_refusal_told = True
        log.log(logging.WARNING if self._insist else logging.INFO,
                "workers keep their network access: this platform lets them make no network namespace (%s)", refusal)

    def _death(self, name: str, handle: WorkerProcess) -> Died:
        self._workers.pop(name, None)
        handle.process.join(timeout=10)
        handle.conn.close()
        code = handle.process.exitcode
        if code == -signal.SIGKILL:
            return Died(name, "lost", "WorkerKilled", "the worker was killed (SIGKILL)")
        cause = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        return Died(name, "crashed", "WorkerCrashed", f"the worker died ({cause}) while running this task")


def _relay(record: logging.LogRecord) -> None:
    """Handle a worker's log record as this process's own: printed above a live progress line and redacted
    like every other line (a worker writing to the shared terminal itself would garble that line)."""
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)
