"""`start_worker_process`: a worker runs the parent's main script again only when what it receives needs it."""

from __future__ import annotations

import multiprocessing
import sys
import types
from pathlib import Path

import pytest
from spawn_targets import report_type_name

from framefleet.util.processes import refers_to_main, start_worker_process

SCRIPT = '''
from pathlib import Path
Path({marker!r}).write_text("imported")

class UserOp:
    """An op defined in the user's own script, as with the Python API."""
'''


@pytest.fixture
def main_script(tmp_path, monkeypatch) -> tuple[types.ModuleType, Path]:
    """A main module loaded from a script that leaves a marker file each time it is run."""
    marker = tmp_path / "marker"
    script = tmp_path / "user_script.py"
    script.write_text(SCRIPT.format(marker=str(marker)))
    module = types.ModuleType("__main__")
    module.__file__ = str(script)
    exec(compile(script.read_text(), str(script), "exec"), module.__dict__)
    module.UserOp.__module__ = "__main__"
    marker.unlink()
    monkeypatch.setitem(sys.modules, "__main__", module)
    return module, marker


def spawn_and_wait(*args: object) -> str:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=report_type_name, args=(child, *args))
    start_worker_process(process, report_type_name, *args)
    child.close()
    answer = parent.recv()
    process.join(timeout=30)
    return answer


def test_a_worker_given_only_framefleet_objects_does_not_run_the_main_script(main_script):
    module, marker = main_script
    assert spawn_and_wait(Path("x")) == "PosixPath"
    assert not marker.exists()
    assert sys.modules["__main__"] is module  # put back after the start


def test_a_worker_given_an_object_defined_in_the_main_script_runs_it_and_receives_the_object(main_script):
    module, marker = main_script
    assert spawn_and_wait(module.UserOp()) == "UserOp"
    assert marker.read_text() == "imported"


def test_what_refers_to_the_main_module_is_told_from_its_pickle(main_script):
    module, _ = main_script
    assert refers_to_main(module.UserOp) and refers_to_main([1, module.UserOp()])
    assert not refers_to_main(Path("a"), {"__main": 1}, report_type_name)
