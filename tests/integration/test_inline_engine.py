"""The inline engine (`--engine inline`, worker threads in the job's process): the same outputs as the
local engine, and the scheduler's policy under failures that ops script in-process (a count of calls in
the op itself, impossible across processes): retries up to the limit, a full disk retried without using
up attempts, an allocation refused under the cap failing as `limit:memory`, a hang killed and failed."""

from __future__ import annotations

import errno
import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from media_checks import decoded_pts, mean_abs_diff, packet_payloads, rgb_frames, streams_of_kind

from framefleet.engines.inline import hung_workers
from framefleet.errors import OpError
from framefleet.jobs.directory import open_ledger
from framefleet.jobs.reads import LedgerReads
from framefleet.jobs.run import run
from framefleet.jobs.spec import JobSpec
from framefleet.ops.base import Op
from framefleet.pipeline import Pipeline
from framefleet.processing.batch import FrameBatch
from framefleet.settings import EngineOptions, RetryPolicy, RunSettings

FAST = RetryPolicy(max_attempts=3, max_crashes=2, backoff_seconds=0.01)
INLINE = RunSettings(engine="inline", retry=FAST)
INLINE_TWO = RunSettings(engine="inline", options=EngineOptions(workers=2), retry=FAST)
TINY = dict(width=64, height=48, frames=12, gop=4, audio=("aac",))


CALLS: Counter = Counter()
"""Calls of each scripted op so far (by key): the workers are threads of this process, so they share it."""
CALLS_LOCK = threading.Lock()


@dataclass(kw_only=True)
class ScriptedOp(Op):
    """Identity that raises `failure` on the first batch of a video `width` pixels wide, the first `times`
    times that batch comes (once an attempt)."""

    name = "scripted"
    failure: str = "op"
    times: int = 1
    width: int = 96
    key: str = ""
    """Which count in CALLS is this op's (one per test)."""

    def process(self, batch: FrameBatch) -> FrameBatch:
        if batch.frames.shape[2] != self.width or batch.index != 0:
            return batch
        with CALLS_LOCK:
            CALLS[self.key] += 1
            if CALLS[self.key] > self.times:
                return batch
        if self.failure == "disk":
            raise OSError(errno.ENOSPC, "No space left on device")
        if self.failure == "memory":
            raise MemoryError
        raise OpError("scripted failure")


@pytest.fixture
def tree(clip_factory, tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(clip_factory("inline-good.mp4", **TINY), folder / "good.mp4")
    shutil.copy(clip_factory("inline-wide.mp4", **{**TINY, "width": 96}), folder / "wide.mp4")
    return folder


def attempts_of(job_dir: Path, name: str) -> list[tuple[str, str, str | None]]:
    ledger = open_ledger(job_dir)
    try:
        item = next(item for item in ledger.items() if item.uri.endswith(name))
        return [(a["kind"], a["outcome"], a["error_type"]) for a in LedgerReads(ledger).attempts(item.id)]
    finally:
        ledger.close()


def audio_packets(path: Path) -> list[bytes]:
    return [packet for index in streams_of_kind(path, "audio") for packet in packet_payloads(path, index)]


def test_the_inline_engine_writes_what_the_local_engine_writes(tree, tmp_path):
    pipeline = Pipeline.from_options({"op": "identity"})
    inline = run(JobSpec([str(tree)], tmp_path / "inline", pipeline, INLINE_TWO))
    local = run(JobSpec([str(tree)], tmp_path / "local", pipeline,
                        RunSettings(options=EngineOptions(workers=2), retry=FAST)))
    assert inline.exit_code == local.exit_code == 0 and inline.counts["done"] == 2
    for name in ("good.mp4", "wide.mp4"):
        inline_out, local_out = tmp_path / "inline" / name, tmp_path / "local" / name
        assert decoded_pts(inline_out) == decoded_pts(local_out) == decoded_pts(tree / name)
        assert audio_packets(inline_out) == audio_packets(local_out) == audio_packets(tree / name)  # copied
        # the same pictures, as far from the source's: an idle worker's cores may give a lone task's encoder
        # more threads, and x264's choices differ with its thread count, so compare with the source
        source = rgb_frames(tree / name)
        errors = [(mean_abs_diff(a, s), mean_abs_diff(b, s)) for a, b, s in
                  zip(rgb_frames(inline_out), rgb_frames(local_out), source, strict=True)]
        assert all(abs(a - b) < 1.0 and max(a, b) < 8.0 for a, b in errors), errors


@pytest.mark.parametrize("times, outcome", [(2, "done"), (3, "failed")])
def test_an_input_failure_is_retried_up_to_max_attempts(tree, tmp_path, times, outcome):
    op = ScriptedOp(times=times, key=str(tmp_path))
    result = run(JobSpec([str(tree)], tmp_path / "out", Pipeline(ops=(op,)), INLINE_TWO))
    segments = [a for a in attempts_of(result.job_dir, "wide.mp4") if a[0] == "segment"]
    assert [a[1] for a in segments] == ["input_error"] * min(times, 3) + (["done"] if outcome == "done" else [])
    assert {a[2] for a in segments if a[1] == "input_error"} == {"OpError"}
    assert result.counts["done"] == (2 if outcome == "done" else 1)
    assert (tmp_path / "out" / "wide.mp4").exists() == (outcome == "done")


def test_a_full_disk_is_retried_without_using_up_the_items_attempts(tree, tmp_path):
    pipeline = Pipeline(ops=(ScriptedOp(failure="disk", times=5, key=str(tmp_path)),))
    result = run(JobSpec([str(tree)], tmp_path / "out", pipeline, INLINE))
    assert result.exit_code == 0 and result.counts["done"] == 2
    segments = [a for a in attempts_of(result.job_dir, "wide.mp4") if a[0] == "segment"]
    assert segments == [("segment", "lost", "DiskFullError")] * 5 + [("segment", "done", None)]
    assert decoded_pts(tmp_path / "out" / "wide.mp4") == decoded_pts(tree / "wide.mp4")


def test_an_allocation_refused_under_the_cap_fails_the_item_as_limit_memory(tree, tmp_path):
    pipeline = Pipeline(ops=(ScriptedOp(failure="memory", times=9, key=str(tmp_path)),))
    result = run(JobSpec([str(tree)], tmp_path / "out", pipeline, INLINE))
    assert result.exit_code == 3
    (failure,) = result.failures
    assert failure.error_type == "limit:memory" and "memory_mb" in failure.error


RELEASE = threading.Event()
"""Set when a test ends: the threads its hung workers left behind return, so this process can exit."""


@dataclass(kw_only=True)
class HangOp(Op):
    """Never returns from a batch of a video `width` pixels wide, until the test ends."""

    name = "hang"
    width: int = 96

    def process(self, batch: FrameBatch) -> FrameBatch:
        if batch.frames.shape[2] == self.width:
            RELEASE.wait()
        return batch


@pytest.fixture
def released():
    RELEASE.clear()
    yield
    RELEASE.set()


def test_a_hung_task_is_killed_retried_and_failed_as_a_hang(tree, tmp_path, released):
    options = EngineOptions(workers=2, hang_timeout=1.0, poll_seconds=0.1)
    settings = RunSettings(engine="inline", options=options, retry=FAST)
    result = run(JobSpec([str(tree)], tmp_path / "out", Pipeline(ops=(HangOp(),)), settings))
    assert result.counts == {"pending": 0, "running": 0, "done": 1, "failed": 1}
    (failure,) = result.failures
    assert failure.error_type == "limit:time" and "hung 2 times" in failure.error
    assert decoded_pts(tmp_path / "out" / "good.mp4") == decoded_pts(tree / "good.mp4")
    assert hung_workers() == 2  # both attempts' threads are still in the op


def test_the_cli_exits_when_inline_workers_hang_forever(tree, tmp_path):
    """A thread cannot be killed and the interpreter waits for a task's threads at exit: the CLI must not."""
    done = subprocess.run([sys.executable, "-m", "framefleet", "run", str(tree), "-o", str(tmp_path / "out"),
                           "--op", "job_ops:SleepForeverOp", "--engine", "inline", "--hang-timeout", "1",
                           "--max-attempts", "1", "--json"],
                          cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 3, done.stderr
    assert json.loads(done.stdout)["counts"] == {"pending": 0, "running": 0, "done": 0, "failed": 2}
    assert re.search(r"leaving \d+ hung inline worker\(s\) behind", done.stderr)


def test_a_run_prints_every_threads_stack_on_sigusr1_and_goes_on(tree, tmp_path):
    out = tmp_path / "out"
    run_process = subprocess.Popen([sys.executable, "-m", "framefleet", "run", str(tree), "-o", str(out),
                                    "--op", "job_ops:SleepForeverOp", "--engine", "inline", "--hang-timeout", "60"],
                                   cwd=Path(__file__).parents[1], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / ".framefleet-job" / "ledger.sqlite").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)
        run_process.send_signal(signal.SIGUSR1)
        time.sleep(2)
        assert run_process.poll() is None  # still running
    finally:
        run_process.kill()
    stacks = run_process.communicate(timeout=30)[1]
    assert "most recent call first" in stacks and "in process" in stacks  # the hung op's frame among them
