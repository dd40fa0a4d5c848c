"""Where framefleet reads and writes: local paths and object stores through fsspec, and path safety.

Every read, listing and write of the user's inputs and outputs goes through this module. A URI is a
plain path, a `file://` URL, or an fsspec URL: `az://` / `abfs://` (adlfs), `s3://` (s3fs), `gs://`
(gcsfs), `http(s)://` (read-only). Local URIs are kept in one canonical form, an absolute POSIX path, so
the same file named two ways is one input; remote ones as `protocol://bucket/key`.

Credentials come from the store's own environment variables (e.g. `AZURE_STORAGE_CONNECTION_STRING`,
`AWS_ACCESS_KEY_ID`) or from storage options set with `configure`; they are registered with
`framefleet.util.redact` and never appear in a message. Store errors become one-line `StorageError`s naming
the operation and the URI, or `StorageUnavailableError` when the store cannot be reached (retried).
Outputs are committed atomically: written to a local file first, then uploaded in one commit (a block
list on Azure, a multipart completion on S3, a finalised upload on GCS), so a reader never sees a part.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import posixpath
import re
import threading
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar

import fsspec
import yaml
from fsspec.caching import BlockCache
from fsspec.core import split_protocol

from framefleet.errors import (
    FramefleetError,
    InputNotFoundError,
    OptionError,
    OutputError,
    StorageError,
    StorageUnavailableError,
    exception_chain,
)
from framefleet.files.temporary import temporary_path, write_bytes_atomically
from framefleet.util import redact

LOCAL_PROTOCOLS = frozenset({"file", "local"})
READ_ONLY_PROTOCOLS = frozenset({"http", "https"})
# The optional extra that brings each store's fsspec implementation.
EXTRAS = {"az": "azure", "abfs": "azure", "abfss": "azure", "adl": "azure", "s3": "s3", "s3a": "s3",
          "gs": "gcs", "gcs": "gcs", "http": "http", "https": "http"}
# Output containers kept as they are; any other input extension is written as .mp4.
KEPT_OUTPUT_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".webm", ".ts", ".m2ts"})
DEFAULT_OUTPUT_EXTENSION = ".mp4"
# Query parameters of pre-signed URLs: such a URL is a credential, and the ledger stores input URIs.
_SIGNED_QUERY = re.compile(r"[?&](sig|x-amz-signature|x-amz-credential|x-goog-signature|signature)=", re.I)

_GLOB_MAGIC = re.compile(r"[*?[]")
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")
_LOCAL_FS = fsspec.filesystem("file")

Kind = Literal["file", "directory", "other"]
T = TypeVar("T")

_options: dict[str, Any] = {}
_options_lock = threading.Lock()


# -- configuration -------------------------------------------------------------------------------------

def configure(options: Mapping[str, Any] | None) -> None:
    """Set this process's storage options (workers call it too), registering their secrets for redaction.

    `options` is either one mapping of fsspec options for every remote store (e.g. `{"account_name": ...,
    "sas_token": ...}`), or a mapping from URL prefixes to such mappings (`{"az://videos": {...},
    "az://results": {...}}`; the longest matching prefix wins), for credentials that differ per container.
    """
    options = dict(options or {})
    if _per_prefix(options):
        for prefix, value in options.items():
            if not isinstance(value, Mapping):
                raise OptionError(f"--storage-options: the options for {prefix} must be a mapping")
    redact.register_secrets_from(options)
    with _options_lock:
        _options.clear()
        _options.update(options)


def configured_options() -> dict[str, Any]:
    """The options `configure` set (to hand to workers; never to print)."""
    with _options_lock:
        return dict(_options)


def load_options(value: str | None) -> dict[str, Any]:
    """Parse `--storage-options`: inline JSON, or the path of a JSON or YAML file. Never echoes its text."""
    if not value:
        return {}
    text, where = value, "the --storage-options JSON"
    if not value.lstrip().startswith("{"):
        try:
            text, where = Path(value).read_text(encoding="utf-8"), value
        except OSError as exc:
            raise OptionError(f"{value}: cannot read the storage options file ({exc.strerror})") from None
    try:
        parsed = json.loads(text) if where != value or value.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        line = getattr(exc, "lineno", None) or getattr(getattr(exc, "problem_mark", None), "line", None)
        at = f" near line {line}" if line else ""
        raise OptionError(f"{where}: not valid JSON or YAML{at}") from None
    if not isinstance(parsed, dict):
        raise OptionError(f"{where}: must be a mapping of option names to values")
    return parsed


def _per_prefix(options: Mapping[str, Any]) -> bool:
    return bool(options) and all("://" in key for key in options)


def options_for(uri: str) -> dict[str, Any]:
    """The storage options that apply to `uri`."""
    with _options_lock:
        if not _per_prefix(_options):
            return dict(_options)
        matches = [prefix for prefix in _options if uri == prefix or uri.startswith(prefix.rstrip("/") + "/")]
        return dict(_options[max(matches, key=len)]) if matches else {}


# -- naming ----------------------------------------------------------------------------------------------

def is_local(uri: str) -> bool:
    """Whether `uri` is a plain path or a `file://` URL."""
    protocol, _ = split_protocol(uri)
    return protocol is None or protocol in LOCAL_PROTOCOLS


def protocol_of(uri: str) -> str | None:
    """The URI's protocol (`az`, `s3`, ...), or None for local storage."""
    return None if is_local(uri) else split_protocol(uri)[0]


def local_path(uri: str) -> Path:
    """The local path of a plain path or `file://` URL; a remote URL raises `OptionError`."""
    protocol, _ = split_protocol(uri)
    if protocol is None:
        return Path(uri)
    if protocol in LOCAL_PROTOCOLS:
        return Path(_LOCAL_FS._strip_protocol(uri))
    raise OptionError(f"{redact.redact(uri)}: a local path is needed here, not a {protocol}:// URL")


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for `uri` (with its storage options) and the path within it."""
    if is_local(uri):
        return _LOCAL_FS, Path(os.path.abspath(local_path(uri))).as_posix()
    protocol = split_protocol(uri)[0]
    try:
        cls = fsspec.get_filesystem_class(protocol)
    except ValueError:
        raise OptionError(f"{protocol}://: unknown storage protocol; use a path or az://, s3://, gs://, https://") from None
    except ImportError:
        extra = EXTRAS.get(protocol, protocol)
        raise OptionError(f"{protocol}:// needs an optional package: pip install 'framefleet[{extra}]'") from None
    try:
        fs = cls(**options_for(uri))
    except TypeError as exc:
        raise OptionError(f"--storage-options for {protocol}://: {redact.redact(str(exc))}") from None
    except Exception as exc:  # noqa: BLE001 - a store's client rejects its options: one line, no secret
        raise OptionError(f"{protocol}://: cannot set up the store client ({_reason(exc)})") from None
    return fs, cls._strip_protocol(uri).rstrip("/") or cls._strip_protocol(uri)


def canonical_uri(uri: str) -> str:
    """The one form framefleet keeps for `uri`: an absolute POSIX path locally, `protocol://path` remotely."""
    if is_local(uri):
        return Path(os.path.abspath(local_path(uri))).as_posix()
    protocol = split_protocol(uri)[0]
    if protocol in READ_ONLY_PROTOCOLS:
        if _SIGNED_QUERY.search(uri):
            raise OptionError(
                f"{redact.redact(uri)}: pre-signed URLs are credentials and framefleet stores input URIs in its "
                "ledger; name the object by its store URI (s3://, az://, gs://) and pass credentials instead"
            )
        return uri
    path = fsspec.get_filesystem_class(protocol)._strip_protocol(uri) if _has_class(protocol) else uri.split("://", 1)[1]
    return f"{protocol}://{path.strip('/')}"


def _has_class(protocol: str) -> bool:
    try:
        fsspec.get_filesystem_class(protocol)
    except (ValueError, ImportError):
        return False
    return True


def join(root: str, relpath: str) -> str:
    """`safe_relpath(relpath)` under `root`, in the root's own form (a path stays a path, a URL a URL)."""
    rel = safe_relpath(relpath)
    if split_protocol(root)[0] is None:
        return str(PurePath(root) / rel)
    return root.rstrip("/") + "/" + rel


def is_inside(uri: str, root: str) -> bool:
    """Whether `uri` lies under `root` (both canonical)."""
    if is_local(uri) != is_local(root):
        return False
    if is_local(uri):
        try:
            return Path(uri).resolve().is_relative_to(Path(root).resolve())
        except (OSError, ValueError):
            return False
    return uri == root or uri.startswith(root.rstrip("/") + "/")


def is_glob(uri: str) -> bool:
    """Whether `uri` contains glob syntax (`*`, `?`, `[`, `**`) in its path."""
    protocol, path = split_protocol(uri)
    if protocol in READ_ONLY_PROTOCOLS:
        return False
    return _GLOB_MAGIC.search(path) is not None


# -- errors ------------------------------------------------------------------------------------------

def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return redact.redact(text)[:200]


def _status(exc: BaseException) -> int | None:
    for attr in ("status_code", "status", "code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and 100 <= value < 600:
            return value
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None


_UNAVAILABLE_NAMES = ("ServiceRequestError", "ServiceResponseError", "ClientConnectorError", "ClientOSError",
                      "ServerDisconnectedError", "ServerTimeoutError", "EndpointConnectionError",
                      "ConnectTimeoutError", "ReadTimeoutError", "ConnectionError", "TimeoutError",
                      "IncompleteReadError", "ClientPayloadError")


def storage_error(exc: BaseException, operation: str, uri: str) -> FramefleetError:
    """The one-line framefleet error for a store's exception, naming `operation` and `uri`, no secret."""
    shown = redact.redact(uri)
    for cause in exception_chain(exc):
        if isinstance(cause, FramefleetError):
            return cause
        status = _status(cause)
        name = type(cause).__name__
        if isinstance(cause, FileNotFoundError) or status == 404 or name == "ResourceNotFoundError":
            return InputNotFoundError(f"{shown}: not found (cannot {operation}); check the URI")
        if isinstance(cause, PermissionError) or status in (401, 403):
            return StorageError(
                f"{shown}: permission denied to {operation}; the credentials in use do not allow it "
                "(check the SAS permissions, the key or the role)"
            )
        if (status is not None and (status >= 500 or status in (408, 429))) or name in _UNAVAILABLE_NAMES or (
            isinstance(cause, OSError) and cause.errno in (errno.ECONNREFUSED, errno.ECONNRESET, errno.ETIMEDOUT,
                                                           errno.EHOSTUNREACH, errno.ENETUNREACH)
        ):
            return StorageUnavailableError(f"{shown}: the store is unavailable, cannot {operation} ({_reason(cause)})")
    return StorageError(f"{shown}: cannot {operation} ({_reason(exc)})")


def store_call(operation: str, uri: str, fn: Callable[[], T]) -> T:
    """`fn()`, with a store's exception turned into the one-line framefleet error for `operation` on `uri`."""
    try:
        return fn()
    except FramefleetError:
        raise
    except Exception as exc:  # noqa: BLE001 - every store failure becomes a one-line framefleet error
        raise storage_error(exc, operation, uri) from None


# -- reading and listing ----------------------------------------------------------------------------

def kind(uri: str) -> Kind | None:
    """What `uri` names: "file", "directory", "other" (pipe, device, socket), or None if nothing."""
    fs, path = filesystem(uri)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return None
    except PermissionError:
        if is_local(uri):
            raise InputNotFoundError(f"{uri}: permission denied (check its folders' permissions)") from None
        raise storage_error(PermissionError(), "read its properties", uri) from None
    except Exception as exc:  # noqa: BLE001
        error = storage_error(exc, "read its properties", uri)
        if isinstance(error, InputNotFoundError):
            return None
        raise error from None
    kind_ = info.get("type")
    return kind_ if kind_ in ("file", "directory") else "other"


def stat(uri: str) -> tuple[int, str]:
    """(size in bytes, content version): f"{mtime_ns}-{size}" locally, the etag (or generation, or
    modification time) on object stores."""
    if is_local(uri):
        try:
            st = os.stat(local_path(uri))
        except FileNotFoundError:
            raise InputNotFoundError(f"{uri}: no such file (was it moved or deleted?)") from None
        except PermissionError:
            raise InputNotFoundError(f"{uri}: permission denied (check the file's read permission)") from None
        return st.st_size, f"{st.st_mtime_ns}-{st.st_size}"
    fs, path = filesystem(uri)
    return remote_version(store_call("read its properties", uri, lambda: fs.info(path)))


def remote_version(info: Mapping[str, Any]) -> tuple[int, str]:
    """(size, version) from an fsspec info mapping of an object."""
    size = int(info.get("size") or 0)
    for key in ("etag", "ETag", "generation", "VersionId", "version_id"):
        if info.get(key):
            return size, str(info[key]).strip('"')
    for key in ("last_modified", "LastModified", "updated", "mtime"):
        if info.get(key):
            return size, f"{info[key]}-{size}"
    return size, str(size)


def walk_files(root: str) -> list[tuple[str, str]]:
    """(uri, relpath) of every file under directory `root`, sorted by relpath.

    Hidden files and folders (a name starting with ".", such as `.framefleet-job`) are skipped; local
    symlinked folders are not followed (so a link loop cannot recurse forever). Object stores are listed
    with their paged listing (one request per few thousand keys).
    """
    if not is_local(root):
        return [(uri, rel) for uri, rel, _ in walk_remote(root)]
    top = canonical_uri(root)

    def fail(exc: OSError) -> None:
        where = exc.filename or top
        raise InputNotFoundError(f"{where}: cannot list this folder ({exc.strerror}); check its permissions")

    found: list[tuple[str, str]] = []
    for folder, dirs, files in _LOCAL_FS.walk(top, detail=True, on_error=fail):
        for name in [d for d, info in dirs.items() if d.startswith(".") or info.get("islink")]:
            del dirs[name]
        for name, info in files.items():
            if name.startswith(".") or info["type"] != "file":
                continue
            uri = posixpath.join(folder, name)
            found.append((uri, posixpath.relpath(uri, top)))
    return sorted(found, key=lambda pair: pair[1])


def walk_remote(root: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(uri, relpath, info) of every object under a remote prefix, hidden names skipped, sorted."""
    fs, path = filesystem(root)
    protocol = split_protocol(root)[0]
    listing = store_call("list", root, lambda: fs.find(path, detail=True))
    if not isinstance(listing, dict):  # some stores answer a single object's path with a plain list
        listing = {}
    found = []
    prefix = path.rstrip("/") + "/"
    for key, info in listing.items():
        if info.get("type") != "file" or not key.startswith(prefix):
            continue
        rel = key[len(prefix):]
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        found.append((f"{protocol}://{key}", rel, info))
    return sorted(found, key=lambda entry: entry[1])


def glob(pattern: str) -> tuple[str, list[str]]:
    """(base, matches): the pattern's folder before its first glob component, and the canonical URIs of
    the files and folders it matches (`**` spans folders), sorted; the base itself is never a match."""
    fs, path = filesystem(pattern)
    protocol = None if is_local(pattern) else split_protocol(pattern)[0]
    parts = path.split("/")
    first_magic = next(i for i, part in enumerate(parts) if _GLOB_MAGIC.search(part))
    base = "/".join(parts[:first_magic]) or "/"
    matches = store_call("list", pattern, lambda: fs.glob(path))
    qualify = (lambda p: p) if protocol is None else (lambda p: f"{protocol}://{p}")
    return qualify(base), sorted(qualify(m) for m in matches if m != base)


def read_head(uri: str, size: int) -> bytes:
    """The first `size` bytes of a file (fewer if it is shorter): one range read on a store."""
    if is_local(uri):
        try:
            with _LOCAL_FS.open(canonical_uri(uri), "rb") as f:
                return f.read(size)
        except FileNotFoundError:
            raise InputNotFoundError(f"{uri}: no such file (was it moved or deleted?)") from None
        except PermissionError:
            raise InputNotFoundError(f"{uri}: permission denied (check the file's read permission)") from None
    fs, path = filesystem(uri)
    return store_call("read", uri, lambda: fs.cat_file(path, start=0, end=size))


def read_range(uri: str, start: int, end: int) -> bytes:
    """Bytes [start, end) of a file (fewer past its end): one range read on a store."""
    if is_local(uri):
        with open(local_path(uri), "rb") as f:
            f.seek(start)
            return f.read(max(0, end - start))
    fs, path = filesystem(uri)
    return store_call("read", uri, lambda: fs.cat_file(path, start=start, end=end))


def read_text(uri: str) -> str:
    """The whole of a UTF-8 text file, such as a list of inputs."""
    fs, path = filesystem(uri)
    try:
        data = fs.cat_file(path)
    except (FileNotFoundError, IsADirectoryError):
        raise InputNotFoundError(f"{uri}: no such file (check the path)") from None
    except PermissionError:
        raise InputNotFoundError(f"{uri}: permission denied (check the file's read permission)") from None
    except Exception as exc:  # noqa: BLE001
        raise storage_error(exc, "read", uri) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OptionError(f"{uri}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def block_cache(uri: str, size: int, block_size: int = 4 << 20, max_blocks: int = 8) -> BlockCache:
    """A bounded cache of `block_size` ranges of a remote object (at most `max_blocks` kept, least
    recently used dropped), fetched on demand; share it between the readers of one object."""
    fs, path = filesystem(uri)
    return BlockCache(block_size, lambda start, end: fs.cat_file(path, start=start, end=end), size, max_blocks)


class RangeReader(io.RawIOBase):
    """A seekable, read-only file over a remote object that reads through a `block_cache`, with store
    errors turned into framefleet errors."""

    def __init__(self, uri: str, cache: BlockCache) -> None:
        self.name = uri
        self._cache = cache
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        end = self._cache.size if size is None or size < 0 else min(self._position + size, self._cache.size)
        data = store_call("read", self.name, lambda: self._cache._fetch(self._position, end))
        self._position += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._cache.size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position


def seekable(uri: str) -> bool:
    """Whether the store serves range reads of `uri` (an HTTP server without Range support does not)."""
    fs, path = filesystem(uri)
    with store_call("open for reading", uri, lambda: fs.open(path, "rb")) as f:
        return bool(f.seekable())


def download(uri: str, target: Path) -> None:
    """Copy a remote file to a local path, atomically (a partial download is never at `target`)."""
    fs, path = filesystem(uri)
    tmp = temporary_path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        store_call("download", uri, lambda: fs.get_file(path, str(tmp)))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


# -- writing ---------------------------------------------------------------------------------------

def check_writable(uri: str) -> None:
    """Refuse a read-only store (`https://`) as an output, before any work starts."""
    protocol = protocol_of(uri)
    if protocol in READ_ONLY_PROTOCOLS:
        raise OptionError(f"{redact.redact(uri)}: {protocol}:// is read-only; write outputs to a path or a store")
    filesystem(uri)  # the extra is installed and the options are accepted


def upload(local: Path, uri: str) -> None:
    """Commit a finished local file to `uri` in one step: readers see the whole object or none."""
    if is_local(uri):
        target = local_path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(local, target)
        return
    fs, path = filesystem(uri)
    store_call("write", uri, lambda: fs.put_file(str(local), path))


def write_small(uri: str, data: bytes) -> None:
    """Write a small file (a manifest) in one step: a rename into place locally, a single PUT on a store;
    readers see the old content or the new, never a part."""
    if is_local(uri):
        target = local_path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomically(target, data)
        return
    fs, path = filesystem(uri)
    store_call("write", uri, lambda: fs.pipe_file(path, data))


def delete(uri: str) -> None:
    """Delete a file or object if it exists."""
    fs, path = filesystem(uri)
    try:
        fs.rm_file(path)
    except FileNotFoundError:
        pass
    except Exception as exc:  # noqa: BLE001
        error = storage_error(exc, "delete", uri)
        if not isinstance(error, InputNotFoundError):
            raise error from None


@contextmanager
def staged_output(uri: str, staging: Path) -> Iterator[Path]:
    """A local path to write `uri`'s content to; on success it is committed with `upload`.

    For a local `uri` the path is the target itself (writers rename into place atomically)."""
    if is_local(uri):
        yield local_path(uri)
        return
    digest = hashlib.sha256(uri.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    local = staging / f"upload-{digest}{posixpath.splitext(uri)[1]}"
    local.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield local
        upload(local, uri)
    finally:
        local.unlink(missing_ok=True)


# -- path safety -----------------------------------------------------------------------------------

def safe_relpath(rel: str) -> str:
    """`rel` as a normalised relative POSIX path that stays inside any root it is joined to.

    Raises `OutputError` for an empty path, control characters (NUL included), lone surrogates, backslashes,
    absolute paths, drive letters, empty components (`a//b`, a trailing `/`) and `..` components; `.`
    components are dropped.
    """
    shown = repr(rel)
    if not rel:
        raise OutputError("'': empty output path; every output needs a file name under the output root")
    for char in rel:
        category = unicodedata.category(char)
        if category == "Cc":
            raise OutputError(f"{shown}: output path contains control character {char!r}; rename the input")
        if category == "Cs":
            raise OutputError(f"{shown}: output path is not valid Unicode; rename the input to a UTF-8 name")
    if "\\" in rel:
        raise OutputError(f"{shown}: output path contains a backslash; use '/' or rename the input")
    if rel.startswith("/"):
        raise OutputError(f"{shown}: output path is absolute; it must be relative to the output root")
    parts = rel.split("/")
    if "" in parts:
        raise OutputError(f"{shown}: output path has an empty component ('//' or a final '/'); name a file")
    if ".." in parts:
        raise OutputError(f"{shown}: output path contains '..', which would leave the output root; remove it")
    parts = [part for part in parts if part != "."]
    if not parts:
        raise OutputError(f"{shown}: output path names the output root itself; name a file under it")
    safe = "/".join(parts)
    if _DRIVE_LETTER.match(safe):  # checked after dropping "./", so that "./C:" is refused too
        raise OutputError(f"{shown}: output path starts with a drive letter; make it relative")
    return safe


def output_relpath(relpath: str) -> str:
    """The output's path under the output root: `safe_relpath(relpath)` with the extension mapped
    (.mp4, .mov, .mkv, .webm, .ts and .m2ts are kept, the codec following the container: WebM gets VP9;
    anything else becomes .mp4: `a/b.avi` -> `a/b.mp4`)."""
    rel = safe_relpath(relpath)
    stem, ext = posixpath.splitext(rel)
    return rel if ext.lower() in KEPT_OUTPUT_EXTENSIONS else stem + DEFAULT_OUTPUT_EXTENSION


def output_uri(output_root: str, relpath: str) -> str:
    """Where the output for input `relpath` is written: `output_relpath(relpath)` under `output_root`,
    in the root's own form (a plain path stays a path, a URL stays a URL)."""
    if not output_root:
        raise OutputError("'': empty output root; pass -o with a folder to write the outputs to")
    return join(output_root, output_relpath(relpath))
