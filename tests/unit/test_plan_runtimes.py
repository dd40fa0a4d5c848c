"""Runtime and precision as knobs per node type, over hand-written profiles: what a profile entry records as
having run, what each option of a plan says it is predicted with (an extrapolated node type: this machine's),
the plan table's knobs cell, and `apply_plan` pinning it unless `--runtime` or `--precision` is given.
(Measured end to end in tests/integration/test_plan.py.)"""

from __future__ import annotations

from pathlib import Path

from test_plan_model import cpu_entry, store_with, style_pipeline, workload

from framefleet.plan import planner
from framefleet.plan.profile import run_cost

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

