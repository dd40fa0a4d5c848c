"""A preemption notice during a real job: `framefleet run` watches the node's notices (a fake Azure metadata
server on loopback, tests/fake_metadata.py), claims nothing more, lets the segments that fit before the
deadline finish, gives the others back as `preempted` and ends with exit code 75; running the same command
again finishes the job frame-exact, even with --max-attempts 1.

Clips are 64x48, 96 frames at 24 fps with a keyframe every second, split in 1 s segments of 24 frames;
`SlowOp` makes a segment take a predictable while (delay per batch of 2 frames).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import media_checks
import pytest
from fake_metadata import FakeMetadataServer, azure_event, refused_endpoint
from job_ops import SlowOp

from framefleet.engines.local import LocalPool
from framefleet.engines.preemption import (
    InFlight,
    PreemptionPolicy,
    seconds_needed,
    seconds_to_cut,
    watch_notices,
)
from framefleet.jobs.directory import open_ledger
from framefleet.jobs.reads import LedgerReads
from framefleet.jobs.run import PREEMPTED_EXIT_CODE, JobResult, run
from framefleet.jobs.spec import JobSpec
from framefleet.jobs.view import job_status
from framefleet.ops.style import StyleTransferOp
from framefleet.pipeline import Pipeline
from framefleet.processing.streaming import process_video
from framefleet.settings import EngineOptions, RetryPolicy, RunSettings

pytestmark = pytest.mark.timeout(120)
ONE_ATTEMPT = RetryPolicy(max_attempts=1, max_crashes=1, backoff_seconds=0.05)


@pytest.fixture(scope="module")
def clip(clip_factory) -> Path:
    return clip_factory("preempt.mp4", width=64, height=48, frames=96, gop=24, bframes=0)


@pytest.fixture
def azure(monkeypatch):
    """A fake Azure metadata service, the only notice source the job watches, polled every 0.1 s."""
    with FakeMetadataServer("azure", vm_name="vm-a") as server:
        monkeypatch.setenv("FRAMEFLEET_SPOT_SOURCES", "azure")
        monkeypatch.setenv("FRAMEFLEET_SPOT_AZURE_URL", server.url)
        monkeypatch.setenv("FRAMEFLEET_SPOT_AZURE_POLL_SECONDS", "0.1")
        yield server


def slow(delay: float) -> Pipeline:
    return Pipeline(ops=(SlowOp(batch_size=2, delay=delay),), segment_seconds=1.0)


def running_segments(job_dir: Path) -> list[dict]:
    """Segments in flight now, with their attempts' start."""
    if not (job_dir / "ledger.sqlite").exists():
        return []
    with open_ledger(job_dir) as ledger:
        return [dict(row) for row in ledger.query(
            "SELECT t.id, a.started FROM tasks t JOIN attempts a ON a.id = t.lease_id "
            "WHERE t.kind = 'segment' AND t.state = 'running'")]


class JobThread(threading.Thread):
    """`run` in a thread, as the CLI would run it (the test's thread plays the cloud)."""

    def __init__(self, spec: JobSpec, job_dir: Path) -> None:
        super().__init__(daemon=True)
        self.spec, self.job_dir = spec, job_dir
        self.result: JobResult | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = run(self.spec, job_dir=self.job_dir)
        except BaseException as error:  # noqa: BLE001 - re-raised by the test
            self.error = error

    def finish(self, timeout: float = 60.0) -> JobResult:
        self.join(timeout)
        assert not self.is_alive(), "the run did not end"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def wait_for(condition, job: JobThread | subprocess.Popen, timeout: float = 30.0, what: str = "") -> None:
    """Wait until `condition` holds while `job` runs; a job that ends first fails the test with its error."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        if isinstance(job, subprocess.Popen) and job.poll() is not None:
            pytest.fail(f"the job ended before {what}: {job.communicate()}")
        if isinstance(job, JobThread) and not job.is_alive():
            pytest.fail(f"the job ended before {what}: {job.finish()}")
        time.sleep(0.05)


def attempts(job_dir: Path) -> list[dict]:
    with open_ledger(job_dir) as ledger:
        return LedgerReads(ledger).attempts()


def start(tmp_path: Path, clip: Path, pipeline: Pipeline, settings: RunSettings) -> tuple[JobThread, Path, Path]:
    (tmp_path / "in").mkdir(exist_ok=True)
    source = tmp_path / "in" / "clip.mp4"
    source.write_bytes(clip.read_bytes())
    out, job_dir = tmp_path / "out", tmp_path / "out" / ".framefleet-job"
    job = JobThread(JobSpec([str(tmp_path / "in")], str(out), pipeline, settings), job_dir)
    job.start()
    return job, source, out / "clip.mp4"


def test_a_notice_mid_job_gives_the_segments_that_cannot_finish_back_and_a_rerun_finishes_frame_exact(
        tmp_path, clip, azure):
    settings = RunSettings(options=EngineOptions(workers=2), retry=ONE_ATTEMPT)
    job, source, output = start(tmp_path, clip, slow(0.25), settings)  # 24 frames: about 3 s a segment
    job_dir = Path(job.job_dir)
    wait_for(lambda: len(running_segments(job_dir)) == 2, job, what="two segments in flight")
    time.sleep(0.8)  # some frames measured: each needs more than 2 s yet, beyond the notice's 1.5 s
    noticed = time.time()
    azure.set_azure_events(azure_event("evict-1", noticed + 1.5))
    result = job.finish()
    assert result.exit_code == PREEMPTED_EXIT_CODE == 75
    assert result.preempted == 2 and not output.exists()
    given_back = [a for a in attempts(job_dir) if a["outcome"] == "preempted"]
    assert len(given_back) == 2 and {a["error_type"] for a in given_back} == {"Preempted"}
    assert all("azure preempt notice" in a["message"] for a in given_back)
    seconds = max(a["ended"] for a in given_back) - noticed
    print(f"notice to leases given back: {seconds:.2f} s")  # the poll (0.1 s), the scheduler's turn, the kills
    assert seconds < 1.5  # before the deadline
    assert azure.acknowledged == ["evict-1"]  # once the leases were given back
    with open_ledger(job_dir) as ledger:
        losses = LedgerReads(ledger).losses()
        assert (losses.preempted, losses.infra_losses, losses.input_failures, losses.crashes) == (2, 0, 0, 0)
        assert ledger.query("SELECT COUNT(*) FROM tasks WHERE state = 'running'").fetchone()[0] == 0
    state = job_status(job_dir)  # framefleet status, and its --json
    assert (state.preempted, state.infra_losses, state.to_dict()["preempted"]) == (2, 0, 2)
    assert "2 given back on a preemption notice" in dict(state.rows())["losses"]

    azure.set_azure_events()  # the same command on a new node: no notice there
    again = run(JobSpec([str(tmp_path / "in")], str(tmp_path / "out"), slow(0.25), settings), job_dir=job_dir)
    assert again.exit_code == 0 and again.counts["done"] == 1 and again.preempted is None
    assert media_checks.video_time_base(output) == media_checks.video_time_base(source)
    assert media_checks.decoded_pts(output) == media_checks.decoded_pts(source)


LONG_CLIP_FRAMES = 192


@pytest.fixture(scope="module")
def long_clip(clip_factory) -> Path:
    """192 frames at 24 fps with B-frames and audio: with 4 s segments, 2 of 96 frames."""
    return clip_factory("preempt-long.mp4", width=64, height=48, frames=LONG_CLIP_FRAMES, gop=24, bframes=2,
                        audio=("aac",))


def segment_rows(job_dir: Path) -> list[dict]:
    with open_ledger(job_dir) as ledger:
        return [dict(row) for row in ledger.query(
            "SELECT seq, state, start_pts, end_pts, result FROM tasks WHERE kind = 'segment' ORDER BY seq")]


def frames_processed(tally: Path) -> int:
    """Frames the ops saw, in every worker (`SlowOp.tally_dir`)."""
    return sum(int(line) for path in tally.iterdir() for line in path.read_text().split())


def cut_then_rerun(tmp_path: Path, clip: Path, azure: FakeMetadataServer, pipeline: Pipeline,
                   settings: RunSettings, tally: Path) -> tuple[JobResult, list[dict], Path, Path]:
    """Run `pipeline` (2 segments of 96 frames, its `SlowOp` at 10 fps at most, counting into `tally`) and send
    a notice of 6 s once the ops have seen 16 frames: the other 80 need 8 s or more, a cut (16 frames) about
    3 s. The trigger is the frames processed, not the time, so a loaded machine cannot move the segment past
    the point where it would fit. Then run the same command again without a notice. Returns the first run's
    result, its segment rows, the source and the output."""
    job, source, output = start(tmp_path, clip, pipeline, settings)
    job_dir = Path(job.job_dir)
    wait_for(lambda: frames_processed(tally) >= 16, job, what="16 frames processed")
    noticed = time.time()
    azure.set_azure_events(azure_event("evict-cut", noticed + 6))
    result = job.finish()
    assert result.exit_code == PREEMPTED_EXIT_CODE
    assert azure.acknowledged == ["evict-cut"]
    ended = max(a["ended"] for a in attempts(job_dir))
    print(f"notice to the last attempt's end: {ended - noticed:.2f} s of 6 s")
    assert ended - noticed < 6  # before the deadline
    rows = segment_rows(job_dir)
    azure.set_azure_events()  # the same command on a new node: no notice there
    again = run(JobSpec([str(tmp_path / "in")], str(tmp_path / "out"), pipeline, settings), job_dir=job_dir)
    assert again.exit_code == 0 and again.counts["done"] == 1
    assert media_checks.video_time_base(output) == media_checks.video_time_base(source)
    assert media_checks.decoded_pts(output) == media_checks.decoded_pts(source)
    return result, rows, source, output


def assert_cut(result: JobResult, rows: list[dict], source: Path, attempts_done: list[dict]) -> int:
    """The first segment was cut at N, not given back; a new task held [N, end). Returns N."""
    assert result.preempted == 0 and result.cut_short == 1  # nothing given back
    first, second, rest = rows
    cut_at = json.loads(first["result"])["cut_at"]
    assert (first["state"], first["start_pts"], first["end_pts"]) == ("done", None, cut_at)
    assert (rest["seq"], rest["state"], rest["start_pts"], rest["end_pts"]) == (
        2, "pending", cut_at, second["start_pts"])
    assert cut_at in media_checks.decoded_pts(source)
    assert "preempted" not in [a["outcome"] for a in attempts_done]
    return cut_at


@pytest.mark.parametrize(("engine", "cuts"), [("local", True), ("local", False), ("inline", True)],
                         ids=["local-cut", "local-cannot-cut", "inline-cut"])
def test_a_segment_that_cannot_finish_is_cut_at_frame_n_and_nothing_it_wrote_is_processed_twice(
        tmp_path, long_clip, azure, monkeypatch, engine, cuts):
    if not cuts:  # a pool that cannot cut: the segment is given back whole, as before cuts
        monkeypatch.setattr(LocalPool, "cut", lambda self, worker: False)
    tally = tmp_path / "tally"
    tally.mkdir()
    pipeline = Pipeline(ops=(SlowOp(batch_size=2, delay=0.2, tally_dir=str(tally)),), segment_seconds=4.0)
    settings = RunSettings(engine=engine, options=EngineOptions(workers=1), retry=ONE_ATTEMPT)
    result, rows, source, output = cut_then_rerun(tmp_path, long_clip, azure, pipeline, settings, tally)
    if cuts:
        assert_cut(result, rows, source, attempts(Path(result.job_dir)))
    else:
        assert (result.preempted, result.cut_short) == (1, 0) and [row["state"] for row in rows] == ["pending", "pending"]
    twice = frames_processed(tally) - LONG_CLIP_FRAMES
    print(f"frames processed twice: {twice} of {LONG_CLIP_FRAMES} ({engine}, {'cut' if cuts else 'given back whole'})")
    # cut: only the batches the ops ran ahead of the writer are dropped (the one in hand, the queue's 2 x sessions
    # + 1 and the decoder's next: 5 of 2 frames at most); given back: every frame the segment wrote runs again
    assert twice <= 10 if cuts else twice > 10


def test_with_temporal_bands_the_frames_after_a_cut_continue_the_blend_of_an_uncut_run(tmp_path, long_clip, azure):
    style = StyleTransferOp(style="7")
    tally = tmp_path / "tally"
    tally.mkdir()
    pipeline = Pipeline(ops=(SlowOp(batch_size=2, delay=0.2, tally_dir=str(tally)), style), segment_seconds=4.0,
                        temporal="bands")
    settings = RunSettings(options=EngineOptions(workers=1), retry=ONE_ATTEMPT)
    result, rows, source, output = cut_then_rerun(tmp_path, long_clip, azure, pipeline, settings, tally)
    cut = media_checks.decoded_pts(source).index(assert_cut(result, rows, source, attempts(Path(result.job_dir))))
    uncut, plain = tmp_path / "uncut.mp4", tmp_path / "plain.mp4"
    process_video(source, uncut, Pipeline(ops=(style,), temporal="bands"))
    process_video(source, plain, Pipeline(ops=(style,), temporal="none"))
    frames = {path: media_checks.rgb_frames(path) for path in (output, uncut, plain)}

    def differs(path: Path, indices: range) -> float:
        return sum(media_checks.mean_abs_diff(frames[path][i], frames[uncut][i]) for i in indices) / len(indices)

    after, before = range(cut, cut + 4), range(cut - 4, cut)
    print(f"frames after the cut differ from an uncut run's by {differs(output, after):.2f} levels (before it: "
          f"{differs(output, before):.2f}; each frame on its own: {differs(plain, after):.2f}); "
          f"frames processed twice: {frames_processed(tally) - LONG_CLIP_FRAMES} (pre-rolls included)")
    assert differs(output, after) < 0.5 * differs(plain, after)  # the blend carries across the cut


def test_a_segment_that_fits_before_the_deadline_finishes_instead_of_being_given_back(tmp_path, clip, azure):
    settings = RunSettings(options=EngineOptions(workers=1), retry=ONE_ATTEMPT)
    job, _, _ = start(tmp_path, clip, slow(0.1), settings)  # about 1.2 s a segment
    job_dir = Path(job.job_dir)
    wait_for(lambda: len(running_segments(job_dir)) == 1, job, what="a segment in flight")
    time.sleep(0.3)
    azure.set_azure_events(azure_event("evict-2", time.time() + 8))
    result = job.finish()
    assert result.exit_code == PREEMPTED_EXIT_CODE and result.preempted == 0  # work left, nothing given back
    outcomes = [a["outcome"] for a in attempts(job_dir)]
    assert "preempted" not in outcomes and outcomes.count("done") == 2  # the probe and the segment in flight
    assert azure.acknowledged == ["evict-2"]


def test_a_notice_already_due_gives_every_lease_back_at_once_on_the_inline_engine(tmp_path, clip, azure):
    settings = RunSettings(engine="inline", options=EngineOptions(workers=1), retry=ONE_ATTEMPT)
    job, _, _ = start(tmp_path, clip, slow(0.1), settings)
    job_dir = Path(job.job_dir)
    wait_for(lambda: len(running_segments(job_dir)) == 1, job, what="a segment in flight")
    time.sleep(1.0)  # most of the segment done: it would fit in a notice of a few seconds, not in none
    noticed = time.time()
    azure.set_azure_events(azure_event("evict-3", None, status="Started"))  # NotBefore empty: it has begun
    result = job.finish()
    assert result.exit_code == PREEMPTED_EXIT_CODE and result.preempted == 1
    given_back = [a for a in attempts(job_dir) if a["outcome"] == "preempted"]
    assert len(given_back) == 1 and "no time left" in given_back[0]["message"]
    assert given_back[0]["ended"] - noticed < 1.0


def test_absent_metadata_services_cost_a_job_nothing(tmp_path, clip, monkeypatch):
    refused = refused_endpoint()
    for cloud in ("AZURE", "AWS", "GCP"):
        monkeypatch.setenv(f"FRAMEFLEET_SPOT_{cloud}_URL", refused)
    monkeypatch.setenv("FRAMEFLEET_SPOT_SOURCES", "azure,aws,gcp")
    settings = RunSettings(engine="inline", options=EngineOptions(workers=1))
    started = time.monotonic()
    job, source, output = start(tmp_path, clip, slow(0.0), settings)
    result = job.finish()
    assert result.exit_code == 0 and result.preempted is None
    assert time.monotonic() - started < 30
    assert media_checks.decoded_pts(output) == media_checks.decoded_pts(source)


@pytest.mark.parametrize(("flight", "job_fps", "needed"), [
    (InFlight("segment", 10, 30, 2.0), 0.0, 20 / 5 * 1.25 + 1.0),  # its own fps: 5
    (InFlight("segment", 0, 30, 2.0), 10.0, 30 / 10 * 1.25 + 1.0),  # no frames yet: the job's fps
    (InFlight("segment", 0, 30, 2.0), 0.0, None),  # no speed known at all: given back
    (InFlight("segment", 5, None, 2.0), 0.0, None),  # frames unknown: given back
    (InFlight("segment", 30, 30, 2.0), 0.0, 1 / 15 * 1.25 + 1.0),  # the last frame under way
    (InFlight("join", 0, None, 2.0), 0.0, 1.0),  # probes and joins: the margin
])
def test_seconds_needed_comes_from_the_measured_fps_and_the_frames_left(flight, job_fps, needed):
    got = seconds_needed(flight, PreemptionPolicy(margin_seconds=1.0, slack=1.25), job_fps)
    assert got == (None if needed is None else pytest.approx(needed))


@pytest.mark.parametrize(("flight", "needed"), [
    (InFlight("segment", 10, 30, 2.0), 16 / 5 * 1.25 + 1.0),  # 16 frames at its own fps, 5
    (InFlight("segment", 0, 30, 2.0), None),  # nothing written yet: nothing to keep
    (InFlight("join", 0, None, 2.0), None),  # only segments are cut
])
def test_seconds_to_cut_is_a_few_frames_at_the_measured_fps(flight, needed):
    got = seconds_to_cut(flight, PreemptionPolicy(margin_seconds=1.0, slack=1.25, cut_frames=16))
    assert got == (None if needed is None else pytest.approx(needed))


def test_a_run_that_watches_no_source_starts_no_watcher():
    assert os.environ.get("FRAMEFLEET_SPOT_SOURCES") == "none"  # tests/conftest.py: hermetic by default
    with watch_notices(object(), enabled=True) as watcher:  # type: ignore[arg-type]
        assert watcher is None


@pytest.mark.parametrize(("long", "grace", "line"), [
    # 24-frame segments: ~3 s, given back in 1.5 s of grace; 96-frame ones at 10 fps, 16 frames in: 8 s left,
    # cut in 6 s of grace
    (False, "1.5", "preempted: 1 tasks given back; run the same command again to resume"),
    (True, "6", "preempted: 0 tasks given back, 1 segments cut short; run the same command again to resume"),
], ids=["given-back", "cut"])
def test_sigterm_as_a_notice_ends_the_cli_run_with_its_line_and_exit_code_75(tmp_path, clip, long_clip, long, grace,
                                                                              line):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "clip.mp4").write_bytes((long_clip if long else clip).read_bytes())
    pipeline = tmp_path / "slow.yaml"
    tally = tmp_path / "tally"
    tally.mkdir()
    pipeline.write_text("op: job_ops:SlowOp\nbatch_size: 2\n" + (
        f"delay: 0.2\nsegment_seconds: 4\ntally_dir: {tally}\n" if long else "delay: 0.25\nsegment_seconds: 1\n"))
    job_dir = tmp_path / "out" / ".framefleet-job"
    tests = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(tests), os.environ.get("PYTHONPATH")))),
           "FRAMEFLEET_SPOT_SOURCES": "sigterm", "FRAMEFLEET_SPOT_SIGTERM_GRACE_SECONDS": grace, "COLUMNS": "200"}
    command = [sys.executable, "-c", "from framefleet.cli import main; main()", "run", str(tmp_path / "in"),
               "-o", str(tmp_path / "out"), "--pipeline", str(pipeline), "--workers", "1", "--progress", "none"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        if long:  # the frames processed, not the time: a loaded machine cannot move the segment to where it fits
            wait_for(lambda: frames_processed(tally) >= 16, proc, what="16 frames processed")
        else:
            wait_for(lambda: len(running_segments(job_dir)) == 1, proc, what="a segment in flight")
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)  # Kubernetes deleting the pod
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 75, stderr
    assert line in stderr
    assert [a["outcome"] for a in attempts(job_dir)].count("preempted") == (0 if long else 1)
