"""Watch this node's preemption notices: one thread per source, one callback per event.

```python
def on_notice(notice: Notice) -> None:           # runs in a watcher thread; keep it short or hand it off
    drain_for_notice(notice)                     # framefleet.spot.ray_drain: no new work on this node
    ...                                          # finish or cut the segments in flight, give leases back
    watcher.acknowledge(notice)                  # Azure: let the eviction start now

watcher = NoticeWatcher(on_notice, WatchSettings.from_env(frame_seconds=1 / 24)).start()
```

What it costs off a cloud: each absent endpoint is asked once, fails within the connect timeout (1 s; a
refused connection or an unknown host at once), is logged once, and is asked again every `absent_interval`
(60 s) in its own thread. An endpoint that has answered before and then fails is retried at its normal
interval (a notice may be under way) and logged once per outage.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from framefleet.errors import OptionError
from framefleet.spot.metadata_http import EndpointUnavailable
from framefleet.spot.notices import Clock, Notice
from framefleet.spot.sources import (
    AwsSpot,
    AzureScheduledEvents,
    GcpPreempted,
    NoticeSource,
    SigtermSource,
    Timeouts,
)

log = logging.getLogger("framefleet.spot")

LINK_LOCAL = "http://169.254.169.254"
GCP_METADATA = "http://metadata.google.internal"
ALL_SOURCES = ("azure", "aws", "gcp", "sigterm")


class SpotSettingsError(OptionError, ValueError):
    """A FRAMEFLEET_SPOT_* variable the watcher cannot use: one line, exit 2, as any bad option."""


def _seconds(env: Mapping[str, str], variable: str) -> float:
    try:
        return float(env[variable])
    except ValueError:
        raise SpotSettingsError(f"{variable}={env[variable]!r}: give a number of seconds") from None


@dataclass(frozen=True)
class WatchSettings:
    """Which sources to watch and how; `from_env` reads the FRAMEFLEET_SPOT_* variables."""

    azure_url: str | None = LINK_LOCAL
    aws_url: str | None = LINK_LOCAL
    gcp_url: str | None = GCP_METADATA
    """A source whose URL is None is not watched."""
    sigterm: bool = False
    """Treat SIGTERM as a notice (installs a handler: construct the watcher in the main thread)."""
    sigterm_grace_seconds: float = 30.0
    """Kubernetes' terminationGracePeriodSeconds (30 s unless the pod says otherwise)."""
    gcp_notice_seconds: float = 30.0
    azure_interval: float = 1.0
    aws_interval: float = 5.0
    gcp_wait_seconds: float = 60.0
    absent_interval: float = 60.0
    connect_timeout: float = 1.0
    read_timeout: float = 10.0
    azure_wake_timeout: float = 120.0
    frame_seconds: float = 0.0
    """One frame's time: a notice with less time than this left is delivered as due now (`immediate`)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> WatchSettings:
        """Settings from the environment (see docs/reliability.md), then `overrides`.

        FRAMEFLEET_SPOT_SOURCES (azure,aws,gcp by default; add sigterm, or none), FRAMEFLEET_SPOT_AZURE_URL,
        FRAMEFLEET_SPOT_AWS_URL (else AWS_EC2_METADATA_SERVICE_ENDPOINT), FRAMEFLEET_SPOT_GCP_URL (else
        GCE_METADATA_HOST), FRAMEFLEET_SPOT_SIGTERM_GRACE_SECONDS, FRAMEFLEET_SPOT_GCP_NOTICE_SECONDS,
        FRAMEFLEET_SPOT_AWS_POLL_SECONDS, FRAMEFLEET_SPOT_AZURE_POLL_SECONDS."""
        env = os.environ if environ is None else environ
        listed = env.get("FRAMEFLEET_SPOT_SOURCES", "azure,aws,gcp")
        names = [name.strip() for name in listed.split(",") if name.strip()]
        unknown = set(names) - {*ALL_SOURCES, "none"}
        if unknown:
            raise SpotSettingsError(f"FRAMEFLEET_SPOT_SOURCES names unknown sources {sorted(unknown)}; "
                                    f"use some of {', '.join(ALL_SOURCES)}, or none")
        gce_host = env.get("GCE_METADATA_HOST")
        urls = {
            "azure": env.get("FRAMEFLEET_SPOT_AZURE_URL") or LINK_LOCAL,
            "aws": (env.get("FRAMEFLEET_SPOT_AWS_URL") or env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT")
                    or LINK_LOCAL),
            "gcp": env.get("FRAMEFLEET_SPOT_GCP_URL") or (f"http://{gce_host}" if gce_host else GCP_METADATA),
        }
        numbers = {field: _seconds(env, variable) for field, variable in (
            ("sigterm_grace_seconds", "FRAMEFLEET_SPOT_SIGTERM_GRACE_SECONDS"),
            ("gcp_notice_seconds", "FRAMEFLEET_SPOT_GCP_NOTICE_SECONDS"),
            ("aws_interval", "FRAMEFLEET_SPOT_AWS_POLL_SECONDS"),
            ("azure_interval", "FRAMEFLEET_SPOT_AZURE_POLL_SECONDS")) if env.get(variable)}
        settings = cls(azure_url=urls["azure"] if "azure" in names else None,
                       aws_url=urls["aws"] if "aws" in names else None,
                       gcp_url=urls["gcp"] if "gcp" in names else None,
                       sigterm="sigterm" in names, **numbers)
        return replace(settings, **overrides)

    def sources(self) -> list[NoticeSource]:
        timeouts = Timeouts(connect=self.connect_timeout, read=self.read_timeout)
        sources: list[NoticeSource] = []
        if self.azure_url:
            sources.append(AzureScheduledEvents(self.azure_url, interval=self.azure_interval,
                                                timeouts=timeouts, wake_timeout=self.azure_wake_timeout))
        if self.aws_url:
            sources.append(AwsSpot(self.aws_url, interval=self.aws_interval, timeouts=timeouts))
        if self.gcp_url:
            sources.append(GcpPreempted(self.gcp_url, notice_seconds=self.gcp_notice_seconds,
                                        wait_seconds=self.gcp_wait_seconds, timeouts=timeouts))
        if self.sigterm:
            sources.append(SigtermSource(self.sigterm_grace_seconds))
        return sources


class NoticeWatcher:
    """Polls every source in its own daemon thread and calls `callback(notice)` once per event.

    Callbacks are serialised (one at a time, across sources) and run in the watcher's threads; an exception
    in one is logged and the watching goes on. `delivered` lists what was delivered, in order."""

    def __init__(self, callback: Callable[[Notice], None], settings: WatchSettings | None = None, *,
                 sources: list[NoticeSource] | None = None) -> None:
        self.callback = callback
        self.settings = settings or WatchSettings.from_env()
        self.sources = self.settings.sources() if sources is None else sources
        self.delivered: list[Notice] = []
        self._by_cloud = {source.name: source for source in self.sources}
        self._stop = threading.Event()
        self._seen: set[tuple[str, str]] = set()
        self._reported: set[str] = set()
        self._lock = threading.Lock()
        self._callback_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> NoticeWatcher:
        for source in self.sources:
            if isinstance(source, SigtermSource):
                source.install()
            thread = threading.Thread(target=self._watch, args=(source,), name=f"spot-{source.name}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop polling. A thread inside a held request (GCP) ends when it returns; it is a daemon."""
        self._stop.set()
        for source in self.sources:
            if isinstance(source, SigtermSource):
                source.uninstall()
        for thread in self._threads:
            thread.join(timeout)

    def __enter__(self) -> NoticeWatcher:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def acknowledge(self, notice: Notice) -> bool:
        """Tell the cloud this node is ready to go (Azure: StartRequests); a no-op where it takes none.
        False when the cloud did not take it (logged)."""
        source = self._by_cloud.get("sigterm" if notice.cloud == "kubernetes" else notice.cloud)
        if source is None:
            return False
        try:
            accepted = source.acknowledge(notice)
        except EndpointUnavailable as error:
            log.warning("could not acknowledge %s event %s: %s", notice.cloud, notice.event_id, error)
            return False
        if not accepted:
            log.warning("%s did not accept the acknowledgement of event %s", notice.cloud, notice.event_id)
        return accepted

    def _once(self, key: str, message: str, *args: object, level: int = logging.INFO,
              exc_info: bool = False) -> None:
        with self._lock:
            if key in self._reported:
                return
            self._reported.add(key)
        log.log(level, message, *args, exc_info=exc_info)

    def _watch(self, source: NoticeSource) -> None:
        answers = 0  # polls answered so far; an outage after one is this node's cloud failing
        while not self._stop.is_set():
            try:
                polled = source.poll()
            except EndpointUnavailable as error:
                if answers:  # this is the node's cloud: keep asking at the normal pace
                    self._once(f"{source.name}-outage-after-{answers}", "%s preemption notices: the metadata "
                               "service stopped answering (%s); still asking", source.name, error,
                               level=logging.WARNING)
                    self._stop.wait(source.interval)
                else:
                    self._once(f"{source.name}-absent", "no %s preemption notices here (%s): not on %s, or "
                               "its metadata service is unreachable; asking again every %g s", source.name,
                               error, source.name, self.settings.absent_interval)
                    self._stop.wait(self.settings.absent_interval)
                continue
            except Exception:  # a bug in a source must not end the watching of the others
                self._once(f"{source.name}-bug", "watching %s failed", source.name, level=logging.ERROR,
                           exc_info=True)
                self._stop.wait(self.settings.absent_interval)
                continue
            if not answers:
                log.debug("%s metadata service answers at %s", source.name, source.endpoint)
            answers += 1
            for problem in polled.problems:
                self._once(f"{source.name}-malformed-{problem}", "ignoring a malformed %s notice: %s",
                           source.name, problem, level=logging.WARNING)
            for notice in polled.notices:
                self._deliver(notice)
            self._stop.wait(source.interval)

    def _deliver(self, notice: Notice) -> None:
        with self._lock:
            key = (notice.cloud, notice.event_id)
            if key in self._seen:
                return
            self._seen.add(key)
        clock = Clock.now()
        if notice.deadline_monotonic is not None and (
                notice.deadline_monotonic - clock.monotonic <= self.settings.frame_seconds):
            notice = notice.due_now(clock)
        if notice.immediate:
            left = "due now"
        elif notice.deadline_monotonic is None:
            left = "no deadline"
        else:
            left = f"{notice.seconds_left(clock.monotonic):.1f} s left"
        log.warning("preemption notice from %s: %s (event %s), %s", notice.cloud, notice.kind,
                    notice.event_id, left)
        with self._callback_lock:
            self.delivered.append(notice)
            try:
                self.callback(notice)
            except Exception:
                log.exception("the preemption callback failed on %s", notice)
