"""A preemption notice on one node of a real Ray cluster on loopback, during a job: the worker actor there
sees it (a fake Azure metadata server that only that node's actors ask), drains its node, and the segment
it runs, which cannot finish before the deadline, is given back as `preempted` (a short segment, which a cut
would not save) or cut at frame N (a long one: its part committed, the rest a new task); the job finishes
on the other node, frame-exact, with --max-attempts 1."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import media_checks
import pytest
from fake_metadata import FakeMetadataServer, azure_event
from job_ops import SlowOp

from framefleet.jobs.directory import open_ledger
from framefleet.jobs.reads import LedgerReads
from framefleet.jobs.run import run
from framefleet.jobs.spec import JobSpec
from framefleet.pipeline import Pipeline
from framefleet.settings import EngineOptions, RayOptions, RetryPolicy, RunSettings

ray = pytest.importorskip("ray")
from ray._raylet import GcsClient
from ray.cluster_utils import Cluster
from ray.core.generated import gcs_pb2

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]
TESTS = Path(__file__).resolve().parents[1]
STORE = 80 * 2**20


def segments_running(job_dir: Path) -> int:
    if not (job_dir / "ledger.sqlite").exists():
        return 0
    with open_ledger(job_dir) as ledger:
        return ledger.query("SELECT COUNT(*) FROM tasks WHERE kind = 'segment' AND state = 'running'").fetchone()[0]


@pytest.mark.parametrize(("frames", "segment_seconds", "delay", "notice", "cuts"), [
    (96, 1.0, 0.25, 3.0, False),  # 24 frames a segment, ~3 s: it needs ~2.5 s more, a cut (16 frames) 3.5 s
    (192, 4.0, 0.1, 4.0, True),  # 96 frames a segment, ~5 s: it needs over 5 s more, a cut ~2 s
], ids=["given-back", "cut"])
def test_a_notice_on_one_node_drains_it_gives_its_segment_back_or_cuts_it_and_the_job_finishes_on_the_other(
        tmp_path, clip_factory, frames, segment_seconds, delay, notice, cuts):
    clip = clip_factory(f"preempt-ray-{frames}.mp4", width=64, height=48, frames=frames, gop=24, bframes=0)
    (tmp_path / "in").mkdir()
    source = tmp_path / "in" / "clip.mp4"
    source.write_bytes(clip.read_bytes())
    out, job_dir = tmp_path / "out", tmp_path / "out" / ".framefleet-job"
    with FakeMetadataServer("azure", vm_name="vm-a") as azure:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": STORE})
        try:
            doomed = cluster.add_node(num_cpus=1, object_store_memory=STORE, env_vars={
                "FRAMEFLEET_SPOT_SOURCES": "azure", "FRAMEFLEET_SPOT_AZURE_URL": azure.url,
                "FRAMEFLEET_SPOT_AZURE_POLL_SECONDS": "0.1"})
            cluster.add_node(num_cpus=1, object_store_memory=STORE)
            code = os.pathsep.join((str(TESTS.parent / "src"), str(TESTS)))  # this checkout's framefleet
            ray.init(address=cluster.address, runtime_env={"env_vars": {"PYTHONPATH": code}}, log_to_driver=False)
            cluster.wait_for_nodes()
            settings = RunSettings(engine="ray", ray=RayOptions(address="auto"), options=EngineOptions(workers=2),
                                   retry=RetryPolicy(max_attempts=1, max_crashes=1, backoff_seconds=0.05))
            pipeline = Pipeline(ops=(SlowOp(batch_size=2, delay=delay),), segment_seconds=segment_seconds)
            results: list = []
            job = threading.Thread(target=lambda: results.append(
                run(JobSpec([str(tmp_path / "in")], str(out), pipeline, settings), job_dir=job_dir)), daemon=True)
            job.start()
            deadline = time.monotonic() + 120
            while segments_running(job_dir) < 2:
                assert time.monotonic() < deadline and job.is_alive(), "two segments never ran at once"
                time.sleep(0.1)
            time.sleep(0.5)
            noticed = time.time()
            azure.set_azure_events(azure_event("evict-ray", noticed + notice))
            job.join(180)
            assert results, "the job did not end"
            result = results[0]
            assert result.exit_code == 0 and result.counts["done"] == 1
            with open_ledger(job_dir) as ledger:
                given_back = [a for a in LedgerReads(ledger).attempts() if a["outcome"] == "preempted"]
                cut = [json.loads(row[0]) for row in ledger.query("SELECT result FROM tasks WHERE kind = 'segment' "
                                                                  "AND result LIKE '%cut_at%'")]
            if cuts:
                assert not given_back and len(cut) == 1 and cut[0]["frames"] > 0
            else:
                assert len(given_back) == 1 and given_back[0]["error_type"] == "Preempted" and not cut
                print(f"notice to lease given back on Ray: {given_back[0]['ended'] - noticed:.2f} s; "
                      f"{given_back[0]['message']}")
                assert given_back[0]["ended"] - noticed < notice  # before the deadline
            assert azure.acknowledged == ["evict-ray"]  # by the node's last worker, its lease given back
            assert media_checks.decoded_pts(out / "clip.mp4") == media_checks.decoded_pts(source)
            info = GcsClient(address=cluster.address).get_all_node_info(timeout=10)[
                ray.NodeID.from_hex(doomed.node_id)]
            drained = info.state_snapshot.state == gcs_pb2.NodeSnapshot.DRAINING
            assert info.state == gcs_pb2.GcsNodeInfo.DEAD or drained  # nothing new went there
        finally:
            ray.shutdown()
            cluster.shutdown()
