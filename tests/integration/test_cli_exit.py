"""How the `framefleet` command ends: with its exit handlers run and its streams flushed, but without the
interpreter's module-by-module teardown (which unloading PyAV, NumPy and the model runtimes made slow)."""

from __future__ import annotations

import subprocess
import sys

from framefleet import __version__

SCRIPT = """
import atexit
import sys


class TornDown:
    def __del__(self):
        print("torn down", flush=True)


kept = TornDown()
atexit.register(print, "exit handler", flush=True)
sys.argv = ["framefleet", *sys.argv[1:]]
from framefleet.cli import main

main()
"""


def framefleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, timeout=120)


def test_the_command_runs_its_exit_handlers_and_leaves_without_the_teardown():
    done = framefleet("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"framefleet {__version__}", "exit handler"]


def test_the_command_keeps_its_exit_code_when_it_leaves_early(tmp_path):
    done = framefleet("status", str(tmp_path / "no-job"))
    assert done.returncode == 2
    assert done.stdout.splitlines() == ["exit handler"]
    assert len(done.stderr.splitlines()) == 1
