"""Bring your own model, end to end through `framefleet run`: a user's Python op named as module:Class, an
ONNX model built here with the `onnx` package, pipelines of several steps (sampling, a conditional step,
a resize), and records written to Parquet per video, joined across segments, loaded back as one table.

What is checked comes from outside framefleet where it can: frames and timestamps decoded with PyAV
(tests/media_checks.py), records read with pyarrow.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import uuid
from collections import Counter
from fractions import Fraction
from pathlib import Path

import media_checks
import numpy as np
import pyarrow.parquet as pq
import pytest
from cli_helpers import cli, stderr_lines, stdout_json
from PIL import Image
from user_ops import channel_mean_model, write_user_ops

from framefleet import FramefleetError, load_records
from framefleet.jobs.directory import open_ledger
from framefleet.jobs.reads import LedgerReads
from framefleet.jobs.run import run
from framefleet.jobs.spec import JobSpec
from framefleet.pipeline import Pipeline, file_sha256
from framefleet.settings import EngineOptions, RunSettings
from framefleet.video.synth import ClipSpec, write_clip

pytestmark = pytest.mark.timeout(300)
SMALL = dict(width=96, height=64, frames=24, gop=6, bframes=0, audio=("aac",))


@pytest.fixture
def user_module(tmp_path, monkeypatch) -> str:
    """The user's op module in their own folder, which is the current directory (as when they run the CLI)."""
    name = write_user_ops(tmp_path / "mycode", f"userops_{uuid.uuid4().hex[:8]}")
    monkeypatch.chdir(tmp_path / "mycode")
    monkeypatch.setattr(sys, "path", list(sys.path))  # framefleet adds the current directory; undo it after
    yield name
    sys.modules.pop(name, None)


def inputs_with(tmp_path: Path, clips: dict[str, Path]) -> Path:
    folder = tmp_path / "in"
    for name, clip in clips.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, folder / name)
    return folder


def pipeline_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return path


def run_pipeline(tmp_path: Path, folder: Path, text: str) -> Path:
    """Run the job of `folder` with the pipeline file `text`; its output root."""
    out = tmp_path / "out"
    run_ok(folder, "-o", out, "--pipeline", pipeline_file(tmp_path, text))
    return out


def run_ok(*args: object) -> dict:
    result = cli("run", *args, "--json", "-q")
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    summary = stdout_json(result)
    assert summary["counts"]["failed"] == 0, summary["failures"]
    return summary


def one_line_error(*args: object) -> str:
    result = cli("run", *args, "--json", "-q")
    lines = stderr_lines(result)
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_a_user_op_from_the_command_line_records_every_frame_across_segments(tmp_path, clip_factory, user_module):
    short = clip_factory("custom-short.mp4", **SMALL)
    long = clip_factory("custom-long.mp4", **{**SMALL, "frames": 72})  # 3 s in 1 s segments
    folder = inputs_with(tmp_path, {"a.mp4": short, "sub/b.mp4": long})
    out = tmp_path / "out"
    run_ok(folder, "-o", out, "--op", f"{user_module}:Brightness", "--segment-seconds", "1")

    assert not (out / "a.mp4").exists() and not (out / "sub" / "b.mp4").exists()  # records only: no video
    total = 0
    for name in ("a.mp4", "sub/b.mp4"):
        source = folder / name
        table = pq.read_table(out / f"{name}.records.parquet")
        frames = media_checks.rgb_frames(source)
        pts = media_checks.decoded_pts(source)
        assert table["frame"].to_pylist() == list(range(len(frames)))
        assert table["pts"].to_pylist() == pts
        assert table["time"].to_pylist() == pytest.approx(
            [float(p * media_checks.video_time_base(source)) for p in pts])
        assert set(table["op"].to_pylist()) == {"brightness"}
        assert set(table["input"].to_pylist()) == {str(source)}
        assert table["brightness"].to_pylist() == pytest.approx([float(f.mean()) for f in frames], abs=1.0)
        assert all(sum(h) == 96 * 64 and len(h) == 4 for h in table["histogram"].to_pylist())
        total += len(frames)
    ledger = open_ledger(out)
    long_item = next(item for item in ledger.items() if item.uri.endswith("b.mp4"))
    assert len(LedgerReads(ledger).join_parts(long_item.id)) == 3
    ledger.close()
    every = load_records(out)
    assert every.num_rows == total
    assert sorted(set(every["input"].to_pylist())) == sorted(str(folder / n) for n in ("a.mp4", "sub/b.mp4"))


def test_changing_a_user_ops_code_makes_it_a_new_pipeline(tmp_path, user_module):
    before = Pipeline.from_options({"op": f"{user_module}:Invert"}).fingerprint()
    source = Path(f"{user_module}.py")
    source.write_text(source.read_text().replace("255 - batch.frames", "254 - batch.frames"))
    file_sha256.cache_clear()  # a new run is a new process; this one cached the old file's hash
    assert Pipeline.from_options({"op": f"{user_module}:Invert"}).fingerprint() != before
    assert Pipeline.from_options({"op": f"{user_module}:Invert"}).spec()["ops"][0]["op"] == f"{user_module}:Invert"


def test_an_onnx_model_from_the_command_line_records_its_outputs(tmp_path, clip_factory):
    pytest.importorskip("onnx")
    model = channel_mean_model(tmp_path / "mean.onnx")
    folder = inputs_with(tmp_path, {"a.mp4": clip_factory("custom-short.mp4", **SMALL)})
    out = tmp_path / "out"
    run_ok(folder, "-o", out, "--model", model, "-p", "outputs=[mean]", "-p", "batch_size=5")

    table = load_records(out)
    frames = media_checks.rgb_frames(folder / "a.mp4")
    assert table.num_rows == len(frames)
    expected = [(frame.reshape(-1, 3).mean(axis=0) / 255).tolist() for frame in frames]
    assert np.allclose(table["mean"].to_pylist(), expected, atol=0.005)
    assert set(table["op"].to_pylist()) == {"onnx"}


def alternating(width: int, height: int):
    """Textured frames, bright for two frames then dark for two."""
    y, x = np.mgrid[0:height, 0:width]
    texture = ((x // 4 + y // 4) % 2 * 60).astype(np.int16)

    def picture(index: int) -> np.ndarray:
        base = 150 if index % 4 < 2 else 30
        return np.repeat((base + texture)[..., None], 3, axis=2).clip(0, 255).astype(np.uint8)

    return picture


def sharpness(frame: np.ndarray) -> float:
    return float(np.abs(np.diff(frame.astype(np.int16), axis=1)).mean())


def test_a_conditional_step_blurs_only_the_frames_an_earlier_op_flagged(tmp_path, user_module):
    clip = tmp_path / "alternating.mp4"
    write_clip(clip, ClipSpec(width=96, height=64, frames=16, gop=8, bframes=0), alternating(96, 64))
    folder = inputs_with(tmp_path, {"a.mp4": clip})
    out = run_pipeline(tmp_path, folder, f"steps:\n  - op: {user_module}:Bright\n    level: 100\n"
                                         "  - op: blur\n    when: bright\n    radius: 3\ncrf: 12\n")

    sources, outputs = media_checks.rgb_frames(clip), media_checks.rgb_frames(out / "a.mp4")
    assert len(outputs) == len(sources) == 16
    assert media_checks.decoded_pts(out / "a.mp4") == media_checks.decoded_pts(clip)
    for index, (source, output) in enumerate(zip(sources, outputs)):
        if index % 4 < 2:
            assert sharpness(output) < 0.3 * sharpness(source), index
        else:
            assert media_checks.mean_abs_diff(output, source) < 3, index
    flagged = pq.read_table(out / "a.mp4.records.parquet")
    assert flagged["frame"].to_pylist() == [i for i in range(16) if i % 4 < 2]
    assert set(flagged["op"].to_pylist()) == {"bright"}


def test_sampling_runs_the_next_steps_on_one_frame_per_tick_across_segments(tmp_path, clip_factory, user_module):
    clip = clip_factory("custom-48.mp4", **{**SMALL, "frames": 48})  # 2 s at 24 fps, keyframes every 0.25 s
    folder = inputs_with(tmp_path, {"a.mp4": clip})
    out = run_pipeline(tmp_path, folder,
                       f"steps:\n  - op: sample\n    fps: 2\n  - op: {user_module}:Brightness\nsegment_seconds: 0.5\n")

    table = pq.read_table(out / "a.mp4.records.parquet")
    assert table["frame"].to_pylist() == [0, 12, 24, 36]
    assert table["time"].to_pylist() == pytest.approx([0.0, 0.5, 1.0, 1.5], abs=1e-3)
    ledger = open_ledger(out)
    assert len(LedgerReads(ledger).join_parts(ledger.items()[0].id)) > 1
    ledger.close()


def test_a_resize_step_sets_the_output_size_and_keeps_every_frame(tmp_path, clip_factory, user_module):
    clip = clip_factory("custom-large.mp4", **{**SMALL, "width": 256, "height": 160})
    folder = inputs_with(tmp_path, {"a.mp4": clip})
    out = run_pipeline(tmp_path, folder,
                       f"steps:\n  - op: resize\n    max_size: 128\n  - op: {user_module}:Invert\n")

    outputs = media_checks.rgb_frames(out / "a.mp4")
    assert outputs[0].shape == (80, 128, 3)
    assert media_checks.decoded_pts(out / "a.mp4") == media_checks.decoded_pts(clip)
    source = np.asarray(Image.fromarray(media_checks.rgb_frames(clip)[5]).resize((128, 80), Image.LANCZOS))
    assert media_checks.mean_abs_diff(outputs[5], 255 - source) < 8  # x264 at crf 20; not inverted: ~100
    assert not list(out.glob("*.parquet"))  # no op writes records


@pytest.mark.parametrize(("args", "fragment"), [
    (("--op", "no_such_module_xyz:MyOp"), "cannot import no_such_module_xyz"),
    (("--op", "no_such[x]:MyOp"), "op no_such[x]:MyOp: cannot import"),
    (("--op", "os:path"), "is not a subclass of framefleet.Op"),
    (("--op", "identity", "-p", "batch_size"), "write it as KEY=VALUE"),
    (("--op", "identity", "-p", "colour=3"), "unknown key(s) colour for op identity"),
    (("--op", "faces", "-p", "anonymize=paint"), "faces: anonymize must be one of"),
    (("--model", "missing.onnx"), "missing.onnx"),
    (("--op", "style", "--model", "m.onnx"), "--model runs the onnx op"),
    (("--op", "blur", "--device", "cuda"), "op blur runs on the CPU only"),
], ids=["no module", "brackets kept", "not an op", "param without value", "unknown param", "bad faces option", "missing model",
        "model with another op", "cuda for a CPU op"])
def test_a_bad_op_option_is_a_one_line_error(tmp_path, clip_factory, args, fragment):
    folder = inputs_with(tmp_path, {"a.mp4": clip_factory("custom-short.mp4", **SMALL)})
    assert fragment in one_line_error(folder, "-o", tmp_path / "out", *args)


@pytest.mark.parametrize(("steps", "fragment"), [
    ("  - op: blur\n    when: faces\n", "when: faces names no earlier op"),
    ("  - op: identity\n  - op: blur\n    when: identity\n", "identity writes no records"),
    ("  - op: sample\n  - op: resize\n", "changes the frame size, so it must run on every frame"),
    ("  - identity\n", "steps must be a list of mappings"),
    ("  - op: sample\n", "writes nothing"),
], ids=["unknown condition", "condition without records", "resize after sampling", "not a mapping", "no output"])
def test_a_bad_step_list_is_a_one_line_error(tmp_path, clip_factory, steps, fragment):
    folder = inputs_with(tmp_path, {"a.mp4": clip_factory("custom-short.mp4", **SMALL)})
    pipeline = pipeline_file(tmp_path, "steps:\n" + steps)
    assert fragment in one_line_error(folder, "-o", tmp_path / "out", "--pipeline", pipeline)


def test_records_of_a_job_load_as_one_table_with_every_column(tmp_path, clip_factory, user_module):
    """Two steps write different columns; every video's file and the job's table have them all."""
    folder = inputs_with(tmp_path, {"a.mp4": clip_factory("custom-short.mp4", **SMALL),
                                    "b.mp4": clip_factory("custom-short.mp4", **SMALL)})
    out = run_pipeline(tmp_path, folder,
                       f"steps:\n  - op: {user_module}:Brightness\n  - op: {user_module}:Bright\n    level: 0\n")

    table = load_records(out)
    assert table.num_rows == 2 * 2 * 24
    assert {"input", "frame", "pts", "time", "op", "brightness", "histogram"} <= set(table.column_names)
    by_op = {op: sum(1 for o in table["op"].to_pylist() if o == op) for op in ("brightness", "bright")}
    assert by_op == {"brightness": 48, "bright": 48}
    first = table.slice(0, 2).to_pylist()  # records of one frame are together, in step order
    assert [r["op"] for r in first] == ["brightness", "bright"] and first[0]["frame"] == first[1]["frame"] == 0
    assert first[1]["histogram"] is None


def test_a_job_without_records_says_so_when_asked_for_them(tmp_path, clip_factory):
    folder = inputs_with(tmp_path, {"a.mp4": clip_factory("custom-short.mp4", **SMALL)})
    run_ok(folder, "-o", tmp_path / "out", "--op", "identity")
    with pytest.raises(Exception, match="writes no records"):
        load_records(tmp_path / "out")


def test_records_frame_numbers_are_exact_for_a_variable_frame_rate_clip(tmp_path, user_module):
    clip = tmp_path / "vfr.mp4"
    write_clip(clip, ClipSpec(width=64, height=48, frames=30, rate=Fraction(30), vfr=True, gop=5, bframes=0))
    folder = inputs_with(tmp_path, {"a.mp4": clip})
    out = tmp_path / "out"
    run_ok(folder, "-o", out, "--op", f"{user_module}:Brightness", "--segment-seconds", "0.5")
    table = pq.read_table(out / "a.mp4.records.parquet")
    assert table["pts"].to_pylist() == media_checks.decoded_pts(clip)
    assert table["frame"].to_pylist() == list(range(30))


def test_the_records_command_summarises_a_job_and_writes_one_file(tmp_path, clip_factory, user_module):
    folder = inputs_with(tmp_path, {"a.mp4": clip_factory("custom-short.mp4", **SMALL)})
    out = tmp_path / "out"
    run_ok(folder, "-o", out, "--op", f"{user_module}:Brightness")
    result = cli("records", out, "--json", "-o", tmp_path / "all.parquet")
    assert result.exit_code == 0, result.stderr
    summary = stdout_json(result)
    assert summary["rows"] == 24 and summary["videos"] == 1 and summary["ops"] == {"brightness": 24}
    assert summary["columns"]["histogram"].startswith("list<")
    assert pq.read_table(tmp_path / "all.parquet").num_rows == 24


def test_a_stopped_multi_step_job_resumes_without_redoing_work_and_keeps_its_pipeline(
        tmp_path, clip_factory, user_module):
    short, long = clip_factory("custom-short.mp4", **SMALL), clip_factory("custom-long.mp4", **{**SMALL, "frames": 72})
    folder = inputs_with(tmp_path, {**{f"s{i}.mp4": short for i in range(4)}, "long.mp4": long})
    out = tmp_path / "out"
    options = {"steps": [{"op": f"{user_module}:Brightness"}, {"op": "job_ops:SlowOp", "delay": 0.03}],
               "segment_seconds": 1}
    stop = threading.Event()

    def stop_after_two(progress) -> None:
        if progress.counts.get("done", 0) >= 2:
            stop.set()

    two_workers = RunSettings(options=EngineOptions(workers=2))
    first = run(JobSpec([str(folder)], out, Pipeline.from_options(options), two_workers), stop=stop,
                on_progress=stop_after_two)
    assert first.interrupted and 2 <= first.counts["done"] < 5
    second = run(JobSpec([str(folder)], out, Pipeline.from_options(options), two_workers))
    assert second.counts["done"] == 5 and not second.interrupted

    ledger = open_ledger(out)
    done = Counter(a["task_id"] for a in LedgerReads(ledger).attempts() if a["outcome"] == "done")
    ledger.close()
    assert set(done.values()) == {1}, "no task finished twice"
    table = load_records(out)
    for name in (*(f"s{i}.mp4" for i in range(4)), "long.mp4"):
        frames = [r["frame"] for r in table.to_pylist() if r["input"] == str(folder / name)]
        assert frames == list(range(len(media_checks.decoded_pts(folder / name)))), name
    changed = {**options, "steps": [{"op": f"{user_module}:Brightness"}, {"op": "job_ops:SlowOp", "delay": 0.01}]}
    with pytest.raises(FramefleetError, match="another pipeline"):
        run(JobSpec([str(folder)], out, Pipeline.from_options(changed), two_workers))


NOISY_OP = '''
import os
from dataclasses import dataclass

from framefleet import FrameBatch, Op


@dataclass(kw_only=True)
class Noisy(Op):
    """Changes nothing and prints, as a careless library would."""

    name = "noisy"

    def process(self, batch: FrameBatch) -> FrameBatch:
        print("noise through print", flush=True)
        os.write(1, b"noise through file descriptor 1\\n")
        return batch
'''


def test_json_output_stays_parseable_when_an_op_or_a_library_prints(tmp_path, clip_factory):
    (tmp_path / "noisy_ops.py").write_text(NOISY_OP)
    folder = inputs_with(tmp_path, {"a.mp4": clip_factory("custom-short.mp4", **SMALL)})
    done = subprocess.run([sys.executable, "-m", "framefleet", "run", str(folder), "-o", str(tmp_path / "out"),
                           "--op", "noisy_ops:Noisy", "--json"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counts"]["done"] == 1  # the result alone on stdout
    assert "noise through print" in done.stderr and "noise through file descriptor 1" in done.stderr
