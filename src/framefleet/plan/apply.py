"""`apply_plan`: what `framefleet run --plan plan.json` runs with: the plan's pipeline and knobs, its
engine and worker counts as `RunSettings`, and its prediction (recorded in the job's ledger for `status`).
The runtime and precision the chosen option was predicted with are pinned on the ops that run models, unless
`--runtime` or `--precision` is given. Flags given on the command line win over the plan."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from framefleet.errors import OptionError
from framefleet.pipeline import Pipeline
from framefleet.plan.planner import Plan
from framefleet.plan.runtime_pins import pin_runtimes
from framefleet.settings import RunSettings


def apply_plan(plan: Plan, flags: Mapping[str, Any], run_flags: Mapping[str, Any],
               base: RunSettings = RunSettings()) -> tuple[Pipeline, RunSettings, dict[str, Any]]:
    """The pipeline, the run settings and the prediction of a plan (`read_plan`). Pipeline `flags` and
    `run_flags` (`RunSettings.given`'s names) that are not None win over the plan; `base` holds the rest."""
    choice = plan.choice
    overrides = {key: value for key, value in flags.items() if value is not None}
    planned_op = plan.pipeline["ops"][0].get("op")
    if "op" in overrides and overrides["op"] != planned_op:
        raise OptionError(f"--op {overrides['op']}: the plan is for op {planned_op}; "
                          "make a new plan for another op")
    pipeline = Pipeline.from_spec(plan.pipeline, overrides, source="--plan")
    if choice.get("runtime") and not {"runtime", "precision"} & set(overrides):
        pipeline = pin_runtimes(pipeline, choice["runtime"])  # run what was predicted
    planned_engine = "local" if choice["this_machine"] else "ray"
    engine = run_flags.get("engine") or planned_engine
    threads = int(choice["knobs"]["threads"])
    planned: dict[str, Any] = {"engine": engine, "threads_per_worker": threads}
    if plan.segmenting:
        planned["preemption_notice"] = plan.segmenting["notice_seconds"]
    if engine == "local":  # a cluster plan run here anyway: its knobs apply, its worker counts do not
        planned["workers"] = choice["workers_per_node"] if choice["this_machine"] else None
    else:
        planned.update(workers=choice["workers"], cpus_per_worker=float(threads),
                       gpus_per_worker=choice.get("gpus_per_worker") or None)
    given = {key: value for key, value in run_flags.items() if value is not None}
    settings = base.given(**{**planned, **given})
    prediction = {
        "wall_seconds": choice["wall_seconds"],
        "fps": choice["fps"],
        "node": choice["node"],
        "nodes": choice["nodes"],
        "spot": choice["spot"],
        "knobs": choice["knobs"],
        "runtime": choice.get("runtime"),
        "cost": choice["cost"],
        "currency": plan.currency,
        "frames": plan.workload.get("frames"),
        "planned": plan.created,
        "engine": planned_engine,
        "overridden": sorted(overrides),
        "segmenting": plan.segmenting,
    }
    return pipeline, settings, prediction
