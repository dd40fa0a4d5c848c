"""Jobs, `stylize` and `probe` against a real Azure Blob server (Azurite, started by the `azurite` fixture).

Inputs are uploaded with azure-storage-blob and outputs downloaded with it: framefleet's own storage code
is only on the path under test. Media is checked with PyAV (tests/media_checks.py) after download.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import media_checks
import pytest
from typer.testing import CliRunner

from framefleet.cli import app
from framefleet.jobs.directory import LEDGER_NAME
from framefleet.jobs.run import run
from framefleet.jobs.spec import JobSpec
from framefleet.pipeline import Pipeline
from framefleet.settings import EngineOptions, RetryPolicy, RunSettings
from framefleet.video.synth import ClipSpec, write_clip

pytestmark = pytest.mark.storage

TESTS_DIR = Path(__file__).resolve().parents[1]
JOB_CLI = [sys.executable, "-c", "from framefleet.cli import main; main()"]
FAST_RETRIES = RetryPolicy(backoff_seconds=0.2)
# The Azure SDK retries a refused connection for about 80 s before it gives up: a shorter outage is
# bridged by those retries and costs no attempt. This one outlasts them.
OUTAGE_SECONDS = 95


def make_clips(azurite, container: str, folder: Path, specs: dict[str, ClipSpec]) -> dict[str, Path]:
    """Write each clip locally and upload it as `videos/<name>`; return name -> local path."""
    made = {}
    for name, spec in specs.items():
        path = folder / name.replace("/", "_")
        write_clip(path, spec)
        azurite.upload_blob(container, f"videos/{name}", path.read_bytes())
        made[name] = path
    return made


def download(azurite, container: str, name: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name.replace("/", "_")
    path.write_bytes(azurite.read_blob(container, name))
    return path


def assert_same_frames(source: Path, output: Path) -> None:
    assert media_checks.video_time_base(output) == media_checks.video_time_base(source)
    assert media_checks.decoded_pts(output) == media_checks.decoded_pts(source)


def visible(names: list[str]) -> list[str]:
    """Blob names less the hidden ones: the manifests beside the outputs (`.NAME.framefleet.json`)."""
    return [name for name in names if not name.rpartition("/")[2].startswith(".")]


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    return {**env, **(extra or {})}


def ledger_rows(job_dir: Path, sql: str) -> list[sqlite3.Row]:
    db = sqlite3.connect(job_dir / LEDGER_NAME, timeout=30)
    db.row_factory = sqlite3.Row
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


CLIPS = {
    "a.mp4": ClipSpec(width=96, height=64, frames=30, gop=6, audio=("aac",)),
    "sub/b.mov": ClipSpec(width=80, height=48, frames=20, gop=5, vfr=True),
    # long enough (4 s at 24 fps) to be cut into segments of 1 s and joined
    "sub/deep/c.mkv": ClipSpec(width=64, height=48, frames=96, gop=12, audio=("aac",)),
}


def test_a_job_reads_from_and_writes_to_blob_storage_frame_exact(azurite, azurite_container, tmp_path: Path):
    clips = make_clips(azurite, azurite_container, tmp_path, CLIPS)
    pipeline = Pipeline.from_options({"op": "identity", "segment_seconds": 1})
    settings = RunSettings(options=EngineOptions(workers=2), retry=FAST_RETRIES)
    result = run(JobSpec([f"az://{azurite_container}/videos"], f"az://{azurite_container}/results", pipeline,
                         settings), job_dir=tmp_path / "job", storage_options=azurite.storage_options())
    assert result.counts["done"] == 3 and result.failures == [], result.failures
    names = [n for n in azurite.blob_names(azurite_container) if n.startswith("results/")]
    assert visible(names) == ["results/a.mp4", "results/sub/b.mov", "results/sub/deep/c.mkv"]
    assert sorted(set(names) - set(visible(names))) == [
        "results/.a.mp4.framefleet.json", "results/sub/.b.mov.framefleet.json",
        "results/sub/deep/.c.mkv.framefleet.json"], "each output has its manifest"
    for name, source in clips.items():
        output = download(azurite, azurite_container, f"results/{name}", tmp_path / "downloaded")
        assert_same_frames(source, output)
    joined = download(azurite, azurite_container, "results/sub/deep/c.mkv", tmp_path / "joined")
    assert media_checks.streams_of_kind(joined, "audio"), "the audio of a segmented video is carried"
    segments = ledger_rows(tmp_path / "job", "SELECT COUNT(*) AS n FROM tasks WHERE kind = 'segment'")[0]["n"]
    assert segments >= 5, "the 4 s video was split and joined"
    # nothing of the job (ledger, staged files) is left in the container, only the outputs
    assert all(n.startswith(("videos/", "results/")) for n in azurite.blob_names(azurite_container))


def test_range_reads_and_the_spool_cache_give_the_same_output(azurite, azurite_container, tmp_path: Path):
    from framefleet.settings import InputAccess

    clips = make_clips(azurite, azurite_container, tmp_path, {"a.mp4": CLIPS["a.mp4"]})
    outputs = {}
    for mode in ("range", "spool"):
        cache = tmp_path / f"cache-{mode}"
        settings = RunSettings(options=EngineOptions(workers=1),
                               input_access=InputAccess(mode=mode, cache_dir=str(cache)))
        run(JobSpec([f"az://{azurite_container}/videos/a.mp4"], tmp_path / mode,
                    Pipeline.from_options({"op": "identity"}), settings),
            storage_options=azurite.storage_options())
        outputs[mode] = tmp_path / mode / "a.mp4"
        assert_same_frames(clips["a.mp4"], outputs[mode])
        spooled = list(cache.glob("*.mp4")) if cache.exists() else []
        assert len(spooled) == (1 if mode == "spool" else 0), "only spool mode keeps a local copy"
    assert media_checks.packet_digests(outputs["range"]) == media_checks.packet_digests(outputs["spool"])


def test_stylize_and_probe_take_store_uris(azurite, azurite_container, tmp_path: Path, monkeypatch):
    clips = make_clips(azurite, azurite_container, tmp_path, {"a.mp4": CLIPS["a.mp4"]})
    monkeypatch.setenv("FRAMEFLEET_STORAGE_OPTIONS", json.dumps(azurite.storage_options()))
    runner = CliRunner()
    probed = runner.invoke(app, ["probe", f"az://{azurite_container}/videos/a.mp4", "--json"])
    assert probed.exit_code == 0, probed.output
    assert json.loads(probed.stdout)["width"] == 96
    uri = f"az://{azurite_container}/styled/a.mp4"
    styled = runner.invoke(app, ["stylize", f"az://{azurite_container}/videos/a.mp4", "-o", uri,
                                 "--max-size", "64", "--json"])
    assert styled.exit_code == 0, styled.output
    assert json.loads(styled.stdout)["output"] == uri
    output = download(azurite, azurite_container, "styled/a.mp4", tmp_path / "styled")
    assert media_checks.decoded_pts(output) == media_checks.decoded_pts(clips["a.mp4"])
    again = runner.invoke(app, ["stylize", f"az://{azurite_container}/videos/a.mp4", "-o", uri])
    assert again.exit_code == 2 and "already exists" in again.stderr


def test_a_killed_job_with_remote_outputs_resumes_without_redoing_finished_items(
    azurite, azurite_container, tmp_path: Path
):
    specs = {f"v{i}.mp4": ClipSpec(width=64, height=48, frames=24, gop=6) for i in range(6)}
    clips = make_clips(azurite, azurite_container, tmp_path, specs)
    pipeline = tmp_path / "slow.yaml"
    pipeline.write_text("op: job_ops:SlowOp\ndelay: 0.15\nbatch_size: 2\n")
    job_dir = tmp_path / "job"
    args = [*JOB_CLI, "run", f"az://{azurite_container}/videos", "-o", f"az://{azurite_container}/out",
            "--pipeline", str(pipeline), "--workers", "2", "--job-dir", str(job_dir), "--quiet"]
    env = cli_env({"FRAMEFLEET_STORAGE_OPTIONS": json.dumps(azurite.storage_options())})
    first = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = [n for n in visible(azurite.blob_names(azurite_container)) if n.startswith("out/")]
        if len(done) >= 2:
            break
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    finished_first = {row["uri"] for row in ledger_rows(job_dir, "SELECT uri FROM items WHERE state = 'done'")}
    assert 2 <= len(finished_first) < 6
    second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    for name, source in clips.items():
        assert_same_frames(source, download(azurite, azurite_container, f"out/{name}", tmp_path / "downloaded"))
    redone = ledger_rows(job_dir, "SELECT i.uri FROM attempts a JOIN tasks t ON a.task_id = t.id "
                                  "JOIN items i ON t.item_id = i.id WHERE a.outcome = 'done' "
                                  "GROUP BY t.id HAVING COUNT(*) > 1")
    assert redone == [], "a task finished before the kill ran again"
    assert {row["uri"] for row in ledger_rows(job_dir, "SELECT uri FROM items WHERE state = 'done'")} >= finished_first


def test_a_store_that_goes_away_mid_job_costs_retries_not_items(azurite, azurite_container, tmp_path: Path):
    specs = {f"v{i}.mp4": ClipSpec(width=64, height=48, frames=48, gop=6) for i in range(6)}
    clips = make_clips(azurite, azurite_container, tmp_path, specs)
    pipeline_file = tmp_path / "slow.yaml"
    pipeline_file.write_text("op: job_ops:SlowOp\ndelay: 0.1\nbatch_size: 4\nsegment_seconds: 1\n")
    job_dir = tmp_path / "job"
    args = [*JOB_CLI, "run", f"az://{azurite_container}/videos", "-o", f"az://{azurite_container}/out",
            "--pipeline", str(pipeline_file), "--workers", "2", "--job-dir", str(job_dir), "--quiet", "--json"]
    env = cli_env({"FRAMEFLEET_STORAGE_OPTIONS": json.dumps(azurite.storage_options())})
    job = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                rows = ledger_rows(job_dir, "SELECT COUNT(*) AS n FROM tasks WHERE state = 'done' AND kind = 'segment'")
            except sqlite3.OperationalError:  # the run has not created the ledger's tables yet
                rows = []
            if rows and rows[0]["n"] >= 2:
                break
            time.sleep(0.1)
        azurite.stop()
        time.sleep(OUTAGE_SECONDS)
        azurite.start()
        stdout, stderr = job.communicate(timeout=300)
    finally:
        if job.poll() is None:
            job.kill()
        if not azurite.running:
            azurite.start()
    assert job.returncode == 0, stderr
    assert json.loads(stdout)["counts"]["done"] == 6
    losses = ledger_rows(job_dir, "SELECT error_type, message FROM attempts WHERE outcome = 'lost'")
    assert losses, "the outage cost no attempt: the store was not needed while it was down"
    assert all(row["error_type"] == "StorageUnavailableError" for row in losses), [dict(r) for r in losses]
    assert ledger_rows(job_dir, "SELECT COUNT(*) AS n FROM attempts WHERE outcome = 'input_error'")[0]["n"] == 0
    for name, source in clips.items():
        assert_same_frames(source, download(azurite, azurite_container, f"out/{name}", tmp_path / "downloaded"))


def test_segments_can_wait_for_their_join_in_the_store(azurite, azurite_container, tmp_path: Path):
    """--parts-dir az://...: what Ray workers on machines without a shared disk need."""
    clips = make_clips(azurite, azurite_container, tmp_path, {"long.mkv": CLIPS["sub/deep/c.mkv"]})
    parts = f"az://{azurite_container}/scratch/job"
    settings = RunSettings(options=EngineOptions(workers=2), parts_dir=parts)
    result = run(JobSpec([f"az://{azurite_container}/videos"], tmp_path / "out", Pipeline.from_options(
        {"op": "identity", "segment_seconds": 1}), settings),
        job_dir=tmp_path / "job", storage_options=azurite.storage_options())
    assert result.counts["done"] == 1, result.failures
    assert_same_frames(clips["long.mkv"], tmp_path / "out" / "long.mkv")
    rows = ledger_rows(tmp_path / "job", "SELECT result FROM tasks WHERE kind = 'segment'")
    written = [json.loads(row["result"])["output"] for row in rows]
    assert len(written) >= 3 and all(uri.startswith(f"{parts}/item-1/") for uri in written), written
    assert not [n for n in azurite.blob_names(azurite_container) if n.startswith("scratch/")], "the join cleans up"
    with pytest.raises(Exception, match="keeps its segments in"):
        run(JobSpec([], tmp_path / "out", Pipeline.from_options({"op": "identity", "segment_seconds": 1}),
                    RunSettings(parts_dir=str(tmp_path / "elsewhere"))),
            job_dir=tmp_path / "job", storage_options=azurite.storage_options())


def test_listing_a_prefix_pages_past_the_stores_5000_names_per_response(azurite, azurite_container):
    from concurrent.futures import ThreadPoolExecutor

    from framefleet.files import storage
    from framefleet.files.sources import expand_inputs

    names = [f"many/d{i % 7}/clip{i:05d}.mp4" for i in range(5_050)] + ["many/.hidden/x.mp4", "many/notes.txt"]
    container = azurite.service_client().get_container_client(azurite_container)
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda name: container.upload_blob(name, b"\x00\x00\x00\x18ftypisom", overwrite=True), names))
    container.upload_blob("many/notes.txt", b"not a video", overwrite=True)
    storage.configure(azurite.storage_options())
    try:
        listing = expand_inputs([f"az://{azurite_container}/many"])
    finally:
        storage.configure(None)
    assert len(listing.refs) == 5_050
    assert {ref.relpath for ref in listing.refs} == {name.removeprefix("many/") for name in names[:5_050]}
    assert listing.skipped == [f"az://{azurite_container}/many/notes.txt"]
    assert all(ref.size == 12 and ref.version.startswith("0x") for ref in listing.refs)  # the ETags


def test_an_https_style_url_is_a_read_only_input(azurite, tmp_path: Path):
    """A public container's blob, read over plain HTTP with range requests (what an https:// input is)."""
    container = azurite.create_container(f"pub{os.urandom(6).hex()}", public=True)
    clips = make_clips(azurite, container, tmp_path, {"a.mp4": CLIPS["a.mp4"]})
    url = azurite.blob_url(container, "videos/a.mp4")
    result = run(JobSpec([url], tmp_path / "out", Pipeline.from_options({"op": "identity"}),
                         RunSettings(options=EngineOptions(workers=1))), job_dir=tmp_path / "job")
    assert result.counts["done"] == 1, result.failures
    assert_same_frames(clips["a.mp4"], tmp_path / "out" / "a.mp4")
    with pytest.raises(Exception, match="read-only"):
        run(JobSpec([url], url.rsplit("/", 1)[0] + "/out", Pipeline.from_options({"op": "identity"})))


def test_status_failures_and_retry_take_a_store_output_uri_for_its_job(azurite, azurite_container, tmp_path: Path,
                                                                        monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    make_clips(azurite, azurite_container, tmp_path, {"a.mp4": CLIPS["a.mp4"]})
    azurite.upload_blob(azurite_container, "videos/broken.mp4", b"\x00\x00\x00\x18ftypisom" + b"\x00" * 500)
    output = f"az://{azurite_container}/out"
    monkeypatch.setenv("FRAMEFLEET_STORAGE_OPTIONS", json.dumps(azurite.storage_options()))
    runner = CliRunner()
    ran = runner.invoke(app, ["run", f"az://{azurite_container}/videos", "-o", output, "--op", "identity",
                              "--workers", "1", "--max-attempts", "1", "--json"])
    assert ran.exit_code == 3, ran.output
    assert json.loads(ran.stdout)["job_dir"].startswith(str(tmp_path / "cache" / "framefleet" / "jobs"))
    status = runner.invoke(app, ["status", output, "--json"])
    assert status.exit_code == 0 and json.loads(status.stdout)["items"]["failed"] == 1, status.output
    failed = runner.invoke(app, ["failures", output, "--json"])
    assert [f["uri"] for f in json.loads(failed.stdout)] == [f"az://{azurite_container}/videos/broken.mp4"]
    again = runner.invoke(app, ["retry", output, "--max-attempts", "1", "--json"])
    assert again.exit_code == 3 and json.loads(again.stdout)["counts"] == {
        "pending": 0, "running": 0, "done": 1, "failed": 1}


def test_records_are_committed_beside_store_outputs_and_load_back_from_the_store(
        azurite, azurite_container, tmp_path: Path, monkeypatch):
    """A user op's records and frames, segments waiting in the store: one Parquet file per video, next to it."""
    import uuid

    import pyarrow.parquet as pq
    from user_ops import write_user_ops

    from framefleet import load_records

    module = write_user_ops(tmp_path / "mycode", f"storeops_{uuid.uuid4().hex[:8]}")
    monkeypatch.syspath_prepend(str(tmp_path / "mycode"))
    clips = make_clips(azurite, azurite_container, tmp_path,
                       {"a.mp4": CLIPS["a.mp4"], "sub/deep/c.mkv": CLIPS["sub/deep/c.mkv"]})
    pipeline = Pipeline.from_options({"steps": [{"op": f"{module}:Brightness"}, {"op": f"{module}:Invert"}],
                                      "segment_seconds": 1})
    settings = RunSettings(options=EngineOptions(workers=2), retry=FAST_RETRIES,
                           parts_dir=f"az://{azurite_container}/scratch/job")
    result = run(JobSpec([f"az://{azurite_container}/videos"], f"az://{azurite_container}/results", pipeline,
                         settings), job_dir=tmp_path / "job", storage_options=azurite.storage_options())
    assert result.counts["done"] == 2 and result.failures == [], result.failures

    names = [n for n in visible(azurite.blob_names(azurite_container)) if not n.startswith("videos/")]
    assert names == ["results/a.mp4", "results/a.mp4.records.parquet", "results/sub/deep/c.mkv",
                     "results/sub/deep/c.mkv.records.parquet"]
    for name, source in clips.items():
        downloaded = download(azurite, azurite_container, f"results/{name}.records.parquet", tmp_path / "got")
        table = pq.read_table(downloaded)
        assert table["pts"].to_pylist() == media_checks.decoded_pts(source)
        assert table["frame"].to_pylist() == list(range(len(table)))
        assert_same_frames(source, download(azurite, azurite_container, f"results/{name}", tmp_path / "got"))
    everything = load_records(tmp_path / "job")
    assert everything.num_rows == sum(len(media_checks.decoded_pts(source)) for source in clips.values())
