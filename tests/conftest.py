"""Shared fixtures: synthetic clips made with PyAV, and the real clips in ../shared/videos."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from framefleet.video.synth import ClipSpec, write_clip

SHARED_VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "videos"


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
