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
from dataclasses import dataclass
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


_NEARLY_FULL = 1 << 20
"""Bytes free below which an SQLite I/O error on the ledger is taken for a full disk."""


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

    def query(self, sql: str, parameters: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        """A read on the ledger's connection (the read queries live in `framefleet.jobs.reads`)."""
        return self._db.execute(sql, parameters)

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
