"""Specification tests of the job ledger (framefleet.jobs.store): states, retries by cause, leases, reading."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from framefleet.jobs.reads import LedgerReads, Losses
from framefleet.jobs.results import ProbeResult, Segment, SegmentResult, TaskMetrics
from framefleet.jobs.store import JobMismatchError, Ledger
from framefleet.jobs.transitions import INFRA_BACKOFF_CAP
from framefleet.settings import RetryPolicy


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "job" / "ledger.db"


@pytest.fixture
def make_ledger(db_path):
    db_path.parent.mkdir(parents=True, exist_ok=True)
    opened: list[Ledger] = []

    def make(limits: RetryPolicy | None = None) -> Ledger:
        ledger = Ledger(db_path, limits or RetryPolicy())
        opened.append(ledger)
        return ledger

    yield make
    for ledger in opened:
        ledger.close()


@pytest.fixture
def ledger(make_ledger) -> Ledger:
    return make_ledger(RetryPolicy(max_attempts=3, max_crashes=2, backoff_seconds=10.0))


def ref(name: str, version: str = "v1") -> tuple[str, str, int, str, str]:
    return (f"s3://in/{name}.mp4", f"{name}.mp4", 1000, version, f"s3://out/{name}.mp4")


def task_rows(ledger: Ledger, item_id: int | None = None) -> list[sqlite3.Row]:
    query = "SELECT * FROM tasks" + (" WHERE item_id = ?" if item_id is not None else "") + " ORDER BY id"
    return ledger._db.execute(query, (item_id,) if item_id is not None else ()).fetchall()


def states(ledger: Ledger, item_id: int) -> dict[tuple[str, int], str]:
    return {(r["kind"], r["seq"]): r["state"] for r in task_rows(ledger, item_id)}


def item_state(ledger: Ledger, item_id: int) -> str:
    return next(i.state for i in ledger.items() if i.id == item_id)


def probe_into(ledger: Ledger, n_segments: int, now: float = 0.0, frames: int = 300):
    """Claim the next task (a probe) and complete it with n segments; returns the probe task."""
    task = ledger.claim("w", 60, now=now)
    assert task is not None and task.kind == "probe"
    bounds = [i * (frames // n_segments) for i in range(n_segments)] + [None]
    segments = [Segment(bounds[i], bounds[i + 1]) for i in range(n_segments)]
    assert ledger.complete(task, result=ProbeResult(frames=frames, duration=frames / 30), segments=segments, now=now)
    return task


# -- the job ----------------------------------------------------------------------------------------


def test_new_job_records_its_fingerprint(ledger, db_path):
    assert ledger.job() is None
    assert ledger.init_job(fingerprint="abc123" * 4, spec={"ops": ["style"]}, version="0.1", output_root="s3://o")
    job = ledger.job()
    assert job.fingerprint == "abc123" * 4
    assert job.spec == {"ops": ["style"]}
    assert job.framefleet_version == "0.1"
    assert job.output_root == "s3://o"
    # Reopening with the same fingerprint is not a new job.
    again = Ledger(db_path)
    try:
        assert again.init_job(fingerprint="abc123" * 4, spec={"ops": ["style"]}, version="0.1",
                              output_root="s3://o") is False
    finally:
        again.close()


def test_reopening_with_another_fingerprint_raises_and_says_how_to_start_a_new_job(ledger, make_ledger):
    ledger.init_job(fingerprint="a" * 64, spec={}, version="0.1", output_root="s3://o")
    other = make_ledger()
    with pytest.raises(JobMismatchError) as info:
        other.init_job(fingerprint="b" * 64, spec={}, version="0.1", output_root="s3://o")
    message = str(info.value)
    assert "new --job-dir" in message
    assert "a" * 12 in message and "b" * 12 in message
    assert other.job().fingerprint == "a" * 64  # nothing was overwritten


# -- items ------------------------------------------------------------------------------------------


def test_add_items_is_idempotent_for_the_same_version(ledger):
    assert ledger.add_items([ref("a"), ref("b")], now=0) == 2
    assert ledger.add_items([ref("a"), ref("b")], now=1) == 0
    assert [i.uri for i in ledger.items()] == ["s3://in/a.mp4", "s3://in/b.mp4"]
    assert LedgerReads(ledger).tasks()["pending"] == 2  # one probe each, not duplicated


def test_add_items_restarts_an_item_whose_version_changed(ledger):
    ledger.add_items([ref("a")], now=0)
    probe_into(ledger, 2)
    seg = ledger.claim("w", 60, now=1)
    ledger.complete(seg, metrics=TaskMetrics(frames=150), now=2)
    old = ledger.claim("w", 60, now=3)
    assert ledger.add_items([ref("a", version="v2")], now=4) == 1
    (item,) = ledger.items()
    assert (item.state, item.version, item.frames, item.error) == ("pending", "v2", None, None)
    assert states(ledger, item.id) == {("probe", 0): "pending"}
    assert LedgerReads(ledger).attempts(item.id) == []
    assert LedgerReads(ledger).items()[0].tasks == 0
    # The old lease belongs to the old version: it cannot touch the new one, even once new leases exist.
    new = ledger.claim("w2", 60, now=5)
    assert new.kind == "probe" and new.lease_id != old.lease_id
    assert ledger.complete(old, now=6) is False
    assert ledger.fail(old, "input_error", error_type="X", message="late", now=6) == "stale"
    assert states(ledger, item.id) == {("probe", 0): "running"}


def test_a_lease_from_before_a_version_change_is_refused_even_when_row_ids_are_reused(ledger):
    # The item's rows are deleted on a version change; a reused attempt id would make the old lease valid again.
    ledger.add_items([ref("a")], now=0)
    old = ledger.claim("w", 60, now=0)
    ledger.add_items([ref("a", version="v2")], now=1)
    new = ledger.claim("w", 60, now=1)
    assert new.id == old.id or new.lease_id != old.lease_id
    assert new.lease_id > old.lease_id
    assert ledger.complete(old, segments=[Segment(None, None)], now=2) is False
    assert ledger.complete(new, segments=[Segment(None, None)], now=2) is True


# -- claiming ---------------------------------------------------------------------------------------


def test_claim_order_is_join_then_segment_then_probe(ledger):
    ledger.add_items([ref("a"), ref("b"), ref("c")], now=0)
    probe_into(ledger, 2)  # item a: 2 segments, join waiting
    segs = [ledger.claim("w", 60, now=1) for _ in range(2)]
    assert [(t.kind, t.item_id, t.seq) for t in segs] == [("segment", 1, 0), ("segment", 1, 1)]
    probe_b = ledger.claim("w", 60, now=1)
    assert (probe_b.kind, probe_b.item_id) == ("probe", 2)
    ledger.complete(probe_b, segments=[Segment(0, 10), Segment(10, None)], now=2)
    for t in segs:
        ledger.complete(t, now=2)
    # Now pending: item a's join, item b's two segments, item c's probe.
    order = []
    while (t := ledger.claim("w", 60, now=3)) is not None:
        order.append((t.kind, t.item_id, t.seq))
    assert order == [("join", 1, 0), ("segment", 2, 0), ("segment", 2, 1), ("probe", 3, 0)]


def test_claim_respects_not_before(ledger):
    ledger.add_items([ref("a")], now=0)
    t = ledger.claim("w", 60, now=0)
    assert ledger.fail(t, "input_error", error_type="E", message="m", now=100) == "pending"
    assert LedgerReads(ledger).next_ready_time() == pytest.approx(110.0)
    assert ledger.claim("w", 60, now=109.9) is None
    again = ledger.claim("w", 60, now=110.0)
    assert again is not None and again.id == t.id


def test_claim_marks_the_item_running_and_returns_the_task_fields(ledger):
    ledger.add_items([ref("a")], now=0)
    assert ledger.claim("w", 60, now=0) is not None
    assert ledger.claim("w", 60, now=0) is None  # nothing else pending
    (item,) = ledger.items()
    assert item.state == "running"
    row = task_rows(ledger)[0]
    assert (row["state"], row["lease_owner"], row["lease_expires"]) == ("running", "w", 60)


# -- the probe / segment / join flow -----------------------------------------------------------------


def test_probe_with_three_segments_creates_three_segment_tasks_and_a_waiting_join(ledger):
    ledger.add_items([ref("a")], now=0)
    probe_into(ledger, 3, frames=300)
    (item,) = ledger.items()
    assert item.frames == 300
    assert states(ledger, item.id) == {
        ("probe", 0): "done", ("segment", 0): "pending", ("segment", 1): "pending",
        ("segment", 2): "pending", ("join", 0): "waiting",
    }
    rows = {r["seq"]: r for r in task_rows(ledger, item.id) if r["kind"] == "segment"}
    assert [(rows[s]["start_pts"], rows[s]["end_pts"]) for s in range(3)] == [(0, 100), (100, 200), (200, None)]


def test_last_segment_done_makes_the_join_pending_and_join_done_finishes_the_item(ledger):
    ledger.add_items([ref("a")], now=0)
    probe_into(ledger, 3)
    segs = [ledger.claim("w", 60, now=1) for _ in range(3)]
    assert all(t.kind == "segment" for t in segs)
    for i, t in enumerate(segs):
        assert states(ledger, 1)[("join", 0)] == "waiting"
        assert ledger.complete(t, now=2 + i)
    assert states(ledger, 1)[("join", 0)] == "pending"
    assert item_state(ledger, 1) == "running"
    join = ledger.claim("w", 60, now=10)
    assert join.kind == "join"
    assert ledger.complete(join, now=11)
    assert item_state(ledger, 1) == "done"
    assert ledger.counts() == {"pending": 0, "running": 0, "done": 1, "failed": 0}
    assert ledger.unfinished() == 0


def test_a_one_segment_item_is_done_when_its_segment_is_done(ledger):
    ledger.add_items([ref("a")], now=0)
    probe = ledger.claim("w", 60, now=0)
    ledger.complete(probe, segments=[Segment(None, None)], now=1)
    assert states(ledger, 1) == {("probe", 0): "done", ("segment", 0): "pending"}
    seg = ledger.claim("w", 60, now=2)
    assert item_state(ledger, 1) == "running"
    assert ledger.complete(seg, now=3)
    assert item_state(ledger, 1) == "done"
    assert ("join", 0) not in states(ledger, 1)


def test_a_probe_without_segments_plans_one_whole_segment(ledger):
    ledger.add_items([ref("a")], now=0)
    probe = ledger.claim("w", 60, now=0)
    ledger.complete(probe, now=1)
    assert states(ledger, 1) == {("probe", 0): "done", ("segment", 0): "pending"}


# -- failures by cause ------------------------------------------------------------------------------


def test_input_errors_back_off_exponentially_then_fail_the_item_and_cancel_its_other_tasks(make_ledger):
    ledger = make_ledger(RetryPolicy(max_attempts=3, max_crashes=3, backoff_seconds=2.0))
    ledger.add_items([ref("a")], now=0)
    probe_into(ledger, 3)
    bad = ledger.claim("w", 60, now=0)  # segment 0
    assert ledger.fail(bad, "input_error", error_type="DecodeError", message="bad frame", now=10) == "pending"
    assert task_rows(ledger)[1]["not_before"] == pytest.approx(12.0)  # 2 x 2^0
    other = ledger.claim("w", 60, now=10)  # segment 1: segment 0 waits for its backoff
    assert (other.kind, other.seq) == ("segment", 1)
    ledger.complete(other, now=11)
    bad = ledger.claim("w", 60, now=12)
    assert (bad.kind, bad.seq) == ("segment", 0)
    assert ledger.fail(bad, "input_error", error_type="DecodeError", message="bad frame", now=20) == "pending"
    assert task_rows(ledger)[1]["not_before"] == pytest.approx(24.0)  # 2 x 2^1
    assert ledger.claim("w", 60, now=23) is not None  # segment 2 (not segment 0)
    assert states(ledger, 1)[("segment", 2)] == "running"
    bad = ledger.claim("w", 60, now=24)
    assert (bad.kind, bad.seq) == ("segment", 0)
    assert ledger.fail(bad, "input_error", error_type="DecodeError", message="bad frame",
                       log_tail="ffmpeg: error", now=30) == "failed"
    assert item_state(ledger, 1) == "failed"
    assert states(ledger, 1) == {("probe", 0): "done", ("segment", 0): "failed", ("segment", 1): "done",
                                 ("segment", 2): "running", ("join", 0): "cancelled"}
    (item,) = ledger.items()
    assert item.error == "bad frame"  # the type is kept apart, in the attempt
    assert task_rows(ledger)[1]["input_failures"] == 3


def test_a_sibling_released_after_its_item_failed_is_cancelled_not_retried(ledger):
    ledger.add_items([ref("a")], now=0)
    probe_into(ledger, 2)
    bad, sibling = ledger.claim("w", 60, now=0), ledger.claim("w2", 60, now=0)
    ledger.fail(bad, "crashed", error_type="Signal", message="SIGSEGV", now=1)
    bad = ledger.claim("w", 60, now=100)
    assert ledger.fail(bad, "crashed", error_type="Signal", message="SIGSEGV", now=101) == "failed"
    assert item_state(ledger, 1) == "failed"
    assert ledger.fail(sibling, "input_error", error_type="E", message="m", now=102) == "cancelled"
    assert states(ledger, 1)[("segment", 1)] == "cancelled"
    assert ledger.claim("w", 60, now=10_000) is None  # no work is handed out for a failed item
    assert ledger.retry_failed() == 1
    assert states(ledger, 1)[("segment", 1)] == "pending"


def test_crashes_are_counted_apart_and_capped_by_max_crashes(make_ledger):
    ledger = make_ledger(RetryPolicy(max_attempts=2, max_crashes=3, backoff_seconds=1.0))
    ledger.add_items([ref("a")], now=0)
    t = ledger.claim("w", 60, now=0)
    # One input error, then crashes/hangs: the input budget (2) is not used by the crashes.
    assert ledger.fail(t, "input_error", error_type="E", message="m", now=0) == "pending"
    now = 100.0
    for outcome, expected in [("crashed", "pending"), ("hung", "pending"), ("crashed", "failed")]:
        t = ledger.claim("w", 60, now=now)
        assert t is not None
        assert ledger.fail(t, outcome, error_type="WorkerCrash", message="exit -11", now=now) == expected
        now += 100
    row = task_rows(ledger)[0]
    assert (row["input_failures"], row["crashes"], row["state"]) == (1, 3, "failed")
    (item,) = ledger.items()
    assert item.state == "failed"
    assert "crashed 3 times" in item.error and "exit -11" in item.error


def test_crash_backoff_is_exponential(make_ledger):
    ledger = make_ledger(RetryPolicy(max_attempts=3, max_crashes=5, backoff_seconds=1.5))
    ledger.add_items([ref("a")], now=0)
    now = 0.0
    for n in range(1, 4):
        t = ledger.claim("w", 60, now=now)
        ledger.fail(t, "hung", error_type="Hang", message="no progress", now=now)
        assert task_rows(ledger)[0]["not_before"] == pytest.approx(now + 1.5 * 2 ** (n - 1))
        now += 1000


@pytest.mark.parametrize("outcome", ["lost", "interrupted"])
def test_infrastructure_losses_never_fail_an_item(make_ledger, outcome):
    ledger = make_ledger(RetryPolicy(max_attempts=1, max_crashes=1, backoff_seconds=5.0))
    ledger.add_items([ref("a")], now=0)
    for n in range(25):
        t = ledger.claim("w", 60, now=n * 100)
        assert t is not None
        assert ledger.fail(t, outcome, error_type="Lost", message="node gone", now=n * 100) == "pending"
    row = task_rows(ledger)[0]
    counted = 25 if outcome == "lost" else 0  # a stop request is nobody's loss: retried at once, never backed off
    assert (row["infra_losses"], row["input_failures"], row["crashes"], row["state"]) == (counted, 0, 0, "pending")
    assert row["not_before"] == (2400 if outcome == "interrupted" else pytest.approx(2400 + INFRA_BACKOFF_CAP))
    losses = LedgerReads(ledger).losses()
    assert (losses.infra_losses, losses.stopped) == ((25, 0) if outcome == "lost" else (0, 25))
    assert item_state(ledger, 1) == "running"
    t = ledger.claim("w", 60, now=10_000)
    assert ledger.complete(t, segments=[Segment(None, None)], now=10_001)


def test_a_preempted_attempt_is_retried_at_once_and_never_counts_against_any_budget(make_ledger):
    ledger = make_ledger(RetryPolicy(max_attempts=1, max_crashes=1, backoff_seconds=5.0))
    ledger.add_items([ref("a")], now=0)
    for n in range(10):
        t = ledger.claim("w", 60, now=n * 100)
        assert ledger.fail(t, "preempted", error_type="Preempted", message="azure preempt notice",
                           now=n * 100) == "pending"
        assert task_rows(ledger)[0]["not_before"] == n * 100  # at once, however often
    row = task_rows(ledger)[0]
    assert (row["infra_losses"], row["input_failures"], row["crashes"], row["state"]) == (0, 0, 0, "pending")
    losses = LedgerReads(ledger).losses()
    assert (losses.preempted, losses.infra_losses, losses.stopped) == (10, 0, 0)
    assert str(losses).endswith("0 lost to the infrastructure, 10 given back on a preemption notice")
    t = ledger.claim("w", 60, now=10_000)
    assert ledger.complete(t, segments=[Segment(None, None)], now=10_001)


def test_a_segment_cut_at_frame_n_is_done_with_its_part_and_a_new_pending_task_holds_the_rest(ledger):
    ledger.add_items([ref("a")], now=0)
    probe_into(ledger, 3)  # [0, 100), [100, 200), [200, None)
    first, middle, last = (ledger.claim("w", 60, now=1) for _ in range(3))
    assert ledger.complete(first, now=2) and ledger.complete(last, now=2)
    cut = SegmentResult(frames=37, output="part", cut_at=137)
    assert ledger.complete(middle, result=cut, metrics=TaskMetrics(frames=37), now=3)
    rows = {r["seq"]: r for r in task_rows(ledger, 1) if r["kind"] == "segment"}
    assert (rows[1]["state"], rows[1]["start_pts"], rows[1]["end_pts"]) == ("done", 100, 137)
    assert (rows[3]["state"], rows[3]["start_pts"], rows[3]["end_pts"]) == ("pending", 137, 200)
    assert [a["outcome"] for a in LedgerReads(ledger).attempts(1)].count("done") == 4  # nothing lost
    assert states(ledger, 1)[("join", 0)] == "waiting"  # the rest is not done yet
    assert LedgerReads(ledger).join_parts(1) == (0, 1, 3, 2)  # in the order of their frames
    rest = ledger.claim("w", 60, now=4)
    assert (rest.kind, rest.seq, rest.start_pts, rest.end_pts) == ("segment", 3, 137, 200)
    assert ledger.complete(rest, result=SegmentResult(frames=63, output="part"), now=5)
    assert states(ledger, 1)[("join", 0)] == "pending"


def test_a_cut_rest_can_be_cut_again(ledger):
    ledger.add_items([ref("a")], now=0)
    probe_into(ledger, 2)  # [0, 150), [150, None)
    first, second = ledger.claim("w", 60, now=1), ledger.claim("w", 60, now=1)
    assert ledger.complete(second, now=2)
    assert ledger.complete(first, result=SegmentResult(frames=10, output="part", cut_at=50), now=2)
    rest = ledger.claim("w", 60, now=3)
    assert (rest.seq, rest.start_pts, rest.end_pts) == (2, 50, 150)
    assert ledger.complete(rest, result=SegmentResult(frames=10, output="part", cut_at=90), now=4)
    assert LedgerReads(ledger).join_parts(1) == (0, 2, 3, 1)
    ends = {r["seq"]: (r["start_pts"], r["end_pts"]) for r in task_rows(ledger, 1) if r["kind"] == "segment"}
    assert ends == {0: (0, 50), 2: (50, 90), 3: (90, 150), 1: (150, None)}


_SCHEMA_1_ATTEMPTS = """
CREATE TABLE attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- lease ids: never reused, even after add_items deletes rows
    task_id INTEGER NOT NULL REFERENCES tasks(id),
    worker TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    outcome TEXT CHECK (outcome IN ('done', 'input_error', 'crashed', 'hung', 'lost', 'interrupted', 'stale')),
    error_type TEXT,
    message TEXT,
    log_tail TEXT
)"""
"""The attempts table as schema 1 made it: its CHECK has no `preempted`."""


def test_a_ledger_of_schema_1_is_rebuilt_to_take_preempted_keeping_its_attempts_and_lease_ids(db_path, make_ledger):
    ledger = make_ledger()
    ledger.init_job(fingerprint="f", spec={}, version="0", output_root="/out")
    ledger.add_items([ref("a"), ref("b")], now=0)
    for now in (0, 1, 1.5):  # a, a (then backing off), b
        ledger.fail(ledger.claim("w", 60, now=now), "lost", error_type="WorkerKilled", message="m", now=now)
    ledger.add_items([ref("b", "v2")], now=5)  # deletes item b's attempt: the newest id is gone
    ledger.close()
    old = sqlite3.connect(db_path)  # make it a schema-1 ledger, rows, ids and counter as they were
    kept = old.execute("SELECT * FROM attempts ORDER BY id").fetchall()
    counter = old.execute("SELECT seq FROM sqlite_sequence WHERE name = 'attempts'").fetchone()[0]
    old.executescript(f"DROP TABLE attempts; {_SCHEMA_1_ATTEMPTS}; "
                      "CREATE INDEX attempts_by_task ON attempts (task_id); UPDATE job SET schema_version = 1;")
    old.executemany("INSERT INTO attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", kept)
    old.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'attempts'", (counter,))
    old.commit()
    with pytest.raises(sqlite3.IntegrityError):
        old.execute("UPDATE attempts SET outcome = 'preempted'")
    old.close()
    assert counter == 3 and [row[0] for row in kept] == [1, 2]

    ledger = make_ledger()
    assert [tuple(row) for row in ledger._db.execute("SELECT * FROM attempts ORDER BY id")] == kept
    assert ledger._db.execute("SELECT schema_version FROM job").fetchone()[0] == 2
    task = ledger.claim("w", 60, now=10)
    assert task.lease_id == counter + 1  # a lease id is never reused
    assert ledger.fail(task, "preempted", error_type="Preempted", message="notice", now=10) == "pending"
    assert LedgerReads(ledger).losses().preempted == 1
    make_ledger()  # opening it again changes nothing
    assert len(ledger._db.execute("SELECT * FROM attempts").fetchall()) == len(kept) + 1


def test_a_first_infrastructure_loss_is_retried_at_once_and_repeated_ones_back_off_capped(make_ledger):
    ledger = make_ledger(RetryPolicy(backoff_seconds=2.0))
    ledger.add_items([ref("a")], now=0)
    waits = []
    now = 0.0
    for _ in range(8):
        t = ledger.claim("w", 60, now=now)
        ledger.fail(t, "lost", error_type="StorageUnavailableError", message="store down", now=now)
        waits.append(task_rows(ledger)[0]["not_before"] - now)
        now += 1000
    assert waits == pytest.approx([0, 2, 4, 8, 16, INFRA_BACKOFF_CAP, INFRA_BACKOFF_CAP, INFRA_BACKOFF_CAP])


# -- leases -----------------------------------------------------------------------------------------


def test_heartbeat_extends_the_lease_and_expire_leases_returns_only_expired_tasks(ledger):
    ledger.add_items([ref("a"), ref("b")], now=0)
    a = ledger.claim("w1", 10, now=0)
    b = ledger.claim("w2", 10, now=0)
    assert ledger.heartbeat(a, 10, now=8)  # a now expires at 18
    assert ledger.expire_leases(now=10) == 0  # b expires at 10; expiry is strictly after
    assert ledger.expire_leases(now=11) == 1
    assert [r["state"] for r in task_rows(ledger)] == ["running", "pending"]
    assert ledger.heartbeat(b, 10, now=12) is False
    row = task_rows(ledger)[1]
    assert (row["infra_losses"], row["not_before"], row["lease_owner"]) == (1, 11, None)
    assert [a["outcome"] for a in LedgerReads(ledger).attempts(b.item_id)] == ["lost"]


def test_a_stale_lease_can_neither_complete_nor_fail_the_task(ledger):
    ledger.add_items([ref("a")], now=0)
    old = ledger.claim("w1", 10, now=0)
    assert ledger.expire_leases(now=20) == 1
    new = ledger.claim("w2", 10, now=21)
    assert new.id == old.id and new.lease_id != old.lease_id
    assert ledger.complete(old, segments=[Segment(0, 1), Segment(1, None)], now=22) is False
    assert ledger.fail(old, "input_error", error_type="E", message="late", now=22) == "stale"
    assert ledger.heartbeat(old, 10, now=22) is False
    row = task_rows(ledger)[0]
    assert (row["state"], row["lease_id"], row["lease_owner"], row["input_failures"]) == ("running", new.lease_id,
                                                                                         "w2", 0)
    assert len(task_rows(ledger)) == 1  # the stale probe planned nothing
    attempts = {a["id"]: a for a in LedgerReads(ledger).attempts()}
    # The superseded attempt stays closed as it was closed by the expiry; the late reports change nothing.
    assert attempts[old.lease_id]["outcome"] == "lost"
    assert attempts[new.lease_id]["outcome"] is None
    assert ledger.complete(new, segments=[Segment(None, None)], now=23) is True
    assert ledger.complete(new, now=24) is False  # done: a second report is refused too
    assert [a["outcome"] for a in LedgerReads(ledger).attempts()] == ["lost", "done"]


def test_a_stale_lease_after_release_all_running_is_refused(ledger):
    ledger.add_items([ref("a")], now=0)
    old = ledger.claim("w1", 10, now=0)
    ledger.release_all_running("interrupted", "scheduler restarted", now=1)
    ledger.claim("w1", 10, now=2)
    assert ledger.complete(old, now=3) is False
    assert [a["outcome"] for a in LedgerReads(ledger).attempts()] == ["interrupted", None]


def test_a_report_without_any_newer_lease_is_recorded_as_stale(ledger):
    # A task whose attempt is still open but which no longer runs under that lease: only the
    # ledger's own 'stale' close can end the attempt (here a lease id that the task never held).
    ledger.add_items([ref("a")], now=0)
    t = ledger.claim("w", 10, now=0)
    ledger._db.execute("UPDATE tasks SET lease_id = lease_id + 1000 WHERE id = ?", (t.id,))
    assert ledger.complete(t, now=1) is False
    assert LedgerReads(ledger).attempts()[0]["outcome"] == "stale"


def test_release_all_running_returns_running_tasks_to_pending(ledger):
    ledger.add_items([ref("a"), ref("b"), ref("c")], now=0)
    ledger.claim("w1", 60, now=0)
    ledger.claim("w2", 60, now=0)
    assert ledger.release_all_running("interrupted", "scheduler stopped", now=5) == 2
    assert LedgerReads(ledger).tasks()["running"] == 0
    assert LedgerReads(ledger).tasks()["pending"] == 3
    rows = task_rows(ledger)
    assert [r["infra_losses"] for r in rows] == [0, 0, 0]  # a stop request is nobody's loss
    assert LedgerReads(ledger).losses().stopped == 2
    assert all(r["lease_owner"] is None and r["lease_expires"] is None for r in rows)
    assert [a["outcome"] for a in LedgerReads(ledger).attempts()] == ["interrupted", "interrupted"]
    assert ledger.claim("w", 60, now=5) is not None  # claimable at once
    assert ledger.release_all_running("interrupted", "again", now=6) == 1


# -- retrying failed items --------------------------------------------------------------------------


def test_retry_failed_puts_failed_items_back_with_fresh_budgets_and_they_finish(make_ledger):
    ledger = make_ledger(RetryPolicy(max_attempts=2, max_crashes=2, backoff_seconds=1.0))
    ledger.add_items([ref("a"), ref("b")], now=0)
    probe_into(ledger, 2)  # item a: 2 segments and a join
    now = 0.0
    for _ in range(2):
        t = ledger.claim("w", 60, now=now)
        assert (t.item_id, t.kind, t.seq) == (1, "segment", 0)
        last = ledger.fail(t, "input_error", error_type="E", message="m", now=now)
        now += 100
    assert last == "failed"
    # item b: the probe crashes twice.
    for _ in range(2):
        t = ledger.claim("w", 60, now=now)
        assert (t.item_id, t.kind) == (2, "probe")
        ledger.fail(t, "crashed", error_type="C", message="boom", now=now)
        now += 100
    assert ledger.counts() == {"pending": 0, "running": 0, "done": 0, "failed": 2}
    assert ledger.claim("w", 60, now=now) is None

    assert ledger.retry_failed() == 2
    assert ledger.counts()["pending"] == 2
    assert all(i.error is None for i in ledger.items())
    assert states(ledger, 1) == {("probe", 0): "done", ("segment", 0): "pending", ("segment", 1): "pending",
                                 ("join", 0): "waiting"}
    assert states(ledger, 2) == {("probe", 0): "pending"}
    assert all((r["input_failures"], r["crashes"], r["not_before"]) == (0, 0, 0) for r in task_rows(ledger)
               if r["state"] in ("pending", "waiting"))
    # A fresh budget: one more failure each does not fail them again.
    t = ledger.claim("w", 60, now=now)
    assert (t.item_id, t.kind, t.seq) == (1, "segment", 0)
    assert ledger.fail(t, "input_error", error_type="E", message="m", now=now) == "pending"
    # Run everything to the end.
    now += 1000
    while (t := ledger.claim("w", 60, now=now)) is not None:
        segments = [Segment(None, None)] if t.kind == "probe" else None
        assert ledger.complete(t, segments=segments, now=now)
    assert ledger.counts() == {"pending": 0, "running": 0, "done": 2, "failed": 0}
    assert ledger.unfinished() == 0
    assert ledger.retry_failed() == 0


def test_retry_failed_of_a_failed_join_makes_it_pending_again(make_ledger):
    ledger = make_ledger(RetryPolicy(max_attempts=1, max_crashes=1, backoff_seconds=1.0))
    ledger.add_items([ref("a")], now=0)
    probe_into(ledger, 2)
    for _ in range(2):
        ledger.complete(ledger.claim("w", 60, now=1), now=1)
    join = ledger.claim("w", 60, now=2)
    assert ledger.fail(join, "input_error", error_type="JoinError", message="concat", now=2) == "failed"
    assert ledger.retry_failed() == 1
    assert states(ledger, 1)[("join", 0)] == "pending"
    join = ledger.claim("w", 60, now=3)
    assert join.kind == "join" and ledger.complete(join, now=4)
    assert item_state(ledger, 1) == "done"


# -- reading ----------------------------------------------------------------------------------------


def test_failures_lists_error_error_type_and_attempts(make_ledger):
    ledger = make_ledger(RetryPolicy(max_attempts=2, max_crashes=2, backoff_seconds=1.0))
    ledger.add_items([ref("a"), ref("b")], now=0)
    t = ledger.claim("w", 60, now=0)
    ledger.fail(t, "lost", error_type="Lost", message="node", now=0)
    t = ledger.claim("w", 60, now=0)
    ledger.fail(t, "input_error", error_type="ProbeError", message="no video stream", log_tail="tail1", now=0)
    t = ledger.claim("w", 60, now=10)
    assert t.item_id == 1
    ledger.fail(t, "input_error", error_type="ProbeError", message="no video stream", log_tail="tail2", now=10)
    (failure,) = LedgerReads(ledger).failures()
    assert failure.id == 1 and failure.uri == "s3://in/a.mp4"
    assert failure.error == "no video stream"
    assert failure.error_type == "ProbeError"
    assert failure.attempts == 3
    assert failure.log_tail == "tail2"


def test_counts_and_task_counts_list_every_state(ledger):
    assert ledger.counts() == {"pending": 0, "running": 0, "done": 0, "failed": 0}
    assert LedgerReads(ledger).tasks() == {s: 0 for s in ("waiting", "pending", "running", "done", "failed", "cancelled")}
    ledger.add_items([ref("a"), ref("b")], now=0)
    probe_into(ledger, 2)
    ledger.claim("w", 60, now=1)
    assert ledger.counts() == {"pending": 1, "running": 1, "done": 0, "failed": 0}
    assert LedgerReads(ledger).tasks() == {"waiting": 1, "pending": 2, "running": 1, "done": 1, "failed": 0,
                                    "cancelled": 0}
    assert ledger.unfinished() == 4


def test_item_metrics_sums_the_task_metrics(ledger):
    ledger.add_items([ref("a"), ref("b")], now=0)
    probe = ledger.claim("w", 60, now=0)
    ledger.complete(probe, result=ProbeResult(frames=200), segments=[Segment(0, 100), Segment(100, None)],
                    metrics=TaskMetrics(seconds=0.5, bytes_in=10), now=1)
    for i in range(2):
        seg = ledger.claim("w", 60, now=2)
        ledger.complete(seg, metrics=TaskMetrics(frames=100, seconds=2.0 + i, decode_s=0.5, ops_s=1.0,
                                      encode_s=0.25, upload_s=0.125, bytes_in=1000, bytes_out=500),
                        now=3 + i)
    join = ledger.claim("w", 60, now=5)
    ledger.complete(join, metrics=TaskMetrics(seconds=1.0, upload_s=1.0, bytes_out=1000), now=6)
    a, b = LedgerReads(ledger).items()
    assert (a.state, a.item_frames, a.tasks, a.frames) == ("done", 200, 4, 200)
    assert a.seconds == pytest.approx(0.5 + 2 + 3 + 1)
    assert (a.decode_s, a.ops_s, a.encode_s) == pytest.approx((1.0, 2.0, 0.5))
    assert a.upload_s == pytest.approx(1.25)
    # The video's bytes, not its tasks' sum: what the probe read, what the join wrote (not the parts twice)
    assert (a.bytes_in, a.bytes_out) == (10, 1000)
    assert (b.tasks, b.frames, b.seconds, b.bytes_out) == (0, 0, 0, 0)
    assert LedgerReads(ledger).throughput() == [(1, 0), (3, 100), (4, 100), (6, 0)]


def test_losses_count_the_attempts_by_cause(ledger):
    outcomes = ("input_error", "crashed", "hung", "lost", "interrupted")
    ledger.add_items([ref(name) for name in "abcde"], now=0)
    for outcome in outcomes:  # one item each: a second crash would fail the first item's task
        ledger.fail(ledger.claim("w", 60, now=0), outcome, error_type="E", message="m", now=0)
    assert LedgerReads(ledger).losses() == Losses(input_failures=1, crashes=2, infra_losses=1, stopped=1)
    assert str(LedgerReads(ledger).losses()) == ("attempts: 1 failed on their input, 2 crashed or hung, 1 lost to the infrastructure, "
                                    "1 given up on a stop request")


def test_step_times_add_up_by_step_over_tasks_and_items(ledger):
    ledger.add_items([ref("a"), ref("b")], now=0)
    for _ in range(2):
        probe = ledger.claim("w", 60, now=0)
        ledger.complete(probe, result=ProbeResult(frames=10), segments=[Segment(None, None)], now=1)
        video = ledger.claim("w", 60, now=2)
        ledger.complete(video, metrics=TaskMetrics(frames=10, ops_s=3.0, steps_s={"resize": 1.0, "style": 2.0}),
                        now=3)
    assert [item.steps_s for item in LedgerReads(ledger).items()] == [{"resize": 1.0, "style": 2.0}] * 2
    assert LedgerReads(ledger).step_seconds() == {"resize": 2.0, "style": 4.0}


def test_a_ledger_from_before_step_times_gets_the_column_when_opened(db_path, make_ledger):
    make_ledger().close()
    old = sqlite3.connect(db_path)
    old.execute("ALTER TABLE metrics DROP COLUMN steps_s")
    old.close()
    ledger = make_ledger()
    ledger.add_items([ref("a")], now=0)
    probe = ledger.claim("w", 60, now=0)
    ledger.complete(probe, result=ProbeResult(frames=1), segments=[Segment(None, None)], metrics=TaskMetrics(), now=1)
    video = ledger.claim("w", 60, now=2)
    ledger.complete(video, metrics=TaskMetrics(frames=1, steps_s={"identity": 0.5}), now=3)
    assert LedgerReads(ledger).step_seconds() == {"identity": 0.5}


# -- the file ---------------------------------------------------------------------------------------


def test_the_file_is_in_wal_mode(ledger, db_path):
    assert ledger._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw = sqlite3.connect(db_path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent, not per connection
    finally:
        raw.close()


def test_processes_opening_a_new_ledger_at_the_same_moment_all_get_it(tmp_path):
    # `framefleet status` polled while `run` creates the ledger: switching a new file to WAL takes a lock
    # without SQLite's busy wait, so one of them failed at once with "database is locked" (a run failed so)
    errors: list[BaseException] = []

    def open_at(path, start: threading.Barrier) -> None:
        start.wait()
        try:
            Ledger(path).close()
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    for round_ in range(60):
        start = threading.Barrier(4)
        openers = [threading.Thread(target=open_at, args=(tmp_path / f"{round_}.db", start)) for _ in range(4)]
        for opener in openers:
            opener.start()
        for opener in openers:
            opener.join()
    assert errors == []


def test_a_second_ledger_reads_while_the_first_writes(ledger, make_ledger):
    ledger.add_items([ref("a"), ref("b")], now=0)
    ledger.claim("w", 60, now=0)
    ledger._db.execute("BEGIN IMMEDIATE")  # the writer holds the write lock, mid-transaction
    try:
        ledger._db.execute("UPDATE items SET state = 'done' WHERE id = 2")
        result: dict = {}

        def read() -> None:
            reader = Ledger(ledger.path)  # opening must not need the write lock either
            try:
                result["counts"] = reader.counts()
                result["tasks"] = LedgerReads(reader).tasks()
            finally:
                reader.close()

        thread = threading.Thread(target=read)
        thread.start()
        thread.join(timeout=10)
        assert not thread.is_alive(), "the reader blocked on the writer"
        # The reader sees the last committed state, not the open transaction.
        assert result["counts"] == {"pending": 1, "running": 1, "done": 0, "failed": 0}
        assert result["tasks"]["running"] == 1
    finally:
        ledger._db.execute("COMMIT")
    reader = make_ledger()
    assert reader.counts()["done"] == 1


def test_a_ledger_whose_disk_is_full_stops_the_job_with_one_line_and_keeps_what_it_had(ledger):
    from framefleet.errors import DiskFullError

    ledger.add_items([ref("a")])
    pages = ledger._db.execute("PRAGMA page_count").fetchone()[0]
    ledger._db.execute(f"PRAGMA max_page_count = {pages}")  # SQLite answers SQLITE_FULL past this size
    with pytest.raises(DiskFullError, match="no space left on the disk that holds the job's state"):
        ledger.add_items([ref(f"b{i}") for i in range(500)])
    assert not ledger._db.in_transaction, "the failed write was rolled back"
    assert [item.relpath for item in ledger.items()] == ["a.mp4"]


# -- adoption (a probe that found its output committed with a matching manifest) ---------------------


def test_an_adopted_probe_finishes_its_item_with_the_manifests_frames(ledger):
    ledger.add_items([ref("a"), ref("b")])
    task = ledger.claim("w", 60, now=0.0)
    assert (task.input_size, task.input_version) == (1000, "v1"), "the worker writes and checks manifests with them"
    assert ledger.complete(task, result=ProbeResult(frames=240, adopted="s3://out/a.mp4"), now=1.0)
    assert item_state(ledger, 1) == "done" and states(ledger, 1) == {("probe", 0): "done"}, "nothing else runs"
    assert [item.adopted for item in ledger.items()] == [True, False]
    reads = LedgerReads(ledger)
    assert reads.adopted() == 1 and reads.frames()[0] == 240, "adopted frames count as done"
    probe_into(ledger, 1, frames=100)
    assert reads.adopted() == 1


def test_a_new_version_of_an_adopted_input_is_no_longer_adopted(ledger):
    ledger.add_items([ref("a")])
    ledger.complete(ledger.claim("w", 60, now=0.0), result=ProbeResult(frames=240, adopted="s3://out/a.mp4"))
    ledger.add_items([ref("a", version="v2")])
    (item,) = ledger.items()
    assert (item.state, item.adopted, item.frames) == ("pending", False, None)
    assert LedgerReads(ledger).adopted() == 0


def test_a_ledger_made_before_adoption_gets_the_column_when_opened(db_path, make_ledger):
    make_ledger().close()
    db = sqlite3.connect(db_path)
    db.execute("ALTER TABLE items DROP COLUMN adopted")
    db.close()
    assert make_ledger().items() == [] and "adopted" in {
        row[1] for row in sqlite3.connect(db_path).execute("PRAGMA table_info(items)")}


def test_an_adopted_segment_counts_its_frames_done_but_not_as_throughput(ledger):
    ledger.add_items([ref("a")])
    probe_into(ledger, 2, frames=100)
    made, adopted = ledger.claim("w", 60, now=1.0), ledger.claim("w", 60, now=1.0)
    ledger.complete(made, result=SegmentResult(frames=50, output="p0"), metrics=TaskMetrics(frames=50, seconds=2.0),
                    now=3.0)
    ledger.complete(adopted, result=SegmentResult(frames=50, output="p1", adopted=True),
                    metrics=TaskMetrics(frames=50), now=3.0)
    reads = LedgerReads(ledger)
    assert reads.frames()[0] == 100
    assert reads.throughput() == [(3.0, 50)] and [span[2] for span in reads.task_spans()] == [50]


def _claim_work(path, items: int) -> int:
    """SQLite virtual-machine steps (in hundreds) one claim takes on a ledger of `items` pending probes."""
    ledger = Ledger(path)
    try:
        ledger.add_items(ref(f"v{n:05d}") for n in range(items))
        steps = 0

        def count() -> int:
            nonlocal steps
            steps += 1
            return 0

        ledger._db.set_progress_handler(count, 100)
        assert ledger.claim("w1", 60, now=0.0) is not None
        ledger._db.set_progress_handler(None, 100)
        return steps
    finally:
        ledger.close()


def test_a_claim_costs_the_same_with_thousands_of_tasks_pending(tmp_path):
    """The scheduler claims a task for every idle worker: with 100,000 tasks in a job, a claim that sorts
    every pending task caps the job at a few claims per second (benchmarks/scale_sim.py)."""
    few = _claim_work(tmp_path / "few.db", 20)
    many = _claim_work(tmp_path / "many.db", 5000)
    assert many <= 2 * few + 5, f"a claim among 5,000 pending tasks took {many}00 steps, among 20 {few}00"


def test_a_batch_commits_its_writes_at_once_and_keeps_them_when_an_error_follows(ledger, make_ledger):
    """The scheduler records a dispatch round's claims, and the results the pool reported together, in one
    transaction: another reader sees all of them at once; an error between writes keeps those before it."""
    ledger.add_items([ref("a"), ref("b"), ref("c")])
    reader = make_ledger()
    with ledger.batch():
        first = ledger.claim("w1", 60, now=0.0)
        second = ledger.claim("w2", 60, now=0.0)
        assert ledger.complete(first, result=ProbeResult(frames=10), segments=[Segment(None, None)], now=1.0)
        assert LedgerReads(reader).tasks()["running"] == 0, "nothing is committed inside the batch"
    assert LedgerReads(reader).tasks()["running"] == 1
    assert [t["state"] for t in task_rows(reader) if t["kind"] == "probe"] == ["done", "running", "pending"]

    with pytest.raises(RuntimeError), ledger.batch():
        ledger.complete(second, result=ProbeResult(frames=10), segments=[Segment(None, None)], now=2.0)
        raise RuntimeError("a worker's event the scheduler cannot handle")
    assert [t["state"] for t in task_rows(reader) if t["kind"] == "probe"] == ["done", "done", "pending"]


def test_has_unfinished_says_whether_any_task_may_still_run(ledger):
    assert not ledger.has_unfinished()
    ledger.add_items([ref("a")])
    assert ledger.has_unfinished()
    probe = ledger.claim("w1", 60, now=0.0)
    assert ledger.has_unfinished()
    ledger.complete(probe, result=ProbeResult(frames=10), segments=[Segment(None, None)], now=1.0)
    segment = ledger.claim("w1", 60, now=1.0)
    ledger.complete(segment, now=2.0)
    assert not ledger.has_unfinished() and ledger.unfinished() == 0
