"""The Ray engine on a real Ray cluster on loopback (`ray.cluster_utils.Cluster`): same outputs as the local
engine, node loss is an infrastructure loss, bad inputs end in the failure list."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
from job_ops import CrashOp, GatedOp, RecordNodeOp, SlowOp  # noqa: E402
from media_checks import decoded_pts, mean_abs_diff, packet_payloads, rgb_frames, streams_of_kind  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from user_ops import channel_mean_model, write_user_ops  # noqa: E402

from framefleet import load_records  # noqa: E402
from framefleet.engines.ray import ray_pool  # noqa: E402
from framefleet.jobs.directory import open_ledger  # noqa: E402
from framefleet.jobs.reads import LedgerReads
from framefleet.jobs.run import retry, run  # noqa: E402
from framefleet.jobs.spec import JobSpec  # noqa: E402
from framefleet.pipeline import Pipeline  # noqa: E402
from framefleet.settings import (
    EngineOptions,  # noqa: E402
    RayOptions,  # noqa: E402
    RetryPolicy,  # noqa: E402
    RunSettings,
)

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]
TESTS = Path(__file__).resolve().parents[1]
TINY = dict(width=64, height=48, gop=4, bframes=0, audio=("aac",))
FAST_RETRIES = RetryPolicy(backoff_seconds=0.05)
RAY_OPTIONS = RayOptions(address="auto")
ON_RAY = RunSettings(engine="ray", ray=RAY_OPTIONS, retry=FAST_RETRIES)


@pytest.fixture(scope="module")
def cluster():
    """A head node with no CPUs (it only schedules) and two worker nodes of one CPU each."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 80 * 2**20})
    workers = [cluster.add_node(num_cpus=1, object_store_memory=80 * 2**20) for _ in range(2)]
    code = os.pathsep.join((str(TESTS.parent / "src"), str(TESTS)))  # this checkout's framefleet on every node
    ray.init(address=cluster.address, runtime_env={"env_vars": {"PYTHONPATH": code}},
             log_to_driver=False)
    cluster.wait_for_nodes()
    yield cluster, workers
    ray.shutdown()
    cluster.shutdown()


def audio_packets(path: Path) -> list[bytes]:
    return [p for index in streams_of_kind(path, "audio") for p in packet_payloads(path, index)]


def make_inputs(clip_factory, root: Path, count: int, **fields) -> list[Path]:
    clip = clip_factory(f"ray-{fields.get('frames', 12)}.mp4", **{**TINY, **fields})
    paths = []
    for i in range(count):
        path = root / f"group{i % 3}" / f"clip{i:02d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, path)
        paths.append(path)
    return paths


def test_a_job_on_ray_matches_the_local_engine(cluster, clip_factory, tmp_path):
    sources = make_inputs(clip_factory, tmp_path / "in", 21, frames=12)
    long_clip = clip_factory("ray-long.mp4", **{**TINY, "frames": 100, "rate": 25})  # 4 s: 2 segments
    shutil.copy(long_clip, tmp_path / "in" / "long.mp4")
    pipeline = Pipeline.from_options({"op": "identity", "segment_seconds": 2})

    on_ray = run(JobSpec([str(tmp_path / "in")], tmp_path / "ray", pipeline, ON_RAY))
    local = run(JobSpec([str(tmp_path / "in")], tmp_path / "local", pipeline,
                        RunSettings(options=EngineOptions(workers=2), retry=FAST_RETRIES)))

    assert on_ray.exit_code == 0 and local.exit_code == 0
    assert on_ray.counts["done"] == local.counts["done"] == len(sources) + 1
    for source in [*sources, tmp_path / "in" / "long.mp4"]:
        relative = source.relative_to(tmp_path / "in")
        ray_out, local_out = tmp_path / "ray" / relative, tmp_path / "local" / relative
        assert decoded_pts(ray_out) == decoded_pts(local_out) == decoded_pts(source)
        assert audio_packets(ray_out) == audio_packets(local_out) == audio_packets(source)
    ledger = open_ledger(on_ray.job_dir)
    try:
        workers = {a["worker"] for a in LedgerReads(ledger).attempts()}
        assert all(w.startswith("ray-") for w in workers) and len(workers) == 2
        assert len(LedgerReads(ledger).join_parts(next(i.id for i in ledger.items() if i.uri.endswith("long.mp4")))) == 2
    finally:
        ledger.close()


def test_a_lost_node_takes_only_its_tasks_which_rerun_as_infrastructure_losses(cluster, clip_factory, tmp_path):
    ray_cluster, _ = cluster
    extra = ray_cluster.add_node(num_cpus=1, object_store_memory=80 * 2**20)
    ray_cluster.wait_for_nodes()
    sources = make_inputs(clip_factory, tmp_path / "in", 9, frames=24)
    pipeline = Pipeline(ops=(SlowOp(delay=0.1),))  # about 1.2 s per video
    job_dir = tmp_path / "job"

    def remove_node_once_busy() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (job_dir / "ledger.sqlite").exists():
                ledger = open_ledger(job_dir)
                try:
                    done = ledger.counts()["done"]
                finally:
                    ledger.close()
                if done >= 2:
                    ray_cluster.remove_node(extra)
                    return
            time.sleep(0.1)

    remover = threading.Thread(target=remove_node_once_busy)
    remover.start()
    result = run(JobSpec([str(tmp_path / "in")], tmp_path / "out", pipeline, ON_RAY), job_dir=job_dir)
    remover.join()

    assert result.exit_code == 0 and result.counts["done"] == len(sources)
    ledger = open_ledger(job_dir)
    try:
        attempts = LedgerReads(ledger).attempts()
        done_per_task: dict[int, int] = {}
        for attempt in attempts:
            if attempt["outcome"] == "done":
                done_per_task[attempt["task_id"]] = done_per_task.get(attempt["task_id"], 0) + 1
        assert set(done_per_task.values()) == {1}, "a task completed more than once"
        lost = [a for a in attempts if a["outcome"] == "lost"]
        assert lost, "no task was running on the removed node"
        assert all(a["error_type"] == "NodeLost" for a in lost), lost
        assert not [a for a in attempts if a["outcome"] in ("input_error", "crashed")]
    finally:
        ledger.close()
    for source in sources:
        assert decoded_pts(tmp_path / "out" / source.relative_to(tmp_path / "in")) == decoded_pts(source)


def test_a_corrupt_input_on_ray_ends_in_the_failure_list(cluster, clip_factory, tmp_path):
    make_inputs(clip_factory, tmp_path / "in", 3, frames=6)
    (tmp_path / "in" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 200)
    result = run(JobSpec([str(tmp_path / "in")], tmp_path / "out", Pipeline.from_options({"op": "identity"}),
                         ON_RAY))
    assert result.exit_code == 3
    assert result.counts == {"pending": 0, "running": 0, "done": 3, "failed": 1}
    (failure,) = result.failures
    assert failure.uri.endswith("broken.mp4")
    assert "corrupt video" in failure.error and failure.error_type == "CorruptVideoError"


def test_retry_of_a_ray_job_runs_on_ray_again(cluster, clip_factory, tmp_path):
    make_inputs(clip_factory, tmp_path / "in", 1, frames=6)
    gate, job_dir = tmp_path / "gate", tmp_path / "job"
    once = RunSettings(engine="ray", ray=RAY_OPTIONS, retry=RetryPolicy(max_attempts=1, backoff_seconds=0.05))
    first = run(JobSpec([str(tmp_path / "in")], tmp_path / "out", Pipeline(ops=(GatedOp(gate=str(gate)),)), once),
                job_dir=job_dir)
    assert first.counts["failed"] == 1
    gate.touch()
    again = retry(job_dir)  # no settings given: the stored ones
    assert again.counts["done"] == 1
    ledger = open_ledger(job_dir)
    try:
        workers = [attempt["worker"] for attempt in LedgerReads(ledger).attempts()]
    finally:
        ledger.close()
    assert len(workers) == 3 and all(worker.startswith("ray-") for worker in workers), workers  # probe, video, retry


def test_an_actor_killed_from_outside_is_a_loss_and_one_that_segfaults_is_a_crash(cluster, clip_factory, tmp_path):
    """Ray reports both deaths alike; the actor's tombstone tells them apart: a SIGKILL (an operator, the
    kernel's OOM killer) is retried without using up the video's crashes, a segfault fails a poison input."""
    make_inputs(clip_factory, tmp_path / "in", 3, frames=24)
    poison = tmp_path / "in" / "poison.mp4"
    shutil.copy(clip_factory("ray-wide.mp4", **{**TINY, "width": 96}, frames=6), poison)
    beacons = tmp_path / "beacons"
    beacons.mkdir()
    pipeline = Pipeline(ops=(SlowOp(delay=0.1, beacon_dir=str(beacons)), CrashOp(width=96)))

    def kill_one_busy_actor() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for beacon in beacons.iterdir():
                if int(beacon.read_text() or 0) >= 4:  # in the middle of a 24-frame video
                    os.kill(int(beacon.name), signal.SIGKILL)
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_busy_actor)
    killer.start()
    result = run(JobSpec([str(tmp_path / "in")], tmp_path / "out", pipeline, ON_RAY),
                 job_dir=tmp_path / "job")
    killer.join()

    assert result.counts == {"pending": 0, "running": 0, "done": 3, "failed": 1}
    (failure,) = result.failures
    assert failure.uri == str(poison) and "crashed 3 times" in failure.error
    assert "Segmentation fault" in failure.error
    ledger = open_ledger(tmp_path / "job")
    try:
        attempts = LedgerReads(ledger).attempts()
    finally:
        ledger.close()
    killed = [a for a in attempts if a["error_type"] == "WorkerKilled"]
    assert [a["outcome"] for a in killed] == ["lost"], attempts
    crashed = [a for a in attempts if a["outcome"] == "crashed"]
    assert len(crashed) == 3 and all("Segmentation fault" in a["message"] for a in crashed)


def test_a_job_that_cannot_start_any_worker_stops_loudly_instead_of_hanging(cluster, clip_factory, tmp_path):
    from framefleet.engines.scheduler import JobStalledError

    make_inputs(clip_factory, tmp_path / "in", 1, frames=6)
    no_gpu_here = RayOptions(address="auto", gpus_per_worker=1)  # the loopback cluster has no GPU
    with pytest.raises(JobStalledError, match=r"no progress for .* \(0 of 1 workers ready\)"):
        settings = RunSettings(engine="ray", ray=no_gpu_here,
                               options=EngineOptions(workers=1, stall_timeout=3))
        run(JobSpec([str(tmp_path / "in")], tmp_path / "out", Pipeline.from_options({"op": "identity"}),
                    settings))


def test_gpu_workers_are_placed_on_the_node_that_has_gpus(cluster, clip_factory, tmp_path):
    ray_cluster, _ = cluster
    gpu_node = ray_cluster.add_node(num_cpus=2, num_gpus=1, object_store_memory=80 * 2**20)  # a declared GPU
    ray_cluster.wait_for_nodes()
    try:
        make_inputs(clip_factory, tmp_path / "in", 6, frames=6)
        records = tmp_path / "nodes"
        records.mkdir()
        half_a_gpu = RayOptions(address="auto", gpus_per_worker=0.5)  # two workers share the GPU
        result = run(JobSpec([str(tmp_path / "in")], tmp_path / "out",
                             Pipeline(ops=(RecordNodeOp(record_dir=str(records)),)),
                             RunSettings(engine="ray", ray=half_a_gpu, retry=FAST_RETRIES)))
        assert result.exit_code == 0 and result.counts["done"] == 6
        assert {p.name for p in records.iterdir()} == {gpu_node.node_id}
        _, workers = ray_pool(Pipeline.from_options({"op": "identity"}), EngineOptions(), half_a_gpu)
        assert workers == 2  # 1 GPU / 0.5 per worker, though the cluster has 4 CPUs
    finally:
        ray_cluster.remove_node(gpu_node)


@pytest.mark.storage
def test_on_ray_every_byte_can_go_through_an_object_store(cluster, clip_factory, azurite, azurite_container, tmp_path):
    """Inputs, outputs and waiting segments all in Azurite: nothing needs a disk the nodes share."""
    sources = {f"v{i}.mp4": clip_factory(f"ray-store-{i}.mp4", **{**TINY, "frames": 24 + 38 * i, "rate": 25})
               for i in range(3)}  # the last is 4 s long: segments of 1 s
    for name, path in sources.items():
        azurite.upload_blob(azurite_container, f"in/{name}", path.read_bytes())
    settings = RunSettings(engine="ray", ray=RAY_OPTIONS, retry=FAST_RETRIES,
                           parts_dir=f"az://{azurite_container}/parts")
    result = run(JobSpec([f"az://{azurite_container}/in"], f"az://{azurite_container}/out",
                         Pipeline.from_options({"op": "identity", "segment_seconds": 1}), settings),
                 job_dir=tmp_path / "job", storage_options=azurite.storage_options())
    assert result.exit_code == 0, result.failures
    for name, source in sources.items():
        output = tmp_path / name
        output.write_bytes(azurite.read_blob(azurite_container, f"out/{name}"))
        assert decoded_pts(output) == decoded_pts(source)
        assert audio_packets(output) == audio_packets(source)
    assert not (tmp_path / "job" / "parts").exists(), "no segment went through the job directory"
    ledger = open_ledger(result.job_dir)
    try:
        assert len({a["worker"] for a in LedgerReads(ledger).attempts()}) == 2
        assert sum(1 for a in LedgerReads(ledger).attempts() if a["kind"] == "segment") >= 5
    finally:
        ledger.close()


def test_the_service_runs_its_watch_rule_and_a_submitted_job_as_ray_actors(cluster, clip_factory, tmp_path):
    from framefleet.service.config import ServiceConfig
    from framefleet.service.runtime import Service
    from framefleet.service.watcher import WatchRule

    watched = make_inputs(clip_factory, tmp_path / "watched", 3, frames=12)
    submitted = make_inputs(clip_factory, tmp_path / "submitted", 2, frames=12)
    rule = WatchRule(name="uploads", source=str(tmp_path / "watched"), output=str(tmp_path / "watched-out"),
                     pipeline={"op": "identity"}, interval=0.3)
    service = Service(ServiceConfig(state_dir=tmp_path / "state", run=RunSettings(engine="ray").given(ray_address="auto", workers=1),
                                    allow=(str(tmp_path),), watch=(rule,)))
    service.start()
    try:
        record, _ = service.submit([str(tmp_path / "submitted")], str(tmp_path / "submitted-out"), {"op": "identity"})
        watch_job = next(r for r in service.registry.list(kind="watch")[0])

        def done(job) -> int:
            return service.read_job(job, lambda view: view.counts()["done"], 0)

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not (
                service.job(record.id).state == "finished" and done(watch_job) == len(watched)):
            time.sleep(0.3)
        assert service.job(record.id).state == "finished" and done(record) == len(submitted)
        assert done(watch_job) == len(watched)
        for root, sources in (("watched", watched), ("submitted", submitted)):
            for source in sources:
                output = tmp_path / f"{root}-out" / source.relative_to(tmp_path / root)
                assert decoded_pts(output) == decoded_pts(source)
        for job in (record, watch_job):
            workers = service.read_job(job, lambda view: {a["worker"] for a in view.attempts()}, set())
            assert workers and all(w.startswith("ray-") for w in workers)
    finally:
        service.stop()


def test_a_cluster_plan_runs_on_ray_with_its_worker_count(cluster, clip_factory, tmp_path):
    """`framefleet plan` over a catalogue of 1-CPU node types picks a Ray option; `run --plan` runs it on
    the cluster with the plan's workers and knobs, and `status` shows the plan's prediction."""
    import json

    import yaml
    from typer.testing import CliRunner

    from framefleet.cli import app

    make_inputs(clip_factory, tmp_path / "in", 4, frames=48)
    catalogue = tmp_path / "hardware.yaml"
    catalogue.write_text(yaml.safe_dump({"currency": "USD", "nodes": [
        {"name": "c1", "cpus": 1, "price_per_hour": 0.1, "startup_seconds": 1, "max_nodes": 2}]}))
    runner = CliRunner()
    planned = runner.invoke(app, ["plan", str(tmp_path / "in"), "--op", "identity", "--hardware", str(catalogue),
                                  "--profile-dir", str(tmp_path / "profiles"), "--sample-frames", "6",
                                  "-o", str(tmp_path / "plan.json"), "--json"])
    assert planned.exit_code == 0, planned.output
    plan = json.loads(planned.stdout)
    choice = plan["options"][plan["chosen"]]
    assert choice["node"] == "c1" and not choice["this_machine"] and choice["knobs"]["threads"] == 1
    ran = runner.invoke(app, ["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--plan",
                              str(tmp_path / "plan.json"), "--ray-address", "auto", "--json"])
    assert ran.exit_code == 0, ran.output
    ledger = open_ledger(tmp_path / "out" / ".framefleet-job")
    try:
        workers = {a["worker"] for a in LedgerReads(ledger).attempts()}
        assert ledger.counts()["done"] == 4
        assert workers and all(w.startswith("ray-") for w in workers) and len(workers) <= choice["workers"]
    finally:
        ledger.close()
    status = runner.invoke(app, ["status", str(tmp_path / "out" / ".framefleet-job"), "--json"])
    prediction = json.loads(status.stdout)["prediction"]
    assert prediction["node"] == "c1" and prediction["nodes"] == choice["nodes"]
    assert prediction["wall_seconds"] == choice["wall_seconds"] and prediction["engine"] == "ray"


def test_user_ops_and_an_onnx_model_run_on_ray_without_their_module_on_the_nodes(
        cluster, clip_factory, tmp_path, monkeypatch):
    """The user's module lives only in their folder (on the driver's path, not the nodes'): it travels with
    the pipeline. Records from both engines' workers land in one table per job."""
    pytest.importorskip("onnx")
    module = write_user_ops(tmp_path / "mycode", f"rayops_{uuid.uuid4().hex[:8]}")
    monkeypatch.syspath_prepend(str(tmp_path / "mycode"))
    model = channel_mean_model(tmp_path / "mean.onnx")
    sources = make_inputs(clip_factory, tmp_path / "in", 4, frames=12)
    long_clip = clip_factory("ray-long.mp4", **{**TINY, "frames": 100, "rate": 25})  # 4 s: 2 segments
    shutil.copy(long_clip, tmp_path / "in" / "long.mp4")
    pipeline = Pipeline.from_options({"steps": [{"op": f"{module}:Brightness"},
                                                {"op": "onnx", "model": str(model), "outputs": ["mean"]},
                                                {"op": f"{module}:Invert"}], "segment_seconds": 2})
    out = tmp_path / "out"
    result = run(JobSpec([str(tmp_path / "in")], str(out), pipeline, ON_RAY))

    assert result.counts["done"] == 5 and result.counts["failed"] == 0, result.failures
    table = load_records(out)
    for source in [*sources, tmp_path / "in" / "long.mp4"]:
        frames = rgb_frames(source)
        mine = [r for r in table.to_pylist() if r["input"] == str(source)]
        brightness = [r for r in mine if r["op"] == "brightness"]
        means = [r for r in mine if r["op"] == "onnx"]
        assert [r["frame"] for r in brightness] == [r["frame"] for r in means] == list(range(len(frames)))
        assert [r["brightness"] for r in brightness] == pytest.approx([float(f.mean()) for f in frames], abs=1.0)
        assert np.allclose([r["mean"] for r in means],
                           [f.reshape(-1, 3).mean(axis=0) / 255 for f in frames], atol=0.005)
        output = rgb_frames(out / source.relative_to(tmp_path / "in"))
        assert len(output) == len(frames) and mean_abs_diff(output[3], 255 - frames[3]) < 12
    assert not ray.get(_importable_on_a_node.remote(module))  # so it can only have come with the pipeline


@ray.remote(num_cpus=0)
def _importable_on_a_node(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
