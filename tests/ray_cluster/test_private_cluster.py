"""`--engine ray` without `--ray-address` runs on a private cluster, as documented, even where a Ray cluster
already runs on the machine (`ray start`, or another job's); Ray's own default would join that one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]
TESTS = Path(__file__).resolve().parents[1]


def test_a_job_without_an_address_starts_a_private_cluster_beside_a_running_one(tmp_path, clip_factory):
    clip = clip_factory("private-ray.mp4", width=64, height=48, frames=12, gop=4, bframes=0)
    stray = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 80 * 2**20})
    try:
        env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
        env["PYTHONPATH"] = os.pathsep.join((str(TESTS.parent / "src"), str(TESTS)))
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "framefleet", "run", str(clip), "-o", str(tmp_path / "out"), "--engine",
                 "ray", "--workers", "1", "--op", "identity", "--progress", "none"],
                env=env, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired as exc:  # its workers wait for CPUs the stray cluster does not have
            pytest.fail(f"the job hung: it joined the cluster already running ({exc.stderr!r})")
    finally:
        stray.shutdown()
    assert proc.returncode == 0, proc.stderr
    assert "Ray cluster: 0 CPUs" not in proc.stderr  # the stray head has none: joining it could never run
    assert (tmp_path / "out" / "private-ray.mp4").exists()
