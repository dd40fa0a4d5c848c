"""The cost model: how long a job takes on `n` nodes of a type with some knobs, and what it costs.

- **Throughput.** A node runs `cpus // threads` workers. With all of them busy, the node makes frames at
  the rate its profile measured with every core busy, scaled by how much a frame costs at these knobs and
  this resolution. A worker alone (the tail of a job) goes no faster than one worker measured alone.
- **Wall time.** The job's tasks are scheduled as the engines schedule them: every video is probed
  first, then its segments (joins first, then segments, then probes, oldest video first), then the join
  of its segments, each task taking its fixed cost plus its frames. Up to `SIMULATED_TASKS` tasks are
  simulated on the workers one by one; beyond that (or for a sampled workload) the work is spread evenly
  and the longest task is added as the tail.
- **Start-up.** A node's `startup_seconds` (boot, image, joining the cluster) plus a worker's measured
  start (interpreter, imports, model set-up).
- **Preemption.** A spot node preempted `p` times an hour loses, each time, the half-done tasks of its
  workers and a restart: the fraction of time lost is `p * (mean task / 2 + restart) / 3600`, and the
  wall time grows by `1 / (1 - lost)`.
- **Cost.** nodes x (start-up + wall time) x the price per node-hour (billed from the request).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from framefleet.errors import OptionError
from framefleet.pipeline import Pipeline
from framefleet.plan.hardware import NodeType
from framefleet.plan.knobs import Knobs, knob_grid
from framefleet.plan.profile import MachineInfo, ProfileStore, RunCost, run_cost
from framefleet.plan.workload import Workload

SIMULATED_TASKS = 20_000
MAX_LOST_FRACTION = 0.5
NODE_COUNTS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
_KIND_RANK = {"join": 0, "segment": 1, "probe": 2}
Basis = Literal["measured", "scaled", "extrapolated"]


@dataclass(frozen=True)
class Option:
    """One way to run the job, with what the model predicts for it."""

    node: str
    nodes: int
    spot: bool
    knobs: Knobs
    workers_per_node: int
    wall_seconds: float
    """From the first node requested to the last output (start-up included)."""
    startup_seconds: float
    cost: float | None
    """None when the node type has no price."""
    fps: float
    """Frames per second of the whole fleet while it runs."""
    quality_psnr: float | None
    """The lowest PSNR (dB) against full-resolution inference over the job's resolutions; None: full."""
    basis: Basis
    """measured: this node type's own profile at the job's resolutions; scaled: from another resolution
    of its profile; extrapolated: no profile of its own (this machine's, per core)."""
    device: str
    gpus_per_worker: float
    """GPUs each worker reserves (Ray), for a GPU op."""
    this_machine: bool
    runtime: str | None = None
    """What ran the models in the profile this is predicted from, by step ("style: openvino bf16"): for an
    extrapolated node type, this machine's; None when no op runs a model."""

    @property
    def workers(self) -> int:
        return self.nodes * self.workers_per_node


@dataclass(frozen=True)
class _Task:
    rank: int
    video: int
    seq: int
    seconds: float


def enumerate_options(workload: Workload, pipeline: Pipeline, nodes: Sequence[NodeType], store: ProfileStore,
                      *, fixed: Mapping[str, Any] | None = None) -> Iterator[Option]:
    """Every option worth predicting: node types x counts x spot or not x knob settings the profiles
    cover (`fixed` pins knobs by name, e.g. {"max_size": 360, "threads": 2})."""
    if not workload.videos:
        raise OptionError("nothing to plan: the inputs name no videos")
    largest = max(workload.videos, key=lambda video: max(video.width, video.height))
    pinned = dict(fixed or {})
    if (pinned.get("max_size") or 0) >= max(largest.width, largest.height):
        pinned["max_size"] = None  # no smaller than any frame: the op runs at full size
    for node in nodes:
        machine, basis = _profile_of(node, store)
        for knobs in knob_grid(pipeline.ops[0], largest.width, largest.height, node.cpus):
            if any(getattr(knobs, name) != value for name, value in pinned.items()):
                continue
            costs = [run_cost(store, machine, pipeline, video, knobs) for video in workload.videos]
            if any(cost is None for cost in costs):
                continue
            counts = [1] if node.this_machine else [n for n in NODE_COUNTS if n < node.max_nodes] + [node.max_nodes]
            for spot in node.offers():
                for count in counts:
                    yield predict(workload, node, count, spot, knobs, costs, store, machine, basis)


def predict(workload: Workload, node: NodeType, count: int, spot: bool, knobs: Knobs, costs: Sequence[RunCost],
            store: ProfileStore, machine: str, basis: Basis) -> Option:
    """Predicted wall time and cost of the job on `count` nodes of `node` with `knobs`; `costs` are the
    per-video costs from `machine`'s profile (see `run_cost`)."""
    scale = _node_scale(node, costs[0].device, store.machine_info(machine))
    workers_per_node = max(1, node.cpus // knobs.threads)
    workers = count * workers_per_node
    tasks = list(_tasks(workload, costs, workers_per_node, scale))
    if workload.sampled or len(tasks) > SIMULATED_TASKS:
        busy = sum(task.seconds for task in tasks) * workload.scale
        run_seconds = busy / workers + max(task.seconds for task in tasks)
    else:
        run_seconds = _simulate(tasks, workers)
    worker_start = (store.get(machine, "worker_start") or 0.0) + max(c.setup_seconds for c in costs)
    startup = node.startup_seconds + worker_start  # also what a preempted node's replacement takes
    if spot and node.preemptions_per_hour > 0:
        mean_task = sum(t.seconds for t in tasks) / len(tasks)
        lost = node.preemptions_per_hour * (mean_task / 2 + startup) / 3600
        run_seconds /= max(1.0 - lost, 1.0 - MAX_LOST_FRACTION)
    wall = startup + run_seconds
    price = node.price(spot)
    qualities = [c.quality_psnr for c in costs if c.quality_psnr is not None]
    if basis == "measured" and not all(c.measured for c in costs):
        basis = "scaled"
    return Option(node=node.name, nodes=count, spot=spot, knobs=knobs, workers_per_node=workers_per_node,
                  wall_seconds=wall, startup_seconds=startup,
                  cost=None if price is None else count * wall / 3600 * price,
                  fps=workload.frames / run_seconds if run_seconds > 0 else 0.0,
                  quality_psnr=min(qualities) if qualities else None, basis=basis, device=costs[0].device,
                  gpus_per_worker=node.gpus / workers_per_node if costs[0].device == "cuda" else 0.0,
                  this_machine=node.this_machine, runtime=costs[0].runtime)


def predict_again(option: Option, workload: Workload, pipeline: Pipeline, node: NodeType,
                  store: ProfileStore) -> Option:
    """`option` predicted for another cut of the workload (segments sized to a notice)."""
    machine, basis = _profile_of(node, store)
    costs = [run_cost(store, machine, pipeline, video, option.knobs) for video in workload.videos]
    if any(cost is None for cost in costs):
        return option
    return predict(workload, node, option.nodes, option.spot, option.knobs, costs, store, machine, basis)  # type: ignore[arg-type]


def worker_pace(workload: Workload, pipeline: Pipeline, node: NodeType, knobs: Knobs,
                store: ProfileStore) -> tuple[float, float] | None:
    """(seconds per frame, fixed seconds per task) of one worker of a busy `node` with `knobs`, for the
    slowest of the job's videos, as `predict` counts them; None when no profile covers them."""
    machine, _ = _profile_of(node, store)
    costs = [run_cost(store, machine, pipeline, video, knobs) for video in workload.videos]
    if not costs or any(cost is None for cost in costs):
        return None
    scale = _node_scale(node, costs[0].device, store.machine_info(machine))
    workers_per_node = max(1, node.cpus // knobs.threads)
    return (max(_seconds_per_frame(cost, workers_per_node, scale) for cost in costs),
            max(cost.task_seconds for cost in costs))


def _node_scale(node: NodeType, device: str, profiled: MachineInfo) -> float:
    """How much faster `node` is than the machine its profile was made on."""
    if device == "cuda":  # a GPU op: the node's pace is set by its GPUs
        return node.gpus / max(1, len(profiled.gpus)) if node.gpus else 1.0
    return node.cpus / profiled.cpus  # the profile's machine may have another number of cores


def _seconds_per_frame(cost: RunCost, workers_per_node: int, scale: float) -> float:
    """A worker's seconds per frame with all the node's workers busy (never faster than one alone)."""
    return max(workers_per_node / (cost.node_fps * scale), cost.wall_per_frame)


def _profile_of(node: NodeType, store: ProfileStore) -> tuple[str, Basis]:
    """The machine whose profile stands for `node`, and how directly: its own profile when it names one
    that is loaded, else this machine's (extrapolated per core; a GPU is then not accounted for)."""
    if node.this_machine or (node.profile is not None and node.profile in store.machines()):
        return node.profile or store.machine.name, "measured"
    return store.machine.name, "extrapolated"


def _tasks(workload: Workload, costs: Sequence[RunCost], workers_per_node: int, scale: float) -> Iterator[_Task]:
    """The job's tasks with their predicted seconds on one worker of a busy node."""
    for index, (video, cost) in enumerate(zip(workload.videos, costs)):
        per_frame = _seconds_per_frame(cost, workers_per_node, scale)
        yield _Task(_KIND_RANK["probe"], index, 0, video.probe_seconds)
        for seq, frames in enumerate(video.segment_frames):
            yield _Task(_KIND_RANK["segment"], index, seq, cost.task_seconds + frames * per_frame)
        if len(video.segment_frames) > 1:
            yield _Task(_KIND_RANK["join"], index, 0, cost.join_seconds)


def _simulate(tasks: list[_Task], workers: int) -> float:
    """Seconds until the last task ends when `workers` take ready tasks as the ledger hands them out."""
    by_video: dict[int, list[_Task]] = {}
    for task in tasks:
        by_video.setdefault(task.video, []).append(task)
    ready: list[tuple[int, int, int, float]] = [(t.rank, t.video, t.seq, t.seconds) for t in tasks
                                                if t.rank == _KIND_RANK["probe"]]
    heapq.heapify(ready)
    running: list[tuple[float, int, int]] = []  # (ends at, rank, video)
    segments_left = {video: sum(1 for t in group if t.rank == _KIND_RANK["segment"])
                     for video, group in by_video.items()}
    now, free = 0.0, workers
    while ready or running:
        while free and ready:
            rank, video, _, seconds = heapq.heappop(ready)
            heapq.heappush(running, (now + seconds, rank, video))
            free -= 1
        now, rank, video = heapq.heappop(running)
        free += 1
        if rank == _KIND_RANK["probe"]:
            for task in by_video[video]:
                if task.rank == _KIND_RANK["segment"]:
                    heapq.heappush(ready, (task.rank, task.video, task.seq, task.seconds))
        elif rank == _KIND_RANK["segment"]:
            segments_left[video] -= 1
            if segments_left[video] == 0:
                for task in by_video[video]:
                    if task.rank == _KIND_RANK["join"]:
                        heapq.heappush(ready, (task.rank, task.video, task.seq, task.seconds))
    return now
