"""`framefleet status` reads a job's ledger as any framefleet version wrote it, and its recent frame rate
is measured over the time the job has been working, not over a window longer than that."""

from __future__ import annotations

import json

from cli_helpers import cli, stdout_json

from framefleet.job_dir import JobDir
from framefleet.job_view import RUN_SETTINGS_KEY, job_status
from framefleet.ledger import Limits
from framefleet.spec import RunSettings


def job_with_settings(path, stored: dict) -> JobDir:
    """A job of one pending video whose ledger holds `stored` as its run settings."""
    place = JobDir(path)
    with place.open_ledger(Limits(), create=True) as ledger:
        ledger.add_items([("/in/a.mp4", "a.mp4", 1, "v1", "/out/a.mp4")], now=0)
        ledger.put_setting(RUN_SETTINGS_KEY, json.dumps(stored))
    return place


def test_status_reads_settings_stored_by_another_version_missing_keys_or_with_unknown_ones(tmp_path):
    stored = json.loads(RunSettings().given(engine="inline", workers=3).to_json())
    del stored["limits"]["max_attempts"]  # an older framefleet
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
