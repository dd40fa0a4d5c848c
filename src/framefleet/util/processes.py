"""Starting local worker processes without running the parent's main script again.

A process started with the spawn method imports the parent's main module first, so that objects defined in
it can be unpickled. Under the `framefleet` command that module is the CLI (typer, rich, every command's
modules): every worker imported all of it before its own modules. `start_worker_process` leaves it out
whenever what the worker receives does not refer to the main module; a pipeline with an op defined in the
user's own script still gets it.
"""

from __future__ import annotations

import pickle
import sys
import types
from multiprocessing.process import BaseProcess
from typing import Any


def refers_to_main(*payload: Any) -> bool:
    """Whether unpickling `payload` needs the parent's main module (a class or function defined there)."""
    try:
        return b"__main__" in pickle.dumps(payload)
    except Exception:  # not picklable here: let multiprocessing import the main module and report it
        return True


def start_worker_process(process: BaseProcess, *payload: Any) -> None:
    """Start `process` (spawn method); it imports the parent's main module only when `payload` refers to it:
    the process's target and what it receives besides pipes and events."""
    main = sys.modules.get("__main__")
    if main is None or refers_to_main(*payload):
        process.start()
        return
    sys.modules["__main__"] = types.ModuleType("__main__")  # what multiprocessing reads while it starts it
    try:
        process.start()
    finally:
        sys.modules["__main__"] = main
