"""Nodes that fail without notice on a real Ray cluster on loopback. Ray's failure detector is made to take
10 minutes here, so the job must decide without it: a killed node gives its task back at once (its raylet's
ports refuse), and a frozen one (its ports still take connections, nothing answers) within the engine's
autopsy deadline. A replacement worker runs the task again on another node; its arguments must not be
pulled from the node that failed, which Ray still lists as holding copies of them."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from job_ops import SlowOp
from media_checks import decoded_pts

from framefleet.engines import ray as ray_engine
from framefleet.jobs.directory import open_ledger
from framefleet.jobs.reads import LedgerReads
from framefleet.jobs.run import run
from framefleet.jobs.spec import JobSpec
from framefleet.pipeline import Pipeline
from framefleet.settings import EngineOptions, RayOptions, RetryPolicy, RunSettings

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]
TESTS = Path(__file__).resolve().parents[1]
STORE = 80 * 2**20
SLOW_DETECTOR = {"health_check_initial_delay_ms": 600_000, "health_check_period_ms": 600_000}
"""Ray's failure detector, made to take 10 minutes to notice a dead node."""


class Job:
    """A one-clip job on the Ray engine, run in a thread so the test can break nodes under it."""

    def __init__(self, tmp_path: Path, clip: Path) -> None:
        (tmp_path / "in").mkdir()
        self.source = tmp_path / "in" / "clip.mp4"
        self.source.write_bytes(clip.read_bytes())
        self.out, self.job_dir = tmp_path / "out", tmp_path / "out" / ".framefleet-job"
        self.beacons = tmp_path / "beacons"
        self.beacons.mkdir()
        settings = RunSettings(engine="ray", ray=RayOptions(address="auto"), options=EngineOptions(workers=1),
                               retry=RetryPolicy(max_attempts=2, max_crashes=2, backoff_seconds=0.05))
        pipeline = Pipeline(ops=(SlowOp(batch_size=2, delay=0.25, beacon_dir=str(self.beacons)),),
                            segment_seconds=1.0)  # ~3 s a segment
        self.spec = JobSpec([str(tmp_path / "in")], str(self.out), pipeline, settings)
        self.stop = threading.Event()
        self.results: list = []
        self.thread = threading.Thread(target=lambda: self.results.append(
            run(self.spec, job_dir=self.job_dir, stop=self.stop)), daemon=True)

    def busy_worker(self, timeout: float = 120) -> int:
        """Start the job; the process id of its worker once it is in the middle of a segment."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while True:
            assert time.monotonic() < deadline and self.thread.is_alive(), "no segment ever ran"
            busy = [int(b.name) for b in self.beacons.iterdir() if b.read_text() not in ("", "0")]
            if busy:
                return busy[0]
            time.sleep(0.05)

    def finish(self, timeout: float) -> None:
        self.thread.join(timeout)
        assert self.results, f"the job waited for Ray to declare the node dead; attempts: {self.attempts()}"
        assert self.results[0].exit_code == 0

    def attempts(self) -> list[dict]:
        with open_ledger(self.job_dir) as ledger:
            return LedgerReads(ledger).attempts()

    def unfinished(self) -> list[tuple[str, str]]:
        return [(a["outcome"], a["error_type"]) for a in self.attempts() if a["outcome"] != "done"]

    def end(self) -> None:
        """Stop a job still running, before Ray goes: its thread must not reconnect to a cluster shut down."""
        self.stop.set()
        if self.thread.ident is not None:  # started
            self.thread.join(60)


@contextmanager
def a_cluster(tmp_path: Path, clip_factory: Callable[..., Path]) -> Iterator[tuple[Cluster, Job]]:
    """A head without CPUs and one worker node of 1 CPU, where the job's first worker runs."""
    clip = clip_factory("node-loss.mp4", width=64, height=48, frames=48, gop=12, bframes=0)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": STORE,
                                                            "_system_config": SLOW_DETECTOR})
    job = Job(tmp_path, clip)
    try:
        cluster.add_node(num_cpus=1, object_store_memory=STORE)
        code = os.pathsep.join((str(TESTS.parent / "src"), str(TESTS)))  # this checkout's framefleet
        ray.init(address=cluster.address, runtime_env={"env_vars": {"PYTHONPATH": code}}, log_to_driver=False)
        cluster.wait_for_nodes()
        yield cluster, job
    finally:
        job.end()
        ray.shutdown()
        cluster.shutdown()


def test_a_node_killed_without_notice_gives_its_task_back_before_ray_declares_it_dead(tmp_path, clip_factory):
    with a_cluster(tmp_path, clip_factory) as (cluster, job):
        (doomed,) = cluster.worker_nodes
        job.busy_worker()
        cluster.add_node(num_cpus=1, object_store_memory=STORE)
        cluster.remove_node(doomed, allow_graceful=False)
        job.finish(90)
        assert job.unfinished() == [("lost", "NodeLost")]
        assert decoded_pts(job.out / "clip.mp4") == decoded_pts(job.source)
        assert any(node["NodeID"] == doomed.node_id and node["Alive"] for node in ray.nodes())  # Ray still thinks so


def test_a_worker_dead_on_a_frozen_node_counts_as_a_crash_once_its_tombstone_is_overdue(
        tmp_path, clip_factory, monkeypatch):
    """The node's raylet is stopped (SIGSTOP: a frozen VM) and the worker killed: the raylet's ports still
    take connections, so the node looks alive, and the read of the worker's tombstone there never runs. After
    the autopsy deadline the death counts as a crash (bounded by `max_crashes`), not as a wait for Ray."""
    monkeypatch.setattr(ray_engine, "_AUTOPSY_SECONDS", 3.0)
    with a_cluster(tmp_path, clip_factory) as (cluster, job):
        (frozen,) = cluster.worker_nodes
        raylet = frozen.all_processes["raylet"][0].process.pid
        worker = job.busy_worker()
        cluster.add_node(num_cpus=1, object_store_memory=STORE)
        os.kill(raylet, signal.SIGSTOP)
        try:
            os.kill(worker, signal.SIGKILL)
            job.finish(60)
        finally:
            os.kill(raylet, signal.SIGCONT)
        assert job.unfinished() == [("crashed", "WorkerCrashed")]
        (crash,) = [a for a in job.attempts() if a["outcome"] == "crashed"]
        assert "its node did not give its tombstone within 3 s" in crash["message"]
        assert decoded_pts(job.out / "clip.mp4") == decoded_pts(job.source)
