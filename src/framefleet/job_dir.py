"""`JobDir`: where a job keeps its state, and opening its ledger.

The job directory holds `ledger.sqlite` (the state of every item, task and attempt, and the job's stored
settings), `parts/` (segments waiting to be joined, and outputs staged for upload to an object store)
and `lock` (held while a run is active, so two runs never share a job). It is always local: inside a
local output root by default, or under the user's cache folder for an object-store output. Every reader
of a job (status, failures, records, the report, the service) finds it here.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from framefleet import storage
from framefleet.cache import cache_dir
from framefleet.errors import FramefleetError, OptionError, OutputError, is_disk_full, job_disk_full
from framefleet.ledger import Ledger, Limits

LEDGER_NAME = "ledger.sqlite"
DEFAULT_JOB_DIR_NAME = ".framefleet-job"


def default_job_dir(output: str) -> Path:
    """Where a job keeps its state when --job-dir is not given: inside a local output root; for an
    object-store output, `~/.cache/framefleet/jobs/<protocol>-<name>-<hash>` (the same for the same URI)."""
    if storage.is_local(output):
        return storage.local_path(output) / DEFAULT_JOB_DIR_NAME
    uri = storage.canonical_uri(output)
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in uri.split("://", 1)[1])[-48:]
    digest = hashlib.sha256(uri.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return cache_dir("jobs") / f"{storage.protocol_of(uri)}-{name}-{digest}"


def resolve_job_dir(job_dir: str | os.PathLike[str]) -> Path:
    """`job_dir` itself, or the default job directory of an output root (a local folder holding one, or an
    object-store URI)."""
    text = os.fspath(job_dir)
    if not storage.is_local(text):
        return default_job_dir(text)
    inside = default_job_dir(text)
    return inside if not (Path(text) / LEDGER_NAME).exists() and (inside / LEDGER_NAME).exists() else Path(text)


class JobBusyError(FramefleetError):
    """Another run holds the job directory."""


@dataclass(frozen=True)
class JobDir:
    """One job directory and its layout: the ledger, the default parts folder and the run's lock."""

    path: Path

    @classmethod
    def of(cls, job_dir: str | os.PathLike[str]) -> JobDir:
        """The job directory `job_dir` names: itself, or the default one of an output root (`resolve_job_dir`)."""
        return cls(resolve_job_dir(job_dir))

    @property
    def ledger_path(self) -> Path:
        return self.path / LEDGER_NAME

    @property
    def parts(self) -> Path:
        """Where segments wait for their join unless the job names another place (`--parts-dir`)."""
        return self.path / "parts"

    def started(self) -> bool:
        """Whether a run has made the job's ledger."""
        return self.ledger_path.exists()

    def open_ledger(self, limits: Limits = Limits(), *, create: bool = False) -> Ledger:
        """The job's ledger, to use as a context manager; `create` makes the folder and the ledger of a new
        job, else a folder without one is refused."""
        if create:
            self.path.mkdir(parents=True, exist_ok=True)
        elif not self.started():
            raise OptionError(f"{self.path}: no framefleet job here (no {LEDGER_NAME}); give the --job-dir of a run")
        return Ledger(self.ledger_path, limits)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the job for one run (raises `JobBusyError` while another run holds it); the lock file
        names the holder's process id. Makes the folder of a new job."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot create the job directory ({exc.strerror or exc})") from None
        with open(self.path / "lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise JobBusyError(f"{self.path}: another framefleet run is using this job directory") from None
            try:  # unbuffered, so that closing the file has nothing left to write
                os.ftruncate(handle.fileno(), 0)
                os.pwrite(handle.fileno(), f"{os.getpid()}\n".encode(), 0)
            except OSError as exc:
                if not is_disk_full(exc):
                    raise
                raise job_disk_full(self.path) from None
            try:
                yield
            finally:
                os.ftruncate(handle.fileno(), 0)  # no process id: nobody holds the job
                fcntl.flock(handle, fcntl.LOCK_UN)

    def held(self) -> bool:
        """Whether a run holds the job now (`lock`). Tested without taking the lock where the file names no
        live process, so a status read never makes a starting run fail as busy."""
        try:
            pid = int((self.path / "lock").read_text().strip() or 0)
        except (OSError, ValueError):
            return False
        if pid <= 0 or not _alive(pid):
            return False
        with open(self.path / "lock", "a+") as handle:  # a live process id may be a reused one: ask the lock
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def open_ledger(job_dir: str | os.PathLike[str], limits: Limits = Limits()) -> Ledger:
    """The ledger of an existing job (`JobDir.open_ledger`); an object-store output URI stands for its
    default job directory."""
    return JobDir.of(job_dir).open_ledger(limits)
