"""`DispatchRound`: what a claimed task gets of the workers that would otherwise idle."""

from __future__ import annotations

from framefleet.engines.slots import DispatchRound


def sizes(kinds: list[str], waiting: int, without_work: int, workers: int = 4, one_machine: bool = True
          ) -> list[tuple[int, int]]:
    counted = []

    def count() -> tuple[int, int]:
        counted.append(1)
        return waiting, without_work

    claims = DispatchRound(workers, count, one_machine=one_machine)
    result = [claims.sizes(kind) for kind in kinds]
    assert len(counted) <= 1  # one bounded query a round
    return result


def test_a_lone_segment_gets_every_idle_workers_share():
    assert sizes(["segment"], waiting=0, without_work=4) == [(1, 4)]


def test_segments_split_the_idle_shares_between_them():
    assert sizes(["segment", "segment"], waiting=1, without_work=4) == [(1, 2), (1, 2)]
    assert sizes(["segment", "segment", "segment"], waiting=2, without_work=4) == [(1, 1), (1, 1), (1, 2)]


def test_a_busy_job_gives_each_segment_its_own_share_only():
    assert sizes(["segment", "segment"], waiting=10, without_work=2) == [(1, 1), (1, 1)]


def test_a_probe_with_little_work_left_spreads_its_video_over_the_idle_workers():
    assert sizes(["probe"], waiting=0, without_work=4) == [(4, 1)]
    assert sizes(["probe", "probe"], waiting=1, without_work=4) == [(3, 1), (4, 1)]


def test_workers_on_other_machines_lend_no_cores():
    assert sizes(["segment"], waiting=0, without_work=4, one_machine=False) == [(1, 1)]


def test_joins_count_nothing():
    assert sizes(["join", "join"], waiting=0, without_work=4) == [(1, 1), (1, 1)]
