"""Chaos soak, local engine: a job (style 7 at 48 px) over many short videos (and a few hostile files) while
faults are injected,
then a count of what was lost or duplicated, like a Jepsen result.

    python benchmarks/chaos.py [--videos 300] [--faults 50] [--output FILE]

Faults, at random moments:
- a worker process killed with SIGKILL (most faults, every `--worker-kill` seconds on average);
- the whole `framefleet run` killed with SIGKILL and started again (every `--run-kill` seconds on average),
  as a preempted machine or an operator would.
The run is restarted until it ends on its own (exit 0 or 3). Then, from the ledger and the output folder:
lost (a good video with no output), duplicated (an output that is not one of the expected names, or a
temporary left behind), wrong (an output whose frames or times differ from its input's), failed good
videos, and the hostile files' outcomes. Linux only (worker processes are found through /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from common import DEFAULT_RESULTS, log, machine_info, print_table, write_results
from framefleet.video.synth import ClipSpec, write_clip

FRAMES = 24


def children(pid: int) -> list[int]:
    """The direct children of a process (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def workers_of(pid: int) -> list[int]:
    """framefleet's worker processes under a `framefleet run` (spawned multiprocessing children that are
    not the resource tracker)."""
    found = []
    for child in children(pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"multiprocessing" in command and b"resource_tracker" not in command:
            found.append(child)
    return found


def times(path: Path) -> list[Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts = [frame.pts for frame in container.decode(stream)]
    return [(p - pts[0]) * stream.time_base for p in pts]


def soak(work: Path, videos: int, faults: int, worker_kill: float, run_kill: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    src, out = work / "in", work / "out"
    src.mkdir(parents=True)
    for i in range(videos):
        write_clip(src / f"v{i:04d}.mp4", ClipSpec(width=64, height=48, frames=FRAMES, audio=("aac",) if i % 3 else ()))
    hostile = {"empty.mp4": b"", "notes.mp4": b"not a video\n" * 20,
               "cut.mp4": (src / "v0000.mp4").read_bytes()[:300]}
    for name, data in hostile.items():
        (src / name).write_bytes(data)
    command = [sys.executable, "-m", "framefleet", "run", str(src), "-o", str(out), "--style", "7", "--max-size",
               "48", "--temporal", "none", "--workers", "2", "--max-attempts", "2", "--json", "--quiet"]
    injected = {"worker killed": 0, "run killed": 0}
    runs, started, last, exits = 0, time.perf_counter(), None, []
    while True:
        runs += 1
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        next_worker = time.monotonic() + rng.expovariate(1 / worker_kill)
        next_run = time.monotonic() + rng.expovariate(1 / run_kill)
        while process.poll() is None:
            time.sleep(0.05)
            now = time.monotonic()
            total = sum(injected.values())
            if total < faults and now >= next_run and injected["run killed"] < max(1, faults // 10):
                os.killpg(process.pid, signal.SIGKILL)  # the run and its workers, as a preemption
                process.wait()
                injected["run killed"] += 1
                log(f"run {runs} killed")
                break
            if total < faults and now >= next_worker:
                pids = workers_of(process.pid)
                if pids:
                    os.kill(rng.choice(pids), signal.SIGKILL)
                    injected["worker killed"] += 1
                next_worker = now + rng.expovariate(1 / worker_kill)
        exits.append(process.returncode)
        if process.returncode in (0, 3):
            last = json.loads(process.stdout.read())
            break
        process.stdout.close()
    seconds = time.perf_counter() - started
    good = sorted(p.name for p in src.glob("v*.mp4"))
    outputs = sorted(p.name for p in out.iterdir() if p.is_file())
    lost = [name for name in good if name not in outputs]
    extra = [name for name in outputs if name not in good]
    wrong = [name for name in good if name in outputs and times(out / name) != times(src / name)]
    failed = {Path(f["uri"]).name: f["error_type"] for f in last["failures"]}
    return {"videos": videos, "hostile": len(hostile), "runs": runs, "exit_codes": exits, "faults": injected,
            "seconds": seconds,
            "lost": lost, "duplicated_or_stray": extra, "wrong": wrong,
            "failed_good": sorted(set(failed) & set(good)), "hostile_outcomes": {name: failed.get(name, "done")
                                                                                for name in hostile},
            "counts": last["counts"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=300)
    parser.add_argument("--faults", type=int, default=50)
    parser.add_argument("--worker-kill", type=float, default=0.25, help="mean seconds between worker kills")
    parser.add_argument("--run-kill", type=float, default=5.0, help="mean seconds between kills of the whole run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", type=Path, default=DEFAULT_RESULTS / f"chaos-{time.strftime('%Y%m%dT%H%M%S')}.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="framefleet-chaos-") as tmp:
        result = soak(Path(tmp), args.videos, args.faults, args.worker_kill, args.run_kill, args.seed)
    faults = result["faults"]
    rows = [["local engine", str(result["videos"]), str(sum(faults.values())),
             f"{faults['worker killed']} workers, {faults['run killed']} runs", str(result["runs"]),
             str(len(result["lost"])), str(len(result["duplicated_or_stray"])), str(len(result["wrong"])),
             str(len(result["failed_good"])), f"{result['seconds']:.0f}"]]
    print_table("\nchaos soak", ["engine", "videos", "faults", "killed", "runs", "lost", "duplicated", "wrong",
                                 "good failed", "s"], rows, right={1, 2, 4, 5, 6, 7, 8, 9})
    print(f"hostile files: {result['hostile_outcomes']}; the runs' exit codes: {result['exit_codes']} "
          "(-9: killed; 2: stopped because workers kept dying while starting)")
    write_results(args.output, {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()},
                                "result": result}, result["seconds"])
    clean = not (result["lost"] or result["duplicated_or_stray"] or result["wrong"] or result["failed_good"])
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
