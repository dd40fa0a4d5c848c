"""Drain a Ray node on a preemption notice: the GCS schedules nothing new there, with reason PREEMPTION.

Ray core's `DrainNode` (the call `ray drain-node` and `ray start --block`'s SIGTERM handler make) takes a
reason and a deadline: PREEMPTION drains cannot be refused, and the deadline tells Ray (and its autoscaler)
when the node will be gone; Ray does not kill anything at the deadline itself. Work already running on the
node goes on (tasks, and actors, which hold their node): finishing or cutting it is the worker's business.
Once nothing runs there any more, the node's raylet exits by itself (death reason AUTOSCALER_DRAIN_PREEMPTED,
checked with Ray 2.60 in tests/ray_cluster/test_spot_drain.py): a worker that gives its lease back and
exits lets the node go.
"""

from __future__ import annotations

import logging
import time

from framefleet.errors import FramefleetError
from framefleet.spot.notices import Notice

log = logging.getLogger("framefleet.spot")

DRAIN_MARGIN_SECONDS = 5.0
"""How long before the cloud's deadline the Ray deadline is set."""


class DrainRefused(FramefleetError):
    """The GCS did not accept a drain request."""


def _gcs_address(gcs_address: str | None) -> str:
    import ray
    from ray._private import services

    if gcs_address:
        return gcs_address
    if ray.is_initialized():
        return ray.get_runtime_context().gcs_address
    return services.canonicalize_bootstrap_address_or_die("auto")


def drain_node(deadline_wall: float | None, *, node_id: str | None = None, gcs_address: str | None = None,
               message: str = "preemption notice", timeout: float = 10.0) -> None:
    """Drain `node_id` (hex; default: this process's node) with reason PREEMPTION, gone at `deadline_wall`
    (`time.time()` seconds; None: no deadline). Raises `DrainRefused` if the GCS says no."""
    import ray
    from ray._raylet import GcsClient
    from ray.core.generated import autoscaler_pb2

    if node_id is None:
        node_id = ray.get_runtime_context().get_node_id()
    deadline_ms = 0 if deadline_wall is None else max(int(deadline_wall * 1000), int(time.time() * 1000))
    client = GcsClient(address=_gcs_address(gcs_address))
    preemption = autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION")
    accepted, why = client.drain_node(node_id, preemption, message, deadline_ms, timeout=timeout)
    if not accepted:
        raise DrainRefused(f"Ray refused to drain node {node_id}: {why}")
    log.warning("drained Ray node %s (%s), deadline %s", node_id, message,
                "none" if deadline_wall is None else f"in {deadline_wall - time.time():.1f} s")


def drain_for_notice(notice: Notice, *, margin_seconds: float = DRAIN_MARGIN_SECONDS,
                     node_id: str | None = None, gcs_address: str | None = None) -> float | None:
    """Drain this node for `notice`, with a deadline `margin_seconds` before the cloud's (never before now);
    returns that deadline (`time.time()` seconds), None for a notice without one (rebalance)."""
    deadline = None
    if notice.deadline_wall is not None:
        deadline = max(time.time(), notice.deadline_wall - margin_seconds)
    drain_node(deadline, node_id=node_id, gcs_address=gcs_address,
               message=f"{notice.cloud} {notice.kind} notice (event {notice.event_id})")
    return deadline
