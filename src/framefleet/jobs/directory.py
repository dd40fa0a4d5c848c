"""`JobDir`: where a job keeps its state, and opening its ledger.

The job directory holds `ledger.sqlite` (the state of every item, task and attempt, and the job's stored
settings), `parts/` (segments waiting to be joined, and outputs staged for upload to an object store)
and `lock` (held while a run is active, so two runs never share a job). It is always local: inside a
local output root by default, or under the user's cache folder for an object-store output. Every reader
of a job (status, failures, records, the report, the service) finds it here.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from framefleet.errors import FramefleetError, OptionError, OutputError, job_disk_full
from framefleet.files import storage
from framefleet.files.lock_file import hold_lock_file, is_held
from framefleet.jobs.store import Ledger
from framefleet.settings import RetryPolicy
from framefleet.util.cache import cache_dir

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

    def open_ledger(self, retry: RetryPolicy = RetryPolicy(), *, create: bool = False) -> Ledger:
        """The job's ledger, to use as a context manager; `create` makes the folder and the ledger of a new
        job, else a folder without one is refused."""
        if create:
            self.path.mkdir(parents=True, exist_ok=True)
        elif not self.started():
            raise OptionError(f"{self.path}: no framefleet job here (no {LEDGER_NAME}); give the --job-dir of a run")
        return Ledger(self.ledger_path, retry)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the job for one run (raises `JobBusyError` while another run holds it); the lock file
        names the holder's process id. Makes the folder of a new job."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot create the job directory ({exc.strerror or exc})") from None
        with hold_lock_file(self.path / "lock", disk_full=job_disk_full(self.path),
                            busy=JobBusyError(f"{self.path}: another framefleet run is using this job directory")):
            yield

    def held(self) -> bool:
        """Whether a run holds the job now (`lock`)."""
        return is_held(self.path / "lock")


def open_ledger(job_dir: str | os.PathLike[str], retry: RetryPolicy = RetryPolicy()) -> Ledger:
    """The ledger of an existing job (`JobDir.open_ledger`); an object-store output URI stands for its
    default job directory."""
    return JobDir.of(job_dir).open_ledger(retry)
