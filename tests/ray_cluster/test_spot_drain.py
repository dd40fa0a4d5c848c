"""Draining a node on a preemption notice, on a real Ray cluster on loopback: Ray accepts the PREEMPTION
drain with its deadline and schedules nothing new on that node; what runs there finishes, and then the
node's raylet leaves by itself (death reason AUTOSCALER_DRAIN_PREEMPTED)."""

from __future__ import annotations

import time

import pytest

ray = pytest.importorskip("ray")
from ray._raylet import GcsClient  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from ray.core.generated import common_pb2, gcs_pb2  # noqa: E402
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

from framefleet.spot.notices import Clock, parse_aws_instance_action  # noqa: E402
from framefleet.spot.ray_drain import drain_for_notice  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


@ray.remote(num_cpus=1)
def where_it_ran(seconds: float = 0.2) -> str:
    time.sleep(seconds)
    return ray.get_runtime_context().get_node_id()


def node_info(address: str, node_id: str) -> gcs_pb2.GcsNodeInfo:
    return GcsClient(address=address).get_all_node_info(timeout=10)[ray.NodeID.from_hex(node_id)]


def test_a_drained_node_finishes_its_work_takes_no_new_work_and_then_leaves():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 80 * 2**20})
    try:
        doomed, spared = (cluster.add_node(num_cpus=1, object_store_memory=80 * 2**20) for _ in range(2))
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        assert set(ray.get([where_it_ran.remote() for _ in range(6)])) == {doomed.node_id, spared.node_id}
        on_doomed = NodeAffinitySchedulingStrategy(doomed.node_id, soft=False)
        in_flight = where_it_ran.options(scheduling_strategy=on_doomed).remote(4.0)
        time.sleep(1.0)  # it runs

        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 120))
        notice = parse_aws_instance_action(f'{{"action": "terminate", "time": "{when}"}}', Clock.now())
        deadline = drain_for_notice(notice, node_id=doomed.node_id, gcs_address=cluster.address)
        assert notice.deadline_wall - 6 < deadline <= notice.deadline_wall - 5

        assert set(ray.get([where_it_ran.remote() for _ in range(4)])) == {spared.node_id}
        assert node_info(cluster.address, doomed.node_id).state == gcs_pb2.GcsNodeInfo.ALIVE
        assert ray.get(in_flight) == doomed.node_id, "the work in flight was not allowed to finish"
        gone = time.monotonic() + 30
        while node_info(cluster.address, doomed.node_id).state == gcs_pb2.GcsNodeInfo.ALIVE:
            assert time.monotonic() < gone, "the drained node stayed after its work ended"
            time.sleep(0.2)
        death = node_info(cluster.address, doomed.node_id).death_info
        assert death.reason == common_pb2.NodeDeathInfo.AUTOSCALER_DRAIN_PREEMPTED, death
    finally:
        ray.shutdown()
        cluster.shutdown()
