"""The service at run time: a job thread per running job, the watchers, and what the API reads and does.

Watch jobs are standing jobs: their scheduler keeps running (workers released when idle) while the
watcher adds items. Submitted jobs are batch jobs, started in submission order, at most `max_jobs` at a
time. Every job's state lives in its ledger and the registry, so a service that is stopped or killed and
started again resumes each job where it was: only tasks in flight are redone.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from framefleet.engines.events import EngineProgress
from framefleet.errors import DiskFullError, FramefleetError
from framefleet.files.lock_file import hold_lock_file
from framefleet.jobs import run as job
from framefleet.jobs.directory import JobDir
from framefleet.jobs.spec import JobSpec
from framefleet.jobs.view import JobStatus, JobView
from framefleet.pipeline import Pipeline
from framefleet.service.config import ServiceConfig, check_allowed, check_submitted_pipeline
from framefleet.service.console import ItemLines
from framefleet.service.registry import Registry, ServiceJob
from framefleet.service.watcher import Watcher, WatchRule
from framefleet.util.redact import redact

log = logging.getLogger(__name__)
T = TypeVar("T")

LIVE_FPS_SECONDS = 30.0
"""Window of the live frame rate a running job reports."""
WATCH_RESTART_SECONDS = 30.0
"""How long a watch job that stopped on an error waits before it starts again."""


class UnknownJobError(FramefleetError):
    """No job has this id."""


class JobConflictError(FramefleetError):
    """The job is not in a state that allows the request."""


class StateBusyError(FramefleetError):
    """Another service holds the state folder."""


@contextmanager
def lock_state_dir(state_dir: Path) -> Iterator[None]:
    """Hold the state folder for one service (`STATE/lock`, made with the folder if missing): raises
    `StateBusyError` at once while another service holds it, before anything in it is read or written."""
    state_dir.mkdir(parents=True, exist_ok=True)
    busy = StateBusyError(f"{state_dir}: another framefleet serve is using this state folder (its process id is "
                          f"in {state_dir / 'lock'}); stop that one, or give this one another --state-dir")
    full = DiskFullError(f"{state_dir}: no space left on the disk that holds the service's state; free some "
                         "(or give --state-dir on another disk) and start it again")
    with hold_lock_file(state_dir / "lock", busy=busy, disk_full=full):
        yield


@dataclass(frozen=True)
class LiveProgress:
    """What a running job's scheduler reports, with the frame rate over the last `LIVE_FPS_SECONDS`."""

    workers: int
    busy: int
    fps: float
    frames_this_run: int


@dataclass(frozen=True)
class JobProgress:
    """A job's progress as the API shows it (`Service.progress`)."""

    status: JobStatus
    """What its ledger says (`JobStatus.not_started` before its first run)."""
    live: LiveProgress | None
    """Its scheduler's figures while it runs."""
    watcher: Watcher | None
    """A watch job's watcher."""


class JobRunner:
    """Runs one job in its own thread: a submitted job until its items are done, a watch job until stopped."""

    def __init__(self, record: ServiceJob, job_dir: JobDir, service: Service) -> None:
        self.record = record
        self.job_dir = job_dir
        self.watcher: Watcher | None = None
        self.ended_at: float | None = None
        self._service = service
        self._stop = threading.Event()
        self._cancelled = False
        self._progress = EngineProgress()
        self._samples: deque[tuple[float, int]] = deque(maxlen=512)
        label = record.name if record.kind == "watch" else record.id
        self._lines = ItemLines(label, job_dir, service.say) if service.say is not None else None
        self._thread = threading.Thread(target=self._main, name=f"framefleet-{record.id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, *, cancel: bool = False) -> None:
        """Ask the job to stop (gracefully: running tasks get the grace period); `cancel` ends it for good."""
        self._cancelled = self._cancelled or cancel
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def live(self) -> LiveProgress:
        now = time.monotonic()
        recent = [(t, f) for t, f in self._samples if t >= now - LIVE_FPS_SECONDS]
        fps = 0.0
        if len(recent) >= 2 and recent[-1][0] > recent[0][0]:
            fps = (recent[-1][1] - recent[0][1]) / (recent[-1][0] - recent[0][0])
        progress = self._progress
        return LiveProgress(workers=progress.workers, busy=progress.busy, fps=fps, frames_this_run=progress.frames)

    # -- the job thread ----------------------------------------------------------------------------

    def _main(self) -> None:
        registry, job_id = self._service.registry, self.record.id
        registry.set_state(job_id, "running", unless=("cancelled",))
        try:
            if self.record.kind == "watch":
                self._run_watch(Pipeline.from_options(self.record.spec["pipeline"], source=f"job {job_id}"))
            else:
                self._run_submitted(self._submitted_spec())
        except FramefleetError as exc:
            registry.set_state(job_id, "error", redact(str(exc)), unless=("cancelled",))
            log.warning("job %s stopped: %s", job_id, redact(str(exc)))
            return
        except Exception as exc:  # a bug in one job must not take the service down
            registry.set_state(job_id, "error", redact(f"internal error: {type(exc).__name__}: {exc}"),
                               unless=("cancelled",))
            log.exception("job %s failed", job_id)
            return
        finally:
            self.ended_at = time.monotonic()
            if self._lines is not None:
                self._lines.close()
        if self._cancelled:
            registry.set_state(job_id, "cancelled")
        elif not self._stop.is_set():
            registry.set_state(job_id, "finished", unless=("cancelled",))
        # else: the service is stopping; the job stays running in the registry and resumes at the next start

    def _run(self, spec: JobSpec, *, standing: bool) -> job.JobResult:
        accept = None if standing else self._allowed
        result = job.run(spec, job_dir=self.job_dir.path, on_progress=self._on_progress, standing=standing,
                         stop=self._stop, accept=accept)
        self._say_items(now=True)  # what the run did since its last progress report
        return result

    def _submitted_spec(self) -> JobSpec:
        """The job as submitted, with the settings fixed then, so a restart of the service with another
        configuration, or a retry, never changes how it runs. A job recorded before the registry kept
        `JobSpec`s runs with the settings its first run stored, else the service's."""
        spec = self.record.spec
        if "job" in spec:
            return JobSpec.from_dict(spec["job"])
        current = self._service.config.run
        settings = job.job_settings(self.job_dir.path, default=current) if self.job_dir.started() else current
        pipeline = Pipeline.from_options(spec["pipeline"], source=f"job {self.record.id}")
        return JobSpec(spec["inputs"], spec["output"], pipeline, settings)

    def _allowed(self, uri: str) -> bool:
        """Whether a listed video of a submitted job lies inside the allowed prefixes (after resolving links)."""
        try:
            check_allowed(uri, self._service.config.allow, what="input")
        except FramefleetError:
            log.warning("job %s: skipping %s: outside the allowed prefixes", self.record.id, redact(uri))
            return False
        return True

    def _run_submitted(self, spec: JobSpec) -> None:
        while not self._stop.is_set():
            inputs = [] if self._has_items() else list(spec.inputs)  # listed once, by the first run
            self._run(replace(spec, inputs=inputs), standing=False)
            if self._unfinished() == 0:  # a retry may have added work while the run was ending
                return

    def _run_watch(self, pipeline: Pipeline) -> None:
        rule = WatchRule.from_spec(self.record.name, self.record.spec)
        feed = self.job_dir.open_ledger(create=True)
        self.watcher = Watcher(rule, feed, job.canonical_output_root(rule.output))
        watching = threading.Thread(target=self.watcher.run, args=(self._stop,), name=f"watch-{rule.name}",
                                    daemon=True)
        watching.start()
        try:
            self._run(JobSpec([], rule.output, pipeline, self._service.config.run), standing=True)
        finally:
            self._stop.set()  # the scheduler ended (a stop, or an error): the watcher ends with it
            watching.join()
            feed.close()

    def _on_progress(self, progress: EngineProgress) -> None:
        self._progress = replace(progress, counts=dict(progress.counts))
        self._samples.append((time.monotonic(), progress.frames))
        self._say_items()

    def _say_items(self, *, now: bool = False) -> None:
        """The console lines of the files taken, done and failed since the last look; never stops the job."""
        if self._lines is None:
            return
        try:
            self._lines.look(now=now)
        except Exception:
            log.exception("job %s: cannot read its items for the console", self.record.id)

    def _has_items(self) -> bool:
        if not self.job_dir.started():
            return False
        with self.job_dir.open_ledger() as ledger:
            return bool(ledger.items())

    def _unfinished(self) -> int:
        with self.job_dir.open_ledger() as ledger:
            return ledger.unfinished()


class Service:
    """The jobs of one `framefleet serve`: started, supervised, stopped, and read for the API."""

    def __init__(self, config: ServiceConfig, say: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.say = say
        """Where a line per file taken, done and failed goes (`framefleet serve`'s console); None: nowhere."""
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.registry = Registry(config.state_dir / "registry.sqlite")
        self.stopping = False
        self.started = time.time()
        self._runners: dict[str, JobRunner] = {}
        self._watch_ids: set[str] = set()
        self._restart_at: dict[str, float] = {}
        """Watch jobs that stopped on an error -> when to start them again."""
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="framefleet-dispatch", daemon=True)

    # -- life cycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Register the watch rules, resume the jobs a previous run left active, and start dispatching.
        Once: a second call does nothing (`framefleet serve` starts the service before its server)."""
        if self._dispatcher.ident is not None:
            return
        if self.config.run.engine == "ray":
            from framefleet.engines.ray import connect

            connect(self.config.run.ray)
        self._watch_ids = {self._register_watch(rule).id for rule in self.config.watch}
        for record in self.registry.active(queued_limit=0):
            if record.kind == "watch" and record.id not in self._watch_ids:
                self.registry.set_state(record.id, "finished", "its watch rule is no longer configured")
        self._dispatcher.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop every job gracefully (they stay active in the registry and resume at the next start)."""
        self.stopping = True
        self._wake.set()
        with self._lock:
            runners = list(self._runners.values())
        for runner in runners:
            runner.stop()
        grace = self.config.run.options.grace_seconds + 15 if timeout is None else timeout
        deadline = time.monotonic() + grace
        for runner in runners:
            runner.join(max(0.0, deadline - time.monotonic()))
        self._dispatcher.join(5)
        if not any(runner.alive for runner in runners):  # a job thread past the deadline may still write
            self.registry.close()

    # -- requests ----------------------------------------------------------------------------------

    def submit(self, inputs: list[str], output: str, pipeline: dict[str, Any], *, name: str | None = None,
               idempotency_key: str | None = None) -> tuple[ServiceJob, bool]:
        """Check and record a job (its inputs and output inside the allowed prefixes); it starts when a slot
        is free. Returns the job and whether it is new (False: the idempotency key was seen before)."""
        allow = self.config.allow
        inputs = [check_allowed(uri, allow, what="input") for uri in inputs]
        output = check_allowed(output, allow, what="output")
        pipeline = check_submitted_pipeline(pipeline, self.config)
        spec = JobSpec(inputs, output, Pipeline.from_options(pipeline, source="pipeline"), self.config.run)
        record, new = self.registry.add("submitted", name or output.rsplit("/", 1)[-1] or output,
                                        {"job": spec.to_dict(), "pipeline": pipeline},
                                        idempotency_key=idempotency_key)
        self._wake.set()
        return record, new

    def cancel(self, job_id: str) -> ServiceJob:
        record = self.job(job_id)
        if record.kind == "watch":
            raise JobConflictError(f"job {job_id} follows a watch rule; remove the rule from the service's "
                                   "configuration to stop it")
        if not self.registry.set_state(job_id, "cancelled", unless=("finished", "cancelled", "error")):
            raise JobConflictError(f"job {job_id} is {self.job(job_id).state}; only queued or running jobs "
                                   "can be cancelled")
        with self._lock:
            runner = self._runners.get(job_id)
        if runner is not None:
            runner.stop(cancel=True)
        return self.job(job_id)

    def retry(self, job_id: str) -> int:
        """Put the job's failed items back to pending; a job that had ended runs again. Returns how many."""
        record = self.job(job_id)
        if record.state == "queued" or not self.job_dir(record).started():
            return 0
        with self.job_dir(record).open_ledger(self.config.run.retry) as ledger:
            count = ledger.retry_failed()
        if count and record.kind == "submitted":
            self.registry.set_state(job_id, "queued", unless=("queued", "running"))
            self._wake.set()
        return count

    # -- reading -----------------------------------------------------------------------------------

    def job(self, job_id: str) -> ServiceJob:
        record = self.registry.get(job_id)
        if record is None:
            raise UnknownJobError(f"no job {job_id!r}")
        return record

    def runner(self, job_id: str) -> JobRunner | None:
        with self._lock:
            return self._runners.get(job_id)

    def job_dir(self, record: ServiceJob) -> JobDir:
        return JobDir(self.config.state_dir / "jobs" / record.id)

    def read_job(self, record: ServiceJob, read: Callable[[JobView], T], default: T) -> T:
        """`read(view)` on a view of the job's ledger, or `default` while the job has none yet."""
        place = self.job_dir(record)
        if not place.started():
            return default
        with place.open_ledger(self.config.run.retry) as ledger:
            return read(JobView(ledger, place.path))

    def progress(self, record: ServiceJob) -> JobProgress:
        """The job's progress: its ledger's status, and live figures while it runs."""
        runner = self.runner(record.id)
        not_started = JobStatus.not_started(self.job_dir(record).path)
        return JobProgress(status=self.read_job(record, JobView.status, not_started),
                           live=runner.live() if runner is not None and runner.alive else None,
                           watcher=runner.watcher if runner is not None else None)

    # -- internals ---------------------------------------------------------------------------------

    def _register_watch(self, rule: WatchRule) -> ServiceJob:
        """The rule's job, running with the rule's current spec. Its id hashes the rule's identity (source,
        output, pipeline); a job recorded by an older framefleet, whose id hashed the interval too, is
        adopted when only the interval differs, so that its ledger (what it processed) goes on."""
        identity = rule.identity()
        job_id = f"watch-{rule.name}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}"
        if self.registry.get(job_id) is None:
            job_id = next((record.id for record in self.registry.named("watch", rule.name)
                           if WatchRule.from_spec(record.name, record.spec).identity() == identity), job_id)
        record, _ = self.registry.add("watch", rule.name, rule.spec(), job_id=job_id, state="running")
        if record.spec != rule.spec():
            self.registry.set_spec(record.id, rule.spec())
        if record.state != "running":
            self.registry.set_state(record.id, "running")
        return self.job(record.id)

    def _dispatch_loop(self) -> None:
        while not self.stopping:
            try:
                self._dispatch()
            except Exception:
                log.exception("dispatching jobs failed")
            self._wake.wait(0.5)
            self._wake.clear()

    def _dispatch(self) -> None:
        now = time.monotonic()
        with self._lock:
            for job_id, runner in list(self._runners.items()):
                if not runner.alive:
                    del self._runners[job_id]
                    if runner.record.kind == "watch":
                        self._restart_at[job_id] = (runner.ended_at or now) + WATCH_RESTART_SECONDS
            for job_id, when in list(self._restart_at.items()):
                if when <= now and not self.stopping:
                    del self._restart_at[job_id]
                    self.registry.set_state(job_id, "running", unless=("running",))
            running = sum(1 for r in self._runners.values() if r.record.kind == "submitted")
            for record in self.registry.active(queued_limit=max(0, self.config.max_jobs - running)):
                if self.stopping or record.id in self._runners:
                    continue
                if record.kind == "watch" and record.id not in self._watch_ids:
                    continue  # not a rule of this service's configuration (another service's, or an old one)
                if record.kind == "submitted":
                    if running >= self.config.max_jobs:
                        continue
                    running += 1
                runner = JobRunner(record, self.job_dir(record), self)
                self._runners[record.id] = runner
                runner.start()
