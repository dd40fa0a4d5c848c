"""Survive the head (issue 26): a job writing to a real Azure Blob server loses its job directory in the
middle (its machine is gone: the process is killed and the ledger deleted), and the same command, run
again with a new ledger, adopts every finished output and committed part instead of making it again.

"0 rewritten" is read from the store itself: the ETag and Last-Modified of every adopted blob are those it
had before the second run. An output replaced meanwhile (its manifest no longer matches) is not adopted:
it is made again, frame-exact.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from test_jobs_azurite import JOB_CLI, assert_same_frames, cli_env, download, ledger_rows, make_clips, visible

from framefleet.video.synth import ClipSpec

pytestmark = pytest.mark.storage

SHORT = {f"v{i}.mp4": ClipSpec(width=64, height=48, frames=24, gop=6) for i in range(5)}
LONG = {"z-long.mkv": ClipSpec(width=64, height=48, frames=96, gop=12, audio=("aac",))}  # 4 segments of 1 s
LONG_ITEM = len(SHORT) + 1  # items are numbered in listing order; the long video comes last


def blob_states(azurite, container: str, names: list[str]) -> dict[str, tuple[str, object]]:
    """(ETag, Last-Modified) of each blob: what a rewrite would change."""
    client = azurite.service_client().get_container_client(container)
    found = {}
    for name in names:
        properties = client.get_blob_client(name).get_blob_properties()
        found[name] = (properties.etag, properties.last_modified)
    return found


def wait_for(predicate, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("the job did not get that far in time")


def test_a_new_head_adopts_every_finished_output_and_part(azurite, azurite_container, tmp_path: Path):
    clips = make_clips(azurite, azurite_container, tmp_path, {**SHORT, **LONG})
    pipeline = tmp_path / "slow.yaml"
    pipeline.write_text("op: job_ops:SlowOp\ndelay: 0.05\nbatch_size: 4\nsegment_seconds: 1\n")
    job_dir = tmp_path / "job"
    out, parts = f"az://{azurite_container}/out", f"az://{azurite_container}/scratch/job"
    args = [*JOB_CLI, "run", f"az://{azurite_container}/videos", "-o", out, "--pipeline", str(pipeline),
            "--workers", "2", "--job-dir", str(job_dir), "--parts-dir", parts, "--quiet", "--json"]
    env = cli_env({"FRAMEFLEET_STORAGE_OPTIONS": json.dumps(azurite.storage_options())})
    first = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)
    first_part = f"scratch/job/item-{LONG_ITEM}/.00000.nut.framefleet.json"  # part 0 committed, manifest last
    try:
        wait_for(lambda: first_part in azurite.blob_names(azurite_container), 120)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the head goes, with its workers
        first.wait(timeout=30)
    shutil.rmtree(job_dir)  # ... and its disk: only the store is left

    names = azurite.blob_names(azurite_container)
    outputs = [n for n in visible(names) if n.startswith("out/")]
    assert outputs == [f"out/{name}" for name in SHORT], "the short videos were done, the long one not joined"
    part_blobs = [n for n in visible(names) if n.startswith("scratch/")]
    assert part_blobs, "at least one part of the long video was committed"
    tampered = "out/v1.mp4"  # replaced by another video after its manifest was written
    azurite.upload_blob(azurite_container, tampered, azurite.read_blob(azurite_container, "out/v0.mp4"))
    before = blob_states(azurite, azurite_container, outputs + part_blobs)

    started = time.monotonic()
    second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, check=False)
    seconds = time.monotonic() - started
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    assert summary["counts"]["done"] == len(SHORT) + 1 and summary["adopted"] == len(SHORT) - 1, summary

    kept = [name for name in outputs if name != tampered]
    after = blob_states(azurite, azurite_container, kept)
    assert after == {name: before[name] for name in kept}, "an adopted output was written again"
    assert blob_states(azurite, azurite_container, [tampered])[tampered] != before[tampered], "made again"
    for name, source in clips.items():
        assert_same_frames(source, download(azurite, azurite_container, f"out/{name}", tmp_path / "got"))

    adopted_parts = ledger_rows(job_dir, "SELECT seq FROM tasks WHERE kind = 'segment' "
                                         "AND json_extract(result, '$.adopted') ORDER BY seq")
    assert len(adopted_parts) >= 1, "the committed parts were adopted, not made again"
    assert not [n for n in azurite.blob_names(azurite_container) if n.startswith("scratch/")], "the join cleans up"
    redone = ledger_rows(job_dir, "SELECT i.uri FROM items i JOIN tasks t ON t.item_id = i.id "
                                  "WHERE i.adopted = 1 AND t.kind != 'probe'")
    assert redone == [], "an adopted item ran more than its probe"
    per_item = ledger_rows(job_dir, "SELECT a.ended - a.started AS s FROM attempts a JOIN tasks t ON "
                                    "t.id = a.task_id JOIN items i ON i.id = t.item_id WHERE i.adopted = 1")
    print(f"\nadopted {summary['adopted']} outputs and {len(adopted_parts)} parts; adoption per item "
          f"{1000 * sum(r['s'] for r in per_item) / len(per_item):.0f} ms (max "
          f"{1000 * max(r['s'] for r in per_item):.0f} ms); second run {seconds:.1f} s")


def test_a_records_only_output_in_the_store_is_adopted(azurite, azurite_container, tmp_path: Path, monkeypatch):
    from user_ops import write_user_ops

    from framefleet.jobs.run import run
    from framefleet.jobs.spec import JobSpec
    from framefleet.pipeline import Pipeline
    from framefleet.settings import EngineOptions, RunSettings

    module = write_user_ops(tmp_path / "mycode", f"adoptops_{uuid.uuid4().hex[:8]}")
    monkeypatch.syspath_prepend(str(tmp_path / "mycode"))
    make_clips(azurite, azurite_container, tmp_path, LONG)
    pipeline = Pipeline.from_options({"op": f"{module}:Brightness", "segment_seconds": 1})
    settings = RunSettings(engine="inline", options=EngineOptions(workers=2))

    def job(job_dir: Path):
        return run(JobSpec([f"az://{azurite_container}/videos"], f"az://{azurite_container}/records", pipeline,
                           settings), job_dir=job_dir, storage_options=azurite.storage_options())

    first = job(tmp_path / "job")
    assert first.counts["done"] == 1 and first.adopted == 0, first.failures
    name = "records/z-long.mkv.records.parquet"
    assert visible([n for n in azurite.blob_names(azurite_container) if n.startswith("records/")]) == [name]
    before = blob_states(azurite, azurite_container, [name])
    second = job(tmp_path / "new-job")
    assert second.counts["done"] == 1 and second.adopted == 1 and second.frames == 96
    assert blob_states(azurite, azurite_container, [name]) == before
