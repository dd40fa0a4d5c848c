"""Per-step op times: a pipeline of several steps records how long each took, in `status --json`, the
report and the ledger's per-item metrics, so the slow step of a pipeline can be found."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from framefleet.jobs.directory import open_ledger
from framefleet.jobs.reads import LedgerReads
from framefleet.jobs.report import render_report
from framefleet.jobs.view import JobView

TESTS = Path(__file__).resolve().parents[1]


def test_a_two_step_pipeline_records_the_time_of_each_step(clip_factory, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(clip_factory("steps.mp4", width=64, height=48, frames=12).read_bytes())
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text("steps:\n  - op: resize\n    max_size: 32\n"
                        "  - op: job_ops:SlowOp\n    delay: 0.1\n    batch_size: 2\n")
    done = subprocess.run([sys.executable, "-m", "framefleet", "run", str(folder), "-o", str(tmp_path / "out"),
                           "--pipeline", str(pipeline), "--engine", "inline", "--quiet"],
                          cwd=TESTS, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    job_dir = tmp_path / "out" / ".framefleet-job"

    status = json.loads(subprocess.run([sys.executable, "-m", "framefleet", "status", str(job_dir), "--json"],
                                       capture_output=True, text=True, timeout=120, check=True).stdout)
    steps = status["step_seconds"]
    assert list(steps) == ["resize", "slow"]
    assert steps["slow"] >= 0.2  # 12 frames: two batches or more, of 0.1 s each
    assert steps["resize"] < steps["slow"]

    ledger = open_ledger(job_dir)
    try:
        [item] = LedgerReads(ledger).items()
        assert item.steps_s == pytest.approx(steps)
        assert sum(steps.values()) <= item.ops_s + 1e-6  # the steps are the chain's time, split
        html = render_report(JobView(ledger, job_dir))
    finally:
        ledger.close()
    assert f"slow {steps['slow']:.1f} s" in html and "resize" in html
