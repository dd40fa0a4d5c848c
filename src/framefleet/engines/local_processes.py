"""Local worker processes, started before the job that will use them is set up.

A spawned worker spends its first half second or more importing framefleet, PyAV, NumPy and the ops' code.
A process started here does that while its parent is still busy (importing its own modules, listing the
inputs, opening the ledger), then waits on its pipe for its setup (`framefleet.engines.local_worker`).
`start_early` starts a reserve of them that the next local pool of this process takes over (`take_early`);
`stop_early` lets go of those it did not take. Each is an ordinary spawned process: killed, it is replaced
by a new one.

This module imports nothing heavy: `framefleet run` starts its first worker here before its own heavy imports.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from typing import Any

from framefleet.util.processes import start_worker_process

_CONTEXT = multiprocessing.get_context("spawn")
_serials = itertools.count(1)
_early: list[WorkerProcess] = []
"""Processes started ahead of their pool, oldest first."""


@dataclass
class WorkerProcess:
    """A started worker process and the parent's ends of its channels."""

    name: str
    process: BaseProcess
    conn: Connection
    cut: Event
    """Set to cut its segment short (it reads its pipe only between tasks)."""


def start(*payload: Any) -> WorkerProcess:
    """Start a worker process (spawn method) that waits for its setup on its pipe. It runs the parent's main
    script first only when `payload` (what it will be sent) refers to it (`framefleet.util.processes`)."""
    name = f"local-{os.getpid()}-{next(_serials)}"
    parent, child = _CONTEXT.Pipe()
    cut = _CONTEXT.Event()
    process = _CONTEXT.Process(target=_serve, args=(child, cut), name=name, daemon=True)
    start_worker_process(process, _serve, *payload)
    child.close()
    return WorkerProcess(name, process, parent, cut)


def start_early(count: int) -> None:
    """Start worker processes until `count` of them wait for a pool."""
    while len(_early) < count:
        _early.append(start())


def take_early() -> WorkerProcess | None:
    """The oldest early process that is still alive, now the caller's; None when none is left."""
    while _early:
        worker = _early.pop(0)
        if worker.process.is_alive():
            return worker
        worker.conn.close()
    return None


def stop_early(keep: int = 0) -> None:
    """Let go of the early processes beyond the first `keep`: each exits when it finds its pipe closed."""
    while len(_early) > keep:
        _early.pop().conn.close()


def _serve(conn: Connection, cut: Event) -> None:
    """The process's target: the worker's code is imported here, in the process, never by its parent."""
    os.dup2(2, 1)  # what an op or a library prints goes to stderr: stdout is the command's (--json's result)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the scheduler decides
    from framefleet.engines.local_worker import worker_main

    worker_main(conn, cut)
