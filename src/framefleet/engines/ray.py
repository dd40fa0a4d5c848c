"""The Ray engine: the same tasks, run by Ray actors on a cluster; the driver keeps the ledger.

Each worker is an actor hosting a `Worker` (the ops set up once, `run_task` unchanged);
only the small `TaskRequest` goes out and the small `TaskResult` (metrics, the segment plan) comes back.
Actors reserve the CPUs and GPUs the op declares (or `--cpus-per-worker` / `--gpus-per-worker`), so
Ray places GPU work on GPU nodes. An actor whose node left the cluster is an infrastructure loss; an
actor that died on a live node is a crash. Inputs, outputs and the job's `parts/` folder must be
reachable from every node (a shared file system, or object storage).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from framefleet.engines.ray_options import RayOptions
from framefleet.engines.scheduler import Died, EngineOptions, Errored, Event, Finished, Progressed, Ready
from framefleet.errors import OptionError
from framefleet.ops.registry import is_builtin
from framefleet.pipeline import Pipeline
from framefleet.remote_inputs import WorkerStorage
from framefleet.task import TaskRequest, TaskResult
from framefleet.worker import Worker

try:
    import ray
    import ray.exceptions
except ImportError:  # pragma: no cover - exercised by the "not installed" message test
    ray = None

log = logging.getLogger(__name__)

_PROGRESS_EVERY = 1.0
_TAIL_CHARS = 2000


class RayWorker:
    """Actor body: a `Worker`, set up once, running one task at a time (plus progress queries)."""

    def __init__(self, pipeline: Pipeline, threads: int, worker_storage: WorkerStorage) -> None:
        self._worker = Worker(pipeline, threads, worker_storage)
        self._frames = 0

    def ready(self) -> str:
        """The id of the node this actor runs on."""
        return ray.get_runtime_context().get_node_id()

    def run(self, request: TaskRequest) -> TaskResult:
        self._frames = 0

        def count(frames: int) -> None:
            self._frames += frames

        return self._worker.run(request, progress=count)

    def progress(self) -> int:
        """Frames processed in the current task so far."""
        return self._frames


def connect(options: RayOptions) -> None:
    """Join the cluster at `options.address`, or start a private one; log the dashboard's address."""
    if ray is None:
        raise OptionError('--engine ray needs Ray: pip install "framefleet[ray]"')
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"address": options.address, "log_to_driver": False, "logging_level": logging.WARNING}
    if options.address is None and options.object_store_memory:
        kwargs["object_store_memory"] = options.object_store_memory
    context = ray.init(**kwargs)
    cluster = ray.cluster_resources()
    dashboard = getattr(context, "dashboard_url", None)
    log.warning("Ray cluster: %g CPUs, %g GPUs; dashboard: %s", cluster.get("CPU", 0), cluster.get("GPU", 0),
                f"http://{dashboard}" if dashboard else "not running (install ray[default])")


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

    def __init__(
        self, pipeline: Pipeline, *, cpus: float, gpus: float, threads: int, worker_storage: WorkerStorage = WorkerStorage()
    ) -> None:
        self._actor = ray.remote(RayWorker).options(num_cpus=cpus, num_gpus=gpus, max_concurrency=2,
                                                    max_restarts=0)
        _ship_user_ops(pipeline)
        self._pipeline = ray.put(pipeline)
        self._storage = ray.put(worker_storage)  # by reference: the options are not in the actor's arguments
        self._threads = threads
        self._actors: dict[str, Any] = {}
        self._nodes: dict[str, str] = {}
        self._refs: dict[Any, tuple[str, str]] = {}
        """Outstanding reference -> (worker, "ready" | "run" | "progress")."""
        self._frames: dict[str, int] = {}
        self._last_poll: dict[str, float] = {}
        self._serial = 0

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

    def events(self, timeout: float) -> list[Event]:
        self._poll_progress()
        if not self._refs:
            time.sleep(timeout)
            return []
        refs = list(self._refs)
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        events: list[Event] = []
        for ref in ready:
            worker, kind = self._refs.pop(ref)
            if worker not in self._actors:
                continue
            event = self._settle(ref, worker, kind)
            if event is not None:
                events.append(event)
        return events

    def kill(self, worker: str) -> None:
        actor = self._actors.pop(worker, None)
        self._forget(worker)
        if actor is not None:
            ray.kill(actor, no_restart=True)

    def close(self) -> None:
        for worker in list(self._actors):
            self.kill(worker)

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
            self._nodes[worker] = value
            return Ready(worker)
        if kind == "progress":
            delta = value - self._frames.get(worker, 0)
            self._frames[worker] = value
            return Progressed(worker, delta) if delta > 0 else None
        self._frames[worker] = 0
        return Finished(worker, value)

    def _died(self, worker: str, message: str, *, memory: bool = False, preempted: bool = False) -> Died:
        node = self._nodes.get(worker)
        self._actors.pop(worker, None)
        self._forget(worker)
        if memory:
            return Died(worker, "lost", "OutOfMemory", f"Ray stopped the worker for lack of memory ({message})")
        if preempted or (node is not None and not _node_alive(node)):
            return Died(worker, "lost", "NodeLost", f"the worker's node left the cluster ({message})")
        return Died(worker, "crashed", "WorkerCrashed", f"the worker died ({message})")

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


def _node_alive(node_id: str) -> bool:
    return any(node["NodeID"] == node_id and node["Alive"] for node in ray.nodes())
