"""A 4K clip under a memory cap: `stylize` fits its defaults into the memory it has, or refuses in one line.

The budget (FRAMEFLEET_MEMORY_BUDGET_MB) makes framefleet believe the machine has 3200 MiB; a real cap
(RLIMIT_DATA) a little above it makes sure a run that ignores the budget fails here, not the machine."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from fractions import Fraction

import pytest
from cli_helpers import ANSI
from media_checks import decoded_pts

from framefleet.processing.memory_budget import BUDGET_ENV

BUDGET_MIB = 3200
CAP_BYTES = 4 << 30


def _capped() -> None:
    resource.setrlimit(resource.RLIMIT_DATA, (CAP_BYTES, CAP_BYTES))


def stylize(*args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, BUDGET_ENV: str(BUDGET_MIB), "COLUMNS": "400"}
    return subprocess.run([sys.executable, "-m", "framefleet", "stylize", *map(str, args), "--quiet"], env=env,
                          capture_output=True, text=True, timeout=300, preexec_fn=_capped)


@pytest.fixture(scope="module")
def uhd_clip(clip_factory):
    return clip_factory("uhd.mp4", width=3840, height=2160, frames=4, rate=Fraction(25))


def test_default_settings_fit_a_4k_clip_into_the_memory_there_is(uhd_clip, tmp_path):
    output = tmp_path / "styled.mp4"
    done = stylize(uhd_clip, "-o", output)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in ANSI.sub("", done.stderr).splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "3840x2160 at full size with" in warnings[0], done.stderr
    assert "running 1 session and the model at max-size 720" in warnings[0], done.stderr
    assert len(decoded_pts(output)) == len(decoded_pts(uhd_clip)) == 4


def test_an_explicit_full_size_that_cannot_fit_is_refused_before_any_work(uhd_clip, tmp_path):
    output = tmp_path / "styled.mp4"
    done = stylize(uhd_clip, "-o", output, "--max-size", 3840, "--runtime", "onnxruntime")  # its figure, anywhere
    lines = [line for line in ANSI.sub("", done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("error: limit:memory: 3840x2160 at full size with 1 session needs ~12.3 GB")
    assert "lower or drop --max-size" in lines[0]
    assert not output.exists()


def test_a_job_worker_too_small_for_a_4k_frame_fails_the_item_as_limit_memory(uhd_clip, tmp_path):
    # one worker, capped at its share (3200 MiB, not the default 16384): a full-size 4K frame fails its item
    # as limit:memory, naming the fix, where it would have taken the machine's memory
    done = subprocess.run([sys.executable, "-m", "framefleet", "run", str(uhd_clip), "-o", str(tmp_path / "out"),
                           "--workers", "1", "--max-attempts", "1", "--json", "--quiet"],
                          env={**os.environ, BUDGET_ENV: str(BUDGET_MIB)}, capture_output=True, text=True,
                          timeout=300, preexec_fn=_capped)
    assert done.returncode == 3, done.stderr
    (failure,) = json.loads(done.stdout)["failures"]
    assert failure["error_type"] == "limit:memory", failure
    assert f"the worker's cap of {BUDGET_MIB} MiB" in failure["error"] and "smaller --max-size" in failure["error"]
