"""The watcher: turns new, complete files under a watched folder or prefix into items of a standing job.

It lists the source every `interval` seconds (a paged listing for object stores: no event service is
needed). A file becomes an item once it has been seen twice with the same size and version (mtime for
local files, ETag for objects), so a file still being written or uploaded waits. The job's ledger is what
makes processing exactly-once: it keeps one item per URI and version, so a file seen again (after a
restart, or listed twice) adds nothing, and a replaced file (a new version) is processed again.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from framefleet import storage
from framefleet.errors import FramefleetError
from framefleet.ledger import Ledger
from framefleet.redact import redact
from framefleet.sources import VideoRef, expand_inputs

log = logging.getLogger(__name__)

PARTIAL_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download", ".filepart", ".uploading")
"""Names that uploaders and browsers give files still being written: never items."""


@dataclass(frozen=True)
class WatchRule:
    """One watched source: new videos under `source` are processed by `pipeline` into `output`."""

    name: str
    source: str
    output: str
    pipeline: dict[str, Any] = field(default_factory=dict)
    """Pipeline options, as in a `--pipeline` file."""
    interval: float = 10.0
    """Seconds between two listings of the source."""

    def spec(self) -> dict[str, Any]:
        return {"source": self.source, "output": self.output, "pipeline": self.pipeline, "interval": self.interval}


class Watcher:
    """Feeds one rule's standing job. `poll` is one look; `run` looks every interval until stopped."""

    def __init__(self, rule: WatchRule, ledger: Ledger, output_root: str) -> None:
        self.rule = rule
        self.output_root = output_root
        self.last_error: str | None = None
        self.polls = 0
        self._ledger = ledger
        self._recorded = {item.uri: item.version for item in ledger.items()}
        self._settling: dict[str, tuple[int, str]] = {}

    def poll(self) -> list[VideoRef]:
        """List the source once; add the files that are complete and new (or replaced) to the ledger."""
        listing = expand_inputs([self.rule.source])
        ready: list[VideoRef] = []
        settling: dict[str, tuple[int, str]] = {}
        for ref in listing.refs:
            if self._recorded.get(ref.uri) == ref.version or not self._wanted(ref):
                continue
            look = (ref.size, ref.version)
            if self._settling.get(ref.uri) == look:
                ready.append(ref)
            else:
                settling[ref.uri] = look
        self._settling = settling
        if ready:
            self._ledger.add_items(
                (ref.uri, ref.relpath, ref.size, ref.version, storage.output_uri(self.output_root, ref.relpath))
                for ref in ready
            )
            self._recorded.update((ref.uri, ref.version) for ref in ready)
            log.info("watch %s: %d new file(s)", self.rule.name, len(ready))
        self.polls += 1
        return ready

    def run(self, stop: threading.Event) -> None:
        """Poll every interval until `stop` is set; a failed listing is logged and retried next time."""
        while not stop.is_set():
            try:
                self.poll()
                self.last_error = None
            except FramefleetError as exc:
                self.last_error = redact(str(exc))
                log.warning("watch %s: %s", self.rule.name, self.last_error)
            except Exception as exc:
                self.last_error = redact(f"{type(exc).__name__}: {exc}")
                log.exception("watch %s: listing failed", self.rule.name)
            stop.wait(self.rule.interval)

    def _wanted(self, ref: VideoRef) -> bool:
        name = ref.relpath.rsplit("/", 1)[-1].lower()
        return (not name.endswith(PARTIAL_SUFFIXES) and not name.startswith("~")
                and not storage.is_inside(ref.uri, self.output_root))
