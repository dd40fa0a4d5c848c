"""Spot soak: a Ray job over many short videos on a loopback cluster whose nodes get preemption notices
(a fake Azure metadata service per node) and are killed, then a count of what was lost, duplicated, wrong
or failed, and of the frames processed twice, with notice handling on and off.

    python benchmarks/spot_soak.py [--videos 300] [--announced 30] [--kills 10] [--notice 3]
                                   [--modes on,off] [--quick] [--output FILE]

The cluster: a head with no CPUs and `--nodes` worker nodes of one CPU each, every node with its own fake
metadata service (`tests/fake_metadata.py`) in its FRAMEFLEET_SPOT_* variables (polled every 0.1 s). The
job: `framefleet.jobs.run.run` with the Ray engine, one worker a node, `--max-attempts 1 --max-crashes 1`
(a `preempted` or lost attempt counted against them would fail its item), 1 s segments of an identity op
that sleeps per batch (tests' SlowOp), run again while it exits 75, as a user's loop would.

The chaos: `--announced` preemptions (a `Preempt` event `--notice` seconds ahead on a node's service; at the
deadline the node is killed and a fresh one added, as a cloud does) and `--kills` unannounced ones (a node
killed and replaced at once), one at a time, in a shuffled order, spread over the job by its progress.
With notice handling off (`FRAMEFLEET_SPOT_SOURCES=none` on the nodes) the same notices are given and
nobody reads them: an announced preemption is a plain kill at the deadline.

Frames processed twice are measured, not estimated: the op appends one byte per frame it starts to a file
per worker process, which survives the process's kill; the frames begun in all, less the inputs' frames, are
the frames processed more than once (work lost with a killed or given-back attempt).
"""

from __future__ import annotations

import argparse
import faulthandler
import math
import os
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from chaos import ROOT, LocalStore, RayCluster, attempt_outcomes, attempts_started, children, times
from common import DEFAULT_RESULTS, load_average, log, machine_info, print_table, write_results
from fake_metadata import FakeMetadataServer, azure_event
from job_ops import SlowOp
from ray._private import ray_constants

from framefleet.jobs.run import PREEMPTED_EXIT_CODE, run
from framefleet.jobs.spec import JobSpec
from framefleet.pipeline import Pipeline
from framefleet.processing.batch import FrameBatch
from framefleet.settings import EngineOptions, RayOptions, RetryPolicy, RunSettings
from framefleet.video.synth import ClipSpec, write_clip

RATE = 12
"""Frames per second of the inputs; a keyframe every second, 1 s segments."""
SECONDS = (2, 3, 4)
"""The inputs' lengths, in turn."""
QUICK = (20, 4, 2)
"""--quick: videos, announced preemptions, unannounced kills."""


@dataclass(kw_only=True)
class CountedSlowOp(SlowOp):
    """SlowOp that first appends one byte per frame of the batch to `count_dir/<pid>`: the frames each worker
    process began, counted even when it is killed in the middle of them."""

    name = "counted_slow"
    count_dir: str

    def process(self, batch: FrameBatch) -> FrameBatch:
        fd = os.open(os.path.join(self.count_dir, str(os.getpid())), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, b"." * len(batch))
        finally:
            os.close(fd)
        return super().process(batch)


@dataclass(frozen=True)
class SoakConfig:
    """One soak."""

    videos: int = 300
    announced: int = 30
    kills: int = 10
    notice_seconds: float = 3.0
    notices: bool = True
    """Whether the nodes watch their metadata service (False: FRAMEFLEET_SPOT_SOURCES=none)."""
    nodes: int = 2
    delay: float = 0.12
    """Seconds the op sleeps per batch of 2 frames (a 1 s segment of 12 frames: about 0.7 s)."""
    seed: int = 1
    stall_seconds: float = 180.0
    """Seconds without a new attempt after which the job counts as stalled (its stacks are printed)."""


class SpotCluster(RayCluster):
    """The chaos soak's loopback cluster, each worker node with a fake Azure metadata service of its own."""

    def __init__(self, nodes: int, notices: bool) -> None:
        self.notices = notices
        self.servers: dict[str, FakeMetadataServer] = {}
        """Node id -> its metadata service."""
        super().__init__(0)
        self.nodes = [self.add() for _ in range(nodes)]
        self.cluster.wait_for_nodes()

    def add(self, env_vars: dict[str, str] | None = None) -> Any:
        server = FakeMetadataServer("azure", vm_name=f"vm-{len(self.servers)}").__enter__()
        node = super().add({"FRAMEFLEET_SPOT_SOURCES": "azure" if self.notices else "none",
                            "FRAMEFLEET_SPOT_AZURE_URL": server.url, "FRAMEFLEET_SPOT_AZURE_POLL_SECONDS": "0.1",
                            **(env_vars or {})})
        self.servers[node.node_id] = server
        return node

    def announce(self, node: Any, seconds: float) -> float:
        """Schedule a Spot eviction of `node` in `seconds` (from a whole second: NotBefore has no fractions);
        the deadline, `time.time()` seconds."""
        time.sleep(math.ceil(time.time()) - time.time())
        deadline = round(time.time()) + seconds
        server = self.servers[node.node_id]
        server.set_azure_events(azure_event(f"evict-{node.node_id[:8]}", deadline, resources=(server.vm_name,)))
        return deadline

    def busy(self, counts: Path) -> list[Any]:
        """The nodes with a worker in the middle of a segment: a process of theirs (a child of their raylet)
        began frames in the last half second."""
        recent = {int(path.name) for path in counts.iterdir() if time.time() - path.stat().st_mtime < 0.5}
        return [node for node in self.nodes
                if recent & set(children(node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid))]

    def replace(self, node: Any) -> None:
        super().replace(node)
        self.servers.pop(node.node_id).__exit__(None, None, None)

    def close(self) -> None:
        super().close()
        for server in self.servers.values():
            server.__exit__(None, None, None)


def make_inputs(folder: Path, videos: int) -> int:
    """`videos` clips of 96x64, 2-4 s, a keyframe every second, one in three with audio; their frames."""
    folder.mkdir()
    frames = 0
    for i in range(videos):
        length = SECONDS[i % len(SECONDS)] * RATE
        write_clip(folder / f"v{i:04d}.mp4", ClipSpec(width=96, height=64, frames=length, rate=RATE, gop=RATE,
                                                      bframes=0, audio=("aac",) if i % 3 == 0 else ()))
        frames += length
    return frames


def items_done(ledger: Path) -> int:
    try:
        db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=1)
    except sqlite3.Error:
        return 0
    try:
        return db.execute("SELECT COUNT(*) FROM items WHERE state = 'done'").fetchone()[0]
    except sqlite3.Error:
        return 0
    finally:
        db.close()


@dataclass
class Chaos:
    """The preemptions, injected one at a time as the job's items get done."""

    cluster: SpotCluster
    plan: list[str]
    notice_seconds: float
    rng: random.Random
    injected: Counter = field(default_factory=Counter)
    ends: list[float] = field(default_factory=list)
    """When each preempted node was killed (`time.time()` seconds)."""
    idle: int = 0
    """Preemptions of a node with no worker in the middle of a segment (none was, within 5 s)."""

    def due(self, done_fraction: float) -> bool:
        """Whether the next preemption is due: the k-th of n comes once 0.7 k/(n+1) of the items are done (all
        before the job's tail, where one worker's loss would end the job first)."""
        k = sum(self.injected.values())
        return k < len(self.plan) and done_fraction >= 0.7 * (k + 1) / (len(self.plan) + 1)

    def inject(self, job_alive: threading.Event, counts: Path) -> None:
        """The next preemption, of a node with a worker in the middle of a segment (any node when none is
        within 5 s)."""
        kind, began = self.plan[sum(self.injected.values())], time.monotonic()
        give_up = time.monotonic() + 5
        while not (busy := self.cluster.busy(counts)) and time.monotonic() < give_up and job_alive.is_set():
            time.sleep(0.05)
        node = self.rng.choice(busy or self.cluster.nodes)
        self.idle += not busy
        if kind == "announced":
            deadline = self.cluster.announce(node, self.notice_seconds)
            while time.time() < deadline and job_alive.is_set():
                time.sleep(0.05)
        self.ends.append(time.time())
        self.cluster.replace(node)
        self.injected[kind] += 1
        log(f"{kind} preemption {sum(self.injected.values())} of {len(self.plan)} "
            f"({time.monotonic() - began:.1f} s)")


def job_settings(nodes: int) -> RunSettings:
    return RunSettings(engine="ray", ray=RayOptions(address="auto"), options=EngineOptions(workers=nodes),
                       retry=RetryPolicy(max_attempts=1, max_crashes=1, backoff_seconds=0.05))


def soak(work: Path, config: SoakConfig) -> dict[str, Any]:
    """Run one soak in `work` (its inputs, outputs and job); what it found."""
    frames_in = make_inputs(work / "originals", config.videos)
    store = LocalStore(work, disk_full=False)
    store.add_inputs(work / "originals")
    counts = work / "counts"
    counts.mkdir()
    pipeline = Pipeline(ops=(CountedSlowOp(batch_size=2, delay=config.delay, count_dir=str(counts)),),
                        segment_seconds=1.0)
    spec = JobSpec([store.input_uri], store.output_uri, pipeline, job_settings(config.nodes))
    ledger = Path(store.job_dir) / "ledger.sqlite"
    rng = random.Random(config.seed)
    plan = ["announced"] * config.announced + ["kill"] * config.kills
    rng.shuffle(plan)
    cluster = SpotCluster(config.nodes, config.notices)
    code = os.pathsep.join(str(ROOT / folder) for folder in ("src", "tests", "benchmarks"))
    ray.init(address=cluster.cluster.address, runtime_env={"env_vars": {"PYTHONPATH": code}}, log_to_driver=False)
    chaos = Chaos(cluster, plan, config.notice_seconds, rng)
    exits: list[int] = []
    errors: list[str] = []
    alive = threading.Event()
    alive.set()

    def job() -> None:
        """Run the job until it ends with anything but 75 (a user's loop)."""
        try:
            while True:
                try:
                    result = run(spec, job_dir=store.job_dir)
                except Exception:  # noqa: BLE001 - a finding: kept, and the job run again
                    errors.append(traceback.format_exc()[-3000:])
                    log(f"the run ended with an error: {errors[-1].splitlines()[-1]}")
                    if len(errors) >= 3:
                        return
                    continue
                exits.append(result.exit_code)
                if result.exit_code != PREEMPTED_EXIT_CODE:
                    return
                log("the run exited 75: running it again")
        finally:
            alive.clear()

    stalled = ""
    started = time.perf_counter()
    thread = threading.Thread(target=job, name="soak-job", daemon=True)
    try:
        thread.start()
        seen, moved_at = -1, time.monotonic()
        while alive.is_set():
            time.sleep(0.1)
            if chaos.due(items_done(ledger) / config.videos):
                chaos.inject(alive, counts)
            if (now := attempts_started(ledger)) != seen:
                seen, moved_at = now, time.monotonic()
            elif time.monotonic() - moved_at > config.stall_seconds:
                with tempfile.TemporaryFile("w+") as stacks:
                    faulthandler.dump_traceback(stacks, all_threads=True)
                    stacks.seek(0)
                    stalled = stacks.read()[-8000:]
                log("the job stalled: its stacks are kept; giving up")
                break
        seconds = time.perf_counter() - started
    finally:
        ray.shutdown()
        cluster.close()
    thread.join(30)
    found = verify(work, store, ledger, frames_in, counts)
    return {"config": config.__dict__, "seconds": seconds, "injected": dict(chaos.injected), "idle": chaos.idle,
            "lost_after": lost_after(ledger, chaos.ends),
            "exit_codes": exits, "errors": errors, "stalled": stalled, **found}


def verify(work: Path, store: LocalStore, ledger: Path, frames_in: int, counts: Path) -> dict[str, Any]:
    """From the outputs and the ledger: lost, duplicated, wrong, failed; attempts; frames processed twice."""
    good = sorted(p.name for p in (work / "originals").iterdir())
    outputs = store.output_names()
    wrong = [name for name in good if name in outputs
             and times(store.fetch(name, work)) != times(work / "originals" / name)]
    db = sqlite3.connect(ledger)
    try:
        done_twice = db.execute("SELECT COUNT(*) FROM (SELECT task_id FROM attempts WHERE outcome = 'done' "
                                "GROUP BY task_id HAVING COUNT(*) > 1)").fetchone()[0]
        failed = [row[0] for row in db.execute("SELECT uri FROM items WHERE state != 'done'")]
        charged = db.execute("SELECT COALESCE(SUM(input_failures), 0), COALESCE(SUM(crashes), 0) "
                             "FROM tasks").fetchone()
        preempted_tasks = db.execute("SELECT COUNT(DISTINCT task_id) FROM attempts "
                                     "WHERE outcome = 'preempted'").fetchone()[0]
        why = Counter(re.sub(r"[0-9a-f]{6,}|[\d.]+", "N", f"{outcome}: {message}") for outcome, message in db.execute(
            "SELECT outcome, message FROM attempts WHERE outcome NOT IN ('done')"))
    finally:
        db.close()
    begun = sum(path.stat().st_size for path in counts.iterdir())
    return {"lost": [name for name in good if name not in outputs],
            "duplicated": done_twice, "stray": [name for name in outputs if name not in good], "wrong": wrong,
            "not_done": [Path(uri).name for uri in failed], "charged_input_failures": charged[0],
            "charged_crashes": charged[1], "tasks_preempted": preempted_tasks,
            "attempts": attempt_outcomes(ledger), "not_done_why": dict(why), "frames": frames_in, "frames_begun": begun,
            "frames_twice": begun - frames_in, "frames_twice_pct": 100 * (begun - frames_in) / frames_in}


def lost_after(ledger: Path, ends: list[float]) -> list[float]:
    """For each attempt lost with its node: seconds from the node's kill to the attempt's end (the driver
    learning of it and giving the lease back)."""
    db = sqlite3.connect(ledger)
    try:
        ended = [row[0] for row in db.execute("SELECT ended FROM attempts WHERE outcome = 'lost'")]
    finally:
        db.close()
    return sorted(round(when - max((end for end in ends if end <= when), default=when), 2) for when in ended)


def clean(result: dict[str, Any]) -> bool:
    """Nothing lost, duplicated, stray, wrong or failed; no error, no stall; nothing charged to an input."""
    return not (result["lost"] or result["duplicated"] or result["stray"] or result["wrong"] or result["not_done"]
                or result["errors"] or result["stalled"] or result["charged_input_failures"]
                or result["charged_crashes"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=300)
    parser.add_argument("--announced", type=int, default=30, help="preemptions with a notice")
    parser.add_argument("--kills", type=int, default=10, help="nodes killed without notice")
    parser.add_argument("--notice", type=float, default=3.0, help="seconds from a notice to its node's end")
    parser.add_argument("--nodes", type=int, default=2, help="worker nodes of one CPU each")
    parser.add_argument("--modes", default="on,off", help="notice handling: on, off or both")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="20 videos, 4 announced, 2 kills")
    parser.add_argument("--output", type=Path,
                        default=DEFAULT_RESULTS / f"spot-soak-{time.strftime('%Y%m%dT%H%M%S')}.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.videos, args.announced, args.kills = QUICK
    modes = [mode.strip() for mode in args.modes.split(",")]
    if not modes or set(modes) - {"on", "off"}:
        parser.error("--modes takes on, off or on,off")
    results, load_before = {}, load_average()
    for mode in modes:
        config = SoakConfig(videos=args.videos, announced=args.announced, kills=args.kills,
                            notice_seconds=args.notice, notices=mode == "on", nodes=args.nodes, seed=args.seed)
        log(f"soak with notice handling {mode}: {config}")
        with tempfile.TemporaryDirectory(prefix="framefleet-spot-soak-") as tmp:
            results[mode] = soak(Path(tmp), config)
    rows = []
    for mode, result in results.items():
        attempts = result["attempts"]
        rows.append([mode, str(args.videos), str(result["injected"].get("announced", 0)),
                     str(result["injected"].get("kill", 0)), " ".join(map(str, result["exit_codes"])),
                     str(len(result["lost"])), str(result["duplicated"] + len(result["stray"])),
                     str(len(result["wrong"])), str(len(result["not_done"])),
                     str(attempts.get("preempted: Preempted", 0)),
                     str(sum(n for outcome, n in attempts.items() if outcome.startswith("lost"))),
                     f"{result['frames_twice']} / {result['frames']}", f"{result['frames_twice_pct']:.2f}",
                     f"{result['seconds']:.0f}"])
    print_table("\nspot soak (frames twice: frames the op began, less the inputs' frames)",
                ["notices", "videos", "announced", "killed", "exits", "lost", "duplicated", "wrong", "failed",
                 "preempted", "lost attempts", "frames twice", "%", "s"], rows, right=set(range(1, 14)))
    for mode, result in results.items():
        print(f"{mode}: attempts {result['attempts']}; charged to inputs: {result['charged_input_failures']} "
              f"failures, {result['charged_crashes']} crashes; errors {len(result['errors'])}; "
              f"stalled {bool(result['stalled'])}")
        waits = result["lost_after"]
        if waits:
            print(f"  node killed -> its lease given back: median {statistics.median(waits):.1f} s, "
                  f"max {max(waits):.1f} s; preemptions of a node with no segment under way: {result['idle']}")
        for why, n in sorted(result["not_done_why"].items(), key=lambda pair: -pair[1]):
            print(f"  {n:4d}  {why[:200]}")
        for error in result["errors"]:
            print(error)
        if result["stalled"]:
            print(f"the {mode} soak stalled; its stacks:\n{result['stalled']}")
    write_results(args.output, {"machine": machine_info(), "load_before": load_before, "load_after": load_average(),
                                "args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                  sum(result["seconds"] for result in results.values()))
    return 0 if all(clean(result) for result in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
