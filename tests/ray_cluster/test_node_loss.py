"""A node that vanishes without notice on a real Ray cluster on loopback: the driver gives its task back at
once, not when Ray's failure detector declares the node dead (15 s with Ray's defaults; here never within the
test), so a replacement worker runs it on another node meanwhile."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from job_ops import SlowOp
from media_checks import decoded_pts

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


def segments_running(job_dir: Path) -> int:
    if not (job_dir / "ledger.sqlite").exists():
        return 0
    with open_ledger(job_dir) as ledger:
        return ledger.query("SELECT COUNT(*) FROM tasks WHERE kind = 'segment' AND state = 'running'").fetchone()[0]


def test_a_node_killed_without_notice_gives_its_task_back_before_ray_declares_it_dead(tmp_path, clip_factory):
    clip = clip_factory("node-loss.mp4", width=64, height=48, frames=48, gop=12, bframes=0)
    (tmp_path / "in").mkdir()
    source = tmp_path / "in" / "clip.mp4"
    source.write_bytes(clip.read_bytes())
    out, job_dir = tmp_path / "out", tmp_path / "out" / ".framefleet-job"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": STORE,
                                                            "_system_config": SLOW_DETECTOR})
    try:
        doomed = cluster.add_node(num_cpus=1, object_store_memory=STORE)
        code = os.pathsep.join((str(TESTS.parent / "src"), str(TESTS)))  # this checkout's framefleet
        ray.init(address=cluster.address, runtime_env={"env_vars": {"PYTHONPATH": code}}, log_to_driver=False)
        cluster.wait_for_nodes()
        settings = RunSettings(engine="ray", ray=RayOptions(address="auto"), options=EngineOptions(workers=1),
                               retry=RetryPolicy(max_attempts=1, max_crashes=1, backoff_seconds=0.05))
        pipeline = Pipeline(ops=(SlowOp(batch_size=2, delay=0.25),), segment_seconds=1.0)  # ~3 s a segment
        results: list = []
        job = threading.Thread(target=lambda: results.append(
            run(JobSpec([str(tmp_path / "in")], str(out), pipeline, settings), job_dir=job_dir)), daemon=True)
        job.start()
        deadline = time.monotonic() + 120
        while segments_running(job_dir) < 1:
            assert time.monotonic() < deadline and job.is_alive(), "no segment ever ran"
            time.sleep(0.1)
        cluster.add_node(num_cpus=1, object_store_memory=STORE)
        cluster.remove_node(doomed, allow_graceful=False)
        job.join(90)
        assert results, "the job waited for Ray to declare the killed node dead"
        assert results[0].exit_code == 0
        with open_ledger(job_dir) as ledger:
            lost = [a for a in LedgerReads(ledger).attempts() if a["outcome"] != "done"]
        assert [(a["outcome"], a["error_type"]) for a in lost] == [("lost", "NodeLost")]
        assert decoded_pts(out / "clip.mp4") == decoded_pts(source)
        assert any(node["NodeID"] == doomed.node_id and node["Alive"] for node in ray.nodes())  # Ray still thinks so
    finally:
        ray.shutdown()
        cluster.shutdown()
