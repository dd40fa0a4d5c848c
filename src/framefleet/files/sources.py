"""What the user names as inputs -> the videos of a job, as `VideoRef`s.

An input is a file, a directory (walked recursively), a glob (`*`, `?`, `[...]`, `**`), `@list.txt` (one
input per line; blank lines and `#` comments ignored), or `-` (such lines read from stdin). Entries of a
list are inputs like those on the command line, relative paths resolved against the current directory.
All access goes through `framefleet.files.storage`; nothing here runs FFmpeg, because the scheduler process must
not open untrusted files with it: files found in directories are recognised by extension or by sniffing
their first bytes.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from framefleet.errors import InputNotFoundError, OptionError, OutputError
from framefleet.files import storage
from framefleet.video.container import VIDEO_EXTENSIONS

# Enough bytes for every signature below (MPEG-TS checks sync bytes up to 376, M2TS up to 388).
SNIFF_BYTES = 512
_TS_PACKET = 188
_M2TS_PACKET = 192
# ISO-BMFF major brands of still images and audio-only files: an `ftyp` box alone does not make a video.
_NON_VIDEO_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"mif1", b"msf1", b"avif",
                               b"M4A ", b"M4B ", b"M4P "})
# Top-level QuickTime atoms that open old .mov files written without an `ftyp` box.
_QUICKTIME_ATOMS = frozenset({b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})
_ASF_GUID = bytes.fromhex("3026B2758E66CF11")


@dataclass(frozen=True)
class VideoRef:
    """One input video of a job, as found when the inputs were listed."""

    uri: str
    """Where the video is read from, in `storage.canonical_uri` form (an absolute path for local files)."""
    relpath: str
    """Its POSIX path under the output root, before `storage.output_relpath` maps the extension."""
    size: int
    """Its size in bytes."""
    version: str
    """Its content version: f"{mtime_ns}-{size}" for local files (an etag for object stores, later)."""

    def __post_init__(self) -> None:
        if storage.safe_relpath(self.relpath) != self.relpath:
            raise OutputError(f"{self.uri}: relpath {self.relpath!r} is not normalised; use safe_relpath's")

    @property
    def id(self) -> str:
        """A short content-derived id: the first 16 hex digits of sha256(uri, version)."""
        key = f"{self.uri}\n{self.version}".encode("utf-8", "surrogatepass")
        return hashlib.sha256(key).hexdigest()[:16]


@dataclass(frozen=True)
class SourceListing:
    """The result of `expand_inputs`."""

    refs: list[VideoRef] = field(default_factory=list)
    """The videos, sorted by relpath, each URI once."""
    skipped: list[str] = field(default_factory=list)
    """URIs of files found in directories or by globs that are not videos, sorted."""
    refused: dict[str, str] = field(default_factory=dict)
    """Videos whose names cannot be mirrored under the output root (control characters, backslashes, ...):
    URI -> the one-line reason. They are left out; the other videos run."""


def sniff_container(head: bytes) -> str | None:
    """The container family that the first bytes of a file announce, or None.

    Recognises ISO-BMFF/MP4/MOV ("mp4"), Matroska/WebM ("matroska"), AVI ("avi"), MPEG-TS and M2TS
    ("mpegts"), MPEG-PS ("mpegps"), FLV ("flv"), Ogg ("ogg") and ASF/WMV ("asf").
    """
    box_type = head[4:8]
    if box_type == b"ftyp":
        return None if head[8:12] in _NON_VIDEO_BRANDS else "mp4"
    if box_type in _QUICKTIME_ATOMS:
        return "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if _has_sync_bytes(head, start=0, packet=_TS_PACKET):
        return "mpegts"
    if _has_sync_bytes(head, start=4, packet=_M2TS_PACKET):
        return "mpegts"
    if head.startswith(b"\x00\x00\x01\xba"):
        return "mpegps"
    if head.startswith(b"FLV\x01"):
        return "flv"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(_ASF_GUID):
        return "asf"
    return None


def _has_sync_bytes(head: bytes, *, start: int, packet: int) -> bool:
    """MPEG-TS sync bytes (0x47) at the start of the first two packets, and of the third when the head
    holds it (a text file may well have a "G" at 0 and at 188, seldom also at 376)."""
    offsets = [start + i * packet for i in range(3) if start + i * packet < len(head)]
    return len(offsets) >= 2 and all(head[offset] == 0x47 for offset in offsets)


def expand_inputs(inputs: Sequence[str], *, stdin: TextIO | None = None) -> SourceListing:
    """Turn the inputs a user names into the job's videos; see the module docstring for the forms.

    A named file is always included (workers find out whether it is a video); files inside directories
    and matched by globs are included when they look like videos, else listed in `skipped`; a video whose
    name cannot be mirrored under the output root is left out and listed in `refused`. Raises
    `InputNotFoundError` for a missing path or a glob matching nothing, and `OptionError` for an unknown
    store or two inputs that would be written to the same output path. Object stores are listed with one
    paged listing per folder; the sizes and versions come with it.
    """
    found: dict[str, str] = {}  # uri -> relpath, first naming wins
    listed: dict[str, tuple[int, str]] = {}  # uri -> (size, version) from a store's listing
    skipped: set[str] = set()
    refused: dict[str, str] = {}
    for entry, where in _entries(inputs, stdin):
        for uri, relpath, is_video, known in expand_entry(entry, where):
            if not is_video:
                skipped.add(uri)
            elif uri not in found and uri not in refused:
                try:
                    found[uri] = _checked_relpath(uri, relpath)
                except OutputError as exc:
                    refused[uri] = str(exc)
                    continue
                if known is not None:
                    listed[uri] = known
    _check_collisions(found)
    refs = [VideoRef(uri, relpath, *(listed.get(uri) or storage.stat(uri))) for uri, relpath in found.items()]
    refs.sort(key=lambda ref: (ref.relpath, ref.uri))
    return SourceListing(refs=refs, skipped=sorted(skipped - found.keys()), refused=refused)


def _entries(inputs: Sequence[str], stdin: TextIO | None) -> Iterator[tuple[str, str]]:
    """(entry, where) for each input, with @list files and `-` read into their lines."""
    for item in inputs:
        if item == "-":
            yield from _lines((stdin or sys.stdin).read(), "stdin")
        elif item.startswith("@"):
            list_uri = item[1:]
            if not list_uri:
                raise OptionError("'@': names no list file; write @PATH, e.g. @videos.txt")
            yield from _lines(storage.read_text(list_uri), list_uri)
        else:
            yield item, ""


def _lines(text: str, source: str) -> Iterator[tuple[str, str]]:
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.strip()
        if entry and not entry.startswith("#"):
            yield entry, f" (line {number} of {source})"


Found = tuple[str, str, bool, "tuple[int, str] | None"]
"""(uri, relpath, looks like a video, (size, version) when a store's listing gave them)."""


def expand_entry(entry: str, where: str = "") -> Iterator[Found]:
    """What one input (a file, folder, prefix or glob) names, file by file; `where` is added to errors."""
    what = storage.kind(entry)
    if what == "file":
        uri = storage.canonical_uri(entry)
        yield uri, posixpath.basename(uri), True, None
    elif what == "directory":
        yield from _walk(entry, "")
    elif what == "other":
        raise OptionError(f"{entry}{where}: a pipe or device, not a file or folder; save it to a file first")
    elif storage.is_glob(entry):
        yield from _expand_glob(entry, where)
    else:
        raise InputNotFoundError(f"{entry}{where}: no such file or directory; check the path")


def _walk(folder: str, above: str) -> Iterator[Found]:
    """The files under a folder or prefix, with relpaths prefixed by `above`."""
    if storage.is_local(folder):
        for uri, relpath in storage.walk_files(folder):
            yield uri, above + relpath, _looks_like_video(uri), None
        return
    for uri, relpath, info in storage.walk_remote(folder):
        yield uri, above + relpath, _looks_like_video(uri), storage.remote_version(info)


def _expand_glob(pattern: str, where: str) -> Iterator[Found]:
    base, matches = storage.glob(pattern)
    walked: set[str] = set()
    any_match = False
    for uri in matches:
        relpath = posixpath.relpath(uri, base)
        parts = relpath.split("/")
        if any(part.startswith(".") for part in parts):
            continue
        if any("/".join(parts[:i]) in walked for i in range(1, len(parts))):
            continue  # already listed with a folder that `**` matched
        any_match = True
        what = storage.kind(uri)
        if what == "directory":
            walked.add(relpath)
            yield from _walk(uri, f"{relpath}/")
        elif what == "file":
            yield uri, relpath, _looks_like_video(uri), None
    if not any_match:
        raise InputNotFoundError(f"{pattern}{where}: no files match this pattern; check the path and pattern")


def _looks_like_video(uri: str) -> bool:
    if posixpath.splitext(uri)[1].lower() in VIDEO_EXTENSIONS:
        return True
    try:
        head = storage.read_head(uri, SNIFF_BYTES)
    except InputNotFoundError:
        return False
    return sniff_container(head) is not None


def _checked_relpath(uri: str, relpath: str) -> str:
    try:
        return storage.safe_relpath(relpath)
    except OutputError as exc:
        shown = repr(uri)[1:-1]  # a control character in the name must not break the line
        raise OutputError(f"{shown}: cannot be mirrored under the output root: {exc}") from None


def _check_collisions(found: dict[str, str]) -> None:
    """Two inputs must not be written to the same output path."""
    owner: dict[str, str] = {}
    for uri, relpath in found.items():
        key = storage.output_relpath(relpath)
        other = owner.setdefault(key, uri)
        if other == uri:
            continue
        if found[other] == relpath:
            parent = os.path.commonpath([posixpath.dirname(other), posixpath.dirname(uri)])
            raise OptionError(
                f"{other} and {uri} would both be written as {relpath!r} under the output root; "
                f"pass their common parent directory ({parent}) instead so each keeps its folders"
            )
        raise OptionError(
            f"{other} and {uri} would both be written as {key!r} under the output root "
            f"(outputs are .mp4 unless the input is {', '.join(sorted(storage.KEPT_OUTPUT_EXTENSIONS))}); "
            "rename one of them"
        )
