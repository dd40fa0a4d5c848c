"""What `framefleet serve` prints per file: a line when a job takes a file, and one when it is done or failed.

The lines come from the job's ledger, the single source of truth: each look compares the items with the
previous look, so a file taken and finished between two looks still gets both lines, and a file replaced
by a new version is taken again. What a job's ledger held before its first look is not news.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from framefleet.jobs.directory import JobDir
from framefleet.jobs.reads import LedgerReads, reason_of
from framefleet.jobs.store import Item, Ledger

LOOK_SECONDS = 1.0
"""Least time between two looks at the ledger while a job runs (each look reads every item)."""

_FINISHED = ("done", "failed")


class ItemLines:
    """Says a line (`say`) for each file one job takes, finishes and fails, as its ledger shows them."""

    def __init__(self, label: str, job_dir: JobDir, say: Callable[[str], None]) -> None:
        self._label = label
        self._job_dir = job_dir
        self._say = say
        self._ledger: Ledger | None = None
        self._seen: dict[int, tuple[str | None, str]] = {}
        """Item id -> (version, state) at the last look."""
        self._last_look = 0.0

    def look(self, *, now: bool = False) -> None:
        """Compare the items with the last look and say what changed; at most every `LOOK_SECONDS` unless
        `now`. The first look only takes note (the ledger must exist: a run has started)."""
        if not now and time.monotonic() - self._last_look < LOOK_SECONDS:
            return
        self._last_look = time.monotonic()
        first = self._ledger is None
        if self._ledger is None:
            self._ledger = self._job_dir.open_ledger()
        for item in self._ledger.items():
            seen = self._seen.get(item.id)
            self._seen[item.id] = (item.version, item.state)
            if first or seen == (item.version, item.state):
                continue
            before = seen[1] if seen is not None and seen[0] == item.version else "pending"
            if before in ("pending", *_FINISHED) and item.state != "pending":  # finished ones: retried
                self._say(f"{self._label}: took {item.uri}")
            if item.state in _FINISHED:
                self._say(self._finished(item, self._ledger))

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    def _finished(self, item: Item, ledger: Ledger) -> str:
        if item.state == "failed":
            return f"{self._label}: failed {item.uri}: {reason_of(item.uri, item.error)}"
        attempts = LedgerReads(ledger).attempts(item.id)  # of its current version: a new version drops the old ones
        started = min((a["started"] for a in attempts), default=None)
        ended = max((a["ended"] for a in attempts if a["ended"] is not None), default=None)
        took = f", {ended - started:.1f} s" if started is not None and ended is not None else ""
        return f"{self._label}: done {item.uri} -> {item.output_uri} ({item.frames or 0} frames{took})"
