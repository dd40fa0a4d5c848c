"""Preemption notices: what a cloud says before it takes a Spot node back, parsed from its metadata service.

Each parser takes the body an endpoint answered and the moment it was read, and returns `Notice`s, or raises
`MalformedNotice` for a body that is not what the endpoint documents. Nothing here does I/O.

- Azure Scheduled Events (`/metadata/scheduledevents`): a JSON document with `Events`, each with `EventId`,
  `EventType` (`Preempt` for a Spot eviction, `Terminate` for a deletion with a termination notice),
  `Resources` (the VM names it touches: the document covers every VM of an availability set or scale set
  placement group) and `NotBefore` (RFC 1123 date; empty once the event has started).
- AWS `spot/instance-action`: `{"action": "terminate"|"stop"|"hibernate", "time": "2026-12-07T12:00:00Z"}`;
  `events/recommendations/rebalance`: `{"noticeTime": "..."}`, an elevated risk with no deadline.
- GCP `instance/preempted`: `TRUE` or `FALSE`; the node is stopped about 30 s after it turns `TRUE`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Literal

Cloud = Literal["azure", "aws", "gcp", "kubernetes"]
NoticeKind = Literal["preempt", "terminate", "stop", "hibernate", "rebalance", "sigterm"]

AZURE_EVENT_KINDS: dict[str, NoticeKind] = {"Preempt": "preempt", "Terminate": "terminate"}
AWS_ACTIONS: dict[str, NoticeKind] = {"terminate": "terminate", "stop": "stop", "hibernate": "hibernate"}


class MalformedNotice(ValueError):
    """A metadata endpoint answered something that is not the documented format."""


@dataclass(frozen=True)
class Clock:
    """One reading of both clocks, so that a wall-clock deadline maps onto the monotonic clock."""

    wall: float
    monotonic: float

    @classmethod
    def now(cls) -> Clock:
        return cls(wall=time.time(), monotonic=time.monotonic())

    def to_monotonic(self, wall: float) -> float:
        return self.monotonic + (wall - self.wall)


@dataclass(frozen=True)
class Notice:
    """One announced loss of this node, delivered once per event."""

    cloud: Cloud
    kind: NoticeKind
    event_id: str
    """The cloud's own id (Azure's EventId), or one made from the notice (AWS: action and time), so that the
    same event read again is recognised."""
    deadline_wall: float | None
    """When the node goes, in `time.time()` seconds; None for a rebalance recommendation (no deadline)."""
    deadline_monotonic: float | None
    """The same moment on `time.monotonic()`, immune to clock steps: what a worker should plan with."""
    received_monotonic: float
    immediate: bool = False
    """The deadline had passed, or was closer than one frame's time, when the notice arrived: the deadline
    is set to that moment, and there is no time to finish anything."""
    raw: str = ""
    """The endpoint's answer, for the log."""

    def seconds_left(self, now_monotonic: float | None = None) -> float:
        """Seconds until the deadline (never negative); infinite for a notice without one."""
        if self.deadline_monotonic is None:
            return math.inf
        now = time.monotonic() if now_monotonic is None else now_monotonic
        return max(0.0, self.deadline_monotonic - now)

    def due_now(self, clock: Clock) -> Notice:
        """This notice with its deadline moved to `clock`'s moment and marked immediate."""
        return replace(self, deadline_wall=clock.wall, deadline_monotonic=clock.monotonic, immediate=True)


def _notice(cloud: Cloud, kind: NoticeKind, event_id: str, deadline_wall: float | None, clock: Clock,
            raw: str) -> Notice:
    monotonic = None if deadline_wall is None else clock.to_monotonic(deadline_wall)
    return Notice(cloud=cloud, kind=kind, event_id=event_id, deadline_wall=deadline_wall,
                  deadline_monotonic=monotonic, received_monotonic=clock.monotonic, raw=raw)


def _json_object(body: str, what: str) -> dict:
    try:
        document = json.loads(body)
    except ValueError as error:
        raise MalformedNotice(f"{what} is not JSON ({error}): {body[:200]!r}") from None
    if not isinstance(document, dict):
        raise MalformedNotice(f"{what} is not a JSON object: {body[:200]!r}")
    return document


def _iso_time(value: object, what: str) -> float:
    """AWS writes UTC times as `2026-12-07T12:00:00Z`."""
    if not isinstance(value, str):
        raise MalformedNotice(f"{what} has no time string: {value!r}")
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise MalformedNotice(f"{what} has a time that is not ISO 8601: {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def parse_azure_scheduled_events(body: str, clock: Clock, vm_name: str | None = None
                                 ) -> tuple[list[Notice], list[str]]:
    """The `Preempt` and `Terminate` events of a Scheduled Events document that touch this VM (`vm_name`;
    None: every event), and a line for each malformed event, which is skipped while the others count.
    A document that is not one raises `MalformedNotice`."""
    document = _json_object(body, "Azure Scheduled Events")
    events = document.get("Events")
    if not isinstance(events, list):
        raise MalformedNotice(f"Azure Scheduled Events has no Events list: {body[:200]!r}")
    notices, problems = [], []
    for event in events:
        try:
            notice = _azure_event(event, clock, vm_name)
        except MalformedNotice as problem:
            problems.append(str(problem))
            continue
        if notice is not None:
            notices.append(notice)
    return notices, problems


def _azure_event(event: object, clock: Clock, vm_name: str | None) -> Notice | None:
    if not isinstance(event, dict):
        raise MalformedNotice(f"Azure Scheduled Events has an event that is not an object: {event!r}")
    kind = AZURE_EVENT_KINDS.get(event.get("EventType", ""))
    if kind is None:
        return None  # Reboot, Redeploy, Freeze: the node comes back
    event_id, resources = event.get("EventId"), event.get("Resources", [])
    if not isinstance(event_id, str) or not event_id or not isinstance(resources, list):
        raise MalformedNotice(f"Azure {event.get('EventType')} event without EventId or Resources: {event!r}")
    if vm_name is not None and vm_name not in resources:
        return None  # another VM of the same availability set or scale set
    not_before = event.get("NotBefore", "")
    if not isinstance(not_before, str):
        raise MalformedNotice(f"Azure event {event_id} has a NotBefore that is not a string: {not_before!r}")
    if not not_before.strip():
        deadline = clock.wall  # the event has started: no time left
    else:
        try:
            deadline = parsedate_to_datetime(not_before).timestamp()
        except (TypeError, ValueError):
            raise MalformedNotice(f"Azure event {event_id}: unreadable NotBefore {not_before!r}") from None
    return _notice("azure", kind, event_id, deadline, clock, json.dumps(event))


def parse_aws_instance_action(body: str, clock: Clock) -> Notice:
    """`spot/instance-action`: the action and when it happens."""
    document = _json_object(body, "AWS spot/instance-action")
    action = AWS_ACTIONS.get(document.get("action", ""))
    if action is None:
        raise MalformedNotice(f"AWS spot/instance-action has an unknown action: {body[:200]!r}")
    deadline = _iso_time(document.get("time"), "AWS spot/instance-action")
    return _notice("aws", action, f"{action}@{document['time']}", deadline, clock, body)


def parse_aws_rebalance(body: str, clock: Clock) -> Notice:
    """`events/recommendations/rebalance`: a warning without a deadline."""
    document = _json_object(body, "AWS rebalance recommendation")
    notice_time = document.get("noticeTime")
    _iso_time(notice_time, "AWS rebalance recommendation")
    return _notice("aws", "rebalance", f"rebalance@{notice_time}", None, clock, body)


def parse_gcp_preempted(body: str, clock: Clock, notice_seconds: float) -> Notice | None:
    """`instance/preempted`: a notice when `TRUE`, due `notice_seconds` from now (GCP gives about 30 s)."""
    value = body.strip()
    if value == "FALSE":
        return None
    if value != "TRUE":
        raise MalformedNotice(f"GCP instance/preempted is neither TRUE nor FALSE: {body[:200]!r}")
    return _notice("gcp", "preempt", "preempted", clock.wall + notice_seconds, clock, body)


def sigterm_notice(clock: Clock, grace_seconds: float) -> Notice:
    """A SIGTERM (Kubernetes deleting the pod): the pod is killed `grace_seconds` later."""
    return _notice("kubernetes", "sigterm", "sigterm", clock.wall + grace_seconds, clock, "SIGTERM")
