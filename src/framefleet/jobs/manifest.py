"""The manifest beside every committed output and segment part, and the rule that adopts one.

A worker writes a manifest after it commits an output (or a part): what made the file (the input's
fingerprint as the ledger keeps it, the job's pipeline fingerprint, the segment's frame range for a part),
its frame count, and a check of each file written (size, store version, SHA-256 of its first and last
64 KiB). The output's commit stays the point of truth: a manifest is written only after it, so a file
without a manifest is never adopted. A new ledger (a new head that has only the object store) adopts an
output whose manifest matches instead of making it again; a manifest that does not match (another
pipeline, another version of the input, a truncated or replaced file) is ignored, the work runs and its
output replaces the old one. The format and the rule are documented in docs/storage.md and docs/ledger.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from framefleet._version import __version__
from framefleet.errors import InputNotFoundError, StorageError, StorageUnavailableError
from framefleet.files import storage

log = logging.getLogger(__name__)

MANIFEST_FORMAT = 1
MANIFEST_SUFFIX = ".framefleet.json"
CHECK_BYTES = 64 << 10
"""How much of each end of a file the check hashes: enough to cover an MP4's index at either end, and a
constant cost (two range reads) whatever the file's size."""


@dataclass(frozen=True)
class InputFingerprint:
    """The input an output was made from, as the ledger keeps it (`items.uri`, `size`, `version`)."""

    uri: str
    size: int | None
    version: str | None


@dataclass(frozen=True)
class FileCheck:
    """What a committed file was: enough to tell it from a truncated or replaced one without reading it."""

    name: str
    """Its name, in the manifest's folder."""
    size: int
    head_sha256: str
    """SHA-256 of its first `CHECK_BYTES` (all of it when shorter)."""
    tail_sha256: str
    """SHA-256 of its last `CHECK_BYTES`."""
    version: str | None = None
    """Its version right after the commit (an ETag on a store, `MTIME_NS-SIZE` on disk); None when the
    credentials may write but not read (a write-only SAS)."""


@dataclass(frozen=True)
class Manifest:
    """One output's (or part's) manifest."""

    input: InputFingerprint
    pipeline: str
    """The job's fingerprint (`Pipeline.fingerprint`, `job.fingerprint` in the ledger)."""
    frames: int | None
    """Frames in the file (for a part: in its segment)."""
    files: tuple[FileCheck, ...]
    """The files committed for this output: the video and/or its records file."""
    segment: tuple[int | None, int | None] | None = None
    """For a part: the segment's [start_pts, end_pts); None for a whole output."""
    records: int | None = None
    """Records the ops filed, where they file any."""
    framefleet_version: str = __version__
    written: float = field(default_factory=time.time)

    def to_json(self) -> str:
        data = asdict(self)
        data = {"framefleet_manifest": MANIFEST_FORMAT, **data}
        data["segment"] = None if self.segment is None else dict(zip(("start_pts", "end_pts"), self.segment))
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        """Parse a manifest; ValueError when it is not one of this format."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("framefleet_manifest") != MANIFEST_FORMAT:
                raise ValueError("not a framefleet manifest of a known format")
            segment = data.get("segment")
            return cls(
                input=InputFingerprint(**data["input"]),
                pipeline=str(data["pipeline"]),
                frames=data["frames"],
                files=tuple(FileCheck(**entry) for entry in data["files"]),
                segment=None if segment is None else (segment["start_pts"], segment["end_pts"]),
                records=data.get("records"),
                framefleet_version=data.get("framefleet_version", ""),
                written=data.get("written", 0.0),
            )
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"malformed manifest ({type(exc).__name__}: {exc})") from None


def manifest_uri(uri: str) -> str:
    """Where the manifest of the output `uri` goes: `folder/.NAME.framefleet.json`, hidden (listings skip
    it, so it is never taken for an input) and named after the output (never a user's video)."""
    folder, slash, name = uri.rpartition("/")
    return f"{folder}{slash}.{name}{MANIFEST_SUFFIX}"


def _sibling(destination: str, name: str) -> str:
    folder, slash, _ = destination.rpartition("/")
    return f"{folder}{slash}{name}"


def _ends(read: Any, size: int) -> tuple[str, str]:
    """(head, tail) SHA-256 of a file of `size` bytes, `read(start, end)` giving its bytes."""
    head = hashlib.sha256(read(0, min(size, CHECK_BYTES))).hexdigest()
    tail = hashlib.sha256(read(max(0, size - CHECK_BYTES), size)).hexdigest()
    return head, tail


def check_local(path: str, name: str, version: str | None = None) -> FileCheck:
    """The check of a local file (a staged output before its upload, or the output itself)."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)

        def read(start: int, end: int) -> bytes:
            f.seek(start)
            return f.read(end - start)

        head, tail = _ends(read, size)
    return FileCheck(name=name, size=size, head_sha256=head, tail_sha256=tail, version=version)


def committed_version(uri: str) -> str | None:
    """The version of a file just committed, or None when the credentials may not read it."""
    try:
        return storage.stat(uri)[1]
    except StorageUnavailableError:
        raise
    except (StorageError, InputNotFoundError):
        return None


def write_manifest(destination: str, manifest: Manifest) -> None:
    """Write the manifest of the output committed at `destination` (after its commit, never before)."""
    storage.write_small(manifest_uri(destination), manifest.to_json().encode())


def delete_manifest(destination: str) -> None:
    storage.delete(manifest_uri(destination))


def read_manifest(destination: str) -> Manifest | None:
    """The manifest beside `destination`, or None when there is none, it cannot be read (write-only
    credentials) or it is malformed (logged). A store that cannot be reached raises
    `StorageUnavailableError` (the task is retried)."""
    uri = manifest_uri(destination)
    try:
        data = storage.read_range(uri, 0, 1 << 20) if storage.is_local(uri) else _read_remote(uri)
    except FileNotFoundError:
        return None
    except StorageUnavailableError:
        raise
    except (InputNotFoundError, StorageError, OSError) as exc:
        if not isinstance(exc, InputNotFoundError):
            log.info("%s: cannot read the manifest, so nothing is adopted (%s)", uri, exc)
        return None
    try:
        return Manifest.from_json(data)
    except ValueError as exc:
        log.warning("%s: ignored: %s", uri, exc)
        return None


def _read_remote(uri: str) -> bytes:
    fs, path = storage.filesystem(uri)
    return storage.store_call("read", uri, lambda: fs.cat_file(path))


def mismatch(manifest: Manifest, destination: str, expected_input: InputFingerprint, pipeline: str,
             segment: tuple[int | None, int | None] | None, names: list[str]) -> str | None:
    """Why the manifest of `destination` does not describe the output this work would make now, or None
    when it does: the same input (URI, size, version), the same pipeline fingerprint, the same segment
    (for a part), the files `names` listed, and each file as committed (size, version when recorded, the
    hashes of both ends)."""
    if manifest.input != expected_input:
        return f"made from another input or version ({manifest.input.version}, now {expected_input.version})"
    if manifest.pipeline != pipeline:
        return f"made by another pipeline ({manifest.pipeline[:12]}, now {pipeline[:12]})"
    if manifest.segment != segment:
        return f"another segment ({manifest.segment}, now {segment})"
    if sorted(check.name for check in manifest.files) != sorted(names):
        return f"lists other files ({', '.join(check.name for check in manifest.files)})"
    for check in manifest.files:
        uri = _sibling(destination, check.name)
        try:
            size, version = storage.stat(uri)
        except InputNotFoundError:
            return f"{check.name} is missing"
        if size != check.size:
            return f"{check.name} has {size} bytes, the manifest {check.size}"
        if check.version is not None and version != check.version:
            return f"{check.name} was replaced (version {version}, the manifest {check.version})"
        head, tail = _ends(lambda start, end, uri=uri: storage.read_range(uri, start, end), size)
        if (head, tail) != (check.head_sha256, check.tail_sha256):
            return f"{check.name} has other content than the manifest says"
    return None


def adoptable(destination: str, expected_input: InputFingerprint, pipeline: str,
              segment: tuple[int | None, int | None] | None, names: list[str]) -> Manifest | None:
    """The manifest of the output at `destination` when it matches (see `mismatch`), else None (logged
    when there is one that does not match)."""
    manifest = read_manifest(destination)
    if manifest is None:
        return None
    try:
        reason = mismatch(manifest, destination, expected_input, pipeline, segment, names)
    except StorageUnavailableError:
        raise
    except StorageError as exc:
        reason = f"cannot check its files ({exc})"
    if reason is not None:
        log.info("%s: not adopted, it will be made again: %s", destination, reason)
        return None
    return manifest
