"""Planning with real measurements: the profiler on tiny synthetic clips, its cache, and the
`framefleet profile`, `plan` and `run --plan` commands end to end.

Clips are 160x90 and 320x180, 48 frames, made once for the module; profiles use 6 frames per setting and
live in temporary folders (XDG_CACHE_HOME too points at one, so ~/.cache is never touched). The module's
profile of the style and identity ops is measured once (`profiled`); tests that measure more copy it first,
so what each test finds in its cache does not depend on the others.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import media_checks
import pytest
import yaml
from cli_helpers import ANSI, cli, stderr_lines, stdout_json
from typer.testing import Result

from framefleet.jobs.directory import open_ledger
from framefleet.pipeline import Pipeline
from framefleet.plan import (
    Knobs,
    NodeType,
    Option,
    ProfileStore,
    budget,
    default_catalogue,
    make_plan,
    measure_workload,
    profile_pipeline,
)
from framefleet.plan import profile as profile_module
from framefleet.plan.cost import enumerate_options
from framefleet.plan.profile import encode_identity, op_identity
from framefleet.processing.streaming import available_cores
from framefleet.video.synth import ClipSpec, write_clip

SAMPLE_FRAMES = 6
SIZES = {"small": (160, 90), "big": (320, 180)}


# -- fixtures and helpers ---------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch, tmp_path: Path) -> None:
    """Whatever falls back on the default cache (~/.cache/framefleet) finds a temporary one."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("plan-clips")
    made = {}
    for name, (width, height) in SIZES.items():
        made[name] = folder / f"{name}.mp4"
        write_clip(made[name], ClipSpec(width=width, height=height, frames=48, gop=12))
    return made


def pipeline(**options) -> Pipeline:
    return Pipeline.from_options({"op": "style", **options})


def profile(store: ProfileStore, pipe: Pipeline, *paths: Path, refresh: bool = False) -> list[str]:
    job = measure_workload([str(p) for p in paths], segment_seconds=pipe.segment_seconds)
    return profile_pipeline(job, pipe, store, frames=SAMPLE_FRAMES, refresh=refresh, say=lambda _: None).measured


def run_key(pipe: Pipeline, name: str) -> str:
    width, height = SIZES[name]
    return f"run|{op_identity(pipe.ops[0])}|{encode_identity(pipe.encode)}|h264|{width}x{height}|cpu"


MAX_SIZE = 100
"""The style op's pipeline in `profiled` sets max_size 100, so that size is profiled too (and the PSNR it
costs); below both clips' sides, unlike the op's own max_size values (720, 480, 360)."""


@pytest.fixture(scope="module")
def profiled(tmp_path_factory, clips) -> dict:
    """This machine's profile of the style op (style 7, at full size and max_size 100) at both sizes and of
    the identity op at the small one; and what each profile_pipeline call said it measured."""
    directory = tmp_path_factory.mktemp("profiles")
    store = ProfileStore(directory=directory)
    measured = {"identity": profile(store, pipeline(op="identity"), clips["small"]),
                "style": profile(store, pipeline(max_size=MAX_SIZE), clips["small"], clips["big"])}
    return {"directory": directory, "store": store, "measured": measured}


def entry(profiled: dict, name: str, **options) -> dict:
    store = profiled["store"]
    value = store.get(store.machine.name, run_key(pipeline(**options), name))
    assert value is not None, f"no profile entry for {name} {options}"
    return value


def stages(cost: dict[str, float]) -> float:
    """Seconds per frame in decode, ops and encode."""
    return cost["decode"] + cost["ops"] + cost["encode"]


def copied_store(profiled: dict, tmp_path: Path) -> ProfileStore:
    """A store over a copy of the module's profile (what a test measures stays in its own copy)."""
    directory = shutil.copytree(profiled["directory"], tmp_path / "profiles")
    return ProfileStore(directory=directory)


def assert_one_line_error(result: Result, *fragments: str) -> None:
    lines = stderr_lines(result)
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# -- the profiler -------------------------------------------------------------------------------------


def test_profiling_measures_every_resolution_once(profiled) -> None:
    store = profiled["store"]
    entries = store.entries(store.machine.name)
    assert profiled["measured"]["identity"] == ["worker_start", run_key(pipeline(op="identity"), "small")]
    # the worker start-up is the machine's, not the op's: measured once
    assert sorted(profiled["measured"]["style"]) == sorted(run_key(pipeline(), name) for name in SIZES)
    assert 0 < entries["worker_start"] < 60
    threads = {f"threads={t}" for t in (2, 4, 8) if t <= available_cores()}
    for name, op in (("small", "identity"), ("small", "style"), ("big", "style")):
        width, height = SIZES[name]
        value = entry(profiled, name, op=op)
        assert value["pixels"] == width * height and value["device"] == "cpu"
        assert value["frames_per_run"] == SAMPLE_FRAMES
        assert value["node_fps"] > 0 and value["task_seconds"] >= 0 and value["join_seconds"] > 0
        # the temporal step of each mode, measured apart at this size (a plan adds it when the pipeline has it on)
        assert set(value["temporal"]) == {"bands", "blend"}
        assert all(step["wall"] > 0 and step["cpu"] >= 0 for step in value["temporal"].values())
        if op == "style":
            # the op's own max_size values (720, 480, 360) are above these sides: full size and the pipeline's
            assert set(value["settings"]) == {"max_size=None", f"max_size={MAX_SIZE}"}
            assert set(value["quality_psnr"]) == {f"max_size={MAX_SIZE}"}
            assert set(value["ratios"]) == threads | {"batch_size=1", "batch_size=8"}
            # what ran the model at each thread count measured, as the workers reported it
            assert set(value["runtime"]) == threads | {"threads=1"}
            assert all(re.fullmatch(r"style: (onnxruntime|openvino) (fp32|bf16|int8)", ran)
                       for ran in value["runtime"].values()), value["runtime"]
        else:
            assert set(value["settings"]) == {"max_size=None"} and value["quality_psnr"] == {}
            assert set(value["ratios"]) == threads
            assert value["runtime"] == {}  # no model runs
    # the file on disk holds the same profile
    again = ProfileStore(directory=profiled["directory"])
    assert again.entries(again.machine.name) == entries


def test_profiler_measures_the_real_op(profiled) -> None:
    """The style model costs far more per frame than passing frames through, on the same frames."""
    style, identity = entry(profiled, "small"), entry(profiled, "small", op="identity")
    style_cost, identity_cost = style["settings"]["max_size=None"], identity["settings"]["max_size=None"]
    assert style_cost["ops"] > 20 * identity_cost["ops"] + 0.001, (style_cost, identity_cost)
    # (stage times are measured directly; "wall" and "cpu" per frame are differences of two short runs,
    # too noisy at 6 frames to compare)
    assert stages(style_cost) > 2 * stages(identity_cost), (style_cost, identity_cost)
    assert style["node_fps"] < identity["node_fps"] / 2
    assert style["setup_seconds"] > identity["setup_seconds"]  # loading the model


def test_profiler_cost_grows_with_resolution(profiled) -> None:
    """4 times the pixels: the model's time per frame grows (about 3 times here), the node's rate falls."""
    small, big = entry(profiled, "small"), entry(profiled, "big")
    small_cost, big_cost = small["settings"]["max_size=None"], big["settings"]["max_size=None"]
    assert big_cost["ops"] > 1.5 * small_cost["ops"], (small_cost, big_cost)
    assert stages(big_cost) > 1.5 * stages(small_cost), (small_cost, big_cost)
    assert big["node_fps"] < small["node_fps"] / 1.5, (small["node_fps"], big["node_fps"])
    # a smaller inference size is cheaper (100 px against 320 px: about a quarter), and costs quality
    reduced = big["settings"][f"max_size={MAX_SIZE}"]
    assert reduced["ops"] < big_cost["ops"] / 2, (reduced, big_cost)
    for value in (small, big):
        assert 10 < value["quality_psnr"][f"max_size={MAX_SIZE}"] < 99


def test_a_plan_counts_the_measured_temporal_step(profiled, clips) -> None:
    """Stylizing with bands (the default) is predicted slower than with --temporal none, from this machine's
    own measurement of the step."""
    store = profiled["store"]
    job = measure_workload([str(clips["big"])], segment_seconds=20.0)
    here = NodeType(name="here", cpus=store.machine.cpus, this_machine=True)

    def predicted(pipe: Pipeline) -> Option:
        base = Knobs(max_size=None, batch_size=pipe.ops[0].batch_size, threads=1)
        return next(o for o in enumerate_options(job, pipe, [here], store) if o.knobs == base)

    bands, plain = predicted(pipeline()), predicted(pipeline(temporal="none"))
    assert bands.wall_seconds > plain.wall_seconds and bands.fps < plain.fps


def test_cached_profiles_are_reused(profiled, clips, monkeypatch) -> None:
    """A second call, in a new store over the same folder, measures nothing."""
    def measuring(*args, **kwargs):
        raise AssertionError("a cached profile was measured again")

    monkeypatch.setattr(profile_module, "pilot", measuring)
    monkeypatch.setattr(profile_module, "measure_resolution", measuring)
    monkeypatch.setattr(profile_module, "worker_start_seconds", measuring)
    store = ProfileStore(directory=profiled["directory"])
    assert profile(store, pipeline(op="identity"), clips["small"]) == []
    assert profile(store, pipeline(), clips["small"], clips["big"]) == []
    # knobs are not part of a profile's identity: another batch size or max_size finds the same entries
    assert profile(store, pipeline(batch_size=8), clips["big"]) == []
    assert profile(store, pipeline(max_size=720), clips["big"]) == []  # 720: above the side, not profiled


def test_changed_style_is_measured_again(profiled, clips, tmp_path: Path) -> None:
    store = copied_store(profiled, tmp_path)
    three = pipeline(style="3")
    assert op_identity(three.ops[0]) != op_identity(pipeline().ops[0])
    assert profile(store, three, clips["small"]) == [run_key(three, "small")]
    assert profile(store, three, clips["small"]) == []  # and cached in turn
    assert store.get(store.machine.name, run_key(pipeline(), "small")) == entry(profiled, "small")  # style 7 kept


def test_changed_op_or_encoder_is_measured_again(profiled, clips, tmp_path: Path) -> None:
    store = copied_store(profiled, tmp_path)
    crf30 = pipeline(op="identity", crf=30)
    key = run_key(crf30, "small")
    assert key != run_key(pipeline(op="identity"), "small")
    assert key.split("|")[1] == run_key(pipeline(op="identity"), "small").split("|")[1]  # same op, other encoder
    assert profile(store, crf30, clips["small"]) == [key]
    # the identity and the style op never share entries
    assert run_key(pipeline(op="identity"), "small") != run_key(pipeline(), "small")


def test_refresh_measures_everything_again(profiled, clips, tmp_path: Path) -> None:
    store = copied_store(profiled, tmp_path)
    identity = pipeline(op="identity")
    before = store.get(store.machine.name, run_key(identity, "small"))
    assert profile(store, identity, clips["small"], refresh=True) == ["worker_start", run_key(identity, "small")]
    after = store.get(store.machine.name, run_key(identity, "small"))
    assert after["measured_at"] > before["measured_at"]


# -- the profiling budget -----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_large_job_profiles_within_a_tenth_of_it(clips, tmp_path: Path) -> None:
    """30,000 links to the small clip (1,440,000 frames): the plan estimates the job from its pilot, budgets a
    tenth of it, samples every frame it was asked for with the batch and thread sweep, and predicts the
    profile well within the budget and within a tenth of the job it predicts for this machine."""
    folder = tmp_path / "many"
    folder.mkdir()
    for index in range(30_000):
        (folder / f"v{index:04d}.mp4").hardlink_to(clips["small"])
    store = ProfileStore(directory=tmp_path / "profiles")
    plan = make_plan([str(folder)], pipeline(max_size=MAX_SIZE), default_catalogue(), store,
                     sample_frames=SAMPLE_FRAMES, fixed={"max_size": MAX_SIZE})
    profiling = plan.profiling
    assert plan.workload["videos"] == 30_000 and plan.workload["frames"] == 30_000 * 48
    assert profiling["job_seconds"] > 600  # a job of more than ten minutes, by the first estimate
    assert profiling["budget_seconds"] == pytest.approx(0.1 * profiling["job_seconds"])
    assert (profiling["frames"], profiling["sweep"], profiling["within_budget"]) == (SAMPLE_FRAMES, True, True), profiling
    assert profiling["pilot_seconds"] < profiling["predicted_seconds"] <= profiling["budget_seconds"]
    assert profiling["predicted_seconds"] <= 0.1 * plan.choice["wall_seconds"]  # the plan's own prediction
    entry = store.get(store.machine.name, run_key(pipeline(), "small"))
    assert entry["frames_per_run"] == SAMPLE_FRAMES and {"batch_size=1", "batch_size=8"} <= set(entry["ratios"])
    assert not any("frames per run" in note for note in plan.notes)  # nothing was cut: no note


@pytest.mark.slow
def test_a_budget_only_the_pilot_fits_takes_the_least_usable_profile(clips, tmp_path: Path, monkeypatch) -> None:
    """With a budget that only the pilot fits in (a floor of 1 ms), the plan takes the least usable profile:
    the fewest frames per run, batch size and threads not swept (its options hold them at the base
    setting), and says so in a note."""
    monkeypatch.setattr(budget, "FLOOR_SECONDS", 0.001)
    store = ProfileStore(directory=tmp_path / "profiles")
    plan = make_plan([str(clips["big"])], pipeline(max_size=MAX_SIZE), default_catalogue(), store,
                     sample_frames=48 - 1, fixed={"max_size": MAX_SIZE})
    profiling = plan.profiling
    assert profiling["budget_seconds"] == pytest.approx(max(0.001, 0.1 * profiling["job_seconds"]))
    assert (profiling["frames"], profiling["sweep"], profiling["within_budget"]) == (budget.MIN_FRAMES, False, False)
    entry = store.get(store.machine.name, run_key(pipeline(), "big"))
    assert entry["frames_per_run"] == budget.MIN_FRAMES and entry["ratios"] == {}
    assert any("8 frames per run, batch size and threads not swept" in note and "over the budget" in note
               for note in plan.notes), plan.notes
    assert all(option["knobs"]["batch_size"] == 4 and option["knobs"]["threads"] == 1 for option in plan.options)


# -- the commands -------------------------------------------------------------------------------------


def test_plan_then_run_with_the_plan(profiled, clips, tmp_path: Path) -> None:
    """plan writes plan.json (sized by the real clips), run --plan runs its pipeline and knobs, and status
    shows the prediction beside what the job measured."""
    profile_dir = copied_store(profiled, tmp_path).directory
    plan_path = tmp_path / "plan.json"
    planned = cli("plan", clips["small"], clips["big"], "--op", "style", "--max-size", MAX_SIZE, "--deadline", "2h",
                  "-o", plan_path, "--json", "--sample-frames", SAMPLE_FRAMES, "--profile-dir", profile_dir)
    assert planned.exit_code == 0, planned.output
    plan = json.loads(plan_path.read_text())
    assert stdout_json(planned) == plan

    real_frames = sum(media_checks.frame_count(clip) for clip in clips.values())
    assert real_frames == 96
    assert plan["workload"]["videos"] == plan["workload"]["probed"] == 2
    assert plan["workload"]["frames"] == real_frames
    assert sorted((r["width"], r["height"], r["share"]) for r in plan["workload"]["resolutions"]) == [
        (160, 90, 0.5), (320, 180, 0.5)]
    assert plan["options"] and 0 <= plan["chosen"] < len(plan["options"])
    choice = plan["options"][plan["chosen"]]
    assert {o["knobs"]["max_size"] for o in plan["options"]} == {MAX_SIZE}  # --max-size pins that knob
    assert choice["this_machine"] and choice["node"] == "this-machine" and choice["nodes"] == 1
    assert choice["basis"] == "measured" and choice["meets_deadline"] is True
    assert choice["quality_psnr"] is not None and 10 < choice["quality_psnr"] < 99  # 100 px against 160 px
    assert choice["fps"] > 0 and choice["wall_seconds"] > 0
    op = plan["pipeline"]["ops"][0]
    assert op["op"] == "style" and op["max_size"] == MAX_SIZE and op["batch_size"] == choice["knobs"]["batch_size"]

    job_dir = tmp_path / "job"
    ran = cli("run", clips["small"], clips["big"], "-o", tmp_path / "out", "--plan", plan_path, "--job-dir", job_dir,
              "--json")
    assert ran.exit_code == 0, ran.output
    assert stdout_json(ran)["counts"]["done"] == 2 and stdout_json(ran)["frames"] == real_frames
    for name, clip in clips.items():
        assert media_checks.frame_count(tmp_path / "out" / clip.name) == 48, name

    ledger = open_ledger(job_dir)
    try:
        stored = ledger.job().spec["ops"][0]
    finally:
        ledger.close()
    assert (stored["op"], stored["max_size"], stored["batch_size"]) == ("style", MAX_SIZE, choice["knobs"]["batch_size"])

    status = cli("status", job_dir, "--json")
    assert status.exit_code == 0, status.output
    state = stdout_json(status)
    prediction = state["prediction"]
    assert prediction["wall_seconds"] == choice["wall_seconds"] and prediction["fps"] == choice["fps"]
    assert (prediction["node"], prediction["nodes"], prediction["knobs"]) == ("this-machine", 1, choice["knobs"])
    assert prediction["frames"] == real_frames and prediction["engine"] == "local"
    assert prediction["overridden"] == []
    assert state["frames_done"] == real_frames and state["elapsed_seconds"] > 0
    table = cli("status", job_dir)
    rows = ANSI.sub("", table.stdout)
    assert table.exit_code == 0 and re.search(r"predicted\s+\d+ s wall, [\d.]+ fps \(this-machine x 1\)", rows), rows
    assert re.search(r"actual\s+\d+ s so far, [\d.]+ fps", rows), rows


def test_a_plan_names_what_ran_and_run_with_it_runs_that(profiled, clips, tmp_path: Path) -> None:
    """plan.json names, per option, the runtime and precision its profile ran; run --plan pins them, so the job
    runs what was predicted, even where `auto` would choose otherwise (a plan predicted on another CPU)."""
    pytest.importorskip("openvino", reason="the other runtime to pin is OpenVINO's")
    profile_dir = copied_store(profiled, tmp_path).directory
    plan_path = tmp_path / "plan.json"
    planned = cli("plan", clips["small"], "--op", "style", "--max-size", MAX_SIZE, "-o", plan_path, "--json",
                  "--sample-frames", SAMPLE_FRAMES, "--profile-dir", profile_dir)
    assert planned.exit_code == 0, planned.output
    plan = json.loads(plan_path.read_text())
    choice = plan["options"][plan["chosen"]]
    assert choice["runtime"] == entry(profiled, "small")["runtime"][f"threads={choice['knobs']['threads']}"]

    def run(name: str) -> list[str]:
        ran = cli("run", clips["small"], "-o", tmp_path / name, "--plan", plan_path, "--job-dir", tmp_path / f"{name}-job",
                  "--json")
        assert ran.exit_code == 0, ran.output
        return stdout_json(ran)["runtimes"]

    assert run("same") == [choice["runtime"]]
    other = "style: onnxruntime fp32" if choice["runtime"] != "style: onnxruntime fp32" else "style: openvino fp32"
    choice["runtime"] = other  # as a plan for a node type whose profile ran another runtime says
    plan_path.write_text(json.dumps(plan))
    assert run("other") == [other]
    # where OpenVINO cannot be imported (as without the extra), a plan that pins it is refused in one line
    choice["runtime"] = "style: openvino fp32"
    plan_path.write_text(json.dumps(plan))
    code = ("import sys; sys.modules['openvino'] = None; from framefleet.cli import main; "
            f"sys.argv = ['framefleet', 'run', {str(clips['small'])!r}, '-o', {str(tmp_path / 'none')!r}, "
            f"'--plan', {str(plan_path)!r}]; main()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        'error: --runtime openvino: OpenVINO is not installed; pip install openvino']


def test_profile_export_then_plan_with_it(profiled, clips, tmp_path: Path) -> None:
    """A profile exported under another machine's name makes that node type measured, not extrapolated."""
    exported = tmp_path / "gpu-box.json"
    made = cli("profile", clips["small"], "--op", "identity", "--machine", "gpu-box", "--export", exported,
               "--sample-frames", SAMPLE_FRAMES, "--profile-dir", tmp_path / "there", "--json")
    assert made.exit_code == 0, made.output
    shown = stdout_json(made)
    assert shown["machine"]["name"] == "gpu-box" and run_key(pipeline(op="identity"), "small") in shown["entries"]
    assert json.loads(exported.read_text())["entries"] == shown["entries"]

    catalogue = tmp_path / "hardware.yaml"
    catalogue.write_text(yaml.safe_dump({"currency": "USD", "nodes": [
        {"name": "cpu-4", "cpus": 4, "price_per_hour": 0.2, "max_nodes": 2},
        # cheaper: on the frontier of time, cost and quality, so it is among the options the plan shows
        {"name": "gpu-1x", "cpus": 4, "gpus": 1, "price_per_hour": 0.01, "max_nodes": 2, "profile": "gpu-box"},
    ]}))
    profile_dir = copied_store(profiled, tmp_path).directory

    def plan(*extra: object) -> dict:
        result = cli("plan", clips["small"], "--op", "identity", "--hardware", catalogue, "-o", tmp_path / "plan.json",
                     "--overwrite", "--json", "--sample-frames", SAMPLE_FRAMES, "--profile-dir", profile_dir, *extra)
        assert result.exit_code == 0, result.output
        return stdout_json(result)

    without, with_gpu = plan(), plan("--profiles", exported)
    assert {o["basis"] for o in without["options"]} == {"extrapolated"}
    assert any("gpu-box not loaded" in note for note in without["notes"])
    gpu = [o for o in with_gpu["options"] if o["node"] == "gpu-1x"]
    assert gpu and {o["basis"] for o in gpu} == {"measured"}
    assert not any("not loaded" in note for note in with_gpu["notes"])


@pytest.mark.parametrize(("args", "fragments"), [
    (["--deadline", "soon"], ["--deadline 'soon'", "2h"]),
    (["--deadline", "-1h"], ["--deadline '-1h'"]),
    (["--hardware", "{tmp}/nowhere.yaml"], ["--hardware", "nowhere.yaml: no such file"]),
    (["--profiles", "{tmp}/missing.json"], ["--profiles", "missing.json"]),
    (["--objective", "speed"], ["--objective must be quality or cost"]),
    (["-o", "{tmp}/nodir/plan.json"], ["--output", "its folder does not exist"]),
    (["--threads", "3"], ["--threads must be one of 1, 2, 4, 8"]),
])
def test_plan_bad_options_fail_in_one_line(clips, tmp_path: Path, args: list[str], fragments: list[str]) -> None:
    result = cli("plan", clips["small"], "--op", "identity", "-o", tmp_path / "plan.json",
                 "--profile-dir", tmp_path / "profiles", *(a.format(tmp=tmp_path) for a in args))
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "plan.json").exists()
    assert not (tmp_path / "profiles").exists()  # failed before measuring anything


def test_run_with_a_bad_plan_fails_in_one_line(clips, tmp_path: Path) -> None:
    missing = cli("run", clips["small"], "-o", tmp_path / "out", "--plan", tmp_path / "missing.json")
    assert_one_line_error(missing, "--plan", "no such file")
    other = tmp_path / "other.json"
    other.write_text('{"nodes": []}')
    assert_one_line_error(cli("run", clips["small"], "-o", tmp_path / "out", "--plan", other), "not a plan file")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_real_plan_tighter_deadline_picks_a_smaller_inference_size(tmp_path: Path) -> None:
    """On a 640x360 clip the style op's own sizes (480, 360) are profiled; a deadline between the fastest
    full-size option and the fastest option overall makes the plan give up full size."""
    clip = tmp_path / "wide.mp4"
    write_clip(clip, ClipSpec(width=640, height=360, frames=48, gop=12))
    common = ["--op", "style", "--json", "--sample-frames", 8, "--profile-dir", tmp_path / "profiles"]
    loose = cli("plan", clip, "-o", tmp_path / "loose.json", *common)
    assert loose.exit_code == 0, loose.output
    plan = stdout_json(loose)
    shown = {o["knobs"]["max_size"] for o in plan["options"]}  # the table keeps a spread of the frontier
    assert None in shown and shown & {480, 360}, shown
    assert plan["options"][plan["chosen"]]["knobs"]["max_size"] is None  # no deadline: full quality
    store = ProfileStore(directory=tmp_path / "profiles")
    (value,) = [v for k, v in store.entries(store.machine.name).items() if k.endswith("|640x360|cpu")]
    assert set(value["settings"]) == {"max_size=None", "max_size=480", "max_size=360"}
    assert value["quality_psnr"]["max_size=480"] > value["quality_psnr"]["max_size=360"]

    full = min(o["wall_seconds"] for o in plan["options"] if o["knobs"]["max_size"] is None)
    fastest = min(o["wall_seconds"] for o in plan["options"])
    assert fastest < full
    tight = cli("plan", clip, "-o", tmp_path / "tight.json", "--deadline", f"{(full + fastest) / 2:.3f}", *common)
    assert tight.exit_code == 0, tight.output
    tight_plan = stdout_json(tight)
    choice = tight_plan["options"][tight_plan["chosen"]]
    assert choice["knobs"]["max_size"] is not None and choice["meets_deadline"] is True
    assert choice["quality_psnr"] is not None and tight_plan["notes"] == []
