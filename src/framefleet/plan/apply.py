"""`apply_plan`: what `framefleet run --plan plan.json` runs with: the plan's pipeline and knobs, its
engine and worker counts, and its prediction (recorded in the job's ledger for `status`). Flags given on
the command line win over the plan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from framefleet.errors import OptionError
from framefleet.pipeline import Pipeline
from framefleet.plan.planner import Plan


@dataclass(frozen=True)
class AppliedPlan:
    """How to run a job: from a plan, from flags, or both."""

    engine: str
    workers: int | None
    threads_per_worker: int | None
    cpus_per_worker: float | None
    gpus_per_worker: float | None
    prediction: dict[str, Any] | None


def apply_plan(plan: Plan, flags: dict[str, Any], *, engine: str | None, workers: int | None,
               cpus_per_worker: float | None, gpus_per_worker: float | None = None) -> tuple[Pipeline, AppliedPlan]:
    """The pipeline and run settings of a plan (`read_plan`); flags that are not None win."""
    choice = plan.choice
    overrides = {key: value for key, value in flags.items() if value is not None}
    planned_op = plan.pipeline["ops"][0].get("op")
    if "op" in overrides and overrides["op"] != planned_op:
        raise OptionError(f"--op {overrides['op']}: the plan is for op {planned_op}; "
                          "make a new plan for another op")
    pipeline = Pipeline.from_spec(plan.pipeline, overrides, source="--plan")
    planned_engine = "local" if choice["this_machine"] else "ray"
    engine = engine or planned_engine
    threads = int(choice["knobs"]["threads"])
    if engine == "local":  # a cluster plan run here anyway: its knobs apply, its worker counts do not
        planned_workers = choice["workers_per_node"] if choice["this_machine"] else None
    else:
        planned_workers = choice["workers"]
    prediction = {
        "wall_seconds": choice["wall_seconds"],
        "fps": choice["fps"],
        "node": choice["node"],
        "nodes": choice["nodes"],
        "spot": choice["spot"],
        "knobs": choice["knobs"],
        "cost": choice["cost"],
        "currency": plan.currency,
        "frames": plan.workload.get("frames"),
        "planned": plan.created,
        "engine": planned_engine,
        "overridden": sorted(overrides),
    }
    return pipeline, AppliedPlan(
        engine=engine,
        workers=workers if workers is not None else planned_workers,
        threads_per_worker=threads,
        cpus_per_worker=cpus_per_worker if cpus_per_worker is not None else (float(threads) if engine == "ray" else None),
        gpus_per_worker=gpus_per_worker if gpus_per_worker is not None else (
            choice.get("gpus_per_worker") or None if engine == "ray" else None),
        prediction=prediction,
    )
