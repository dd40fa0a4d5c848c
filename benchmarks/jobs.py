#!/usr/bin/env python3
"""Benchmark framefleet's batch jobs (`framefleet.run`): worker scaling, segment parallelism, scheduler
overhead and worker memory against video length.

Cases, on synthetic clips made here (testsrc2 + sine with the ffmpeg CLI, tiny clips with PyAV):

  scaling     N clips (default 8 x 2 s, 320x180), style op, 1 thread per worker: 1 worker confined to
              one core, 1 worker, 2 workers. fps = frames / wall time of framefleet.run; ratio 2 workers
              / 1 worker on 1 core (target >= 1.85); the unconfined worker also uses the other core.
  segments    one long clip (default 20 s, 320x180, a keyframe every second) with segment_seconds 5,
              style op, 1 thread per worker: the same three (the ledger must show > 1 segment);
              ratio 2 / 1 on 1 core (target >= 1.8).
  scheduling  many tiny clips (default 2000 copies of one 32x32, 2-frame clip), identity op, 2 workers:
              items/s, ledger transitions/s and how much of the wall time the workers were busy.
              No target beyond "the scheduler is never the bottleneck".
  memory      peak RSS of the worker on a 1-minute and a 10-minute 720p clip (testsrc2, x264 ultrafast,
              cached), identity op, 1 worker, one segment: each job runs in a subprocess of this script,
              which reports getrusage(RUSAGE_CHILDREN).ru_maxrss (its largest child: the worker).
              Ratio 10 min / 1 min (target <= 1.2). Slow (15,000 720p frames): once per size by default.

Every job gets a fresh output folder and job folder. Each repeat runs every contender of every case once,
in an order rotated from repeat to repeat; the table shows medians and ratios of medians, the JSON keeps
every raw run with its ledger statistics. See docs/benchmarks.md ("Batch jobs").

    .venv/bin/python benchmarks/jobs.py                  # full run (long: the memory case transcodes
                                                         # 16,500 720p frames; --no-memory skips it)
    .venv/bin/python benchmarks/jobs.py --quick          # smoke test: tiny sizes, 1 repeat
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import (  # benchmarks/common.py: helpers shared with stylize.py
    DEFAULT_RESULTS,
    RATE,
    add_run_arguments,
    load_average,
    log,
    machine_info,
    make_clip,
    parse_choices,
    parse_size,
    print_table,
    write_results,
)

CASES = ("scaling", "segments", "scheduling", "memory")
TARGET_SCALING = 1.85  # 2 workers on 2 cores / 1 worker on 1 core, many videos
TARGET_SEGMENTS = 1.8  # 2 workers on 2 cores / 1 worker on 1 core, one video in segments
PINNED = "1 worker, 1 core"
"""The scaling baseline: one worker confined to one core (the job and its worker process), so that the
ratio measures what a second worker on a second core adds. An unconfined single worker is measured too:
its decode, conversion, blend and encode threads also use the second core."""
TARGET_MEMORY = 1.2  # peak worker RSS, 10-minute / 1-minute video (at most)
WORKER_PAIR = (1, 2)
SCHEDULING_WORKERS = 2
DEFAULT_CACHE = DEFAULT_RESULTS / "clips"


# ----------------------------------------------------------------------------------------------- a job


def run_job(inputs: list[str], work: Path, options: dict[str, Any], workers: int,
            threads: int | None) -> dict[str, Any]:
    """framefleet.run into a fresh `work`/out with a fresh `work`/job; the wall time, JobResult and ledger."""
    import framefleet

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    pipeline = framefleet.Pipeline.from_options(options)
    settings = framefleet.RunSettings().given(workers=workers, threads_per_worker=threads)
    t0 = time.perf_counter()
    result = framefleet.run(framefleet.JobSpec(inputs, str(work / "out"), pipeline, settings), job_dir=work / "job")
    wall = time.perf_counter() - t0
    if result.failures or result.interrupted:
        first = result.failures[0] if result.failures else {}
        raise RuntimeError(f"the job did not finish cleanly: counts {result.counts}, "
                           f"first failure {first.get('uri')}: {first.get('error')}")
    return {
        "workers": workers,
        "threads_per_worker": threads,
        "frames": result.frames,
        "seconds": wall,
        "seconds_inside_run": result.seconds,
        "counts": result.counts,
        "ledger": ledger_stats(work / "job", wall, workers),
    }


def ledger_stats(job_dir: Path, wall: float, workers: int) -> dict[str, Any]:
    """What the ledger says about a finished job: attempts, transitions, segments, busy time."""
    from framefleet.jobs.directory import open_ledger
    from framefleet.jobs.reads import LedgerReads

    ledger = open_ledger(job_dir)
    try:
        attempts = LedgerReads(ledger).attempts()
        metrics = LedgerReads(ledger).task_metrics()
        tasks = LedgerReads(ledger).tasks()
        items = ledger.items()
    finally:
        ledger.close()
    closed = [a for a in attempts if a["ended"] is not None]
    segments = Counter(a["item_id"] for a in attempts if a["kind"] == "segment" and a["outcome"] == "done")
    joins = sum(1 for a in attempts if a["kind"] == "join" and a["outcome"] == "done")
    held_by_kind: Counter[str] = Counter()
    for a in closed:
        held_by_kind[a["kind"]] += a["ended"] - a["started"]
    held = sum(held_by_kind.values())
    worked = sum(m["seconds"] for m in metrics)
    span = (max(a["ended"] for a in closed) - min(a["started"] for a in attempts)) if closed else None
    return {
        "items": len(items),
        "tasks": tasks,
        "attempts_opened": len(attempts),
        "attempts_closed": len(closed),
        "outcomes": dict(Counter(a["outcome"] for a in attempts)),
        # claims + completions: the ledger writes of the scheduler's hot path, one transaction each, each
        # moving one task pending -> running or running -> done
        "transitions": len(attempts) + len(closed),
        # plus the joins woken up (waiting -> pending) by their last segment
        "task_state_changes": len(attempts) + len(closed) + joins,
        "segments_per_item": {"min": min(segments.values(), default=0),
                              "max": max(segments.values(), default=0)},
        "metrics_seconds": worked,
        "attempt_seconds": held,
        "attempt_seconds_by_kind": dict(held_by_kind),
        "attempts_span_seconds": span,
        "busy_metrics": worked / (workers * wall),
        "busy_attempts": held / (workers * wall),
        # the same over the span from the first claim to the last result: worker start-up left out
        "busy_attempts_span": held / (workers * span) if span else None,
    }


# ------------------------------------------------------------------------------------------- the clips


def prepare_scaling(root: Path, args: argparse.Namespace) -> Path:
    folder = root / "inputs" / "scaling"
    folder.mkdir(parents=True)
    first = folder / "clip-000.mp4"
    make_clip(first, args.width, args.height, args.seconds)
    for i in range(1, args.videos):
        shutil.copyfile(first, folder / f"clip-{i:03d}.mp4")
    return folder


def prepare_segments(root: Path, args: argparse.Namespace) -> Path:
    folder = root / "inputs" / "segments"
    folder.mkdir(parents=True)
    # a keyframe a second, so that the probe can plan segments of segment_seconds
    make_clip(folder / "long.mp4", args.width, args.height, args.long_seconds, gop=RATE)
    return folder


def prepare_tiny(root: Path, args: argparse.Namespace) -> Path:
    from framefleet.video.synth import ClipSpec, write_clip

    folder = root / "inputs" / "tiny"
    folder.mkdir(parents=True)
    first = folder / "tiny-00000.mp4"
    write_clip(first, ClipSpec(width=32, height=32, frames=2, bframes=0, gop=2))
    for i in range(1, args.tiny_count):  # items are keyed by path: copies are distinct items
        shutil.copyfile(first, folder / f"tiny-{i:05d}.mp4")
    return folder


def memory_clip(cache: Path, width: int, height: int, seconds: float) -> Path:
    """A cached testsrc2 + sine clip (x264 ultrafast): made once, reused by later runs."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"testsrc2-{width}x{height}-{seconds:g}s-ultrafast.mp4"
    if path.exists():
        log(f"memory: reusing {path}")
        return path
    log(f"memory: writing a {seconds:g} s {width}x{height} clip to {path} (ffmpeg, x264 ultrafast; cached)")
    t0 = time.perf_counter()
    partial = path.with_name(path.stem + ".partial.mp4")
    make_clip(partial, width, height, seconds, preset="ultrafast")
    partial.rename(path)
    log(f"memory: made in {time.perf_counter() - t0:.0f} s")
    return path


# -------------------------------------------------------------------------------------------- the cases


def run_memory(clip: Path, work: Path, seconds: float) -> dict[str, Any]:
    """One memory job in a subprocess (this script's --memory-child mode); its report."""
    spec = {"input": str(clip), "work": str(work), "segment_seconds": max(3600.0, 2 * seconds)}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--memory-child", json.dumps(spec)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"the memory job exited {proc.returncode}: {' | '.join(tail)}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def memory_child(spec_text: str) -> int:
    """--memory-child: run one identity job with 1 worker; print the peak RSS of the largest child."""
    spec = json.loads(spec_text)
    work = Path(spec["work"])
    result = run_job([spec["input"]], work, {"op": "identity", "segment_seconds": spec["segment_seconds"]},
                     workers=1, threads=None)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result.update(peak_rss_mib=children / 1024, scheduler_rss_mib=self_rss / 1024)
    print(json.dumps(result, default=str))
    return 0


def contenders(case: str, args: argparse.Namespace) -> list[str]:
    if case in ("scaling", "segments"):
        return [PINNED, *(f"{w} worker{'s' if w > 1 else ''}" for w in WORKER_PAIR)]
    if case == "scheduling":
        return [f"{SCHEDULING_WORKERS} workers"]
    return [f"{s:g} s" for s in args.memory_seconds]


def run_case(case: str, contender: str, inputs: dict[str, Path], work: Path,
             args: argparse.Namespace) -> dict[str, Any]:
    style = {"op": "style", "style": args.style}
    if case in ("scaling", "segments"):
        workers = int(contender.split()[0])
        segment_seconds = max(3600.0, 2 * args.seconds) if case == "scaling" else args.segment_seconds
        # scaling: one segment per clip, this case is about many videos
        with one_core() if contender == PINNED else contextlib.nullcontext():
            return run_job([str(inputs[case])], work, {**style, "segment_seconds": segment_seconds}, workers,
                           threads=1)
    if case == "scheduling":
        return run_job([str(inputs[case])], work, {"op": "identity"}, SCHEDULING_WORKERS, threads=1)
    seconds = float(contender.split()[0])
    return run_memory(inputs[f"memory {contender}"], work, seconds)


@contextlib.contextmanager
def one_core() -> Iterator[None]:
    """Confine this process, and the worker processes it starts meanwhile, to its first allowed core."""
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


# ------------------------------------------------------------------------------------------ the summary


def median(runs: list[dict], key) -> float | None:
    values = [key(r) for r in runs]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(raw: dict[str, dict[str, list[dict]]], args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def row(case: str, contender: str, figure: float | None, unit: str, runs: int, ratio: float | None = None,
            ratio_of: str = "", target: float | None = None, at_most: bool = False, note: str = "") -> None:
        met = None if target is None or ratio is None else (ratio <= target if at_most else ratio >= target)
        rows.append({"case": case, "contender": contender, "figure": figure, "unit": unit, "runs": runs,
                     "ratio": ratio, "ratio_of": ratio_of, "target": target,
                     "target_kind": "at most" if at_most else "at least", "met": met, "note": note})

    def fps(r: dict) -> float | None:
        return r["frames"] / r["seconds"] if r.get("seconds") else None

    for case in ("scaling", "segments"):
        if case not in raw:
            continue
        one, unpinned, two = contenders(case, args)
        fps1, fps_unpinned, fps2 = (median(raw[case][name], fps) for name in (one, unpinned, two))
        target = TARGET_SCALING if case == "scaling" else TARGET_SEGMENTS
        for name, value in ((one, fps1), (unpinned, fps_unpinned), (two, fps2)):
            runs = raw[case][name]
            segs = {r["ledger"]["segments_per_item"]["max"] for r in runs}
            note = ""
            if case == "segments":
                note = f"{'/'.join(map(str, sorted(segs)))} segments"
                if max(segs) <= 1:
                    note += " - NOT SPLIT"
            if name == two and fps_unpinned and value:
                note = f"{note}; {value / fps_unpinned:.3f} of {unpinned} (all cores)".lstrip("; ")
            ratio = value / fps1 if value and fps1 else None
            row(case, name, value, "fps", len(runs), ratio, "" if name == one else f"of {one}",
                target if name == two else None, note=note)
        if case == "segments" and any(r["ledger"]["segments_per_item"]["max"] <= 1
                                      for runs in raw[case].values() for r in runs):
            rows[-1]["met"] = False  # not a segment-parallelism figure at all

    if "scheduling" in raw:
        (name,) = contenders("scheduling", args)
        runs = raw["scheduling"][name]
        row("scheduling", f"{name}: items/s", median(runs, lambda r: r["ledger"]["items"] / r["seconds"]),
            "items/s", len(runs), note=f"{args.tiny_count} items, identity")
        row("scheduling", f"{name}: ledger transitions/s",
            median(runs, lambda r: r["ledger"]["transitions"] / r["seconds"]), "/s", len(runs),
            note="attempts opened + closed")
        row("scheduling", f"{name}: workers busy (task metrics)",
            median(runs, lambda r: r["ledger"]["busy_metrics"]), "of wall", len(runs),
            note="sum metrics.seconds / (workers x wall)")
        row("scheduling", f"{name}: workers holding a task",
            median(runs, lambda r: r["ledger"]["busy_attempts_span"]), "of span", len(runs),
            note="sum attempt durations / (workers x first claim..last result)")

    if "memory" in raw:
        short, long = contenders("memory", args)
        rss_short = median(raw["memory"][short], lambda r: r["peak_rss_mib"])
        rss_long = median(raw["memory"][long], lambda r: r["peak_rss_mib"])
        ratio = rss_long / rss_short if rss_short and rss_long else None
        size = f"{args.memory_width}x{args.memory_height}"
        row("memory", f"{short} {size}: worker peak RSS", rss_short, "MiB", len(raw["memory"][short]), 1.0)
        row("memory", f"{long} {size}: worker peak RSS", rss_long, "MiB", len(raw["memory"][long]), ratio,
            f"of {short}", TARGET_MEMORY, at_most=True)
    return rows


def table_rows(rows: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    out = []
    for r in rows:
        if r["figure"] is None:
            figure = "n/a"
        elif r["unit"] in ("of wall", "of span"):
            figure = f"{r['figure']:.3f} {r['unit']}"
        elif r["unit"] == "MiB":
            figure = f"{r['figure']:.1f} MiB"
        else:
            figure = f"{r['figure']:.2f} {r['unit']}"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3f} {r['ratio_of']}".rstrip()
        target = "-" if r["target"] is None else (
            f"{'<=' if r['target_kind'] == 'at most' else '>='} {r['target']:.2f}")
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        contender = r["contender"] + (f"  [{r['note']}]" if r["note"] else "")
        out.append((r["case"], contender, figure, ratio, target, met))
    return out


# -------------------------------------------------------------------------------------------- the run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark framefleet batch jobs: worker scaling, segment parallelism, scheduler "
                    "overhead, worker memory against video length. Prints one table, writes JSON.",
    )
    add_run_arguments(parser, CASES)
    parser.add_argument("--videos", type=int, default=None,
                        help="scaling: number of clips (default 8; --quick: 2)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="scaling: length of each clip (default 2; --quick: 1)")
    parser.add_argument("--size", default="320x180", help="scaling and segments: clip size (default 320x180)")
    parser.add_argument("--long-seconds", type=float, default=None,
                        help="segments: length of the long clip (default 20; --quick: 4)")
    parser.add_argument("--segment-seconds", type=float, default=None,
                        help="segments: the pipeline's segment_seconds (default 5; --quick: 1); the scaling "
                             "clips are never split")
    parser.add_argument("--tiny-count", type=int, default=None,
                        help="scheduling: number of tiny clips (default 2000; --quick: 40)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory case (the slowest)")
    parser.add_argument("--memory-repeats", type=int, default=1,
                        help="memory: runs per clip length (default 1: each is a long transcode)")
    parser.add_argument("--memory-seconds", default=None,
                        help="memory: the two clip lengths, short,long (default 60,600; --quick: 2,6)")
    parser.add_argument("--memory-size", default=None,
                        help="memory: clip size (default 720p; --quick: 320x180)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                        help="where the memory clips are kept between runs "
                             "(default benchmarks/results/clips)")
    parser.add_argument("--style", default="7", help="built-in style of the style op (default 7)")
    parser.add_argument("--output", type=Path, default=None,
                        help="results JSON (default benchmarks/results/jobs-<UTC time>.json)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where inputs and job outputs go "
                             "(default a temporary folder, removed at the end)")
    parser.add_argument("--keep", action="store_true", help="keep every job's output and job folder")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child is not None:
        return args
    q = args.quick
    args.repeats = args.repeats if args.repeats is not None else (1 if q else 3)
    args.videos = args.videos if args.videos is not None else (2 if q else 8)
    args.seconds = args.seconds if args.seconds is not None else (1.0 if q else 2.0)
    args.long_seconds = args.long_seconds if args.long_seconds is not None else (4.0 if q else 20.0)
    args.segment_seconds = args.segment_seconds if args.segment_seconds is not None else (1.0 if q else 5.0)
    args.tiny_count = args.tiny_count if args.tiny_count is not None else (40 if q else 2000)
    try:
        _, args.width, args.height = parse_size(args.size)
        memory_size = args.memory_size or ("320x180" if q else "720p")
        _, args.memory_width, args.memory_height = parse_size(memory_size)
        memory_seconds = args.memory_seconds or ("2,6" if q else "60,600")
        args.memory_seconds = [float(v) for v in memory_seconds.split(",")]
    except (argparse.ArgumentTypeError, ValueError) as exc:
        parser.error(str(exc))
    args.case_list = parse_choices(parser, args.cases, CASES, "case")
    if args.no_memory and "memory" in args.case_list:
        args.case_list.remove("memory")
    if not args.case_list:
        parser.error("no case left to run")
    if min(args.repeats, args.memory_repeats, args.videos, args.tiny_count) < 1:
        parser.error("--repeats, --memory-repeats, --videos and --tiny-count must be at least 1")
    if min(args.seconds, args.long_seconds, args.segment_seconds) <= 0:
        parser.error("--seconds, --long-seconds and --segment-seconds must be positive")
    if len(args.memory_seconds) != 2 or not 0 < args.memory_seconds[0] < args.memory_seconds[1]:
        parser.error("--memory-seconds takes two lengths, short,long (e.g. 60,600)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_child is not None:
        return memory_child(args.memory_child)
    started_at = dt.datetime.now(dt.timezone.utc)
    output = args.output or DEFAULT_RESULTS / (
        f"jobs-{started_at:%Y%m%dT%H%M%SZ}{'-quick' if args.quick else ''}.json")
    if args.repeats < 3:
        log(f"note: {args.repeats} repeat(s); BENCHMARKS.md asks for at least 3 for figures worth quoting")
    info = machine_info()
    memory_note = f"; memory: {args.memory_repeats} run(s) per size" if "memory" in args.case_list else ""
    log(f"{info['cores_available']} cores ({info['cpu_model']}); cases {', '.join(args.case_list)}; "
        f"{args.repeats} repeat(s){memory_note}")

    work_root = args.workdir or Path(tempfile.mkdtemp(prefix="framefleet-bench-jobs-"))
    work_root.mkdir(parents=True, exist_ok=True)
    load_before = load_average()
    t_all = time.perf_counter()
    raw: dict[str, dict[str, list[dict]]] = {}
    order_log: list[list[str]] = []
    try:
        inputs: dict[str, Path] = {}
        shutil.rmtree(work_root / "inputs", ignore_errors=True)
        if "scaling" in args.case_list:
            log(f"scaling: writing {args.videos} x {args.seconds:g} s {args.width}x{args.height} clips")
            inputs["scaling"] = prepare_scaling(work_root, args)
        if "segments" in args.case_list:
            log(f"segments: writing a {args.long_seconds:g} s {args.width}x{args.height} clip")
            inputs["segments"] = prepare_segments(work_root, args)
        if "scheduling" in args.case_list:
            log(f"scheduling: writing {args.tiny_count} tiny clips (32x32, 2 frames)")
            inputs["scheduling"] = prepare_tiny(work_root, args)
        if "memory" in args.case_list:
            for seconds, name in zip(args.memory_seconds, contenders("memory", args), strict=True):
                inputs[f"memory {name}"] = memory_clip(args.cache_dir, args.memory_width, args.memory_height,
                                                       seconds)

        def one(case: str, name: str, rep: int, repeats: int) -> None:
            work = work_root / "runs" / case / f"{name.replace(' ', '-')}-r{rep + 1}"
            result = run_case(case, name, inputs, work, args)
            result["repeat"] = rep
            raw.setdefault(case, {}).setdefault(name, []).append(result)
            ledger = result["ledger"]
            extra = ""
            if case == "memory":
                extra = f", worker peak RSS {result['peak_rss_mib']:.1f} MiB"
            elif case == "scheduling":
                extra = (f", {ledger['items'] / result['seconds']:.1f} items/s, "
                         f"{ledger['transitions'] / result['seconds']:.1f} transitions/s, busy "
                         f"{ledger['busy_metrics']:.2f} of wall (metrics), holding a task "
                         f"{ledger['busy_attempts']:.2f} of wall, {ledger['busy_attempts_span'] or 0:.2f} of "
                         f"the span ({ledger['attempts_span_seconds'] or 0:.2f} s)")
            elif case == "segments":
                extra = f", {ledger['segments_per_item']['max']} segments"
                if ledger["segments_per_item"]["max"] <= 1:
                    log("warning: the long clip was not split; the segments case measures nothing")
            log(f"repeat {rep + 1}/{repeats} {case} {name}: {ledger['items']} item(s), "
                f"{result['frames']} frames in {result['seconds']:.2f} s = "
                f"{result['frames'] / result['seconds']:.2f} fps{extra}")
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
            gc.collect()

        plain = [c for c in args.case_list if c != "memory"]
        for rep in range(args.repeats if plain else 0):
            order = []
            for case in plain:
                names = contenders(case, args)
                shift = rep % len(names)  # rotate so no contender always runs first
                for name in names[shift:] + names[:shift]:
                    order.append(f"{case}/{name}")
                    one(case, name, rep, args.repeats)
            order_log.append(order)
        if "memory" in args.case_list:
            names = contenders("memory", args)
            for rep in range(args.memory_repeats):
                shift = rep % len(names)
                order = names[shift:] + names[:shift]
                order_log.append([f"memory/{n}" for n in order])
                for name in order:
                    one("memory", name, rep, args.memory_repeats)
        total_seconds = time.perf_counter() - t_all
        load_after = load_average()
        rows = summarise(raw, args)
    finally:
        if args.keep or args.workdir:
            log(f"kept inputs and outputs under {work_root}")
        else:
            shutil.rmtree(work_root, ignore_errors=True)

    header = (f"framefleet batch-job benchmark - {info['cores_available']} cores, {info['cpu_model']}; "
              f"median of {args.repeats} alternating run(s){memory_note}"
              + ("; QUICK RUN: smoke test, not results" if args.quick else ""))
    print()
    print_table(header, ("case", "contender", "figure (median)", "ratio", "target", "met?"), table_rows(rows),
                right={2})
    notes = []
    size = f"{args.width}x{args.height}"
    if "scaling" in args.case_list:
        notes.append(f"scaling: {args.videos} clips x {args.seconds:g} s {size} (copies of one "
                     f"testsrc2 + sine clip), style {args.style}, 1 thread per worker, one segment per "
                     "clip; fps = frames / wall time of framefleet.run (worker start-up included).")
    if "segments" in args.case_list:
        notes.append(f"segments: one {args.long_seconds:g} s {size} clip, a keyframe a second, "
                     f"segment_seconds {args.segment_seconds:g}, style {args.style}, 1 thread per worker; "
                     "segments per item read from the ledger; fps as above (the join included).")
    if "scheduling" in args.case_list:
        notes.append(f"scheduling: {args.tiny_count} copies of a 32x32 2-frame clip, identity op, "
                     f"{SCHEDULING_WORKERS} workers. Transitions = ledger attempts opened (claims) + "
                     "closed (completions), one write transaction each. 'task metrics': sum of "
                     "metrics.seconds (only segment tasks record it; probes record none) / (workers x "
                     "wall time, worker start-up included). 'holding a task': sum of attempt durations, "
                     "claim to recorded result (probes, IPC and scheduler latency included) / (workers x "
                     "the span from the first claim to the last result); well below 1 means the workers "
                     "wait for the scheduler.")
    if "memory" in args.case_list:
        lengths = " and ".join(f"{s:g} s" for s in args.memory_seconds)
        notes.append(f"memory: testsrc2 + sine {args.memory_width}x{args.memory_height} x264 ultrafast clips "
                     f"of {lengths}, identity op, 1 worker, one segment; each job in a subprocess reporting "
                     "getrusage(RUSAGE_CHILDREN).ru_maxrss (its largest child: the worker); measured "
                     f"{args.memory_repeats} time(s) per size.")
    notes.append(f"load average before/after: {load_before} / {load_after} (other work on the machine skews "
                 "absolute figures; ratios are measured side by side).")
    for note in notes:
        print(f"  {note}")

    payload = {
        "benchmark": "jobs",
        "started_utc": started_at.isoformat(timespec="seconds"),
        "total_seconds": round(total_seconds, 1),
        "quick": args.quick,
        "args": {"cases": args.case_list, "repeats": args.repeats, "videos": args.videos,
                 "seconds": args.seconds, "size": [args.width, args.height],
                 "long_seconds": args.long_seconds,
                 "segment_seconds": args.segment_seconds, "tiny_count": args.tiny_count, "style": args.style,
                 "memory_repeats": args.memory_repeats, "memory_seconds": args.memory_seconds,
                 "memory_size": [args.memory_width, args.memory_height], "rate": RATE},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": info,
        "load_average": {"before": load_before, "after": load_after},
        "targets": {"scaling_2_over_1": TARGET_SCALING, "segments_2_over_1": TARGET_SEGMENTS,
                    "memory_long_over_short_at_most": TARGET_MEMORY},
        "order_per_repeat": order_log,
        "summary": rows,
        "raw": raw,
    }
    write_results(output, payload, total_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
