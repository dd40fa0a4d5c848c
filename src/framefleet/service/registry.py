"""The service's job registry: one SQLite file listing every job the service knows, with its state.

Each job keeps its own ledger (items, tasks, attempts) in its own job directory; the registry only says
which jobs exist, what they were asked to do, and where they stand: `queued` (submitted, waiting for a
slot), `running`, `finished` (every item done or failed), `cancelled`, or `error` (the job itself could
not run, e.g. its inputs are gone). A submission is committed here before the HTTP answer goes out, so
an accepted job survives any crash of the service.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

JobKind = Literal["watch", "submitted"]
JOB_STATES = ("queued", "running", "finished", "cancelled", "error")
ACTIVE_STATES = ("queued", "running")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('watch', 'submitted')),
    name TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'finished', 'cancelled', 'error')),
    spec TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, seq);
"""


@dataclass(frozen=True)
class ServiceJob:
    """A job of the service, as its registry knows it (a job's own state is in its ledger: `JobRecord`)."""

    id: str
    kind: JobKind
    name: str
    state: str
    spec: dict[str, Any]
    """What the job does. A submitted job: `job`, its `JobSpec.to_dict()` (settings included, fixed when it
    was submitted), and `pipeline`, the options as submitted. A watch job: its rule (`WatchRule.spec`).
    (A registry written before framefleet 0.9 holds `inputs`, `output` and `pipeline` options instead of
    `job`.)"""
    created: float
    updated: float
    error: str | None

    @property
    def inputs(self) -> list[str]:
        """What the job reads: its inputs, or a watch rule's source."""
        if self.kind == "watch":
            return [self.spec["source"]]
        return list(self.spec["job"]["inputs"] if "job" in self.spec else self.spec["inputs"])

    @property
    def output(self) -> str:
        return self.spec["job"]["output"] if "job" in self.spec else self.spec["output"]


class Registry:
    """The jobs of one service. Thread-safe: API handlers and job threads share it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(
        self,
        kind: JobKind,
        name: str,
        spec: dict[str, Any],
        *,
        job_id: str | None = None,
        idempotency_key: str | None = None,
        state: str = "queued",
    ) -> tuple[ServiceJob, bool]:
        """Record a job; returns it and whether it is new. A known `idempotency_key` or `job_id` returns the
        job recorded with it (a client that retries a submission gets the same job, not a second one)."""
        now = time.time()
        job_id = job_id or f"job-{uuid.uuid4().hex[:12]}"
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                known = self._db.execute(
                    "SELECT * FROM jobs WHERE id = ? OR (idempotency_key IS NOT NULL AND idempotency_key = ?)",
                    (job_id, idempotency_key),
                ).fetchone()
                if known is None:
                    self._db.execute(
                        "INSERT INTO jobs (id, kind, name, state, spec, idempotency_key, created, updated) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (job_id, kind, name, state, json.dumps(spec, sort_keys=True), idempotency_key, now, now),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return (self.get(known["id"]), False) if known is not None else (self.get(job_id), True)

    def get(self, job_id: str) -> ServiceJob | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _record(row)

    def list(self, *, state: str | None = None, kind: str | None = None, limit: int = 100,
             offset: int = 0) -> tuple[list[ServiceJob], int]:
        """Jobs newest first, filtered; and how many match in all."""
        where, args = _filters(state=state, kind=kind)
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM jobs{where}", args).fetchone()[0]
            rows = self._db.execute(f"SELECT * FROM jobs{where} ORDER BY seq DESC LIMIT ? OFFSET ?",
                                    (*args, limit, offset)).fetchall()
        return [_record(r) for r in rows], total

    def named(self, kind: JobKind, name: str) -> list[ServiceJob]:
        """The jobs of a kind with this name, newest first."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs WHERE kind = ? AND name = ? ORDER BY seq DESC",
                                    (kind, name)).fetchall()
        return [_record(r) for r in rows]

    def active(self, *, queued_limit: int | None = None) -> list[ServiceJob]:
        """Running jobs, then queued ones (at most `queued_limit`), each oldest first: the start order."""
        with self._lock:
            running = self._db.execute("SELECT * FROM jobs WHERE state = 'running' ORDER BY seq").fetchall()
            queued = self._db.execute("SELECT * FROM jobs WHERE state = 'queued' ORDER BY seq LIMIT ?",
                                      (-1 if queued_limit is None else queued_limit,)).fetchall()
        return [_record(r) for r in (*running, *queued)]

    def counts(self) -> dict[str, int]:
        """Jobs per state (every state present)."""
        counts = {state: 0 for state in JOB_STATES}
        with self._lock:
            for row in self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
                counts[row[0]] = row[1]
        return counts

    def set_state(self, job_id: str, state: str, error: str | None = None, *, unless: tuple[str, ...] = ()) -> bool:
        """Move a job to `state` (with `error` for state `error`), unless it is in one of `unless`."""
        marks = ",".join("?" * len(unless))
        guard = f" AND state NOT IN ({marks})" if unless else ""
        with self._lock:
            updated = self._db.execute(
                f"UPDATE jobs SET state = ?, error = ?, updated = ? WHERE id = ?{guard}",
                (state, error, time.time(), job_id, *unless),
            ).rowcount
        return updated == 1

    def set_spec(self, job_id: str, spec: dict[str, Any]) -> None:
        """Replace what a job does (a watch rule whose interval changed)."""
        with self._lock:
            self._db.execute("UPDATE jobs SET spec = ?, updated = ? WHERE id = ?",
                             (json.dumps(spec, sort_keys=True), time.time(), job_id))


def _filters(**values: str | None) -> tuple[str, tuple[str, ...]]:
    clauses = [(f"{column} = ?", value) for column, value in values.items() if value is not None]
    if not clauses:
        return "", ()
    return " WHERE " + " AND ".join(c for c, _ in clauses), tuple(v for _, v in clauses)


def _record(row: sqlite3.Row) -> ServiceJob:
    return ServiceJob(id=row["id"], kind=row["kind"], name=row["name"], state=row["state"],
                     spec=json.loads(row["spec"]), created=row["created"], updated=row["updated"],
                     error=row["error"])
