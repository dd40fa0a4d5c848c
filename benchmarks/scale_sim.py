#!/usr/bin/env python3
"""Past one machine, by simulation: the real scheduler and the real ledger driving thousands of scripted
workers, to find how many task completions per second one driver sustains and what limits it.

No video is touched. `ScriptedPool` implements the scheduler's `WorkerPool` protocol: a worker is Ready at
once; a task handed to it "takes" a time drawn from a log-normal law (by kind: probe, segment, join) and
then reports what a real worker reports (`TaskResult` with a `ProbeResult` and its segment plan, a
`SegmentResult` or a `JoinResult`, with metrics). Everything else is the product's own code:
`engines.scheduler.Scheduler` (claims, completions, lease renewals, hang and stall checks, progress
reports) over `jobs.store.Ledger` (SQLite in WAL mode, in a temporary job directory).

The workload: `--tasks` tasks (default 100,000) as items of one probe, `--segments` segments and, when an
item has several segments, a join (default 2 segments: 25,000 items of 4 tasks). With the default times
(probe 0.2 s, segment 2 s, join 0.5 s, log-normal sigma 0.5) 2,000 workers offer about 1,700 completions
per second: when the driver sustains less, the driver is the limit, and the workers' busy share says so.

Reported: sustained completions per second (between 10% and 90% of the completions), the whole run's rate,
the workers' busy share, the ledger's size on disk (database + WAL), the driver's peak RSS, and, with
`--profile`, where the driver spends its time (py-spy, sampling this script as its child; the JSON keeps
the functions of framefleet with the largest inclusive share).

    .venv/bin/python benchmarks/scale_sim.py                              # 2,000 workers, 100,000 tasks
    .venv/bin/python benchmarks/scale_sim.py --segments 1                 # 50,000 items of probe + segment
    .venv/bin/python benchmarks/scale_sim.py --profile                    # the same, sampled by py-spy
    .venv/bin/python benchmarks/scale_sim.py --quick                      # smoke test: 200 workers, 4,000 tasks
"""

from __future__ import annotations

import argparse
import heapq
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import DEFAULT_RESULTS, load_average, log, machine_info, print_table, write_results

from framefleet.engines.events import EngineProgress, Event, Finished, Progressed, Ready
from framefleet.engines.scheduler import Scheduler
from framefleet.jobs.results import JoinResult, ProbeResult, Segment, SegmentResult, TaskMetrics
from framefleet.jobs.store import Ledger
from framefleet.jobs.task import TaskRequest, TaskResult
from framefleet.settings import EngineOptions

TARGET = 500.0
"""Sustained completions per second one driver must reach (issue 26)."""
FPS = 25
FRAMES_PER_SEGMENT = 250


@dataclass(frozen=True)
class TaskTimes:
    """Median seconds a scripted task takes, by kind, and the spread of the log-normal law they follow."""

    probe: float = 0.2
    segment: float = 2.0
    join: float = 0.5
    sigma: float = 0.5

    def draw(self, kind: str, rng: random.Random) -> float:
        median = {"probe": self.probe, "segment": self.segment, "join": self.join}[kind]
        return median * rng.lognormvariate(0.0, self.sigma)


@dataclass
class ScriptedPool:
    """A `WorkerPool` whose workers take scripted times and report what real workers report."""

    one_machine = False

    segments: int
    times: TaskTimes
    rng: random.Random
    _workers: set[str] = field(default_factory=set)
    _announced: list[Event] = field(default_factory=list)
    _running: list[tuple[float, int, str, TaskRequest, float]] = field(default_factory=list)
    _serial: int = 0
    completions: list[float] = field(default_factory=list)
    """When each result was handed to the scheduler (monotonic seconds)."""
    busy_seconds: float = 0.0
    """Scripted seconds of the tasks reported."""
    by_kind: Counter[str] = field(default_factory=Counter)

    def spawn(self) -> str:
        self._serial += 1
        name = f"sim-{self._serial}"
        self._workers.add(name)
        self._announced.append(Ready(name))
        return name

    def submit(self, worker: str, request: TaskRequest) -> bool:
        if worker not in self._workers:
            return False
        took = self.times.draw(request.kind, self.rng)
        self._serial += 1
        heapq.heappush(self._running, (time.monotonic() + took, self._serial, worker, request, took))
        return True

    def events(self, timeout: float) -> list[Event]:
        found, self._announced = self._announced, []
        if not found and self._running:
            wait = min(timeout, self._running[0][0] - time.monotonic())
            if wait > 0:
                time.sleep(wait)
        elif not found:
            time.sleep(timeout)
        now = time.monotonic()
        while self._running and self._running[0][0] <= now:
            _, _, worker, request, took = heapq.heappop(self._running)
            if worker not in self._workers:
                continue
            result = self._result(request, took)
            found.append(Progressed(worker, result.metrics.frames))
            found.append(Finished(worker, result))
            self.completions.append(now)
            self.busy_seconds += took
            self.by_kind[request.kind] += 1
        return found

    def cut(self, worker: str) -> bool:
        return False  # scripted tasks are never cut short: a notice gives them back

    def kill(self, worker: str) -> None:
        self._workers.discard(worker)

    def close(self) -> None:
        self._workers.clear()
        self._running.clear()

    def _result(self, request: TaskRequest, took: float) -> TaskResult:
        """What a real worker reports for `request` (`framefleet.jobs.task.run_task`), with made-up figures."""
        frames = FRAMES_PER_SEGMENT * self.segments
        if request.kind == "probe":
            bounds = [seq * FRAMES_PER_SEGMENT for seq in range(self.segments + 1)]
            plan = [Segment(None if seq == 0 else bounds[seq], None if seq == self.segments - 1 else bounds[seq + 1])
                    for seq in range(self.segments)]
            probe = ProbeResult(frames=frames, duration=frames / FPS, width=1280, height=720, video_index=0)
            return TaskResult(probe, TaskMetrics(seconds=took, bytes_in=4096), plan)
        if request.kind == "segment":
            part = f"{request.parts_dir}/item-{request.item_id}/{request.seq:05d}.nut"
            output = request.output_uri if self.segments == 1 else part
            return TaskResult(
                SegmentResult(frames=FRAMES_PER_SEGMENT, output=output, runtime="scripted"),
                TaskMetrics(frames=FRAMES_PER_SEGMENT, seconds=took, decode_s=took / 4, ops_s=took / 2,
                            encode_s=took / 4, bytes_in=2 << 20, bytes_out=2 << 20, steps_s={"style": took / 2}),
            )
        return TaskResult(JoinResult(output=request.output_uri, frames=frames, streams=[{"index": 1, "codec": "aac"}]),
                          TaskMetrics(seconds=took, bytes_in=4 << 20, bytes_out=4 << 20))


def tasks_per_item(segments: int) -> int:
    return 1 + segments + (1 if segments > 1 else 0)


def simulate(work: Path, workers: int, tasks: int, segments: int, times: TaskTimes, seed: int,
             stop_after: float | None = None) -> dict[str, Any]:
    """One job of `tasks` scripted tasks on `workers` scripted workers, driven by the real scheduler and
    ledger; stopped (as Ctrl-C stops a job) after `stop_after` seconds when given."""
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    items = tasks // tasks_per_item(segments)
    job = work / "job"
    job.mkdir(parents=True)
    ledger = Ledger(job / "ledger.db")
    ledger.init_job(fingerprint="scripted", spec={"ops": ["scripted"]}, version="sim", output_root="sim://out")
    t0 = time.perf_counter()
    ledger.add_items((f"sim://in/{n:06d}.mp4", f"{n:06d}.mp4", 50 << 20, "v1", f"sim://out/{n:06d}.mp4")
                     for n in range(items))
    log(f"{items:,} items added in {time.perf_counter() - t0:.1f} s; running {workers:,} workers")
    pool = ScriptedPool(segments, times, random.Random(seed))
    progress: list[EngineProgress] = []
    stop = threading.Event()
    scheduler = Scheduler(ledger, pool, str(work / "parts"), workers,
                          EngineOptions(workers=workers, poll_seconds=0.5), on_progress=progress.append, stop=stop)
    timer = threading.Timer(stop_after or 0.0, stop.set)
    timer.daemon = True
    if stop_after is not None:
        timer.start()
    started = time.monotonic()
    finished = scheduler.run()
    timer.cancel()
    wall = time.monotonic() - started
    counts = ledger.counts()
    ledger.close()
    done = pool.completions
    first, last = int(0.1 * len(done)), int(0.9 * len(done)) - 1
    sustained = (last - first) / (done[last] - done[first]) if last > first and done[last] > done[first] else 0.0
    ledger_bytes = sum(path.stat().st_size for path in job.iterdir() if path.name.startswith("ledger.db"))
    offered = workers * tasks_per_item(segments) / (times.probe + segments * times.segment
                                                      + (times.join if segments > 1 else 0.0))
    return {
        "workers": workers, "tasks": items * tasks_per_item(segments), "items": items, "segments": segments,
        "finished": finished, "counts": counts, "completions": len(done), "by_kind": dict(pool.by_kind),
        "wall_seconds": wall, "completions_per_s": len(done) / wall, "sustained_per_s": sustained,
        "offered_per_s_median_times": offered, "busy_share": pool.busy_seconds / (workers * wall),
        "ledger_bytes": ledger_bytes, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_before_bytes": rss_before,
    }


def summarize_profile(raw: Path, top: int = 12) -> list[dict[str, Any]]:
    """The framefleet functions with the largest inclusive share of py-spy's samples (its raw, collapsed format)."""
    total = 0
    inclusive: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        seen = set()
        for frame in stack.split(";"):
            name, _, where = frame.partition(" (")
            if "framefleet" not in where and "scale_sim" not in where:
                continue
            key = f"{name} ({where.split('framefleet/')[-1].split(':')[0]})"
            if key not in seen:
                seen.add(key)
                inclusive[key] += int(count)
    return [{"function": name, "share": n / total} for name, n in inclusive.most_common(top)] if total else []


def profiled(argv: list[str], output: Path) -> int:
    """Run this script again under py-spy (sampling its child), then add the profile's summary to its JSON."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    raw = output.with_suffix(".py-spy.txt")
    child = [a for a in argv if a != "--profile"] + ["--output", str(output)]
    code = subprocess.call([spy, "record", "--format", "raw", "--rate", "50", "--output", str(raw), "--",
                            sys.executable, __file__, *child])
    if code != 0 or not raw.exists():
        return code or 1
    import json

    payload = json.loads(output.read_text())
    payload["profile"] = summarize_profile(raw)
    write_results(output, payload)
    print_table("\nwhere the driver spends its time (py-spy, inclusive share of samples)", ["function", "share"],
                [[p["function"], f"{p['share']:.0%}"] for p in payload["profile"]], right={1})
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2000)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--segments", type=int, default=2, help="segments per item (1: probe + segment, no join)")
    parser.add_argument("--probe-seconds", type=float, default=TaskTimes.probe)
    parser.add_argument("--segment-seconds", type=float, default=TaskTimes.segment)
    parser.add_argument("--join-seconds", type=float, default=TaskTimes.join)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stop-after", type=float, default=None,
                        help="stop the job after this many seconds (a driver too slow to finish in good time)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 200 workers, 4,000 tasks")
    parser.add_argument("--profile", action="store_true", help="sample the run with py-spy")
    parser.add_argument("--output", type=Path,
                        default=DEFAULT_RESULTS / f"scale_sim-{time.strftime('%Y%m%dT%H%M%S')}.json")
    args = parser.parse_args(argv)
    if args.profile:
        return profiled(argv, args.output)
    if args.quick:
        args.workers, args.tasks = 200, 4000
    times = TaskTimes(args.probe_seconds, args.segment_seconds, args.join_seconds)
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="framefleet-scale-sim-") as tmp:
        result = simulate(Path(tmp), args.workers, args.tasks, args.segments, times, args.seed, args.stop_after)
    machine = machine_info()
    row = [f"{result['workers']:,}", f"{result['tasks']:,}", f"{result['segments']}",
           f"{result['offered_per_s_median_times']:.0f}", f"{result['sustained_per_s']:.0f}",
           f"{result['completions_per_s']:.0f}", f"{result['busy_share']:.0%}",
           f"{result['ledger_bytes'] / 2**20:.0f}",
           f"{result['peak_rss_bytes'] / 2**20:.0f} ({result['rss_before_bytes'] / 2**20:.0f} before)",
           "yes" if result["sustained_per_s"] >= TARGET else "no"]
    print_table(f"\nscripted workers on the real scheduler and ledger ({machine['cpu_model']}, "
                f"{machine['cores_available']} cores, load before {load_before})",
                ["workers", "tasks", "segments/item", "offered/s", "sustained/s", "overall/s", "busy",
                 "ledger MiB", "driver peak RSS MiB", f">= {TARGET:.0f}/s"], [row], right=set(range(9)))
    write_results(args.output, {"machine": machine, "args": {k: str(v) for k, v in vars(args).items()},
                                "load_before": load_before, "load_after": load_average(), "result": result},
                  result["wall_seconds"])
    print(f"completions: {result['completions']:,} of {result['tasks']:,} tasks in {result['wall_seconds']:.0f} s"
          + ("" if result["finished"] else " (stopped early)"))
    return 0 if result["finished"] and result["counts"].get("done") == result["items"] else 1


if __name__ == "__main__":
    sys.exit(main())
