"""Starting local worker processes quickly.

Workers start from a fork server where the platform has one (Linux): a process that imported framefleet's
worker modules once (`WORKER_MODULES`) and forks each worker from itself, in milliseconds instead of a
fresh interpreter's half second of imports. `framefleet run` starts that server first thing
(`start_worker_server`), so that it imports beside the command's own imports. A forked worker inherits the
server's environment, not the job's: the job hands its environment over (`worker_environment`).

Either way a new process imports the parent's main module first, so that objects defined in it can be
unpickled. Under the `framefleet` command that module is the CLI (typer, rich, every command's modules):
`start_worker_process` leaves it out whenever what the worker receives does not refer to the main module; a
pipeline with an op defined in the user's own script still gets it.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import os
import pickle
import sys
import types
from collections.abc import Mapping, Sequence
from multiprocessing.process import BaseProcess
from typing import Any

WORKER_MODULES = ("framefleet.engines.local",)
"""What the fork server imports before forking workers: everything a worker needs but its ops' runtimes."""


def worker_context() -> multiprocessing.context.BaseContext:
    """The start method for local workers: the fork server on Linux, spawn elsewhere."""
    if sys.platform != "linux" or "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(WORKER_MODULES))
    return context


def start_worker_server(argv: Sequence[str]) -> None:
    """Start the fork server now when `argv` is a `framefleet run` on the local engine (the default), so that
    it imports while the command does; anything else starts it on its first worker, if it has one."""
    command = next((arg for arg in argv[1:] if not arg.startswith("-")), None)
    if command != "run" or any(arg in ("--engine", "--ray-address") or arg.startswith(("--engine=", "--ray-"))
                               for arg in argv) or worker_context().get_start_method() != "forkserver":
        return
    multiprocessing.forkserver.ensure_running()


def worker_environment() -> dict[str, str]:
    """This process's environment, for a worker to take on (`adopt_environment`)."""
    return dict(os.environ)


def adopt_environment(environment: Mapping[str, str]) -> None:
    """Make this (forked) worker's environment the job's."""
    if environment != os.environ:
        os.environ.clear()
        os.environ.update(environment)


def refers_to_main(*payload: Any) -> bool:
    """Whether unpickling `payload` needs the parent's main module (a class or function defined there)."""
    try:
        return b"__main__" in pickle.dumps(payload)
    except Exception:  # not picklable here: let multiprocessing import the main module and report it
        return True


def start_worker_process(process: BaseProcess, *payload: Any) -> None:
    """Start `process` (spawn or fork server); it imports the parent's main module only when `payload`
    refers to it: the process's target and what it receives besides pipes and events."""
    main = sys.modules.get("__main__")
    if main is None or refers_to_main(*payload):
        process.start()
        return
    sys.modules["__main__"] = types.ModuleType("__main__")  # what multiprocessing reads while it starts it
    try:
        process.start()
    finally:
        sys.modules["__main__"] = main
