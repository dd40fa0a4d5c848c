"""The watcher: turns new, complete files under a watched folder or prefix into items of a standing job.

It lists the source every `interval` seconds (a paged listing for object stores: no event service is
needed). A file becomes an item once it has been seen twice with the same size and version (mtime for
local files, ETag for objects), so a file still being written or uploaded waits. The job's ledger is what
makes processing exactly-once: it keeps one item per URI and version, so a file seen again (after a
restart, or listed twice) adds nothing, and a replaced file (a new version) is processed again.

One bad file never stops the others: partial names and outputs are left out before names and outputs are
checked, and a file whose name cannot be mirrored under the output root, or whose output another file
already claims (`clip.avi` beside `clip.mp4`), is left out and reported in `last_error` while every other
file goes on; a file that vanishes between the listing and its `stat` waits for the next look.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from framefleet.errors import FramefleetError, InputNotFoundError
from framefleet.files import storage
from framefleet.files.sources import VideoRef, expand_entry
from framefleet.jobs.store import Ledger
from framefleet.util.redact import redact

MAX_REPORTED = 3
"""Left-out files named in `last_error` (the others are counted)."""

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

    @classmethod
    def from_spec(cls, name: str, spec: dict[str, Any]) -> WatchRule:
        """The rule a registry record's `spec` holds."""
        return cls(name=name, source=spec["source"], output=spec["output"], pipeline=spec["pipeline"],
                   interval=spec["interval"])

    def spec(self) -> dict[str, Any]:
        return {"source": self.source, "output": self.output, "pipeline": self.pipeline, "interval": self.interval}

    def identity(self) -> str:
        """What makes the rule's job (its id hashes it): source, output and pipeline, as JSON. Not the
        interval: polling more or less often goes on with the same job and ledger."""
        return json.dumps({"source": self.source, "output": self.output, "pipeline": self.pipeline}, sort_keys=True)


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
        refs, problems = self._list()
        ready: list[VideoRef] = []
        settling: dict[str, tuple[int, str]] = {}
        for ref in refs:
            if self._recorded.get(ref.uri) == ref.version:
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
        self._report(problems)
        self.polls += 1
        return ready

    def run(self, stop: threading.Event) -> None:
        """Poll every interval until `stop` is set; a failed listing is logged and retried next time."""
        while not stop.is_set():
            try:
                self.poll()  # sets last_error: None, or the files it had to leave out
            except FramefleetError as exc:
                self.last_error = redact(str(exc))
                log.warning("watch %s: %s", self.rule.name, self.last_error)
            except Exception as exc:
                self.last_error = redact(f"{type(exc).__name__}: {exc}")
                log.exception("watch %s: listing failed", self.rule.name)
            stop.wait(self.rule.interval)

    def _list(self) -> tuple[list[VideoRef], list[str]]:
        """The wanted videos under the source, sorted by relpath, and why the files left out were left out.

        As `expand_inputs` lists, except that a problem with one file (a name no output path can mirror,
        two files bound for the same output, a file gone before it could be read) leaves out that file, not
        the whole listing. Of two files bound for the same output, the one already recorded keeps it (else
        the first by path).
        """
        found: dict[str, tuple[str, tuple[int, str] | None]] = {}
        for uri, relpath, is_video, known in expand_entry(self.rule.source):
            if is_video and uri not in found and self._wanted(uri, relpath):
                found[uri] = (relpath, known)
        refs: list[VideoRef] = []
        problems: list[str] = []
        owners: dict[str, str] = {}  # output relpath -> the uri that writes it
        for uri in sorted(found, key=lambda u: (u not in self._recorded, found[u][0], u)):
            relpath, known = found[uri]
            try:
                relpath = storage.safe_relpath(relpath)
                key = storage.output_relpath(relpath)
                size, version = known or storage.stat(uri)
            except InputNotFoundError:
                continue  # gone since the listing (moved, renamed into place): the next look sees it
            except FramefleetError as exc:
                problems.append(f"{uri}: left out: {exc}")
                continue
            owner = owners.setdefault(key, uri)
            if owner != uri:
                problems.append(f"{uri}: left out: {owner} is written to {key!r} under the output root too; "
                                "rename one of them")
                continue
            refs.append(VideoRef(uri, relpath, size, version))
        refs.sort(key=lambda ref: (ref.relpath, ref.uri))
        return refs, problems

    def _report(self, problems: list[str]) -> None:
        """Name the files left out in `last_error` (None when none), and log them when they change."""
        if not problems:
            self.last_error = None
            return
        text = "; ".join(problems[:MAX_REPORTED])
        if len(problems) > MAX_REPORTED:
            text += f"; and {len(problems) - MAX_REPORTED} more file(s) left out"
        text = redact(text)
        if text != self.last_error:
            log.warning("watch %s: %s", self.rule.name, text)
        self.last_error = text

    def _wanted(self, uri: str, relpath: str) -> bool:
        name = relpath.rsplit("/", 1)[-1].lower()
        return (not name.endswith(PARTIAL_SUFFIXES) and not name.startswith("~")
                and not storage.is_inside(uri, self.output_root))
