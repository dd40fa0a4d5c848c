"""Batch jobs end to end: `framefleet.jobs.run.run` / `retry` and the `framefleet run|status|failures|retry`
commands, with real worker processes, killed workers, killed and stopped schedulers, hangs and crashes.

What is checked comes from outside framefleet where it can: the media from PyAV (tests/media_checks.py),
the job's history from its ledger (one attempt row per claim of a task). Clips are 64x48 to 96x64 and a
few frames long; the op is the identity, or a deliberately misbehaving one from tests/job_ops.py (worker
processes are spawned, so their ops must be importable there). Tasks that must take a while (to be
killed or stopped in the middle) use `SlowOp`, which sleeps per batch.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import av
import media_checks
import pytest
from job_ops import CrashOp, EnvironmentOp, SleepForeverOp, SlowOp
from typer.testing import CliRunner, Result

from framefleet.cli import app
from framefleet.jobs.directory import LEDGER_NAME, open_ledger
from framefleet.jobs.manifest import MANIFEST_SUFFIX
from framefleet.jobs.reads import LedgerReads
from framefleet.jobs.run import run
from framefleet.jobs.spec import JobSpec
from framefleet.jobs.store import Ledger
from framefleet.pipeline import Pipeline
from framefleet.settings import EngineOptions, RetryPolicy, RunSettings
from framefleet.video.synth import ClipSpec, write_clip

TESTS_DIR = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
IDENTITY = {"op": "identity"}
FAST_RETRIES = RetryPolicy(backoff_seconds=0.05)
TWO_WORKERS_FAST = RunSettings(options=EngineOptions(workers=2), retry=FAST_RETRIES)
# The framefleet command; tests/ is on its PYTHONPATH, so a --pipeline file may say `op: job_ops:SlowOp`.
JOB_CLI = [sys.executable, "-c", "from framefleet.cli import main; main()"]
TINY = dict(width=64, height=48, gop=4, bframes=0)


# -- helpers ----------------------------------------------------------------------------------------


def identity() -> Pipeline:
    return Pipeline.from_options(IDENTITY)


@contextmanager
def ledger_at(job_dir: Path) -> Iterator[Ledger]:
    ledger = open_ledger(job_dir)
    try:
        yield ledger
    finally:
        ledger.close()


def query(job_dir: Path, sql: str, *args: object) -> list[sqlite3.Row]:
    """Read the ledger with a plain SQLite connection (safe while a job writes it)."""
    db = sqlite3.connect(Path(job_dir) / LEDGER_NAME, timeout=30)
    db.row_factory = sqlite3.Row
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def attempts_by_task(ledger: Ledger, item_id: int | None = None) -> dict[int, list[dict]]:
    tasks: dict[int, list[dict]] = defaultdict(list)
    for attempt in LedgerReads(ledger).attempts(item_id):
        tasks[attempt["task_id"]].append(attempt)
    return dict(tasks)


def assert_each_task_done_exactly_once(ledger: Ledger, item_id: int, *, retried_ok: bool = False) -> None:
    """Every task of the item has exactly one 'done' attempt, and it is the task's last attempt; without
    `retried_ok` it is also its only one."""
    tasks = attempts_by_task(ledger, item_id)
    assert tasks, f"item {item_id} has no attempts"
    for task_id, attempts in tasks.items():
        outcomes = [a["outcome"] for a in attempts]
        assert outcomes.count("done") == 1 and outcomes[-1] == "done", (item_id, task_id, outcomes)
        if not retried_ok:
            assert outcomes == ["done"], (item_id, task_id, outcomes)


def temporaries(root: Path) -> list[Path]:
    """Every `.part-` temporary anywhere under `root`, hidden folders (the job dir's parts/) included."""
    found = []
    for folder, _, files in os.walk(root):
        found += [Path(folder, name) for name in files if ".part-" in name]
    return found


def output_files(out_root: Path) -> set[str]:
    """Relative paths of the files under the output root, outside the job directory, less the outputs'
    manifests (`.NAME.framefleet.json`, tests/unit/test_manifest.py)."""
    return {
        Path(folder, name).relative_to(out_root).as_posix()
        for folder, dirs, files in os.walk(out_root)
        for name in files
        if ".framefleet-job" not in Path(folder).relative_to(out_root).parts
        and not (name.startswith(".") and name.endswith(MANIFEST_SUFFIX))
    }


def assert_same_frames(source: Path, output: Path) -> None:
    """The output decodes completely, with the same frames at the same times as the source."""
    assert output.is_file(), f"missing output {output}"
    assert media_checks.video_time_base(output) == media_checks.video_time_base(source), output
    assert media_checks.decoded_pts(output) == media_checks.decoded_pts(source), output


def scramble_video_packets(path: Path, *, keep_first: bool = False, seed: int = 7) -> None:
    """Overwrite the bytes of the video packets of `path` (all, or all but the first) with random bytes;
    the container and its index stay intact."""
    with av.open(str(path)) as container:
        spans = [(p.pos, p.size) for p in container.demux(container.streams.video[0]) if p.size]
    rng = random.Random(seed)
    data = bytearray(path.read_bytes())
    for pos, size in spans[1:] if keep_first else spans:
        data[pos:pos + size] = rng.randbytes(size)
    path.write_bytes(bytes(data))


def cli(*args: object, input: str | None = None) -> Result:
    """The framefleet command in-process (stdout and stderr captured separately)."""
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def stdout_json(result: Result | str):
    text = result if isinstance(result, str) else result.stdout
    return json.loads(ANSI.sub("", text))


def stderr_lines(result: Result) -> list[str]:
    return [line for line in ANSI.sub("", result.stderr).splitlines() if line.strip()]


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), env.get("PYTHONPATH", "")) if p)
    env["COLUMNS"] = "200"
    return env


def descendant_pids(pid: int) -> set[int]:
    """Live descendants of process `pid`, from /proc."""
    children = child_pids(pid)
    return children.union(*(descendant_pids(child) for child in children))


def child_pids(pid: int) -> set[int]:
    """Live children of process `pid`, from /proc."""
    children: set[int] = set()
    tasks = Path(f"/proc/{pid}/task")
    try:
        threads = list(tasks.iterdir())
    except OSError:  # gone meanwhile
        return children
    for task in threads:
        try:
            children.update(int(n) for n in (task / "children").read_text().split())
        except (OSError, ValueError):
            pass
    if children or (tasks / str(pid) / "children").exists():
        return children
    for stat in Path("/proc").glob("[0-9]*/stat"):  # kernels without /proc/PID/task/TID/children
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            children.add(int(stat.parent.name))
    return children


def wait_for(condition, *, timeout: float = 120.0, what: str = "the condition", proc=None) -> None:
    """Poll `condition` until it holds; fail if it does not within `timeout` s (or `proc` ends first)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def segment_running_after(job_dir: Path, items_done: int) -> bool:
    """Whether the ledger shows at least `items_done` items done and a segment task running."""
    if not (job_dir / LEDGER_NAME).exists():
        return False
    try:
        done = query(job_dir, "SELECT COUNT(*) FROM items WHERE state = 'done'")[0][0]
        running = query(job_dir, "SELECT COUNT(*) FROM tasks WHERE state = 'running' AND kind = 'segment'")
    except sqlite3.OperationalError:  # the schema is being created
        return False
    return done >= items_done and running[0][0] >= 1


def losses(job_dir: Path) -> tuple[int, int, int]:
    """(input failures, crashes and hangs, infrastructure losses) summed over the job's tasks."""
    (row,) = query(job_dir, "SELECT SUM(input_failures), SUM(crashes), SUM(infra_losses) FROM tasks")
    return tuple(row)


# -- shared media ------------------------------------------------------------------------------------

GOOD_VARIANTS: dict[str, dict] = {
    "plain.mp4": dict(frames=6),
    "bframes.mp4": dict(frames=10, bframes=2),
    "vfr.mkv": dict(frames=8, vfr=True),
    "ntsc.mov": dict(frames=7, rate=Fraction(30000, 1001)),
    "audio.mp4": dict(frames=9, audio=("aac",)),
    "wide.mkv": dict(frames=6, width=96, height=64),
}


@pytest.fixture(scope="module")
def variants(clip_factory) -> dict[str, Path]:
    return {name: clip_factory(f"job-{name}", **{**TINY, **fields}) for name, fields in GOOD_VARIANTS.items()}


@pytest.fixture(scope="module")
def slow_clip(clip_factory) -> Path:
    """16 frames: 8 batches of SlowOp's 2 frames."""
    return clip_factory("job-slow.mp4", **TINY, frames=16)


def slow_pipeline_file(folder: Path, delay: float = 0.06) -> Path:
    path = folder / "slow.yaml"
    path.write_text(f"op: job_ops:SlowOp\nbatch_size: 2\ndelay: {delay}\n")
    return path


def copy_tree(clip: Path, root: Path, count: int) -> list[Path]:
    """`count` copies of `clip` under `root`, in two folders."""
    paths = []
    for i in range(count):
        target = root / ("x" if i % 2 else "y/z") / f"v{i:02d}.mp4"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clip, target)
        paths.append(target)
    return paths


# -- 1. a big job with bad inputs ------------------------------------------------------------------


def test_a_job_of_many_videos_does_each_good_one_once_and_fails_each_bad_one_clearly(variants, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    folders = ["", "a", "a/b", "c/d/e", "with space"]
    good: dict[str, Path] = {}  # relpath -> the variant it copies
    for i in range(42):
        name = list(GOOD_VARIANTS)[i % len(GOOD_VARIANTS)]
        rel = "/".join(p for p in (folders[i % len(folders)], f"v{i:02d}-{name}") if p)
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(variants[name], src / rel)
        good[rel] = variants[name]
    bad = {
        "a/b/truncated.mp4": "corrupt video",
        "c/zero.mp4": "empty",
        "c/d/e/notes.mp4": "corrupt video",
        "with space/scrambled.mp4": "corrupt video",
    }
    damaged = "a/damaged-after-first-frame.mp4"  # every frame that decodes is kept, and the damage reported
    whole = (src / "a/b/truncated.mp4")
    shutil.copyfile(variants["bframes.mp4"], whole)
    whole.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    (src / "c/zero.mp4").write_bytes(b"")
    (src / "c/d/e/notes.mp4").write_text("these are notes, not a video\n" * 20)
    shutil.copyfile(variants["plain.mp4"], src / "with space/scrambled.mp4")
    scramble_video_packets(src / "with space/scrambled.mp4")
    shutil.copyfile(variants["plain.mp4"], src / "a/damaged-after-first-frame.mp4")
    scramble_video_packets(src / "a/damaged-after-first-frame.mp4", keep_first=True)
    (src / "c/readme.txt").write_text("not a video, and not named like one\n")

    limits = RetryPolicy(max_attempts=3, backoff_seconds=0.05)
    settings = RunSettings(options=EngineOptions(workers=2), retry=limits)
    result = run(JobSpec([str(src)], out, identity(), settings))

    assert result.exit_code == 3
    assert result.counts == {"pending": 0, "running": 0, "done": len(good) + 1, "failed": len(bad)}
    assert result.skipped == [(src / "c/readme.txt").as_posix()]
    with ledger_at(result.job_dir) as ledger:
        items = {Path(item.uri).relative_to(src).as_posix(): item for item in ledger.items()}
        assert set(items) == set(good) | set(bad) | {damaged}
        for rel in good:
            assert items[rel].state == "done", (rel, items[rel].error)
            assert_each_task_done_exactly_once(ledger, items[rel].id)

        failures = {Path(f.uri).relative_to(src).as_posix(): f for f in LedgerReads(ledger).failures()}
        assert set(failures) == set(bad)
        for rel, cause in bad.items():
            failure = failures[rel]
            error = failure.error
            assert cause in error and str(src / rel) in error, error
            assert "\n" not in error and "Traceback" not in error, error
            assert failure.error_type in {"CorruptVideoError", "NotAVideoError"}, failure
            assert failure.log_tail is None  # an input error, not a bug
            outcomes = [a["outcome"] for a in LedgerReads(ledger).attempts(failure.id)]
            # The file itself settles these errors: the failing task is not retried; other tasks (a probe that
            # worked) ran once.
            assert outcomes.count("input_error") == 1, (rel, outcomes)
            assert set(outcomes) <= {"input_error", "done"}, (rel, outcomes)
            assert failure.attempts == len(outcomes)
        tail_attempts = LedgerReads(ledger).attempts(items[damaged].id)
        assert [(a["kind"], a["outcome"]) for a in tail_attempts] == [("probe", "done"), ("segment", "done")]
        (report,) = LedgerReads(ledger).damaged()
        assert report.uri == (src / damaged).as_posix() and report.decode_errors > 0
        assert report.frames_claimed == media_checks.frame_count(variants["plain.mp4"])
    assert result.damaged == [report]

    # mirrored paths, nothing for the bad ones, nothing else; the damaged one holds what decodes
    assert output_files(out) == set(good) | {damaged}
    assert media_checks.decoded_pts(out / damaged) == media_checks.salvaged_pts(src / damaged)
    for rel, variant in good.items():
        assert_same_frames(variant, out / rel)
    for rel in (rel for rel, variant in good.items() if variant == variants["audio.mp4"]):
        (audio_out,) = media_checks.streams_of_kind(out / rel, "audio")
        assert media_checks.packet_payloads(out / rel, audio_out) == media_checks.packet_payloads(
            variants["audio.mp4"], media_checks.streams_of_kind(variants["audio.mp4"], "audio")[0])
    assert temporaries(out) == []


# -- 2. workers killed with SIGKILL mid-segment ----------------------------------------------------


class MidSegment(threading.Thread):
    """Calls `action(pid)` for worker processes (descendants of this process) early in a segment, `times` times.

    A worker counts as in the middle of a segment when its SlowOp beacon was written in the last 0.3 s
    for one of the first `max_index` frames: most of its segment is still to come. Each worker is picked
    at most once.
    """

    def __init__(self, beacons: Path, action, times: int, max_index: int = 4) -> None:
        super().__init__(daemon=True)
        self.beacons, self.action, self.times, self.max_index = beacons, action, times, max_index
        self.picked: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and len(self.picked) < self.times:
            for pid in sorted(descendant_pids(os.getpid()) - set(self.picked)):
                beacon = self.beacons / str(pid)
                try:
                    index = int(beacon.read_text())
                    age = time.time() - beacon.stat().st_mtime
                except (OSError, ValueError):
                    continue
                if index <= self.max_index and age < 0.3:
                    self.action(pid)
                    self.picked.append(pid)
                    break
            self.stop.wait(0.02)

    def __enter__(self) -> MidSegment:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join()


def test_workers_killed_mid_segment_are_infrastructure_losses_and_their_segments_rerun(clip_factory,
                                                                                       tmp_path):
    clip = clip_factory("job-24.mp4", **{**TINY, "frames": 24})  # 12 batches of 2 frames: about 1 s
    src, out, beacons = tmp_path / "in", tmp_path / "out", tmp_path / "beacons"
    beacons.mkdir()
    sources = copy_tree(clip, src, 5)
    pipeline = Pipeline(ops=(SlowOp(delay=0.08, beacon_dir=str(beacons)),))
    with MidSegment(beacons, lambda pid: os.kill(pid, signal.SIGKILL), times=3) as killer:
        result = run(JobSpec([str(src)], out, pipeline, TWO_WORKERS_FAST))

    assert len(killer.picked) == 3, "the workers were not killed as planned"
    assert result.exit_code == 0 and result.counts["done"] == len(sources)
    with ledger_at(result.job_dir) as ledger:
        attempts = LedgerReads(ledger).attempts()
        lost = [a for a in attempts if a["outcome"] == "lost"]
        assert len(lost) == len(killer.picked), [(a["kind"], a["outcome"]) for a in attempts]
        assert all(a["kind"] == "segment" and a["error_type"] == "WorkerKilled" for a in lost), lost
        for task_id in {a["task_id"] for a in lost}:  # each killed segment ran again, to the end
            mine = [a for a in attempts if a["task_id"] == task_id]
            assert [a["outcome"] for a in mine] == ["lost"] * (len(mine) - 1) + ["done"], mine
            assert mine[-1]["worker"] not in {a["worker"] for a in mine[:-1]}
        assert {a["outcome"] for a in attempts} == {"done", "lost"}
        for item in ledger.items():
            assert_each_task_done_exactly_once(ledger, item.id, retried_ok=True)
    assert losses(result.job_dir) == (0, 0, len(killer.picked))
    for source in sources:
        assert_same_frames(clip, out / source.relative_to(src))
    assert temporaries(out) == []


# -- 3. the whole `framefleet run` killed, then run again ---------------------------------------------


@pytest.mark.slow
def test_a_killed_run_resumes_without_redoing_done_items_or_leaving_partial_outputs(slow_clip, tmp_path):
    src, out, job = tmp_path / "in", tmp_path / "out", tmp_path / "job"
    sources = copy_tree(slow_clip, src, 10)
    command = [*JOB_CLI, "run", src, "-o", out, "--pipeline", slow_pipeline_file(tmp_path), "--workers", "2",
               "--job-dir", job, "--json"]
    command = [str(c) for c in command]
    with open(tmp_path / "first.log", "wb") as log:
        proc = subprocess.Popen(command, env=cli_env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            wait_for(lambda: segment_running_after(job, 3), what="three items done and a segment running",
                     proc=proc)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode == -signal.SIGKILL

    with ledger_at(job) as ledger:
        done_before = {item.id for item in ledger.items("done")}
        last_attempt_before = max(a["id"] for a in LedgerReads(ledger).attempts())
        interrupted = {row["id"]: row["lease_id"] for row in query(job, "SELECT id, lease_id FROM tasks "
                                                                        "WHERE state = 'running'")}
    assert len(done_before) >= 3 and interrupted
    assert len(done_before) < len(sources)

    again = subprocess.run(command, env=cli_env(), capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr
    summary = stdout_json(again.stdout)
    assert summary["counts"]["done"] == len(sources) and not summary["interrupted"]

    with ledger_at(job) as ledger:
        attempts = LedgerReads(ledger).attempts()
        for item_id in done_before:  # done before the kill: not attempted again
            assert all(a["id"] <= last_attempt_before for a in LedgerReads(ledger).attempts(item_id)), item_id
        for task_id, lease_id in interrupted.items():  # released as infrastructure losses, then re-run
            mine = [a for a in attempts if a["task_id"] == task_id]
            killed = next(a for a in mine if a["id"] == lease_id)
            assert killed["outcome"] == "lost" and "stopped before this task finished" in killed["message"]
            assert [a["outcome"] for a in mine if a["id"] > lease_id] == ["done"]
        assert {a["outcome"] for a in attempts} <= {"done", "lost"}
        for item in ledger.items():
            assert item.state == "done"
            assert_each_task_done_exactly_once(ledger, item.id, retried_ok=True)  # no duplicate work
    assert losses(job) == (0, 0, len(interrupted))
    assert output_files(out) == {s.relative_to(src).as_posix() for s in sources}
    for source in sources:
        assert_same_frames(slow_clip, out / source.relative_to(src))
    assert temporaries(out) == [] and temporaries(job) == []


# -- 4 and 5. hangs and crashes --------------------------------------------------------------------


POISON_AT = 40


@pytest.fixture(scope="module")
def poison_and_good(clip_factory) -> tuple[Path, Path]:
    """A 96x64 clip (the one the misbehaving ops pick by width) and a 64x48 one.

    The ops misbehave from frame POISON_AT on, when the encoder has already written part of the output.
    """
    return (clip_factory("job-poison.mp4", **{**TINY, "width": 96, "height": 64, "frames": 48}),
            clip_factory("job-good.mp4", **{**TINY, "frames": 6}))


def two_item_tree(poison_and_good, root: Path) -> tuple[Path, Path]:
    root.mkdir()
    poison, good = root / "poison.mp4", root / "good.mp4"
    shutil.copyfile(poison_and_good[0], poison)
    shutil.copyfile(poison_and_good[1], good)
    return poison, good


def item_named(ledger: Ledger, path: Path):
    return next(item for item in ledger.items() if item.uri == path.as_posix())


def test_a_hung_worker_is_killed_and_its_item_fails_naming_the_hang(poison_and_good, tmp_path):
    poison, good = two_item_tree(poison_and_good, tmp_path / "in")
    out = tmp_path / "out"
    hang = SleepForeverOp(width=96, after_frames=POISON_AT, batch_size=8)
    settings = RunSettings(options=EngineOptions(workers=2, hang_timeout=2.0, poll_seconds=0.2),
                           retry=RetryPolicy(max_crashes=2, backoff_seconds=0.05))
    result = run(JobSpec([str(tmp_path / "in")], out, Pipeline(ops=(hang,)), settings))

    assert result.exit_code == 3
    assert result.counts == {"pending": 0, "running": 0, "done": 1, "failed": 1}
    (failure,) = result.failures
    assert failure.uri == poison.as_posix() and failure.error_type == "limit:time"
    assert "hung 2 times" in failure.error and "no progress" in failure.error, failure.error
    with ledger_at(result.job_dir) as ledger:
        outcomes = [(a["kind"], a["outcome"]) for a in LedgerReads(ledger).attempts(item_named(ledger, poison).id)]
        assert outcomes == [("probe", "done"), ("segment", "hung"), ("segment", "hung")]
        assert_each_task_done_exactly_once(ledger, item_named(ledger, good).id)
    assert_same_frames(good, out / "good.mp4")
    assert not (out / "poison.mp4").exists()
    assert temporaries(out) == []  # the partial output of the killed worker is gone too


def test_a_worker_crash_is_retried_and_the_item_completes(poison_and_good, tmp_path):
    poison, good = two_item_tree(poison_and_good, tmp_path / "in")
    out, marker = tmp_path / "out", tmp_path / "crashed-once"
    crash_once = CrashOp(width=96, marker=str(marker), after_frames=POISON_AT, batch_size=8)
    result = run(JobSpec([str(tmp_path / "in")], out, Pipeline(ops=(crash_once,)), TWO_WORKERS_FAST))

    assert marker.exists(), "the op never crashed"
    assert result.exit_code == 0 and result.counts["done"] == 2
    with ledger_at(result.job_dir) as ledger:
        attempts = LedgerReads(ledger).attempts(item_named(ledger, poison).id)
        assert [(a["kind"], a["outcome"]) for a in attempts] == [("probe", "done"), ("segment", "crashed"),
                                                                 ("segment", "done")]
        assert attempts[1]["error_type"] == "WorkerCrashed" and "SIGSEGV" in attempts[1]["message"]
    assert_same_frames(poison, out / "poison.mp4")
    assert_same_frames(good, out / "good.mp4")
    assert temporaries(out) == []


def test_a_worker_crashing_on_every_attempt_ends_its_item_failed_as_poison(poison_and_good, tmp_path):
    poison, good = two_item_tree(poison_and_good, tmp_path / "in")
    out = tmp_path / "out"
    crash = CrashOp(width=96, after_frames=POISON_AT, batch_size=8)
    settings = RunSettings(options=EngineOptions(workers=2),
                           retry=RetryPolicy(max_attempts=5, max_crashes=2, backoff_seconds=0.05))
    result = run(JobSpec([str(tmp_path / "in")], out, Pipeline(ops=(crash,)), settings))

    assert result.exit_code == 3
    assert result.counts == {"pending": 0, "running": 0, "done": 1, "failed": 1}
    (failure,) = result.failures
    assert failure.uri == poison.as_posix() and failure.error_type == "WorkerCrashed"
    assert "crashed 2 times" in failure.error and "SIGSEGV" in failure.error, failure.error
    with ledger_at(result.job_dir) as ledger:
        outcomes = [(a["kind"], a["outcome"]) for a in LedgerReads(ledger).attempts(failure.id)]
        assert outcomes == [("probe", "done"), ("segment", "crashed"), ("segment", "crashed")]
    assert_same_frames(good, out / "good.mp4")
    assert not (out / "poison.mp4").exists()
    assert temporaries(out) == []  # the partial output of the killed worker is gone too


# -- 6. a long video split into segments and joined ----------------------------------------------------


def test_a_long_video_is_split_at_keyframes_and_joined_frame_exact_with_its_audio(clip_factory, tmp_path):
    source = clip_factory("job-long.mp4", **{**TINY, "frames": 300, "rate": Fraction(25), "gop": 25,
                                             "bframes": 2, "audio": ("aac",)})
    out = tmp_path / "out"
    pipeline = Pipeline.from_options({**IDENTITY, "segment_seconds": 3})
    result = run(JobSpec([str(source)], out, pipeline, TWO_WORKERS_FAST))

    assert result.exit_code == 0 and result.frames == 300
    with ledger_at(result.job_dir) as ledger:
        (item,) = ledger.items()
        assert len(LedgerReads(ledger).join_parts(item.id)) == 4  # 12 s in pieces of 3 s (keyframes every second)
        attempts = LedgerReads(ledger).attempts(item.id)
        assert Counter((a["kind"], a["outcome"]) for a in attempts) == {
            ("probe", "done"): 1, ("segment", "done"): 4, ("join", "done"): 1}
        assert [a["kind"] for a in attempts][-1] == "join"
        assert_each_task_done_exactly_once(ledger, item.id)
    output = out / "job-long.mp4"
    assert_same_frames(source, output)
    (audio_in,) = media_checks.streams_of_kind(source, "audio")
    (audio_out,) = media_checks.streams_of_kind(output, "audio")
    assert media_checks.packet_payloads(output, audio_out) == media_checks.packet_payloads(source, audio_in)
    assert temporaries(out) == []
    assert not any((result.job_dir / "parts").rglob("*.nut"))  # segment files are removed after the join


def test_a_short_video_is_cut_so_that_every_worker_has_a_segment(clip_factory, tmp_path):
    """A video shorter than the segment length is one task for one worker, unless the job has fewer tasks
    than workers: then it is cut at keyframes into one segment per worker (none under 2 s), styled with
    the temporal filter across the cuts, and joined frame-exact with its audio."""
    source = clip_factory("job-short.mp4", width=96, height=64, frames=150, rate=Fraction(25), gop=25,
                          bframes=2, audio=("aac",))
    keyframes = {packet.pts for packet in _keyframes(source)}
    second = round(1 / media_checks.video_time_base(source))
    pipeline = Pipeline.from_options({"op": "style", "temporal": "bands"})  # segment_seconds: 20 by default
    for workers, expected in ((1, 1), (2, 2)):
        out = tmp_path / f"out-{workers}"
        settings = RunSettings(options=EngineOptions(workers=workers), retry=FAST_RETRIES)
        result = run(JobSpec([str(source)], out, pipeline, settings))
        assert result.exit_code == 0 and result.frames == 150
        rows = query(result.job_dir, "SELECT start_pts, end_pts FROM tasks WHERE kind = 'segment' ORDER BY seq")
        assert len(rows) == expected, [tuple(row) for row in rows]
        starts = [row["start_pts"] for row in rows[1:]]
        assert set(starts) <= keyframes and all(later - earlier >= 2 * second for earlier, later in
                                                 zip([0, *starts], [*starts, 6 * second]))
        assert_same_frames(source, out / "job-short.mp4")
        (audio_in,) = media_checks.streams_of_kind(source, "audio")
        (audio_out,) = media_checks.streams_of_kind(out / "job-short.mp4", "audio")
        assert media_checks.packet_payloads(out / "job-short.mp4", audio_out) == media_checks.packet_payloads(
            source, audio_in)


def test_workers_see_the_environment_of_their_job(clip_factory, tmp_path, monkeypatch):
    """A later job in the same process runs its workers with its own environment, not an earlier one's."""
    source = clip_factory("env.mp4", **TINY)
    report = tmp_path / "seen"
    pipeline = Pipeline(ops=(EnvironmentOp(variable="FRAMEFLEET_TEST_MARK", report=str(report)),))
    settings = RunSettings(options=EngineOptions(workers=1), retry=FAST_RETRIES)
    for mark in ("first", "second"):
        monkeypatch.setenv("FRAMEFLEET_TEST_MARK", mark)
        assert run(JobSpec([str(source)], tmp_path / f"out-{mark}", pipeline, settings)).exit_code == 0
        assert report.read_text() == mark


def x264_threads(path: Path) -> int:
    """The thread count x264 wrote into the stream's settings (its SEI message)."""
    return int(re.search(rb"threads=(\d+)", path.read_bytes()).group(1))


def test_a_video_that_cannot_be_cut_gets_the_idle_workers_cores_for_its_encoder(clip_factory, tmp_path):
    """One keyframe: the video is one segment whatever the workers; the other worker would idle, so the
    segment's encoder gets both workers' threads. A count the pipeline fixes is kept."""
    source = clip_factory("one-key.mp4", width=320, height=240, frames=60, rate=Fraction(25), gop=600)
    for encode, expected in (({}, 2), ({"threads": 1}, 1)):
        out = tmp_path / f"out-{expected}"
        settings = RunSettings(options=EngineOptions(workers=2, threads_per_worker=1), retry=FAST_RETRIES)
        pipeline = Pipeline.from_options({"op": "identity", **encode})
        result = run(JobSpec([str(source)], out, pipeline, settings))
        assert result.exit_code == 0 and result.frames == 60
        assert len(query(result.job_dir, "SELECT 1 FROM tasks WHERE kind = 'segment'")) == 1
        assert x264_threads(out / "one-key.mp4") == expected
        assert_same_frames(source, out / "one-key.mp4")


def _keyframes(path: Path) -> list[av.Packet]:
    with av.open(str(path)) as container:
        return [packet for packet in container.demux(video=0) if packet.is_keyframe and packet.pts is not None]


# -- 7. resuming -------------------------------------------------------------------------------------


def test_rerunning_a_job_resumes_and_redoes_only_changed_inputs(variants, tmp_path):
    src, out, job = tmp_path / "in", tmp_path / "out", tmp_path / "job"
    names = ["plain.mp4", "bframes.mp4", "vfr.mkv"]
    src.mkdir()
    for name in names:
        shutil.copyfile(variants[name], src / name)
    first = run(JobSpec([str(src)], out, identity(), TWO_WORKERS_FAST), job_dir=job)
    assert first.exit_code == 0
    with ledger_at(job) as ledger:
        attempts_first = LedgerReads(ledger).attempts()

    unchanged = run(JobSpec([str(src)], out, identity(), TWO_WORKERS_FAST), job_dir=job)
    assert unchanged.exit_code == 0 and unchanged.counts["done"] == 3
    with ledger_at(job) as ledger:
        assert LedgerReads(ledger).attempts() == attempts_first  # nothing attempted again

    other = cli("run", src, "-o", out, "--op", "identity", "--crf", "30", "--job-dir", job, "--workers", "1")
    lines = stderr_lines(other)
    assert other.exit_code == 2 and len(lines) == 1, other.stderr
    assert lines[0].startswith("error: ") and "another pipeline" in lines[0]
    assert "use a new --job-dir to start a new job" in lines[0]
    with ledger_at(job) as ledger:
        assert LedgerReads(ledger).attempts() == attempts_first

    changed = src / "bframes.mp4"
    write_clip(changed, ClipSpec(**{**TINY, "frames": 13}))
    redo = run(JobSpec([str(src)], out, identity(), TWO_WORKERS_FAST), job_dir=job)
    assert redo.exit_code == 0 and redo.counts["done"] == 3
    with ledger_at(job) as ledger:
        redone = item_named(ledger, changed).id
        assert [a for a in LedgerReads(ledger).attempts() if a["item_id"] != redone] == [
            a for a in attempts_first if a["item_id"] != redone]
        assert_each_task_done_exactly_once(ledger, redone)
        assert min(a["id"] for a in LedgerReads(ledger).attempts(redone)) > max(a["id"] for a in attempts_first)
    assert media_checks.frame_count(out / "bframes.mp4") == 13
    assert_same_frames(changed, out / "bframes.mp4")
    assert_same_frames(variants["plain.mp4"], out / "plain.mp4")


# -- 8. graceful stop ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_stops_a_run_gracefully_and_running_it_again_finishes_the_job(slow_clip, tmp_path):
    src, out, job = tmp_path / "in", tmp_path / "out", tmp_path / "job"
    sources = copy_tree(slow_clip, src, 10)
    command = [str(c) for c in (*JOB_CLI, "run", src, "-o", out, "--pipeline", slow_pipeline_file(tmp_path),
                                "--workers", "2", "--job-dir", job, "--json")]
    proc = subprocess.Popen(command, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        wait_for(lambda: segment_running_after(job, 2), what="two items done and a segment running",
                 proc=proc)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)  # running tasks take about 0.5 s to finish
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130, stderr
    summary = stdout_json(stdout)
    assert summary["interrupted"] is True
    assert 2 <= summary["counts"]["done"] < len(sources)
    assert query(job, "SELECT COUNT(*) FROM tasks WHERE state = 'running'")[0][0] == 0
    with ledger_at(job) as ledger:
        outcomes = {a["outcome"] for a in LedgerReads(ledger).attempts()}
    assert outcomes == {"done"}  # the running tasks finished within the grace period; none was cut off
    assert temporaries(out) == []

    again = subprocess.run(command, env=cli_env(), capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr
    assert stdout_json(again.stdout)["counts"]["done"] == len(sources)
    with ledger_at(job) as ledger:
        for item in ledger.items():
            assert_each_task_done_exactly_once(ledger, item.id)
    for source in sources:
        assert_same_frames(slow_clip, out / source.relative_to(src))


def test_a_stop_whose_grace_period_runs_out_releases_the_running_tasks_and_resumes(clip_factory, tmp_path):
    clip = clip_factory("job-24.mp4", **{**TINY, "frames": 24})  # about 1 s per segment
    src, out, beacons = tmp_path / "in", tmp_path / "out", tmp_path / "beacons"
    beacons.mkdir()
    sources = copy_tree(clip, src, 4)
    pipeline = Pipeline(ops=(SlowOp(delay=0.1, beacon_dir=str(beacons)),))
    # SIGTERM to this process while a segment has most of its frames (about 1 s) to go; the job handles it
    # (as the CLI's does) by stopping, and cuts off what still runs after grace_seconds.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # in case a signal came after the job's end
    try:
        with MidSegment(beacons, lambda pid: os.kill(os.getpid(), signal.SIGTERM), times=1) as stopper:
            settings = RunSettings(options=EngineOptions(workers=2, grace_seconds=0.1), retry=FAST_RETRIES)
            stopped = run(JobSpec([str(src)], out, pipeline, settings), handle_signals=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert stopper.picked, "the job was not stopped as planned"
    assert stopped.interrupted and stopped.exit_code == 130
    assert stopped.counts["done"] < len(sources)
    with ledger_at(stopped.job_dir) as ledger:
        cut_off = [a for a in LedgerReads(ledger).attempts() if a["outcome"] == "interrupted"]
        assert cut_off and all(a["kind"] == "segment" and a["error_type"] == "Interrupted" for a in cut_off)
        assert {a["outcome"] for a in LedgerReads(ledger).attempts()} == {"done", "interrupted"}
    assert query(stopped.job_dir, "SELECT COUNT(*) FROM tasks WHERE state = 'running'")[0][0] == 0
    assert temporaries(out) == []  # the cut-off tasks' partial outputs are removed

    resumed = run(JobSpec([str(src)], out, pipeline, TWO_WORKERS_FAST))
    assert resumed.exit_code == 0 and resumed.counts["done"] == len(sources)
    with ledger_at(resumed.job_dir) as ledger:
        attempts = LedgerReads(ledger).attempts()
        for attempt in cut_off:
            outcomes = [a["outcome"] for a in attempts if a["task_id"] == attempt["task_id"]]
            assert outcomes == ["interrupted", "done"], outcomes
    assert losses(resumed.job_dir) == (0, 0, 0)  # a stop is nobody's loss ...
    with ledger_at(resumed.job_dir) as ledger:
        assert LedgerReads(ledger).losses().stopped == len(cut_off)  # ... but counted apart
    for source in sources:
        assert_same_frames(clip, out / source.relative_to(src))


# -- 9. the job commands ---------------------------------------------------------------------------------


def test_cli_run_status_failures_and_retry(variants, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    job = out / ".framefleet-job"
    src.mkdir()
    shutil.copyfile(variants["plain.mp4"], src / "good.mp4")
    broken = src / "broken.mp4"
    broken.write_text("not a video yet\n")
    (src / "notes.txt").write_text("skipped\n")

    ran = cli("run", src, "-o", out, "--op", "identity", "--workers", "1", "--max-attempts", "1", "--json")
    assert ran.exit_code == 3, ran.stderr
    summary = stdout_json(ran)
    assert set(summary) == {"job_dir", "counts", "frames", "seconds", "interrupted", "failures", "skipped", "damaged",
                            "refused", "runtimes", "preempted", "cut_short", "adopted", "segmenting"}
    assert summary["damaged"] == [] and summary["refused"] == {} and summary["preempted"] is None
    assert summary["adopted"] == 0
    assert summary["segmenting"] is None  # no --preemption-notice: the segment length as given
    assert summary["runtimes"] == []  # identity runs no model
    assert Path(summary["job_dir"]) == job
    assert summary["counts"] == {"pending": 0, "running": 0, "done": 1, "failed": 1}
    assert summary["frames"] == GOOD_VARIANTS["plain.mp4"]["frames"] and summary["interrupted"] is False
    assert summary["skipped"] == [(src / "notes.txt").as_posix()]
    assert [f["uri"] for f in summary["failures"]] == [broken.as_posix()]

    status = cli("status", job, "--json")
    assert status.exit_code == 0, status.stderr
    state = stdout_json(status)
    assert state["items"] == summary["counts"] and state["input_failures"] == 1
    assert state["crashes"] == 0 and state["infra_losses"] == 0 and state["workers"] == []
    table = cli("status", job)
    assert table.exit_code == 0 and "1 done, 1 failed" in ANSI.sub("", table.stdout)

    failed = cli("failures", job, "--json")
    assert failed.exit_code == 0
    (row,) = stdout_json(failed)
    assert row["uri"] == broken.as_posix() and row["attempts"] == 1
    assert row["error_type"] == "CorruptVideoError" and "corrupt video" in row["error"]

    shutil.copyfile(variants["bframes.mp4"], broken)  # the input is fixed
    retried = cli("retry", job, "--workers", "1", "--json")
    assert retried.exit_code == 0, retried.stderr
    assert stdout_json(retried)["counts"] == {"pending": 0, "running": 0, "done": 2, "failed": 0}
    assert_same_frames(variants["bframes.mp4"], out / "broken.mp4")
    assert stdout_json(cli("failures", job, "--json")) == []


def test_cli_pipeline_file_with_an_unknown_key_is_a_one_line_error(variants, tmp_path):
    pipeline = tmp_path / "job.yaml"
    pipeline.write_text("op: identity\ncrf: 22\nsegment_secs: 5\n")
    result = cli("run", variants["plain.mp4"], "-o", tmp_path / "out", "--pipeline", pipeline)
    lines = stderr_lines(result)
    assert result.exit_code == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: --pipeline") and "segment_secs" in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # nothing was started


def test_cli_pipeline_file_is_used(variants, tmp_path):
    pipeline = tmp_path / "job.yaml"
    pipeline.write_text("op: identity\ncrf: 30\nsegment-seconds: 5\n")
    result = cli("run", variants["plain.mp4"], "-o", tmp_path / "out", "--pipeline", pipeline,
                 "--workers", "1", "--json")
    assert result.exit_code == 0, result.stderr
    with ledger_at(tmp_path / "out" / ".framefleet-job") as ledger:
        spec = ledger.job().spec
    assert spec["ops"][0]["op"] == "identity" and spec["encode"]["crf"] == 30 and spec["segment_seconds"] == 5


def test_cli_inputs_from_a_list_file_and_from_stdin(variants, tmp_path):
    listed = tmp_path / "list.txt"
    listed.write_text(f"# the clips\n{variants['plain.mp4']}\n\n  {variants['vfr.mkv']}  \n")
    from_list = cli("run", f"@{listed}", "-o", tmp_path / "a", "--op", "identity", "--workers", "1", "--json")
    assert from_list.exit_code == 0, from_list.stderr
    assert stdout_json(from_list)["counts"]["done"] == 2
    assert output_files(tmp_path / "a") == {variants["plain.mp4"].name, variants["vfr.mkv"].name}
    assert_same_frames(variants["vfr.mkv"], tmp_path / "a" / variants["vfr.mkv"].name)

    from_stdin = cli("run", "-", "-o", tmp_path / "b", "--op", "identity", "--workers", "1", "--json",
                     input=f"{variants['ntsc.mov']}\n")
    assert from_stdin.exit_code == 0, from_stdin.stderr
    assert stdout_json(from_stdin)["counts"] == {"pending": 0, "running": 0, "done": 1, "failed": 0}
    assert_same_frames(variants["ntsc.mov"], tmp_path / "b" / variants["ntsc.mov"].name)
