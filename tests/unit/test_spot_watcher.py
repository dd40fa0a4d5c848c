"""The preemption-notice watcher against a fake metadata server on loopback, one cloud at a time, and the
bad inputs: an absent or silent endpoint, a malformed notice, a deadline already past or within a frame."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import pytest
from fake_metadata import (
    AWS_ACTION,
    AWS_REBALANCE,
    AWS_TOKEN,
    FakeMetadataServer,
    azure_event,
    refused_endpoint,
    silent_endpoint,
)

from framefleet.errors import OptionError
from framefleet.spot import Notice, NoticeWatcher, WatchSettings

pytestmark = pytest.mark.timeout(30)
NONE = WatchSettings(azure_url=None, aws_url=None, gcp_url=None)
FAST = {"azure_interval": 0.05, "aws_interval": 0.05, "gcp_wait_seconds": 1, "absent_interval": 0.05,
        "connect_timeout": 0.3, "read_timeout": 0.3, "azure_wake_timeout": 0.3}


class Inbox:
    """The callback: collects notices and lets a test wait for them."""

    def __init__(self) -> None:
        self.notices: list[Notice] = []
        self._arrived = threading.Condition()

    def __call__(self, notice: Notice) -> None:
        with self._arrived:
            self.notices.append(notice)
            self._arrived.notify_all()

    def wait(self, count: int = 1, timeout: float = 5.0) -> list[Notice]:
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.notices) >= count, timeout)
        return list(self.notices)


def watch(inbox: Inbox, **settings) -> NoticeWatcher:
    return NoticeWatcher(inbox, WatchSettings(**{**NONE.__dict__, **FAST, **settings})).start()


def spot_records(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "framefleet.spot"]


def test_an_azure_preempt_event_is_delivered_once_and_acknowledged():
    inbox = Inbox()
    with FakeMetadataServer("azure", vm_name="vm-a") as server:
        watcher = watch(inbox, azure_url=server.url)
        try:
            time.sleep(0.2)
            assert inbox.notices == []
            server.set_azure_events(azure_event("ev-1", time.time() + 30),
                                    azure_event("ev-other", time.time() + 30, resources=("vm-b",)))
            (notice,) = inbox.wait()
            time.sleep(0.3)  # several more polls see the same event
            assert len(inbox.notices) == 1
            assert (notice.cloud, notice.kind, notice.event_id) == ("azure", "preempt", "ev-1")
            assert 28 < notice.seconds_left() <= 30 and not notice.immediate
            assert watcher.acknowledge(notice)
            assert server.acknowledged == ["ev-1"]
        finally:
            watcher.stop()


def test_an_aws_interruption_and_a_rebalance_recommendation_are_read_with_an_imdsv2_token():
    inbox = Inbox()
    with FakeMetadataServer("aws") as server:
        watcher = watch(inbox, aws_url=server.url)
        try:
            time.sleep(0.2)  # 404s: no notice
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 120))
            server.set_aws_rebalance('{"noticeTime": "2026-12-07T11:00:00Z"}')
            server.set_aws_action(f'{{"action": "terminate", "time": "{when}"}}')
            notices = inbox.wait(2)
        finally:
            watcher.stop()
    assert {(n.kind, n.deadline_wall is None) for n in notices} == {("terminate", False), ("rebalance", True)}
    assert 115 < next(n for n in notices if n.kind == "terminate").seconds_left() <= 120
    assert server.requests[0] == ("PUT", AWS_TOKEN)
    assert {path for _, path in server.requests} == {AWS_TOKEN, AWS_ACTION, AWS_REBALANCE}
    assert [method for method, _ in server.requests].count("PUT") == 1  # the token is kept


def test_gcp_preempted_is_seen_as_soon_as_it_changes_through_wait_for_change():
    inbox = Inbox()
    with FakeMetadataServer("gcp") as server:
        watcher = watch(inbox, gcp_url=server.url, gcp_wait_seconds=5, gcp_notice_seconds=30)
        try:
            time.sleep(0.3)  # the first read, then a held request
            held = len(server.requests)
            flipped = time.monotonic()
            server.set_gcp_preempted("TRUE")
            (notice,) = inbox.wait()
            assert notice.received_monotonic - flipped < 0.5
            assert held <= 3, "it waited on the server instead of polling"
            assert (notice.cloud, notice.kind) == ("gcp", "preempt") and 29 < notice.seconds_left() <= 30
        finally:
            server.set_gcp_preempted("TRUE")  # release a held request
            watcher.stop()


def test_sigterm_is_a_notice_with_the_grace_period_and_the_handler_is_restored():
    inbox = Inbox()
    before = signal.getsignal(signal.SIGTERM)
    watcher = watch(inbox, sigterm=True, sigterm_grace_seconds=25)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        (notice,) = inbox.wait()
        time.sleep(0.3)
        assert len(inbox.notices) == 1
        assert (notice.cloud, notice.kind) == ("kubernetes", "sigterm") and 23 < notice.seconds_left() <= 25
    finally:
        watcher.stop()
    assert signal.getsignal(signal.SIGTERM) is before


def test_absent_and_silent_endpoints_cost_nothing_and_are_logged_once(caplog):
    caplog.set_level(logging.INFO, logger="framefleet.spot")
    inbox = Inbox()
    with FakeMetadataServer("azure") as server, silent_endpoint() as silent:
        watcher = watch(inbox, azure_url=server.url, aws_url=refused_endpoint(), gcp_url=silent)
        try:
            time.sleep(0.6)  # the absent ones are asked again every 0.05 s + timeout
            server.set_azure_events(azure_event("ev-2", time.time() + 30))
            (notice,) = inbox.wait(timeout=1.0)
        finally:
            watcher.stop()
    assert notice.event_id == "ev-2"
    lines = spot_records(caplog)
    assert len([line for line in lines if line.startswith("no aws preemption notices")]) == 1, lines
    assert len([line for line in lines if line.startswith("no gcp preemption notices")]) == 1, lines
    assert "timed out" in next(line for line in lines if line.startswith("no gcp"))
    assert not any(line.startswith("no azure") for line in lines)


def test_an_outage_of_this_clouds_service_is_logged_once_and_it_is_asked_again_at_its_pace(caplog):
    caplog.set_level(logging.INFO, logger="framefleet.spot")
    inbox = Inbox()
    with FakeMetadataServer("azure") as server:
        watcher = watch(inbox, azure_url=server.url, absent_interval=30)
        try:
            time.sleep(0.2)  # it answered: this is Azure
            server.failing = True
            time.sleep(0.3)
            server.set_azure_events(azure_event("ev-3", time.time() + 30))
            server.failing = False
            (notice,) = inbox.wait(timeout=1.0)  # not 30 s later
        finally:
            watcher.stop()
    assert notice.event_id == "ev-3"
    outages = [line for line in spot_records(caplog) if "stopped answering" in line]
    assert len(outages) == 1 and "503" in outages[0]


def test_a_malformed_notice_is_logged_once_and_ignored(caplog):
    caplog.set_level(logging.INFO, logger="framefleet.spot")
    inbox = Inbox()
    with FakeMetadataServer("aws") as server:
        server.set_aws_action('{"action": "terminate", "time": "in two minutes"}')
        watcher = watch(inbox, aws_url=server.url)
        try:
            time.sleep(0.4)
            assert inbox.notices == []
            server.set_aws_action('{"action": "stop", "time": "2030-01-01T00:00:00Z"}')
            (notice,) = inbox.wait()
        finally:
            watcher.stop()
    assert notice.kind == "stop"
    malformed = [line for line in spot_records(caplog) if line.startswith("ignoring a malformed")]
    assert len(malformed) == 1 and "in two minutes" in malformed[0]


def test_a_deadline_already_past_or_within_one_frame_is_delivered_as_now():
    inbox = Inbox()
    with FakeMetadataServer("azure") as server:
        server.set_azure_events(azure_event("past", time.time() - 10),
                                azure_event("started", None, status="Started"),
                                azure_event("tight", time.time() + 0.5),
                                azure_event("roomy", time.time() + 30))
        watcher = watch(inbox, azure_url=server.url, frame_seconds=1.0)
        try:
            notices = {n.event_id: n for n in inbox.wait(4)}
        finally:
            watcher.stop()
    assert {k for k, n in notices.items() if n.immediate} == {"past", "started", "tight"}
    assert all(notices[k].seconds_left() == 0 for k in ("past", "started", "tight"))
    assert notices["roomy"].seconds_left() > 25


def test_a_failing_callback_does_not_stop_the_watching(caplog):
    caplog.set_level(logging.INFO, logger="framefleet.spot")
    seen: list[str] = []

    def callback(notice: Notice) -> None:
        seen.append(notice.event_id)
        if notice.event_id == "first":
            raise RuntimeError("the worker's handler broke")

    with FakeMetadataServer("azure") as server:
        server.set_azure_events(azure_event("first", time.time() + 30))
        watcher = NoticeWatcher(callback, WatchSettings(**{**NONE.__dict__, **FAST, "azure_url": server.url}))
        watcher.start()
        try:
            deadline = time.monotonic() + 3
            while "first" not in seen and time.monotonic() < deadline:
                time.sleep(0.02)
            server.set_azure_events(azure_event("second", time.time() + 30))
            while "second" not in seen and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            watcher.stop()
    assert seen == ["first", "second"]
    assert any("callback failed" in line for line in spot_records(caplog))


def test_settings_come_from_the_environment():
    settings = WatchSettings.from_env({
        "FRAMEFLEET_SPOT_SOURCES": "aws,gcp,sigterm", "AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:9",
        "GCE_METADATA_HOST": "127.0.0.1:8", "FRAMEFLEET_SPOT_SIGTERM_GRACE_SECONDS": "90",
        "FRAMEFLEET_SPOT_AWS_POLL_SECONDS": "2"})
    assert settings.azure_url is None and settings.aws_url == "http://127.0.0.1:9"
    assert settings.gcp_url == "http://127.0.0.1:8"
    assert settings.sigterm and settings.sigterm_grace_seconds == 90
    assert settings.aws_interval == 2 and [s.name for s in settings.sources()] == ["aws", "gcp", "sigterm"]
    default = WatchSettings.from_env({})
    assert (default.azure_url, default.aws_url) == ("http://169.254.169.254",) * 2 and not default.sigterm
    assert default.aws_interval == 5
    assert WatchSettings.from_env({"FRAMEFLEET_SPOT_SOURCES": "none"}).sources() == []
    with pytest.raises(ValueError, match="unknown sources"):
        WatchSettings.from_env({"FRAMEFLEET_SPOT_SOURCES": "oracle"})


def test_a_spot_variable_the_watcher_cannot_use_is_an_option_error() -> None:
    """A bad FRAMEFLEET_SPOT_* value ends a run in one `error:` line (exit 2), not an internal error."""
    for environ, expected in (({"FRAMEFLEET_SPOT_SOURCES": "azur"}, "unknown sources"),
                              ({"FRAMEFLEET_SPOT_AWS_POLL_SECONDS": "fast"}, "give a number of seconds")):
        with pytest.raises(OptionError, match=expected):
            WatchSettings.from_env(environ)
