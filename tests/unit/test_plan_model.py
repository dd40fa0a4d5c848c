"""The planner's model without measuring anything: durations, the hardware catalogue, the choice among
options, the task simulation, and whole plans over hand-written profiles.

The profiles here are entries as `profile._profile_resolution` stores them (per-frame CPU and wall
seconds per `max_size`, ratios for `batch_size` and `threads`, the node's all-cores rate, PSNR of each
reduced size), with numbers of the order a 4-core machine measures for the style model at 1280x720.
Workloads are built from `VideoWork` objects, so no video is probed; `make_plan` is run with its probing
and profiling replaced by the hand-built workload (the real ones are tested in
tests/integration/test_plan.py).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from framefleet.errors import OptionError
from framefleet.pipeline import Pipeline
from framefleet.plan import apply_plan, load_catalogue, parse_duration, planner
from framefleet.plan.cost import Option, _simulate, _Task, enumerate_options
from framefleet.plan.hardware import Catalogue, NodeType
from framefleet.plan.planner import choose, make_plan
from framefleet.plan.profile import (
    PROFILE_FORMAT,
    Knobs,
    MachineInfo,
    Profiled,
    ProfileStore,
    encode_identity,
    op_identity,
    run_cost,
)
from framefleet.plan.workload import VideoWork, Workload
from framefleet.processing.streaming import available_cores
from framefleet.settings import RunSettings

EXAMPLE_CATALOGUE = Path(__file__).resolve().parents[2] / "examples" / "hardware.yaml"
HERE = MachineInfo(name="here", cpus=4, cpu_model="test cpu", memory_gb=16.0)
PROBE, SEGMENT, JOIN = 2, 1, 0  # cost._KIND_RANK


# -- helpers ----------------------------------------------------------------------------------------


def style_pipeline(**options) -> Pipeline:
    return Pipeline.from_options({"op": "style", **options})


def run_key(pipeline: Pipeline, width: int, height: int, device: str = "cpu", codec: str = "h264") -> str:
    """An entry's key, as `profile_pipeline` writes it."""
    return (f"run|{op_identity(pipeline.ops[0])}|{encode_identity(pipeline.encode)}|{codec}|{width}x{height}"
            f"|{device}")


def setting(wall: float, cpu: float | None = None) -> dict[str, float]:
    """Per-frame seconds of one knob setting: CPU and wall of one worker, and its stages."""
    return {"cpu": wall if cpu is None else cpu, "wall": wall, "decode": 0.01, "ops": wall - 0.03, "encode": 0.02}


def cpu_entry(width: int = 1280, height: int = 720, **changes) -> dict:
    """A profile entry of the style model on a 4-core CPU machine at `width` x `height`."""
    entry = {
        "pixels": width * height,
        "largest_side": max(width, height),
        "device": "cpu",
        "frames_per_run": 12,
        "base_batch_size": 4,
        "setup_seconds": 0.8,
        "task_seconds": 0.5,
        "join_seconds": 0.3,
        "settings": {"max_size=None": setting(0.4), "max_size=720": setting(0.3), "max_size=480": setting(0.15),
                     "max_size=360": setting(0.09)},
        "ratios": {"batch_size=1": {"cpu": 1.05, "wall": 1.05}, "batch_size=8": {"cpu": 1.0, "wall": 1.0},
                   "threads=2": {"cpu": 1.1, "wall": 0.55}, "threads=4": {"cpu": 1.3, "wall": 0.33}},
        "node_fps": 9.0,
        "temporal": {"bands": {"cpu": 0.04, "wall": 0.04}, "blend": {"cpu": 0.01, "wall": 0.01}},
        "quality_psnr": {"max_size=720": 38.0, "max_size=480": 31.5, "max_size=360": 28.0},
        "measured_at": 1_700_000_000.0,
        "framefleet": "0.1.0",
    }
    entry.update(changes)
    return entry


def gpu_entry(node_fps: float = 120.0, wall: float = 0.02) -> dict:
    """A profile entry of the style model on a GPU node (8 cores, one GPU the workers share)."""
    settings = {f"max_size={size}": setting(wall * factor, cpu=0.004)
                for size, factor in ((None, 1.0), (720, 0.8), (480, 0.6), (360, 0.5))}
    for value in settings.values():
        value["ops"] = value["wall"] / 2
    temporal = {"bands": {"cpu": 0.004, "wall": 0.004}, "blend": {"cpu": 0.001, "wall": 0.001}}  # a fast CPU
    return cpu_entry(device="cuda", setup_seconds=2.0, task_seconds=0.4, node_fps=node_fps, settings=settings,
                     temporal=temporal,
                     ratios={"batch_size=1": {"cpu": 1.0, "wall": 1.2}, "batch_size=8": {"cpu": 1.0, "wall": 0.9},
                             "threads=2": {"cpu": 1.0, "wall": 1.0}, "threads=4": {"cpu": 1.0, "wall": 1.0},
                             "threads=8": {"cpu": 1.0, "wall": 1.0}})


def store_with(tmp_path: Path, pipeline: Pipeline, entries: dict[tuple[int, int], dict] | None = None,
               machine: MachineInfo = HERE) -> ProfileStore:
    """A profile store in `tmp_path` holding `entries` (by resolution) for `pipeline` on `machine`."""
    store = ProfileStore(tmp_path / "profiles", machine)
    store.put("worker_start", 0.6)
    for (width, height), entry in (entries or {(1280, 720): cpu_entry()}).items():
        store.put(run_key(pipeline, width, height, entry["device"]), entry)
    return store


def video(index: int = 0, frames: int = 1440, segments: int = 3, width: int = 1280, height: int = 720,
          probe_seconds: float = 0.05) -> VideoWork:
    """A probed 24 fps video cut into `segments` equal segments."""
    share = [frames // segments] * segments
    share[-1] += frames - sum(share)
    return VideoWork(uri=f"/videos/v{index}.mp4", width=width, height=height, codec="h264", frames=frames,
                     duration=frames / 24, segment_frames=tuple(share), probe_seconds=probe_seconds)


def workload(count: int = 20, **video_fields) -> Workload:
    return Workload(videos=tuple(video(i, **video_fields) for i in range(count)), total_videos=count,
                    segment_seconds=20.0)


C4 = NodeType(name="c4", cpus=4, price_per_hour=0.2, startup_seconds=60, max_nodes=16)


def option(name: str = "a", *, wall: float, cost: float | None, psnr: float | None = None, nodes: int = 1) -> Option:
    """A hand-built option (only what `choose` looks at matters)."""
    max_size = None if psnr is None else 480
    return Option(node=name, nodes=nodes, spot=False, knobs=Knobs(max_size=max_size), workers_per_node=4,
                  wall_seconds=wall, startup_seconds=10.0, cost=cost, fps=10.0, quality_psnr=psnr,
                  basis="measured", device="cpu", gpus_per_worker=0.0, this_machine=False)


# -- parse_duration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("2h", 7200), ("90m", 5400), ("1h30m", 5400), ("45s", 45), ("1.5h", 5400), ("600", 600), ("2.5", 2.5),
    (" 1h 30m ", 5400), ("2H", 7200), ("1d", 86400), ("1h0m30s", 3630),
])
def test_parse_duration_reads_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "  ", "abc", "2x", "h", "1h-30m", "1.2.3h", "-5", "0", "0h", "0s", "inf",
                                  "nan", "1e400", "2 hours", "h2"])
def test_parse_duration_rejects_bad_input_in_one_line(text: str) -> None:
    with pytest.raises(OptionError) as caught:
        parse_duration(text)
    message = str(caught.value)
    assert message.startswith(f"--deadline {text!r}:") and "\n" not in message


# -- the hardware catalogue -------------------------------------------------------------------------


def write_catalogue(tmp_path: Path, nodes: list[dict], **top) -> Path:
    path = tmp_path / "hardware.yaml"
    path.write_text(yaml.safe_dump({**top, "nodes": nodes}))
    return path


def catalogue_error(path: Path) -> str:
    """The one-line error loading the catalogue `path` raises."""
    with pytest.raises(OptionError) as caught:
        load_catalogue(path)
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def file_error(path: Path) -> str:
    """The error of a catalogue that is missing or malformed as a whole: it names the file."""
    message = catalogue_error(path)
    assert message.startswith(f"--hardware {path}:"), message
    return message


def test_example_catalogue_loads() -> None:
    catalogue = load_catalogue(EXAMPLE_CATALOGUE)
    assert catalogue.currency == "USD" and catalogue.priced
    nodes = {node.name: node for node in catalogue.nodes}
    assert set(nodes) == {"this-machine", "cpu-16", "gpu-1x"}
    here = nodes["this-machine"]
    assert here.this_machine and here.cpus == available_cores() and here.price_per_hour is None
    assert nodes["cpu-16"].offers() == [False, True] and nodes["cpu-16"].price(True) == 0.25
    assert nodes["gpu-1x"].profile == "gpu-box" and nodes["gpu-1x"].gpus == 1 and nodes["gpu-1x"].max_nodes == 8


def test_catalogue_missing_file(tmp_path: Path) -> None:
    assert file_error(tmp_path / "nowhere.yaml").endswith("no such file")


def test_catalogue_unknown_key_names_node_and_key(tmp_path: Path) -> None:
    path = write_catalogue(tmp_path, [{"name": "c16", "cpus": 16, "price": 0.5}])
    message = file_error(path)
    assert "'c16'" in message and "unknown key(s) price" in message and "price_per_hour" in message


def test_catalogue_duplicate_names(tmp_path: Path) -> None:
    path = write_catalogue(tmp_path, [{"name": "c16", "cpus": 16}, {"name": "c16", "cpus": 8}])
    assert "unique" in file_error(path)


@pytest.mark.parametrize("field", ["price_per_hour", "spot_price_per_hour"])
def test_catalogue_negative_price(tmp_path: Path, field: str) -> None:
    path = write_catalogue(tmp_path, [{"name": "c16", "cpus": 16, field: -0.5}])
    message = file_error(path)
    assert "'c16'" in message and f"{field} must be a non-negative number" in message


@pytest.mark.parametrize(("nodes", "expected"), [
    ([], "non-empty `nodes` list"),
    ([{"cpus": 4}], "node 1 needs a name"),
    ([{"name": "c0"}], "cpus must be at least 1"),
    ([{"name": "c4", "cpus": 4, "max_nodes": 0}], "max_nodes >= 1"),
    ([{"name": "c4", "cpus": 4, "preemptions_per_hour": -1}], "preemptions_per_hour"),
    ([{"name": "c4", "cpus": 4, "startup_seconds": float("nan")}], "startup_seconds"),
    ([{"name": "c4", "cpus": "many"}], "'c4'"),
    ([{"name": "here", "this_machine": True, "max_nodes": 3}], "this_machine is one node"),
])
def test_catalogue_bad_entries(tmp_path: Path, nodes: list[dict], expected: str) -> None:
    assert expected in catalogue_error(write_catalogue(tmp_path, nodes))


def test_catalogue_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "hardware.yaml"
    path.write_text("nodes: [unclosed\n")
    assert file_error(path).startswith(f"--hardware {path}: cannot read it as YAML")


# -- choose -----------------------------------------------------------------------------------------


FULL = option("full", wall=100, cost=5.0)
REDUCED = option("reduced", wall=50, cost=2.0, psnr=31.0)
FAST_FULL = option("fast-full", wall=60, cost=9.0, nodes=4)


def test_choose_prefers_quality_then_cost_when_the_deadline_is_met() -> None:
    chosen, notes = choose([REDUCED, FAST_FULL, FULL], deadline=200, budget=None)
    assert chosen is FULL and notes == []
    assert choose([REDUCED, FAST_FULL, FULL], deadline=None, budget=None)[0] is FULL


def test_choose_a_tighter_deadline_buys_speed() -> None:
    assert choose([REDUCED, FAST_FULL, FULL], deadline=80, budget=None) == (FAST_FULL, [])
    assert choose([REDUCED, FAST_FULL, FULL], deadline=55, budget=None) == (REDUCED, [])


def test_choose_objective_cost_prefers_the_cheapest_on_time() -> None:
    assert choose([REDUCED, FAST_FULL, FULL], deadline=200, budget=None, objective="cost")[0] is REDUCED
    assert choose([FAST_FULL, FULL], deadline=200, budget=None, objective="cost")[0] is FULL


def test_choose_unmet_deadline_takes_the_fastest_with_a_note() -> None:
    tie = option("tie", wall=50, cost=1.0, psnr=29.0)
    chosen, notes = choose([FULL, REDUCED, tie], deadline=30, budget=None)
    assert chosen is tie  # as fast as REDUCED, and cheaper
    assert len(notes) == 1 and "no option meets the deadline of 30 s" in notes[0] and "(50 s)" in notes[0]


def test_choose_budget_that_cannot_be_met_is_reported() -> None:
    chosen, notes = choose([FULL, REDUCED, FAST_FULL], deadline=200, budget=1.0)
    assert chosen is REDUCED  # the cheapest of those on time
    assert notes == ["the budget of 1 cannot be met: the cheapest option that meets the deadline costs 2.00"]


def test_choose_within_budget_prefers_quality_it_can_afford() -> None:
    assert choose([FULL, REDUCED, FAST_FULL], deadline=200, budget=6.0) == (FULL, [])
    assert choose([FULL, REDUCED, FAST_FULL], deadline=200, budget=3.0) == (REDUCED, [])


def test_choose_unpriced_options_are_within_any_budget() -> None:
    free = option("free", wall=150, cost=None)
    assert choose([REDUCED, free], deadline=200, budget=0.0) == (free, [])


# -- the simulation ---------------------------------------------------------------------------------


def tasks_of(video_index: int, segments: list[float], join: float | None = None, probe: float = 0.0) -> list[_Task]:
    tasks = [_Task(PROBE, video_index, 0, probe)]
    tasks += [_Task(SEGMENT, video_index, seq, seconds) for seq, seconds in enumerate(segments)]
    if join is not None:
        tasks.append(_Task(JOIN, video_index, 0, join))
    return tasks


def test_simulate_three_equal_tasks_on_two_workers_take_two_lengths() -> None:
    assert _simulate(tasks_of(0, [10.0, 10.0, 10.0]), workers=2) == pytest.approx(20.0)
    assert _simulate(tasks_of(0, [10.0, 10.0, 10.0]), workers=3) == pytest.approx(10.0)
    assert _simulate(tasks_of(0, [10.0, 10.0, 10.0]), workers=1) == pytest.approx(30.0)


def test_simulate_probe_comes_before_segments() -> None:
    assert _simulate(tasks_of(0, [10.0, 10.0], probe=2.0), workers=2) == pytest.approx(12.0)


def test_simulate_join_waits_for_every_segment_of_its_video() -> None:
    # the join is ready only when the 30 s segment ends, though a worker is free from 10 s
    assert _simulate(tasks_of(0, [10.0, 30.0], join=1.0), workers=2) == pytest.approx(31.0)
    # three segments on two workers: 20 s of segments, then the join
    assert _simulate(tasks_of(0, [10.0, 10.0, 10.0], join=5.0), workers=2) == pytest.approx(25.0)


def test_simulate_joins_go_before_other_videos_segments() -> None:
    """The ledger hands out joins first, then segments, then probes (oldest video first)."""
    tasks = tasks_of(0, [4.0, 6.0], join=3.0) + tasks_of(1, [8.0, 8.0], join=3.0)
    # 2 workers: both probes at 0; video 0's segments run 0..4 and 0..6; video 1's first segment takes the
    # worker freed at 4 (4..12); at 6 video 0's join is ready and goes before video 1's second segment
    # (6..9), which then runs 9..17; video 1's join 17..20. Segments before joins would end at 17.
    assert _simulate(tasks, workers=2) == pytest.approx(20.0)
    assert _simulate(tasks, workers=1) == pytest.approx(4 + 6 + 3 + 8 + 8 + 3)


# -- options from profiles ----------------------------------------------------------------------------


def test_deadline_tightening_buys_nodes_then_cheaper_knobs(tmp_path: Path) -> None:
    pipeline = style_pipeline()
    store = store_with(tmp_path, pipeline)
    options = list(enumerate_options(workload(), pipeline, [C4], store))
    assert {o.knobs.max_size for o in options} == {None, 720, 480, 360}
    assert {o.nodes for o in options} == {1, 2, 3, 4, 6, 8, 12, 16}

    loose, notes = choose(options, deadline=parse_duration("2h"), budget=None)
    assert notes == [] and loose.knobs.max_size is None and loose.nodes == 1
    tight, notes = choose(options, deadline=parse_duration("10m"), budget=None)
    assert notes == [] and tight.knobs.max_size is None and tight.nodes > loose.nodes
    assert tight.wall_seconds <= 600 < loose.wall_seconds
    # full resolution cannot finish in 200 s even on 16 nodes: a smaller inference size has to
    full_fastest = min(o.wall_seconds for o in options if o.knobs.max_size is None)
    assert full_fastest > 200
    tighter, notes = choose(options, deadline=200, budget=None)
    assert notes == [] and tighter.knobs.max_size is not None and tighter.wall_seconds <= 200
    assert tighter.nodes >= tight.nodes and tighter.quality_psnr is not None
    # each step costs quality or nodes, never gains both
    impossible, notes = choose(options, deadline=10, budget=None)
    assert impossible.wall_seconds == min(o.wall_seconds for o in options)
    assert impossible.knobs.max_size == 360 and impossible.nodes == 16 and len(notes) == 1


def test_more_nodes_finish_sooner_and_cost_more(tmp_path: Path) -> None:
    pipeline = style_pipeline()
    store = store_with(tmp_path, pipeline)
    full = Knobs(max_size=None, batch_size=4, threads=1)
    by_count = {o.nodes: o for o in enumerate_options(workload(), pipeline, [C4], store) if o.knobs == full}
    walls = [by_count[n].wall_seconds for n in sorted(by_count)]
    assert walls == sorted(walls, reverse=True) and walls[0] > 4 * walls[-1]
    assert by_count[16].cost > by_count[1].cost  # start-up is paid on every node
    assert all(o.fps * (o.wall_seconds - o.startup_seconds) == pytest.approx(workload().frames) for o in by_count.values())


def test_slower_profile_predicts_longer_jobs(tmp_path: Path) -> None:
    """Twice the seconds per frame and half the node's rate: about twice the run time (fixed costs aside)."""
    pipeline = style_pipeline(temporal="none")
    fast = store_with(tmp_path / "fast", pipeline)
    slow_entry = cpu_entry(node_fps=4.5, settings={k: setting(v["wall"] * 2) for k, v in cpu_entry()["settings"].items()})
    slow = store_with(tmp_path / "slow", pipeline, {(1280, 720): slow_entry})
    full = Knobs(max_size=None, batch_size=4, threads=1)

    def one_node(store: ProfileStore) -> Option:
        return next(o for o in enumerate_options(workload(), pipeline, [C4], store) if o.knobs == full and o.nodes == 1)

    fast_option, slow_option = one_node(fast), one_node(slow)
    assert slow_option.fps == pytest.approx(fast_option.fps / 2, rel=0.01)
    assert slow_option.wall_seconds - slow_option.startup_seconds == pytest.approx(
        2 * (fast_option.wall_seconds - fast_option.startup_seconds), rel=0.01)


def test_the_temporal_step_is_planned_on_top_of_each_frame(tmp_path: Path) -> None:
    """bands (the style op's default) adds its measured step to every frame; --temporal none adds nothing."""
    bands, plain = style_pipeline(), style_pipeline(temporal="none")
    store = store_with(tmp_path, bands)  # one entry serves both: the temporal mode is not part of its key
    full = Knobs(max_size=None, batch_size=4, threads=1)
    on, off = (run_cost(store, "here", pipeline, video(), full) for pipeline in (bands, plain))
    assert off.temporal_per_frame == 0 and on.temporal_per_frame == pytest.approx(0.04)
    assert on.cpu_per_frame == pytest.approx(off.cpu_per_frame + 0.04)
    assert on.wall_per_frame == pytest.approx(off.wall_per_frame + 0.04)
    assert on.node_fps == pytest.approx(off.node_fps * 0.4 / 0.44)  # the node's CPU shared with the step
    blend = run_cost(store, "here", style_pipeline(temporal="blend"), video(), full)
    assert off.cpu_per_frame < blend.cpu_per_frame < on.cpu_per_frame

    def one_node(pipeline: Pipeline) -> Option:
        return next(o for o in enumerate_options(workload(), pipeline, [C4], store) if o.knobs == full and o.nodes == 1)

    with_step, without = one_node(bands), one_node(plain)
    assert with_step.wall_seconds > without.wall_seconds and with_step.cost > without.cost
    assert with_step.fps < without.fps
    # a profile entry without the step's measurement predicts nothing for a pipeline that has it on
    store.put(run_key(bands, 1280, 720), {k: v for k, v in cpu_entry().items() if k != "temporal"})
    assert run_cost(store, "here", bands, video(), full) is None
    assert run_cost(store, "here", plain, video(), full) is not None


def test_unprofiled_resolution_is_scaled_by_pixels(tmp_path: Path) -> None:
    pipeline = style_pipeline()
    store = store_with(tmp_path, pipeline)
    full = Knobs(max_size=None, batch_size=4, threads=1)
    at_720 = run_cost(store, "here", pipeline, video(), full)
    at_1080 = run_cost(store, "here", pipeline, video(width=1920, height=1080), full)
    assert at_720.measured and not at_1080.measured
    assert at_1080.wall_per_frame == pytest.approx(at_720.wall_per_frame * 2.25)
    assert at_1080.node_fps == pytest.approx(at_720.node_fps / 2.25)
    here = NodeType(name="here", cpus=4, this_machine=True)
    assert {o.basis for o in enumerate_options(workload(), pipeline, [here], store)} == {"measured"}
    options = list(enumerate_options(workload(width=1920, height=1080), pipeline, [here], store))
    assert options and {o.basis for o in options} == {"scaled"}


def test_other_ops_or_encoders_find_no_profile(tmp_path: Path) -> None:
    store = store_with(tmp_path, style_pipeline())
    full = Knobs(max_size=None, batch_size=4, threads=1)
    assert run_cost(store, "here", style_pipeline(), video(), full) is not None
    for other in (style_pipeline(style="3"), style_pipeline(crf=30), Pipeline.from_options({"op": "identity"})):
        assert run_cost(store, "here", other, video(), replace(full, batch_size=other.ops[0].batch_size)) is None
    # knobs are not part of the identity: the same profile serves every max_size and batch size
    assert run_cost(store, "here", style_pipeline(max_size=480, batch_size=8), video(), full) is not None


def test_mixed_resolutions_offer_every_size_below_the_largest(tmp_path: Path) -> None:
    """max_size 720 is full size for a 640x360 video: it is offered for a job mixing it with 1280x720 videos,
    whichever video comes first, and its quality is the larger video's."""
    pipeline = style_pipeline()
    small = cpu_entry(640, 360, settings={k: v for k, v in cpu_entry()["settings"].items() if k != "max_size=720"},
                      quality_psnr={"max_size=480": 33.0, "max_size=360": 30.0})
    store = store_with(tmp_path, pipeline, {(1280, 720): cpu_entry(), (640, 360): small})
    videos = (video(0), video(1, width=640, height=360))
    for order in (videos, videos[::-1]):
        job = Workload(videos=order, total_videos=2, segment_seconds=20.0)
        options = list(enumerate_options(job, pipeline, [C4], store))
        assert {o.knobs.max_size for o in options} == {None, 720, 480, 360}
        quality = {o.knobs.max_size: o.quality_psnr for o in options}
        assert quality == {None: None, 720: 38.0, 480: 31.5, 360: 28.0}  # the lowest over the two videos


def test_the_pipelines_own_batch_size_is_a_knob_setting(tmp_path: Path) -> None:
    """A profile measured at batch 2 (the pipeline's) holds ratios for the op's other batch sizes."""
    pipeline = style_pipeline(batch_size=2)
    ratios = {**cpu_entry()["ratios"], "batch_size=4": {"cpu": 0.95, "wall": 0.95}}
    del ratios["batch_size=1"]
    store = store_with(tmp_path, pipeline, {(1280, 720): cpu_entry(base_batch_size=2, ratios=ratios)})
    batches = {o.knobs.batch_size for o in enumerate_options(workload(), pipeline, [C4], store)}
    assert batches == {2, 4, 8}  # 1 has no ratio in this profile: not predicted


def test_gpu_options_reserve_a_share_of_the_gpu(tmp_path: Path) -> None:
    pipeline = style_pipeline()
    store = store_with(tmp_path, pipeline)
    store.import_file(write_gpu_profile(tmp_path / "gpu-box.json", pipeline))
    for option_ in enumerate_options(workload(), pipeline, gpu_catalogue(tmp_path).nodes, store):
        if option_.node == "g8":
            assert option_.workers_per_node == 8 // option_.knobs.threads
            assert option_.gpus_per_worker == pytest.approx(1 / option_.workers_per_node)
        else:
            assert option_.gpus_per_worker == 0.0


def write_gpu_profile(path: Path, pipeline: Pipeline, **entry_changes) -> Path:
    """A profile as `framefleet profile --machine gpu-box --export FILE` writes it on a GPU node."""
    profile = {
        "format": PROFILE_FORMAT,
        "machine": {"name": "gpu-box", "cpus": 8, "cpu_model": "AMD EPYC 7R32", "memory_gb": 32.0,
                    "gpus": ["NVIDIA A10G"]},
        "entries": {"worker_start": 1.5, run_key(pipeline, 1280, 720, "cuda"): gpu_entry(**entry_changes)},
    }
    path.write_text(json.dumps(profile))
    return path


def gpu_catalogue(tmp_path: Path) -> Catalogue:
    return load_catalogue(write_catalogue(tmp_path, [
        {"name": "c8", "cpus": 8, "price_per_hour": 0.4, "startup_seconds": 90, "max_nodes": 4},
        {"name": "g8", "cpus": 8, "gpus": 1, "price_per_hour": 1.2, "startup_seconds": 90, "max_nodes": 4,
         "profile": "gpu-box"},
    ], currency="USD"))


def test_imported_gpu_profile_is_used(tmp_path: Path) -> None:
    pipeline = style_pipeline()
    store = store_with(tmp_path, pipeline)
    assert store.import_file(write_gpu_profile(tmp_path / "gpu-box.json", pipeline)) == "gpu-box"
    assert store.machines() == ["here", "gpu-box"] and store.machine_info("gpu-box").gpus == ("NVIDIA A10G",)
    options = list(enumerate_options(workload(), pipeline, gpu_catalogue(tmp_path).nodes, store))
    gpu = [o for o in options if o.node == "g8"]
    cpu = {(o.nodes, o.knobs): o for o in options if o.node == "c8"}
    assert gpu and cpu
    assert {o.basis for o in gpu} == {"measured"} and {o.device for o in gpu} == {"cuda"}
    assert {o.basis for o in cpu.values()} == {"extrapolated"} and {o.device for o in cpu.values()} == {"cpu"}
    # threads up to 8: the GPU profile has those ratios, this 4-core machine's does not
    assert max(o.knobs.threads for o in gpu) == 8 and max(o.knobs.threads for o in cpu.values()) == 4
    twins = [(option_, cpu[option_.nodes, option_.knobs]) for option_ in gpu if (option_.nodes, option_.knobs) in cpu]
    assert len(twins) > 50
    for option_, twin in twins:
        assert option_.fps > 2 * twin.fps and option_.wall_seconds < twin.wall_seconds
        if option_.knobs.max_size is None:  # 120 fps against 9 fps per 4 cores, doubled for 8
            assert option_.fps > 5 * twin.fps


def test_imported_gpu_predictions_follow_its_numbers(tmp_path: Path) -> None:
    """One video, one segment, one node: the prediction is the imported numbers put together by hand."""
    pipeline = style_pipeline()
    job = Workload(videos=(video(frames=480, segments=1),), total_videos=1, segment_seconds=20.0)
    knobs = Knobs(max_size=None, batch_size=4, threads=1)
    predicted = {}
    for node_fps in (120.0, 240.0):
        store = store_with(tmp_path / str(node_fps), pipeline)
        store.import_file(write_gpu_profile(tmp_path / f"gpu-{node_fps}.json", pipeline, node_fps=node_fps))
        nodes = [n for n in gpu_catalogue(tmp_path).nodes if n.name == "g8"]
        predicted[node_fps] = next(o for o in enumerate_options(job, pipeline, nodes, store)
                                   if o.nodes == 1 and o.knobs == knobs)
    entry = gpu_entry()
    wall, step = entry["settings"]["max_size=None"]["wall"], entry["temporal"]["bands"]["wall"]  # bands: the default
    for node_fps, option_ in predicted.items():
        per_frame = max(8 / (node_fps * wall / (wall + step)), wall + step)  # 8 workers share the GPU
        run_seconds = 0.05 + entry["task_seconds"] + 480 * per_frame  # probe, then the one segment
        startup = 90 + 1.5 + entry["setup_seconds"]  # node start-up, worker start, model set-up
        assert option_.startup_seconds == pytest.approx(startup)
        assert option_.wall_seconds == pytest.approx(startup + run_seconds)
        assert option_.fps == pytest.approx(480 / run_seconds)
        assert option_.cost == pytest.approx((startup + run_seconds) / 3600 * 1.2)
    assert predicted[240.0].fps > 1.8 * predicted[120.0].fps


def test_import_file_errors(tmp_path: Path) -> None:
    store = store_with(tmp_path, style_pipeline())
    bad = []
    for number, content in enumerate(("not json", "[]", json.dumps({"format": PROFILE_FORMAT, "entries": {}}),
                                      json.dumps({"format": PROFILE_FORMAT - 1, "machine": HERE.__dict__ | {"name": "old"},
                                                  "entries": {}}))):
        bad.append(tmp_path / f"bad-{number}.json")
        bad[-1].write_text(content)
    for path in (*bad, tmp_path / "missing.json"):
        with pytest.raises(OptionError, match=r"^--profiles .*not a profile of this framefleet version \(format \d+\)"):
            store.import_file(path)
    mine = store.export(tmp_path / "mine.json")
    with pytest.raises(OptionError, match="it is a profile of this machine"):
        store.import_file(mine)


def test_export_then_import_on_another_machine(tmp_path: Path) -> None:
    pipeline = style_pipeline()
    gpu_box = MachineInfo(name="gpu-box", cpus=8, cpu_model="x", memory_gb=32.0, gpus=("NVIDIA A10G",))
    there = store_with(tmp_path / "there", pipeline, {(1280, 720): gpu_entry()}, machine=gpu_box)
    exported = there.export(tmp_path / "gpu-box.json")
    assert there.save().parent == tmp_path / "there" / "profiles"
    here = ProfileStore(tmp_path / "here", HERE)
    assert here.import_file(exported) == "gpu-box"
    assert here.entries("gpu-box") == there.entries("gpu-box") and here.machine_info("gpu-box") == gpu_box
    assert here.entries("here") == {}  # importing is not measuring: this machine's profile is untouched


# -- make_plan over a hand-built workload -------------------------------------------------------------


@pytest.fixture
def planned(monkeypatch, tmp_path: Path):
    """make_plan with the inputs' probing and the profiling replaced by a hand-built workload and store."""
    job = workload()
    monkeypatch.setattr(planner, "measure_workload", lambda inputs, **_: job)
    measured: list = []
    monkeypatch.setattr(planner, "profile_pipeline", lambda *args, **kwargs: measured.append(args) or Profiled())
    pipeline = style_pipeline()
    store = store_with(tmp_path, pipeline)

    def plan(catalogue: Catalogue | None = None, **options):
        catalogue = catalogue or Catalogue(nodes=(C4,), currency="USD")
        return make_plan(["/videos"], pipeline, catalogue, store, **options)

    plan.store, plan.measured, plan.job = store, measured, job
    return plan


def test_make_plan_budget_that_cannot_be_met(planned) -> None:
    result = planned(deadline_seconds=600, budget=0.01)
    choice = result.choice
    assert choice["meets_deadline"] is True and choice["within_budget"] is False
    assert any("budget of 0.01 cannot be met" in note for note in result.notes)
    on_time = [o for o in result.options if o["meets_deadline"]]
    assert choice["cost"] == min(o["cost"] for o in on_time)
    assert len(planned.measured) == 1  # make_plan asked for the profile of the job's videos


def test_make_plan_tighter_deadline_changes_the_plan(planned) -> None:
    loose, tight, tighter = (planned(deadline_seconds=d) for d in (7200, 600, 200))
    assert loose.choice["nodes"] < tight.choice["nodes"]
    assert tight.choice["knobs"]["max_size"] is None and tighter.choice["knobs"]["max_size"] is not None
    for result in (loose, tight, tighter):
        # c4 names no profile: predicted from this machine's (the same 4 cores), and the plan says so
        assert [note.split(":")[0] for note in result.notes] == ["extrapolated"]
        assert result.choice["meets_deadline"] is True and result.choice["basis"] == "extrapolated"
        # the plan's pipeline carries the chosen knobs
        op = result.pipeline["ops"][0]
        assert (op["max_size"], op["batch_size"]) == (result.choice["knobs"]["max_size"],
                                                    result.choice["knobs"]["batch_size"])
    assert loose.workload["frames"] == planned.job.frames == 28800
    assert tighter.choice["quality_psnr"] < 99 and tight.choice["quality_psnr"] is None


def test_make_plan_fixed_max_size_and_impossible_deadline(planned) -> None:
    result = planned(deadline_seconds=10, fixed={"max_size": 480})
    assert {o["knobs"]["max_size"] for o in result.options} == {480}
    assert result.choice["meets_deadline"] is False
    assert any("no option meets the deadline" in note for note in result.notes)
    assert result.pipeline["ops"][0]["max_size"] == 480


def test_make_plan_fixed_knobs(planned) -> None:
    result = planned(deadline_seconds=600, fixed={"threads": 2, "batch_size": 8})
    assert {(o["knobs"]["threads"], o["knobs"]["batch_size"]) for o in result.options} == {(2, 8)}
    assert result.pipeline["ops"][0]["batch_size"] == 8
    with pytest.raises(OptionError, match=r"fixed \(batch_size=2\)"):
        planned(fixed={"batch_size": 2})  # not profiled: this profile holds batch 4 and ratios for 1 and 8
    with pytest.raises(OptionError, match="cannot fix device"):
        planned(fixed={"device": "cuda"})


def test_make_plan_objective_cost(planned) -> None:
    quality = planned(deadline_seconds=7200)
    cost = planned(deadline_seconds=7200, objective="cost")
    assert quality.choice["quality_psnr"] is None
    assert cost.choice["cost"] < quality.choice["cost"] and cost.choice["knobs"]["max_size"] == 360


def test_make_plan_notes_unloaded_profiles_and_extrapolation(planned, tmp_path: Path) -> None:
    result = planned(gpu_catalogue(tmp_path))
    assert any("gpu-box not loaded" in note for note in result.notes)
    assert any(note.startswith("extrapolated") for note in result.notes)
    assert {o["basis"] for o in result.options} == {"extrapolated"}
    planned.store.import_file(write_gpu_profile(tmp_path / "gpu-box.json", style_pipeline()))
    imported = planned(gpu_catalogue(tmp_path))
    assert not any("not loaded" in note for note in imported.notes)
    gpu = [o for o in imported.options if o["node"] == "g8"]
    assert gpu and {o["basis"] for o in gpu} == {"measured"}
    assert imported.choice["node"] == "g8"  # faster and, at 1.2/h against 0.4/h, still cheaper per frame


def test_make_plan_unpriced_catalogue_ignores_the_budget(planned) -> None:
    unpriced = Catalogue(nodes=(NodeType(name="box", cpus=4, max_nodes=2),))
    result = planned(unpriced, budget=1.0)
    assert any("no prices" in note for note in result.notes)
    assert result.choice["cost"] is None and result.choice["within_budget"] is None


def test_make_plan_rejects_a_negative_budget(planned) -> None:
    with pytest.raises(OptionError, match="--budget"):
        planned(budget=-1.0)


def test_plan_round_trip_and_apply(planned, tmp_path: Path) -> None:
    result = planned(deadline_seconds=200)
    path = result.write(tmp_path / "plan.json")
    plan = planner.read_plan(path)
    choice = plan.choice
    pipeline, settings, prediction = apply_plan(plan, {"max_size": None}, {})
    assert pipeline.ops[0].max_size == choice["knobs"]["max_size"] is not None
    assert settings.engine == "ray" and settings.options.workers == choice["workers"]
    assert settings.options.threads_per_worker == choice["knobs"]["threads"]
    assert settings.ray.cpus_per_worker == choice["knobs"]["threads"]
    assert prediction["wall_seconds"] == choice["wall_seconds"] and prediction["frames"] == 28800
    assert prediction["overridden"] == []
    overridden, settings, prediction = apply_plan(plan, {"max_size": 720}, {"engine": "local", "workers": 2})
    assert overridden.ops[0].max_size == 720 and prediction["overridden"] == ["max_size"]
    assert settings.engine == "local" and settings.options.workers == 2
    # a cluster plan run here: its knobs apply, its worker count does not
    _, here, _ = apply_plan(plan, {}, {"engine": "local", "workers": None})
    assert here.options.workers is None and here.ray.cpus_per_worker is None and here.ray.gpus_per_worker is None
    assert here.options.threads_per_worker == choice["knobs"]["threads"]
    # flags the plan does not speak of keep the base settings'
    _, kept, _ = apply_plan(plan, {}, {"max_attempts": 7}, RunSettings(parts_dir="az://scratch/j"))
    assert kept.retry.max_attempts == 7 and kept.parts_dir == "az://scratch/j"
    with pytest.raises(OptionError, match="the plan is for op style"):
        apply_plan(plan, {"op": "identity"}, {})


def test_read_plan_rejects_other_files(tmp_path: Path) -> None:
    for content, expected in (("not json", "not a plan file"), ("{}", "write one with framefleet plan"),
                              ('{"pipeline": {}, "options": [], "chosen": 0}', "not a plan file")):
        path = tmp_path / "plan.json"
        path.write_text(content)
        with pytest.raises(OptionError, match=expected):
            planner.read_plan(path)
    with pytest.raises(OptionError, match="no such file"):
        planner.read_plan(tmp_path / "missing.json")


def test_gpu_nodes_scale_with_their_gpus_not_their_cores(tmp_path: Path) -> None:
    """A node type with twice the cores but the same one GPU as the profiled box is no faster."""
    pipeline = style_pipeline()
    store = store_with(tmp_path, pipeline)
    store.import_file(write_gpu_profile(tmp_path / "gpu-box.json", pipeline))
    catalogue = load_catalogue(write_catalogue(tmp_path, [
        {"name": "g8", "cpus": 8, "gpus": 1, "price_per_hour": 1.2, "profile": "gpu-box"},
        {"name": "g16", "cpus": 16, "gpus": 1, "price_per_hour": 1.5, "profile": "gpu-box"},
        {"name": "g16x2", "cpus": 16, "gpus": 2, "price_per_hour": 2.4, "profile": "gpu-box"},
    ], currency="USD"))
    job = workload(count=40)
    knobs = Knobs(max_size=None, batch_size=4, threads=1)
    fps = {o.node: o.fps for o in enumerate_options(job, pipeline, catalogue.nodes, store) if o.knobs == knobs}
    assert fps["g16"] == pytest.approx(fps["g8"], rel=0.1)
    assert fps["g16x2"] > 1.8 * fps["g8"]


def test_fixed_max_size_at_or_above_every_side_plans_full_size(planned) -> None:
    result = planned(deadline_seconds=7200, fixed={"max_size": 4096})  # the job is 1280x720
    assert {o["knobs"]["max_size"] for o in result.options} == {None}
    assert result.choice["quality_psnr"] is None


@pytest.mark.parametrize("threads", [3, 16])
def test_fixed_threads_outside_the_profiled_values_are_refused_first(planned, threads: int) -> None:
    with pytest.raises(OptionError, match="--threads must be one of 1, 2, 4, 8"):
        planned(fixed={"threads": threads})
    assert planned.measured == []  # refused before any profiling
