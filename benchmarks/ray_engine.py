#!/usr/bin/env python3
"""Benchmark the Ray engine against the local engine: the same job on the same machine.

  throughput  N clips (default 8 x 2 s, 320x180, testsrc2 + sine), style op, one thread per worker,
              2 workers: fps = frames / wall time of framefleet.run with --engine local and with
              --engine ray on a private Ray cluster of this machine's cores (started once, outside the
              timing). Ratio ray / local (target >= 0.9).
  start-up    seconds for ray.init() of a private cluster, and the wall time of a one-clip job on each
              engine: the difference is what Ray adds before the first frame (actor start-up included).

Each repeat runs local and Ray alternately (the order rotates); the table shows medians, the JSON every
run. Needs the `ray` extra:

    .venv/bin/python benchmarks/ray_engine.py            # 3 repeats
    .venv/bin/python benchmarks/ray_engine.py --quick    # smoke test: 2 clips of 1 s, 1 repeat
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import DEFAULT_RESULTS, load_average, log, machine_info, make_clip, print_table, write_results

TARGET_RATIO = 0.9
WORKERS = 2


def run_job(inputs: Path, work: Path, engine: str) -> dict[str, Any]:
    """One job into a fresh folder; wall time and frames."""
    import framefleet

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pipeline = framefleet.Pipeline.from_options({"style": "7"})
    t0 = time.perf_counter()
    settings = framefleet.RunSettings().given(engine=engine, workers=WORKERS, threads_per_worker=1)
    result = framefleet.run(framefleet.JobSpec([str(inputs)], str(work / "out"), pipeline, settings),
                            job_dir=work / "job")
    wall = time.perf_counter() - t0
    if result.exit_code != 0:
        raise RuntimeError(f"{engine} job did not finish cleanly: {result.counts} {result.failures[:1]}")
    return {"engine": engine, "frames": result.frames, "seconds": wall, "fps": result.frames / wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 clips of 1 s, 1 repeat (not results)")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.videos, args.seconds, args.repeats = 2, 1.0, 1
    import ray

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    output = args.output or DEFAULT_RESULTS / f"ray-engine-{stamp}.json"
    with tempfile.TemporaryDirectory(prefix="ff-ray-bench-") as tmp:
        root = Path(tmp)
        many, one = root / "many", root / "one"
        many.mkdir()
        for i in range(args.videos):
            make_clip(many / f"clip{i:02d}.mp4", 320, 180, args.seconds)
        one.mkdir()
        shutil.copy(many / "clip00.mp4", one / "clip.mp4")
        load_before = load_average()
        t0 = time.perf_counter()
        ray.init(num_cpus=WORKERS, object_store_memory=200 * 2**20, log_to_driver=False, include_dashboard=False)
        init_seconds = time.perf_counter() - t0
        log(f"ray.init: {init_seconds:.2f} s")
        runs: dict[str, list[dict]] = {"local": [], "ray": [], "local_one": [], "ray_one": []}
        try:
            for repeat in range(args.repeats):
                order = ["local", "ray"] if repeat % 2 == 0 else ["ray", "local"]
                for engine in order:
                    run = run_job(many, root / f"w-{engine}", engine)
                    runs[engine].append(run)
                    log(f"repeat {repeat + 1}/{args.repeats} {engine}: {run['frames']} frames in "
                        f"{run['seconds']:.2f} s = {run['fps']:.2f} fps")
                    single = run_job(one, root / f"w1-{engine}", engine)
                    runs[f"{engine}_one"].append(single)
        finally:
            ray.shutdown()
    med = {key: statistics.median(r["seconds"] for r in value) for key, value in runs.items()}
    fps = {key: statistics.median(r["fps"] for r in runs[key]) for key in ("local", "ray")}
    ratio = fps["ray"] / fps["local"]
    rows = [
        ("throughput", "local engine, 2 workers", f"{fps['local']:.2f} fps", "1.000", "-", "-"),
        ("throughput", "ray engine, 2 actors", f"{fps['ray']:.2f} fps", f"{ratio:.3f}", f">= {TARGET_RATIO}",
         "yes" if ratio >= TARGET_RATIO else "NO"),
        ("start-up", "ray.init (private cluster)", f"{init_seconds:.2f} s", "-", "-", "-"),
        ("start-up", "one-clip job, local", f"{med['local_one']:.2f} s", "-", "-", "-"),
        ("start-up", "one-clip job, ray", f"{med['ray_one']:.2f} s",
         f"+{med['ray_one'] - med['local_one']:.2f} s", "-", "-"),
    ]
    print_table(f"Ray engine vs local engine - {args.videos} clips x {args.seconds:g} s 320x180, style 7, "
                f"{WORKERS} workers x 1 thread; median of {args.repeats}",
                ("case", "contender", "median", "ratio", "target", "met?"), rows, right={2, 3})
    write_results(output, {
        "machine": machine_info(), "load_average": {"before": load_before, "after": load_average()},
        "args": {k: str(v) for k, v in vars(args).items()}, "ray_init_seconds": init_seconds,
        "runs": runs, "ratio": ratio,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
