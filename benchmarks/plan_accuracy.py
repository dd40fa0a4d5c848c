#!/usr/bin/env python3
"""How well `framefleet plan` predicts: plan a job on this machine, run it as `run --plan` would, and
compare the predicted wall time with the measured one (target: error <= 15%).

Cases, on synthetic clips made here (testsrc2 + sine with the ffmpeg CLI, a keyframe every second):

  many-short   8 clips of 4 s at 640x360: many items, no segments.
  long         one 48 s clip at 640x360, segments of 12 s: segments run in parallel, then a join.
  mixed        2 clips of 4 s at 1280x720 and 4 clips of 3 s at 640x360: two resolutions.
  downscaled   the mixed inputs with --max-size 360 fixed: a knob that changes the op's cost.
  one-worker   the many-short inputs with 1 worker and 2 threads (threads knob, fewer workers).

Each case plans with the default catalogue (this machine, local engine) and the style op; the profile
is measured once per case's resolutions and cached in a folder of this run (its time is reported, not
counted in the job's). The job then runs through `framefleet.run` with the plan's pipeline, worker count
and threads (`apply_plan`), timed from the call to its return. Every case runs `--repeats` times (jobs
alternate between cases); the table shows the median measured time, the prediction and the error.

    .venv/bin/python benchmarks/plan_accuracy.py            # all cases, 2 repeats (~10 min on 2 cores)
    .venv/bin/python benchmarks/plan_accuracy.py --quick    # smoke test: short clips, 1 repeat
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (  # benchmarks/common.py: helpers shared with the other scripts
    DEFAULT_RESULTS,
    RATE,
    add_run_arguments,
    load_average,
    log,
    machine_info,
    make_clip,
    parse_choices,
    print_table,
    write_results,
)

from framefleet import run as run_job
from framefleet.jobs.spec import JobSpec
from framefleet.pipeline import Pipeline
from framefleet.plan import Plan, ProfileStore, apply_plan, make_plan
from framefleet.plan.hardware import default_catalogue

CASES = ("many-short", "long", "mixed", "downscaled", "one-worker")
TARGET_ERROR = 0.15


@dataclass(frozen=True)
class Case:
    name: str
    clips: tuple[tuple[str, int, int, float], ...]
    """(name, width, height, seconds) of each input clip."""
    segment_seconds: float = 20.0
    max_size: int | None = None
    threads: int | None = None
    """Pinned op threads per worker (the plan runs cores // threads workers)."""


def cases(quick: bool) -> dict[str, Case]:
    short = 2.0 if quick else 4.0
    return {
        "many-short": Case("many-short", tuple((f"s{i}.mp4", 640, 360, short) for i in range(8))),
        "long": Case("long", (("long.mp4", 640, 360, 16.0 if quick else 48.0),),
                     segment_seconds=4.0 if quick else 12.0),
        "mixed": Case("mixed", (*((f"hd{i}.mp4", 1280, 720, short) for i in range(2)),
                                *((f"sd{i}.mp4", 640, 360, short - 1) for i in range(4)))),
        "downscaled": Case("downscaled", (*((f"hd{i}.mp4", 1280, 720, short) for i in range(2)),
                                          *((f"sd{i}.mp4", 640, 360, short - 1) for i in range(4))), max_size=360),
        "one-worker": Case("one-worker", tuple((f"s{i}.mp4", 640, 360, short) for i in range(8)), threads=2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser, CASES)
    parser.add_argument("--sample-frames", type=int, default=24, help="frames per profiling run (default 24)")
    parser.add_argument("--output", type=Path, default=None, help="JSON results (default benchmarks/results/...)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep clips and outputs here")
    args = parser.parse_args()
    chosen = parse_choices(parser, args.cases, CASES, "case")
    repeats = args.repeats or (1 if args.quick else 2)
    started = time.perf_counter()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="framefleet-plan-bench-"))
    load_before = load_average()
    all_cases = cases(args.quick)
    store = ProfileStore(workdir / "profiles")
    plans: dict[str, dict[str, Any]] = {}
    for name in chosen:
        plans[name] = plan_case(all_cases[name], workdir, store, args.sample_frames)
    runs: dict[str, list[float]] = {name: [] for name in chosen}
    for repeat in range(repeats):
        order = chosen[repeat % len(chosen):] + chosen[:repeat % len(chosen)]
        for name in order:
            seconds = run_case(all_cases[name], plans[name], workdir, repeat)
            runs[name].append(seconds)
            log(f"{name} run {repeat + 1}: {seconds:.1f} s (predicted {plans[name]['predicted']:.1f} s)")
    rows, results = [], []
    for name in chosen:
        plan = plans[name]
        measured = statistics.median(runs[name])
        error = (plan["predicted"] - measured) / measured
        rows.append([name, plan["inputs"], plan["knobs"], f"{plan['profile_seconds']:.0f}",
                     f"{plan['predicted']:.1f}", f"{measured:.1f}", f"{error:+.1%}",
                     "yes" if abs(error) <= TARGET_ERROR else "NO"])
        results.append({**plan, "measured_seconds": runs[name], "measured_median": measured, "error": error})
    print()
    print_table(f"Plan accuracy: predicted vs measured wall time (median of {repeats}); target |error| <= 15%",
                ["case", "inputs", "knobs", "profile s", "predicted s", "measured s", "error", "met"], rows,
                right={3, 4, 5, 6})
    errors = [abs(r["error"]) for r in results]
    print(f"\nmean |error| {statistics.mean(errors):.1%}, worst {max(errors):.1%}")
    write_results(args.output or DEFAULT_RESULTS / f"plan_accuracy-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.json", {
        "benchmark": "plan_accuracy", "machine": machine_info(), "repeats": repeats, "quick": args.quick,
        "sample_frames": args.sample_frames, "load_before": load_before, "load_after": load_average(),
        "cases": results,
    }, time.perf_counter() - started)
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


def plan_case(case: Case, workdir: Path, store: ProfileStore, sample_frames: int) -> dict[str, Any]:
    """Make the case's clips and plan it; the plan's prediction and what to run."""
    folder = workdir / "inputs" / case.name
    folder.mkdir(parents=True, exist_ok=True)
    for name, width, height, seconds in case.clips:
        if not (folder / name).exists():
            make_clip(folder / name, width, height, seconds, gop=RATE)
    pipeline = Pipeline.from_options({"segment_seconds": case.segment_seconds, "max_size": case.max_size})
    began = time.perf_counter()
    fixed = {k: v for k, v in {"max_size": case.max_size, "threads": case.threads}.items() if v is not None}
    plan = make_plan([str(folder)], pipeline, default_catalogue(), store, sample_frames=sample_frames,
                     fixed=fixed, say=log)
    profile_seconds = time.perf_counter() - began
    data = plan.to_dict()
    choice = plan.choice
    knobs = choice["knobs"]
    return {
        "case": case.name, "folder": str(folder), "plan": data, "predicted": choice["wall_seconds"],
        "profile_seconds": profile_seconds, "workers": choice["workers"],
        "inputs": f"{len(case.clips)} clips, {data['workload']['frames']} frames",
        "knobs": f"size={knobs['max_size'] or 'full'} b={knobs['batch_size']} t={knobs['threads']} "
                 f"w={choice['workers']}",
    }


def run_case(case: Case, plan: dict[str, Any], workdir: Path, repeat: int) -> float:
    """Run the job as `framefleet run --plan` does; its wall time."""
    output = workdir / "outputs" / f"{case.name}-{repeat}"
    shutil.rmtree(output, ignore_errors=True)
    pipeline, settings, prediction = apply_plan(Plan(**plan["plan"]), {}, {"engine": "local"})
    began = time.perf_counter()
    result = run_job(JobSpec([plan["folder"]], str(output), pipeline, settings), prediction=prediction)
    seconds = time.perf_counter() - began
    if result.counts.get("done") != len(case.clips):
        raise RuntimeError(f"{case.name}: the job did not finish every item: {result.counts}")
    shutil.rmtree(output, ignore_errors=True)
    return seconds


if __name__ == "__main__":
    main()
