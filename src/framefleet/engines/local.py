"""The local engine: worker processes on this machine, each talking to the scheduler over its own pipe.

The scheduler process never decodes: workers probe, decode, run the ops and encode, so a file that
crashes FFmpeg takes down one worker, not the job. Each worker sets its ops up once and runs tasks one at
a time, reporting progress (frames) as it goes. A worker killed with SIGKILL (out of memory, an
operator, a preemption) is an infrastructure loss; any other death is a crash.
"""

from __future__ import annotations

import copy
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.synchronize
import os
import signal
import sys
import threading
from dataclasses import dataclass

from framefleet.engines.events import Died, EngineProgress, Errored, Event, Finished, Progressed, Ready
from framefleet.errors import FramefleetError
from framefleet.files.remote_inputs import WorkerStorage
from framefleet.jobs.task import TaskRequest
from framefleet.jobs.worker import Worker, traceback_tail
from framefleet.pipeline import Pipeline
from framefleet.processing.limits import cut_network
from framefleet.processing.streaming import available_cores, gpu_names
from framefleet.settings import EngineOptions
from framefleet.util.processes import start_worker_process

__all__ = ["EngineOptions", "EngineProgress", "LocalPool", "local_worker_count"]

log = logging.getLogger(__name__)


def local_worker_count(options: EngineOptions, pipeline: Pipeline | None = None) -> tuple[int, int]:
    """(workers, threads per worker): one single-threaded worker per core unless the options say otherwise;
    a pipeline on CUDA gets one worker per GPU (each with the cores' share for decoding and encoding)."""
    on_gpu = pipeline is not None and any(op.resources.gpus for op in pipeline.ops)
    workers = max(1, options.workers or (len(gpu_names()) if on_gpu else 0) or available_cores())
    threads = options.threads_per_worker or max(1, available_cores() // workers)
    return workers, threads


@dataclass
class _Process:
    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    cut: multiprocessing.synchronize.Event
    """Set to cut its segment short (it reads its pipe only between tasks)."""


class LocalPool:
    """Worker processes started with the spawn method (a fresh interpreter: no inherited state), without
    the parent's main script (`util.processes`)."""

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
        self._context = multiprocessing.get_context("spawn")
        self._workers: dict[str, _Process] = {}
        self._serial = 0

    def spawn(self) -> str:
        self._serial += 1
        name = f"local-{os.getpid()}-{self._serial}"
        parent, child = self._context.Pipe()
        cut = self._context.Event()
        process = self._context.Process(
            target=worker_main, args=(child, self._pipeline, self._threads, self._storage, self._offline,
                                      logging.getLogger().getEffectiveLevel(), cut),
            name=name, daemon=True,
        )
        start_worker_process(process, worker_main, self._pipeline, self._storage)
        child.close()
        self._workers[name] = _Process(process, parent, cut)
        return name

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

    def _receive(self, name: str, handle: _Process) -> list[Event]:
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

    def _death(self, name: str, handle: _Process) -> Died:
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


class _Sender:
    """A worker's end of its pipe, shared by its threads (a log record may come from any of them)."""

    def __init__(self, conn: multiprocessing.connection.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def __call__(self, message: object) -> None:
        with self._lock:
            self._conn.send(message)


class _LogToScheduler(logging.Handler):
    """Sends a worker's log records to the scheduler's process (`_relay`), formatted and picklable."""

    def __init__(self, send: _Sender) -> None:
        super().__init__()
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record = copy.copy(record)
            record.msg, record.args = record.getMessage(), None
            if record.exc_info:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            self._send(("log", record))
        except Exception:  # noqa: BLE001 - logging never breaks the worker (a closed pipe: the scheduler is gone)
            self.handleError(record)


def worker_main(
    conn: multiprocessing.connection.Connection, pipeline: Pipeline, threads: int, worker_storage: WorkerStorage,
    offline: bool = False, log_level: int = logging.WARNING, cut: multiprocessing.synchronize.Event | None = None,
) -> None:
    """A worker process: cut its network if `offline`, set the ops up once, then run tasks until told to stop
    or the scheduler is gone, each cut short when `cut` is set. What it logs (at `log_level` and above) the
    scheduler's process prints; what it prints goes to stderr."""
    os.dup2(2, 1)  # what an op or a library prints goes to stderr: stdout is the command's (--json's result)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the scheduler decides
    send = _Sender(conn)
    logging.raiseExceptions = False
    logging.basicConfig(level=log_level, handlers=[_LogToScheduler(send)], force=True)
    logging.captureWarnings(True)  # warnings.warn too: to the scheduler, not onto the terminal
    refusal = cut_network() if offline else None
    try:
        worker = Worker(pipeline, threads, worker_storage)
    except Exception as exc:  # noqa: BLE001 - reported to the scheduler, which stops the job
        send(("fatal", f"{type(exc).__name__}: {exc}"))
        return
    send(("ready", os.getpid(), refusal))
    try:
        _serve(conn, worker, send, cut)
    finally:
        worker.close()
    # Every result is committed and reported: exit without the interpreter's teardown, which the job waits
    # for (unloading onnxruntime, OpenVINO and FFmpeg took 0.5-1.5 s per worker on 2 busy cores).
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)


def _serve(conn: multiprocessing.connection.Connection, worker: Worker, send: _Sender,
           cut: multiprocessing.synchronize.Event | None) -> None:
    """Run the tasks the scheduler sends, one at a time, until it sends None or is gone."""
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        if cut is not None:
            cut.clear()  # set for the task before, after it ended
        try:
            outcome = worker.run(request, progress=lambda n: send(("beat", n)), cut=cut)
        except (BrokenPipeError, EOFError):
            return  # the scheduler is gone: stop quietly
        except Exception as exc:  # noqa: BLE001 - the input's fault, or a bug: reported either way
            send(("error", Errored.of(multiprocessing.current_process().name, exc, traceback_tail())))
        else:
            send(("done", outcome))
