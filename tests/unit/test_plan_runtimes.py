"""Runtime and precision as knobs per node type, over hand-written profiles: what a profile entry records as
having run, what each option of a plan says it is predicted with (an extrapolated node type: this machine's),
the plan table's knobs cell, and `apply_plan` pinning it unless `--runtime` or `--precision` is given.
(Measured end to end in tests/integration/test_plan.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from test_plan_model import C4, HERE, cpu_entry, run_key, store_with, style_pipeline, workload

from framefleet.cli.plan import _plan_table
from framefleet.pipeline import Pipeline
from framefleet.plan import apply_plan, load_catalogue, planner
from framefleet.plan.cost import enumerate_options
from framefleet.plan.hardware import Catalogue
from framefleet.plan.profile import PROFILE_FORMAT, Profiled, run_cost
from framefleet.plan.runtime_pins import pin_runtimes, step_runtimes

RAN = {"threads=1": "style: openvino bf16", "threads=2": "style: openvino fp32"}
"""What ran at each thread count (auto chooses per threads: here, bf16 only with one thread)."""


def test_a_profile_entry_says_what_ran_at_each_thread_count(tmp_path: Path) -> None:
    pipeline = style_pipeline()
    store = store_with(tmp_path, pipeline, {(1280, 720): cpu_entry(runtime=RAN)})
    video = workload(1).videos[0]
    assert run_cost(store, "here", pipeline, video, planner.Knobs(threads=1)).runtime == "style: openvino bf16"
    assert run_cost(store, "here", pipeline, video, planner.Knobs(threads=2)).runtime == "style: openvino fp32"
    # a thread count that ran nothing new (a ratio of the same choice): the base setting's
    assert run_cost(store, "here", pipeline, video, planner.Knobs(threads=4)).runtime == "style: openvino bf16"
    bare = store_with(tmp_path / "identity", pipeline, {(1280, 720): cpu_entry(runtime={})})
    assert run_cost(bare, "here", pipeline, video, planner.Knobs()).runtime is None  # no op runs a model


def test_each_option_is_predicted_with_what_ran_on_its_node_types_profile(tmp_path: Path) -> None:
    pipeline = style_pipeline()
    store = store_with(tmp_path, pipeline, {(1280, 720): cpu_entry(runtime=RAN)})
    there = {"format": PROFILE_FORMAT,
             "machine": {"name": "old-box", "cpus": 4, "cpu_model": "a CPU without bf16", "memory_gb": 16.0},
             "entries": {"worker_start": 0.6, run_key(pipeline, 1280, 720): cpu_entry(
                 runtime={"threads=1": "style: openvino fp32", "threads=2": "style: onnxruntime fp32"})}}
    (tmp_path / "old-box.json").write_text(json.dumps(there))
    store.import_file(tmp_path / "old-box.json")
    (tmp_path / "hardware.yaml").write_text(yaml.safe_dump({"nodes": [
        {"name": "old", "cpus": 4, "max_nodes": 1, "profile": "old-box"},
        {"name": "new", "cpus": 4, "max_nodes": 1}]}))
    options = list(enumerate_options(workload(), pipeline, load_catalogue(tmp_path / "hardware.yaml").nodes, store))
    ran = {(o.node, o.knobs.threads, o.basis, o.runtime) for o in options}
    assert ran == {("old", 1, "measured", "style: openvino fp32"), ("old", 2, "measured", "style: onnxruntime fp32"),
                   ("old", 4, "measured", "style: openvino fp32"),
                   # no profile of its own: this machine's, extrapolated like the rest of its prediction
                   ("new", 1, "extrapolated", "style: openvino bf16"), ("new", 2, "extrapolated", "style: openvino fp32"),
                   ("new", 4, "extrapolated", "style: openvino bf16")}


@pytest.fixture
def plan_file(monkeypatch, tmp_path: Path) -> Path:
    """A plan made on this machine's hand-written profile, where threads=1 ran openvino bf16, written to disk."""
    monkeypatch.setattr(planner, "measure_workload", lambda inputs, **_: workload())
    monkeypatch.setattr(planner, "profile_pipeline", lambda *args, **kwargs: Profiled())
    pipeline = style_pipeline()
    store = store_with(tmp_path, pipeline, {(1280, 720): cpu_entry(runtime=RAN)}, machine=HERE)
    made = planner.make_plan(["/videos"], pipeline, Catalogue(nodes=(C4,), currency="USD"), store,
                             fixed={"threads": 1})
    return made.write(tmp_path / "plan.json")


def test_plan_json_and_table_name_the_runtime_of_each_option(plan_file: Path) -> None:
    plan = planner.read_plan(plan_file)
    assert {option["runtime"] for option in plan.options} == {"style: openvino bf16"}
    for width in (80, 160):  # narrow: a column per question; wide: a column per field
        console = Console(width=width, record=True)
        console.print(_plan_table(plan, width))
        assert "style: openvino bf16" in console.export_text()


def test_run_with_a_plan_pins_the_runtime_it_was_predicted_with(plan_file: Path) -> None:
    plan = planner.read_plan(plan_file)
    pipeline, _, prediction = apply_plan(plan, {}, {})
    op = pipeline.ops[0]
    assert (op.runtime, op.precision) == ("openvino", "bf16") and prediction["runtime"] == "style: openvino bf16"
    # the spec the job records says so too, so a resume runs it again
    assert Pipeline.from_spec(pipeline.spec()).ops[0].precision == "bf16"
    for given in ({"runtime": "onnxruntime"}, {"precision": "fp32"}):  # the command line wins, and pins nothing
        pipeline, _, _ = apply_plan(plan, given, {})
        expected = {"runtime": "auto", "precision": "auto", **given}
        assert (pipeline.ops[0].runtime, pipeline.ops[0].precision) == (expected["runtime"], expected["precision"])


def test_a_plan_that_recorded_no_runtime_pins_nothing(plan_file: Path) -> None:
    data = json.loads(plan_file.read_text())
    for option in data["options"]:
        del option["runtime"]  # a plan written before runtimes were recorded
    plan_file.write_text(json.dumps(data))
    pipeline, _, _ = apply_plan(planner.read_plan(plan_file), {}, {})
    assert (pipeline.ops[0].runtime, pipeline.ops[0].precision) == ("auto", "auto")


def test_a_pinned_runtime_names_each_step_and_leaves_the_others() -> None:
    assert step_runtimes("style: openvino bf16; faces: onnxruntime fp32") == {
        "style": ("openvino", "bf16"), "faces": ("onnxruntime", "fp32")}
    assert step_runtimes("faces: openvino bf16, onnxruntime fp32") == {}  # two models, two choices: no one pin
    chain = Pipeline.from_options({"steps": [{"op": "resize", "max_size": 64}, {"op": "style"}, {"op": "style"}]})
    pinned = pin_runtimes(chain, "style: openvino fp32; style#2: onnxruntime fp32")
    assert [(op.runtime, op.precision) for op in pinned.ops[1:]] == [("openvino", "fp32"), ("onnxruntime", "fp32")]
    assert pinned.ops[0] == chain.ops[0]

