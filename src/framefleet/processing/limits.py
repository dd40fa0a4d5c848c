"""RetryPolicy on what an untrusted input may claim or cost, checked before anything is allocated for it.

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
import logging
import os
import resource

from framefleet.errors import LimitError, exception_chain
from framefleet.settings import InputLimits

log = logging.getLogger(__name__)


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


OPENCV_NO_MEMORY = -4
"""OpenCV's error code for an allocation refused (`cv2.Error.StsNoMem`)."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` (or one it came from) is an allocation refused: Python's `MemoryError` (OpenVINO's are
    raised as one, `framefleet.ops.openvino_engine`), onnxruntime's arena failing to allocate a buffer (which
    it raises as a plain failure), or OpenCV's "Insufficient memory" (the flicker filter's arrays)."""
    return any(isinstance(cause, MemoryError)
               or (type(cause).__module__.startswith("onnxruntime") and "Failed to allocate memory" in str(cause))
               or (type(cause).__module__ == "cv2" and getattr(cause, "code", None) == OPENCV_NO_MEMORY)
               for cause in exception_chain(exc))
