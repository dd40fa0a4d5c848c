"""Where a job keeps its state, and opening its ledger.

The job directory holds `ledger.sqlite` (the state of every item, task and attempt, and the job's stored
settings), `parts/` (segments waiting to be joined, and outputs staged for upload to an object store)
and `lock` (held while a run is active, so two runs never share a job). It is always local: inside a
local output root by default, or under the user's cache folder for an object-store output. Every reader
of a job (status, failures, records, the report, the service) finds it here.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from framefleet import storage
from framefleet.cache import cache_dir
from framefleet.errors import OptionError
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


def open_ledger(job_dir: str | Path, limits: Limits = Limits()) -> Ledger:
    """The ledger of an existing job (raises when the folder holds no job). An object-store output URI
    stands for its default job directory (`default_job_dir`)."""
    path = resolve_job_dir(job_dir) / LEDGER_NAME
    if not path.exists():
        raise OptionError(f"{job_dir}: no framefleet job here (no {LEDGER_NAME}); give the --job-dir of a run")
    return Ledger(path, limits)
