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
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framefleet.errors import FramefleetError
from framefleet.jobs.results import (
    ProbeResult,
    Segment,
    SegmentResult,
    TaskMetrics,
    TaskOutcome,
    outcome_json,
)
from framefleet.jobs.schema import SCHEMA_VERSION, connect, write_transaction
from framefleet.jobs.transitions import (
    Outcome,
    Task,
    add_item,
    adopt_item,
    after_segment,
    close_attempt,
    cut_segment,
    finish_item,
    holds_lease,
    plan_segments,
    record_metrics,
    release,
    retry_item,
)
from framefleet.settings import RetryPolicy


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
    adopted: bool = False
    """Done by adopting an output already committed with a matching manifest (docs/ledger.md#adoption)."""


class Ledger:
    """Durable job state. One process (the scheduler) writes; any process may read."""

    def __init__(self, path: str | Path, retry: RetryPolicy = RetryPolicy()) -> None:
        self.path = Path(path)
        self.retry = retry
        self._db = connect(self.path)
        self._batched = False

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        return write_transaction(self._db, self.path, nested=self._batched)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Commit the writes made inside as one transaction: the scheduler's claims of one dispatch round,
        the results of one batch of events (a commit per write capped a driver at a few hundred tasks a
        second, `benchmarks/scale_sim.py`). Each write stays atomic (a savepoint of its own); when an error
        leaves the block, the writes that completed before it are committed, then the error goes on."""
        if self._batched:
            yield
            return
        error: BaseException | None = None
        with write_transaction(self._db, self.path):
            self._batched = True
            try:
                yield
            except BaseException as exc:  # noqa: BLE001 - the writes before it were whole: commit them
                error = exc
            finally:
                self._batched = False
        if error is not None:
            raise error

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
                changed += add_item(db, uri, relpath, size, version, output_uri, now)
        return changed

    def items(self, state: str | None = None) -> list[Item]:
        query = "SELECT * FROM items" + (" WHERE state = ?" if state else "") + " ORDER BY id"
        rows = self._db.execute(query, (state,) if state else ())
        return [
            Item(r["id"], r["uri"], r["relpath"], r["output_uri"], r["state"], r["size"], r["version"],
                 r["frames"], r["error"], bool(r["adopted"]))
            for r in rows
        ]

    # -- claiming and leases ---------------------------------------------------------------------

    def claim(self, worker: str, lease_seconds: float, now: float | None = None) -> Task | None:
        """Lease the next runnable task to `worker`: joins first, then segments, then probes, oldest item first."""
        now = time.time() if now is None else now
        with self._write() as db:
            row = db.execute(
                "SELECT t.*, i.uri, i.output_uri, i.size, i.version FROM tasks t INDEXED BY tasks_claim_order "
                "JOIN items i ON i.id = t.item_id "
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
                    row["uri"], row["output_uri"], row["size"], row["version"])

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
                release(db, self.retry, row["id"], row["lease_id"], "lost", "lease expired", now)
        return len(rows)

    def release_all_running(self, outcome: Outcome, message: str, now: float | None = None) -> int:
        """Return every running task to pending (after a killed or stopped scheduler)."""
        now = time.time() if now is None else now
        with self._write() as db:
            rows = db.execute("SELECT id, lease_id FROM tasks WHERE state = 'running'").fetchall()
            for row in rows:
                release(db, self.retry, row["id"], row["lease_id"], outcome, message, now)
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
            if not holds_lease(db, task):
                close_attempt(db, task.lease_id, "stale", now, None, "lease superseded", None)
                return False
            close_attempt(db, task.lease_id, "done", now, None, None, None)
            db.execute(
                "UPDATE tasks SET state = 'done', result = ?, lease_owner = NULL, lease_expires = NULL WHERE id = ?",
                (outcome_json(result) if result is not None else None, task.id),
            )
            if metrics is not None:
                record_metrics(db, task, metrics, now)
            probe = result if isinstance(result, ProbeResult) else ProbeResult()
            if task.kind == "probe" and probe.adopted is not None:
                adopt_item(db, task.item_id, probe, now)
            elif task.kind == "probe":
                plan_segments(db, task, segments or [Segment(None, None)], probe)
            elif task.kind == "segment":
                if isinstance(result, SegmentResult) and result.cut_at is not None:
                    cut_segment(db, task, result.cut_at)
                after_segment(db, task.item_id, now)
            else:
                finish_item(db, task.item_id, now)
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
            if not holds_lease(db, task):
                close_attempt(db, task.lease_id, "stale", now, error_type, message, log_tail)
                return "stale"
            return release(db, self.retry, task.id, task.lease_id, outcome, message, now, error_type, log_tail, final)

    def retry_failed(self, now: float | None = None) -> int:
        """Put failed items back to pending with fresh retry budgets. Returns how many."""
        now = time.time() if now is None else now
        with self._write() as db:
            ids = [r["id"] for r in db.execute("SELECT id FROM items WHERE state = 'failed'")]
            for item_id in ids:
                retry_item(db, item_id, now)
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

    def has_unfinished(self) -> bool:
        """Whether any task may still run: what the scheduler asks on every turn (the first such row in the
        state index, where `unfinished` counts every one of them)."""
        return self._db.execute(
            "SELECT EXISTS (SELECT 1 FROM tasks WHERE state IN ('pending', 'running', 'waiting'))").fetchone()[0] == 1

    def query(self, sql: str, parameters: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        """A read on the ledger's connection (the read queries live in `framefleet.jobs.reads`)."""
        return self._db.execute(sql, parameters)
