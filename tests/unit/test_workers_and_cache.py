"""Worker counts for CPU and GPU pipelines, and the on-disk cache of the fused style model."""

from __future__ import annotations

import pytest

from framefleet.engines.local import local_worker_count
from framefleet.ops import fused
from framefleet.ops.style import model_path
from framefleet.pipeline import Pipeline
from framefleet.processing.streaming import available_cores
from framefleet.settings import EngineOptions


def test_a_gpu_pipeline_gets_one_worker_per_gpu_and_the_cores_to_share(monkeypatch):
    monkeypatch.setattr("framefleet.engines.local.gpu_names", lambda: ("NVIDIA H200", "NVIDIA H200"))
    on_gpu = Pipeline.from_options({"style": "7", "device": "cuda"})
    workers, threads = local_worker_count(EngineOptions(), on_gpu)
    assert workers == 2 and threads == max(1, available_cores() // 2)
    assert local_worker_count(EngineOptions(workers=5), on_gpu)[0] == 5  # the user's count wins
    on_cpu = Pipeline.from_options({"style": "7", "device": "cpu"})
    assert local_worker_count(EngineOptions(), on_cpu)[0] == available_cores()


def test_the_fused_model_is_built_once_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    built = fused.cached_uint8(model_path("multistyle26"), image_input="image", resize_output=True)
    (cached,) = (tmp_path / "framefleet" / "models").iterdir()
    assert cached.read_bytes() == built and "-resize-" in cached.name

    def no_build(*_args, **_kwargs):
        raise AssertionError("built again instead of read from the cache")

    monkeypatch.setattr(fused, "fuse_uint8", no_build)
    assert fused.cached_uint8(model_path("multistyle26"), image_input="image", resize_output=True) == built
    with pytest.raises(AssertionError, match="built again"):  # another variant is another file
        fused.cached_uint8(model_path("multistyle26"), image_input="image", resize_output=False)
