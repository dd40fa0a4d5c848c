"""Parsing the clouds' preemption notices: the documented formats, and what is malformed."""

from __future__ import annotations

import json

import pytest
from fake_metadata import azure_event

from framefleet.spot.notices import (
    Clock,
    MalformedNotice,
    parse_aws_instance_action,
    parse_aws_rebalance,
    parse_azure_scheduled_events,
    parse_gcp_preempted,
    sigterm_notice,
)

CLOCK = Clock(wall=1_800_000_000.0, monotonic=500.0)


def azure_document(*events: dict) -> str:
    return json.dumps({"DocumentIncarnation": 3, "Events": list(events)})


def test_an_azure_preempt_event_for_this_vm_is_a_notice_with_both_clocks():
    body = azure_document(azure_event("E1", CLOCK.wall + 30))
    (notice,), problems = parse_azure_scheduled_events(body, CLOCK, vm_name="vm-a")
    assert not problems
    assert (notice.cloud, notice.kind, notice.event_id) == ("azure", "preempt", "E1")
    assert notice.deadline_wall == CLOCK.wall + 30 and notice.deadline_monotonic == 530.0
    assert notice.seconds_left(now_monotonic=510.0) == 20.0 and not notice.immediate


def test_azure_events_of_other_vms_and_of_other_types_are_not_notices():
    body = azure_document(azure_event("other-vm", CLOCK.wall + 30, resources=("vm-b",)),
                          azure_event("reboot", CLOCK.wall + 30, kind="Reboot"),
                          azure_event("going", CLOCK.wall + 60, kind="Terminate"))
    notices, _ = parse_azure_scheduled_events(body, CLOCK, vm_name="vm-a")
    assert [(n.event_id, n.kind) for n in notices] == [("going", "terminate")]
    everyone, _ = parse_azure_scheduled_events(body, CLOCK, vm_name=None)
    assert {n.event_id for n in everyone} == {"other-vm", "going"}


def test_a_started_azure_event_has_no_time_left():
    started = azure_document(azure_event("E2", None, status="Started"))
    (notice,), _ = parse_azure_scheduled_events(started, CLOCK)
    assert notice.deadline_wall == CLOCK.wall and notice.seconds_left(CLOCK.monotonic) == 0


def test_a_malformed_azure_event_is_reported_and_the_good_ones_still_count():
    bad = {**azure_event("E3", CLOCK.wall + 30), "NotBefore": "next Tuesday"}
    nameless = {k: v for k, v in azure_event("E4", CLOCK.wall + 30).items() if k != "EventId"}
    notices, problems = parse_azure_scheduled_events(
        azure_document(bad, nameless, "junk", azure_event("E5", CLOCK.wall + 40)), CLOCK)
    assert [n.event_id for n in notices] == ["E5"]
    assert len(problems) == 3 and "next Tuesday" in problems[0]


@pytest.mark.parametrize("body", ["<html>oops</html>", "[]", json.dumps({"Events": "none"})])
def test_an_azure_document_that_is_not_one_is_malformed(body):
    with pytest.raises(MalformedNotice):
        parse_azure_scheduled_events(body, CLOCK)


def test_an_aws_instance_action_is_a_notice_at_its_time():
    notice = parse_aws_instance_action('{"action": "terminate", "time": "2027-01-15T08:02:00Z"}', CLOCK)
    assert (notice.cloud, notice.kind) == ("aws", "terminate")
    assert notice.event_id == "terminate@2027-01-15T08:02:00Z"
    assert notice.deadline_wall == 1_800_000_120.0  # 2027-01-15T08:00:00Z is 1.8e9


@pytest.mark.parametrize("body", ['{"action": "explode", "time": "2027-01-15T08:02:00Z"}',
                                  '{"action": "stop", "time": "soon"}', '{"action": "stop"}', "terminate"])
def test_a_malformed_aws_instance_action_is_rejected(body):
    with pytest.raises(MalformedNotice):
        parse_aws_instance_action(body, CLOCK)


def test_an_aws_rebalance_recommendation_has_no_deadline():
    notice = parse_aws_rebalance('{"noticeTime": "2027-01-15T07:59:00Z"}', CLOCK)
    assert notice.kind == "rebalance" and notice.deadline_wall is None
    assert notice.seconds_left() == float("inf")


def test_gcp_preempted_true_is_a_notice_due_after_the_notice_period():
    assert parse_gcp_preempted("FALSE", CLOCK, 30) is None
    notice = parse_gcp_preempted("TRUE\n", CLOCK, 30)
    assert (notice.cloud, notice.kind) == ("gcp", "preempt") and notice.deadline_monotonic == 530.0
    with pytest.raises(MalformedNotice):
        parse_gcp_preempted("maybe", CLOCK, 30)


def test_sigterm_is_a_notice_due_after_the_grace_period():
    notice = sigterm_notice(CLOCK, 30)
    assert (notice.cloud, notice.kind, notice.deadline_monotonic) == ("kubernetes", "sigterm", 530.0)


def test_a_notice_due_now_has_its_deadline_moved_to_the_present():
    notice = parse_gcp_preempted("TRUE", CLOCK, 30).due_now(Clock(wall=CLOCK.wall + 1, monotonic=501.0))
    assert notice.immediate and notice.deadline_monotonic == 501.0 and notice.seconds_left(501.0) == 0
