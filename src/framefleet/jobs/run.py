"""`run`: a batch job over many videos, durable in its job directory (`framefleet.jobs.directory`) and resumable
by running it again; `retry`: its failed items again, run as the job's stored settings say.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from framefleet._version import __version__
from framefleet.engines.events import EngineProgress
from framefleet.engines.inline import InlinePool, inline_worker_count
from framefleet.engines.local import LocalPool, local_worker_count, start_workers_early
from framefleet.engines.local_processes import stop_early
from framefleet.engines.preemption import watch_notices
from framefleet.engines.scheduler import Scheduler, WorkerPool
from framefleet.errors import NoVideosError, OptionError, OutputError
from framefleet.files import storage
from framefleet.files.remote_inputs import WorkerStorage
from framefleet.files.sources import VideoRef, expand_inputs
from framefleet.jobs.directory import JobDir, default_job_dir, open_ledger, resolve_job_dir
from framefleet.jobs.reads import Damage, Failure, LedgerReads
from framefleet.jobs.spec import JobSpec
from framefleet.jobs.store import Ledger
from framefleet.ops.names import is_builtin
from framefleet.pipeline import Pipeline
from framefleet.processing.memory_budget import fit_local_workers
from framefleet.settings import PREDICTION_KEY, RUN_SETTINGS_KEY, SEGMENTING_KEY, RunSettings

PREEMPTED_EXIT_CODE = 75
"""`framefleet run`'s exit code when a preemption notice ended the run with work left (EX_TEMPFAIL: run the
same command again, on another node)."""


@dataclass
class JobResult:
    """How a run ended."""

    job_dir: Path
    counts: dict[str, int]
    """Items per state."""
    failures: list[Failure]
    """Failed items with their errors."""
    frames: int
    seconds: float
    interrupted: bool = False
    skipped: list[str] = field(default_factory=list)
    """Files in the input folders that are not videos."""
    refused: dict[str, str] = field(default_factory=dict)
    """Videos left out because their names cannot be mirrored under the output root: URI -> reason."""
    damaged: list[Damage] = field(default_factory=list)
    """Items done from partly damaged inputs (every frame that decodes kept), with what was damaged."""
    runtimes: list[str] = field(default_factory=list)
    """What ran the ops' models in the done tasks ("style: openvino bf16"), each once."""
    preempted: int | None = None
    """When the run ended on a preemption notice with work left: how many tasks it gave back (0 when every
    task in flight finished, or was cut short, before the deadline); None otherwise."""
    cut_short: int | None = None
    """When the run ended on a preemption notice with work left: how many segments it cut short (each
    committed its frames so far; a new task holds the rest); None otherwise."""
    adopted: int = 0
    """Items done by adopting an output already committed with a matching manifest, without running."""
    segmenting: dict[str, Any] | None = None
    """The segment length chosen for the preemption notice and what it was chosen from (`SegmentChoice`)."""

    @property
    def exit_code(self) -> int:
        """0 when every item is done, 3 when some failed or were refused, 75 when the run ended on a preemption
        notice with work left, 130 when the run was stopped."""
        if self.preempted is not None:
            return PREEMPTED_EXIT_CODE
        if self.interrupted:
            return 130
        return 3 if self.counts.get("failed") or self.refused else 0


def run(
    spec: JobSpec,
    *,
    job_dir: str | os.PathLike[str] | None = None,
    on_progress: Callable[[EngineProgress], None] | None = None,
    stdin: TextIO | None = None,
    handle_signals: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    standing: bool = False,
    stop: threading.Event | None = None,
    accept: Callable[[str], bool] | None = None,
    prediction: Mapping[str, Any] | None = None,
    retry_failed: bool = False,
) -> JobResult:
    """Run a job (see `JobSpec`): every video its inputs name, processed into its output root.

    Running it again with the same job directory resumes: done work is skipped, unfinished work runs.
    The job directory defaults to `default_job_dir(output)`; the run stores its settings there, which
    `retry` uses. `handle_signals` makes SIGINT/SIGTERM stop the job gracefully (the CLI sets it).
    `storage_options` are the stores' fsspec options (see `storage.configure`; default: the ones
    configured); they are never stored.
    `standing` keeps the run going when no work is left (a long-running service): it picks up items that
    another connection adds to the job's ledger meanwhile (their output URI is
    `storage.output_uri(canonical_output_root(output), relpath)`), and stops its workers while idle for
    `EngineOptions.idle_seconds`. Setting `stop` (from any thread) stops the run as SIGINT would; a standing
    run ends only so, and its result says `interrupted`. `accept(uri)` False skips a listed video (the
    service confines what a submission may read, symbolic links inside its folders included).
    `prediction` (from a plan: predicted wall seconds, fps, ...) is recorded so that `JobView.status` shows it
    beside what the job measures. `retry_failed` puts the job's failed items back to pending once the run
    holds the job (`retry`): while another run holds it, nothing changes.
    """
    started = time.perf_counter()
    pipeline, settings = spec.pipeline, spec.settings
    if storage_options is not None:
        storage.configure(storage_options)
    worker_storage = WorkerStorage(storage.configured_options(), settings.input_access)
    with _workers_started_early(settings, pipeline, worker_storage):
        output_root = canonical_output_root(spec.output)
        place = JobDir(Path(job_dir) if job_dir is not None else default_job_dir(output_root))
        found = _list_inputs(spec.inputs, output_root, stdin, accept) if spec.inputs else None
        if found is not None and not found.refs and not _has_items(place):
            raise NoVideosError(found.explain(spec.inputs, output_root))
        if storage.is_local(output_root):
            _create_folder(Path(output_root))
        pipeline, segmenting = _sized_for_notice(pipeline, settings, found, prediction)
        with place.lock(), place.open_ledger(settings.retry, create=True) as ledger:
            ledger.init_job(fingerprint=pipeline.fingerprint(), spec=pipeline.spec(), version=__version__,
                            output_root=output_root)
            ledger.put_setting(RUN_SETTINGS_KEY, settings.to_json())
            if retry_failed:
                ledger.retry_failed()
            if found is not None:
                ledger.add_items(
                    (ref.uri, ref.relpath, ref.size, ref.version,
                     storage.output_uri(output_root, ref.relpath))
                    for ref in found.refs
                )
            if prediction is not None:
                ledger.put_setting(PREDICTION_KEY, json.dumps(dict(prediction)))
            if segmenting is not None:
                ledger.put_setting(SEGMENTING_KEY, json.dumps(segmenting))
            ledger.release_all_running("lost",
                                       "the previous run of this job stopped before this task finished")
            parts = _parts_dir(ledger, place, settings.parts_dir)
            offline = settings.engine == "local" and workers_offline(
                settings.options.worker_network, pipeline, ledger, [output_root, parts], standing)
            pool, count = _pool(settings, pipeline, worker_storage, offline)
            scheduler = Scheduler(ledger, pool, parts, count, settings.options, on_progress,
                                  standing=standing, stop=stop)
            # The run's process is the node for the local and inline engines: it watches for preemption
            # notices.
            with _stop_on_signals(scheduler, enabled=handle_signals), \
                    watch_notices(scheduler.notices, enabled=settings.engine != "ray" and not standing):
                finished = scheduler.run()
            frames, _ = LedgerReads(ledger).frames()
            # A stop that came when nothing was left to do (or while the last task finished) interrupted
            # nothing.
            interrupted = not finished and (standing or ledger.unfinished() > 0)
            noticed = interrupted and scheduler.notices.notice is not None
            preempted, cut_short = ((scheduler.notices.given_back, scheduler.notices.cut) if noticed
                                    else (None, None))
            return JobResult(job_dir=place.path, counts=ledger.counts(), failures=LedgerReads(ledger).failures(),
                             frames=frames, seconds=time.perf_counter() - started, interrupted=interrupted,
                             skipped=found.skipped if found else [], refused=found.refused if found else {},
                             damaged=LedgerReads(ledger).damaged(), runtimes=LedgerReads(ledger).runtimes(),
                             preempted=preempted, cut_short=cut_short, adopted=LedgerReads(ledger).adopted(),
                             segmenting=segmenting)


def _sized_for_notice(pipeline: Pipeline, settings: RunSettings, found: _Found | None,
                      prediction: Mapping[str, Any] | None) -> tuple[Pipeline, dict[str, Any] | None]:
    """The pipeline with segments sized to the preemption notice, and the choice: a plan's, or made here
    (`framefleet.plan.segmenting.size_for_notice`) over the new videos; unchanged without a notice."""
    if prediction is not None and prediction.get("segmenting"):
        return pipeline, dict(prediction["segmenting"])
    if settings.preemption_notice is None or found is None or not found.refs:
        return pipeline, None
    from framefleet.plan.segmenting import size_for_notice
    from framefleet.processing.streaming import available_cores

    choice = size_for_notice([ref.uri for ref in found.refs], pipeline, settings.preemption_notice,
                             workers=settings.options.workers or available_cores())
    return dataclasses.replace(pipeline, segment_seconds=choice.segment_seconds), choice.to_dict()


@dataclass
class _Found:
    """The videos a run's inputs name, less those it leaves out, and what was left out."""

    refs: list[VideoRef]
    skipped: list[str]
    """Files that are not videos, and videos `accept` refused."""
    refused: dict[str, str]
    """Videos whose names cannot be mirrored under the output root: URI -> reason."""
    inside_output: int
    """Videos under the output root (a job's outputs are never its inputs)."""

    def explain(self, inputs: Sequence[str], output_root: str) -> str:
        """Why no video is left, for a run that has nothing to do."""
        named = ", ".join(inputs[:3]) + (f" and {len(inputs) - 3} more" if len(inputs) > 3 else "")
        found = []
        if self.skipped:
            names = ", ".join(Path(uri).name for uri in self.skipped[:3]) + (", ..." if len(self.skipped) > 3 else "")
            found.append(f"{_count(len(self.skipped), 'file')} that {'is' if len(self.skipped) == 1 else 'are'} "
                         f"not a video ({names})")
        if self.inside_output:
            found.append(f"{_count(self.inside_output, 'video')} inside the output folder {output_root}, which a job "
                         "never takes as inputs")
        if self.refused:
            found.append(f"{_count(len(self.refused), 'video')} whose names cannot be mirrored under the output")
        return f"no videos to process in {named}: found {'; '.join(found) or 'no files'}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _list_inputs(inputs: Sequence[str], output_root: str, stdin: TextIO | None,
                 accept: Callable[[str], bool] | None) -> _Found:
    listing = expand_inputs(inputs, stdin=stdin)
    refs = [ref for ref in listing.refs if not storage.is_inside(ref.uri, output_root)]
    inside_output = len(listing.refs) - len(refs)
    skipped = listing.skipped
    if accept is not None:
        skipped = sorted([*skipped, *(ref.uri for ref in refs if not accept(ref.uri))])
        refs = [ref for ref in refs if accept(ref.uri)]
    return _Found(refs, skipped, listing.refused, inside_output)


def _has_items(place: JobDir) -> bool:
    """Whether the job already holds items (from an earlier run), so a run with no new videos resumes it."""
    if not place.started():
        return False
    with place.open_ledger() as ledger:
        return sum(ledger.counts().values()) > 0


def _create_folder(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path}: cannot create the output folder ({exc.strerror or exc})") from None


def _parts_dir(ledger: Ledger, place: JobDir, requested: str | None) -> str:
    """The job's parts location: the one recorded by its first run, which later runs must not change."""
    wanted = str(place.parts.resolve()) if requested is None else (
        str(storage.local_path(requested).resolve()) if storage.is_local(requested) else storage.canonical_uri(requested))
    if requested is not None and not storage.is_local(requested):
        storage.check_writable(requested)
    kept = ledger.keep_setting("parts_dir", wanted)
    if requested is not None and kept != wanted:
        raise OptionError(f"--parts-dir {requested}: this job keeps its segments in {kept}; "
                          "rerun without --parts-dir (or with that one), or start a new job with a new --job-dir")
    return kept


def canonical_output_root(output: str) -> str:
    """The output root in canonical form, as `run` records it and derives output URIs from; checked to be
    writable storage."""
    if storage.is_local(output):
        root = storage.local_path(output).resolve()
        if root.exists() and not root.is_dir():
            raise OutputError(f"{output}: is a file; the output of a job is a folder (outputs mirror the inputs' "
                              "paths under it)")
        return str(root)
    storage.check_writable(output)
    return storage.canonical_uri(output)


def workers_offline(network: str, pipeline: Pipeline, ledger: Ledger, places: list[str], standing: bool) -> bool:
    """Whether local workers give up their network: asked for ("off"), or ("auto") nothing they do needs it:
    built-in ops only (a user's op may call a service), and every input, output and parts folder local (a
    standing run takes submissions from anywhere)."""
    if network not in ("auto", "on", "off"):
        raise OptionError(f"--worker-network must be auto, on or off, got {network!r}")
    if network != "auto":
        return network == "off"
    return (not standing and all(is_builtin(type(op)) for op in pipeline.ops)
            and all(storage.is_local(place) for place in places)
            and all(storage.is_local(item.uri) and storage.is_local(item.output_uri) for item in ledger.items()))


def _pool(settings: RunSettings, pipeline: Pipeline, worker_storage: WorkerStorage, offline: bool = False
          ) -> tuple[WorkerPool, int]:
    """The worker pool of the chosen engine, and how many workers to start."""
    options = settings.options
    if settings.engine == "local":
        options, pipeline = fit_local_workers(options, pipeline)
        workers, threads = local_worker_count(options, pipeline)
        stop_early(keep=workers)
        return LocalPool(pipeline, threads, worker_storage, offline=offline,
                         insist=options.worker_network == "off"), workers
    if settings.engine == "inline":
        workers, threads = inline_worker_count(options)
        return InlinePool(pipeline, threads, worker_storage), workers
    from framefleet.engines.ray import ray_pool

    return ray_pool(pipeline, options, settings.ray, worker_storage)


def job_settings(job_dir: str | os.PathLike[str], default: RunSettings = RunSettings()) -> RunSettings:
    """The settings a job's latest run stored (`default` for a job from before they were stored)."""
    with open_ledger(job_dir) as ledger:
        text = ledger.setting(RUN_SETTINGS_KEY)
    return default if text is None else RunSettings.from_json(text)


def retry(job_dir: str | os.PathLike[str], settings: RunSettings | None = None, **kwargs: Any) -> JobResult:
    """Put a job's failed items back to pending and run the job again with its stored pipeline and, unless
    `settings` are given, its stored settings (so a Ray job retries on Ray). `kwargs` go to `run`."""
    job_dir = resolve_job_dir(job_dir)
    settings = settings or job_settings(job_dir)
    with open_ledger(job_dir) as ledger:
        job = ledger.job()
        if job is None:
            raise OptionError(f"{job_dir}: the job was never started")
    spec = JobSpec((), job.output_root, Pipeline.from_spec(job.spec), settings)
    return run(spec, job_dir=job_dir, retry_failed=True, **kwargs)


@contextmanager
def _workers_started_early(settings: RunSettings, pipeline: Pipeline,
                           worker_storage: WorkerStorage) -> Iterator[None]:
    """The local engine's worker processes start now, their imports overlapping the job's set-up (listing and
    probing inputs, opening the ledger); those its pool did not take stop at the end."""
    if settings.engine == "local":
        start_workers_early(settings.options, pipeline, worker_storage)
    else:
        stop_early()  # started for a local run that turned out to run on another engine (a plan's)
    try:
        yield
    finally:
        stop_early()


@contextmanager
def _stop_on_signals(scheduler: Scheduler, *, enabled: bool) -> Iterator[None]:
    """SIGINT and SIGTERM stop the job gracefully; a second SIGINT (Ctrl-C again) stops it now."""
    if not enabled:
        yield
        return
    interrupts = 0

    def handle(signum: int, _frame: object) -> None:
        nonlocal interrupts
        interrupts += signum == signal.SIGINT
        scheduler.request_stop(now=interrupts > 1)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
