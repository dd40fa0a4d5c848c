"""What the CLI says is what happened (issue 30): stops, resumes, retries, mistakes and overwrites.

Each test failed before its fix: a stop with nothing left reported an interruption, a second Ctrl-C was
ignored, a stopped job's status showed running items with an ETA and counted the stop as a loss, the
live line counted a resumed job's frames from zero, a worker's warnings were written onto the terminal
under the live line, an unreadable file was tried three times, and several mistakes ended in a traceback,
in silence or in an overwritten file.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from cli_helpers import ANSI, cli, stderr_lines

from framefleet import IdentityOp
from framefleet.engines.events import EngineProgress
from framefleet.jobs.reads import LedgerReads
from framefleet.jobs.run import run
from framefleet.jobs.spec import JobSpec
from framefleet.pipeline import Pipeline
from framefleet.settings import EngineOptions, RetryPolicy, RunSettings

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO = TESTS_DIR.parent
JOB_CLI = [sys.executable, "-c", "from framefleet.cli import main; main()"]
TINY = dict(width=64, height=48, gop=4, bframes=0)
ONE_WORKER = RunSettings(options=EngineOptions(workers=1), retry=RetryPolicy(backoff_seconds=0.01))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), env.get("PYTHONPATH", "")) if p)
    env["COLUMNS"] = "200"
    return env


def _identity_job(src: Path, out: Path, settings: RunSettings = ONE_WORKER, **kwargs):
    return run(JobSpec([str(src)], str(out), Pipeline(ops=(IdentityOp(),)), settings), **kwargs)


def _copies(clip: Path, folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copyfile(clip, folder / f"v{i}.mp4")) for i in range(count)]


def _attempts(job_dir: Path) -> list[tuple[str | None, str | None]]:
    with sqlite3.connect(job_dir / "ledger.sqlite") as db:
        return db.execute("SELECT outcome, error_type FROM attempts ORDER BY id").fetchall()


# -- stopping ------------------------------------------------------------------------------------------


def test_a_stop_when_nothing_is_left_reports_a_finished_job(clip_factory, tmp_path):
    clip = clip_factory("truth-12.mp4", frames=12, **TINY)
    src, out = tmp_path / "in", tmp_path / "out"
    _copies(clip, src, 2)
    assert _identity_job(src, out).exit_code == 0
    stop = threading.Event()
    stop.set()  # Ctrl-C as the run starts: nothing is left to do, so nothing is interrupted
    again = _identity_job(src, out, stop=stop)
    assert (again.interrupted, again.exit_code, again.counts["done"]) == (False, 0, 2)


def _running_attempt(job_dir: Path) -> bool:
    try:
        return any(outcome is None for outcome, _ in _attempts(job_dir))
    except sqlite3.Error:
        return False


def test_a_second_ctrl_c_stops_at_once_and_status_says_stopped_not_lost(clip_factory, tmp_path):
    clip = clip_factory("truth-40.mp4", frames=40, **TINY)
    src, out, job = tmp_path / "in", tmp_path / "out", tmp_path / "job"
    _copies(clip, src, 2)
    pipeline = tmp_path / "slow.yaml"
    pipeline.write_text("op: job_ops:SlowOp\nbatch_size: 2\ndelay: 1.0\n")  # a segment takes about 20 s
    command = [*JOB_CLI, "run", str(src), "-o", str(out), "--pipeline", str(pipeline), "--workers", "1",
               "--job-dir", str(job)]
    proc = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not _running_attempt(job) or not any(error is None and outcome is None for outcome, error in
                                                   _attempts(job)[1:]):  # the probe is done, a segment runs
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        time.sleep(1.0)
        asked = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=25)
        took = time.monotonic() - asked
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert took < 8, f"the second Ctrl-C waited {took:.1f} s (the grace period is 30 s)"
    assert "Ctrl-C again to stop now" in stderr and "stopping now" in stderr
    assert ("interrupted", "Interrupted") in _attempts(job)

    status = cli("status", job, "--json")
    state = json.loads(ANSI.sub("", status.stdout))
    assert (state["running"], state["eta_seconds"], state["infra_losses"], state["stopped"]) == (False, None, 0, 1)
    text = ANSI.sub("", cli("status", job).stdout)
    assert "stopped: run the same command again to resume" in text
    assert " running," not in text and "1 given up on a stop request" in text


# -- what a run reports ---------------------------------------------------------------------------------


def test_a_resumed_run_counts_the_frames_earlier_runs_finished(clip_factory, tmp_path):
    clip = clip_factory("truth-12.mp4", frames=12, **TINY)
    src, out = tmp_path / "in", tmp_path / "out"
    _copies(clip, src, 2)
    assert _identity_job(src, out).exit_code == 0
    shutil.copyfile(clip, src / "v2.mp4")
    reports: list[EngineProgress] = []
    resumed = _identity_job(src, out, on_progress=lambda p: reports.append(EngineProgress(**vars(p))))
    assert resumed.counts["done"] == 3 and reports
    assert {p.frames_before for p in reports} == {24}  # the two finished videos, not counted from zero
    last = reports[-1]
    assert last.frames_before + last.frames <= last.frames_expected == 36


def test_frames_of_items_not_probed_yet_are_estimated_from_their_size(tmp_path):
    from framefleet.jobs.directory import JobDir

    with JobDir(tmp_path / "job").open_ledger(create=True) as ledger:
        ledger.add_items([("a", "a.mp4", 1000, "1", "out/a.mp4"), ("b", "b.mp4", 3000, "1", "out/b.mp4")])
        assert LedgerReads(ledger).frames_estimate() == (0, 2)  # nothing probed: nothing to estimate from
        ledger._db.execute("UPDATE items SET frames = 100 WHERE uri = 'a'")
        assert LedgerReads(ledger).frames_estimate() == (400, 1)  # b: 3000 bytes at a's 0.1 frames a byte
        ledger._db.execute("UPDATE items SET frames = 250 WHERE uri = 'b'")
        assert LedgerReads(ledger).frames_estimate() == (350, 0)


def test_a_workers_warning_reaches_the_jobs_own_log(clip_factory, tmp_path, caplog):
    from job_ops import WarnOp

    clip = clip_factory("truth-12.mp4", frames=12, **TINY)
    src = tmp_path / "in"
    _copies(clip, src, 1)
    with caplog.at_level(logging.WARNING):
        result = run(JobSpec([str(src)], str(tmp_path / "out"), Pipeline(ops=(WarnOp(message="from the worker"),)),
                             ONE_WORKER))
    assert result.exit_code == 0
    # handled by this process's logging (printed above the live line, redacted), not written by the worker
    assert [r.getMessage() for r in caplog.records if r.name == "job_ops.warn"] == ["from the worker"]


def test_an_unreadable_file_fails_at_its_first_attempt_and_is_named_once(clip_factory, tmp_path):
    clip = clip_factory("truth-12.mp4", frames=12, **TINY)
    src, out = tmp_path / "in", tmp_path / "out"
    _copies(clip, src, 1)
    (src / "noise.mp4").write_bytes(os.urandom(50_000))
    (src / "cut.mp4").write_bytes(clip.read_bytes()[:600])
    result = cli("run", src, "-o", out, "--op", "identity", "--workers", "1")
    assert result.exit_code == 3, result.stderr
    failed = [line for line in stderr_lines(result) if line.startswith("failed ")]
    assert len(failed) == 2
    for line in failed:
        name = line.split()[1].rstrip(":")
        assert line.count(name) == 1, line  # "failed X: corrupt video ...", not "failed X: X: corrupt video"
    attempts = _attempts(out / ".framefleet-job")
    assert sorted(error for _, error in attempts if error) == ["CorruptVideoError", "CorruptVideoError"]


# -- mistakes: one line, exit 2, nothing written -------------------------------------------------------


def _one_error_line(result, *fragments: str) -> str:
    lines = stderr_lines(result)
    assert result.exit_code == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and all(f in lines[0] for f in fragments), lines[0]
    return lines[0]


def test_a_run_that_finds_no_videos_says_what_it_found_and_makes_nothing(clip_factory, tmp_path):
    empty, texts, out = tmp_path / "empty", tmp_path / "texts", tmp_path / "out"
    empty.mkdir()
    texts.mkdir()
    (texts / "notes.txt").write_text("not a video")
    _one_error_line(cli("run", empty, "-o", out), "no videos to process in", "found no files")
    _one_error_line(cli("run", texts, "-o", out), "1 file that is not a video (notes.txt)")
    assert not out.exists()
    inside = tmp_path / "inside"
    _copies(clip_factory("truth-12.mp4", frames=12, **TINY), inside, 2)
    _one_error_line(cli("run", inside, "-o", inside), "2 videos inside the output folder")
    assert not (inside / ".framefleet-job").exists()


def test_run_with_an_output_that_is_a_file_or_cannot_be_made_is_one_line(clip_factory, tmp_path):
    clip = clip_factory("truth-12.mp4", frames=12, **TINY)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    _one_error_line(cli("run", clip, "-o", a_file), "is a file; the output of a job is a folder")
    _one_error_line(cli("run", clip, "-o", a_file / "below"), "cannot create the output folder")


def test_example_refuses_a_container_that_cannot_hold_it_and_an_existing_file(tmp_path):
    _one_error_line(cli("example", tmp_path / "out.gif", "--seconds", "0.2"), "out.gif", "name it .mp4")
    assert not (tmp_path / "out.gif").exists()
    clip = tmp_path / "e.mp4"
    assert cli("example", clip, "--seconds", "0.2", "--size", "64x48").exit_code == 0
    before = clip.read_bytes()
    _one_error_line(cli("example", clip, "--seconds", "0.4", "--size", "64x48"), "already exists", "--overwrite")
    assert clip.read_bytes() == before
    assert cli("example", clip, "--seconds", "0.4", "--size", "64x48", "--overwrite").exit_code == 0
    assert clip.read_bytes() != before


def test_report_styles_plan_and_records_never_overwrite_without_asking(clip_factory, tmp_path):
    clip = clip_factory("truth-12.mp4", frames=12, **TINY)
    out = tmp_path / "out"
    assert _identity_job(clip, out).exit_code == 0
    for command in (["report", out, "-o"], ["styles", clip, "-o"], ["plan", clip, "--op", "identity", "-o"],
                    ["records", out, "-o"]):
        existing = tmp_path / f"{command[0]}.kept"
        existing.write_text("mine")
        _one_error_line(cli(*command, existing), "already exists; pass --overwrite")
        assert existing.read_text() == "mine"
    assert cli("report", out, "-o", tmp_path / "report.kept", "--overwrite").exit_code == 0
    assert "<html" in (tmp_path / "report.kept").read_text()


def test_stylize_to_a_folder_says_it_is_a_folder(clip_factory, tmp_path):
    clip = clip_factory("truth-12.mp4", frames=12, **TINY)
    _one_error_line(cli("stylize", clip, "-o", f"{tmp_path / 'styled'}/"), "is a folder; give a file name")


def test_help_shows_no_value_for_flags():
    text = ANSI.sub("", cli("--help").stdout + cli("run", "--help").stdout + cli("stylize", "--help").stdout)
    assert "--debug" in text and "--overwrite" in text
    assert "<bool>" not in text


def test_the_frame_counter_shows_a_rate():
    from framefleet.cli.progress import frame_counter, progress_bar

    with progress_bar(disable=True) as bar:
        advance = frame_counter(bar, "clip", 10)
        time.sleep(0.05)
        advance(5)
        assert bar.tasks[0].completed == 5 and bar.tasks[0].fields["fps"] > 0


# -- the README's tour ---------------------------------------------------------------------------------


def test_the_tour_names_only_files_that_exist_and_calls_that_work():
    readme = (REPO / "README.md").read_text()
    assert "to_pandas" not in readme  # pandas is not a dependency
    assert "--pipeline examples/style.yaml" in readme
    pipeline = Pipeline.from_yaml(REPO / "examples" / "style.yaml")
    assert type(pipeline.ops[0]).__name__ == "StyleTransferOp" and pipeline.temporal == "blend"


def _framefleet(*args: object) -> subprocess.CompletedProcess:
    """The real command in a subprocess, as a shell runs it (its usage errors are one line there)."""
    return subprocess.run([*JOB_CLI, *(str(a) for a in args)], env=_env(), capture_output=True, text=True,
                          timeout=120, check=False)


def test_serve_on_a_port_that_cannot_exist_is_one_line():
    done = _framefleet("serve", "--port", "99999")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: ") and "--port" in done.stderr


def test_flicker_with_a_wrong_path_is_one_line_and_nothing_else(clip_factory, tmp_path):
    clip = clip_factory("truth-12.mp4", frames=12, **TINY)
    for extra in ([tmp_path / "nope.mp4"], [clip, "--reference", tmp_path / "nope.mp4"]):
        done = _framefleet("flicker", clip, *extra)
        # exactly the error line: no blank line left by a progress display started before the check
        expected = f"error: {tmp_path / 'nope.mp4'}: no such file\n"
        assert (done.returncode, done.stderr) == (2, expected), done.stderr
