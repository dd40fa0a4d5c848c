"""A short chaos soak (benchmarks/chaos.py): workers and whole runs killed while a job runs; nothing lost,
nothing duplicated, every output frame-exact, only the hostile files failed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_job_under_injected_faults_loses_and_duplicates_nothing(tmp_path):
    report = tmp_path / "chaos.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "chaos.py"), "--videos", "40", "--faults", "12",
                           "--worker-kill", "0.2", "--run-kill", "2", "--output", str(report)],
                          capture_output=True, text=True, timeout=600)
    result = json.loads(report.read_text())["result"]
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert sum(result["faults"].values()) >= 3, result["faults"]
    assert result["lost"] == [] and result["duplicated_or_stray"] == [] and result["wrong"] == []
    assert result["failed_good"] == [] and result["counts"]["done"] == 40
    assert set(result["hostile_outcomes"].values()) <= {"NotAVideoError", "CorruptVideoError"}
