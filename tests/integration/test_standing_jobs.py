"""Standing jobs end to end: `framefleet.jobs.run.run(..., standing=True)` as a long-running service runs it.

The run starts with no inputs in a thread; the test plays the folder watcher, adding items through its
own `Ledger` connection to the same ledger file while the run goes on, and stops the run with its `stop`
event. Real worker processes, the identity op, tiny clips; the outputs are checked with PyAV
(tests/media_checks.py), the worker count through the run's progress reports.
"""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import media_checks
import pytest

from framefleet.engines.events import EngineProgress
from framefleet.files import storage
from framefleet.jobs.directory import LEDGER_NAME
from framefleet.jobs.run import JobResult, canonical_output_root, run
from framefleet.jobs.spec import JobSpec
from framefleet.jobs.store import Ledger
from framefleet.pipeline import Pipeline
from framefleet.settings import EngineOptions, RunSettings

TINY = {"width": 64, "height": 48, "gop": 4, "bframes": 0}
FRAMES = 6


class StandingRun(threading.Thread):
    """A standing run with one worker into `out` (job directory `job_dir`), in a thread (see `standing_run`).

    `workers` keeps the worker count of each of its progress reports, in order.
    """

    def __init__(self, out: Path, job_dir: Path, options: EngineOptions | None = None) -> None:
        super().__init__(daemon=True)
        self.out, self.job_dir, self.options = out, job_dir, options
        self.stop_event = threading.Event()
        self.workers: list[int] = []
        self.result: JobResult | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            options = dataclasses.replace(self.options or EngineOptions(), workers=1)
            pipeline = Pipeline.from_options({"op": "identity"})
            spec = JobSpec([], self.out, pipeline, RunSettings(options=options))
            self.result = run(spec, job_dir=self.job_dir, on_progress=self._note, standing=True,
                              stop=self.stop_event)
        except BaseException as exc:  # noqa: BLE001 - handed to the test by `stop`
            self.error = exc

    def _note(self, progress: EngineProgress) -> None:
        self.workers.append(progress.workers)

    def stop(self, timeout: float = 60.0) -> JobResult:
        """Set the stop event and wait for the run to return its result."""
        self.stop_event.set()
        self.join(timeout)
        assert not self.is_alive(), f"the standing run did not return within {timeout:.0f} s of the stop"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


@contextmanager
def standing_run(out: Path, job_dir: Path, options: EngineOptions | None = None) -> Iterator[StandingRun]:
    """A started `StandingRun` that has reported once (its ledger is ready); stopped and joined at the end
    in case the test did not stop it."""
    standing = StandingRun(out, job_dir, options)
    standing.start()
    try:
        wait_for(lambda: bool(standing.workers), standing, what="the first progress report")
        yield standing
    finally:
        standing.stop_event.set()
        standing.join(60)


def wait_for(condition, standing: StandingRun, *, timeout: float = 60.0, what: str = "the condition") -> None:
    """Poll `condition` until it holds; fail if it does not within `timeout` s, or the run ends first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if not standing.is_alive():
            pytest.fail(f"the standing run ended ({standing.error!r}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def add_video(job_dir: Path, clip: Path, out: Path, relpath: str) -> None:
    """What a folder watcher does: add `clip` as an item, through a ledger connection of its own."""
    uri = storage.canonical_uri(str(clip))
    size, version = storage.stat(uri)
    watcher = Ledger(job_dir / LEDGER_NAME)
    try:
        added = watcher.add_items([(uri, relpath, size, version,
                                    storage.output_uri(canonical_output_root(str(out)), relpath))])
    finally:
        watcher.close()
    assert added == 1


def item_state(job_dir: Path, relpath: str) -> str | None:
    """The state of the item `relpath`, read with a plain SQLite connection."""
    db = sqlite3.connect(job_dir / LEDGER_NAME, timeout=30)
    try:
        row = db.execute("SELECT state FROM items WHERE relpath = ?", (relpath,)).fetchone()
    finally:
        db.close()
    return None if row is None else row[0]


def running_tasks(job_dir: Path) -> int:
    db = sqlite3.connect(job_dir / LEDGER_NAME, timeout=30)
    try:
        return db.execute("SELECT COUNT(*) FROM tasks WHERE state = 'running'").fetchone()[0]
    finally:
        db.close()


@pytest.fixture
def inputs(clip_factory, tmp_path) -> dict[str, Path]:
    """Two distinct input files (items are keyed by URI) holding the same tiny clip."""
    clip = clip_factory("standing.mp4", **TINY, frames=FRAMES)
    folder = tmp_path / "watched"
    folder.mkdir()
    copies = {}
    for name in ("first.mp4", "second.mp4"):
        shutil.copyfile(clip, folder / name)
        copies[name] = folder / name
    return copies


def test_a_standing_run_does_items_added_while_it_runs_and_stops_on_its_event(inputs, tmp_path):
    out, job_dir = tmp_path / "out", tmp_path / "job"
    with standing_run(out, job_dir) as standing:
        time.sleep(1.0)  # with nothing to do, a batch run would have returned by now
        assert standing.is_alive()
        assert standing.workers[-1] == 0  # no work, no workers

        add_video(job_dir, inputs["first.mp4"], out, "cam/first.mp4")
        wait_for(lambda: item_state(job_dir, "cam/first.mp4") == "done", standing, what="the first item")
        add_video(job_dir, inputs["second.mp4"], out, "cam/second.mp4")
        wait_for(lambda: item_state(job_dir, "cam/second.mp4") == "done", standing, what="the second item")
        assert standing.is_alive()

        result = standing.stop()
    assert result.interrupted and result.exit_code == 130
    assert result.counts == {"pending": 0, "running": 0, "done": 2, "failed": 0}
    assert result.frames == 2 * FRAMES
    assert running_tasks(job_dir) == 0
    for name in ("first.mp4", "second.mp4"):
        assert media_checks.frame_count(out / "cam" / name) == FRAMES


def workers_of(job_dir: Path, relpath: str) -> set[str]:
    """The workers that ran the tasks of the item `relpath`."""
    db = sqlite3.connect(job_dir / LEDGER_NAME, timeout=30)
    try:
        return {row[0] for row in db.execute(
            "SELECT a.worker FROM attempts a JOIN tasks t ON t.id = a.task_id JOIN items i ON i.id = t.item_id "
            "WHERE i.relpath = ?", (relpath,))}
    finally:
        db.close()


def test_an_idle_standing_run_stops_its_workers_and_starts_them_again_for_new_work(inputs, tmp_path):
    out, job_dir = tmp_path / "out", tmp_path / "job"
    # stall_timeout: the idle wait below outlasts it, so a stall clock left running while idle would stop
    # the run as soon as the next item arrives.
    options = EngineOptions(idle_seconds=1.0, stall_timeout=5.0)
    with standing_run(out, job_dir, options) as standing:
        add_video(job_dir, inputs["first.mp4"], out, "first.mp4")
        wait_for(lambda: item_state(job_dir, "first.mp4") == "done", standing, what="the first item")
        done_at = time.monotonic()
        seen = len(standing.workers)
        wait_for(lambda: 0 in standing.workers[seen:], standing, what="the idle workers to stop")
        released = len(standing.workers)
        time.sleep(max(0.0, done_at + options.stall_timeout + 1.0 - time.monotonic()))
        assert set(standing.workers[released:]) == {0}  # none started while idle, and still reporting

        add_video(job_dir, inputs["second.mp4"], out, "second.mp4")
        wait_for(lambda: item_state(job_dir, "second.mp4") == "done", standing, what="the second item")
        first, second = (workers_of(job_dir, name) for name in ("first.mp4", "second.mp4"))
        assert first and second and not first & second  # a worker started again for the new work
        result = standing.stop()
    assert result.counts["done"] == 2 and result.interrupted
    assert running_tasks(job_dir) == 0
    for name in ("first.mp4", "second.mp4"):
        assert media_checks.frame_count(out / name) == FRAMES
