"""`framefleet serve` watching a folder, end to end: files arriving in bursts, written in pieces, delivered
twice, replaced, and the service killed with SIGKILL mid-job and started again over the same state.

The service runs as a real subprocess (`framefleet serve --watch SRC -o OUT`, with tests/ on its Python path
so the pipeline can be `op: job_ops:SlowOp`: every task takes a predictable while). What is checked comes
from outside the service where it can: the job's history from its ledger (one attempt row per claim of a
task), the media from PyAV (tests/media_checks.py), the files from the file system.

What happens to a file whose writer pauses mid-write for longer than two looks: the watcher cannot tell a
paused writer from a finished one, so the first half is taken as an item. Half an MP4 has no index (its
`moov` box is written last): its probe fails, is retried, and the item ends `failed`. Half a Matroska file
still probes (its header is complete): its item may be processed, and its output holds the frames the
half held. Either way the completed file is a new version (new size and mtime): the same item starts over,
its old history is dropped, and the output is rewritten from the whole file. A writer that pauses for less
than one interval is never seen as complete: two looks in a row cannot agree on the half.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import media_checks
import pytest

from framefleet.jobs.manifest import manifest_uri

TESTS_DIR = Path(__file__).resolve().parents[1]
JOB_CLI = [sys.executable, "-c", "from framefleet.cli import main; main()"]
TINY = {"width": 64, "height": 48, "gop": 4, "bframes": 0}
WORKERS = 2
INTERVAL = 0.5
TIMEOUT = 60.0
# 2 frames per batch, 0.05 s per batch; clips over 0.25 s are split at keyframes (probe, segments, join).
PIPELINE = "op: job_ops:SlowOp\nbatch_size: 2\ndelay: 0.05\nsegment_seconds: 0.25\n"
NOISE = ["notes.txt", ".hidden.mp4", "x.mp4.part", "~lock.mp4", "sub/.cache/v.mp4"]


# -- the service -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Serve:
    """One `framefleet serve` process (a session of its own, so SIGKILL takes its workers too)."""

    def __init__(self, tmp_path: Path, src: Path, out: Path, pipeline: Path, log_name: str) -> None:
        self.port = free_port()
        self.log = tmp_path / log_name
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), env.get("PYTHONPATH", "")) if p)
        command = [*JOB_CLI, "serve", "--watch", str(src), "-o", str(out), "--pipeline", str(pipeline),
                   "--interval", str(INTERVAL), "--workers", str(WORKERS), "--state-dir", str(tmp_path / "state"),
                   "--port", str(self.port)]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def get(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
            return json.loads(response.read())

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"framefleet serve exited ({self.proc.returncode}):\n{self.log_tail()}")

    def wait_ready(self) -> str:
        """Wait until the API answers and lists the watch job; its id."""
        def listed():
            self.check_alive()
            try:
                return self.get("/api/jobs?kind=watch")["jobs"]
            except OSError:
                return None
        jobs = wait_for(listed, what="the API to list the watch job", serve=self)
        assert len(jobs) == 1, jobs
        return jobs[0]["id"]

    def kill(self) -> None:
        """SIGKILL the service and every process of its session (its workers)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        try:  # workers die with the group; wait until none is left so nothing writes after this
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                os.killpg(self.proc.pid, 0)
                time.sleep(0.05)
        except ProcessLookupError:
            pass


def wait_for(condition, *, what: str, timeout: float = TIMEOUT, serve: Serve | None = None):
    """Poll `condition` every 0.2 s until it returns something true; that value. Fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        if serve is not None:
            serve.check_alive()
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = serve.log_tail() if serve is not None else ""
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")
        time.sleep(0.2)


# -- reading the job's ledger and the folders -------------------------------------------------------------


def query(ledger: Path, sql: str, *args: object) -> list[sqlite3.Row]:
    """Read the ledger with a plain SQLite connection (safe while the service writes it)."""
    db = sqlite3.connect(ledger, timeout=30)
    db.row_factory = sqlite3.Row
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def item_rows(ledger: Path) -> dict[str, sqlite3.Row]:
    return {row["relpath"]: row for row in query(ledger, "SELECT * FROM items")}


def version_of(path: Path) -> str:
    st = path.stat()
    return f"{st.st_mtime_ns}-{st.st_size}"


def settled(ledger: Path, expected: dict[str, Path]) -> bool:
    """Whether every expected file is an item at its current version, done, and no task is left to run.
    An item that failed at the file's current version fails the test at once."""
    rows = item_rows(ledger)
    for rel, row in rows.items():
        if rel in expected and row["state"] == "failed" and row["version"] == version_of(expected[rel]):
            pytest.fail(f"{rel} failed: {row['error']}")
    if set(rows) != set(expected):
        return False
    if any(row["state"] != "done" or row["version"] != version_of(expected[rel]) for rel, row in rows.items()):
        return False
    (left,) = query(ledger, "SELECT COUNT(*) FROM tasks WHERE state IN ('pending', 'running', 'waiting')")[0]
    return left == 0


def all_files(root: Path) -> set[str]:
    """Every file under `root`, hidden ones (temporaries) included, as relative POSIX paths."""
    return {Path(folder, name).relative_to(root).as_posix() for folder, _, files in os.walk(root) for name in files}


def copy_in(clip: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(clip, target)
    return target


def write_half(clip: Path, target: Path) -> bytes:
    """Write the first half of `clip`'s bytes to `target`; the rest, to append later."""
    data = clip.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return data[len(data) // 2:]


def append(target: Path, rest: bytes) -> None:
    with target.open("ab") as handle:
        handle.write(rest)


# -- the test --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clips(clip_factory) -> dict[str, Path]:
    return {
        "16": clip_factory("serve-16.mp4", **TINY, frames=16),
        "24": clip_factory("serve-24.mp4", **TINY, frames=24),
        "mkv": clip_factory("serve-20.mkv", **TINY, frames=20),
    }


@pytest.mark.slow
def test_bursts_partial_writes_duplicates_replacements_and_a_killed_service_process_each_file_once(
        clips, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    pipeline = tmp_path / "slow.yaml"
    pipeline.write_text(PIPELINE)
    expected: dict[str, Path] = {}  # relpath -> the file in the watched folder, as it ends up
    services: list[Serve] = []
    try:
        first = Serve(tmp_path, src, out, pipeline, "first.log")
        services.append(first)
        job_id = first.wait_ready()
        ledger = tmp_path / "state" / "jobs" / job_id / "ledger.sqlite"
        wait_for(ledger.exists, what="the watch job's ledger", serve=first)

        # (a) a burst: several videos at once, among names that are never items.
        for name in ("a1.mp4", "a2.mp4", "sub/a3.mp4", "sub/deeper/a4.mp4"):
            expected[name] = copy_in(clips["16"], src / name)
        for name in NOISE:
            copy_in(clips["16"], src / name)
        (src / "notes.txt").write_text("not a video\n")
        # An upload under a partial name, renamed into place once complete (mtime kept).
        copy_in(clips["16"], src / "y.mp4.part")
        time.sleep(3 * INTERVAL)
        (src / "y.mp4.part").rename(src / "y.mp4")
        expected["y.mp4"] = src / "y.mp4"

        # (b) written in two pieces 0.3 s apart (less than an interval): never two agreeing looks in between.
        rest = write_half(clips["24"], src / "p1.mp4")
        time.sleep(0.3)
        append(src / "p1.mp4", rest)
        expected["p1.mp4"] = src / "p1.mp4"
        # ... and writers that pause for several intervals: the first halves are taken as items.
        rests = {name: write_half(clips[kind], src / name) for name, kind in (("p2.mp4", "24"), ("p3.mkv", "mkv"))}
        halves = {name: (src / name).stat().st_size for name in rests}
        wait_for(lambda: all(name in (rows := item_rows(ledger)) and rows[name]["size"] == size
                             and rows[name]["state"] in ("done", "failed") for name, size in halves.items()),
                 what="the half-written files to be taken as items and end", serve=first)
        partial = item_rows(ledger)
        assert partial["p2.mp4"]["state"] == "failed", "half an MP4 (no moov box yet) cannot be probed"
        assert "p1.mp4" not in partial or partial["p1.mp4"]["size"] == expected["p1.mp4"].stat().st_size, \
            "a half that lasted less than an interval was taken as complete"
        for name, rest in rests.items():
            append(src / name, rest)
            expected[name] = src / name
        wait_for(lambda: settled(ledger, expected), what="the first burst to be processed", serve=first)
        for name in rests:  # the completed file started the same item over, as a new version
            assert item_rows(ledger)[name]["id"] == partial[name]["id"]
            assert item_rows(ledger)[name]["size"] == expected[name].stat().st_size

        # (c) a duplicate delivery (same bytes, same name, same mtime) and (d) a replacement by another clip.
        a1_attempts = [a["id"] for a in query(ledger, "SELECT a.id FROM attempts a JOIN tasks t ON t.id = a.task_id "
                                                      "JOIN items i ON i.id = t.item_id WHERE i.relpath = 'a1.mp4'")]
        stamp = (src / "a1.mp4").stat().st_mtime_ns
        (src / "a1.mp4").write_bytes(clips["16"].read_bytes())
        os.utime(src / "a1.mp4", ns=(stamp, stamp))
        assert media_checks.frame_count(out / "a2.mp4") == 16
        shutil.copyfile(clips["24"], src / "a2.mp4")
        wait_for(lambda: settled(ledger, expected), what="the replacement to be processed", serve=first)
        assert media_checks.frame_count(out / "a2.mp4") == 24
        assert [a["id"] for a in query(ledger, "SELECT a.id FROM attempts a JOIN tasks t ON t.id = a.task_id "
                                               "JOIN items i ON i.id = t.item_id WHERE i.relpath = 'a1.mp4'")] \
            == a1_attempts, "a duplicate delivery is not processed again"

        # Another burst, and the service is killed while its segments run.
        for name in ("b1.mp4", "b2.mp4", "b3.mp4"):
            expected[name] = copy_in(clips["24"], src / name)
        wait_for(lambda: query(ledger, "SELECT COUNT(*) FROM tasks t JOIN items i ON i.id = t.item_id "
                                       "WHERE t.state = 'running' AND t.kind = 'segment' "
                                       "AND i.relpath LIKE 'b%'")[0][0] > 0,
                 what="a segment of the second burst to run", serve=first)
        first.kill()
        assert first.proc.returncode == -signal.SIGKILL
        in_flight = {row["id"]: row["lease_id"] for row in query(ledger, "SELECT id, lease_id FROM tasks "
                                                                         "WHERE state = 'running'")}
        last_attempt = query(ledger, "SELECT MAX(id) FROM attempts")[0][0]
        done_before = {row["id"] for row in query(ledger, "SELECT id FROM items WHERE state = 'done'")}
        assert 1 <= len(in_flight) <= WORKERS, in_flight

        # While the service is down, a file arrives; the first burst is delivered again (touching nothing).
        expected["d1.mp4"] = copy_in(clips["16"], src / "d1.mp4")

        second = Serve(tmp_path, src, out, pipeline, "second.log")
        services.append(second)
        assert second.wait_ready() == job_id, "the restarted service resumes the same watch job"
        for name in ("c1.mp4", "c2.mkv"):
            expected[name] = copy_in(clips["mkv" if name.endswith(".mkv") else "16"], src / name)
        wait_for(lambda: settled(ledger, expected), what="every file to be processed after the restart",
                 serve=second)
        detail = second.get(f"/api/jobs/{job_id}")
        listed = second.get("/api/jobs?kind=watch")
    finally:
        for serve in services:
            serve.kill()

    # Every file is one item, at its final version, done; nothing else is.
    rows = item_rows(ledger)
    assert set(rows) == set(expected)
    for rel, row in rows.items():
        assert (row["state"], row["version"]) == ("done", version_of(expected[rel])), (rel, dict(row))
        assert row["frames"] == media_checks.frame_count(expected[rel]), rel

    # One output per file, with its frames and its manifest, and nothing else: no output for the noise, no
    # temporaries.
    outputs = set(expected) | {manifest_uri(rel) for rel in expected}
    assert all_files(out) == outputs, all_files(out) ^ outputs
    for rel, source in expected.items():
        assert media_checks.decoded_pts(out / rel) == media_checks.decoded_pts(source), rel

    # Each task of the final versions was done once; only the tasks in flight at the kill ran twice.
    attempts: dict[int, list[sqlite3.Row]] = defaultdict(list)
    for attempt in query(ledger, "SELECT a.*, t.item_id, t.kind FROM attempts a JOIN tasks t ON t.id = a.task_id "
                                 "ORDER BY a.id"):
        attempts[attempt["task_id"]].append(attempt)
    (tasks,) = query(ledger, "SELECT COUNT(*) FROM tasks")[0]
    assert len(attempts) == tasks, "every task has its attempts"
    for task_id, mine in attempts.items():
        outcomes = [a["outcome"] for a in mine]
        if task_id in in_flight:
            assert outcomes[-2:] == ["lost", "done"] and outcomes.count("done") == 1, (task_id, outcomes)
            killed = next(a for a in mine if a["id"] == in_flight[task_id])
            assert killed["outcome"] == "lost" and "stopped before this task finished" in killed["message"]
        else:
            assert outcomes == ["done"], (task_id, outcomes)
    assert any(a[0]["kind"] == "join" for a in attempts.values()), "the clips were split into segments"
    for item_id in done_before:  # done before the kill: not touched after it
        assert all(a["id"] <= last_attempt for mine in attempts.values() for a in mine if a["item_id"] == item_id)
    (losses,) = query(ledger, "SELECT SUM(input_failures) + SUM(crashes), SUM(infra_losses) FROM tasks")
    assert tuple(losses) == (0, len(in_flight))

    # The API says the same: one watch job, every item done, watching without error.
    assert listed["total"] == 1
    assert detail["items"].get("done") == len(expected)
    assert sum(detail["items"].values()) == len(expected)
    assert detail["watch"]["last_error"] is None and detail["watch"]["polls"] > 0
