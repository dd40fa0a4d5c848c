"""`framefleet retry` changes nothing while another run holds the job: the failed items stay failed."""

from __future__ import annotations

from cli_helpers import cli

from framefleet.jobs.directory import JobBusyError, JobDir
from framefleet.pipeline import Pipeline
from framefleet.settings import RetryPolicy


def failed_job(path) -> JobDir:
    """A job of one video whose only attempt failed."""
    place = JobDir(path)
    with place.open_ledger(RetryPolicy(max_attempts=1), create=True) as ledger:
        pipeline = Pipeline.from_options({})
        ledger.init_job(fingerprint=pipeline.fingerprint(), spec=pipeline.spec(), version="0",
                        output_root=str(path.parent / "out"))
        ledger.add_items([("/in/a.mp4", "a.mp4", 1, "v1", "/out/a.mp4")], now=0)
        probe = ledger.claim("w", 60, now=0)
        assert ledger.fail(probe, "input_error", error_type="InputError", message="broken", now=1) == "failed"
    return place


def test_retry_while_another_run_holds_the_job_fails_busy_and_leaves_failed_items_failed(tmp_path):
    place = failed_job(tmp_path / "job")
    with place.lock():  # as a concurrent run holds it: a second open of the lock file is refused
        result = cli("retry", place.path, "--quiet", "--engine", "inline")
    assert result.exit_code != 0
    assert isinstance(result.exception, JobBusyError) or "another framefleet run" in result.stderr
    with place.open_ledger() as ledger:
        assert ledger.counts()["failed"] == 1 and ledger.counts()["pending"] == 0
        assert [item.error for item in ledger.items()] == ["broken"]
