"""A bounded load test of a real `framefleet serve` on loopback: steady submissions and status polls.

For FRAMEFLEET_LOAD_SECONDS (default 150) seconds the test submits 1,000 jobs a minute (each with its own
Idempotency-Key) and polls the status of an accepted job 1,000 times a minute, on a fixed schedule shared
by `CONCURRENCY` client tasks (an async httpx client). Every response is recorded. Each job is the
identity op over a folder holding one tiny clip; the service (one job at a time, one worker) works through
the queue in the background meanwhile. Then: no error of any kind, no lost submission (every accepted id
is listed, and the registry holds exactly as many jobs as were submitted), and a latency summary. The
service is stopped with SIGTERM and must exit within 60 s.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

DURATION = float(os.environ.get("FRAMEFLEET_LOAD_SECONDS", "150"))
PER_MINUTE = 1000
"""Submissions a minute, and as many status polls."""
CONCURRENCY = 8
REQUEST_TIMEOUT = 30.0
STOP_SECONDS = 60
TOKEN = secrets.token_hex(16)
CLI = [sys.executable, "-c", "from framefleet.cli import main; main()"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(int(DURATION) + 420)]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    state_dir: Path
    allowed: Path
    log: Path


@dataclass(frozen=True)
class Record:
    kind: str
    """submit or poll"""
    status: int | None
    latency: float
    lag: float
    """How late the request left, against its slot in the schedule."""
    error: str | None = None
    job_id: str | None = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children(pid: int) -> set[int]:
    """The child processes of `pid` (Linux /proc; empty elsewhere)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found |= {int(child) for child in (task / "children").read_text().split()}
        except OSError:
            pass
    return found


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


def log_tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


@pytest.fixture
def server(tmp_path, clip_factory) -> Iterator[Server]:
    """`framefleet serve` on a free loopback port (token, allow=tmp folder, one job at a time, one worker);
    stopped with SIGTERM at the end, which it must obey within `STOP_SECONDS`."""
    allowed = tmp_path / "allowed"
    (allowed / "in").mkdir(parents=True)
    clip = clip_factory("load-tiny.mp4", width=64, height=48, frames=4, gop=4, bframes=0)
    (allowed / "in" / "clip.mp4").write_bytes(clip.read_bytes())
    port, state_dir, log = free_port(), tmp_path / "state", tmp_path / "serve.log"
    command = [*CLI, "serve", "--host", "127.0.0.1", "--port", str(port), "--state-dir", str(state_dir),
               "--allow", str(allowed), "--max-jobs", "1", "--workers", "1"]
    with log.open("w") as sink:
        process = subprocess.Popen(command, env={**os.environ, "FRAMEFLEET_TOKEN": TOKEN},
                                   stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"framefleet serve exited with {process.returncode}:\n{log_tail(log)}"
            try:
                if httpx.get(f"{url}/healthz", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).is_success:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"framefleet serve did not answer within 60 s:\n{log_tail(log)}"
            time.sleep(0.2)
        yield Server(url, process, state_dir, allowed, log)
    finally:
        workers = children(process.pid)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"framefleet serve did not exit within {STOP_SECONDS} s of SIGTERM:\n{log_tail(log)}")
        stopped_in = time.monotonic() - started
        time.sleep(1.0)
        left = sorted(pid for pid in workers if alive(pid))
        print(f"framefleet serve exited with {code} {stopped_in:.1f} s after SIGTERM; of its {len(workers)} "
              f"child processes, {len(left)} outlived it")
        # uvicorn shuts down gracefully, then raises the signal it caught again: -SIGTERM is its normal end
        assert code in (0, -signal.SIGTERM), f"exit status {code}:\n{log_tail(log)}"
        assert not left, f"framefleet serve left processes behind: {left}"
        assert "Traceback" not in log.read_text(errors="replace"), log_tail(log, 80)


async def run_load(server: Server, duration: float) -> tuple[list[Record], float]:
    """Submissions and polls, alternating on one schedule of 2 x `PER_MINUTE` requests a minute."""
    interval = 60.0 / (2 * PER_MINUTE)
    slots = iter(range(int(duration / interval)))
    accepted: list[str] = []
    records: list[Record] = []
    loop = asyncio.get_running_loop()
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"},
                                 timeout=REQUEST_TIMEOUT, limits=limits) as client:
        start = loop.time()

        async def send(slot: int, lag: float) -> Record:
            kind = "submit" if slot % 2 == 0 else "poll"
            sent = loop.time()
            try:
                if kind == "submit":
                    body = {"inputs": [str(server.allowed / "in")], "output": str(server.allowed / "out" / str(slot)),
                            "pipeline": {"op": "identity"}, "name": f"load-{slot}"}
                    response = await client.post("/api/jobs", json=body,
                                                 headers={"Idempotency-Key": str(uuid.uuid4())})
                    job_id = response.json()["id"] if response.status_code == 202 else None
                    if job_id is not None:
                        accepted.append(job_id)
                else:
                    job_id = random.choice(accepted) if accepted else None
                    response = await client.get(f"/api/jobs/{job_id}" if job_id else "/api/jobs")
                    if job_id is not None and response.status_code == 200:
                        assert response.json()["id"] == job_id
                return Record(kind, response.status_code, loop.time() - sent, lag, job_id=job_id)
            except (httpx.HTTPError, ValueError, KeyError, AssertionError) as exc:
                return Record(kind, None, loop.time() - sent, lag, error=f"{type(exc).__name__}: {exc}")

        async def client_task() -> None:
            for slot in slots:  # shared: each task takes the next slot of the schedule
                due = start + slot * interval
                await asyncio.sleep(max(0.0, due - loop.time()))
                records.append(await send(slot, loop.time() - due))

        await asyncio.gather(*(client_task() for _ in range(CONCURRENCY)))
        return records, loop.time() - start


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def summary(records: list[Record], elapsed: float, health: dict) -> str:
    head = (f"load: {len(records)} requests in {elapsed:.1f} s ({len(records) / elapsed:.1f}/s, "
            f"{CONCURRENCY} client tasks); jobs now {health['jobs']}")
    lines = [head]
    for kind in ("submit", "poll"):
        mine = [r for r in records if r.kind == kind]
        latencies = [r.latency * 1000 for r in mine]
        lags = [r.lag * 1000 for r in mine]
        lines.append(f"  {kind:6} n={len(mine):5}  latency ms p50={percentile(latencies, 50):7.1f} "
                     f"p95={percentile(latencies, 95):7.1f} max={max(latencies):7.1f}  "
                     f"schedule lag ms p95={percentile(lags, 95):7.1f} max={max(lags):7.1f}")
    return "\n".join(lines)


def listed_ids(server: Server) -> tuple[list[str], int]:
    """Every job id the API lists (page by page), and the total it reports."""
    ids: list[str] = []
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as client:
        while True:
            page = client.get("/api/jobs", params={"limit": 1000, "offset": len(ids)})
            assert page.status_code == 200, page.text
            body = page.json()
            ids += [job["id"] for job in body["jobs"]]
            if not body["jobs"] or len(ids) >= body["total"]:
                return ids, body["total"]


def test_steady_submissions_and_polls_lose_nothing_and_never_fail(server, capsys):
    records, elapsed = asyncio.run(run_load(server, DURATION))
    health = httpx.get(f"{server.url}/healthz", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).json()
    report = summary(records, elapsed, health)
    with capsys.disabled():
        print("\n" + report)

    submits = [r for r in records if r.kind == "submit"]
    polls = [r for r in records if r.kind == "poll"]
    expected = int(DURATION / (60.0 / (2 * PER_MINUTE)))
    assert len(records) == expected and abs(len(submits) - len(polls)) <= 1
    errors = [r for r in records if r.error is not None]
    assert not errors, f"{len(errors)} requests failed, e.g. {errors[:5]}"
    assert [r for r in submits if r.status != 202] == [], "a submission was not accepted with 202"
    assert [r for r in polls if r.status != 200] == [], "a status poll did not answer 200"
    assert elapsed < DURATION + 30, f"the schedule slipped: {elapsed:.0f} s for {DURATION:.0f} s of load"

    accepted = [r.job_id for r in submits]
    assert len(set(accepted)) == len(accepted) == len(submits)
    ids, total = listed_ids(server)
    assert total == len(accepted) and len(ids) == total
    assert set(ids) == set(accepted), "an accepted submission is missing from GET /api/jobs"
    db = sqlite3.connect(f"file:{server.state_dir / 'registry.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == len(submits)
    finally:
        db.close()
    assert sum(health["jobs"].values()) == len(submits)
    assert health["jobs"]["error"] == 0 and health["jobs"]["cancelled"] == 0
    assert health["jobs"]["finished"] >= 1, "the service finished no job while under load"
