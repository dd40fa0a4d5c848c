"""Running the `framefleet` command in-process in tests, and reading what it printed."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner, Result

from framefleet.cli import app

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def cli(*args: object) -> Result:
    """Run the command in-process; stdout and stderr are captured separately."""
    return CliRunner().invoke(app, [str(a) for a in args])


def stdout_json(result: Result):
    """What the command printed on stdout, parsed as JSON (rich may colour it when run from a terminal)."""
    return json.loads(ANSI.sub("", result.stdout))


def stderr_lines(result: Result) -> list[str]:
    """The non-blank lines on stderr, without colour codes."""
    return [line for line in ANSI.sub("", result.stderr).splitlines() if line.strip()]
