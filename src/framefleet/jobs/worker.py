"""`Worker`: what every engine runs on a worker, set up once, then one task at a time.

The local engine's processes, the Ray actors and the inline engine each host one `Worker`. Setting up caps
the process's memory (not for a CUDA pipeline, nor in the job's own process), applies the job's storage
options and builds the op chain (`FrameProcessor`). `run` turns what the environment did to a task into
framefleet errors: a full disk (`DiskFullError`, an infrastructure loss) and an allocation refused under
the memory cap, by Python or onnxruntime (`limit:memory`, the input's fault). An engine reports any error as
`Errored.of` (with `traceback_tail` for a bug).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable

from framefleet.errors import DiskFullError, is_disk_full
from framefleet.files.remote_inputs import WorkerStorage
from framefleet.jobs.task import TaskRequest, TaskResult, run_task
from framefleet.pipeline import Pipeline
from framefleet.processing.limits import cap_memory, is_out_of_memory, memory_error
from framefleet.processing.streaming import CutSignal, FrameProcessor
from framefleet.util.redact import redact

_LOG_TAIL_LINES = 20


def traceback_tail() -> str:
    """The last lines of the exception being handled, for the ledger's log tail."""
    return "".join(traceback.format_exc().splitlines(keepends=True)[-_LOG_TAIL_LINES:])


class Worker:
    """A pipeline set up for one worker (`threads` cores), running tasks one at a time."""

    def __init__(self, pipeline: Pipeline, threads: int, worker_storage: WorkerStorage = WorkerStorage(), *,
                 own_process: bool = True) -> None:
        self.pipeline = pipeline.for_worker(threads)
        self._given, self._threads = pipeline, threads
        if own_process and not any(op.device == "cuda" for op in pipeline.ops):
            cap_memory(pipeline.limits)  # CUDA reserves far more address space than it uses
        self._inputs = worker_storage.apply()
        self._processor = FrameProcessor(self.pipeline, sessions=1, threads=threads)

    def run(self, request: TaskRequest, progress: Callable[[int], None] | None = None,
            cut: CutSignal | None = None) -> TaskResult:
        """Run one task (see `run_task`: `cut` stops a segment early; a `share` above 1 multiplies its
        encoder's threads); raises a framefleet error, or anything else for a bug."""
        pipeline = self.pipeline if request.share <= 1 else self._given.for_worker(self._threads * request.share)
        try:
            return run_task(request, pipeline, self._processor, progress=progress, inputs=self._inputs, cut=cut)
        except Exception as exc:
            if is_out_of_memory(exc):  # under the worker's cap: the input's fault, like any broken limit
                raise memory_error(request.uri, self.pipeline.limits) from None
            if isinstance(exc, DiskFullError) or not is_disk_full(exc):
                raise
            raise DiskFullError(f"{redact(request.output_uri)}: no space left on a disk this task writes to (the "
                                "output's, or the job's parts folder); it is retried when space is freed") from exc

    def close(self) -> None:
        self._processor.close()
