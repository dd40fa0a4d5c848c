"""The ledger's SQLite schema (documented in docs/ledger.md), opening it (WAL, the columns later versions
added), and its write transactions, where a full disk stops the job with a clear error."""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from framefleet.errors import is_disk_full, job_disk_full

SCHEMA_VERSION = 2
"""1: the first layout; 2: attempts may end `preempted` (a ledger made before is rebuilt when opened)."""

OUTCOMES = ("done", "input_error", "crashed", "hung", "lost", "interrupted", "stale", "preempted")
"""How an attempt may end (`framefleet.jobs.transitions.Outcome`): the attempts table's CHECK."""

_ATTEMPTS = """
CREATE TABLE IF NOT EXISTS {name} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- lease ids: never reused, even after add_items deletes rows
    task_id INTEGER NOT NULL REFERENCES tasks(id),
    worker TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    outcome TEXT CHECK (outcome IN ({outcomes})),
    error_type TEXT,
    message TEXT,
    log_tail TEXT
);
"""

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
    finished REAL,
    adopted INTEGER NOT NULL DEFAULT 0
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
-- the order claims hand tasks out in (joins, then segments, then probes, oldest item first): a claim reads
-- the first ready row instead of sorting every pending task
CREATE INDEX IF NOT EXISTS tasks_claim_order ON tasks (
    state, (CASE kind WHEN 'join' THEN 0 WHEN 'segment' THEN 1 ELSE 2 END), item_id, seq);
""" + _ATTEMPTS.format(name="attempts", outcomes=", ".join(f"'{o}'" for o in OUTCOMES)) + """
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

_COLUMNS_ADDED = {"metrics": {"steps_s": "TEXT NOT NULL DEFAULT '{}'"},
                  "items": {"adopted": "INTEGER NOT NULL DEFAULT 0"}}
"""Columns added since the first schema: a ledger made before gets them when opened."""


_BUSY_SECONDS = 30.0
"""How long a connection waits for another's lock on the ledger."""

_NEARLY_FULL = 1 << 20
"""Bytes free below which an SQLite I/O error on the ledger is taken for a full disk."""


def connect(path: Path) -> sqlite3.Connection:
    """The ledger at `path`, made or brought up to date: WAL mode, the schema, the columns added since."""
    db = sqlite3.connect(path, timeout=_BUSY_SECONDS, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    with disk_full_stops_the_job(path):
        _use_wal(db)
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(_SCHEMA)
        for table, columns in _COLUMNS_ADDED.items():
            present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            for name, kind in columns.items():
                if name not in present:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
        _allow_every_outcome(db)
    return db


def _use_wal(db: sqlite3.Connection) -> None:
    """Put the ledger in WAL mode. On a new file that takes a lock SQLite does not wait for: a second process
    opening the ledger at the same moment (`status` while `run` creates it) got "database is locked" at once,
    so wait here as for any other lock."""
    deadline = time.monotonic() + _BUSY_SECONDS
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if (exc.sqlite_errorcode & 0xFF) != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _allow_every_outcome(db: sqlite3.Connection) -> None:
    """Rebuild the attempts table of a ledger whose CHECK predates an outcome (schema 1: no `preempted`),
    keeping every row and id, and the AUTOINCREMENT counter (lease ids are never reused), in one transaction."""
    sql = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'attempts'").fetchone()[0]
    if all(f"'{outcome}'" in sql for outcome in OUTCOMES):
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        counter = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'attempts'").fetchone()
        db.execute(_ATTEMPTS.format(name="attempts_rebuilt", outcomes=", ".join(f"'{o}'" for o in OUTCOMES)))
        db.execute("INSERT INTO attempts_rebuilt SELECT id, task_id, worker, started, ended, outcome, error_type, "
                   "message, log_tail FROM attempts")
        db.execute("DROP TABLE attempts")
        db.execute("ALTER TABLE attempts_rebuilt RENAME TO attempts")
        db.execute("CREATE INDEX IF NOT EXISTS attempts_by_task ON attempts (task_id)")
        if counter is not None:  # at least every id kept: the next lease goes on from the old counter
            db.execute("DELETE FROM sqlite_sequence WHERE name = 'attempts'")
            db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('attempts', ?)", (counter[0],))
        db.execute("UPDATE job SET schema_version = ?", (SCHEMA_VERSION,))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


@contextmanager
def write_transaction(db: sqlite3.Connection, path: Path, *, nested: bool = False) -> Iterator[sqlite3.Connection]:
    """One write transaction (BEGIN IMMEDIATE), rolled back on any error; `nested`: one write inside an open
    transaction (`Ledger.batch`), a savepoint undone alone on any error."""
    begin, done, undo = (("SAVEPOINT ledger_write", "RELEASE ledger_write", ("ROLLBACK TO ledger_write",
                                                                          "RELEASE ledger_write"))
                         if nested else ("BEGIN IMMEDIATE", "COMMIT", ("ROLLBACK",)))
    with disk_full_stops_the_job(path):
        db.execute(begin)
        try:
            yield db
            db.execute(done)
        except BaseException:
            if db.in_transaction:
                for statement in undo:
                    db.execute(statement)
            raise


@contextmanager
def disk_full_stops_the_job(path: Path) -> Iterator[None]:
    """SQLite's full-disk errors on the ledger at `path` as the job's `DiskFullError`."""
    try:
        yield
    except sqlite3.Error as exc:
        # SQLite may report a full disk as an I/O error (growing its WAL index): tell by the free space
        io_error = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == sqlite3.SQLITE_IOERR
        if not (is_disk_full(exc) or io_error and shutil.disk_usage(path.parent).free < _NEARLY_FULL):
            raise
        raise job_disk_full(path) from None
