"""Where framefleet reads and writes: fsspec access to inputs, and the safety of output paths.

Every read and listing of the user's inputs goes through this module, so object stores (`az://`, `s3://`,
`gs://`) can be added here alone. This version supports local storage only: plain paths and `file://` URLs;
a remote URL raises a one-line `OptionError`. Local URIs are returned in one canonical form, an absolute
POSIX path, so the same file named two ways is one input.
"""

from __future__ import annotations

import os
import posixpath
import re
import unicodedata
from pathlib import Path, PurePath
from typing import Literal

import fsspec
from fsspec.core import split_protocol

from framefleet.errors import InputNotFoundError, OptionError, OutputError

LOCAL_PROTOCOLS = frozenset({"file", "local"})
# Output containers kept as they are; any other input extension is written as .mp4.
KEPT_OUTPUT_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv"})
DEFAULT_OUTPUT_EXTENSION = ".mp4"

_GLOB_MAGIC = re.compile(r"[*?[]")
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")
_LOCAL_FS = fsspec.filesystem("file")

Kind = Literal["file", "directory", "other"]


def is_local(uri: str) -> bool:
    """Whether `uri` is a plain path or a `file://` URL."""
    protocol, _ = split_protocol(uri)
    return protocol is None or protocol in LOCAL_PROTOCOLS


def local_path(uri: str) -> Path:
    """The local path of a plain path or `file://` URL; a remote URL raises `OptionError`."""
    protocol, path = split_protocol(uri)
    if protocol is None:
        return Path(uri)
    if protocol in LOCAL_PROTOCOLS:
        return Path(_LOCAL_FS._strip_protocol(uri))
    raise OptionError(
        f"{uri}: remote stores ({protocol}://) are not supported yet, only local paths and file:// URLs; "
        "copy the files to a local directory and pass its path"
    )


def canonical_uri(uri: str) -> str:
    """The one form framefleet keeps for `uri`: an absolute POSIX path for local storage."""
    return Path(os.path.abspath(local_path(uri))).as_posix()


def is_glob(uri: str) -> bool:
    """Whether `uri` contains glob syntax (`*`, `?`, `[`, `**`)."""
    return _GLOB_MAGIC.search(uri) is not None


def kind(uri: str) -> Kind | None:
    """What `uri` names: "file", "directory", "other" (pipe, device, socket), or None if nothing."""
    path = canonical_uri(uri)
    try:
        info = _LOCAL_FS.info(path)
    except FileNotFoundError:
        return None
    except PermissionError:
        raise InputNotFoundError(f"{uri}: permission denied (check its folders' permissions)") from None
    return info["type"] if info["type"] in ("file", "directory") else "other"


def stat(uri: str) -> tuple[int, str]:
    """(size in bytes, content version) of a file: f"{mtime_ns}-{size}" locally (later: the etag)."""
    try:
        st = os.stat(local_path(uri))
    except FileNotFoundError:
        raise InputNotFoundError(f"{uri}: no such file (was it moved or deleted?)") from None
    except PermissionError:
        raise InputNotFoundError(f"{uri}: permission denied (check the file's read permission)") from None
    return st.st_size, f"{st.st_mtime_ns}-{st.st_size}"


def walk_files(root: str) -> list[tuple[str, str]]:
    """(uri, relpath) of every regular file under directory `root`, sorted by relpath.

    Hidden files and folders (a name starting with ".", such as `.framefleet-job`) are skipped, and
    symlinked folders are not followed (so a link loop cannot recurse forever).
    """
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


def glob(pattern: str) -> tuple[str, list[str]]:
    """(base, matches): the pattern's folder before its first glob component, and the canonical URIs of
    the files and folders it matches (`**` spans folders), sorted; the base itself is never a match."""
    path = canonical_uri(pattern)
    parts = path.split("/")
    first_magic = next(i for i, part in enumerate(parts) if is_glob(part))
    base = "/".join(parts[:first_magic]) or "/"
    return base, sorted(m for m in _LOCAL_FS.glob(path) if m != base)


def read_head(uri: str, size: int) -> bytes:
    """The first `size` bytes of a file (fewer if it is shorter)."""
    try:
        with _LOCAL_FS.open(canonical_uri(uri), "rb") as f:
            return f.read(size)
    except FileNotFoundError:
        raise InputNotFoundError(f"{uri}: no such file (was it moved or deleted?)") from None
    except PermissionError:
        raise InputNotFoundError(f"{uri}: permission denied (check the file's read permission)") from None


def read_text(uri: str) -> str:
    """The whole of a UTF-8 text file, such as a list of inputs."""
    try:
        with _LOCAL_FS.open(canonical_uri(uri), "rb") as f:
            data = f.read()
    except (FileNotFoundError, IsADirectoryError):
        raise InputNotFoundError(f"{uri}: no such file (check the path)") from None
    except PermissionError:
        raise InputNotFoundError(f"{uri}: permission denied (check the file's read permission)") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OptionError(f"{uri}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


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
    if _DRIVE_LETTER.match(rel):
        raise OutputError(f"{shown}: output path starts with a drive letter; make it relative")
    parts = rel.split("/")
    if "" in parts:
        raise OutputError(f"{shown}: output path has an empty component ('//' or a final '/'); name a file")
    if ".." in parts:
        raise OutputError(f"{shown}: output path contains '..', which would leave the output root; remove it")
    parts = [part for part in parts if part != "."]
    if not parts:
        raise OutputError(f"{shown}: output path names the output root itself; name a file under it")
    return "/".join(parts)


def output_relpath(relpath: str) -> str:
    """The output's path under the output root: `safe_relpath(relpath)` with the extension mapped
    (.mp4, .mov and .mkv are kept; anything else becomes .mp4: `a/b.avi` -> `a/b.mp4`)."""
    rel = safe_relpath(relpath)
    stem, ext = posixpath.splitext(rel)
    return rel if ext.lower() in KEPT_OUTPUT_EXTENSIONS else stem + DEFAULT_OUTPUT_EXTENSION


def output_uri(output_root: str, relpath: str) -> str:
    """Where the output for input `relpath` is written: `output_relpath(relpath)` under `output_root`,
    in the root's own form (a plain path stays a path, a URL stays a URL)."""
    if not output_root:
        raise OutputError("'': empty output root; pass -o with a folder to write the outputs to")
    rel = output_relpath(relpath)
    protocol, _ = split_protocol(output_root)
    if protocol is None:
        return str(PurePath(output_root) / rel)
    return output_root.rstrip("/") + "/" + rel
