"""How workers read inputs that live in a store: the spool cache's bounds, the read modes, job directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from framefleet.errors import OptionError
from framefleet.files.remote_inputs import SpoolCache
from framefleet.jobs.directory import default_job_dir
from framefleet.settings import InputAccess


def test_the_spool_cache_keeps_copies_by_version_and_evicts_the_least_recently_used(tmp_path: Path):
    sources = []
    for name in "abc":
        path = tmp_path / "src" / f"{name}.mp4"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(name.encode() * 400)
        sources.append(str(path))
    cache = SpoolCache(tmp_path / "cache", max_bytes=1000)
    first = cache.get(sources[0], "v1")
    assert first.read_bytes() == b"a" * 400
    assert cache.get(sources[0], "v1") == first  # cached: the same copy
    assert cache.get(sources[0], "v2") != first  # a new version is a new copy
    cache.get(sources[1], "v1")
    total = sum(p.stat().st_size for p in (tmp_path / "cache").iterdir())
    assert total <= 1000
    assert not first.exists(), "the least recently used copy went first"


def test_one_copy_larger_than_the_limit_is_kept_until_the_next_arrives(tmp_path: Path):
    big = tmp_path / "big.mp4"
    big.write_bytes(b"x" * 5000)
    cache = SpoolCache(tmp_path / "cache", max_bytes=100)
    assert cache.get(str(big), "v").stat().st_size == 5000


def test_read_modes_and_cache_size_are_checked():
    with pytest.raises(OptionError, match="--remote-read must be one of auto, range, spool"):
        InputAccess(mode="fast")  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="spool cache size must not be negative"):
        InputAccess(cache_bytes=-1)


def test_a_store_output_keeps_its_job_directory_under_the_cache_folder(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    job = default_job_dir("az://styled/2026/")
    assert job == default_job_dir("az://styled/2026")  # the same URI named two ways: the same job
    assert job.parent == tmp_path / "framefleet" / "jobs" and job.name.startswith("az-styled-2026-")
    assert default_job_dir("az://styled/2027") != job
    assert default_job_dir(str(tmp_path / "out")) == tmp_path / "out" / ".framefleet-job"
