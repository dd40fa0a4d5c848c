"""How a task's attempt ends, inside the store's write transactions: which lease may still act, what a loss
costs against the retry policy (`release`), and what follows a finished task (a probe plans segments, the
last segment makes the join ready, the item is done). Functions of an open SQLite connection, so the store
(`framefleet.jobs.store`) keeps the transactions and this module the rules.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Literal

from framefleet.jobs.results import ProbeResult, Segment, TaskMetrics
from framefleet.settings import RetryPolicy
from framefleet.util.redact import redact

TaskKind = Literal["probe", "segment", "join"]
ItemState = Literal["pending", "running", "done", "failed"]
Outcome = Literal["done", "input_error", "crashed", "hung", "lost", "interrupted", "stale", "preempted"]
INFRA_OUTCOMES = frozenset({"lost", "stale"})
"""Attempts lost to the machines; "interrupted" ones were given up on a stop request; "preempted" ones
were given back on a cloud's preemption notice (an infrastructure loss too, counted apart)."""
CRASH_OUTCOMES = frozenset({"crashed", "hung"})
INFRA_BACKOFF_CAP = 30.0
"""Seconds: the longest wait before retrying a task after repeated infrastructure losses."""


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
    input_size: int | None = None
    input_version: str | None = None


def holds_lease(db: sqlite3.Connection, task: Task) -> bool:
    """Whether `task`'s lease is still the newest (only it may complete or fail the task)."""
    row = db.execute("SELECT state, lease_id FROM tasks WHERE id = ?", (task.id,)).fetchone()
    return row is not None and row["state"] == "running" and row["lease_id"] == task.lease_id


def close_attempt(db: sqlite3.Connection, lease_id: int, outcome: Outcome, now: float, error_type: str | None,
                  message: str | None, log_tail: str | None) -> None:
    """End the attempt `lease_id` with `outcome` and its error, redacted."""
    error_type, message, log_tail = _redacted(error_type), _redacted(message), _redacted(log_tail)
    db.execute(
        "UPDATE attempts SET ended = ?, outcome = ?, error_type = ?, message = ?, log_tail = ? "
        "WHERE id = ? AND outcome IS NULL",
        (now, outcome, error_type, message, log_tail, lease_id),
    )


def release(db: sqlite3.Connection, retry: RetryPolicy, task_id: int, lease_id: int, outcome: Outcome,
            message: str, now: float, error_type: str | None = None, log_tail: str | None = None,
            final: bool = False) -> str:
    """End a task's attempt that did not finish it and charge the loss to its cause: an input failure or a
    crash uses up the retry budget (the item fails once it is spent, or at once when `final`), an
    infrastructure loss, a preemption or a stop request never does. Returns the task's new state."""
    message = _redacted(message)
    close_attempt(db, lease_id, outcome, now, error_type, message, log_tail)
    row = db.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
    if outcome == "input_error":
        used = row["input_failures"] + 1
        db.execute("UPDATE tasks SET input_failures = ? WHERE id = ?", (used, task_id))
        exhausted = final or used >= retry.max_attempts
        delay = retry.backoff_seconds * 2 ** (used - 1)
        reason = message
    elif outcome in CRASH_OUTCOMES:
        used = row["crashes"] + 1
        db.execute("UPDATE tasks SET crashes = ? WHERE id = ?", (used, task_id))
        exhausted = used >= retry.max_crashes
        delay = retry.backoff_seconds * 2 ** (used - 1)
        reason = f"the worker {outcome} {used} times on this input (last: {message})"
    elif outcome == "interrupted":  # a stop request: retried at once when the job resumes, never counted
        exhausted, reason, delay = False, message, 0.0
    elif outcome == "preempted":  # given back on a notice: the node goes, the task runs again at once elsewhere
        exhausted, reason, delay = False, message, 0.0
    else:
        losses = row["infra_losses"] + 1
        db.execute("UPDATE tasks SET infra_losses = ? WHERE id = ?", (losses, task_id))
        # The first loss is retried at once (a killed worker); repeated ones (a store that is down)
        # back off, capped, and never fail the item.
        delay = 0.0 if losses == 1 else min(retry.backoff_seconds * 2 ** (losses - 2), INFRA_BACKOFF_CAP)
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


def plan_segments(db: sqlite3.Connection, task: Task, segments: list[Segment], probe: ProbeResult) -> None:
    """After a probe: the item's frames and duration, its segment tasks, and a join when there are several."""
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


def cut_segment(db: sqlite3.Connection, task: Task, cut_at: int) -> None:
    """A segment cut at `cut_at` on a preemption notice: its row now holds the part it made, [start, cut_at),
    and a new pending segment task the rest, with the item's next free seq (the join orders parts by start)."""
    db.execute("UPDATE tasks SET end_pts = ? WHERE id = ?", (cut_at, task.id))
    db.execute(
        "INSERT INTO tasks (item_id, kind, seq, start_pts, end_pts, state) SELECT ?, 'segment', MAX(seq) + 1, ?, ?, "
        "'pending' FROM tasks WHERE item_id = ? AND kind = 'segment'",
        (task.item_id, cut_at, task.end_pts, task.item_id),
    )


def after_segment(db: sqlite3.Connection, item_id: int, now: float) -> None:
    """After a segment: once all of the item's are done, its join becomes pending (or, with none, the item is done)."""
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
        finish_item(db, item_id, now)


def finish_item(db: sqlite3.Connection, item_id: int, now: float) -> None:
    """Mark an item done."""
    db.execute("UPDATE items SET state = 'done', error = NULL, finished = ? WHERE id = ?", (now, item_id))


def add_item(db: sqlite3.Connection, uri: str, relpath: str, size: int | None, version: str | None,
             output_uri: str, now: float) -> bool:
    """Add an item with its probe task; a known `uri` with a new version starts over (its tasks, attempts and
    metrics go). False when the item is known at this version: nothing changes."""
    row = db.execute("SELECT id, version FROM items WHERE uri = ?", (uri,)).fetchone()
    if row is not None and row["version"] == version:
        return False
    if row is not None:  # the file changed since it was recorded: a new version
        item_id = row["id"]
        db.execute("DELETE FROM metrics WHERE item_id = ?", (item_id,))
        db.execute("DELETE FROM attempts WHERE task_id IN (SELECT id FROM tasks WHERE item_id = ?)", (item_id,))
        db.execute("DELETE FROM tasks WHERE item_id = ?", (item_id,))
        db.execute("UPDATE items SET size = ?, version = ?, state = 'pending', error = NULL, frames = NULL, "
                   "finished = NULL, adopted = 0 WHERE id = ?", (size, version, item_id))
    else:
        item_id = db.execute("INSERT INTO items (uri, relpath, size, version, output_uri, state, created) "
                             "VALUES (?, ?, ?, ?, ?, 'pending', ?)",
                             (uri, relpath, size, version, output_uri, now)).lastrowid
    db.execute("INSERT INTO tasks (item_id, kind, seq, state) VALUES (?, 'probe', 0, 'pending')", (item_id,))
    return True


def record_metrics(db: sqlite3.Connection, task: Task, metrics: TaskMetrics, now: float) -> None:
    """Keep a finished task's metrics (one row per task: a later attempt's replace an earlier one's)."""
    db.execute(
        "INSERT OR REPLACE INTO metrics (task_id, item_id, finished, frames, seconds, decode_s, ops_s, "
        "encode_s, upload_s, bytes_in, bytes_out, steps_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (task.id, task.item_id, now, int(metrics.frames), metrics.seconds, metrics.decode_s, metrics.ops_s,
         metrics.encode_s, metrics.upload_s, int(metrics.bytes_in), int(metrics.bytes_out),
         json.dumps(metrics.steps_s)),
    )


def adopt_item(db: sqlite3.Connection, item_id: int, probe: ProbeResult, now: float) -> None:
    """A probe found the item's output already committed with a matching manifest: the item is done, with
    the manifest's frames, and nothing else runs."""
    db.execute("UPDATE items SET frames = ?, adopted = 1 WHERE id = ?", (probe.frames, item_id))
    finish_item(db, item_id, now)


def retry_item(db: sqlite3.Connection, item_id: int, now: float) -> None:
    """Put a failed item back: its failed and cancelled tasks run again with fresh budgets (its join waits
    for its segments again)."""
    for kinds, state in (("kind != 'join'", "pending"), ("kind = 'join'", "waiting")):
        db.execute(f"UPDATE tasks SET state = '{state}', input_failures = 0, crashes = 0, not_before = 0 "
                   f"WHERE item_id = ? AND state IN ('failed', 'cancelled') AND {kinds}", (item_id,))
    db.execute("UPDATE items SET state = 'pending', error = NULL, finished = NULL WHERE id = ?", (item_id,))
    after_segment(db, item_id, now)


def _redacted(text: str | None) -> str | None:
    """Free text (an error, a log tail) as it may be stored: without credentials."""
    return None if text is None else redact(text)
