"""A job stores how it was run (`RunSettings`), and `framefleet retry` runs it the same way: on the same
engine, with the same limits, unless a flag says otherwise. `status` shows them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from framefleet.jobs.directory import open_ledger
from framefleet.jobs.reads import LedgerReads

TESTS = Path(__file__).resolve().parents[1]


def framefleet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "framefleet", *args], cwd=TESTS, capture_output=True, text=True,
                          timeout=300, check=False)


def workers_of_attempts(job_dir: Path) -> list[str]:
    ledger = open_ledger(job_dir)
    try:
        return [attempt["worker"] for attempt in LedgerReads(ledger).attempts()]
    finally:
        ledger.close()


def failed_inline_run(clip_factory, tmp_path: Path) -> tuple[Path, Path]:
    """A job run inline with one attempt and a 77 s hang timeout, whose one video failed (its op waits for
    a gate file): (the gate, the job directory)."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(clip_factory("retry.mp4", width=64, height=48, frames=6).read_bytes())
    gate, job_dir = tmp_path / "gate", tmp_path / "out" / ".framefleet-job"
    first = framefleet("run", str(folder), "-o", str(tmp_path / "out"), "--op", "job_ops:GatedOp", "-p",
                       f"gate={gate}", "--engine", "inline", "--max-attempts", "1", "--hang-timeout", "77", "--quiet")
    assert first.returncode == 3, first.stderr
    return gate, job_dir


def test_retry_keeps_the_engine_and_limits_the_job_ran_with(clip_factory, tmp_path):
    gate, job_dir = failed_inline_run(clip_factory, tmp_path)
    assert [worker.split("-")[0] for worker in workers_of_attempts(job_dir)] == ["inline"] * 2  # probe, video

    status = json.loads(framefleet("status", str(job_dir), "--json").stdout)
    assert status["settings"]["engine"] == "inline"
    assert status["settings"]["retry"]["max_attempts"] == 1 and status["settings"]["options"]["hang_timeout"] == 77

    gate.touch()
    again = framefleet("retry", str(job_dir), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["counts"]["done"] == 1
    workers = workers_of_attempts(job_dir)
    assert len(workers) > 2 and all(worker.startswith("inline-") for worker in workers)  # not local-PID-N

    status = json.loads(framefleet("status", str(job_dir), "--json").stdout)
    assert status["settings"]["engine"] == "inline" and status["settings"]["options"]["hang_timeout"] == 77


def test_a_flag_given_to_retry_overrides_the_stored_setting(clip_factory, tmp_path):
    gate, job_dir = failed_inline_run(clip_factory, tmp_path)
    gate.touch()
    again = framefleet("retry", str(job_dir), "--engine", "local", "--workers", "1", "--quiet")
    assert again.returncode == 0, again.stderr
    assert workers_of_attempts(job_dir)[-1].startswith("local-")
    settings = json.loads(framefleet("status", str(job_dir), "--json").stdout)["settings"]
    assert settings["engine"] == "local" and settings["options"]["workers"] == 1
    assert settings["retry"]["max_attempts"] == 1 and settings["options"]["hang_timeout"] == 77  # the rest kept
