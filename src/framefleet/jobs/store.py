"""The job ledger: one SQLite database (WAL mode) in the job directory, the single source of truth.

A job has items (input videos); each item has tasks: one `probe`, then its `segment`s, then (for videos
split in several segments) one `join`. Tasks move pending -> running -> done | failed; a join waits in
`waiting` until its segments are done; the tasks of a failed item are `cancelled`. Every claim opens an
attempt and a lease (the attempt's id); only the newest lease may complete or fail a task.

Failures are counted by cause: `input` errors use up the retry budget (`max_attempts`); a worker that
crashed (a signal other than SIGKILL, a non-zero exit) or hung counts as a crash, capped by `max_crashes`
(a poison input that kills FFmpeg ends there); losses that are not the input's fault (SIGKILL, an expired
lease, a stopped job, a lost node) are infrastructure losses and never fail the item.
The schema is documented in docs/ledger.md. Error texts (attempt messages, log tails, item errors) pass
through `framefleet.util.redact.redact` before they are stored: the ledger never holds a credential.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from framefleet.errors import FramefleetError, is_disk_full, job_disk_full
from framefleet.jobs.results import ProbeResult, Segment, TaskMetrics, TaskOutcome, outcome_json
from framefleet.settings import RetryPolicy
from framefleet.util.redact import redact

SCHEMA_VERSION = 1
TaskKind = Literal["probe", "segment", "join"]
ItemState = Literal["pending", "running", "done", "failed"]
Outcome = Literal["done", "input_error", "crashed", "hung", "lost", "interrupted", "stale"]
INFRA_OUTCOMES = frozenset({"lost", "stale"})
"""Attempts lost to the machines; "interrupted" ones were given up on a stop request."""
CRASH_OUTCOMES = frozenset({"crashed", "hung"})
INFRA_BACKOFF_CAP = 30.0
"""Seconds: the longest wait before retrying a task after repeated infrastructure losses."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS job (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    schema_version INTEGER NOT NULL,
    created REAL NOT NULL,
    fingerprint TEXT NOT NULL,
    spec TEXT NOT NULL,
    framefleet_version TEXT NOT NULL,
    output_root TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    uri TEXT NOT NULL UNIQUE,
    relpath TEXT NOT NULL,
    size INTEGER,
    version TEXT,
    output_uri TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed')),
    frames INTEGER,
    duration REAL,
    error TEXT,
    created REAL NOT NULL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY,
    item_id INTEGER NOT NULL REFERENCES items(id),
    kind TEXT NOT NULL CHECK (kind IN ('probe', 'segment', 'join')),
    seq INTEGER NOT NULL,
    start_pts INTEGER,
    end_pts INTEGER,
    state TEXT NOT NULL CHECK (state IN ('waiting', 'pending', 'running', 'done', 'failed', 'cancelled')),
    lease_id INTEGER,
    lease_owner TEXT,
    lease_expires REAL,
    not_before REAL NOT NULL DEFAULT 0,
    input_failures INTEGER NOT NULL DEFAULT 0,
    crashes INTEGER NOT NULL DEFAULT 0,
    infra_losses INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    UNIQUE (item_id, kind, seq)
);
CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks (state, not_before);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- lease ids: never reused, even after add_items deletes rows
    task_id INTEGER NOT NULL REFERENCES tasks(id),
    worker TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    outcome TEXT CHECK (outcome IN ('done', 'input_error', 'crashed', 'hung', 'lost', 'interrupted', 'stale')),
    error_type TEXT,
    message TEXT,
    log_tail TEXT
);
CREATE INDEX IF NOT EXISTS attempts_by_task ON attempts (task_id);
CREATE INDEX IF NOT EXISTS items_by_state ON items (state);
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
    task_id INTEGER PRIMARY KEY REFERENCES tasks(id),
    item_id INTEGER NOT NULL REFERENCES items(id),
    finished REAL NOT NULL,
    frames INTEGER NOT NULL,
    seconds REAL NOT NULL,
    decode_s REAL NOT NULL,
    ops_s REAL NOT NULL,
    encode_s REAL NOT NULL,
    upload_s REAL NOT NULL,
    bytes_in INTEGER NOT NULL,
    bytes_out INTEGER NOT NULL,
    steps_s TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS metrics_by_item ON metrics (item_id);
"""

STAGES = ("decode", "ops", "encode", "upload")
"""The stages of a task whose seconds are kept (`TaskMetrics.decode_s`, ...)."""

_COLUMNS_ADDED = {"metrics": {"steps_s": "TEXT NOT NULL DEFAULT '{}'"}}
"""Columns added since the first schema: a ledger made before gets them when opened."""


class JobMismatchError(FramefleetError):
    """The job directory holds a job with another pipeline."""


@dataclass(frozen=True)
class JobRecord:
    """What the ledger holds about the job itself (`Ledger.job`)."""

    created: float
    fingerprint: str
    spec: dict[str, Any]
    """The pipeline's `Pipeline.spec()`."""
    framefleet_version: str
    output_root: str


@dataclass(frozen=True)
class Item:
    """One input video of a job."""

    id: int
    uri: str
    relpath: str
    output_uri: str
    state: str
    size: int | None
    version: str | None
    frames: int | None
    error: str | None


@dataclass(frozen=True)
class ItemMetrics:
    """One input video of a job: its state, its error and its totals over its finished tasks."""

    id: int
    uri: str
    output_uri: str | None
    """Its output, once written (None until the item is done)."""
    state: ItemState
    error: str | None
    damage: str | None
    """What was damaged in a partly damaged input done with losses (its damaged tasks' summaries), else None."""
    item_frames: int | None
    """Frames its probe found (None before the probe)."""
    tasks: int
    """Finished tasks (probe, segments or the whole video, join)."""
    frames: int
    seconds: float
    decode_s: float
    ops_s: float
    encode_s: float
    upload_s: float
    bytes_in: int
    bytes_out: int
    steps_s: dict[str, float] = field(default_factory=dict)
    """`ops_s` by step of the op chain (the op's name, numbered when it comes twice)."""
    fps: float = 0.0
    """Frames over task seconds."""


@dataclass(frozen=True)
class Failure:
    """A failed item with its error, as `Ledger.failures` lists it."""

    id: int
    uri: str
    error: str | None
    attempts: int
    """Attempts of its tasks, whatever their outcome."""
    error_type: str | None
    """The exception class of its latest error (`CorruptVideoError`, `limit:pixels`, ...)."""
    log_tail: str | None
    """The last lines of the latest traceback, for a bug or a crash."""

    @property
    def reason(self) -> str:
        """The error without the input's name (`reason_of`)."""
        return reason_of(self.uri, self.error)


def reason_of(uri: str, error: str | None) -> str:
    """An item's error without its input's name where it starts with it, to show beside that name."""
    return (error or "").removeprefix(f"{uri}: ")


@dataclass(frozen=True)
class Damage:
    """A task done from a partly damaged input (every frame that decodes kept), as `Ledger.damaged` lists it."""

    uri: str
    seq: int
    """The task's place among the item's segments."""
    summary: str
    """One line on what was damaged."""
    frames_claimed: int | None
    decode_errors: int
    frames_dropped: int
    cut_short: str | None
    """Why the input broke off early, if it did."""


@dataclass(frozen=True)
class Activity:
    """When a job's attempts ran (`Ledger.activity`)."""

    attempts: int
    first_started: float | None
    last_ended: float | None
    """The end of the latest finished attempt (None before any)."""
    running_workers: list[str]
    """Workers holding an attempt now, sorted."""

    def elapsed(self, now: float) -> float:
        """Seconds from the first attempt's start to the last one's end, or to `now` while one runs."""
        if self.first_started is None:
            return 0.0
        end = now if self.running_workers else self.last_ended
        return (end or self.first_started) - self.first_started


@dataclass(frozen=True)
class Task:
    """A unit of work handed to a worker under a lease."""

    id: int
    item_id: int
    kind: TaskKind
    seq: int
    start_pts: int | None
    end_pts: int | None
    lease_id: int
    uri: str
    output_uri: str


def _summed(times: Iterable[dict[str, float]]) -> dict[str, float]:
    """Seconds by step, added up over tasks (in the chain's order)."""
    total: dict[str, float] = {}
    for each in times:
        for step, seconds in each.items():
            total[step] = total.get(step, 0.0) + seconds
    return total


_NEARLY_FULL = 1 << 20
"""Bytes free below which an SQLite I/O error on the ledger is taken for a full disk."""


@dataclass(frozen=True)
class Losses:
    """A job's attempts that did not end done, by cause (`Ledger.losses`)."""

    input_failures: int = 0
    """The input's fault (a corrupt video, a broken limit, an op's error)."""
    crashes: int = 0
    """Workers that crashed or hung on the task."""
    infra_losses: int = 0
    """Lost to the machines: killed workers, lost nodes, stale leases, full disks."""
    stopped: int = 0
    """Given up because the job was stopped (Ctrl-C, SIGTERM): nobody's fault, redone on resume."""

    def __str__(self) -> str:
        text = (f"attempts: {self.input_failures} failed on their input, {self.crashes} crashed or hung, "
                f"{self.infra_losses} lost to the infrastructure")
        return text + (f", {self.stopped} given up on a stop request" if self.stopped else "")


class Ledger:
    """Durable job state. One process (the scheduler) writes; any process may read."""

    def __init__(self, path: str | Path, retry: RetryPolicy = RetryPolicy()) -> None:
        self.path = Path(path)
        self.retry = retry
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        with self._disk_full_stops_the_job():
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            for table, columns in _COLUMNS_ADDED.items():
                present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
                for name, kind in columns.items():
                    if name not in present:
                        self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._disk_full_stops_the_job():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    @contextmanager
    def _disk_full_stops_the_job(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            # SQLite may report a full disk as an I/O error (growing its WAL index): tell by the free space
            io_error = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == sqlite3.SQLITE_IOERR
            if not (is_disk_full(exc) or io_error and shutil.disk_usage(self.path.parent).free < _NEARLY_FULL):
                raise
            raise job_disk_full(self.path) from None

    # -- the job ---------------------------------------------------------------------------------

    def init_job(self, *, fingerprint: str, spec: dict[str, Any], version: str, output_root: str) -> bool:
        """Record the job, or check that the stored one has the same fingerprint. True when new."""
        row = self._db.execute("SELECT fingerprint, spec FROM job").fetchone()
        if row is not None:
            if row["fingerprint"] != fingerprint:
                raise JobMismatchError(
                    f"{self.path.parent}: this job directory holds a job with another pipeline "
                    f"(fingerprint {row['fingerprint'][:12]}, now {fingerprint[:12]}); "
                    "use a new --job-dir to start a new job, or rerun with the original options"
                )
            return False
        with self._write() as db:
            db.execute(
                "INSERT INTO job VALUES (1, ?, ?, ?, ?, ?, ?)",
                (SCHEMA_VERSION, time.time(), fingerprint, json.dumps(spec, sort_keys=True), version, output_root),
            )
        return True

    def setting(self, key: str) -> str | None:
        """A job setting that later runs must keep (e.g. where segment parts wait), or None."""
        row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def keep_setting(self, key: str, value: str) -> str:
        """Record `value` for `key` unless one is recorded; return the recorded one."""
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO settings VALUES (?, ?)", (key, value))
        return self.setting(key) or value

    def put_setting(self, key: str, value: str) -> None:
        """Record `value` for `key`, replacing the one recorded (e.g. the prediction of the latest plan)."""
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (key, value))

    def job(self) -> JobRecord | None:
        """The job, or None before `init_job`."""
        row = self._db.execute(
            "SELECT created, fingerprint, spec, framefleet_version, output_root FROM job").fetchone()
        return None if row is None else JobRecord(**{**row, "spec": json.loads(row["spec"])})

    # -- items -----------------------------------------------------------------------------------

    def add_items(self, refs: Iterable[tuple[str, str, int | None, str | None, str]], now: float | None = None) -> int:
        """Add (uri, relpath, size, version, output_uri) items; a known uri with a new version starts over.

        Returns how many items were added or restarted.
        """
        now = time.time() if now is None else now
        changed = 0
        with self._write() as db:
            for uri, relpath, size, version, output_uri in refs:
                row = db.execute("SELECT id, version FROM items WHERE uri = ?", (uri,)).fetchone()
                if row is not None and row["version"] == version:
                    continue
                if row is not None:  # the file changed since it was recorded: a new version
                    db.execute("DELETE FROM metrics WHERE item_id = ?", (row["id"],))
                    db.execute("DELETE FROM attempts WHERE task_id IN (SELECT id FROM tasks WHERE item_id = ?)",
                               (row["id"],))
                    db.execute("DELETE FROM tasks WHERE item_id = ?", (row["id"],))
                    db.execute(
                        "UPDATE items SET size = ?, version = ?, state = 'pending', error = NULL, frames = NULL, "
                        "finished = NULL WHERE id = ?",
                        (size, version, row["id"]),
                    )
                    item_id = row["id"]
                else:
                    item_id = db.execute(
                        "INSERT INTO items (uri, relpath, size, version, output_uri, state, created) "
                        "VALUES (?, ?, ?, ?, ?, 'pending', ?)",
                        (uri, relpath, size, version, output_uri, now),
                    ).lastrowid
                db.execute(
                    "INSERT INTO tasks (item_id, kind, seq, state) VALUES (?, 'probe', 0, 'pending')", (item_id,)
                )
                changed += 1
        return changed

    def items(self, state: str | None = None) -> list[Item]:
        query = "SELECT * FROM items" + (" WHERE state = ?" if state else "") + " ORDER BY id"
        rows = self._db.execute(query, (state,) if state else ())
        return [
            Item(r["id"], r["uri"], r["relpath"], r["output_uri"], r["state"], r["size"], r["version"],
                 r["frames"], r["error"])
            for r in rows
        ]

    # -- claiming and leases ---------------------------------------------------------------------

    def claim(self, worker: str, lease_seconds: float, now: float | None = None) -> Task | None:
        """Lease the next runnable task to `worker`: joins first, then segments, then probes, oldest item first."""
        now = time.time() if now is None else now
        with self._write() as db:
            row = db.execute(
                "SELECT t.*, i.uri, i.output_uri FROM tasks t JOIN items i ON i.id = t.item_id "
                "WHERE t.state = 'pending' AND t.not_before <= ? "
                "ORDER BY CASE t.kind WHEN 'join' THEN 0 WHEN 'segment' THEN 1 ELSE 2 END, t.item_id, t.seq "
                "LIMIT 1",
                (now,),
            ).fetchone()
            if row is None:
                return None
            lease = db.execute(
                "INSERT INTO attempts (task_id, worker, started) VALUES (?, ?, ?)", (row["id"], worker, now)
            ).lastrowid
            db.execute(
                "UPDATE tasks SET state = 'running', lease_id = ?, lease_owner = ?, lease_expires = ? WHERE id = ?",
                (lease, worker, now + lease_seconds, row["id"]),
            )
            db.execute("UPDATE items SET state = 'running' WHERE id = ? AND state = 'pending'", (row["item_id"],))
        return Task(row["id"], row["item_id"], row["kind"], row["seq"], row["start_pts"], row["end_pts"], lease,
                    row["uri"], row["output_uri"])

    def heartbeat(self, task: Task, lease_seconds: float, now: float | None = None) -> bool:
        """Extend the lease; False when the lease is no longer the newest (the work must stop)."""
        now = time.time() if now is None else now
        with self._write() as db:
            updated = db.execute(
                "UPDATE tasks SET lease_expires = ? WHERE id = ? AND lease_id = ? AND state = 'running'",
                (now + lease_seconds, task.id, task.lease_id),
            ).rowcount
        return updated == 1

    def expire_leases(self, now: float | None = None) -> int:
        """Return running tasks whose lease ran out to pending (an infrastructure loss)."""
        now = time.time() if now is None else now
        with self._write() as db:
            rows = db.execute(
                "SELECT id, lease_id FROM tasks WHERE state = 'running' AND lease_expires < ?", (now,)
            ).fetchall()
            for row in rows:
                self._release(db, row["id"], row["lease_id"], "lost", "lease expired", now)
        return len(rows)

    def release_all_running(self, outcome: Outcome, message: str, now: float | None = None) -> int:
        """Return every running task to pending (after a killed or stopped scheduler)."""
        now = time.time() if now is None else now
        with self._write() as db:
            rows = db.execute("SELECT id, lease_id FROM tasks WHERE state = 'running'").fetchall()
            for row in rows:
                self._release(db, row["id"], row["lease_id"], outcome, message, now)
        return len(rows)

    # -- outcomes --------------------------------------------------------------------------------

    def complete(
        self,
        task: Task,
        *,
        result: TaskOutcome | None = None,
        metrics: TaskMetrics | None = None,
        segments: list[Segment] | None = None,
        now: float | None = None,
    ) -> bool:
        """Record a finished task under its lease; False (and nothing changes) when the lease is stale.

        A probe passes the item's `segments`; the last segment done makes the join pending (or finishes a
        one-segment item); a done join finishes the item.
        """
        now = time.time() if now is None else now
        with self._write() as db:
            if not self._holds_lease(db, task):
                self._close_attempt(db, task.lease_id, "stale", now, None, "lease superseded", None)
                return False
            self._close_attempt(db, task.lease_id, "done", now, None, None, None)
            db.execute(
                "UPDATE tasks SET state = 'done', result = ?, lease_owner = NULL, lease_expires = NULL WHERE id = ?",
                (outcome_json(result) if result is not None else None, task.id),
            )
            if metrics is not None:
                db.execute(
                    "INSERT OR REPLACE INTO metrics (task_id, item_id, finished, frames, seconds, decode_s, ops_s, "
                    "encode_s, upload_s, bytes_in, bytes_out, steps_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (task.id, task.item_id, now, int(metrics.frames), metrics.seconds, metrics.decode_s,
                     metrics.ops_s, metrics.encode_s, metrics.upload_s, int(metrics.bytes_in),
                     int(metrics.bytes_out), json.dumps(metrics.steps_s)),
                )
            if task.kind == "probe":
                self._plan_segments(db, task, segments or [Segment(None, None)],
                                    result if isinstance(result, ProbeResult) else ProbeResult())
            elif task.kind == "segment":
                self._after_segment(db, task.item_id, now)
            else:
                self._finish_item(db, task.item_id, now)
        return True

    def fail(
        self,
        task: Task,
        outcome: Outcome,
        *,
        error_type: str,
        message: str,
        log_tail: str | None = None,
        now: float | None = None,
        final: bool = False,
    ) -> str:
        """Record a failed attempt. Returns the task's new state: pending (retry), failed, or cancelled (its item
        failed meanwhile through another task); "stale" when the lease is no longer the newest. `final` (an
        input error that another attempt cannot change) fails the item now, whatever its retry budget.
        """
        now = time.time() if now is None else now
        with self._write() as db:
            if not self._holds_lease(db, task):
                self._close_attempt(db, task.lease_id, "stale", now, error_type, message, log_tail)
                return "stale"
            return self._release(db, task.id, task.lease_id, outcome, message, now, error_type, log_tail, final)

    def retry_failed(self, now: float | None = None) -> int:
        """Put failed items back to pending with fresh retry budgets. Returns how many."""
        now = time.time() if now is None else now
        with self._write() as db:
            ids = [r["id"] for r in db.execute("SELECT id FROM items WHERE state = 'failed'")]
            for item_id in ids:
                db.execute(
                    "UPDATE tasks SET state = 'pending', input_failures = 0, crashes = 0, not_before = 0 "
                    "WHERE item_id = ? AND state IN ('failed', 'cancelled') AND kind != 'join'",
                    (item_id,),
                )
                db.execute(
                    "UPDATE tasks SET state = 'waiting', input_failures = 0, crashes = 0, not_before = 0 "
                    "WHERE item_id = ? AND state IN ('failed', 'cancelled') AND kind = 'join'",
                    (item_id,),
                )
                db.execute("UPDATE items SET state = 'pending', error = NULL, finished = NULL WHERE id = ?", (item_id,))
                self._after_segment(db, item_id, now)
        return len(ids)

    # -- reading ---------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Items per state (every state present, zero when none)."""
        counts = {s: 0 for s in ("pending", "running", "done", "failed")}
        for row in self._db.execute("SELECT state, COUNT(*) AS n FROM items GROUP BY state"):
            counts[row["state"]] = row["n"]
        return counts

    def task_counts(self) -> dict[str, int]:
        counts = {s: 0 for s in ("waiting", "pending", "running", "done", "failed", "cancelled")}
        for row in self._db.execute("SELECT state, COUNT(*) AS n FROM tasks GROUP BY state"):
            counts[row["state"]] = row["n"]
        return counts

    def unfinished(self) -> int:
        """Tasks that may still run (pending, running or waiting)."""
        row = self._db.execute(
            "SELECT COUNT(*) FROM tasks WHERE state IN ('pending', 'running', 'waiting')"
        ).fetchone()
        return row[0]

    def segment_count(self, item_id: int) -> int:
        """How many segments an item was split into."""
        return self._db.execute(
            "SELECT COUNT(*) FROM tasks WHERE item_id = ? AND kind = 'segment'", (item_id,)
        ).fetchone()[0]

    def frame_totals(self) -> tuple[int, int]:
        """(frames in finished segment tasks, frames the probes expect in all live items)."""
        done = self._db.execute(
            "SELECT COALESCE(SUM(m.frames), 0) FROM metrics m JOIN tasks t ON t.id = m.task_id "
            "WHERE t.kind = 'segment'"
        ).fetchone()[0]
        expected = self._db.execute(
            "SELECT COALESCE(SUM(frames), 0) FROM items WHERE state != 'failed'"
        ).fetchone()[0]
        return done, expected

    def frames_estimate(self) -> tuple[int, int]:
        """(frames the live items hold, how many of those items are not probed yet). An item not probed yet
        counts at the probed items' frames per byte of input, so the total does not jump as probes finish."""
        known, known_bytes, unknown_bytes, unknown = self._db.execute(
            "SELECT COALESCE(SUM(frames), 0), COALESCE(SUM(CASE WHEN frames IS NOT NULL THEN size END), 0), "
            "COALESCE(SUM(CASE WHEN frames IS NULL THEN size END), 0), COUNT(*) - COUNT(frames) "
            "FROM items WHERE state != 'failed'"
        ).fetchone()
        if unknown and known and known_bytes:
            known += round(unknown_bytes * known / known_bytes)
        return known, unknown

    def next_ready_time(self) -> float | None:
        """When the earliest pending task becomes claimable (None when nothing is pending)."""
        row = self._db.execute("SELECT MIN(not_before) FROM tasks WHERE state = 'pending'").fetchone()
        return row[0]

    def attempts(self, item_id: int | None = None) -> list[dict[str, Any]]:
        query = (
            "SELECT a.*, t.kind, t.seq, t.item_id FROM attempts a JOIN tasks t ON t.id = a.task_id"
            + (" WHERE t.item_id = ?" if item_id is not None else "")
            + " ORDER BY a.id"
        )
        return [dict(r) for r in self._db.execute(query, (item_id,) if item_id is not None else ())]

    def losses(self) -> Losses:
        """The job's attempts that did not end done, by cause."""
        counts = dict(self._db.execute("SELECT outcome, COUNT(*) FROM attempts GROUP BY outcome").fetchall())
        return Losses(input_failures=counts.get("input_error", 0),
                      crashes=sum(counts.get(outcome, 0) for outcome in CRASH_OUTCOMES),
                      infra_losses=sum(counts.get(outcome, 0) for outcome in INFRA_OUTCOMES),
                      stopped=counts.get("interrupted", 0))

    def activity(self) -> Activity:
        """How many attempts ran, from when to when, and which workers hold one now."""
        count, first, last = self._db.execute("SELECT COUNT(*), MIN(started), MAX(ended) FROM attempts").fetchone()
        running = [row[0] for row in self._db.execute(
            "SELECT DISTINCT worker FROM attempts WHERE outcome IS NULL ORDER BY worker")]
        return Activity(attempts=count, first_started=first, last_ended=last, running_workers=running)

    def busy_since(self, since: float) -> float | None:
        """When the work of the time from `since` began: the claim of the earliest attempt that ended at or
        after `since` or runs still (None when none did). Later than `since` when the job (or this run of
        it) started after it."""
        return self._db.execute("SELECT MIN(started) FROM attempts WHERE ended IS NULL OR ended >= ?",
                                (since,)).fetchone()[0]

    def failures(self) -> list[Failure]:
        """Failed items with their error and attempt counts."""
        rows = self._db.execute(
            "SELECT i.id, i.uri, i.error, "
            "(SELECT COUNT(*) FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE t.item_id = i.id) AS attempts, "
            "(SELECT a.error_type FROM attempts a JOIN tasks t ON t.id = a.task_id "
            " WHERE t.item_id = i.id AND a.error_type IS NOT NULL ORDER BY a.id DESC LIMIT 1) AS error_type, "
            "(SELECT a.log_tail FROM attempts a JOIN tasks t ON t.id = a.task_id "
            " WHERE t.item_id = i.id AND a.log_tail IS NOT NULL ORDER BY a.id DESC LIMIT 1) AS log_tail "
            "FROM items i WHERE i.state = 'failed' ORDER BY i.id"
        )
        return [Failure(**r) for r in rows]

    def damaged(self) -> list[Damage]:
        """Tasks done from partly damaged inputs, in item order."""
        rows = self._db.execute(
            "SELECT i.uri, t.seq, json_extract(t.result, '$.damage') AS damage FROM tasks t "
            "JOIN items i ON i.id = t.item_id WHERE t.state = 'done' "
            "AND json_extract(t.result, '$.damage') IS NOT NULL ORDER BY i.id, t.seq"
        )
        return [Damage(uri=r["uri"], seq=r["seq"], **json.loads(r["damage"])) for r in rows]

    def runtimes(self) -> list[str]:
        """What ran the models of the done tasks ("style: openvino bf16"), each once, in the order first seen."""
        rows = self._db.execute(
            "SELECT DISTINCT json_extract(result, '$.runtime') AS runtime FROM tasks WHERE state = 'done' "
            "AND json_extract(result, '$.runtime') IS NOT NULL ORDER BY rowid"
        )
        return [r["runtime"] for r in rows]

    def item_metrics(self, state: str | None = None, limit: int | None = None,
                     offset: int = 0) -> list[ItemMetrics]:
        """Per-item totals of the per-task metrics, in item order: the items in `state` (default: all),
        `limit` of them (default: all) from `offset`. Only those items are read (a page costs its size, not
        the job's).
        Bytes are the video's, not the sum of its tasks' (a split video's segments read the input again and
        write parts that the join reads and writes once more): in = what its probe read, else its tasks';
        out = what its join wrote, else its tasks'."""
        # Only the page's items are read: `page` picks them (by the items_by_state index when a state is
        # given), metrics_by_item finds their metrics, and `+d.state` makes SQLite find an item's damaged
        # tasks by item (its few) rather than by state (all the job's done tasks, for each item).
        page = ("SELECT * FROM items" + (" WHERE state = ?" if state is not None else "")
                + " ORDER BY id LIMIT ? OFFSET ?")
        rows = self._db.execute(
            "SELECT i.id, i.uri, CASE WHEN i.state = 'done' THEN i.output_uri END AS output_uri, i.state, "
            "i.error, (SELECT group_concat(summary, '; ') FROM "
            " (SELECT json_extract(d.result, '$.damage.summary') AS summary FROM tasks d WHERE d.item_id = i.id "
            "  AND +d.state = 'done' AND json_extract(d.result, '$.damage') IS NOT NULL ORDER BY d.seq)) AS damage, "
            "i.frames AS item_frames, "
            "COUNT(m.task_id) AS tasks, COALESCE(SUM(m.frames), 0) AS frames, "
            "COALESCE(SUM(m.seconds), 0) AS seconds, COALESCE(SUM(m.decode_s), 0) AS decode_s, "
            "COALESCE(SUM(m.ops_s), 0) AS ops_s, COALESCE(SUM(m.encode_s), 0) AS encode_s, "
            "COALESCE(SUM(m.upload_s), 0) AS upload_s, "
            "COALESCE(MAX(CASE WHEN t.kind = 'probe' THEN m.bytes_in END), "
            "         SUM(CASE WHEN t.kind NOT IN ('probe', 'join') THEN m.bytes_in END), 0) AS bytes_in, "
            "COALESCE(MAX(CASE WHEN t.kind = 'join' THEN m.bytes_out END), "
            "         SUM(CASE WHEN t.kind NOT IN ('probe', 'join') THEN m.bytes_out END), 0) AS bytes_out "
            ", json_group_array(json(m.steps_s)) AS steps "
            f"FROM ({page}) i LEFT JOIN metrics m ON m.item_id = i.id LEFT JOIN tasks t ON t.id = m.task_id "
            "GROUP BY i.id ORDER BY i.id",
            (*([state] if state is not None else []), -1 if limit is None else limit, offset),
        )
        found = []
        for row in rows:
            values = dict(row)
            steps = [step for step in json.loads(values.pop("steps")) if step]
            fps = values["frames"] / values["seconds"] if values["seconds"] > 0 else 0.0
            found.append(ItemMetrics(**values, steps_s=_summed(steps), fps=fps))
        return found

    def stage_seconds(self) -> dict[str, float]:
        """The job's seconds by stage of a task (decode, ops, encode, upload), over every finished task."""
        row = self._db.execute("SELECT " + ", ".join(f"COALESCE(SUM({stage}_s), 0)" for stage in STAGES)
                               + " FROM metrics").fetchone()
        return dict(zip(STAGES, row))

    def step_seconds(self) -> dict[str, float]:
        """The job's op time by step of the op chain, over every finished task."""
        return _summed(json.loads(text) for (text,) in self._db.execute("SELECT steps_s FROM metrics"))

    def task_metrics(self) -> list[dict[str, Any]]:
        """The metrics of every finished task with its kind and seq, by item then task."""
        rows = self._db.execute(
            "SELECT m.*, t.kind, t.seq FROM metrics m JOIN tasks t ON t.id = m.task_id ORDER BY m.item_id, t.id"
        )
        return [dict(r) for r in rows]

    def task_spans(self) -> list[tuple[float, float, int]]:
        """(start, end, frames) of every finished task: the attempt that did it, from its claim to its end."""
        return [(r[0], r[1], r[2]) for r in self._db.execute(
            "SELECT a.started, a.ended, m.frames FROM metrics m "
            "JOIN attempts a ON a.task_id = m.task_id AND a.outcome = 'done' ORDER BY a.started")]

    def throughput(self) -> list[tuple[float, int]]:
        """(finish time, frames) of every finished task, in time order: the throughput curve."""
        return [(r[0], r[1]) for r in self._db.execute("SELECT finished, frames FROM metrics ORDER BY finished")]

    # -- internals -------------------------------------------------------------------------------

    def _holds_lease(self, db: sqlite3.Connection, task: Task) -> bool:
        row = db.execute("SELECT state, lease_id FROM tasks WHERE id = ?", (task.id,)).fetchone()
        return row is not None and row["state"] == "running" and row["lease_id"] == task.lease_id

    @staticmethod
    def _close_attempt(db, lease_id, outcome, now, error_type, message, log_tail) -> None:
        error_type, message, log_tail = _redacted(error_type), _redacted(message), _redacted(log_tail)
        db.execute(
            "UPDATE attempts SET ended = ?, outcome = ?, error_type = ?, message = ?, log_tail = ? "
            "WHERE id = ? AND outcome IS NULL",
            (now, outcome, error_type, message, log_tail, lease_id),
        )

    def _release(self, db, task_id, lease_id, outcome, message, now, error_type=None, log_tail=None,
                 final=False) -> str:
        message = _redacted(message)
        self._close_attempt(db, lease_id, outcome, now, error_type, message, log_tail)
        row = db.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
        if outcome == "input_error":
            used = row["input_failures"] + 1
            db.execute("UPDATE tasks SET input_failures = ? WHERE id = ?", (used, task_id))
            exhausted = final or used >= self.retry.max_attempts
            delay = self.retry.backoff_seconds * 2 ** (used - 1)
            reason = message
        elif outcome in CRASH_OUTCOMES:
            used = row["crashes"] + 1
            db.execute("UPDATE tasks SET crashes = ? WHERE id = ?", (used, task_id))
            exhausted = used >= self.retry.max_crashes
            delay = self.retry.backoff_seconds * 2 ** (used - 1)
            reason = f"the worker {outcome} {used} times on this input (last: {message})"
        elif outcome == "interrupted":  # a stop request: retried at once when the job resumes, never counted
            exhausted, reason, delay = False, message, 0.0
        else:
            losses = row["infra_losses"] + 1
            db.execute("UPDATE tasks SET infra_losses = ? WHERE id = ?", (losses, task_id))
            # The first loss is retried at once (a killed worker); repeated ones (a store that is down)
            # back off, capped, and never fail the item.
            delay = 0.0 if losses == 1 else min(self.retry.backoff_seconds * 2 ** (losses - 2), INFRA_BACKOFF_CAP)
            exhausted, reason = False, message
        if exhausted:
            db.execute(
                "UPDATE tasks SET state = 'failed', lease_owner = NULL, lease_expires = NULL WHERE id = ?", (task_id,)
            )
            db.execute(
                "UPDATE tasks SET state = 'cancelled' WHERE item_id = ? AND state IN ('pending', 'waiting')",
                (row["item_id"],),
            )
            db.execute(
                "UPDATE items SET state = 'failed', error = ?, finished = ? WHERE id = ?",
                (_redacted(reason), now, row["item_id"]),
            )
            return "failed"
        item_state = db.execute("SELECT state FROM items WHERE id = ?", (row["item_id"],)).fetchone()[0]
        state = "cancelled" if item_state == "failed" else "pending"  # a sibling task failed the item meanwhile
        db.execute(
            "UPDATE tasks SET state = ?, lease_owner = NULL, lease_expires = NULL, not_before = ? WHERE id = ?",
            (state, now + delay, task_id),
        )
        return state

    def _plan_segments(self, db, task: Task, segments: list[Segment], probe: ProbeResult) -> None:
        db.execute("UPDATE items SET frames = ?, duration = ? WHERE id = ?",
                   (probe.frames, probe.duration, task.item_id))
        for seq, segment in enumerate(segments):
            db.execute(
                "INSERT OR IGNORE INTO tasks (item_id, kind, seq, start_pts, end_pts, state) "
                "VALUES (?, 'segment', ?, ?, ?, 'pending')",
                (task.item_id, seq, segment.start_pts, segment.end_pts),
            )
        if len(segments) > 1:
            db.execute(
                "INSERT OR IGNORE INTO tasks (item_id, kind, seq, state) VALUES (?, 'join', 0, 'waiting')",
                (task.item_id,),
            )

    def _after_segment(self, db, item_id: int, now: float) -> None:
        left = db.execute(
            "SELECT COUNT(*) FROM tasks WHERE item_id = ? AND kind = 'segment' AND state != 'done'", (item_id,)
        ).fetchone()[0]
        total = db.execute(
            "SELECT COUNT(*) FROM tasks WHERE item_id = ? AND kind = 'segment'", (item_id,)
        ).fetchone()[0]
        if left or not total:
            return
        has_join = db.execute(
            "UPDATE tasks SET state = 'pending' WHERE item_id = ? AND kind = 'join' AND state = 'waiting'", (item_id,)
        ).rowcount
        joins = db.execute("SELECT COUNT(*) FROM tasks WHERE item_id = ? AND kind = 'join'", (item_id,)).fetchone()[0]
        if not has_join and not joins:
            self._finish_item(db, item_id, now)

    @staticmethod
    def _finish_item(db, item_id: int, now: float) -> None:
        db.execute("UPDATE items SET state = 'done', error = NULL, finished = ? WHERE id = ?", (now, item_id))


def _redacted(text: str | None) -> str | None:
    """Free text (an error, a log tail) as it may be stored: without credentials."""
    return None if text is None else redact(text)
