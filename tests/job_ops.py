"""Ops that misbehave on purpose, for the batch-job tests (tests/integration/test_jobs.py).

Job workers are started with multiprocessing's *spawn* context, so the op classes a test hands to
`framefleet.jobs.run.run` must be importable by name in a fresh interpreter: they live here (tests/ is on
``sys.path`` because tests/conftest.py lives there, and spawned children inherit ``sys.path``).

Each op passes frames through unchanged, like the identity op, and misbehaves only on batches whose frame
width is `width` (None: every batch), so one job can mix well-behaved inputs with a poison one.

Pipelines name them as user ops (``op: job_ops:SlowOp`` in a ``--pipeline`` file), for tests that run the
CLI in a subprocess with tests/ on its ``PYTHONPATH`` and need tasks that take a while.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from framefleet.errors import OpError
from framefleet.ops.base import Op
from framefleet.processing.batch import FrameBatch


def _selected(batch: FrameBatch, width: int | None) -> bool:
    return width is None or batch.frames.shape[2] == width


@dataclass(kw_only=True)
class SlowOp(Op):
    """Identity that sleeps `delay` seconds per batch, so a segment takes a predictable while.

    With `beacon_dir`, each batch first writes the index of its first frame to ``beacon_dir/<pid>``: a test
    can see which worker processes are in the middle of a segment, and how far along they are. With
    `tally_dir`, each batch adds a line with its frame count to ``tally_dir/<pid>``: the frames processed,
    kept or not.
    """

    name = "slow"
    batch_size: int = 2
    delay: float = 0.05
    beacon_dir: str | None = None
    tally_dir: str | None = None

    def process(self, batch: FrameBatch) -> FrameBatch:
        if self.beacon_dir is not None:
            Path(self.beacon_dir, str(os.getpid())).write_text(str(batch.index))
        if self.tally_dir is not None:
            with Path(self.tally_dir, str(os.getpid())).open("a") as tally:
                tally.write(f"{len(batch)}\n")
        time.sleep(self.delay)
        return batch


@dataclass(kw_only=True)
class SleepForeverOp(Op):
    """Never returns from a batch of a selected video (a hung model or a deadlocked library)."""

    name = "sleep_forever"
    width: int | None = None
    after_frames: int = 0
    """Hang only on a batch that starts at this frame or later (0: the first batch)."""

    def process(self, batch: FrameBatch) -> FrameBatch:
        while _selected(batch, self.width) and batch.index >= self.after_frames:
            time.sleep(3600)
        return batch


@dataclass(kw_only=True)
class CrashOp(Op):
    """Kills its own worker with SIGSEGV (as a crashing native library would) on a selected video.

    With `marker`, only when that file does not exist yet (the op creates it first): the first attempt
    crashes, the retry succeeds. Without, every attempt crashes (a poison input).
    """

    name = "crash"
    width: int | None = None
    marker: str | None = None
    after_frames: int = 0
    """Crash only on a batch that starts at this frame or later (0: the first batch)."""

    def process(self, batch: FrameBatch) -> FrameBatch:
        if _selected(batch, self.width) and batch.index >= self.after_frames:
            if self.marker is None:
                os.kill(os.getpid(), signal.SIGSEGV)
            elif not os.path.exists(self.marker):
                Path(self.marker).touch()
                os.kill(os.getpid(), signal.SIGSEGV)
        return batch


@dataclass(kw_only=True)
class RecordNodeOp(Op):
    """Identity that notes, as an empty file named after it in `record_dir`, the Ray node it runs on."""

    name = "record_node"
    record_dir: str

    def process(self, batch: FrameBatch) -> FrameBatch:
        import ray

        Path(self.record_dir, ray.get_runtime_context().get_node_id()).touch()
        return batch


@dataclass(kw_only=True)
class PhoneHomeOp(Op):
    """Identity that first tries to connect to `port` on this machine's loopback (a decoder that a crafted
    file took over, calling out): fails its batch if it got through."""

    name = "phone_home"
    port: int = 0

    def process(self, batch: FrameBatch) -> FrameBatch:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
        except OSError:
            return batch
        raise OpError(f"reached 127.0.0.1:{self.port} from the worker")


@dataclass(kw_only=True)
class GatedOp(Op):
    """Identity that fails every batch (an input error) until the file `gate` exists."""

    name = "gated"
    gate: str = ""

    def process(self, batch: FrameBatch) -> FrameBatch:
        if not os.path.exists(self.gate):
            raise OpError(f"{self.gate} is not there yet")
        return batch


@dataclass(kw_only=True)
class WarnOp(Op):
    """Identity that logs `message` as a warning when its worker sets it up (a library's warning, say)."""

    name = "warn"
    message: str = "a warning from the worker"

    def setup(self, device) -> None:
        logging.getLogger("job_ops.warn").warning(self.message)

    def process(self, batch: FrameBatch) -> FrameBatch:
        return batch


@dataclass(kw_only=True)
class EnvironmentOp(Op):
    """Identity that writes the value of the environment variable `variable`, as its worker sees it, to
    `report` (once per batch: the last one stays)."""

    name = "environment"
    variable: str
    report: str

    def process(self, batch: FrameBatch) -> FrameBatch:
        Path(self.report).write_text(os.environ.get(self.variable, "<unset>"))
        return batch
