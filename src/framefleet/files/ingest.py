"""Copy a tree of files between local storage and object stores with many parallel transfers.

`ingest(src, dest)` uploads (local -> store), downloads (store -> local) or copies (store -> store,
local -> local) every file under `src` (hidden names skipped, as `storage.walk_files` does) to the same
relative path under `dest`. Every relative path passes `storage.safe_relpath` first: an object key that
would leave `dest` (`..`, a backslash, NUL, an absolute path) fails that one file, never the others.

No reader ever sees part of a file: uploads commit in one step (`put_file`; a block list on Azure),
downloads and local copies are written beside the target and renamed into place, store-to-store copies
move a file of up to one chunk (8 MiB) in one read and one write and stream bigger ones through in
chunks, committed on close (a failed stream commits nothing). Store-to-store never uses a server-side
copy: the two sides may hold different credentials, and adlfs does not wait for an Azure copy to finish.

Checksums are MD5s: the one a store keeps (Azure Content-MD5, GCS md5Hash, the ETag of a single-part S3
upload) or, for a local file, computed. Uploads to Azure carry the Content-MD5 of what was read (the
service checks it on single-shot uploads), so later runs and `verify` compare without reading back.
A destination file that exists is complete when its size matches and, where both sides have a checksum,
the checksums match (`verify` reads a file back to compute a missing one); `existing="check"` skips
complete files and transfers the others again, so a re-run after an interruption resumes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeVar

import fsspec

from framefleet.errors import (
    FramefleetError,
    InputNotFoundError,
    OptionError,
    OutputError,
    StorageError,
    StorageUnavailableError,
)
from framefleet.files import storage
from framefleet.files.temporary import temporary_path
from framefleet.util.redact import redact

Existing = Literal["check", "skip", "overwrite"]
EXISTING_MODES: tuple[Existing, ...] = ("check", "skip", "overwrite")
CHUNK = 8 << 20  # bytes per read and write when streaming or hashing (S3 parts need at least 5 MiB)
AZURE_PROTOCOLS = frozenset({"az", "abfs", "abfss"})
S3_PROTOCOLS = frozenset({"s3", "s3a"})
GCS_PROTOCOLS = frozenset({"gs", "gcs"})
_MD5_HEX = re.compile(r"^[0-9a-f]{32}$")
T = TypeVar("T")


@dataclass(frozen=True)
class IngestProgress:
    """Where a running ingest stands (handed to `on_progress` after each file)."""

    files_total: int
    files_done: int
    copied: int
    skipped: int
    failed: int
    bytes_total: int
    bytes_done: int  # of the files done, skipped and failed ones included
    bytes_copied: int
    seconds: float


@dataclass
class IngestResult:
    """What an ingest did: counts, bytes transferred, wall time and one entry per failed file."""

    files: int
    copied: int = 0
    skipped: int = 0
    failed: int = 0
    bytes: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    failures: list[dict[str, str]] = field(default_factory=list)  # {"path": relpath, "error": one line}

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """As `framefleet run`: 130 interrupted, 3 some files failed, 0 all done."""
        return 130 if self.interrupted else 3 if self.failures else 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 3), "mb_per_s": round(self.mb_per_s, 3)}


@dataclass(frozen=True)
class _Entry:
    """One source file: its path relative to the source root (as listed), URI, path within its
    filesystem, size, and the MD5 its store keeps (None if none, or local)."""

    rel: str
    uri: str
    path: str
    size: int
    md5: str | None


@dataclass(frozen=True)
class _Endpoint:
    """The source or the destination: its canonical URI, filesystem and path within it."""

    uri: str
    fs: fsspec.AbstractFileSystem
    path: str
    protocol: str | None  # None: local

    @classmethod
    def of(cls, uri: str) -> _Endpoint:
        canonical = storage.canonical_uri(uri)
        fs, path = storage.filesystem(canonical)
        return cls(canonical, fs, path, storage.protocol_of(canonical))

    @property
    def local(self) -> bool:
        return self.protocol is None

    def path_of(self, uri: str) -> str:
        """The path within the filesystem of a URI under this endpoint."""
        return uri if self.local else uri.split("://", 1)[1]


def stored_md5(info: Mapping[str, Any], protocol: str | None) -> str | None:
    """The MD5 (hex) a store keeps for an object, from its fsspec info, or None if it keeps none."""
    if protocol in AZURE_PROTOCOLS:
        settings = info.get("content_settings")
        digest = getattr(settings, "content_md5", None) or (
            settings.get("content_md5") if isinstance(settings, Mapping) else None)
        return bytes(digest).hex() if digest else None
    if protocol in GCS_PROTOCOLS and info.get("md5Hash"):
        try:
            return base64.b64decode(info["md5Hash"], validate=True).hex()
        except (binascii.Error, ValueError):
            return None
    if protocol in S3_PROTOCOLS:  # a multipart ETag ends in -N; SSE-KMS and SSE-C ETags are not MD5s
        etag = str(info.get("ETag") or "").strip('"').lower()
        encrypted = info.get("ServerSideEncryption") == "aws:kms" or info.get("SSECustomerAlgorithm")
        return etag if _MD5_HEX.match(etag) and not encrypted else None
    return None


def ingest(
    src: str,
    dest: str,
    *,
    threads: int = 32,
    existing: Existing = "check",
    verify: bool = False,
    on_progress: Callable[[IngestProgress], None] | None = None,
    stop: threading.Event | None = None,
) -> IngestResult:
    """Copy the file or tree `src` under the folder or prefix `dest` with `threads` parallel transfers.

    `existing`: "check" skips destination files that are complete (see the module docstring) and
    redoes the others, "skip" skips every one that exists, "overwrite" transfers everything. `verify`
    checks each transferred file's size and MD5 at the destination. Setting `stop` (or Ctrl-C) submits no
    more files, lets those in flight finish and returns with `interrupted` set. A bad `src` or `dest`
    raises a `FramefleetError`; a file that fails is listed in `failures` and the others go on.
    """
    if threads < 1:
        raise OptionError(f"threads={threads}: needs at least one thread")
    if existing not in EXISTING_MODES:
        raise OptionError(f"existing={existing!r}: use one of {', '.join(EXISTING_MODES)}")
    began = time.monotonic()
    copier = _Copier(_Endpoint.of(src), _destination_root(src, dest), existing, verify)
    entries = copier.entries()
    result = IngestResult(files=len(entries))
    stop = stop or threading.Event()
    bytes_total = sum(entry.size for entry in entries)
    bytes_done = 0

    def record(entry: _Entry, future: Future[bool]) -> None:
        nonlocal bytes_done
        error = future.exception()
        if error is not None:
            result.failed += 1
            result.failures.append({"path": entry.rel, "error": _message(error)})
        elif future.result():
            result.copied += 1
            result.bytes += entry.size
        else:
            result.skipped += 1
        bytes_done += entry.size
        if on_progress is not None:
            done = result.copied + result.skipped + result.failed
            on_progress(IngestProgress(result.files, done, result.copied, result.skipped, result.failed, bytes_total,
                                       bytes_done, result.bytes, time.monotonic() - began))

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="framefleet-ingest") as pool:
        todo: Iterator[_Entry] = iter(entries)
        running: dict[Future[bool], _Entry] = {}
        more = True
        while running or (more and not stop.is_set()):
            try:
                while more and not stop.is_set() and len(running) < 2 * threads:
                    entry = next(todo, None)
                    if entry is None:
                        more = False
                    else:
                        running[pool.submit(copier.copy, entry)] = entry
                done, _ = wait(running, timeout=0.25, return_when=FIRST_COMPLETED)
                for future in done:
                    record(running.pop(future), future)
            except KeyboardInterrupt:  # the first stops submitting; a second one aborts
                if stop.is_set():
                    raise
                stop.set()
    result.failures.sort(key=lambda failure: failure["path"])
    result.interrupted = result.copied + result.skipped + result.failed < result.files
    result.seconds = time.monotonic() - began
    return result


def _destination_root(src: str, dest: str) -> _Endpoint:
    storage.check_writable(dest)
    root = _Endpoint.of(dest)
    if root.local and os.path.exists(root.path) and not os.path.isdir(root.path):
        raise OptionError(f"{dest}: is a file; the destination must be a folder (files keep their paths there)")
    if storage.is_inside(root.uri, storage.canonical_uri(src)):
        raise OptionError(f"{redact(dest)}: the destination is inside the source; pick a folder outside it")
    return root


def _message(error: BaseException) -> str:
    text = str(error) if isinstance(error, FramefleetError) else f"{type(error).__name__}: {error}"
    return redact(text.strip().splitlines()[0] if text.strip() else type(error).__name__)


class _Copier:
    """Lists the source, finds what the destination holds, and copies (or skips) one file at a time."""

    def __init__(self, src: _Endpoint, dest: _Endpoint, existing: Existing, verify: bool) -> None:
        self.src, self.dest, self.existing, self.verify = src, dest, existing, verify
        self._listed: dict[str, dict[str, Any]] | None = None  # a listed remote destination: relpath -> info
        self._dest_real = Path(dest.path).resolve() if dest.local else None

    # -- listing -------------------------------------------------------------------------------------

    def entries(self) -> list[_Entry]:
        """Every file to copy, sorted by relative path; a remote destination folder is listed once too."""
        kind = storage.kind(self.src.uri)
        if kind is None:
            raise InputNotFoundError(f"{redact(self.src.uri)}: no such file or folder; check the source path")
        if kind == "other":
            raise OptionError(f"{self.src.uri}: not a file or folder (a pipe, device or socket)")
        if kind == "file":
            info = storage.store_call("read its properties", self.src.uri, partial(self.src.fs.info, self.src.path))
            name = self.src.path.rstrip("/").rsplit("/", 1)[-1]
            return [_Entry(name, self.src.uri, self.src.path, int(info.get("size") or 0),
                           stored_md5(info, self.src.protocol))]
        if self.src.local:
            found = [_Entry(rel, uri, uri, _call_local("read its properties", uri, partial(os.path.getsize, uri)), None)
                     for uri, rel in storage.walk_files(self.src.uri)]
        else:
            protocol = self.src.protocol
            found = [_Entry(rel, uri, self.src.path_of(uri), int(info.get("size") or 0), stored_md5(info, protocol))
                     for uri, rel, info in storage.walk_remote(self.src.uri)]
        if self.existing != "overwrite" and not self.dest.local:
            self._listed = self._list_destination()
        return found

    def _list_destination(self) -> dict[str, dict[str, Any]]:
        try:
            return {rel: info for _, rel, info in storage.walk_remote(self.dest.uri)}
        except InputNotFoundError:
            return {}
        except StorageUnavailableError:
            raise
        except StorageError as exc:  # e.g. a write-only SAS
            raise StorageError(f"{exc} (the destination is listed to find the files already there; "
                               "--overwrite does not list it)") from None

    # -- one file ------------------------------------------------------------------------------------

    def copy(self, entry: _Entry) -> bool:
        """Copy one file unless the destination already has it; True if copied, False if skipped."""
        rel = storage.safe_relpath(entry.rel)
        target_uri = storage.join(self.dest.uri, rel)
        target = self._target_path(target_uri)
        source_md5 = entry.md5
        if self.existing != "overwrite":
            present = self._present(rel, target_uri, target)
            if present is not None:
                if self.existing == "skip":
                    return False
                complete, source_md5 = self._complete(entry, present, target_uri, target)
                if complete:
                    return False
        copied_md5 = self._transfer(entry, target_uri, target, source_md5)
        if self.verify:
            self._check(entry, target_uri, target, copied_md5 or source_md5)
        return True

    def _target_path(self, target_uri: str) -> str:
        """The destination path within its filesystem; locally, refused where a symlinked folder would
        lead outside the destination."""
        target = self.dest.path_of(target_uri)
        if self.dest.local and not Path(target).parent.resolve().is_relative_to(self._dest_real):
            raise OutputError(f"{target_uri}: a symlinked folder leads outside the destination; refusing to write")
        return target

    def _present(self, rel: str, target_uri: str, target: str) -> Mapping[str, Any] | None:
        """The info (size; a store's checksum) of the file at the destination, or None if there is none."""
        if self._listed is not None:
            return self._listed.get(rel)
        if self.dest.local:
            try:
                st = os.stat(target)
            except (FileNotFoundError, NotADirectoryError):
                return None
            except OSError as exc:
                raise OutputError(f"{target_uri}: cannot read its properties ({exc.strerror})") from None
            return {"size": st.st_size} if stat.S_ISREG(st.st_mode) else None
        try:
            info = self.dest.fs.info(target)
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001
            error = storage.storage_error(exc, "read its properties", target_uri)
            if isinstance(error, InputNotFoundError):
                return None
            raise error from None
        return info if info.get("type") == "file" else None

    def _complete(self, entry: _Entry, present: Mapping[str, Any], target_uri: str,
                  target: str) -> tuple[bool, str | None]:
        """Whether the destination file matches the source: the sizes, and the MD5s where both sides have
        one (a local file's is computed; `verify` reads a store's back when it keeps none). Also the
        source's MD5 if known by now."""
        if int(present.get("size") or 0) != entry.size:
            return False, entry.md5
        dest_md5 = stored_md5(present, self.dest.protocol)
        if not ((entry.md5 or self.src.local or self.verify) and (dest_md5 or self.dest.local or self.verify)):
            return True, entry.md5
        source_md5 = entry.md5 or _md5(self.src, entry.path, entry.uri)
        return source_md5 == (dest_md5 or _md5(self.dest, target, target_uri)), source_md5

    def _transfer(self, entry: _Entry, target_uri: str, target: str, source_md5: str | None) -> str | None:
        """Copy the bytes; the MD5 of the source if it was computed on the way, else None."""
        if self.dest.local:
            if self.src.local:
                reader = _call_local("read", entry.uri, partial(open, entry.path, "rb"))
                with reader:
                    return _call_local("write", target_uri, partial(_write_local, reader, Path(target)))
            _call_local("write", target_uri, partial(storage.download, entry.uri, Path(target)))
            return None
        if self.src.local:
            md5 = source_md5 or _md5(self.src, entry.path, entry.uri)
            kwargs = {"content_settings": {"content_md5": bytes.fromhex(md5)}} if self._azure_dest else {}
            storage.store_call("write", target_uri, partial(self.dest.fs.put_file, entry.path, target, **kwargs))
            return md5
        return self._store_to_store(entry, target_uri, target)

    @property
    def _azure_dest(self) -> bool:
        return self.dest.protocol in AZURE_PROTOCOLS

    def _store_to_store(self, entry: _Entry, target_uri: str, target: str) -> str:
        """A file of at most one chunk in one read and one write (two requests), a bigger one streamed."""
        if entry.size > CHUNK:
            return self._stream(entry, target_uri, target)
        data = storage.store_call("read", entry.uri, partial(self.src.fs.cat_file, entry.path))
        md5 = hashlib.md5(data).hexdigest()
        kwargs = {"content_settings": {"content_md5": bytes.fromhex(md5)}} if self._azure_dest else {}
        storage.store_call("write", target_uri, partial(self.dest.fs.pipe_file, target, data, **kwargs))
        return md5

    def _stream(self, entry: _Entry, target_uri: str, target: str) -> str:
        """Store to store in chunks, hashing; the destination commits on close, and not at all on a failure."""
        digest = hashlib.md5()
        settings = _azure_content_settings() if self._azure_dest else None
        kwargs = {"content_settings": settings} if settings is not None else {}
        open_reader = partial(self.src.fs.open, entry.path, "rb", cache_type="none")
        open_writer = partial(self.dest.fs.open, target, "wb", block_size=CHUNK, **kwargs)
        with storage.store_call("read", entry.uri, open_reader) as reader:
            writer = storage.store_call("write", target_uri, open_writer)
            try:
                while chunk := storage.store_call("read", entry.uri, partial(reader.read, CHUNK)):
                    digest.update(chunk)
                    storage.store_call("write", target_uri, partial(writer.write, chunk))
                if settings is not None:
                    settings.content_md5 = bytearray(digest.digest())  # adlfs sends it with the commit
            except BaseException:
                writer.closed = True  # abandon the write: its blocks or parts are never committed
                raise
            storage.store_call("write", target_uri, writer.close)
        return digest.hexdigest()

    def _check(self, entry: _Entry, target_uri: str, target: str, source_md5: str | None) -> None:
        """`verify`: the destination's size and MD5 (the store's, else read back) match the source's."""
        if self.dest.local:
            size = _call_local("read its properties", target_uri, partial(os.path.getsize, target))
            dest_md5 = None
        else:
            self.dest.fs.invalidate_cache(target)
            info = storage.store_call("read its properties", target_uri, partial(self.dest.fs.info, target))
            size, dest_md5 = int(info.get("size") or 0), stored_md5(info, self.dest.protocol)
        if size != entry.size:
            raise OutputError(f"{target_uri}: verification failed: {size} bytes arrived, the source has {entry.size}")
        source_md5 = source_md5 or _md5(self.src, entry.path, entry.uri)
        dest_md5 = dest_md5 or _md5(self.dest, target, target_uri)
        if dest_md5 != source_md5:
            raise OutputError(f"{target_uri}: verification failed: MD5 {dest_md5}, the source's is {source_md5}")


def _md5(endpoint: _Endpoint, path: str, uri: str) -> str:
    """The MD5 of a file, read in chunks."""
    if endpoint.local:
        return _call_local("read", uri, partial(_md5_local, path))
    digest = hashlib.md5()
    with storage.store_call("read", uri, partial(endpoint.fs.open, path, "rb", cache_type="none")) as f:
        while chunk := storage.store_call("read", uri, partial(f.read, CHUNK)):
            digest.update(chunk)
    return digest.hexdigest()


def _md5_local(path: str) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write_local(reader: BinaryIO, target: Path) -> str:
    """Copy `reader` to a hidden temporary beside `target`, hashing, then rename it into place; the MD5."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(target)
    digest = hashlib.md5()
    try:
        with open(tmp, "wb") as writer:
            while chunk := reader.read(CHUNK):
                digest.update(chunk)
                writer.write(chunk)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return digest.hexdigest()


def _azure_content_settings() -> Any:
    """An empty Azure ContentSettings for adlfs `open(..., "wb")`; adlfs keeps this object and sends it
    with the block-list commit on close, so a content_md5 set before the close is stored with the blob."""
    from azure.storage.blob import ContentSettings

    return ContentSettings()


def _call_local(operation: str, uri: str, fn: Callable[[], T]) -> T:
    """`fn()` on local files, with an OSError as one line naming the file and the system's reason."""
    try:
        return fn()
    except OSError as exc:
        error = InputNotFoundError if operation == "read" else OutputError
        raise error(f"{uri}: cannot {operation} ({exc.strerror or exc})") from None
