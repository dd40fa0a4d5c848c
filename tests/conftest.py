"""Shared fixtures: synthetic clips made with PyAV, the real clips in ../shared/videos, and Azurite."""

from __future__ import annotations

import faulthandler
import importlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from framefleet.video.synth import ClipSpec, write_clip

SHARED_VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "videos"

# Jobs watch this node's preemption notices (framefleet.spot); the tests' jobs watch none unless a test
# points them at a fake metadata server (tests/fake_metadata.py), so no test asks a real cloud's service.
os.environ.setdefault("FRAMEFLEET_SPOT_SOURCES", "none")


@pytest.fixture(scope="session")
def shared_videos() -> Path:
    """The real sample clips; tests using them skip when the folder is absent."""
    if not SHARED_VIDEOS.is_dir():
        pytest.skip(f"{SHARED_VIDEOS} is absent")
    return SHARED_VIDEOS


@pytest.fixture(scope="session")
def clip_factory(tmp_path_factory) -> Callable[..., Path]:
    """Make (and cache for the session) a synthetic clip: clip_factory("name.mp4", **ClipSpec fields)."""
    folder = tmp_path_factory.mktemp("clips")
    made: dict[tuple, Path] = {}

    def make(name: str, **fields) -> Path:
        key = (name, tuple(sorted(fields.items())))
        if key not in made:
            path = folder / name
            write_clip(path, ClipSpec(**fields))
            made[key] = path
        return made[key]

    return make


# -- Azurite (a real Azure Blob server) for the storage-marked tests; tests/azurite.py ------------------


def _azurite_unavailable(reason: str) -> None:
    """Skip, or fail when FRAMEFLEET_REQUIRE_AZURITE=1 (make test-storage, .ci/run) demands the server."""
    if os.environ.get("FRAMEFLEET_REQUIRE_AZURITE") == "1":
        pytest.fail(f"{reason} (FRAMEFLEET_REQUIRE_AZURITE=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def azurite_installed() -> None:
    """Azurite and the Azure extra are installed (a test that starts its own server asks for this)."""
    for module in ("adlfs", "azure.storage.blob"):
        try:
            importlib.import_module(module)
        except ImportError:
            _azurite_unavailable(f"{module} is not installed; run make test-storage (extra: .[azure])")
    from azurite import find_azurite_blob

    if find_azurite_blob() is None:
        _azurite_unavailable("Azurite is not installed; run make test-storage")


@pytest.fixture(scope="session")
def azurite(azurite_installed):
    """A started Azurite blob server for the whole session (see tests/azurite.py)."""
    from azurite import Azurite

    server = Azurite().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def azurite_container(azurite) -> str:
    """A fresh, uniquely named (private) container in the session's Azurite."""
    name = f"t{uuid.uuid4().hex[:20]}"
    if not azurite.running:  # a test that stopped the server must not break the next one
        azurite.start()
    return azurite.create_container(name)


@pytest.fixture(autouse=True)
def _no_storage_options_left_behind():
    """Storage options are process-wide (`storage.configure`, called by the CLI and `run`): a test that sets
    some must not hand them to the next one."""
    yield
    from framefleet.files import storage
    storage.configure(None)


def pytest_unconfigure(config: pytest.Config) -> None:
    """A thread left running by a test (a task's pool thread waits in an op) would make the interpreter
    wait at exit forever after every test passed: after two minutes, print every thread's stack and fail."""
    faulthandler.dump_traceback_later(120, exit=True)
