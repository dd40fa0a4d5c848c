"""Planning a job before paying for it: size the work, profile the pipeline on real frames, predict
time and cost on each node type of a hardware catalogue, and choose the knobs (see docs/planning.md)."""

from framefleet.plan.apply import apply_plan
from framefleet.plan.cost import Option
from framefleet.plan.hardware import Catalogue, NodeType, default_catalogue, load_catalogue
from framefleet.plan.planner import Plan, make_plan, parse_duration, read_plan
from framefleet.plan.profile import Knobs, MachineInfo, ProfileStore, profile_pipeline
from framefleet.plan.workload import Workload, measure_workload

__all__ = [
    "Catalogue",
    "Knobs",
    "MachineInfo",
    "NodeType",
    "Option",
    "Plan",
    "ProfileStore",
    "Workload",
    "apply_plan",
    "default_catalogue",
    "load_catalogue",
    "make_plan",
    "measure_workload",
    "parse_duration",
    "profile_pipeline",
    "read_plan",
]
