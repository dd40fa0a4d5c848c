"""How a worker reads a video that lives in an object store: range reads, or a spooled local copy.

`range` (the default where the store serves byte ranges) hands the decoder a seekable file object that
fetches 4 MiB blocks as it goes (through a bounded block cache that the task's several opens of the video
share), so a segment task reads little more than its part of the video and nothing is written to disk. `spool` downloads the whole video into a bounded local cache first (least recently
used copies are evicted past `cache_bytes`); `auto` spools only when the store cannot serve ranges
(an HTTP server without Range support). docs/storage.md compares the two.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fsspec.caching import BlockCache

from framefleet.files import storage
from framefleet.settings import InputAccess
from framefleet.video import RemoteVideo, VideoSource


class SpoolCache:
    """Local copies of remote files, keyed by URI and version, at most `max_bytes` in all (LRU).

    A file is downloaded to a temporary name and renamed into place, so processes sharing the folder
    never read a partial copy. One copy larger than the limit is still kept until the next one arrives.
    """

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    def path(self, uri: str, version: str) -> Path:
        """Where the copy of (uri, version) is kept."""
        key = hashlib.sha256(f"{uri}\n{version}".encode("utf-8", "surrogatepass")).hexdigest()[:24]
        return self.directory / f"{key}{posixpath.splitext(uri)[1].lower()}"

    def get(self, uri: str, version: str) -> Path:
        """A local copy of `uri` at `version`, downloaded unless cached."""
        target = self.path(uri, version)
        with self._lock:
            if target.exists():
                os.utime(target)  # most recently used
                return target
            self.directory.mkdir(parents=True, exist_ok=True)
            storage.download(uri, target)
            self._evict(keep=target)
        return target

    def _evict(self, keep: Path) -> None:
        entries = []
        for entry in self.directory.iterdir():
            if entry.name.startswith("."):
                continue  # another process's download in progress
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            entries.append((st.st_mtime, st.st_size, entry))
        total = sum(size for _, size, _ in entries)
        for _, size, entry in sorted(entries):
            if total <= self.max_bytes:
                break
            if entry != keep:
                entry.unlink(missing_ok=True)
                total -= size


class InputOpener:
    """Turns input URIs into what the video layer reads: a local path, a `RemoteVideo`, or a spooled copy.

    A task opens its video several times (probe, decoder, the copy of the audio); with range reads all of
    those opens share one block cache per video (32 MiB at most; the last `RANGE_CACHES` videos kept), so
    each part of the video is fetched about once per task instead of once per open.
    """

    RANGE_CACHES = 2

    def __init__(self, access: InputAccess = InputAccess()) -> None:
        self.access = access
        default_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"framefleet-cache-{os.getuid()}"
        self.cache = SpoolCache(access.cache_dir or default_dir, access.cache_bytes)
        self._blocks: OrderedDict[tuple[str, str], BlockCache] = OrderedDict()
        self._blocks_lock = threading.Lock()

    def _block_cache(self, uri: str, version: str, size: int) -> BlockCache:
        with self._blocks_lock:
            key = (uri, version)
            cache = self._blocks.pop(key, None) or storage.block_cache(uri, size)
            self._blocks[key] = cache
            while len(self._blocks) > self.RANGE_CACHES:
                self._blocks.popitem(last=False)
            return cache

    def open(self, uri: str) -> VideoSource:
        """The video source for `uri`; remote objects are looked up (size, version) once here."""
        if storage.is_local(uri):
            return storage.local_path(uri)
        size, version = storage.stat(uri)
        if self.access.mode == "spool" or (
            self.access.mode == "auto"
            and storage.protocol_of(uri) in storage.READ_ONLY_PROTOCOLS
            and not storage.seekable(uri)
        ):
            return self.cache.get(uri, version)
        cache = self._block_cache(uri, version, size)
        return RemoteVideo(uri, size, lambda: storage.RangeReader(uri, cache))


@dataclass(frozen=True)
class WorkerStorage:
    """What a worker needs to reach the stores: the storage options (secrets, never shown) and the read mode."""

    options: Mapping[str, Any] = field(default_factory=dict, repr=False)
    access: InputAccess = InputAccess()

    def apply(self) -> InputOpener:
        """Configure this process's storage and return its input opener (called once per worker)."""
        storage.configure(self.options)
        return InputOpener(self.access)
