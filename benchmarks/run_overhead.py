#!/usr/bin/env python3
"""Benchmark the batch path's own cost: `framefleet run` on one short clip against `framefleet stylize` on
it, `run --op identity` against the ffmpeg CLI, and how long `run` takes to start (issue 25, item 6).

Every contender is a whole command in a fresh process (its wall time includes imports, worker start,
probe, join and exit), on synthetic clips made here with the ffmpeg CLI (testsrc2 + sine, x264 veryfast
with its default keyframe interval of 10 s, AAC):

  style       a 20 s 640x360 clip: `framefleet stylize` (2 sessions x 1 thread in one process) against
              `framefleet run` (2 workers, the default). Target: run >= 0.95x stylize's speed.
  identity    a 10 s 1280x720 clip: `ffmpeg -i IN -c:v libx264 -preset veryfast -crf 20 -c:a copy OUT`
              against `framefleet run --op identity` (the same encoder settings). Its one keyframe leaves
              nothing to cut it at: one segment, which gets the idle worker's share of the cores.
  identity-60s
              the same on a 60 s 1280x720 clip (a keyframe every 10 s). Target: >= 1.0x the CLI.
  identity-folder
              a folder of eight 10 s 1280x720 clips: a sequential loop of the same ffmpeg command over
              them against one `framefleet run --op identity` of the folder. Target: >= 1.0x the loop.

From each run's ledger: when the first task (the probe) and the first segment were claimed, counted from
the command's start (target: first segment, i.e. the first frame's work, <= 1 s), the segments, the span
of the tasks and what followed the last one (the join, closing the workers, exit), and the ops' seconds by
step (`steps_s`). `--before SRC` adds `run` contenders from another source tree (a worktree of an earlier
commit: `git worktree add /tmp/before main`, then `--before /tmp/before/src`), measured in the same
rounds, so the table shows before and after side by side. The source trees measured get their bytecode
written first, as an installed copy has it. Contenders alternate within each repeat; the
table shows medians and ratios of medians; the JSON keeps every run.

    .venv/bin/python benchmarks/run_overhead.py                        # 3 repeats (about 10 min on 2 cores)
    .venv/bin/python benchmarks/run_overhead.py --before /tmp/before/src
    .venv/bin/python benchmarks/run_overhead.py --quick                # smoke test: short clips, 1 repeat
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (  # benchmarks/common.py: helpers shared by the benchmark scripts
    DEFAULT_RESULTS,
    FFMPEG,
    QUIET,
    ROOT,
    add_run_arguments,
    load_average,
    log,
    machine_info,
    make_clip,
    parse_choices,
    print_table,
    run_cmd,
    write_results,
)

CASES = ("style", "identity", "identity-60s", "identity-folder")
FOLDER_CLIPS = 8
TARGET_RUN_VS_STYLIZE = 0.95
TARGET_FIRST_SEGMENT_S = 1.0
TARGET_IDENTITY_VS_CLI = 1.0
ENCODE = ["--preset", "veryfast", "--crf", "20"]


def framefleet_command(src: Path, *args: str) -> tuple[list[str], dict[str, str]]:
    """The framefleet command run from the source tree `src`, and its environment."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    return [sys.executable, "-m", "framefleet", *args], env


def compile_bytecode(src: Path) -> None:
    """Write the bytecode of every module under `src`, as pip does when it installs a wheel: where
    PYTHONDONTWRITEBYTECODE is set (as on the machines these figures come from), every process would
    otherwise compile framefleet's sources afresh, which no installed copy does (the style op's first
    segment: 1.10 s without bytecode, 0.90 s with it)."""
    if not compileall.compile_dir(str(src), quiet=1):
        raise SystemExit(f"could not compile the sources under {src}")


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run `command`; its wall time and the wall-clock time it started at (raises with its stderr's tail)."""
    started_at = time.time()
    t0 = time.perf_counter()
    run_cmd(command, env=env)
    return time.perf_counter() - t0, started_at


def ledger_timeline(job_dir: Path, started_at: float, wall: float) -> dict[str, Any]:
    """From a finished job's ledger: its tasks and when they ran, relative to the command's start."""
    db = sqlite3.connect(job_dir / "ledger.sqlite")
    db.row_factory = sqlite3.Row
    try:
        attempts = db.execute("SELECT a.started, a.ended, t.kind FROM attempts a JOIN tasks t ON t.id = a.task_id "
                              "ORDER BY a.started").fetchall()
        metrics = db.execute("SELECT m.seconds, m.steps_s, t.kind FROM metrics m JOIN tasks t ON t.id = m.task_id"
                             ).fetchall()
    finally:
        db.close()
    segments = [a for a in attempts if a["kind"] == "segment"]
    steps: dict[str, float] = {}
    for row in metrics:
        for step, seconds in json.loads(row["steps_s"] or "{}").items():
            steps[step] = steps.get(step, 0.0) + seconds
    last_end = max(a["ended"] for a in attempts)
    return {
        "tasks": {kind: sum(1 for a in attempts if a["kind"] == kind) for kind in ("probe", "segment", "join")},
        "first_claim_s": attempts[0]["started"] - started_at,
        "first_segment_s": segments[0]["started"] - started_at,
        "segments_s": [round(m["seconds"], 3) for m in metrics if m["kind"] == "segment"],
        "tasks_span_s": last_end - attempts[0]["started"],
        "after_last_task_s": started_at + wall - last_end,
        "join_s": sum(a["ended"] - a["started"] for a in attempts if a["kind"] == "join"),
        "steps_s": steps,
    }


def run_contender(case: str, name: str, clips: dict[str, Path], work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One run of one contender into a fresh `work` folder."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    clip = clips[case]
    temporal = ["--temporal", args.temporal]
    if name == "ffmpeg CLI":
        t0 = time.perf_counter()
        for one in sorted(clip.iterdir()) if clip.is_dir() else [clip]:  # a folder: one after another
            timed([FFMPEG, *QUIET, "-i", str(one), "-c:v", "libx264", "-preset", "veryfast", "-crf", "20",
                   "-c:a", "copy", str(work / one.name)])
        return {"seconds": time.perf_counter() - t0}
    if name == "stylize":
        command, env = framefleet_command(args.src, "stylize", str(clip), "-o", str(work / clip.name), *temporal)
        wall, _ = timed(command, env)
        return {"seconds": wall}
    src = args.before if name.endswith("(before)") else args.src
    op = ["--op", "identity", *ENCODE] if case.startswith("identity") else temporal
    command, env = framefleet_command(src, "run", str(clip), "-o", str(work / "out"), *op, "-q")
    wall, started_at = timed(command, env)
    return {"seconds": wall, **ledger_timeline(work / "out" / ".framefleet-job", started_at, wall)}


def make_inputs(root: Path, cases: list[str], quick: bool) -> dict[str, Path]:
    """Each case's input: a clip, or a folder of clips (`identity-folder`)."""
    sizes = {"style": (640, 360, 4 if quick else 20), "identity": (1280, 720, 2 if quick else 10),
             "identity-60s": (1280, 720, 6 if quick else 60), "identity-folder": (1280, 720, 2 if quick else 10)}
    inputs = {}
    for case in cases:
        width, height, seconds = sizes[case]
        name = f"{case}-{width}x{height}-{seconds}s"
        if case == "identity-folder":
            inputs[case] = root / name
            inputs[case].mkdir(parents=True, exist_ok=True)
            for index in range(FOLDER_CLIPS):
                make_clip(inputs[case] / f"clip-{index}.mp4", width, height, seconds)
        else:
            inputs[case] = root / f"{name}.mp4"
            make_clip(inputs[case], width, height, seconds)
    return inputs


def contenders(case: str, args: argparse.Namespace) -> list[str]:
    baseline = "stylize" if case == "style" else "ffmpeg CLI"
    return [baseline, "run", *(["run (before)"] if args.before else [])]


def summarise(raw: dict[str, dict[str, list[dict]]]) -> list[dict[str, Any]]:
    rows = []
    for case, by_name in raw.items():
        baseline = statistics.median(r["seconds"] for r in next(iter(by_name.values())))
        for name, runs in by_name.items():
            seconds = statistics.median(r["seconds"] for r in runs)
            row: dict[str, Any] = {"case": case, "contender": name, "runs": len(runs), "seconds": seconds,
                                   "speed_vs_baseline": baseline / seconds}
            if "first_segment_s" in runs[0]:
                for key in ("first_claim_s", "first_segment_s", "tasks_span_s", "after_last_task_s"):
                    row[key] = statistics.median(r[key] for r in runs)
                row["segments"] = runs[0]["tasks"]["segment"]
            rows.append(row)
    return rows


def table_rows(rows: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    def seconds(row: dict[str, Any], key: str) -> str:
        return f"{row[key]:.2f}" if key in row else "-"

    return [(row["case"], row["contender"], str(row["runs"]), f"{row['seconds']:.2f}",
             f"{row['speed_vs_baseline']:.2f}x", str(row.get("segments", "-")), seconds(row, "first_claim_s"),
             seconds(row, "first_segment_s"), seconds(row, "tasks_span_s"), seconds(row, "after_last_task_s"))
            for row in rows]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, CASES)
    parser.add_argument("--before", type=Path, help="another source tree (its src/ folder) whose `run` is measured "
                                                    "beside this one's")
    parser.add_argument("--temporal", default="none", help="--temporal of stylize and run in the style case "
                                                           "(default none, as issue 25 measured)")
    parser.add_argument("--output", type=Path, help="JSON results (default benchmarks/results/run-overhead-<time>.json)")
    parser.add_argument("--workdir", type=Path, help="where clips and outputs go (default: a temporary folder)")
    args = parser.parse_args(argv)
    args.case_list = parse_choices(parser, args.cases, CASES, "case")
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.src = ROOT / "src"
    if args.before is not None and not (args.before / "framefleet").is_dir():
        parser.error(f"--before {args.before}: no framefleet package there (give the src/ folder of a checkout)")
    if shutil.which(FFMPEG) is None:
        parser.error("the ffmpeg CLI is needed (it makes the clips, and is the identity case's baseline)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started_at = dt.datetime.now(dt.timezone.utc)
    output = args.output or DEFAULT_RESULTS / f"run-overhead-{started_at:%Y%m%dT%H%M%SZ}{'-quick' if args.quick else ''}.json"
    info = machine_info()
    log(f"{info['cores_available']} cores ({info['cpu_model']}); cases {', '.join(args.case_list)}; "
        f"{args.repeats} repeat(s); load {load_average()}")
    work_root = args.workdir or Path(tempfile.mkdtemp(prefix="framefleet-bench-overhead-"))
    clips = make_inputs(work_root, args.case_list, args.quick)
    for src in filter(None, (args.src, args.before)):
        compile_bytecode(src)
    load_before = load_average()
    t_all = time.perf_counter()
    raw: dict[str, dict[str, list[dict]]] = {}
    for rep in range(args.repeats):
        for case in args.case_list:
            names = contenders(case, args)
            shift = rep % len(names)
            for name in names[shift:] + names[:shift]:
                result = run_contender(case, name, clips, work_root / "runs" / f"{case}-{name}-r{rep}".replace(" ", "-"), args)
                result["repeat"] = rep
                raw.setdefault(case, {name: [] for name in names})[name].append(result)
                extra = (f", {result['tasks']['segment']} segment(s), first segment at {result['first_segment_s']:.2f} s"
                         if "tasks" in result else "")
                log(f"{case} / {name} (repeat {rep + 1}): {result['seconds']:.2f} s{extra}")
    rows = summarise(raw)
    header = (f"framefleet run's own cost: {info['cores_available']} cores ({info['cpu_model']}), medians of "
              f"{args.repeats}, load {load_before} -> {load_average()}")
    print_table(header, ["case", "contender", "runs", "wall s", "speed", "segments", "1st claim s", "1st segment s",
                         "tasks span s", "after s"], table_rows(rows), right=range(2, 10))
    write_results(output, {
        "benchmark": "run_overhead", "started": started_at.isoformat(), "machine": info,
        "load_before": load_before, "load_after": load_average(), "repeats": args.repeats,
        "temporal": args.temporal, "before": str(args.before) if args.before else None,
        "targets": {"run_vs_stylize": TARGET_RUN_VS_STYLIZE, "first_segment_s": TARGET_FIRST_SEGMENT_S,
                    "identity_vs_cli": TARGET_IDENTITY_VS_CLI},
        "rows": rows, "raw": raw,
    }, time.perf_counter() - t_all)
    if args.workdir is None:
        shutil.rmtree(work_root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
