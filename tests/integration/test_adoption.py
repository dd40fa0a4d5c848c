"""A new ledger over outputs that an earlier one made (the job directory lost with its head) adopts every
output whose manifest matches, without running it; anything else runs again and is replaced.

Local outputs and the inline engine keep these fast; tests/storage/test_adoption_azurite.py does the same
against a real Azure Blob server, deleting the job directory in the middle of a job.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import media_checks
from typer.testing import CliRunner

from framefleet.cli import app
from framefleet.jobs.directory import open_ledger
from framefleet.jobs.manifest import manifest_uri, read_manifest
from framefleet.jobs.reads import LedgerReads
from framefleet.jobs.results import JoinResult
from framefleet.jobs.run import run
from framefleet.jobs.spec import JobSpec
from framefleet.jobs.task import TaskRequest, run_task
from framefleet.pipeline import Pipeline
from framefleet.settings import EngineOptions, RunSettings
from framefleet.video.synth import ClipSpec, write_clip

INLINE = RunSettings(engine="inline", options=EngineOptions(workers=2))
CLIPS = {
    "a.mp4": ClipSpec(width=64, height=48, frames=24, gop=6),
    "b.mp4": ClipSpec(width=64, height=48, frames=30, gop=6, audio=("aac",)),
    "sub/c.mkv": ClipSpec(width=64, height=48, frames=96, gop=12),  # 4 s: split into segments and joined
}


def make_inputs(folder: Path) -> dict[str, Path]:
    made = {}
    for name, spec in CLIPS.items():
        path = folder / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_clip(path, spec)
        made[name] = path
    return made


def job(folder: Path, options: dict | None = None, job_dir: Path | None = None):
    pipeline = Pipeline.from_options(options or {"op": "identity", "segment_seconds": 1})
    return run(JobSpec([str(folder / "in")], str(folder / "out"), pipeline, INLINE), job_dir=job_dir)


def mtimes(out: Path) -> dict[str, int]:
    return {name: (out / name).stat().st_mtime_ns for name in CLIPS}


def test_a_new_job_directory_adopts_every_finished_output(tmp_path: Path):
    inputs = make_inputs(tmp_path)
    first = job(tmp_path)
    assert first.counts["done"] == 3 and first.adopted == 0
    out = tmp_path / "out"
    assert read_manifest(str(out / "sub/c.mkv")).frames == 96, "the join writes the manifest of the output"
    before = mtimes(out)
    shutil.rmtree(out / ".framefleet-job")  # the head and its ledger are gone; the outputs are not
    second = job(tmp_path)
    assert second.counts["done"] == 3 and second.adopted == 3 and second.failures == []
    assert mtimes(out) == before, "no output was written again"
    assert second.frames == first.frames == sum(spec.frames for spec in CLIPS.values())
    with open_ledger(out / ".framefleet-job") as ledger:
        reads = LedgerReads(ledger)
        assert reads.frames() == (150, 150)
        assert reads.attempts() and all(a["kind"] == "probe" for a in reads.attempts()), "only probes ran"
    for name, source in inputs.items():
        assert media_checks.decoded_pts(out / name) == media_checks.decoded_pts(source)
    status = CliRunner().invoke(app, ["status", str(out / ".framefleet-job"), "--json"])
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["adopted"] == 3


def test_an_output_whose_manifest_does_not_match_runs_again(tmp_path: Path):
    inputs = make_inputs(tmp_path)
    job(tmp_path)
    out = tmp_path / "out"
    shutil.rmtree(out / ".framefleet-job")
    with open(out / "b.mp4", "r+b") as f:  # truncated after its commit
        f.truncate(1000)
    before = mtimes(out)
    second = job(tmp_path)
    assert second.adopted == 2 and second.counts["done"] == 3
    after = mtimes(out)
    assert after["b.mp4"] != before["b.mp4"] and after["a.mp4"] == before["a.mp4"]
    assert media_checks.decoded_pts(out / "b.mp4") == media_checks.decoded_pts(inputs["b.mp4"])
    assert read_manifest(str(out / "b.mp4")).files[0].size == (out / "b.mp4").stat().st_size


def test_outputs_of_another_pipeline_are_never_adopted(tmp_path: Path):
    make_inputs(tmp_path)
    job(tmp_path)
    out = tmp_path / "out"
    before = mtimes(out)
    other = job(tmp_path, {"op": "blur", "segment_seconds": 1}, job_dir=tmp_path / "other-job")
    assert other.adopted == 0 and other.counts["done"] == 3
    assert all(after != before[name] for name, after in mtimes(out).items()), "every output was made again"


def test_a_changed_input_is_never_adopted(tmp_path: Path):
    make_inputs(tmp_path)
    job(tmp_path)
    out = tmp_path / "out"
    shutil.rmtree(out / ".framefleet-job")
    write_clip(tmp_path / "in" / "a.mp4", ClipSpec(width=64, height=48, frames=12, gop=6))  # a new version
    second = job(tmp_path)
    assert second.adopted == 2
    assert read_manifest(str(out / "a.mp4")).frames == 12
    assert not Path(manifest_uri(str(tmp_path / "out" / "sub" / "c.mkv"))).name.endswith(".mkv")


def test_a_join_lost_after_its_commit_adopts_the_output_its_removed_parts_made(tmp_path: Path):
    make_inputs(tmp_path)
    job(tmp_path)
    out = tmp_path / "out"
    with open_ledger(out / ".framefleet-job") as ledger:
        item = next(i for i in ledger.items() if i.relpath == "sub/c.mkv")
        fingerprint, parts = ledger.job().fingerprint, LedgerReads(ledger).join_parts(item.id)
    before = (out / "sub/c.mkv").stat().st_mtime_ns
    # the join's retry: its parts are gone (the lost attempt removed them after committing the output)
    request = TaskRequest(task_id=9, lease_id=9, kind="join", item_id=item.id, seq=0, uri=item.uri,
                          output_uri=item.output_uri, start_pts=None, end_pts=None, parts_dir=str(tmp_path / "parts"),
                          parts=parts, input_size=item.size, input_version=item.version,
                          job_fingerprint=fingerprint)
    done = run_task(request, Pipeline.from_options({"op": "identity", "segment_seconds": 1}), processor=None)
    assert done.result == JoinResult(output=item.output_uri, frames=96, adopted=True)
    assert (out / "sub/c.mkv").stat().st_mtime_ns == before
