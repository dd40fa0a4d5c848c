"""How `framefleet serve` starts, through the real process: it listens and holds its state folder before it
writes anything, so a second service on the same port or state folder says why in one `error:` line (exit 2)
and changes nothing; a service runs only the watch rules of its own configuration; a watch job's identity
leaves the interval out; and the console has a line per file taken, done and failed.

Each service runs as a subprocess on a loopback port with a state folder of its own (tmp); what is checked
comes from outside it: its console, the registry and ledgers read with plain SQLite, the API, the folders.
"""

from __future__ import annotations

import hashlib
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from framefleet.service.config import ServiceConfig
from framefleet.service.registry import Registry
from framefleet.service.runtime import Service
from framefleet.service.watcher import WatchRule

CLI = [sys.executable, "-c", "from framefleet.cli import main; main()"]
TINY = {"width": 64, "height": 48, "frames": 6, "gop": 4, "bframes": 0}
INTERVAL = 0.5
TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], Any], *, what: str, timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)
    return value


def serve_args(root: Path, port: int, *, source: str = "in", output: str = "out",
               interval: float = INTERVAL) -> list[str]:
    """A service on `port` over `root/state`, watching `root/source` into `root/output` with the identity op."""
    pipeline = root / "identity.yaml"
    pipeline.write_text("op: identity\n")
    return ["serve", "--watch", str(root / source), "-o", str(root / output), "--pipeline", str(pipeline),
            "--interval", str(interval), "--workers", "1", "--state-dir", str(root / "state"),
            "--port", str(port), "--allow", str(root)]


class Serve:
    """One running `framefleet serve` (a session of its own, so its workers end with it)."""

    def __init__(self, root: Path, name: str, args: list[str]) -> None:
        self.port = int(args[args.index("--port") + 1])
        self.log = root / f"{name}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([*CLI, *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def console(self) -> str:
        return self.log.read_text(errors="replace")

    def call(self, path: str, body: dict | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def watch_jobs(self) -> list[dict]:
        """The watch jobs the API lists, once it answers."""
        def listed():
            if self.proc.poll() is not None:
                pytest.fail(f"framefleet serve exited ({self.proc.returncode}):\n{self.console()}")
            try:
                return self.call("/api/jobs?kind=watch")["jobs"]
            except OSError:
                return None
        return wait_for(listed, what="the API to list the watch jobs")

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
        self.proc.wait(timeout=60)


def run_serve(args: list[str], timeout: float = 30) -> tuple[int, list[str]]:
    """Run a `framefleet serve` that must exit at once: its exit code and its console lines."""
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"the second framefleet serve kept running:\n{output}")
    return proc.returncode, output.strip().splitlines()


def query(path: Path, sql: str) -> list[tuple]:
    db = sqlite3.connect(path, timeout=30)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def registry_rows(root: Path) -> list[tuple]:
    return query(root / "state" / "registry.sqlite", "SELECT * FROM jobs ORDER BY seq")


def attempts(root: Path, job_id: str) -> list[tuple]:
    return query(root / "state" / "jobs" / job_id / "ledger.sqlite", "SELECT * FROM attempts ORDER BY id")


def items_done(serve: Serve, job_id: str, count: int) -> bool:
    items = serve.call(f"/api/jobs/{job_id}")["items"]
    return items.get("done", 0) + items.get("failed", 0) == count


@pytest.fixture(scope="module")
def clip(clip_factory) -> Path:
    return clip_factory("serve-start.mp4", **TINY)


@pytest.fixture(scope="module")
def first(tmp_path_factory, clip) -> Iterator[tuple[Serve, Path, str]]:
    """A running service that has processed one good and one corrupt file: (service, root, its watch job)."""
    root = tmp_path_factory.mktemp("serve-start")
    (root / "in").mkdir()
    serve = Serve(root, "first", serve_args(root, free_port()))
    try:
        (job,) = serve.watch_jobs()
        shutil.copyfile(clip, root / "in" / "a.mp4")
        (root / "in" / "b.mp4").write_bytes(b"not a video\n" * 64)
        wait_for(lambda: items_done(serve, job["id"], 2), what="the watched files to be processed")
        yield serve, root, job["id"]
    finally:
        serve.stop()


# -- a second service ----------------------------------------------------------------------------------


def assert_refused_and_nothing_changed(first: tuple[Serve, Path, str], args: list[str], clip: Path,
                                       message: str) -> None:
    serve, root, job_id = first
    (root / "in2").mkdir(exist_ok=True)
    shutil.copyfile(clip, root / "in2" / "c.mp4")
    rows, done = registry_rows(root), attempts(root, job_id)

    code, lines = run_serve(args)

    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), lines
    assert not any("serving" in line for line in lines)
    time.sleep(6 * INTERVAL)  # time for a rule the second service left behind to be taken up
    assert registry_rows(root) == rows, "the second service wrote to the registry"
    (listed,) = serve.watch_jobs()
    assert (listed["id"], listed["state"]) == (job_id, "running")
    assert not (root / "out2").exists(), "the second service's rule was run"
    assert attempts(root, job_id) == done, "a file was processed again"


def test_a_second_serve_on_a_used_port_exits_2_on_one_line_and_changes_nothing(first, clip):
    serve, root, _ = first
    assert_refused_and_nothing_changed(
        first, serve_args(root, serve.port, source="in2", output="out2"), clip,
        f"cannot listen on 127.0.0.1:{serve.port}: address already in use (another framefleet serve? choose --port)")


def test_a_second_serve_on_the_same_state_folder_exits_2_on_one_line_and_changes_nothing(first, clip):
    _, root, _ = first
    assert_refused_and_nothing_changed(
        first, serve_args(root, free_port(), source="in2", output="out2"), clip,
        f"{root / 'state'}: another framefleet serve is using this state folder")


def test_a_watch_record_that_is_not_in_the_configuration_is_never_run(first, clip):
    serve, root, job_id = first
    (root / "in3").mkdir()
    shutil.copyfile(clip, root / "in3" / "d.mp4")
    spec = {"source": str(root / "in3"), "output": str(root / "out3"), "pipeline": {"op": "identity"},
            "interval": INTERVAL}
    db = sqlite3.connect(root / "state" / "registry.sqlite", timeout=30)
    try:  # as a service with another configuration (or an older one) would have left it
        with db:
            db.execute("INSERT INTO jobs (id, kind, name, state, spec, created, updated) "
                       "VALUES ('watch-other-0123abcd', 'watch', 'other', 'running', ?, 0, 0)", (json.dumps(spec),))
    finally:
        db.close()
    time.sleep(12 * INTERVAL)
    assert not (root / "out3").exists()
    assert not (root / "state" / "jobs" / "watch-other-0123abcd").exists()
    assert serve.call(f"/api/jobs/{job_id}")["state"] == "running"


# -- the console ---------------------------------------------------------------------------------------


def test_the_console_has_a_line_per_file_taken_done_and_failed(first, clip):
    serve, root, _ = first
    (root / "batch").mkdir()
    shutil.copyfile(clip, root / "batch" / "e.mp4")
    job = serve.call("/api/jobs", {"inputs": [str(root / "batch")], "output": str(root / "batch-out"),
                                   "pipeline": {"op": "identity"}})
    wait_for(lambda: serve.call(f"/api/jobs/{job['id']}")["state"] == "finished", what="the submitted job to finish")
    wait_for(lambda: f"{job['id']}: done" in serve.console(), what="the submitted job's done line", timeout=10)
    src, out = root / "in", root / "out"
    wait_for(lambda: f"watch: failed {src / 'b.mp4'}" in serve.console() and f"watch: done {src / 'a.mp4'}"
             in serve.console(), what="the watch job's lines", timeout=60)
    lines = serve.console().splitlines()
    assert f"watch: took {src / 'a.mp4'}" in lines
    assert any(line.startswith(f"watch: done {src / 'a.mp4'} -> {out / 'a.mp4'} ({TINY['frames']} frames, ")
               and line.endswith(" s)") for line in lines), lines
    assert f"watch: took {src / 'b.mp4'}" in lines
    assert any(line.startswith(f"watch: failed {src / 'b.mp4'}: ") and "corrupt video" in line for line in lines)
    assert f"{job['id']}: took {root / 'batch' / 'e.mp4'}" in lines
    assert any(line.startswith(f"{job['id']}: done {root / 'batch' / 'e.mp4'} -> {root / 'batch-out' / 'e.mp4'} ")
               for line in lines), lines
    for name in ("a.mp4", "b.mp4"):  # once each
        assert sum(line.startswith(f"watch: took {src / name}") for line in lines) == 1, lines


# -- a watch job's identity ------------------------------------------------------------------------------


def test_changing_the_interval_between_two_starts_reprocesses_nothing(tmp_path, clip):
    (tmp_path / "in").mkdir()
    shutil.copyfile(clip, tmp_path / "in" / "a.mp4")
    before = Serve(tmp_path, "before", serve_args(tmp_path, free_port(), interval=INTERVAL))
    try:
        (job,) = before.watch_jobs()
        wait_for(lambda: items_done(before, job["id"], 1), what="the file to be processed")
    finally:
        before.stop(signal.SIGTERM)
    done, written = attempts(tmp_path, job["id"]), (tmp_path / "out" / "a.mp4").stat().st_mtime_ns

    after = Serve(tmp_path, "after", serve_args(tmp_path, free_port(), interval=0.3))
    try:
        listed = after.watch_jobs()
        assert [j["id"] for j in listed] == [job["id"]], "a new interval made a new watch job"
        polls = after.call(f"/api/jobs/{job['id']}")["watch"]["polls"]
        wait_for(lambda: after.call(f"/api/jobs/{job['id']}")["watch"]["polls"] >= polls + 5,
                 what="five more looks at the folder")
    finally:
        after.stop()
    assert attempts(tmp_path, job["id"]) == done
    assert (tmp_path / "out" / "a.mp4").stat().st_mtime_ns == written
    registry = Registry(tmp_path / "state" / "registry.sqlite")
    (record,) = registry.named("watch", "watch")
    registry.close()
    assert record.spec["interval"] == 0.3


def test_a_watch_job_whose_id_hashed_its_interval_is_adopted_with_the_new_interval(tmp_path):
    """A registry from before the id left the interval out: the rule goes on with its job and ledger."""
    (tmp_path / "in").mkdir()
    old = WatchRule(name="uploads", source=str(tmp_path / "in"), output=str(tmp_path / "out"),
                    pipeline={"op": "identity"}, interval=10.0)
    legacy_id = f"watch-uploads-{hashlib.sha256(json.dumps(old.spec(), sort_keys=True).encode()).hexdigest()[:8]}"
    (tmp_path / "state").mkdir()
    registry = Registry(tmp_path / "state" / "registry.sqlite")
    registry.add("watch", "uploads", old.spec(), job_id=legacy_id, state="running")
    registry.close()

    new = WatchRule(name="uploads", source=old.source, output=old.output, pipeline=old.pipeline, interval=2.0)
    service = Service(ServiceConfig(state_dir=tmp_path / "state", watch=(new,)))
    service.start()
    try:
        records, total = service.registry.list(kind="watch")
        assert total == 1 and records[0].id == legacy_id
        assert (records[0].state, records[0].spec) == ("running", new.spec())
    finally:
        service.stop()
