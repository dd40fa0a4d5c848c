"""A local worker process's side: it waits for its `WorkerSetup`, sets the ops up once, then runs the tasks its
scheduler sends over its pipe (`framefleet.engines.local` is the scheduler's side; `local_processes` starts
the process).
"""

from __future__ import annotations

import copy
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.synchronize
import os
import sys
import threading
from dataclasses import dataclass

from framefleet.engines.events import Errored
from framefleet.files.remote_inputs import WorkerStorage
from framefleet.jobs.worker import Worker, traceback_tail
from framefleet.pipeline import Pipeline
from framefleet.processing.limits import cut_network


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker process is sent first: what to run, and how."""

    pipeline: Pipeline
    threads: int
    storage: WorkerStorage
    offline: bool
    """Cut its network before setting the ops up (`processing.limits.cut_network`)."""
    log_level: int


class _Sender:
    """A worker's end of its pipe, shared by its threads (a log record may come from any of them)."""

    def __init__(self, conn: multiprocessing.connection.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def __call__(self, message: object) -> None:
        with self._lock:
            self._conn.send(message)


class _LogToScheduler(logging.Handler):
    """Sends a worker's log records to the scheduler's process (`engines.local._relay`), formatted and picklable."""

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


def worker_main(conn: multiprocessing.connection.Connection, cut: multiprocessing.synchronize.Event) -> None:
    """A worker process (`local_processes`): wait for its `WorkerSetup`, cut its network if asked, set the ops
    up once, then run tasks until told to stop or the scheduler is gone, each cut short when `cut` is set.
    What it logs (at the setup's level and above) the scheduler's process prints."""
    try:
        setup: WorkerSetup | None = conn.recv()
    except (EOFError, OSError):
        setup = None
    if setup is None:  # never needed (an early process no pool took): nothing to tear down
        os._exit(0)
    send = _Sender(conn)
    logging.raiseExceptions = False
    logging.basicConfig(level=setup.log_level, handlers=[_LogToScheduler(send)], force=True)
    logging.captureWarnings(True)  # warnings.warn too: to the scheduler, not onto the terminal
    refusal = cut_network() if setup.offline else None
    try:
        worker = Worker(setup.pipeline, setup.threads, setup.storage)
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
           cut: multiprocessing.synchronize.Event) -> None:
    """Run the tasks the scheduler sends, one at a time, until it sends None or is gone."""
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        cut.clear()  # set for the task before, after it ended
        try:
            outcome = worker.run(request, progress=lambda n: send(("beat", n)), cut=cut)
        except (BrokenPipeError, EOFError):
            return  # the scheduler is gone: stop quietly
        except Exception as exc:  # noqa: BLE001 - the input's fault, or a bug: reported either way
            send(("error", Errored.of(multiprocessing.current_process().name, exc, traceback_tail())))
        else:
            send(("done", outcome))
