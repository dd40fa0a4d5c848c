"""Where preemption notices come from: one class per cloud's metadata service, and SIGTERM.

A source's `poll()` asks once and returns what it found (`Polled`), or raises `EndpointUnavailable` when
nothing answered; `interval` is how long the watcher waits before the next call. Endpoints (check them
against the cloud's documentation before changing them):

- Azure: `GET /metadata/scheduledevents?api-version=2020-07-01` with `Metadata: true`; acknowledging an event
  is `POST` of `{"StartRequests": [{"EventId": ...}]}` to the same URL. This VM's name, to pick its events,
  is `GET /metadata/instance/compute/name?api-version=2021-02-01&format=text`.
- AWS (IMDSv2): `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds`, then `GET
  /latest/meta-data/spot/instance-action` and `/latest/meta-data/events/recommendations/rebalance` with
  `X-aws-ec2-metadata-token`; 404 means no notice.
- GCP: `GET /computeMetadata/v1/instance/preempted` with `Metadata-Flavor: Google`, then the same with
  `wait_for_change=true&last_etag=ETAG&timeout_sec=N`, which the server holds open until the value changes.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from framefleet.spot.metadata_http import EndpointUnavailable, Response, request
from framefleet.spot.notices import (
    Clock,
    MalformedNotice,
    Notice,
    parse_aws_instance_action,
    parse_aws_rebalance,
    parse_azure_scheduled_events,
    parse_gcp_preempted,
    sigterm_notice,
)

AZURE_API_VERSION = "2020-07-01"
AZURE_NAME_API_VERSION = "2021-02-01"
AWS_TOKEN_TTL_SECONDS = 21600


@dataclass
class Polled:
    notices: list[Notice] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Malformed answers, one line each: logged and otherwise ignored."""


class NoticeSource(Protocol):
    name: str
    endpoint: str
    interval: float

    def poll(self) -> Polled: ...

    def acknowledge(self, notice: Notice) -> bool: ...


@dataclass(frozen=True)
class Timeouts:
    connect: float = 1.0
    read: float = 10.0


def _expect(response: Response, url: str, *statuses: int) -> Response:
    """An answer with another status than expected means this is not the service we are looking for."""
    if response.status not in statuses:
        raise EndpointUnavailable(f"{url} answered HTTP {response.status}")
    return response


class AzureScheduledEvents:
    """Azure Scheduled Events: `Preempt` (Spot eviction, at least 30 s ahead) and `Terminate`."""

    name = "azure"

    def __init__(self, base_url: str, *, interval: float = 1.0, timeouts: Timeouts = Timeouts(),
                 wake_timeout: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.endpoint = f"{self.base_url}/metadata/scheduledevents?api-version={AZURE_API_VERSION}"
        self.interval, self.timeouts = interval, timeouts
        self.wake_timeout = wake_timeout
        """The service starts on its first call, which may take up to two minutes: the read timeout until it
        has answered once."""
        self._awake = False
        self._vm_name: str | None = None
        self._vm_name_known = False

    def _get(self, url: str) -> Response:
        read = self.timeouts.read if self._awake else max(self.timeouts.read, self.wake_timeout)
        return request("GET", url, headers={"Metadata": "true"}, connect_timeout=self.timeouts.connect,
                       read_timeout=read)

    def vm_name(self) -> str | None:
        """This VM's name, to keep only its own events; None (every event counts) when IMDS does not say."""
        if not self._vm_name_known:
            url = (f"{self.base_url}/metadata/instance/compute/name"
                   f"?api-version={AZURE_NAME_API_VERSION}&format=text")
            answer = self._get(url)
            name = answer.body.strip() if answer.status == 200 else ""
            self._vm_name = name or None
            self._vm_name_known = True
        return self._vm_name

    def poll(self) -> Polled:
        answer = _expect(self._get(self.endpoint), self.endpoint, 200)
        self._awake = True
        try:
            notices, problems = parse_azure_scheduled_events(answer.body, Clock.now(), self.vm_name())
        except MalformedNotice as problem:
            return Polled(problems=[str(problem)])
        return Polled(notices, problems)

    def acknowledge(self, notice: Notice) -> bool:
        """Tell Azure the VM is ready: the eviction may start now instead of at NotBefore."""
        body = json.dumps({"StartRequests": [{"EventId": notice.event_id}]}).encode()
        headers = {"Metadata": "true", "Content-Type": "application/json"}
        answer = request("POST", self.endpoint, headers=headers, body=body,
                         connect_timeout=self.timeouts.connect, read_timeout=self.timeouts.read)
        return answer.status == 200


class AwsSpot:
    """AWS Spot through IMDSv2: the interruption notice (2 minutes, best effort) and rebalance advice."""

    name = "aws"

    def __init__(self, base_url: str, *, interval: float = 5.0, timeouts: Timeouts = Timeouts()) -> None:
        self.base_url = base_url.rstrip("/")
        self.endpoint = f"{self.base_url}/latest/meta-data/spot/instance-action"
        self.rebalance_endpoint = f"{self.base_url}/latest/meta-data/events/recommendations/rebalance"
        self.interval, self.timeouts = interval, timeouts
        self._token: str | None = None
        self._token_expires = 0.0

    def _call(self, method: str, url: str, headers: dict[str, str]) -> Response:
        return request(method, url, headers=headers, connect_timeout=self.timeouts.connect,
                       read_timeout=self.timeouts.read)

    def _token_header(self) -> dict[str, str]:
        if self._token is None or time.monotonic() > self._token_expires:
            url = f"{self.base_url}/latest/api/token"
            answer = _expect(self._call("PUT", url, {"X-aws-ec2-metadata-token-ttl-seconds":
                                                     str(AWS_TOKEN_TTL_SECONDS)}), url, 200)
            self._token = answer.body.strip()
            self._token_expires = time.monotonic() + AWS_TOKEN_TTL_SECONDS - 60
        return {"X-aws-ec2-metadata-token": self._token}

    def _read(self, url: str) -> str | None:
        """The item's body, or None when it is absent (404: no notice)."""
        answer = self._call("GET", url, self._token_header())
        if answer.status == 401:  # the token expired early (the instance was stopped and started)
            self._token = None
            answer = self._call("GET", url, self._token_header())
        return None if _expect(answer, url, 200, 404).status == 404 else answer.body

    def poll(self) -> Polled:
        polled = Polled()
        items = ((self.endpoint, parse_aws_instance_action), (self.rebalance_endpoint, parse_aws_rebalance))
        for url, parse in items:
            body = self._read(url)
            if body is None:
                continue
            try:
                polled.notices.append(parse(body, Clock.now()))
            except MalformedNotice as problem:
                polled.problems.append(str(problem))
        return polled

    def acknowledge(self, notice: Notice) -> bool:
        return True  # AWS takes no acknowledgement


class GcpPreempted:
    """GCP's `preempted` key: read once, then held open with `wait_for_change` until it turns TRUE."""

    name = "gcp"

    def __init__(self, base_url: str, *, notice_seconds: float = 30.0, wait_seconds: float = 60.0,
                 timeouts: Timeouts = Timeouts()) -> None:
        self.base_url = base_url.rstrip("/")
        self.endpoint = f"{self.base_url}/computeMetadata/v1/instance/preempted"
        self.notice_seconds, self.wait_seconds, self.timeouts = notice_seconds, wait_seconds, timeouts
        self._etag: str | None = None

    @property
    def interval(self) -> float:
        return 0.05 if self._etag else 1.0  # a held request does the waiting

    def poll(self) -> Polled:
        url, read = self.endpoint, self.timeouts.read
        if self._etag:
            url += f"?wait_for_change=true&last_etag={self._etag}&timeout_sec={int(self.wait_seconds)}"
            read += self.wait_seconds
        answer = _expect(request("GET", url, headers={"Metadata-Flavor": "Google"},
                                 connect_timeout=self.timeouts.connect, read_timeout=read), url, 200)
        if answer.headers.get("metadata-flavor") != "Google":
            raise EndpointUnavailable(f"{url} is not a GCP metadata server (no Metadata-Flavor: Google)")
        self._etag = answer.headers.get("etag") or None
        try:
            notice = parse_gcp_preempted(answer.body, Clock.now(), self.notice_seconds)
        except MalformedNotice as problem:
            return Polled(problems=[str(problem)])
        return Polled([notice] if notice else [])

    def acknowledge(self, notice: Notice) -> bool:
        return True


class SigtermSource:
    """SIGTERM as a notice: Kubernetes deleting the pod (or a node drain) kills it `grace_seconds` later.

    `install()` must run in the main thread; the handler only records the signal (the process keeps
    running: its owner decides when to exit, before the grace period ends). `uninstall()` restores the
    previous handler."""

    name = "sigterm"
    endpoint = "SIGTERM"

    def __init__(self, grace_seconds: float = 30.0, *, interval: float = 0.5) -> None:
        self.grace_seconds, self.interval = grace_seconds, interval
        self._received: list[Clock] = []
        self._signalled = threading.Event()
        self._previous: object = None
        self._installed = False

    def install(self) -> None:
        self._previous = signal.signal(signal.SIGTERM, self._on_signal)
        self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False
        self._signalled.set()  # wake a waiting poll, so the watcher stops at once

    def _on_signal(self, signum: int, frame: object) -> None:
        self._received.append(Clock.now())
        self._signalled.set()

    def poll(self) -> Polled:
        self._signalled.wait(self.interval)
        self._signalled.clear()
        if not self._received:
            return Polled()
        first, self._received = self._received[0], []
        return Polled([sigterm_notice(first, self.grace_seconds)])  # a second SIGTERM is the same notice

    def acknowledge(self, notice: Notice) -> bool:
        return True
