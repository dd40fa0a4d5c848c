"""`JobDir`: a job directory's layout, its run lock and opening its ledger."""

from __future__ import annotations

import os

import pytest

from framefleet.errors import OptionError
from framefleet.jobs.directory import DEFAULT_JOB_DIR_NAME, LEDGER_NAME, JobBusyError, JobDir


def test_a_second_run_is_refused_while_the_first_holds_the_job(tmp_path):
    place = JobDir(tmp_path / "job")
    with place.lock():
        assert (place.path / "lock").read_text() == f"{os.getpid()}\n"  # names its holder
        with pytest.raises(JobBusyError, match="another framefleet run is using this job directory"):
            with JobDir.of(place.path).lock():
                pass
    with place.lock():  # released at the end of the run
        pass


def test_a_folder_without_a_job_is_refused_in_one_line_and_left_alone(tmp_path):
    with pytest.raises(OptionError, match=f"no framefleet job here \\(no {LEDGER_NAME}\\)"):
        JobDir(tmp_path / "nothing").open_ledger()
    assert not (tmp_path / "nothing").exists()
    with JobDir(tmp_path / "new").open_ledger(create=True) as ledger:
        assert ledger.job() is None
    assert JobDir(tmp_path / "new").started()


def test_an_output_root_stands_for_the_job_directory_inside_it(tmp_path):
    inside = JobDir(tmp_path / "out" / DEFAULT_JOB_DIR_NAME)
    assert JobDir.of(tmp_path / "out").path == tmp_path / "out"  # no job anywhere yet: the folder itself
    with inside.open_ledger(create=True):
        pass
    assert JobDir.of(tmp_path / "out") == inside
    assert inside.parts == inside.path / "parts"
