"""A Hypothesis state machine driving one job ledger with a controllable clock.

Workers claim, heartbeat, complete and fail tasks (with every outcome class); time passes, leases expire,
the scheduler restarts (sometimes reopening the ledger file) and failed items are retried. The machine keeps
every lease it was ever given, stale ones included, and checks after each step the ledger's invariants.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from framefleet.jobs.results import ProbeResult, Segment, TaskMetrics
from framefleet.jobs.store import Ledger
from framefleet.jobs.transitions import CRASH_OUTCOMES, INFRA_BACKOFF_CAP, Task
from framefleet.settings import RetryPolicy

# Drawn per example: generous budgets with a real backoff, and tight ones that fail items quickly.
LIMITS_CHOICES = [
    RetryPolicy(max_attempts=3, max_crashes=2, backoff_seconds=1.0),
    RetryPolicy(max_attempts=2, max_crashes=1, backoff_seconds=0.0),
    RetryPolicy(max_attempts=1, max_crashes=1, backoff_seconds=0.5),
]
TASK_STATES = {"waiting", "pending", "running", "done", "failed", "cancelled"}
ITEM_STATES = {"pending", "running", "done", "failed"}
FAIL_OUTCOMES = ["input_error", "crashed", "hung", "lost", "interrupted", "stale"]
KIND_ORDER = {"join": 0, "segment": 1, "probe": 2}
NAMES = "abcd"


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="ledger-sm-"))
        self.path = self.dir / "ledger.db"
        self.limits = LIMITS_CHOICES[0]
        self.ledger: Ledger | None = None
        self.now = 1000.0
        self.leases: list[Task] = []  # every lease ever handed out, current and stale
        self.known_uris: set[str] = set()
        self.attempt_counts: dict[int, int] = {}  # task id -> attempts seen at the last check
        self.max_attempt_id = 0
        self.done_tasks: set[int] = set()
        self.done_items: set[int] = set()

    def teardown(self) -> None:
        try:
            if self.ledger is not None:
                self.ledger.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers ------------------------------------------------------------------------------------

    def task_row(self, task_id: int):
        return self.ledger._db.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()

    def item_state(self, item_id: int) -> str:
        return self.ledger._db.execute("SELECT state FROM items WHERE id = ?", (item_id,)).fetchone()[0]

    def is_current(self, task: Task) -> bool:
        row = self.task_row(task.id)
        return row is not None and row["state"] == "running" and row["lease_id"] == task.lease_id

    def current(self) -> list[Task]:
        return [t for t in self.leases if self.is_current(t)]

    def stale(self) -> list[Task]:
        return [t for t in self.leases if not self.is_current(t)]

    def running_rows(self):
        return self.ledger._db.execute("SELECT * FROM tasks WHERE state = 'running'").fetchall()

    def check_released(self, rows_before, outcome: str) -> None:
        """Tasks released by expiry or restart: back to pending (or cancelled in a failed item), attempt closed."""
        for before in rows_before:
            after = self.task_row(before["id"])
            item_failed = self.item_state(before["item_id"]) == "failed"
            assert after["state"] == ("cancelled" if item_failed else "pending")
            stopped = outcome == "interrupted"  # a stop request: nobody's loss, retried at once
            assert after["infra_losses"] == before["infra_losses"] + (0 if stopped else 1)
            assert (after["input_failures"], after["crashes"]) == (before["input_failures"], before["crashes"])
            losses = after["infra_losses"]
            delay = 0.0 if stopped or losses == 1 else min(self.limits.backoff_seconds * 2 ** (losses - 2),
                                                           INFRA_BACKOFF_CAP)
            assert after["not_before"] == self.now + delay
            attempt = self.ledger._db.execute("SELECT * FROM attempts WHERE id = ?", (before["lease_id"],)).fetchone()
            assert attempt["outcome"] == outcome

    # -- rules --------------------------------------------------------------------------------------

    @initialize(limits=st.sampled_from(LIMITS_CHOICES),
                names=st.lists(st.sampled_from(NAMES), min_size=1, max_size=3))
    def start(self, limits, names):
        self.limits = limits
        self.ledger = Ledger(self.path, limits)
        self.add_items(names)

    @rule(names=st.lists(st.sampled_from(NAMES), min_size=1, max_size=3))
    def add_items(self, names):
        refs = [(f"mem://in/{n}.mp4", f"{n}.mp4", 100, "v1", f"mem://out/{n}.mp4") for n in names]
        expected = len({r[0] for r in refs} - self.known_uris)
        assert self.ledger.add_items(refs, now=self.now) == expected
        self.known_uris |= {r[0] for r in refs}

    @rule(worker=st.sampled_from(["w1", "w2", "w3"]), lease_seconds=st.sampled_from([5.0, 10.0, 30.0]))
    def claim(self, worker, lease_seconds):
        candidates = self.ledger._db.execute(
            "SELECT * FROM tasks WHERE state = 'pending' AND not_before <= ?", (self.now,)
        ).fetchall()
        expected = min(candidates, key=lambda r: (KIND_ORDER[r["kind"]], r["item_id"], r["seq"]), default=None)
        task = self.ledger.claim(worker, lease_seconds, now=self.now)
        if expected is None:
            assert task is None
            return
        assert task is not None and task.id == expected["id"]
        assert self.item_state(task.item_id) != "failed"  # no work is handed out for a failed item
        row = self.task_row(task.id)
        assert (row["state"], row["lease_id"], row["lease_owner"]) == ("running", task.lease_id, worker)
        assert row["lease_expires"] == self.now + lease_seconds
        self.leases.append(task)

    @precondition(lambda self: self.leases)
    @rule(pick=st.integers(min_value=0), lease_seconds=st.sampled_from([5.0, 10.0, 30.0]))
    def heartbeat(self, pick, lease_seconds):
        task = self.leases[pick % len(self.leases)]
        expected = self.is_current(task)
        assert self.ledger.heartbeat(task, lease_seconds, now=self.now) is expected
        if expected:
            assert self.task_row(task.id)["lease_expires"] == self.now + lease_seconds

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 31.0]))
    def advance(self, dt):
        self.now += dt

    @rule()
    def expire_leases(self):
        expiring = [r for r in self.running_rows() if r["lease_expires"] < self.now]
        assert self.ledger.expire_leases(now=self.now) == len(expiring)
        self.check_released(expiring, "lost")

    @precondition(lambda self: self.current())
    @rule(pick=st.integers(min_value=0), n_segments=st.integers(min_value=1, max_value=4),
          frames=st.integers(min_value=0, max_value=100))
    def complete(self, pick, n_segments, frames):
        current = self.current()
        task = current[pick % len(current)]
        segments = [Segment(i * 10, (i + 1) * 10 if i < n_segments - 1 else None) for i in range(n_segments)]
        before = self.task_row(task.id)
        assert self.ledger.complete(task, segments=segments if task.kind == "probe" else None,
                                    result=ProbeResult(frames=10 * n_segments), metrics=TaskMetrics(frames=frames),
                                    now=self.now) is True
        assert self.task_row(task.id)["state"] == "done"
        assert before["state"] == "running"
        if task.kind == "probe":
            planned = self.ledger._db.execute(
                "SELECT kind, state FROM tasks WHERE item_id = ? AND kind != 'probe'", (task.item_id,)
            ).fetchall()
            expected = ["segment"] * n_segments + (["join"] if n_segments > 1 else [])
            assert sorted(r["kind"] for r in planned) == sorted(expected)

    @precondition(lambda self: self.current())
    @rule(pick=st.integers(min_value=0), outcome=st.sampled_from(FAIL_OUTCOMES))
    def fail(self, pick, outcome):
        current = self.current()
        task = current[pick % len(current)]
        before = self.task_row(task.id)
        if outcome == "input_error":
            used = before["input_failures"] + 1
            exhausted = used >= self.limits.max_attempts
        elif outcome in CRASH_OUTCOMES:
            used = before["crashes"] + 1
            exhausted = used >= self.limits.max_crashes
        else:
            used, exhausted = 0, False
            losses = before["infra_losses"] + (0 if outcome == "interrupted" else 1)
        item_failed = self.item_state(task.item_id) == "failed"
        state = self.ledger.fail(task, outcome, error_type="TestError", message=outcome, now=self.now)
        expected = "failed" if exhausted else ("cancelled" if item_failed else "pending")
        assert state == expected
        after = self.task_row(task.id)
        assert after["state"] == state
        if not exhausted:
            if used:
                delay = self.limits.backoff_seconds * 2 ** (used - 1)
            elif outcome == "interrupted":  # a stop request: at once, never counted
                delay = 0.0
            else:  # infrastructure: at once the first time, then backing off, capped
                delay = 0.0 if losses == 1 else min(self.limits.backoff_seconds * 2 ** (losses - 2), INFRA_BACKOFF_CAP)
            assert after["not_before"] == self.now + delay
        if exhausted:
            assert self.item_state(task.item_id) == "failed"
        attempt = self.ledger._db.execute("SELECT * FROM attempts WHERE id = ?", (task.lease_id,)).fetchone()
        assert (attempt["outcome"], attempt["error_type"]) == (outcome, "TestError")

    # A worker's whole turn in one step (claim, then report), so that short runs reach done and failed items.

    @rule(worker=st.sampled_from(["w1", "w2", "w3"]), n_segments=st.integers(min_value=1, max_value=4))
    def work_to_completion(self, worker, n_segments):
        before = len(self.leases)
        self.claim(worker, 10.0)
        if len(self.leases) > before:
            self.complete(len(self.current()) - 1, n_segments, 10)

    @rule(worker=st.sampled_from(["w1", "w2", "w3"]), outcome=st.sampled_from(FAIL_OUTCOMES))
    def work_to_failure(self, worker, outcome):
        before = len(self.leases)
        self.claim(worker, 10.0)
        if len(self.leases) > before:
            current = self.current()
            self.fail(current.index(self.leases[-1]), outcome)

    @rule(outcome=st.sampled_from(FAIL_OUTCOMES), later=st.sampled_from(FAIL_OUTCOMES + ["done"]))
    def two_workers_one_fails(self, outcome, later):
        """Two tasks run at once (often sibling segments); the first fails, then the second reports."""
        before = len(self.leases)
        self.claim("w1", 10.0)
        self.claim("w2", 10.0)
        if len(self.leases) - before != 2:
            return
        first, second = self.leases[-2:]
        self.fail(self.current().index(first), outcome)
        if self.is_current(second):
            if later == "done":
                self.complete(self.current().index(second), 1, 10)
            else:
                self.fail(self.current().index(second), later)

    @precondition(lambda self: self.stale())
    @rule(pick=st.integers(min_value=0), report=st.sampled_from(["complete", "fail", "heartbeat"]),
          outcome=st.sampled_from(FAIL_OUTCOMES))
    def report_with_stale_lease(self, pick, report, outcome):
        stale = self.stale()
        task = stale[pick % len(stale)]
        row_before = self.task_row(task.id)
        tasks_before = self.ledger._db.execute("SELECT * FROM tasks ORDER BY id").fetchall()
        items_before = self.ledger._db.execute("SELECT * FROM items ORDER BY id").fetchall()
        attempt_before = self.ledger._db.execute("SELECT * FROM attempts WHERE id = ?", (task.lease_id,)).fetchone()
        if report == "complete":
            assert self.ledger.complete(task, segments=[Segment(0, 1), Segment(1, None)], now=self.now) is False
        elif report == "fail":
            assert self.ledger.fail(task, outcome, error_type="Late", message="late", now=self.now) == "stale"
        else:
            assert self.ledger.heartbeat(task, 100.0, now=self.now) is False
        assert row_before is not None
        assert [tuple(r) for r in self.ledger._db.execute("SELECT * FROM tasks ORDER BY id")] == [
            tuple(r) for r in tasks_before
        ]
        assert [tuple(r) for r in self.ledger._db.execute("SELECT * FROM items ORDER BY id")] == [
            tuple(r) for r in items_before
        ]
        attempt_after = self.ledger._db.execute("SELECT * FROM attempts WHERE id = ?", (task.lease_id,)).fetchone()
        # The superseded attempt was already closed (lost, interrupted, done, ...): a late report keeps that.
        assert attempt_before["outcome"] is not None
        assert tuple(attempt_after) == tuple(attempt_before)

    @rule(outcome=st.sampled_from(["interrupted", "lost"]), reopen=st.booleans())
    def restart_scheduler(self, outcome, reopen):
        if reopen:
            self.ledger.close()
            self.ledger = Ledger(self.path, self.limits)
        running = self.running_rows()
        assert self.ledger.release_all_running(outcome, "scheduler restarted", now=self.now) == len(running)
        assert not self.running_rows()
        self.check_released(running, outcome)

    @rule()
    def retry_failed(self):
        failed = {r[0] for r in self.ledger._db.execute("SELECT id FROM items WHERE state = 'failed'")}
        assert self.ledger.retry_failed() == len(failed)
        for item_id in failed:
            assert self.item_state(item_id) in ("pending", "done")
            for row in self.ledger._db.execute("SELECT * FROM tasks WHERE item_id = ?", (item_id,)):
                assert row["state"] not in ("failed", "cancelled")
                if row["state"] in ("pending", "waiting"):
                    assert (row["input_failures"], row["crashes"]) == (0, 0)

    # -- invariants ---------------------------------------------------------------------------------

    @invariant()
    def task_states_are_valid_and_consistent(self):
        for row in self.ledger._db.execute("SELECT * FROM tasks"):
            assert row["state"] in TASK_STATES
            assert (row["state"] == "running") == (row["lease_owner"] is not None)
            assert 0 <= row["input_failures"] <= self.limits.max_attempts
            assert 0 <= row["crashes"] <= self.limits.max_crashes
            if row["state"] == "failed":  # only its input's fault fails a task, never an infrastructure loss
                assert row["input_failures"] >= self.limits.max_attempts or row["crashes"] >= self.limits.max_crashes
            open_attempts = [
                a["id"] for a in self.ledger._db.execute(
                    "SELECT id FROM attempts WHERE task_id = ? AND outcome IS NULL", (row["id"],)
                )
            ]
            assert open_attempts == ([row["lease_id"]] if row["state"] == "running" else [])

    @invariant()
    def attempts_only_grow_and_ids_increase(self):
        counts: dict[int, int] = {}
        new_ids = []
        for a in self.ledger._db.execute("SELECT id, task_id FROM attempts ORDER BY id"):
            counts[a["task_id"]] = counts.get(a["task_id"], 0) + 1
            if a["id"] > self.max_attempt_id:
                new_ids.append(a["id"])
        for task_id, n in self.attempt_counts.items():
            assert counts.get(task_id, 0) >= n
        total_before = sum(self.attempt_counts.values())
        assert sum(counts.values()) == total_before + len(new_ids)  # every new attempt has a higher id
        self.attempt_counts = counts
        if new_ids:
            self.max_attempt_id = new_ids[-1]

    @invariant()
    def no_task_is_completed_twice(self):
        for row in self.ledger._db.execute(
            "SELECT task_id, COUNT(*) AS n FROM attempts WHERE outcome = 'done' GROUP BY task_id"
        ):
            assert row["n"] <= 1

    @invariant()
    def done_is_final(self):
        done_tasks = {r[0] for r in self.ledger._db.execute("SELECT id FROM tasks WHERE state = 'done'")}
        done_items = {r[0] for r in self.ledger._db.execute("SELECT id FROM items WHERE state = 'done'")}
        assert self.done_tasks <= done_tasks
        assert self.done_items <= done_items
        self.done_tasks, self.done_items = done_tasks, done_items

    @invariant()
    def item_states_follow_their_tasks(self):
        for item in self.ledger._db.execute("SELECT * FROM items"):
            assert item["state"] in ITEM_STATES
            tasks = self.ledger._db.execute("SELECT * FROM tasks WHERE item_id = ?", (item["id"],)).fetchall()
            probes = [t for t in tasks if t["kind"] == "probe"]
            segments = [t for t in tasks if t["kind"] == "segment"]
            joins = [t for t in tasks if t["kind"] == "join"]
            assert len(probes) == 1 and len(joins) <= 1
            assert bool(segments) == (probes[0]["state"] == "done")
            assert bool(joins) == (len(segments) > 1)
            all_done = bool(segments) and all(t["state"] == "done" for t in segments + joins)
            assert (item["state"] == "done") == all_done
            any_failed = any(t["state"] == "failed" for t in tasks)
            assert (item["state"] == "failed") == any_failed
            if item["state"] == "failed":  # its other tasks are cancelled (running ones end under their lease)
                assert not any(t["state"] in ("pending", "waiting") for t in tasks)
            else:
                assert not any(t["state"] == "cancelled" for t in tasks)
            if item["state"] == "done":
                assert item["error"] is None and item["finished"] is not None
            for join in joins:
                segments_done = all(t["state"] == "done" for t in segments)
                if join["state"] == "waiting":
                    assert not segments_done
                if join["state"] in ("pending", "running", "done"):
                    assert segments_done
            if not any(t["input_failures"] or t["crashes"] for t in tasks):
                assert item["state"] != "failed"  # infrastructure losses never fail an item


FAST = settings(max_examples=60, stateful_step_count=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
THOROUGH = settings(max_examples=600, stateful_step_count=80, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def test_ledger_state_machine():
    run_state_machine_as_test(LedgerMachine, settings=FAST)


@pytest.mark.slow
def test_ledger_state_machine_thorough():
    run_state_machine_as_test(LedgerMachine, settings=THOROUGH)
