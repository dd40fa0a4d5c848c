"""A Ray cluster on loopback whose worker nodes come and go by Ray's real autoscaler.

Ray's fake multi-node provider (`ray/autoscaler/_private/fake_multi_node`) runs the real autoscaler (the
`monitor.py` process of the head) and starts each "node" it launches as a raylet on this machine. The
wheel lacks the `example.yaml` that `ray.cluster_utils.AutoscalingCluster` reads, so the config is built
here; see /work/shared/notes/ray-autoscaler-on-one-machine.md.

The head runs as `ray start --head --block` in a session of its own: every process of the cluster (GCS,
raylets, the autoscaler and the nodes it starts) is in that session, so `stop` ends exactly those, and
never another Ray on the same machine (no `ray stop`, which would kill every Ray process of the machine).
Its own `--temp-dir` (short: Unix socket paths are limited) keeps its logs, sockets and `ray_current_cluster`
file apart from any other Ray here, so it never becomes another session's `--ray-address auto`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

WORKER_TYPE = "cpu-spot"
NO_TOKEN = {"RAY_AUTH_MODE": "disabled"}
"""For the cluster and its clients: once any `ray.init()` on this machine has started a local cluster, Ray
keeps a token in ~/.ray/auth_token and a head started after that requires it, which the GCS client here
does not send."""


@dataclass(frozen=True)
class NodeType:
    """A worker node type as the deploy files declare one (`available_node_types`)."""

    name: str = WORKER_TYPE
    cpus: int = 1
    min_workers: int = 0
    max_workers: int = 2


@dataclass(frozen=True)
class ClusterShape:
    """What the autoscaler plans with: the head's resources, one worker type, how fast it grows."""

    head_resources: dict[str, float] = field(default_factory=lambda: {"CPU": 0})
    worker: NodeType = field(default_factory=NodeType)
    upscaling_speed: float = 1.0

    @classmethod
    def from_deploy_file(cls, path: Path, worker_type: str = WORKER_TYPE, *, cpus: int = 1,
                         max_workers: int = 2) -> ClusterShape:
        """A launcher config's shape (deploy/ray/*.yaml), its worker type shrunk to `cpus` and at most
        `max_workers` nodes to fit this machine; the head's resources and `min_workers` are the file's."""
        import yaml

        config = yaml.safe_load(path.read_text())
        types = config["available_node_types"]
        node = types[worker_type]
        worker = NodeType(worker_type, cpus=cpus, min_workers=node.get("min_workers", 0),
                          max_workers=min(max_workers, node["max_workers"]))
        head = types[config["head_node_type"]]
        return cls(dict(head["resources"]), worker, config.get("upscaling_speed", 1.0))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def autoscaling_config(gcs_address: str, shape: ClusterShape, idle_timeout_minutes: float) -> dict:
    """A cluster config for the fake multi-node provider (its head type is always `ray.head.default`)."""
    worker = shape.worker
    return {
        "cluster_name": "framefleet-fake",
        "max_workers": worker.max_workers,
        "upscaling_speed": shape.upscaling_speed,
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": gcs_address},
        "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": shape.head_resources, "node_config": {}, "max_workers": 0},
            worker.name: {"resources": {"CPU": worker.cpus}, "node_config": {},
                          "min_workers": worker.min_workers, "max_workers": worker.max_workers},
        },
        "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [], "rsync_exclude": [],
        "rsync_filter": [], "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


@dataclass
class AutoscalingCluster:
    """`start()` brings up the head; workers appear when work waits for CPUs and leave once idle."""

    root: Path
    shape: ClusterShape = field(default_factory=ClusterShape)
    idle_timeout_minutes: float = 0.1
    python_path: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    temp_dir: Path | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> AutoscalingCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "autoscaling.json"
        config.write_text(json.dumps(autoscaling_config(self.address, self.shape,
                                                        self.idle_timeout_minutes)))
        env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
               "RAY_USAGE_STATS_ENABLED": "0", **NO_TOKEN}
        if self.python_path:
            env["PYTHONPATH"] = os.pathsep.join([*self.python_path, *filter(None, [env.get("PYTHONPATH")])])
        ray_cli = Path(sys.executable).with_name("ray")
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ffray-", dir="/tmp"))
        self.process = subprocess.Popen(
            [str(ray_cli), "start", "--head", "--block", f"--num-cpus={self.shape.head_resources['CPU']:g}",
             f"--port={self.port}",
             "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats",
             f"--autoscaling-config={config}", "--object-store-memory=80000000",
             f"--temp-dir={self.temp_dir}"],
            env=env, start_new_session=True, stdout=(self.root / "head.log").open("w"),
            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ray start exited: {(self.root / 'head.log').read_text()[-2000:]}")
            try:
                if self.alive_nodes():
                    return self
            except Exception:  # the GCS is not up yet
                pass
            time.sleep(0.5)
        self.stop()
        log = (self.root / "head.log").read_text()[-2000:]
        raise TimeoutError(f"the head did not come up in {timeout} s: {log}")

    def alive_nodes(self) -> list[dict]:
        """The cluster's live nodes as the GCS lists them (head included), each with its resources."""
        from ray._raylet import GcsClient
        from ray.core.generated import gcs_pb2

        nodes = GcsClient(address=self.address).get_all_node_info(timeout=5)
        return [{"node_id": node_id.hex(), "cpus": info.resources_total.get("CPU", 0)}
                for node_id, info in nodes.items() if info.state == gcs_pb2.GcsNodeInfo.ALIVE]

    def worker_count(self) -> int:
        return sum(1 for node in self.alive_nodes() if node["cpus"] > 0)

    def stop(self) -> None:
        """End every process of this cluster's session: the head's `ray start` and all it started."""
        if self.process is None:
            return
        session = self.process.pid
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # `ray start --block` stops its own processes
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        for _ in range(20):
            left = session_processes(session)
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.25)
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.process = None
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def session_processes(session: int) -> list[int]:
    """The live processes of one session (the ones a `start_new_session` child and its children make)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state != "Z" and os.getsid(int(entry.name)) == session:
                found.append(int(entry.name))
        except (OSError, IndexError):
            continue
    return found
