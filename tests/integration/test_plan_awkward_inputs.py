"""`framefleet plan` and `profile` over the inputs a first try brings (issue 27): a clip the profiler cannot
sample, one that does not even probe, an MPEG-TS with a single keyframe; knobs fixed by flags, a second plan
over the same sizes, the table in 80 columns and `--progress` for scripts.

Real clips made with PyAV (48 frames unless said), the style model at a small `--max-size`, 6 frames per
profiling run; profiles and XDG_CACHE_HOME in temporary folders.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import ANSI, cli, stderr_lines
from test_plan import _private_cache  # noqa: F401 - autouse: XDG_CACHE_HOME in a temporary folder

from framefleet.pipeline import Pipeline
from framefleet.plan import ProfileStore, measure_workload, profile_pipeline
from framefleet.video.synth import ClipSpec, write_clip

pytestmark = pytest.mark.slow  # each test profiles the real style model (about 20 s): make test-slow runs them

SAMPLE_FRAMES = 6
MAX_SIZE = 64
FIXED = ("--max-size", MAX_SIZE, "--threads", 1, "--batch-size", 4)
"""Every knob fixed: one setting per size is measured, which keeps these tests short."""


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("awkward-clips")
    made = {
        # an MPEG-TS whose only keyframe is its first frame: a seek to it lands past it, and nothing decodes
        "one-keyframe.ts": ClipSpec(width=192, height=108, frames=48, gop=1000),
        # too short for a profiling run, with a sibling of its size and codec that is long enough
        "a-short.mp4": ClipSpec(width=160, height=90, frames=3),
        "b-long.mp4": ClipSpec(width=160, height=90, frames=48, gop=12),
        # too short, and alone at its size
        "short-alone.mp4": ClipSpec(width=128, height=72, frames=3),
    }
    paths = {}
    for name, spec in made.items():
        paths[name] = folder / name
        write_clip(paths[name], spec)
    broken = folder / "broken.mp4"  # probes as far as its header, but no frame decodes: zeroed picture data
    write_clip(broken, ClipSpec(width=160, height=90, frames=24))
    data = bytearray(broken.read_bytes())
    at = data.index(b"mdat")
    size = int.from_bytes(data[at - 4:at], "big")
    data[at + 4:at - 4 + size] = bytes(size - 8)
    broken.write_bytes(bytes(data))
    paths["broken.mp4"] = broken
    return paths


def plan(tmp_path: Path, *inputs: Path, extra: tuple = ()):
    return cli("plan", *inputs, *FIXED, "--sample-frames", SAMPLE_FRAMES, "--profile-dir", tmp_path / "profiles",
               "-o", tmp_path / "plan.json", "--overwrite", *extra)


def notes(result) -> list[str]:
    return [line for line in stderr_lines(result) if line.startswith("note:")]


def test_an_mpeg_ts_with_one_keyframe_is_profiled(clips, tmp_path: Path) -> None:
    result = plan(tmp_path, clips["one-keyframe.ts"])
    assert result.exit_code == 0, result.output
    assert not notes(result), notes(result)
    choice = json.loads((tmp_path / "plan.json").read_text())
    assert choice["options"][choice["chosen"]]["basis"] == "measured"


def test_a_clip_too_short_to_sample_is_profiled_from_a_sibling_of_its_size(clips, tmp_path: Path) -> None:
    result = plan(tmp_path, clips["a-short.mp4"], clips["b-long.mp4"])
    assert result.exit_code == 0, result.output
    [note] = notes(result)
    assert "a-short.mp4" in note and "too short" in note and "profiled from" in note and "b-long.mp4" in note
    written = json.loads((tmp_path / "plan.json").read_text())
    assert written["workload"]["videos"] == 2 and written["options"][written["chosen"]]["basis"] == "measured"
    # planned again: the sibling's cached profile stands for the size; the short clip is not tried again
    again = plan(tmp_path, clips["a-short.mp4"], clips["b-long.mp4"], extra=("--progress", "lines"))
    assert again.exit_code == 0, again.output
    assert not [line for line in stderr_lines(again) if "profiling" in line or "cannot sample" in line]


def test_a_clip_that_cannot_be_sampled_nor_replaced_is_planned_from_the_nearest_size(clips, tmp_path: Path) -> None:
    result = plan(tmp_path, clips["short-alone.mp4"], clips["b-long.mp4"])
    assert result.exit_code == 0, result.output
    [note] = notes(result)
    assert "short-alone.mp4" in note and "nearest size profiled" in note
    written = json.loads((tmp_path / "plan.json").read_text())
    assert written["workload"]["videos"] == 2
    assert written["options"][written["chosen"]]["basis"] == "scaled"  # 128x72 from the 160x90 profile


def test_a_clip_that_does_not_probe_is_left_out_and_the_plan_goes_on(clips, tmp_path: Path) -> None:
    result = plan(tmp_path, clips["broken.mp4"], clips["b-long.mp4"])
    assert result.exit_code == 0, result.output
    [note] = notes(result)
    assert note.startswith("note: left out:") and "broken.mp4" in note and "corrupt video" in note
    assert json.loads((tmp_path / "plan.json").read_text())["workload"]["videos"] == 1


def test_a_plan_of_nothing_but_unsamplable_clips_fails_in_one_line(clips, tmp_path: Path) -> None:
    result = plan(tmp_path, clips["broken.mp4"], extra=("--progress", "none"))
    assert result.exit_code == 2
    [line] = stderr_lines(result)
    assert line.startswith("error: nothing to plan") and "broken.mp4" in line


def test_knobs_fixed_by_flags_are_not_swept_and_a_second_plan_measures_nothing(clips, tmp_path: Path) -> None:
    pipeline = Pipeline.from_options({"op": "style", "max_size": MAX_SIZE})
    store = ProfileStore(directory=tmp_path / "profiles")
    workload = measure_workload([str(clips["b-long.mp4"]), str(clips["one-keyframe.ts"])],
                                segment_seconds=pipeline.segment_seconds)
    fixed = {"max_size": MAX_SIZE, "threads": 1, "batch_size": 4}
    first = profile_pipeline(workload, pipeline, store, frames=SAMPLE_FRAMES, fixed=fixed, say=lambda _: None)
    assert len(first.measured) == 3 and first.unsampled == []  # the worker start and the two sizes
    for key in first.measured[1:]:
        entry = store.get(store.machine.name, key)
        assert set(entry["settings"]) == {f"max_size={MAX_SIZE}"}  # not full size, 720, 480, 360
        assert entry["ratios"] == {}  # neither batch sizes nor threads
        assert entry["base_max_size"] == MAX_SIZE and entry["base_threads"] == 1
    # another plan over one of the clips, the cache read from disk afresh: nothing is measured again
    again = profile_pipeline(measure_workload([str(clips["b-long.mp4"])], segment_seconds=pipeline.segment_seconds),
                             pipeline, ProfileStore(directory=tmp_path / "profiles"), frames=SAMPLE_FRAMES,
                             fixed=fixed, say=lambda _: None)
    assert again.measured == [] and again.covered == [first.measured[1]]
    # the CLI with the same flags: nothing measured (no "profiling" step), the plan from the cache
    result = cli("plan", clips["b-long.mp4"], *FIXED, "--sample-frames", SAMPLE_FRAMES, "--profile-dir",
                 tmp_path / "profiles", "-o", tmp_path / "plan.json", "--progress", "lines")
    assert result.exit_code == 0, result.output
    assert not [line for line in stderr_lines(result) if "profiling" in line or "measuring" in line]


def test_the_plan_table_fits_80_columns_without_ellipses(clips, tmp_path: Path) -> None:
    catalogue = tmp_path / "hardware.yaml"
    catalogue.write_text("currency: USD\nnodes:\n"  # no this-machine: it would beat every other (free, as fast)
                         "  - {name: cpu-16-extrapolated-node, cpus: 16, price_per_hour: 0.68,\n"
                         "     spot_price_per_hour: 0.21, max_nodes: 8}\n")
    result = plan(tmp_path, clips["b-long.mp4"], extra=("--hardware", catalogue, "--deadline", "1h"))
    assert result.exit_code == 0, result.output
    table = ANSI.sub("", result.stdout).splitlines()
    assert len(table) > 5
    assert all(len(line) <= 80 for line in table), max(table, key=len)
    assert "…" not in result.stdout and "..." not in result.stdout
    text = result.stdout
    for word in ("option", "time", "quality", "deadline", "cpu-16-extrapolated-node", "extrapolated", "meets",
                 f"max_size={MAX_SIZE}", "threads=1"):
        assert word in text, word


def test_plan_progress_json_is_one_object_per_line(clips, tmp_path: Path) -> None:
    result = plan(tmp_path, clips["b-long.mp4"], extra=("--progress", "json"))
    assert result.exit_code == 0, result.output
    lines = [line for line in stderr_lines(result) if not line.startswith(("note:", "wrote"))]
    steps = [json.loads(line) for line in lines]
    assert [step["step"] for step in steps] == list(range(1, len(steps) + 1))
    assert all(step["command"] == "plan" and step["elapsed_seconds"] >= 0 for step in steps)
    texts = [step["text"] for step in steps]
    assert texts[0] == "probing the inputs" and any(text.startswith("profiling 160x90") for text in texts)


@pytest.mark.parametrize("mode", ["none", "lines"])
def test_profile_progress_none_and_lines(clips, tmp_path: Path, mode: str) -> None:
    result = cli("profile", clips["b-long.mp4"], "--sample-frames", SAMPLE_FRAMES,
                 "--profile-dir", tmp_path / "profiles", "--progress", mode, "--json")
    assert result.exit_code == 0, result.output
    json.loads(ANSI.sub("", result.stdout))
    lines = stderr_lines(result)
    if mode == "none":
        assert lines == []
    else:
        assert lines[0] == "probing the inputs" and any(line.startswith("profiling 160x90") for line in lines)
