"""`--progress`: a bar for people at a terminal, lines for logs, JSON objects for scripts, or nothing; and
NO_COLOR honoured. Run as real processes (stderr is a pipe, as under a wrapper)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import media_checks
from cli_helpers import cli, stderr_lines

COLOUR = re.compile(r"\x1b\[[0-9;]*3[0-9]m|\x1b\[[0-9;]*;3[0-9]")


def framefleet(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "framefleet", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_stylize_progress_json_is_one_object_per_line_ending_with_every_frame(clip_factory, tmp_path):
    source = clip_factory("progress.mp4", width=128, height=72, frames=48)
    ran = framefleet("stylize", source, "-o", tmp_path / "out.mp4", "--max-size", "64", "--temporal", "none",
                     "--progress", "json")
    assert ran.returncode == 0, ran.stderr
    objects = [json.loads(line) for line in ran.stderr.splitlines() if line.startswith("{")]
    assert objects and all(set(o) == {"input", "frames", "frames_total", "fps", "eta_seconds", "elapsed_seconds"}
                           for o in objects)
    assert [o["frames"] for o in objects] == sorted(o["frames"] for o in objects)
    assert objects[-1]["frames"] == objects[-1]["frames_total"] == media_checks.frame_count(tmp_path / "out.mp4")


def test_run_progress_json_ends_with_the_jobs_own_counts(clip_factory, tmp_path):
    source = clip_factory("job.mp4", width=128, height=72, frames=24)
    ran = framefleet("run", source, "-o", tmp_path / "out", "--op", "identity", "--progress", "json")
    assert ran.returncode == 0, ran.stderr
    objects = [json.loads(line) for line in ran.stderr.splitlines() if line.startswith("{")]
    assert objects[-1]["items"] == {"pending": 0, "running": 0, "done": 1, "failed": 0}
    assert objects[-1]["frames"] == 24 and objects[-1]["workers"] >= 1


def test_without_a_terminal_auto_prints_lines_and_none_prints_nothing(clip_factory, tmp_path, monkeypatch):
    source = clip_factory("lines.mp4", width=128, height=72, frames=24)
    short = stderr_lines(cli("stylize", source, "-o", tmp_path / "s.mp4", "--max-size", "64"))
    assert len(short) == 1 and short[0].startswith("wrote ")  # done within the first 5 s: the result alone
    monkeypatch.setenv("FRAMEFLEET_PROGRESS_SECONDS", "0")  # a line at every step, as a long run gets
    lines = stderr_lines(cli("stylize", source, "-o", tmp_path / "a.mp4", "--max-size", "64", "--temporal", "none"))
    assert lines[0].startswith("lines.mp4: frames ") and "lines.mp4: frames 24/24" in lines[-2]
    assert lines[-1].startswith("wrote ")
    quiet = stderr_lines(cli("stylize", source, "-o", tmp_path / "b.mp4", "--max-size", "64", "--progress", "none"))
    assert len(quiet) == 1 and quiet[0].startswith("wrote ")
    refused = cli("stylize", source, "-o", tmp_path / "c.mp4", "--progress", "fancy")
    assert refused.exit_code == 2 and stderr_lines(refused) == [
        "error: --progress must be one of auto, bar, lines, json, none; got 'fancy'"]


def test_no_color_is_honoured_even_where_colour_is_forced():
    coloured = framefleet("stylize", "/no/such.mp4", "-o", "/tmp/x.mp4", env={"FORCE_COLOR": "1"})
    plain = framefleet("stylize", "/no/such.mp4", "-o", "/tmp/x.mp4", env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert COLOUR.search(coloured.stderr) and not COLOUR.search(plain.stderr)
    assert "error: /no/such.mp4: no such file" in re.sub(r"\x1b\[[0-9;]*m", "", plain.stderr)
