"""The Ray engine: the same tasks, run by Ray actors on a cluster; the driver keeps the ledger.

Each worker is an actor hosting a `Worker` (the ops set up once, `run_task` unchanged);
only the small `TaskRequest` goes out and the small `TaskResult` (metrics, the segment plan) comes back.
Actors reserve the CPUs and GPUs the op declares (or `--cpus-per-worker` / `--gpus-per-worker`), so
Ray places GPU work on GPU nodes. An actor whose node left the cluster is an infrastructure loss (a node
whose raylet refuses a connection has left, before Ray's failure detector says so, some 15 s later). Ray
reports an actor that crashed (a segfault in a decoder) and one killed from outside (SIGKILL: an operator,
the kernel's OOM killer) alike, so each actor leaves a tombstone: a file on its node where a fatal signal
writes the Python stacks. For an actor that died on a live node, a small task on that node reads it: a
crash when written, an infrastructure loss (as the local engine's SIGKILL) when empty. Inputs, outputs
and the job's `parts/` folder must be reachable from every node (a shared file system, or object storage).

Each actor watches its node's preemption notices (`framefleet.spot`, configured from the node's
FRAMEFLEET_SPOT_* variables): on a notice it drains its node in Ray (nothing new is placed there) and tells
the driver with its next progress report; the scheduler lets its task finish if it fits before the deadline
and otherwise gives it back (`Noticed`). An actor whose node is going refuses new tasks (`Preempted`).
"""

from __future__ import annotations

import errno
import faulthandler
import functools
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from framefleet.engines.events import Died, Errored, Event, Finished, Noticed, Progressed, Ready
from framefleet.errors import FramefleetError, OptionError
from framefleet.files.remote_inputs import WorkerStorage
from framefleet.jobs.task import TaskRequest, TaskResult
from framefleet.jobs.worker import Worker
from framefleet.ops.names import is_builtin
from framefleet.pipeline import Pipeline
from framefleet.settings import EngineOptions, RayOptions
from framefleet.spot import Notice, NoticeWatcher, WatchSettings

try:
    import ray
    import ray.exceptions
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
except ImportError:  # pragma: no cover - exercised by the "not installed" message test
    ray = None

log = logging.getLogger(__name__)

_PROGRESS_EVERY = 1.0
_CONNECT_SECONDS = 1.0
"""How long the driver waits for a node's raylet to take a connection (no answer: the GCS decides)."""
_AUTOPSY_SECONDS = 30.0
"""How long the driver waits for a dead actor's tombstone before it decides without it."""
_TAIL_CHARS = 2000


def tombstone_path(pid: int) -> Path:
    """Where the actor of process `pid` keeps its tombstone, on its node."""
    return Path(tempfile.gettempdir()) / "framefleet-tombstones" / str(pid)


def read_tombstone(pid: int) -> str:
    """On an actor's node, after it died: what a fatal signal wrote ("" for none, so the process was
    killed without a trace); the file is removed."""
    path = tombstone_path(pid)
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
    finally:
        path.unlink(missing_ok=True)


class Preempted(FramefleetError):
    """This worker's node got a preemption notice: it takes no more tasks."""


class RayWorker:
    """Actor body: a `Worker`, set up once, running one task at a time (plus progress queries and cuts), and a
    watcher of its node's preemption notices."""

    def __init__(self, pipeline: Pipeline, threads: int, worker_storage: WorkerStorage) -> None:
        path = tombstone_path(os.getpid())
        path.parent.mkdir(parents=True, exist_ok=True)
        self._tombstone = open(path, "w")  # noqa: SIM115 - open while the actor lives
        faulthandler.enable(file=self._tombstone, all_threads=True)
        self._worker = Worker(pipeline, threads, worker_storage)
        self._frames = 0
        self._cut = threading.Event()
        self._notice: Notice | None = None
        watcher = NoticeWatcher(self._on_notice, WatchSettings.from_env(sigterm=False))
        self._watcher = watcher.start() if watcher.sources else None

    def _on_notice(self, notice: Notice) -> None:
        if notice.deadline_wall is None:
            return  # a rebalance recommendation: work on
        self._notice = notice
        from framefleet.spot.ray_drain import drain_for_notice

        try:
            drain_for_notice(notice)
        except Exception:  # noqa: BLE001 - the actors of the node all try; the notice still stands
            log.warning("could not drain this node for %s", notice, exc_info=True)

    def ready(self) -> tuple[str, int]:
        """The id of the node this actor runs on, and its process id."""
        return ray.get_runtime_context().get_node_id(), os.getpid()

    def run(self, request: TaskRequest) -> tuple[TaskResult, Notice | None]:
        """Run one task; with its result, the node's notice if one came meanwhile, so that the driver hands
        this worker nothing more (it learned of notices only from busy workers' progress before)."""
        if self._notice is not None:
            raise Preempted(f"this worker's node got a {self._notice.cloud} {self._notice.kind} notice")
        self._frames = 0
        self._cut.clear()  # set for the task before, after it ended

        def count(frames: int) -> None:
            self._frames += frames

        return self._worker.run(request, progress=count, cut=self._cut), self._notice

    def cut(self) -> None:
        """Cut the segment under way short at the next frame it can stop at (`run_task`'s `cut`)."""
        self._cut.set()

    def acknowledge(self) -> bool:
        """Tell the cloud this node may go now (Azure); the driver asks the last of the node's workers."""
        return self._watcher is not None and self._notice is not None and self._watcher.acknowledge(self._notice)

    def progress(self) -> tuple[int, Notice | None]:
        """Frames processed in the current task so far, and the node's preemption notice if one came."""
        return self._frames, self._notice


def connect(options: RayOptions) -> None:
    """Join the cluster at `options.address`, or start a private one; log the dashboard's address."""
    if ray is None:
        raise OptionError('--engine ray needs Ray: pip install "framefleet[ray]"')
    if ray.is_initialized():
        return
    # No address: a private cluster, as documented, even where a cluster already runs on this machine (Ray's
    # own default joins that one); RAY_ADDRESS, as `ray job submit` sets it, still names one to join.
    address = options.address or os.environ.get("RAY_ADDRESS") or "local"
    _check_reachable(address)
    kwargs: dict[str, Any] = {"address": address, "log_to_driver": False, "logging_level": logging.WARNING}
    if address == "local" and options.object_store_memory:
        kwargs["object_store_memory"] = options.object_store_memory
    context = ray.init(**kwargs)
    cluster = ray.cluster_resources()
    dashboard = getattr(context, "dashboard_url", None)
    log.warning("Ray cluster: %g CPUs, %g GPUs; dashboard: %s", cluster.get("CPU", 0), cluster.get("GPU", 0),
                f"http://{dashboard}" if dashboard else "not running (install ray[default])")


def _check_reachable(address: str) -> None:
    """A cluster address HOST:PORT that nothing answers on is one error line: Ray itself retries it for
    minutes, logging every few seconds. `auto`, `local` and `ray://` addresses are left to Ray."""
    host, _, port = address.rpartition(":")
    if address in ("auto", "local") or "://" in address or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise OptionError(f"--ray-address {address}: no Ray cluster answers there ({exc.strerror or exc}); "
                          "check the address, or leave it out for a private cluster") from None


def ray_pool(
    pipeline: Pipeline, options: EngineOptions, ray_options: RayOptions, worker_storage: WorkerStorage = WorkerStorage()
) -> tuple[RayPool, int]:
    """Connect, size the workers from the op's resources and the cluster's, and make the pool."""
    connect(ray_options)
    declared = [op.resources for op in pipeline.ops]
    cpus = ray_options.cpus_per_worker if ray_options.cpus_per_worker is not None else max(r.cpus for r in declared)
    gpus = ray_options.gpus_per_worker if ray_options.gpus_per_worker is not None else max(r.gpus for r in declared)
    cluster = ray.cluster_resources()
    workers = options.workers
    if workers is None:
        workers = int(cluster.get("CPU", 0) // cpus) if cpus > 0 else 1
        if gpus > 0:
            workers = min(workers, int(cluster.get("GPU", 0) // gpus))
        if workers < 1:  # an autoscaling cluster at zero: one pending worker makes it add a node
            log.warning("the Ray cluster has no room for a worker of %g CPUs and %g GPUs yet; starting one and "
                        "waiting for the autoscaler (pass --workers N to ask for more)", cpus, gpus)
            workers = 1
    threads = options.threads_per_worker or max(1, int(cpus))
    return RayPool(pipeline, cpus=cpus, gpus=gpus, threads=threads, worker_storage=worker_storage), workers


def _ship_user_ops(pipeline: Pipeline) -> None:
    """Let user ops travel with the pipeline: a module that is not an installed package (e.g. `myops.py`
    beside the user) is pickled by value, so cluster nodes need not have the file (they need its imports)."""
    for op in pipeline.ops:
        module = sys.modules.get(type(op).__module__)
        if module is None or is_builtin(type(op)) or module.__name__ == "__main__":
            continue
        location = Path(getattr(module, "__file__", None) or "")
        if not {"site-packages", "dist-packages"}.intersection(location.parts):
            ray.cloudpickle.register_pickle_by_value(module)


class RayPool:
    """Ray actors as workers. Readiness, results and progress all arrive as object references."""

    one_machine = False  # an idle actor's cores may be on another node

    def __init__(
        self, pipeline: Pipeline, *, cpus: float, gpus: float, threads: int, worker_storage: WorkerStorage = WorkerStorage()
    ) -> None:
        self._actor = ray.remote(RayWorker).options(num_cpus=cpus, num_gpus=gpus, max_concurrency=3,
                                                    max_restarts=0)
        _ship_user_ops(pipeline)
        self._shared = (pipeline, worker_storage)
        self._put_shared()
        self._threads = threads
        self._actors: dict[str, Any] = {}
        self._nodes: dict[str, tuple[str, int]] = {}
        """Worker -> (its node, its process id)."""
        self._refs: dict[Any, tuple[str, str]] = {}
        """Outstanding reference -> (worker, "ready" | "run" | "progress")."""
        self._autopsies: dict[Any, tuple[str, str, str, float]] = {}
        """Outstanding tombstone read -> (worker, what Ray said of its death, its node, the time to stop
        waiting for it)."""
        self._frames: dict[str, int] = {}
        self._last_poll: dict[str, float] = {}
        self._noticed: set[str] = set()
        self._notices: list[Noticed] = []
        self._serial = 0

    def _put_shared(self) -> None:
        """The actors' shared arguments, put in the object store afresh. A node that has vanished without
        Ray knowing still holds copies of the old ones, and a new actor may try to pull them from there until
        Ray's failure detector declares it dead."""
        pipeline, worker_storage = self._shared
        self._pipeline = ray.put(pipeline)
        self._storage = ray.put(worker_storage)  # by reference: the options are not in the actor's arguments

    def spawn(self) -> str:
        self._serial += 1
        name = f"ray-{os.getpid()}-{self._serial}"
        actor = self._actor.remote(self._pipeline, self._threads, self._storage)
        self._actors[name] = actor
        self._refs[actor.ready.remote()] = (name, "ready")
        return name

    def submit(self, worker: str, request: TaskRequest) -> bool:
        actor = self._actors.get(worker)
        if actor is None:
            return False
        self._frames[worker] = 0
        self._last_poll[worker] = time.monotonic()
        self._refs[actor.run.remote(request)] = (worker, "run")
        return True

    def cut(self, worker: str) -> bool:
        actor = self._actors.get(worker)
        if actor is None:
            return False
        actor.cut.remote()
        return True

    def events(self, timeout: float) -> list[Event]:
        self._poll_progress()
        refs = [*self._refs, *self._autopsies]
        if not refs:
            time.sleep(timeout)
            return []
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        events: list[Event] = []
        for ref in ready:
            if ref in self._autopsies:
                worker, message, _, _ = self._autopsies.pop(ref)
                events.append(self._autopsy_found(ref, worker, message))
                continue
            entry = self._refs.pop(ref, None)  # None: forgotten by a death settled in this loop
            if entry is None or entry[0] not in self._actors:
                continue
            event = self._settle(ref, *entry)
            if event is not None:
                events.append(event)
        events += self._overdue_autopsies()
        events += self._notices
        self._notices.clear()
        return events

    def kill(self, worker: str) -> None:
        actor = self._actors.pop(worker, None)
        node = self._nodes.get(worker)
        if actor is not None and node is not None and worker in self._noticed:
            self._acknowledge_if_last(worker, actor, node[0])
        self._forget(worker)
        for ref in [ref for ref, (dead, *_) in self._autopsies.items() if dead == worker]:
            del self._autopsies[ref]
        if actor is not None:
            ray.kill(actor, no_restart=True)
            if node is not None:
                _tombstone_of(*node)  # not waited for: it only removes the file

    def close(self) -> None:
        for worker in list(self._actors):
            self.kill(worker)

    def _acknowledge_if_last(self, worker: str, actor: Any, node: str) -> None:
        """Before the last worker on a node that got a notice goes, let it acknowledge the notice (Azure: the
        eviction may start now; its leases are all given back or finished)."""
        if any(other != worker and where == node for other, (where, _) in self._nodes.items()):
            return
        try:
            ray.get(actor.acknowledge.remote(), timeout=5)
        except (ray.exceptions.RayError, TimeoutError) as error:
            log.warning("could not acknowledge the preemption notice of node %s: %s", node, error)

    def _settle(self, ref: Any, worker: str, kind: str) -> Event | None:
        try:
            value = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            if kind != "run":
                return None if kind == "progress" else self._died(worker, f"the worker could not start: {exc.cause}")
            return Errored.of(worker, exc.cause, str(exc)[-_TAIL_CHARS:])
        except (ray.exceptions.RayActorError, ray.exceptions.OutOfMemoryError) as exc:
            if kind == "progress":
                return None  # the run reference reports the death
            return self._died(worker, str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                              memory=isinstance(exc, ray.exceptions.OutOfMemoryError),
                              preempted=bool(getattr(exc, "preempted", False)))
        if kind == "ready":
            self._nodes[worker] = tuple(value)
            return Ready(worker)
        if kind == "progress":
            frames, notice = value
            self._take_notice(worker, notice)  # after the frames: the scheduler plans with them
            delta = frames - self._frames.get(worker, 0)
            self._frames[worker] = frames
            return Progressed(worker, delta) if delta > 0 else None
        result, notice = value
        self._take_notice(worker, notice)  # after the result: the worker is idle, and goes
        self._frames[worker] = 0
        return Finished(worker, result)

    def _take_notice(self, worker: str, notice: Notice | None) -> None:
        """Report a worker's node notice once (`Noticed`, after the events of the same poll)."""
        if notice is not None and worker not in self._noticed:
            self._noticed.add(worker)
            self._notices.append(Noticed(worker, notice))

    def _died(self, worker: str, message: str, *, memory: bool = False, preempted: bool = False) -> Died | None:
        """The death of `worker`, or None while its tombstone is read (`_autopsy_found` reports it)."""
        node, pid = self._nodes.get(worker, (None, 0))
        self._actors.pop(worker, None)
        self._forget(worker)
        if memory:
            return Died(worker, "lost", "OutOfMemory", f"Ray stopped the worker for lack of memory ({message})")
        if preempted or (node is not None and not _node_alive(node)):
            return self._node_lost(worker, message)
        if node is None:  # it died before it said where it runs
            return Died(worker, "crashed", "WorkerCrashed", f"the worker died ({message})")
        deadline = time.monotonic() + _AUTOPSY_SECONDS
        self._autopsies[_tombstone_of(node, pid)] = (worker, message, node, deadline)
        return None

    def _overdue_autopsies(self) -> list[Died]:
        """Deaths whose tombstone did not come in time: a node that stopped answering without closing its
        ports (frozen, or cut off) is lost; on a node that still answers, the death counts as a crash, so a
        poison input stays bounded by `max_crashes` even where tombstones cannot be read."""
        now = time.monotonic()
        deaths: list[Died] = []
        for ref, (worker, message, node, deadline) in list(self._autopsies.items()):
            if now < deadline:
                continue
            del self._autopsies[ref]
            if not _node_alive(node):
                deaths.append(self._node_lost(worker, message))
            else:
                self._put_shared()  # the node holds copies, and does not answer
                deaths.append(Died(worker, "crashed", "WorkerCrashed",
                                   f"the worker died, and its node did not give its tombstone within "
                                   f"{_AUTOPSY_SECONDS:.0f} s ({message})"))
        return deaths

    def _autopsy_found(self, ref: Any, worker: str, message: str) -> Died:
        try:
            tombstone = ray.get(ref)
        except (ray.exceptions.RayError, ValueError):  # the node went too, or was never reachable
            return self._node_lost(worker, message)
        if not tombstone.strip():
            return Died(worker, "lost", "WorkerKilled", "the worker was killed without a trace (SIGKILL: an operator, "
                                                        f"or the kernel's OOM killer) ({message})")
        said = next((line for line in tombstone.splitlines() if line.startswith("Fatal Python error")), message)
        return Died(worker, "crashed", "WorkerCrashed", f"the worker died ({said})")

    def _node_lost(self, worker: str, message: str) -> Died:
        self._put_shared()
        return Died(worker, "lost", "NodeLost", f"the worker's node left the cluster ({message})")

    def _poll_progress(self) -> None:
        now = time.monotonic()
        busy = {w for w, kind in self._refs.values() if kind == "run"}
        polling = {w for w, kind in self._refs.values() if kind == "progress"}
        for worker in busy - polling:
            if now - self._last_poll.get(worker, 0.0) >= _PROGRESS_EVERY:
                self._last_poll[worker] = now
                self._refs[self._actors[worker].progress.remote()] = (worker, "progress")

    def _forget(self, worker: str) -> None:
        for ref in [r for r, (w, _) in self._refs.items() if w == worker]:
            del self._refs[ref]
        self._frames.pop(worker, None)
        self._last_poll.pop(worker, None)
        self._nodes.pop(worker, None)
        self._noticed.discard(worker)


def _tombstone_of(node: str, pid: int) -> Any:
    """A reference to the tombstone of the actor of process `pid`, read (and removed) on its node."""
    on_its_node = NodeAffinitySchedulingStrategy(node_id=node, soft=False)
    return _tombstone_reader().options(scheduling_strategy=on_its_node).remote(pid)


@functools.cache
def _tombstone_reader() -> Any:
    return ray.remote(num_cpus=0, max_retries=0)(read_tombstone)


def _node_alive(node_id: str) -> bool:
    """Whether the node is alive: the GCS lists it so and nothing says its raylet is gone. The GCS declares a
    node dead only once its failure detector has missed enough health checks (about 15 s with Ray's
    defaults), and until then a tombstone read there waits; a raylet whose port refuses a connection (its
    host answers, nothing listens) or whose host is unreachable has gone already. A connection that times
    out says nothing (a firewall between the driver and the node): the GCS decides, as before; so does one
    that a frozen raylet's port still takes, and the autopsy deadline then decides in its place."""
    node = next((node for node in ray.nodes() if node["NodeID"] == node_id), None)
    if node is None or not node["Alive"]:
        return False
    try:
        with socket.create_connection((node["NodeManagerAddress"], node["NodeManagerPort"]), _CONNECT_SECONDS):
            return True
    except (ConnectionRefusedError, ConnectionResetError):
        return False
    except OSError as error:
        return error.errno not in (errno.EHOSTUNREACH, errno.ENETUNREACH)
