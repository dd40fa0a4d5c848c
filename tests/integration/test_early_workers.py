"""Local worker processes started before their job is set up (`engines.local_processes`): a job's pool takes
them over, replaces one killed meanwhile, and lets go of those it does not need."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from framefleet.engines import local_processes
from framefleet.engines.events import Ready
from framefleet.engines.local import LocalPool
from framefleet.jobs.directory import open_ledger
from framefleet.jobs.reads import LedgerReads
from framefleet.jobs.run import run
from framefleet.jobs.spec import JobSpec
from framefleet.ops.identity import IdentityOp
from framefleet.pipeline import Pipeline
from framefleet.settings import EngineOptions, RunSettings

IDENTITY = Pipeline([IdentityOp()])


@pytest.fixture(autouse=True)
def _no_early_processes_left_behind():
    yield
    local_processes.stop_early()


@pytest.fixture
def clip(clip_factory) -> Path:
    return clip_factory("early.mp4", width=64, height=48, frames=6)


def ready_worker(pool: LocalPool) -> str:
    """The name of the first worker that reports Ready (fails on anything else)."""
    while True:
        for event in pool.events(timeout=60):
            assert isinstance(event, Ready), event
            return event.worker


def test_a_pool_takes_over_the_processes_started_early():
    local_processes.start_early(1)
    early = local_processes._early[0]
    pool = LocalPool(IDENTITY, threads=1)
    try:
        assert pool.spawn() == early.name
        assert not local_processes._early
        assert ready_worker(pool) == early.name
    finally:
        pool.close()
    assert early.process.exitcode == 0


def test_an_early_process_killed_before_its_pool_takes_it_is_replaced():
    local_processes.start_early(1)
    early = local_processes._early[0]
    early.process.kill()
    early.process.join(timeout=30)
    pool = LocalPool(IDENTITY, threads=1)
    try:
        name = pool.spawn()
        assert name != early.name
        assert ready_worker(pool) == name
    finally:
        pool.close()


def test_early_processes_nobody_takes_exit_when_let_go():
    local_processes.start_early(2)
    started = list(local_processes._early)
    local_processes.stop_early()
    for worker in started:
        worker.process.join(timeout=60)
        assert worker.process.exitcode == 0  # left on its own, neither killed nor crashed


def test_a_job_runs_on_the_processes_started_early_and_lets_go_of_the_rest(clip, tmp_path):
    local_processes.start_early(3)
    started = list(local_processes._early)
    settings = RunSettings(options=EngineOptions(workers=2))
    result = run(JobSpec([str(clip)], str(tmp_path / "out"), IDENTITY, settings))
    assert result.counts["done"] == 1
    with open_ledger(result.job_dir) as ledger:
        workers = {attempt["worker"] for attempt in LedgerReads(ledger).attempts()}
    assert workers <= {worker.name for worker in started[:2]}
    assert not local_processes._early
    started[2].process.join(timeout=60)
    assert started[2].process.exitcode == 0


def test_the_run_command_starts_its_workers_before_importing_pyav_and_the_job_machinery(clip, tmp_path):
    script = f"""
import sys
from framefleet.cli import main
from framefleet.engines import local_processes

start_early = local_processes.start_early


def record(count=None):
    print("loaded:", sorted(m for m in ("av", "numpy", "framefleet.pipeline", "framefleet.jobs.run")
                             if m in sys.modules), file=sys.stderr)
    start_early(count)


local_processes.start_early = record
sys.argv = ["framefleet", "run", {str(clip)!r}, "-o", {str(tmp_path / "out")!r}, "--op", "identity", "-q"]
main()
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "loaded: []" in done.stderr.splitlines()
