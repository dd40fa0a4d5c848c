"""A framefleet job on a cluster that scales from zero by Ray's real autoscaler (the fake multi-node
provider on loopback), shaped as deploy/ray/azure.yaml: the head declares no CPUs, the `cpu-spot` worker type
starts at 0 nodes, shrunk here to 1 CPU and at most 2 nodes; the job asks for 2 workers. The cluster grows
to 2 nodes, the outputs are frame-exact, and it shrinks back to the head."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")
from autoscaling_cluster import NO_TOKEN, AutoscalingCluster, ClusterShape  # noqa: E402
from media_checks import decoded_pts, decoded_times, frame_count, packet_payloads, streams_of_kind  # noqa: E402

from framefleet.jobs.directory import open_ledger  # noqa: E402
from framefleet.jobs.reads import LedgerReads  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]
TESTS = Path(__file__).resolve().parents[1]
REPOSITORY = Path(__file__).resolve().parents[2]
SOURCE = REPOSITORY / "src"
TINY = dict(width=64, height=48, gop=4, bframes=0, audio=("aac",))


class NodeCounter(threading.Thread):
    """Polls the cluster's worker nodes every 0.5 s: the most seen at once, and when the first came."""

    def __init__(self, cluster: AutoscalingCluster) -> None:
        super().__init__(daemon=True)
        self.cluster, self.most, self.first_node_at = cluster, 0, None
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                count = self.cluster.worker_count()
            except Exception:  # a GCS call that timed out under load: the next poll counts
                count = 0
            if count and self.first_node_at is None:
                self.first_node_at = time.time()
            self.most = max(self.most, count)
            self.done.wait(0.5)


def audio_packets(path: Path) -> list[bytes]:
    return [p for index in streams_of_kind(path, "audio") for p in packet_payloads(path, index)]


def test_a_job_scales_the_cluster_from_zero_to_two_nodes_and_back(clip_factory, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name, fields in {"a.mp4": dict(frames=24), "vfr.mp4": dict(frames=30, vfr=True),
                         "long.mp4": dict(frames=100, rate=25)}.items():  # long: 4 s, 2 segments of 2 s
        shutil.copy(clip_factory(f"autoscale-{name}", **{**TINY, **fields}), inputs / name)
    shutil.copy(inputs / "a.mp4", inputs / "b.mp4")
    shape = ClusterShape.from_deploy_file(REPOSITORY / "deploy" / "ray" / "azure.yaml", "cpu-spot", cpus=1,
                                          max_workers=2)
    assert shape.head_resources == {"CPU": 0} and shape.worker.min_workers == 0  # as the deploy file says
    cluster = AutoscalingCluster(tmp_path / "cluster", shape, idle_timeout_minutes=0.1,
                                 python_path=(str(SOURCE), str(TESTS))).start()
    counter = NodeCounter(cluster)
    try:
        assert cluster.worker_count() == 0, "the cluster starts with the head alone"
        counter.start()
        started = time.time()
        job = subprocess.run(
            [sys.executable, "-m", "framefleet", "run", str(inputs), "-o", str(tmp_path / "out"),
             "--op", "identity", "--segment-seconds", "2", "--engine", "ray",
             "--ray-address", cluster.address, "--workers", "2", "--json", "--progress", "none"],
            env={**os.environ, **NO_TOKEN, "PYTHONPATH": os.pathsep.join([str(SOURCE), str(TESTS)])},
            capture_output=True, text=True, timeout=180, check=False)
        finished = time.time()
        assert job.returncode == 0, job.stderr[-3000:]
        assert json.loads(job.stdout)["counts"]["done"] == 4

        scaled_down = None
        deadline = time.monotonic() + 90  # idle timeout 6 s, then the autoscaler's next rounds
        while time.monotonic() < deadline:
            if cluster.worker_count() == 0:
                scaled_down = time.time()
                break
            time.sleep(0.5)
        counter.done.set()
        counter.join()
        assert counter.most == 2, f"the cluster grew to {counter.most} worker nodes, not 2"
        assert scaled_down is not None, "the worker nodes were not removed after the idle timeout"
    finally:
        counter.done.set()
        cluster.stop()

    for source in sorted(inputs.iterdir()):
        output = tmp_path / "out" / source.name
        assert frame_count(output) == frame_count(source)
        assert decoded_pts(output) == decoded_pts(source) and decoded_times(output) == decoded_times(source)
        assert audio_packets(output) == audio_packets(source)
    ledger = open_ledger(tmp_path / "out" / ".framefleet-job")
    try:
        attempts = LedgerReads(ledger).attempts()
    finally:
        ledger.close()
    assert {a["outcome"] for a in attempts} == {"done"}
    assert all(a["worker"].startswith("ray-") for a in attempts)  # the second worker may find nothing left
    first_task = min(a["started"] for a in attempts)
    first_frames = min(a["started"] for a in attempts if a["kind"] == "segment")  # probes decode no frame
    first_output = min(a["ended"] for a in attempts if a["kind"] == "segment")
    print(f"\nautoscaling from zero, seconds after `run` began: first worker node "
          f"{counter.first_node_at - started:.1f}, first task (a probe) {first_task - started:.1f}, "
          f"first segment started {first_frames - started:.1f} and done {first_output - started:.1f}; "
          f"job {finished - started:.1f}; back to 0 worker nodes {scaled_down - finished:.1f} s after it")
