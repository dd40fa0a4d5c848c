"""Chaos soak: a job (style 7 at 48 px) over many short videos and a few hostile files while faults are
injected, then a count of what was lost or duplicated, like a Jepsen result.

    python benchmarks/chaos.py [--engine local|ray] [--store local|azurite] [--disk-full]
                               [--videos 300] [--faults 50] [--output FILE]

Faults, at random moments (exponential gaps of `--every` seconds on average), each kind capped:
- a worker killed with SIGKILL (a local worker process, or a Ray actor's process);
- a Ray worker node preempted: removed from the loopback cluster without warning, a new one added;
- the whole `framefleet run` killed with SIGKILL (its process group, as a preempted machine would) and
  started again;
- the object store (Azurite) stopped for a stretch of seconds, then started again with its data;
- the output disk filled (a tmpfs in a private mount namespace, via `unshare`) for a few seconds, once.
The run is restarted until it ends on its own (exit 0 or 3) with no fault still in force. Then, from the
ledger and the output store: lost (a good video with no output), duplicated or stray (an output that is not
one of the expected names, or a temporary left behind), wrong (an output whose frames or times differ from
its input's), failed good videos, and the hostile files' outcomes. Linux only (workers are found in /proc).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from common import DEFAULT_RESULTS, ROOT, log, machine_info, print_table, write_results

from framefleet.jobs.manifest import MANIFEST_SUFFIX
from framefleet.video.synth import ClipSpec, write_clip

sys.path.insert(0, str(ROOT / "tests"))  # tests/azurite.py: the Azurite harness of the storage tests

FRAMES = 24
CONTAINER = "chaos"
NAMESPACE_FLAG = "FRAMEFLEET_CHAOS_NAMESPACE"
DISK_MB = 64
RAY_LOG_LINE = re.compile(r"\s*(\[state-dump\]|\[\d{4}-\d\d-\d\d |.*\(raylet\))")
"""A line of the raylet's log that Ray copies to a dying driver's stderr."""


def children(pid: int) -> list[int]:
    """The direct children of a process (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def command_line(pid: int | str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""


def local_workers(run_pid: int) -> list[int]:
    """framefleet's worker processes under a `framefleet run` (spawned multiprocessing children that are
    not the resource tracker)."""
    return [child for child in children(run_pid)
            if b"multiprocessing" in command_line(child) and b"resource_tracker" not in command_line(child)]


def ray_workers() -> list[int]:
    """The processes of framefleet's Ray actors on this machine (Ray titles them `ray::RayWorker...`)."""
    return [int(entry.name) for entry in Path("/proc").iterdir()
            if entry.name.isdigit() and command_line(entry.name).startswith(b"ray::RayWorker")]


def times(path: Path) -> list[Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts = [frame.pts for frame in container.decode(stream)]
        return [(p - pts[0]) * stream.time_base for p in pts]  # PyAV 18.1.1: a closed container's stream refuses


class LocalStore:
    """Inputs and outputs in local folders; the outputs' folder on a small tmpfs when the disk can fill."""

    def __init__(self, work: Path, disk_full: bool) -> None:
        self.inputs, self.outputs = work / "in", work / "out"
        self.outputs.mkdir()
        self.disk = None
        if disk_full:
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(self.outputs)], check=True)
            self.disk = self.outputs
        self.options: dict[str, str] = {}
        self.job_dir = str(self.outputs / ".framefleet-job")  # on the disk that fills: the ledger stops the run

    def add_inputs(self, folder: Path) -> None:
        shutil.copytree(folder, self.inputs)

    @property
    def input_uri(self) -> str:
        return str(self.inputs)

    @property
    def output_uri(self) -> str:
        return str(self.outputs)

    def output_names(self) -> list[str]:
        return sorted(p.name for p in self.outputs.iterdir()
                      if p.name != ".framefleet-job" and not p.name.endswith(MANIFEST_SUFFIX))

    def fetch(self, name: str, folder: Path) -> Path:
        return self.outputs / name

    def close(self) -> None:
        if self.disk is not None:
            subprocess.run(["umount", "-l", str(self.disk)], check=False)


class AzuriteStore:
    """Inputs and outputs in an Azurite container, which the soak stops for stretches."""

    def __init__(self, work: Path) -> None:
        from azurite import Azurite, find_azurite_blob

        if find_azurite_blob() is None:
            raise SystemExit("Azurite is not installed: run `npm ci --prefix tools/azurite` (or make test-storage)")
        (work / "azurite").mkdir()
        self.server = Azurite(location=work / "azurite").start()
        self.server.create_container(CONTAINER)
        self.options = {"connection_string": self.server.connection_string}
        self.disk = None
        self.job_dir = str(work / "job")

    def add_inputs(self, folder: Path) -> None:
        for path in sorted(folder.iterdir()):
            self.server.upload_blob(CONTAINER, f"in/{path.name}", path.read_bytes())

    @property
    def input_uri(self) -> str:
        return f"az://{CONTAINER}/in"

    @property
    def output_uri(self) -> str:
        return f"az://{CONTAINER}/out"

    def output_names(self) -> list[str]:
        return [name.removeprefix("out/") for name in self.server.blob_names(CONTAINER)
                if name.startswith("out/") and not name.endswith(MANIFEST_SUFFIX)]

    def fetch(self, name: str, folder: Path) -> Path:
        folder.mkdir(exist_ok=True)
        path = folder / name
        path.write_bytes(self.server.read_blob(CONTAINER, f"out/{name}"))
        return path

    def close(self) -> None:
        self.server.close()


class RayCluster:
    """A loopback Ray cluster: a head that only schedules, and worker nodes of one CPU each."""

    def __init__(self, nodes: int) -> None:
        from ray.cluster_utils import Cluster

        self.cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 80 * 2**20})
        self.nodes = [self.add() for _ in range(nodes)]
        self.cluster.wait_for_nodes()

    def add(self, env_vars: dict[str, str] | None = None) -> Any:
        """A new worker node of one CPU (`env_vars`: its environment, which its workers inherit)."""
        return self.cluster.add_node(num_cpus=1, object_store_memory=80 * 2**20, env_vars=env_vars)

    def preempt(self, rng: random.Random) -> None:
        """Remove a random worker node at once, its processes killed, and add a fresh one."""
        self.replace(self.nodes[rng.randrange(len(self.nodes))])

    def replace(self, node: Any) -> None:
        """Remove `node` at once, its processes killed, and add a fresh one in its place."""
        self.nodes.remove(node)
        self.cluster.remove_node(node, allow_graceful=False)
        self.nodes.append(self.add())

    def close(self) -> None:
        self.cluster.shutdown()


@dataclass
class Faults:
    """What the soak injects and when; `restore` holds the faults in force (store down, disk full)."""

    rng: random.Random
    every: float
    budget: int
    caps: dict[str, int]
    injected: Counter = field(default_factory=Counter)
    restore: dict[str, float] = field(default_factory=dict)
    next_at: float = 0.0

    def schedule(self) -> None:
        """The next fault comes after an exponential gap of `every` seconds on average."""
        self.next_at = time.monotonic() + self.rng.expovariate(1 / self.every)

    def total(self) -> int:
        return sum(self.injected.values())

    def choose(self) -> str | None:
        open_kinds = [kind for kind, cap in self.caps.items() if self.injected[kind] < cap and kind not in self.restore]
        if self.total() >= self.budget or not open_kinds:
            return None
        untried = [kind for kind in open_kinds if kind != "worker killed" and not self.injected[kind]]
        if untried and self.total() >= 2:  # every kind at least once, early, however short the job
            return self.rng.choice(untried)
        weights = {"worker killed": 8, "node preempted": 3, "run killed": 1, "store down": 1, "disk full": 1}
        return self.rng.choices(open_kinds, [weights[kind] for kind in open_kinds])[0]


def attempt_outcomes(ledger: Path) -> dict[str, int]:
    """How the job's attempts ended, by outcome and error class (`lost: DiskFullError`, `done`, ...)."""
    db = sqlite3.connect(ledger)
    try:
        rows = db.execute("SELECT outcome, error_type, COUNT(*) FROM attempts GROUP BY outcome, error_type")
        return {f"{outcome}: {error}" if error else str(outcome): n for outcome, error, n in rows}
    finally:
        db.close()


def attempts_started(ledger: Path) -> int:
    """How many attempts the job has started so far (-1 while its ledger cannot be read)."""
    try:
        db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=1)
    except sqlite3.Error:
        return -1
    try:
        return db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0]
    except sqlite3.Error:
        return -1
    finally:
        db.close()


def stall_stacks(process: subprocess.Popen, err_path: Path) -> str:
    """A run that started no attempt for `--stall` seconds: its threads' stacks (the CLI prints them on
    SIGUSR1), then the run killed like a preempted machine."""
    size = err_path.stat().st_size
    os.kill(process.pid, signal.SIGUSR1)
    time.sleep(2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    log("stalled: stacks kept, run killed")
    return err_path.read_bytes()[size:].decode(errors="replace")[-8000:]


def make_inputs(folder: Path, videos: int) -> dict[str, bytes]:
    folder.mkdir()
    for i in range(videos):
        write_clip(folder / f"v{i:04d}.mp4", ClipSpec(width=64, height=48, frames=FRAMES,
                                                      audio=("aac",) if i % 3 else ()))
    hostile = {"empty.mp4": b"", "notes.mp4": b"not a video\n" * 20,
               "cut.mp4": (folder / "v0000.mp4").read_bytes()[:300]}
    for name, data in hostile.items():
        (folder / name).write_bytes(data)
    return hostile


def soak(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    originals = work / "originals"
    hostile = make_inputs(originals, args.videos)
    store = AzuriteStore(work) if args.store == "azurite" else LocalStore(work, args.disk_full)
    cluster = RayCluster(2) if args.engine == "ray" else None
    try:
        store.add_inputs(originals)
        command = [sys.executable, "-m", "framefleet", "--debug", "run", store.input_uri, "-o", store.output_uri,
                   "--job-dir", store.job_dir, "--style", "7", "--max-size", "48", "--temporal", "none",
                   "--max-attempts", "2", "--json", "--quiet"]
        command += ["--engine", "ray", "--ray-address", cluster.cluster.address] if cluster else ["--workers", "2"]
        env = {**os.environ, "FRAMEFLEET_STORAGE_OPTIONS": json.dumps(store.options)}
        caps = {"worker killed": args.faults, "run killed": max(1, args.faults // 10)}
        if cluster:
            caps["node preempted"] = max(1, args.faults // 5)
        if args.store == "azurite":
            caps["store down"] = 3
        if store.disk is not None:
            caps["disk full"] = 1
        faults = Faults(random.Random(args.seed), args.every, args.faults, caps)
        runs, exits, bugs, stalls, last, started = 0, [], [], [], None, time.perf_counter()
        while last is None:
            runs += 1
            # Files, not pipes: a run that prints more than a pipe holds while nobody reads would block.
            out_path, err_path = work / f"run-{runs}.stdout", work / f"run-{runs}.stderr"
            with open(out_path, "wb") as out_file, open(err_path, "wb") as err_file:
                process = subprocess.Popen(command, stdout=out_file, stderr=err_file, env=env,
                                           start_new_session=True)
            faults.schedule()
            ledger, seen, moved_at = Path(store.job_dir) / "ledger.sqlite", -1, time.monotonic()
            while process.poll() is None:
                time.sleep(0.05)
                restore_due(faults, store)
                if (now := attempts_started(ledger)) != seen or faults.restore:
                    seen, moved_at = now, time.monotonic()
                elif time.monotonic() - moved_at > args.stall:
                    stalls.append(stall_stacks(process, err_path))
                    break
                if time.monotonic() >= faults.next_at:
                    faults.schedule()
                    if inject(faults.choose(), faults, process, store, cluster):
                        break
            process.wait()
            out, err = (path.read_text(errors="replace") for path in (out_path, err_path))
            exits.append(process.returncode)
            if process.returncode in (0, 3) and not faults.restore:
                try:
                    last = json.loads(out)
                except ValueError:
                    raise RuntimeError(f"run {runs} ended with {process.returncode}: {out[:2000]!r} {err[-2000:]!r}")
            elif process.returncode != -9:
                said = [line for line in err.splitlines() if "error" in line]
                log(f"run {runs} ended with {process.returncode}: {said[-1] if said else err[-300:]}")
                if process.returncode == 1:  # a bug in framefleet: keep what it printed (less Ray's log lines)
                    bugs.append("\n".join(line for line in err.splitlines() if not RAY_LOG_LINE.match(line))[-5000:])
                while faults.restore:  # an operator frees the disk or waits for the store, then runs it again
                    time.sleep(0.2)
                    restore_due(faults, store)
        seconds = time.perf_counter() - started
        good = sorted(p.name for p in originals.glob("v*.mp4"))
        outputs = store.output_names()
        lost = [name for name in good if name not in outputs]
        extra = [name for name in outputs if name not in good]
        wrong = [name for name in good
                 if name in outputs and times(store.fetch(name, work / "fetched")) != times(originals / name)]
        failed = {Path(f["uri"]).name: f["error_type"] for f in last["failures"]}
        reasons = {Path(f["uri"]).name: f["error"] for f in last["failures"]}
        attempts = attempt_outcomes(Path(store.job_dir) / "ledger.sqlite")
    finally:
        if cluster:
            cluster.close()
        store.close()
    return {"engine": args.engine, "store": args.store, "videos": args.videos, "hostile": len(hostile),
            "runs": runs, "exit_codes": exits, "internal_errors": bugs, "stalls": stalls,
            "faults": dict(faults.injected),
            "seconds": seconds,
            "lost": lost, "duplicated_or_stray": extra, "wrong": wrong,
            "failed_good": sorted(set(failed) & set(good)),
            "failed_good_reasons": {name: reasons[name] for name in sorted(set(failed) & set(good))},
            "hostile_outcomes": {name: failed.get(name, "done") for name in hostile}, "counts": last["counts"],
            "attempts": attempts}


def inject(kind: str | None, faults: Faults, process: subprocess.Popen, store: Any, cluster: RayCluster | None
           ) -> bool:
    """Inject one fault of `kind`; True when it ended the run."""
    if kind == "worker killed":
        pids = ray_workers() if cluster else local_workers(process.pid)
        if not pids:
            return False
        os.kill(faults.rng.choice(pids), signal.SIGKILL)
    elif kind == "node preempted":
        cluster.preempt(faults.rng)
    elif kind == "run killed":
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    elif kind == "store down":
        store.server.stop()
        faults.restore[kind] = time.monotonic() + faults.rng.uniform(2, 6)
    elif kind == "disk full":
        fill(store.disk / ".ballast")
        faults.restore[kind] = time.monotonic() + faults.rng.uniform(3, 6)
    else:
        return False
    faults.injected[kind] += 1
    log(f"{kind} ({faults.total()} of {faults.budget})")
    return kind == "run killed"


def fill(ballast: Path) -> None:
    """Write `ballast` until its disk has no space left."""
    chunk = b"\0" * (1 << 16)
    with open(ballast, "wb", buffering=0) as out:
        try:
            while True:
                out.write(chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise


def restore_due(faults: Faults, store: Any) -> None:
    """End the faults whose stretch is over: the store started again, the disk's ballast removed."""
    now = time.monotonic()
    for kind, when in list(faults.restore.items()):
        if now < when:
            continue
        if kind == "store down":
            store.server.start()
        else:
            (store.disk / ".ballast").unlink()
        del faults.restore[kind]
        log(f"{kind}: over")


def in_private_namespace(argv: list[str]) -> int | None:
    """Run this script again in a private mount namespace (where it may mount a tmpfs as the output disk);
    its exit code, or None when this already is one or `unshare` cannot make one."""
    if os.environ.get(NAMESPACE_FLAG) or shutil.which("unshare") is None:
        return None
    command = ["unshare", "--mount", "--map-root-user", sys.executable, __file__, *argv]
    probe = subprocess.run(["unshare", "--mount", "--map-root-user", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        return None
    return subprocess.run(command, env={**os.environ, NAMESPACE_FLAG: "1"}, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=("local", "ray"), default="local")
    parser.add_argument("--store", choices=("local", "azurite"), default="local")
    parser.add_argument("--disk-full", action="store_true", help="fill the output disk once (local store)")
    parser.add_argument("--videos", type=int, default=300)
    parser.add_argument("--faults", type=int, default=50)
    parser.add_argument("--every", type=float, default=0.3, help="mean seconds between faults")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stall", type=float, default=180.0,
                        help="seconds without a new attempt after which a run counts as stalled")
    parser.add_argument("--output", type=Path, default=DEFAULT_RESULTS / f"chaos-{time.strftime('%Y%m%dT%H%M%S')}.json")
    args = parser.parse_args(argv)
    if args.disk_full and args.store == "local" and not os.environ.get(NAMESPACE_FLAG):
        code = in_private_namespace(argv)
        if code is not None:
            return code
        log("cannot make a private mount namespace (unshare): the disk-full fault is left out")
        args.disk_full = False
    with tempfile.TemporaryDirectory(prefix="framefleet-chaos-") as tmp:
        result = soak(Path(tmp), args)
    faults = result["faults"]
    rows = [[f"{result['engine']} engine, {result['store']} store", str(result["videos"]), str(sum(faults.values())),
             ", ".join(f"{kind} {n}" for kind, n in sorted(faults.items())), str(result["runs"]),
             str(len(result["lost"])), str(len(result["duplicated_or_stray"])), str(len(result["wrong"])),
             str(len(result["failed_good"])), f"{result['seconds']:.0f}"]]
    print_table("\nchaos soak", ["setup", "videos", "faults", "injected", "runs", "lost", "duplicated", "wrong",
                                 "good failed", "s"], rows, right={1, 2, 4, 5, 6, 7, 8, 9})
    print(f"attempts by outcome: {result['attempts']}")
    print(f"hostile files: {result['hostile_outcomes']}; the runs' exit codes: {result['exit_codes']}; "
          f"stalled runs: {len(result['stalls'])} "
          "(-9: killed; 2: stopped, e.g. the job's disk full or workers dying while starting)")
    write_results(args.output, {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()},
                                "result": result}, result["seconds"])
    for stall in result["stalls"]:
        print(f"a run stalled; its stacks:\n{stall}")
    clean = not (result["internal_errors"] or result["stalls"] or result["lost"] or result["duplicated_or_stray"] or result["wrong"]
                 or result["failed_good"])
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
