"""A full output disk, for real: a small tmpfs mounted in a private mount namespace (`unshare`), filled
with a ballast file while a job runs.

- the disk that holds the job's ledger is full: the run stops with one line naming the ledger (exit 2),
  not a traceback; freed, the same command resumes and finishes;
- only the outputs' disk is full: each task that cannot write is an infrastructure loss (`DiskFullError`),
  retried after a backoff, never failed; once the ballast goes, every video is done, frame-exact, and no
  temporary file is left.

The test re-runs this file under `unshare --mount --map-root-user` (the mount is private to that process
tree, so nothing leaks); where the platform cannot do that, it skips.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
DISK_KIB = 4096


def can_mount_privately() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None or sys.platform != "linux":
        return False
    probe = subprocess.run([unshare, "--mount", "--map-root-user", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


def framefleet(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "framefleet", "run", *map(str, args), "--op", "identity",
                           "--workers", "2", "--json", "--quiet"], capture_output=True, text=True, timeout=300)


def fill(disk: Path, leave_kib: int) -> Path:
    """A ballast file that leaves about `leave_kib` free on `disk`."""
    ballast = disk / "ballast.bin"
    free = shutil.disk_usage(disk).free // 1024
    with open(ballast, "wb") as out:
        out.write(b"\0" * max(0, free - leave_kib) * 1024)
    return ballast


def scenario(work: Path) -> dict:
    """Runs inside the private mount namespace; returns what the test checks."""
    sys.path.insert(0, str(TESTS))
    from media_checks import decoded_pts

    from framefleet.video.synth import ClipSpec, write_clip

    inputs, disk = work / "in", work / "disk"
    inputs.mkdir()
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_KIB}k", "tmpfs", str(disk)], check=True)
    for i in range(16):
        write_clip(inputs / f"v{i:02d}.mp4", ClipSpec(width=64, height=48, frames=24, audio=("aac",)))
    found: dict = {}

    # 1. the ledger's disk is full: one line, exit 2; freed, the same command finishes
    ballast = fill(disk, leave_kib=0)
    stopped = framefleet(inputs, "-o", disk / "ledger-full")
    found["ledger_full"] = {"code": stopped.returncode, "stderr": stopped.stderr}
    ballast.unlink()
    again = framefleet(inputs, "-o", disk / "ledger-full")
    found["ledger_freed"] = {"code": again.returncode, "counts": json.loads(again.stdout)["counts"]}
    shutil.rmtree(disk / "ledger-full")

    # 2. only the outputs' disk is full (the ledger elsewhere); the ballast goes after 3 s
    ballast = fill(disk, leave_kib=8)
    freeing = threading.Timer(3.0, ballast.unlink)
    freeing.start()
    started = time.monotonic()
    finished = framefleet(inputs, "-o", disk / "out", "--job-dir", work / "job")
    freeing.join()
    db = sqlite3.connect(work / "job" / "ledger.sqlite")
    losses = db.execute("SELECT error_type, COUNT(*) FROM attempts WHERE outcome = 'lost' GROUP BY error_type")
    found["outputs_full"] = {
        "code": finished.returncode, "seconds": time.monotonic() - started, "stderr": finished.stderr,
        "counts": json.loads(finished.stdout)["counts"], "losses": dict(losses.fetchall()),
        "files": sorted(p.name for p in (disk / "out").iterdir() if not p.name.endswith(".framefleet.json")),
        "exact": [decoded_pts(disk / "out" / p.name) == decoded_pts(p) for p in sorted(inputs.iterdir())],
    }
    db.close()
    return found


@pytest.mark.timeout(600)
def test_a_full_disk_stops_nothing_and_loses_nothing(tmp_path):
    if not can_mount_privately():
        pytest.skip("cannot mount a tmpfs in a private mount namespace here (unshare)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(["unshare", "--mount", "--map-root-user", sys.executable, __file__, str(tmp_path)],
                          capture_output=True, text=True, timeout=550, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout)

    ledger_full = found["ledger_full"]
    assert ledger_full["code"] == 2
    lines = [line for line in ledger_full["stderr"].splitlines() if line.strip()]
    assert len(lines) == 1 and "no space left on the disk that holds the job's state" in lines[0], lines
    assert found["ledger_freed"]["code"] == 0 and found["ledger_freed"]["counts"]["done"] == 16

    outputs_full = found["outputs_full"]
    assert outputs_full["code"] == 0, outputs_full["stderr"]
    assert outputs_full["counts"]["done"] == 16 and outputs_full["counts"]["failed"] == 0
    assert outputs_full["losses"].get("DiskFullError", 0) >= 1, outputs_full["losses"]
    assert outputs_full["files"] == [f"v{i:02d}.mp4" for i in range(16)], "no temporary left, nothing missing"
    assert all(outputs_full["exact"])


if __name__ == "__main__":
    print(json.dumps(scenario(Path(sys.argv[1]))))
