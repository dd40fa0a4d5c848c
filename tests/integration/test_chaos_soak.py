"""Short chaos soaks (benchmarks/chaos.py): workers and whole runs killed, the output disk filled (local
engine), Ray nodes preempted and the object store stopped (Ray engine over Azurite) while a job runs;
nothing lost, nothing duplicated, every output frame-exact, only the hostile files failed, no run ended in
an internal error or stalled. The full-size soaks run in `make bench-chaos`; see docs/reliability.md."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def soak(tmp_path: Path, *args: str) -> dict:
    report = tmp_path / "chaos.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "chaos.py"), *args, "--output", str(report)],
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    result = json.loads(report.read_text())["result"]
    assert result["lost"] == [] and result["duplicated_or_stray"] == [] and result["wrong"] == []
    assert result["failed_good"] == [] and result["internal_errors"] == [] and result["stalls"] == []
    assert set(result["hostile_outcomes"].values()) <= {"NotAVideoError", "CorruptVideoError"}
    return result


def private_mounts() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "--mount", "--map-root-user", "true"], capture_output=True,
                          check=False).returncode == 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_local_job_under_worker_and_run_kills_and_a_full_disk_loses_and_duplicates_nothing(tmp_path):
    result = soak(tmp_path, "--videos", "40", "--faults", "12", "--every", "0.2", "--disk-full")
    assert result["counts"]["done"] == 40
    assert result["faults"]["worker killed"] >= 1 and result["faults"]["run killed"] >= 1
    if private_mounts():
        assert result["faults"]["disk full"] == 1


@pytest.mark.ray
@pytest.mark.storage
@pytest.mark.timeout(900)
def test_a_ray_job_over_azurite_under_actor_kills_preemptions_and_store_outages_loses_nothing(tmp_path,
                                                                                            azurite_installed):
    pytest.importorskip("ray")
    result = soak(tmp_path, "--engine", "ray", "--store", "azurite", "--videos", "40", "--faults", "15",
                  "--every", "0.6")
    assert result["counts"]["done"] == 40
    assert result["faults"]["node preempted"] >= 1 and result["faults"]["worker killed"] >= 1
