"""The ledger's read queries for people and programs, and the dataclasses they return: what `JobView` adds
its figures to, and what status, failures, report, the service's API, dashboard and metrics show.

The store (`framefleet.jobs.store`) keeps the schema, the writes and the few reads its scheduler needs;
everything a person or a program reads about a job is a query here, on the store's connection.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from framefleet.jobs.store import JobRecord, Ledger
from framefleet.jobs.transitions import CRASH_OUTCOMES, INFRA_OUTCOMES, ItemState, Task

STAGES = ("decode", "ops", "encode", "upload")
"""The stages of a task whose seconds are kept (`TaskMetrics.decode_s`, ...)."""


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


def _summed(times: Iterable[dict[str, float]]) -> dict[str, float]:
    """Seconds by step, added up over tasks (in the chain's order)."""
    total: dict[str, float] = {}
    for each in times:
        for step, seconds in each.items():
            total[step] = total.get(step, 0.0) + seconds
    return total


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
    preempted: int = 0
    """Given back on a cloud's preemption notice: lost to the infrastructure, counted apart from
    `infra_losses`, redone at once elsewhere."""

    def __str__(self) -> str:
        text = (f"attempts: {self.input_failures} failed on their input, {self.crashes} crashed or hung, "
                f"{self.infra_losses} lost to the infrastructure")
        text += f", {self.preempted} given back on a preemption notice" if self.preempted else ""
        return text + (f", {self.stopped} given up on a stop request" if self.stopped else "")


_MADE_HERE = "json_extract(t.result, '$.adopted') IS NULL"
"""The tasks that did their work (a part or output adopted from its manifest was made by an earlier ledger)."""


class LedgerReads:
    """The read queries of one job's ledger (safe while the job runs: SQLite in WAL mode)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def job(self) -> JobRecord | None:
        """The job's fingerprint, pipeline, output root and version (None before it started)."""
        return self.ledger.job()

    def join_parts(self, item_id: int) -> tuple[int, ...]:
        """The seqs of an item's segments in the order of their frames (a segment cut on a preemption notice
        leaves its rest to a later seq)."""
        return tuple(row[0] for row in self.ledger.query(
            "SELECT seq FROM tasks WHERE item_id = ? AND kind = 'segment' "
            "ORDER BY start_pts IS NOT NULL, start_pts", (item_id,)))

    def pending_tasks(self, up_to: int) -> int:
        """How many tasks wait to be claimed, counted up to `up_to` (a bounded query however large the job)."""
        return self.ledger.query(
            "SELECT COUNT(*) FROM (SELECT 1 FROM tasks WHERE state = 'pending' LIMIT ?)", (up_to,)
        ).fetchone()[0]

    def task_frames(self, task: Task) -> int | None:
        """Frames a segment task holds, from its item's probe: all of them for a whole video, else its share of
        the duration ([start_pts, end_pts) in the probe's time base); None when the probe did not count them."""
        row = self.ledger.query(
            "SELECT i.frames, i.duration, p.result FROM items i LEFT JOIN tasks p "
            "ON p.item_id = i.id AND p.kind = 'probe' WHERE i.id = ?", (task.item_id,)).fetchone()
        if task.kind != "segment" or row is None or not row["frames"]:
            return None
        frames, duration = row["frames"], row["duration"]
        if task.start_pts is None and task.end_pts is None:
            return frames
        time_base = json.loads(row["result"] or "{}").get("time_base")
        if not time_base or not duration:
            return None
        seconds_per_pts = float(Fraction(time_base))
        start = (task.start_pts or 0) * seconds_per_pts
        end = duration if task.end_pts is None else task.end_pts * seconds_per_pts
        return max(1, round(frames * max(0.0, min(end, duration) - start) / duration))

    def segment_fps(self) -> float:
        """Frames per second of one worker over the job's finished segments (0 before any)."""
        frames, seconds = self.ledger.query(
            "SELECT COALESCE(SUM(m.frames), 0), COALESCE(SUM(m.seconds), 0) FROM metrics m "
            "JOIN tasks t ON t.id = m.task_id WHERE t.kind = 'segment'").fetchone()
        return frames / seconds if seconds > 0 else 0.0

    def frames(self) -> tuple[int, int]:
        """(frames in finished segment tasks and adopted items, frames the probes (or the adopted manifests)
        expect in all live items)."""
        done = self.ledger.query(
            "SELECT COALESCE(SUM(m.frames), 0) FROM metrics m JOIN tasks t ON t.id = m.task_id "
            "WHERE t.kind = 'segment'"
        ).fetchone()[0] + self.ledger.query(
            "SELECT COALESCE(SUM(frames), 0) FROM items WHERE adopted = 1 AND state = 'done'"
        ).fetchone()[0]
        expected = self.ledger.query(
            "SELECT COALESCE(SUM(frames), 0) FROM items WHERE state != 'failed'"
        ).fetchone()[0]
        return done, expected

    def frames_estimate(self) -> tuple[int, int]:
        """(frames the live items hold, how many of those items are not probed yet). An item not probed yet
        counts at the probed items' frames per byte of input, so the total does not jump as probes finish."""
        known, known_bytes, unknown_bytes, unknown = self.ledger.query(
            "SELECT COALESCE(SUM(frames), 0), COALESCE(SUM(CASE WHEN frames IS NOT NULL THEN size END), 0), "
            "COALESCE(SUM(CASE WHEN frames IS NULL THEN size END), 0), COUNT(*) - COUNT(frames) "
            "FROM items WHERE state != 'failed'"
        ).fetchone()
        if unknown and known and known_bytes:
            known += round(unknown_bytes * known / known_bytes)
        return known, unknown

    def adopted(self) -> int:
        """Items done by adopting an output already committed with a matching manifest (docs/ledger.md)."""
        return self.ledger.query("SELECT COUNT(*) FROM items WHERE adopted = 1 AND state = 'done'").fetchone()[0]

    def next_ready_time(self) -> float | None:
        """When the earliest pending task becomes claimable (None when nothing is pending)."""
        row = self.ledger.query("SELECT MIN(not_before) FROM tasks WHERE state = 'pending'").fetchone()
        return row[0]

    def counts(self) -> dict[str, int]:
        """Items per state."""
        return self.ledger.counts()

    def tasks(self) -> dict[str, int]:
        counts = {s: 0 for s in ("waiting", "pending", "running", "done", "failed", "cancelled")}
        for row in self.ledger.query("SELECT state, COUNT(*) AS n FROM tasks GROUP BY state"):
            counts[row["state"]] = row["n"]
        return counts

    def attempts(self, item_id: int | None = None) -> list[dict[str, Any]]:
        query = (
            "SELECT a.*, t.kind, t.seq, t.item_id FROM attempts a JOIN tasks t ON t.id = a.task_id"
            + (" WHERE t.item_id = ?" if item_id is not None else "")
            + " ORDER BY a.id"
        )
        return [dict(r) for r in self.ledger.query(query, (item_id,) if item_id is not None else ())]

    def losses(self) -> Losses:
        """The job's attempts that did not end done, by cause."""
        counts = dict(self.ledger.query("SELECT outcome, COUNT(*) FROM attempts GROUP BY outcome").fetchall())
        return Losses(input_failures=counts.get("input_error", 0),
                      crashes=sum(counts.get(outcome, 0) for outcome in CRASH_OUTCOMES),
                      infra_losses=sum(counts.get(outcome, 0) for outcome in INFRA_OUTCOMES),
                      stopped=counts.get("interrupted", 0), preempted=counts.get("preempted", 0))

    def activity(self) -> Activity:
        """How many attempts ran, from when to when, and which workers hold one now."""
        count, first, last = self.ledger.query("SELECT COUNT(*), MIN(started), MAX(ended) FROM attempts").fetchone()
        running = [row[0] for row in self.ledger.query(
            "SELECT DISTINCT worker FROM attempts WHERE outcome IS NULL ORDER BY worker")]
        return Activity(attempts=count, first_started=first, last_ended=last, running_workers=running)

    def busy_since(self, since: float) -> float | None:
        """When the work of the time from `since` began: the claim of the earliest attempt that ended at or
        after `since` or runs still (None when none did). Later than `since` when the job (or this run of
        it) started after it."""
        return self.ledger.query("SELECT MIN(started) FROM attempts WHERE ended IS NULL OR ended >= ?",
                                (since,)).fetchone()[0]

    def failures(self) -> list[Failure]:
        """Failed items with their error and attempt counts."""
        rows = self.ledger.query(
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
        rows = self.ledger.query(
            "SELECT i.uri, t.seq, json_extract(t.result, '$.damage') AS damage FROM tasks t "
            "JOIN items i ON i.id = t.item_id WHERE t.state = 'done' "
            "AND json_extract(t.result, '$.damage') IS NOT NULL ORDER BY i.id, t.seq"
        )
        return [Damage(uri=r["uri"], seq=r["seq"], **json.loads(r["damage"])) for r in rows]

    def runtimes(self) -> list[str]:
        """What ran the models of the done tasks ("style: openvino bf16"), each once, in the order first seen."""
        rows = self.ledger.query(
            "SELECT DISTINCT json_extract(result, '$.runtime') AS runtime FROM tasks WHERE state = 'done' "
            "AND json_extract(result, '$.runtime') IS NOT NULL ORDER BY rowid"
        )
        return [r["runtime"] for r in rows]

    def items(self, state: str | None = None, limit: int | None = None,
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
        rows = self.ledger.query(
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

    def stages(self) -> dict[str, float]:
        """The job's seconds by stage of a task (decode, ops, encode, upload), over every finished task."""
        row = self.ledger.query("SELECT " + ", ".join(f"COALESCE(SUM({stage}_s), 0)" for stage in STAGES)
                               + " FROM metrics").fetchone()
        return dict(zip(STAGES, row))

    def step_seconds(self) -> dict[str, float]:
        """The job's op time by step of the op chain, over every finished task."""
        return _summed(json.loads(text) for (text,) in self.ledger.query("SELECT steps_s FROM metrics"))

    def task_metrics(self) -> list[dict[str, Any]]:
        """The metrics of every finished task with its kind and seq, by item then task."""
        rows = self.ledger.query(
            "SELECT m.*, t.kind, t.seq FROM metrics m JOIN tasks t ON t.id = m.task_id ORDER BY m.item_id, t.id"
        )
        return [dict(r) for r in rows]

    def task_spans(self) -> list[tuple[float, float, int]]:
        """(start, end, frames) of every finished task: the attempt that did it, from its claim to its end.
        Adopted parts (frames in no time: made by an earlier ledger) are left out."""
        return [(r[0], r[1], r[2]) for r in self.ledger.query(
            "SELECT a.started, a.ended, m.frames FROM metrics m "
            "JOIN attempts a ON a.task_id = m.task_id AND a.outcome = 'done' JOIN tasks t ON t.id = m.task_id "
            f"WHERE {_MADE_HERE} ORDER BY a.started")]

    def throughput(self) -> list[tuple[float, int]]:
        """(finish time, frames) of every finished task, in time order: the throughput curve. Adopted parts
        are left out."""
        return [(r[0], r[1]) for r in self.ledger.query(
            f"SELECT m.finished, m.frames FROM metrics m JOIN tasks t ON t.id = m.task_id WHERE {_MADE_HERE} "
            "ORDER BY m.finished")]
