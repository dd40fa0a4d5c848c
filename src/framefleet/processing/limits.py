"""Limits on what an untrusted input may claim or cost, checked before anything is allocated for it.

A video's header is checked when it is probed, before its first frame is decoded: a 30000x30000 picture, a
billion-frame or a year-long claim, thousands of streams are refused from the header alone. Decoding then
stops at a frame larger than the limit (a stream may change size mid-way) and at too many rejected packets.
A job's workers also cap their own memory (where the platform allows), so a decoder that allocates without
end fails its task instead of the machine, and may give up their network (`cut_network`), so a decoder
that a crafted file takes over cannot reach anything. Each refusal is a `LimitError` whose class
(`limit:pixels`, `limit:frames`, ...) the ledger records; the item fails, the job goes on.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import resource
from dataclasses import dataclass
from typing import Any

from framefleet.errors import FramefleetError, OptionError, exception_chain

log = logging.getLogger(__name__)


class LimitError(FramefleetError):
    """An input broke one of the `InputLimits`; `kind` names which (pixels, frames, duration, streams,
    decode-errors, memory)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    @property
    def error_class(self) -> str:
        return f"limit:{self.kind}"

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # pickled to the scheduler by Ray
        return LimitError, (self.kind, str(self))


@dataclass(frozen=True)
class InputLimits:
    """What one input may claim or cost. The defaults admit any real camera, phone or broadcast file
    (8K, days long, dozens of tracks) and refuse what only a crafted file claims."""

    max_pixels: int = 8192 * 8192
    """Width x height of a frame, as the header claims it or as decoded."""
    max_side: int = 16384
    """Width or height of a frame."""
    max_frames: int = 50_000_000
    """Frames the header claims (or its duration times its frame rate): 23 days at 25 fps."""
    max_seconds: float = 7 * 24 * 3600.0
    """Duration the header claims."""
    max_streams: int = 256
    """Streams in the container."""
    max_decode_errors: int = 1000
    """Packets the decoder may reject before decoding stops (a stream of noise is not worth reading on)."""
    memory_mb: int | None = 16384
    """A job worker's address-space cap in MiB (Linux; None: none). It covers the worker's model too."""

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if value is None and item.name == "memory_mb":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise OptionError(f"limit {item.name} must be a positive number, got {value!r}")

    @classmethod
    def from_options(cls, values: dict[str, Any] | None) -> InputLimits:
        """From a pipeline file's `limits:` mapping or `--limit KEY=VALUE` flags; unknown keys are errors."""
        values = dict(values or {})
        known = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise OptionError(f"unknown limit {unknown[0]!r}; limits are {', '.join(sorted(known))}")
        return cls(**values)

    def changed(self) -> dict[str, Any]:
        """The limits that differ from the defaults (what a job stores)."""
        default = InputLimits()
        return {item.name: getattr(self, item.name) for item in dataclasses.fields(self)
                if getattr(self, item.name) != getattr(default, item.name)}

    def check_frame_size(self, source: object, width: int, height: int) -> None:
        """Refuse a frame of width x height (claimed or decoded) above the limits."""
        if width <= 0 or height <= 0:
            return  # unknown until decoded
        if max(width, height) > self.max_side or width * height > self.max_pixels:
            raise LimitError("pixels", f"{source}: limit:pixels: its video is {width}x{height} "
                             f"({width * height / 1e6:.0f} Mpx), above the limit of {self.max_side} px a side "
                             f"and {self.max_pixels / 1e6:.0f} Mpx (limit max_pixels, max_side)")

    def check_header(self, source: object, *, streams: int, width: int, height: int, frames: int | None,
                     seconds: float | None) -> None:
        """Refuse what a container's header claims beyond the limits."""
        if streams > self.max_streams:
            raise LimitError("streams", f"{source}: limit:streams: it has {streams} streams, above the limit "
                             f"of {self.max_streams} (limit max_streams)")
        self.check_frame_size(source, width, height)
        if frames is not None and frames > self.max_frames:
            raise LimitError("frames", f"{source}: limit:frames: it claims {frames} frames, above the limit "
                             f"of {self.max_frames} (limit max_frames)")
        if seconds is not None and seconds > self.max_seconds:
            raise LimitError("duration", f"{source}: limit:duration: it claims {seconds:.0f} s, above the "
                             f"limit of {self.max_seconds:.0f} s (limit max_seconds)")

    def check_decode_errors(self, source: object, errors: int) -> None:
        """Stop decoding after too many rejected packets."""
        if errors > self.max_decode_errors:
            raise LimitError("decode-errors", f"{source}: limit:decode-errors: the decoder rejected "
                             f"{errors} packets, above the limit of {self.max_decode_errors} "
                             "(limit max_decode_errors)")


def cap_memory(limits: InputLimits) -> None:
    """Cap this process's private memory at `limits.memory_mb` (a job worker calls it once, at start).

    The cap is `RLIMIT_DATA`: the heap and private writable mappings, where frames and model buffers live.
    Shared mappings (Ray's object store) and reserved but inaccessible address space do not count. Where
    the platform has no such limit, or it is already lower, nothing changes (logged)."""
    if limits.memory_mb is None:
        return
    wanted = limits.memory_mb * 1024 * 1024
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        if hard != resource.RLIM_INFINITY and hard < wanted:
            wanted = hard
        resource.setrlimit(resource.RLIMIT_DATA, (wanted, hard))
    except (ValueError, OSError, AttributeError) as exc:
        log.info("cannot cap the worker's memory at %d MiB (%s)", limits.memory_mb, exc)


_CLONE_NEWNET = 0x40000000


def cut_network() -> str | None:
    """Move this process into a network namespace of its own, which holds only a loopback interface that
    is down: no connection can leave it, to the internet, the LAN or this machine's services. Connections
    made before (a worker's pipe to its scheduler) go on working. Linux only, and only where the process
    may make one (root, or CAP_SYS_ADMIN, as in a VM or a privileged container). None when cut, else why not."""
    unshare = getattr(os, "unshare", None)  # Python 3.12
    if unshare is not None:
        try:
            unshare(_CLONE_NEWNET)
        except OSError as exc:
            return exc.strerror or str(exc)
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(ctypes.c_int(_CLONE_NEWNET)) == 0:
            return None
        return os.strerror(ctypes.get_errno())
    except (OSError, AttributeError) as exc:  # no libc, or no unshare in it (not Linux)
        return str(exc) or type(exc).__name__


def memory_error(source: object, limits: InputLimits) -> LimitError:
    """The error for an allocation that failed under the worker's memory cap."""
    return LimitError("memory", f"{source}: limit:memory: processing it needed more memory than the "
                      f"worker's cap of {limits.memory_mb} MiB (limit memory_mb); a smaller --max-size or "
                      "fewer --workers needs less")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` (or one it came from) is an allocation refused: Python's `MemoryError` (OpenVINO's are
    raised as one, `framefleet.ops.runtimes`), or onnxruntime's arena failing to allocate a buffer (which it
    raises as a plain failure)."""
    return any(isinstance(cause, MemoryError) or (type(cause).__module__.startswith("onnxruntime")
                                                  and "Failed to allocate memory" in str(cause))
               for cause in exception_chain(exc))
