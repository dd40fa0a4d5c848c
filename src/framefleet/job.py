"""`run`: a batch job over many videos, durable in its job directory and resumable by running it again.

The job directory holds `ledger.sqlite` (the state of every item, task and attempt), `parts/` (segments
waiting to be joined) and `lock` (held while a run is active, so two runs never share a job).
"""

from __future__ import annotations

import fcntl
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from framefleet import __version__
from framefleet.engines.local import LocalPool, local_worker_count
from framefleet.engines.scheduler import EngineOptions, EngineProgress, Scheduler, WorkerPool
from framefleet.errors import FramefleetError, OptionError
from framefleet.ledger import Ledger, Limits
from framefleet.engines.ray_options import RayOptions
from framefleet.pipeline import Pipeline
from framefleet.sources import expand_inputs
from framefleet.storage import local_path, output_uri

LEDGER_NAME = "ledger.sqlite"
DEFAULT_JOB_DIR_NAME = ".framefleet-job"


class JobBusyError(FramefleetError):
    """Another run holds the job directory."""


@dataclass
class JobResult:
    """How a run ended."""

    job_dir: Path
    counts: dict[str, int]
    """Items per state."""
    failures: list[dict[str, Any]]
    """Failed items with their errors."""
    frames: int
    seconds: float
    interrupted: bool = False
    skipped: list[str] = field(default_factory=list)
    """Files in the input folders that are not videos."""

    @property
    def exit_code(self) -> int:
        """0 when every item is done, 3 when some failed, 130 when the run was stopped."""
        if self.interrupted:
            return 130
        return 3 if self.counts.get("failed") else 0


def default_job_dir(output: str) -> Path:
    """Where a job keeps its state when --job-dir is not given: inside the output root."""
    return local_path(output) / DEFAULT_JOB_DIR_NAME


def open_ledger(job_dir: str | Path, limits: Limits = Limits()) -> Ledger:
    """The ledger of an existing job (raises when the folder holds no job)."""
    path = Path(job_dir) / LEDGER_NAME
    if not path.exists():
        raise OptionError(f"{job_dir}: no framefleet job here (no {LEDGER_NAME}); give the --job-dir of a run")
    return Ledger(path, limits)


def run(
    inputs: Sequence[str],
    output: str | os.PathLike[str],
    pipeline: Pipeline | None = None,
    *,
    workers: int | None = None,
    job_dir: str | os.PathLike[str] | None = None,
    limits: Limits = Limits(),
    engine_options: EngineOptions | None = None,
    on_progress: Callable[[EngineProgress], None] | None = None,
    stdin: TextIO | None = None,
    handle_signals: bool = False,
    engine: str = "local",
    ray: RayOptions | None = None,
) -> JobResult:
    """Process every video named by `inputs` into `output` (mirroring relative paths).

    Running it again with the same job directory resumes: done work is skipped, unfinished work runs.
    `handle_signals` makes SIGINT/SIGTERM stop the job gracefully (the CLI sets it). `engine` is "local"
    (worker processes on this machine) or "ray" (Ray actors on a cluster, see `RayOptions`).
    """
    if engine not in ("local", "ray"):
        raise OptionError(f"--engine must be local or ray, got {engine!r}")
    started = time.perf_counter()
    pipeline = pipeline or Pipeline.from_options({})
    output_root = str(local_path(str(output)).resolve())
    job_path = Path(job_dir) if job_dir is not None else default_job_dir(output_root)
    job_path.mkdir(parents=True, exist_ok=True)
    with _job_lock(job_path):
        ledger = Ledger(job_path / LEDGER_NAME, limits)
        try:
            ledger.init_job(fingerprint=pipeline.fingerprint(), spec=pipeline.spec(), version=__version__,
                            output_root=output_root)
            skipped: list[str] = []
            if inputs:
                listing = expand_inputs(inputs, stdin=stdin)
                skipped = listing.skipped
                refs = [ref for ref in listing.refs if not _inside(ref.uri, output_root)]
                ledger.add_items((ref.uri, ref.relpath, ref.size, ref.version, output_uri(output_root, ref.relpath))
                                 for ref in refs)
            ledger.release_all_running("lost", "the previous run of this job stopped before this task finished")
            options = engine_options or EngineOptions()
            if workers is not None:
                options = EngineOptions(**{**vars(options), "workers": workers})
            pool, count = _pool(engine, pipeline, options, ray)
            scheduler = Scheduler(ledger, pool, job_path, count, options, on_progress)
            with _stop_on_signals(scheduler.request_stop, enabled=handle_signals):
                finished = scheduler.run()
            frames, _ = ledger.frame_totals()
            return JobResult(job_dir=job_path, counts=ledger.counts(), failures=ledger.failures(), frames=frames,
                             seconds=time.perf_counter() - started, interrupted=not finished, skipped=skipped)
        finally:
            ledger.close()


def _pool(engine: str, pipeline: Pipeline, options: EngineOptions, ray: RayOptions | None) -> tuple[WorkerPool, int]:
    """The worker pool of the chosen engine, and how many workers to start."""
    if engine == "local":
        workers, threads = local_worker_count(options)
        return LocalPool(pipeline, threads), workers
    from framefleet.engines.ray import ray_pool

    return ray_pool(pipeline, options, ray or RayOptions())


def retry(job_dir: str | os.PathLike[str], **kwargs: Any) -> JobResult:
    """Put a job's failed items back to pending and run the job again with its stored pipeline."""
    ledger = open_ledger(job_dir)
    try:
        job = ledger.job()
        if job is None:
            raise OptionError(f"{job_dir}: the job was never started")
        ledger.retry_failed()
    finally:
        ledger.close()
    return run([], job["output_root"], Pipeline.from_spec(job["spec"]), job_dir=job_dir, **kwargs)


def _inside(uri: str, root: str) -> bool:
    try:
        return Path(uri).resolve().is_relative_to(root)
    except (OSError, ValueError):
        return False


@contextmanager
def _job_lock(job_dir: Path) -> Iterator[None]:
    with open(job_dir / "lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobBusyError(f"{job_dir}: another framefleet run is using this job directory") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _stop_on_signals(stop: Callable[[], None], *, enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    previous = {sig: signal.signal(sig, lambda *_: stop()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
