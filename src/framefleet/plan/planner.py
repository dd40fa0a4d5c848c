"""`make_plan`: size the job, profile what is missing, predict every option, and choose one.

The choice: among the options that meet the deadline (and the budget, when one is given), the best
quality (full-resolution inference first), then the lowest cost, then the shortest time; with
`objective="cost"`, the lowest cost first. When none meets the deadline, the fastest option is chosen and
the plan says so; when the deadline can be met but not within the budget, the plan says what the
cheapest option meeting the deadline costs. A plan is written as JSON (`plan.json`) for
`framefleet run --plan`, which applies its knobs and worker counts and records its prediction so that
`status` shows it beside what the job measures.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from framefleet._version import __version__
from framefleet.errors import OptionError, OutputError
from framefleet.files.temporary import write_text_atomically
from framefleet.pipeline import Pipeline
from framefleet.plan.cost import Option, enumerate_options, predict_again, worker_pace
from framefleet.plan.hardware import Catalogue
from framefleet.plan.knobs import THREADS, Knobs, op_with_knobs
from framefleet.plan.profile import ProfileStore, profile_pipeline
from framefleet.plan.segmenting import choose_segment_seconds
from framefleet.plan.workload import measure_workload
from framefleet.settings import DEFAULT_FRAMES, DEFAULT_SAMPLE

Objective = Literal["quality", "cost"]
TABLE_ROWS = 12
_DURATION = re.compile(r"(?P<value>\d+(?:\.\d+)?)\s*(?P<unit>d|h|m|s)")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


@dataclass(frozen=True)
class Plan:
    """A plan: the job's size, the options considered (the best of each kind) and the chosen one."""

    inputs: list[str]
    pipeline: dict[str, Any]
    """The pipeline's spec (knobs of the chosen option applied)."""
    workload: dict[str, Any]
    machine: str
    currency: str
    deadline_seconds: float | None
    budget: float | None
    objective: Objective
    options: list[dict[str, Any]]
    """The options shown (see `TABLE_ROWS`), cheapest first, each with `meets_deadline` and `within_budget`."""
    chosen: int
    """Index of the chosen option in `options`."""
    notes: list[str] = field(default_factory=list)
    segmenting: dict[str, Any] | None = None
    """The segment length chosen for the preemption notice (`framefleet.plan.segmenting.SegmentChoice`)."""
    profiling: dict[str, Any] = field(default_factory=dict)
    """What profiling took (`seconds`) and, when it measured, its budget and sampling
    (`framefleet.plan.budget.Sampling`)."""
    created: float = field(default_factory=time.time)
    framefleet: str = __version__

    @property
    def choice(self) -> dict[str, Any]:
        return self.options[self.chosen]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the plan as JSON (atomically)."""
        path = Path(path)
        try:
            write_text_atomically(path, json.dumps(self.to_dict(), indent=1))
        except OSError as exc:
            raise OutputError(f"{path}: cannot write the plan ({exc.strerror or exc})") from None
        return path


def parse_duration(text: str) -> float:
    """"2h", "90m", "1h30m", "45s", "1.5h" or plain seconds ("600") -> seconds."""
    cleaned = text.strip().lower().replace(" ", "")
    try:
        seconds = float(cleaned)
    except ValueError:
        parts = list(_DURATION.finditer(cleaned))
        if not parts or "".join(p.group(0) for p in parts) != cleaned:
            raise OptionError(f"--deadline {text!r}: write a duration such as 2h, 90m, 1h30m or 600 (seconds)") from None
        seconds = sum(float(p.group("value")) * _UNIT_SECONDS[p.group("unit")] for p in parts)
    if not (math.isfinite(seconds) and seconds > 0):
        raise OptionError(f"--deadline {text!r}: must be a positive duration")
    return seconds


def make_plan(
    inputs: Sequence[str],
    pipeline: Pipeline,
    catalogue: Catalogue,
    store: ProfileStore,
    *,
    deadline_seconds: float | None = None,
    budget: float | None = None,
    objective: Objective = "quality",
    sample: int = DEFAULT_SAMPLE,
    sample_frames: int = DEFAULT_FRAMES,
    refresh: bool = False,
    fixed: dict[str, Any] | None = None,
    preemption_notice: float | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> Plan:
    """Plan the job `inputs` x `pipeline` over the node types of `catalogue` (see the module docstring).
    `fixed` pins knobs instead of letting the plan choose them: max_size, batch_size, threads.
    `preemption_notice` (or, on spot nodes, the chosen node type's `preemption_notice`) sizes the segments
    so that their p90 time on the chosen option fits in the notice / 1.5; the option is predicted again so."""
    if preemption_notice is not None and not (math.isfinite(preemption_notice) and preemption_notice > 0):
        raise OptionError(f"--preemption-notice must be a positive number of seconds, got {preemption_notice}")
    unknown = set(fixed or {}) - {"max_size", "batch_size", "threads"}
    if unknown:
        raise OptionError(f"cannot fix {', '.join(sorted(unknown))}: the knobs are max_size, batch_size, threads")
    if (fixed or {}).get("threads", 1) not in THREADS:
        raise OptionError(f"--threads must be one of {', '.join(map(str, THREADS))}, got {fixed['threads']}")
    if budget is not None and not (math.isfinite(budget) and budget >= 0):
        raise OptionError(f"--budget must be a non-negative number, got {budget}")
    say("probing the inputs")
    workload = measure_workload(inputs, segment_seconds=pipeline.segment_seconds, sample=sample)
    if not workload.videos:
        raise OptionError("nothing to plan: the inputs name no videos"
                          + "".join(f"; {reason}" for reason in workload.left_out))
    profiled = profile_pipeline(workload, pipeline, store, frames=sample_frames, refresh=refresh, fixed=fixed,
                                say=say)
    options = list(enumerate_options(workload, pipeline, catalogue.nodes, store, fixed=fixed))
    if not options:
        raise OptionError("no option could be predicted: the profiles cover none of the knob settings"
                          + (f" fixed ({', '.join(f'{k}={v}' for k, v in fixed.items())})" if fixed else "")
                          + "".join(f"; cannot sample {reason}" for reason in profiled.unsampled))
    chosen, notes = choose(options, deadline_seconds, budget, objective)
    notes += [f"cannot sample {reason}" for reason in profiled.unsampled]
    sampling = profiled.sampling
    if sampling is not None and (sampling.frames < sample_frames or not sampling.sweep):  # the budget cut something
        notes.append(sampling.describe() + ("" if sampling.within_budget else ": over the budget, the least a usable "
                                            "profile takes"))
    notes += [f"left out: {reason}" for reason in workload.left_out]
    shown = _shown(options, chosen)
    node = next(node for node in catalogue.nodes if node.name == chosen.node)
    notice = preemption_notice or (node.preemption_notice if chosen.spot else None)
    segmenting = None
    if notice is not None:
        pace = worker_pace(workload, pipeline, node, chosen.knobs, store)
        if pace is not None:
            sized = choose_segment_seconds(workload.videos, notice, *pace, pipeline.segment_seconds, "plan")
            segmenting = sized.to_dict()
            pipeline = dataclasses.replace(pipeline, segment_seconds=sized.segment_seconds)
            workload = workload.cut_at(sized.segment_seconds)
            again = predict_again(chosen, workload, pipeline, node, store)
            shown[shown.index(chosen)] = chosen = again
            notes.append(f"segments sized to the preemption notice: {sized.describe()}")
    if workload.sampled:
        notes.append(f"sizes estimated from {len(workload.videos)} of {workload.total_videos} videos")
    if budget is not None and not catalogue.priced:
        notes.append("the catalogue has no prices: --budget is not checked")
    missing = sorted({node.profile for node in catalogue.nodes
                      if node.profile is not None and node.profile not in store.machines()})
    if missing:
        notes.append(f"profile(s) {', '.join(missing)} not loaded: those node types are extrapolated from this "
                     "machine (make one there with framefleet profile --export FILE, pass it with --profiles FILE)")
    if any(option.basis == "extrapolated" for option in shown):
        notes.append("extrapolated: node types without a profile of their own are predicted from this "
                     "machine's, per core; import a profile made on that hardware with --profiles")
    chosen_pipeline = apply_knobs(pipeline, chosen.knobs)
    return Plan(
        inputs=list(inputs), pipeline=chosen_pipeline.spec(), workload=workload.describe(),
        machine=store.machine.name, currency=catalogue.currency, deadline_seconds=deadline_seconds, budget=budget,
        objective=objective, options=[_option_dict(o, deadline_seconds, budget) for o in shown],
        chosen=shown.index(chosen), notes=notes, segmenting=segmenting, profiling=profiled.describe(),
    )


def choose(options: Sequence[Option], deadline: float | None, budget: float | None,
           objective: Objective = "quality") -> tuple[Option, list[str]]:
    """The option to run and notes on how it was chosen (see the module docstring)."""
    notes: list[str] = []
    on_time = [o for o in options if deadline is None or o.wall_seconds <= deadline]
    if not on_time:
        fastest = min(options, key=lambda o: (o.wall_seconds, _cost_key(o)))
        notes.append(f"no option meets the deadline of {format_seconds(deadline)}: the fastest is chosen "
                     f"({format_seconds(fastest.wall_seconds)})")
        return fastest, notes
    affordable = [o for o in on_time if budget is None or o.cost is None or o.cost <= budget]
    if not affordable:
        cheapest = min(on_time, key=_cost_key)
        notes.append(f"the budget of {budget:g} cannot be met: the cheapest option that meets the deadline "
                     f"costs {cheapest.cost:.2f}")
        return cheapest, notes
    if objective == "cost":
        return min(affordable, key=lambda o: (_cost_key(o), -_quality_key(o), o.wall_seconds)), notes
    return min(affordable, key=lambda o: (-_quality_key(o), _cost_key(o), o.wall_seconds)), notes


def apply_knobs(pipeline: Pipeline, knobs: Knobs) -> Pipeline:
    """The pipeline with a plan's knob settings (the op's fields that exist)."""
    return dataclasses.replace(pipeline, ops=(op_with_knobs(pipeline.ops[0], knobs), *pipeline.ops[1:]))


def read_plan(path: str | os.PathLike[str]) -> Plan:
    """A plan file written by `framefleet plan`, read back (checked enough to apply it)."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise OptionError(f"--plan {path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise OptionError(f"--plan {path}: not a plan file ({exc})") from None
    if not isinstance(data, dict) or not {"pipeline", "options", "chosen"} <= set(data):
        raise OptionError(f"--plan {path}: not a plan file (write one with framefleet plan)")
    known = {item.name for item in dataclasses.fields(Plan)}
    try:
        plan = Plan(**{key: value for key, value in data.items() if key in known})
        plan.choice["knobs"]
        Pipeline.from_spec(plan.pipeline)
    except (KeyError, IndexError, TypeError) as exc:
        raise OptionError(f"--plan {path}: not a plan file ({exc})") from None
    return plan


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _shown(options: Sequence[Option], chosen: Option) -> list[Option]:
    """The chosen option and the options no other beats on time, cost and quality at once, up to
    `TABLE_ROWS` (the cheapest, the fastest and an even spread between), cheapest first."""
    frontier = [o for o in options if not any(_dominates(other, o) for other in options)]
    frontier.sort(key=lambda o: (_cost_key(o), o.wall_seconds))
    others = [o for o in frontier if o is not chosen]
    if len(others) > TABLE_ROWS - 1:  # keep both ends (cheapest, fastest) and an even spread between
        step = (len(others) - 1) / (TABLE_ROWS - 2)
        others = [others[round(i * step)] for i in range(TABLE_ROWS - 1)]
    return sorted([chosen, *others], key=lambda o: (_cost_key(o), o.wall_seconds))


def _dominates(a: Option, b: Option) -> bool:
    no_worse = (a.wall_seconds <= b.wall_seconds and _cost_key(a) <= _cost_key(b)
                and _quality_key(a) >= _quality_key(b))
    better = (a.wall_seconds < b.wall_seconds or _cost_key(a) < _cost_key(b) or _quality_key(a) > _quality_key(b))
    return no_worse and better


def _cost_key(option: Option) -> float:
    return option.cost if option.cost is not None else 0.0


def _quality_key(option: Option) -> float:
    return math.inf if option.quality_psnr is None else option.quality_psnr


def _option_dict(option: Option, deadline: float | None, budget: float | None) -> dict[str, Any]:
    data = dataclasses.asdict(option)
    data["workers"] = option.workers
    data["meets_deadline"] = None if deadline is None else option.wall_seconds <= deadline
    data["within_budget"] = None if budget is None or option.cost is None else option.cost <= budget
    return data
