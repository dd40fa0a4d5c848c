"""`framefleet status` reads a job's ledger as any framefleet version wrote it, and its recent frame rate
is measured over the time the job has been working, not over a window longer than that."""

from __future__ import annotations

import json

import pytest
from cli_helpers import cli, stdout_json

from framefleet.jobs.directory import JobDir
from framefleet.jobs.results import ProbeResult, Segment, TaskMetrics
from framefleet.jobs.view import job_status
from framefleet.settings import RUN_SETTINGS_KEY, RetryPolicy, RunSettings


def job_with_settings(path, stored: dict) -> JobDir:
    """A job of one pending video whose ledger holds `stored` as its run settings."""
    place = JobDir(path)
    with place.open_ledger(RetryPolicy(), create=True) as ledger:
        ledger.add_items([("/in/a.mp4", "a.mp4", 1, "v1", "/out/a.mp4")], now=0)
        ledger.put_setting(RUN_SETTINGS_KEY, json.dumps(stored))
    return place


def test_status_reads_settings_stored_by_another_version_missing_keys_or_with_unknown_ones(tmp_path):
    stored = json.loads(RunSettings().given(engine="inline", workers=3).to_json())
    del stored["retry"]["max_attempts"]  # an older framefleet
    del stored["options"]["workers"]
    stored["options"]["warp_factor"] = 9  # a later one
    stored["quantum"] = {"entangled": True}
    place = job_with_settings(tmp_path / "job", stored)

    table = cli("status", place.path)
    assert table.exit_code == 0, table.stderr
    assert "inline, default workers, 3 attempts" in " ".join(table.stdout.split())
    settings = stdout_json(cli("status", place.path, "--json"))["settings"]
    assert settings == json.loads(RunSettings(engine="inline").to_json())
    assert job_status(place.path).rows()  # the API and `report` read the same status


def test_status_reads_the_retry_rules_an_earlier_version_stored_as_limits(tmp_path):
    stored = json.loads(RunSettings().given(max_attempts=5).to_json())
    stored["limits"] = stored.pop("retry")  # the part's name before RetryPolicy
    place = job_with_settings(tmp_path / "job", stored)
    assert stdout_json(cli("status", place.path, "--json"))["settings"]["retry"]["max_attempts"] == 5


def job_at(path, attempts: list[tuple[float, float, int]]) -> JobDir:
    """A job of one video (3000 frames, one segment per attempt) whose segment attempts ran from claim to
    end with these frames; the probe ran at the first claim."""
    place = JobDir(path)
    with place.open_ledger(RetryPolicy(), create=True) as ledger:
        ledger.add_items([("/in/a.mp4", "a.mp4", 1, "v1", "/out/a.mp4")], now=0)
        first = attempts[0][0]
        probe = ledger.claim("w", 60, now=first)
        bounds = [i * 10 for i in range(len(attempts))] + [None]
        ledger.complete(probe, result=ProbeResult(frames=3000, duration=100),
                        segments=[Segment(bounds[i], bounds[i + 1]) for i in range(len(attempts))], now=first)
        for claimed, ended, frames in attempts:
            task = ledger.claim("w", 600, now=claimed)
            assert task.kind == "segment" and ledger.complete(task, metrics=TaskMetrics(frames=frames), now=ended)
    return place


def test_the_recent_frame_rate_of_a_job_younger_than_the_window_is_over_its_age(tmp_path):
    place = job_at(tmp_path / "young", [(1000.0, 1030.0, 300)])  # 300 frames in its first 30 s
    assert job_status(place.path, now=1030.0).fps_recent == pytest.approx(10.0)
    assert job_status(place.path, now=1060.0).fps_recent == pytest.approx(5.0)  # 300 frames in 60 s


def test_the_recent_frame_rate_of_a_resumed_job_is_over_the_time_since_it_resumed(tmp_path):
    # a first run long ago, then a run resumed 30 s before now that finished 300 frames
    place = job_at(tmp_path / "resumed", [(0.0, 50.0, 500), (10_000.0, 10_030.0, 300)])
    assert job_status(place.path, now=10_030.0).fps_recent == pytest.approx(10.0)


def test_the_recent_frame_rate_of_a_job_older_than_the_window_is_over_the_window(tmp_path):
    place = job_at(tmp_path / "old", [(0.0, 100.0, 1000), (100.0, 200.0, 600), (200.0, 300.0, 600)])
    assert job_status(place.path, now=300.0).fps_recent == pytest.approx(1200 / 120)  # two tasks in the window
