"""Workers without a network: with `--worker-network off` (and by default, when nothing needs it) a local
worker runs in a network namespace of its own, so an op (or a decoder a crafted file took over) cannot
connect anywhere, this machine's loopback services included. Skipped where the platform refuses one."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from job_ops import PhoneHomeOp

from framefleet.jobs.run import run
from framefleet.jobs.spec import JobSpec
from framefleet.ops.identity import IdentityOp
from framefleet.pipeline import Pipeline
from framefleet.processing.limits import cut_network
from framefleet.settings import EngineOptions, RetryPolicy, RunSettings

ONCE = RetryPolicy(max_attempts=1)


def network_namespaces_allowed() -> bool:
    pid = os.fork()
    if pid == 0:
        os._exit(0 if cut_network() is None else 1)
    return os.waitpid(pid, 0)[1] == 0


pytestmark = pytest.mark.skipif(not network_namespaces_allowed(),
                                reason="this platform lets no process make a network namespace")


@pytest.fixture
def listener():
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.5)
    yield server
    server.close()


@pytest.fixture
def folder(clip_factory, tmp_path) -> Path:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.mp4").write_bytes(clip_factory("network.mp4", width=64, height=48, frames=6).read_bytes())
    return inputs


def reached(server: socket.socket) -> bool:
    try:
        server.accept()[0].close()
    except TimeoutError:
        return False
    return True


def test_a_worker_with_its_network_off_cannot_reach_a_loopback_service(folder, tmp_path, listener):
    op = PhoneHomeOp(port=listener.getsockname()[1])
    settings = RunSettings(options=EngineOptions(workers=1, worker_network="off"), retry=ONCE)
    result = run(JobSpec([str(folder)], tmp_path / "out", Pipeline(ops=(op,)), settings))
    assert result.counts["done"] == 1, result.failures
    assert not reached(listener)


def test_a_worker_with_its_network_on_reaches_it(folder, tmp_path, listener):
    """The same op, network kept (the default for a user's op): the check above can fail."""
    op = PhoneHomeOp(port=listener.getsockname()[1])
    settings = RunSettings(options=EngineOptions(workers=1), retry=ONCE)
    result = run(JobSpec([str(folder)], tmp_path / "out", Pipeline(ops=(op,)), settings))
    assert result.counts["failed"] == 1 and "reached 127.0.0.1" in result.failures[0].error
    assert reached(listener)


@pytest.mark.parametrize(("ops", "output", "offline"), [
    ((IdentityOp(),), "out", True),  # built-in ops, local files: nothing needs the network
    ((PhoneHomeOp(),), "out", False),  # a user's op may call a service
    ((IdentityOp(),), "az://container/out", False),  # a store is reached over the network
])
def test_auto_cuts_the_network_only_when_nothing_needs_it(tmp_path, ops, output, offline):
    from framefleet.jobs.run import workers_offline
    from framefleet.jobs.store import Ledger

    ledger = Ledger(tmp_path / "ledger.sqlite")
    try:
        ledger.add_items([(str(tmp_path / "a.mp4"), "a.mp4", 1, "v", str(tmp_path / "out" / "a.mp4"))])
        assert workers_offline("auto", Pipeline(ops=ops), ledger, [output], standing=False) is offline
        assert workers_offline("auto", Pipeline(ops=ops), ledger, [output], standing=True) is False
    finally:
        ledger.close()
