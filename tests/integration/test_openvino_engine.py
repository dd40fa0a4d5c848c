"""The OpenVINO engine's fixed-shape copies: steady inputs run on a copy compiled for exactly their shapes
(about 1.3x faster, docs/benchmarks.md "Fixed shapes"), with the same results as the model as loaded; other
inputs still run; shapes that keep changing stop the copies. On the real fused style model."""

from __future__ import annotations

import numpy as np
import pytest

from framefleet.ops import fused
from framefleet.ops.base import Device
from framefleet.ops.style import MIN_SIDE, fused_multistyle

pytest.importorskip("openvino", reason="openvino is not installed")

from framefleet.ops.openvino_engine import RUNS_PER_COMPILE, OpenVinoEngine  # noqa: E402 - needs openvino

CPU = Device(kind="cpu", threads=1)


def feeds(count: int, width: int = 160, height: int = 96, seed: int = 0) -> dict[str, np.ndarray]:
    """The fused style model's inputs: `count` textured frames of width x height, style 7."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (count, height // 8, width // 8, 3), dtype=np.uint8)
    frames = np.repeat(np.repeat(frames, 8, axis=1), 8, axis=2)  # blocks: texture the model keeps
    weights = np.zeros(26, dtype=np.float32)
    weights[7] = 1.0
    return {fused.FRAMES: frames, fused.PADS: fused.reflect_pads(height, width, 4, MIN_SIDE), "style_weights": weights}


@pytest.fixture(scope="module")
def model() -> bytes:
    return fused_multistyle(False)


def styled(engine: OpenVinoEngine, inputs: dict[str, np.ndarray]) -> np.ndarray:
    return engine.run(None, inputs)[0].astype(np.float32)


def test_steady_inputs_run_on_a_fixed_shape_copy_with_the_same_results(model):
    engine = OpenVinoEngine(model, CPU, "fp32")
    loaded = OpenVinoEngine(model, CPU, "fp32", fixed_shapes=False)
    batch, partial = feeds(4), feeds(2, seed=1)
    first = styled(engine, batch)
    assert (engine.fixed_runs, engine.compiles) == (0, 0)  # a shape seen once runs the model as loaded
    again = styled(engine, batch)
    third = styled(engine, batch)
    assert (engine.fixed_runs, engine.compiles) == (2, 1)
    assert np.abs(again - first).max() <= 1 and np.abs(third - again).max() == 0
    # a partial batch between steady ones runs on the model as loaded; the copy stays for the next batch
    assert np.abs(styled(engine, partial) - styled(loaded, partial)).max() <= 1
    assert engine.fixed_runs == 2
    styled(engine, batch)
    assert (engine.fixed_runs, engine.compiles) == (3, 1)
    assert loaded.fixed_runs == 0 and loaded.compiles == 0


def test_other_pads_or_sizes_are_another_shape(model):
    engine = OpenVinoEngine(model, CPU, "fp32")
    small, large = feeds(2), feeds(2, width=192, height=112)
    for inputs in (small, small, large):
        styled(engine, inputs)
    assert (engine.fixed_runs, engine.compiles) == (1, 1)  # `large` came once: the model as loaded ran it
    out = styled(engine, large)
    assert out.shape == (2, 112, 192, 3) and (engine.fixed_runs, engine.compiles) == (2, 2)


def test_shapes_that_keep_changing_stop_the_copies(model):
    engine = OpenVinoEngine(model, CPU, "fp32")
    widths = [64 + 16 * (i // 2) for i in range(12)]  # each shape twice, then the next: a compile every other run
    for width in widths:
        styled(engine, feeds(1, width=width, height=64))
    assert engine.compiles == 2 + len(widths) // RUNS_PER_COMPILE


def test_compiled_models_are_cached_on_disk_and_pruned(model, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = tmp_path / "framefleet" / "openvino"
    first = OpenVinoEngine(model, CPU, "fp32")
    assert len(list(folder.glob("*.blob"))) == 1  # the model as loaded
    written = {blob.name: blob.stat().st_mtime_ns for blob in folder.glob("*.blob")}
    second = OpenVinoEngine(model, CPU, "fp32")  # loaded from the cache: nothing new written
    assert {blob.name: blob.stat().st_mtime_ns for blob in folder.glob("*.blob")} == written
    inputs = feeds(1)
    assert np.abs(styled(first, inputs) - styled(second, inputs)).max() == 0
    monkeypatch.setattr("framefleet.ops.openvino_engine.CACHED_MODELS", 2)
    for width in (64, 80):  # two fixed-shape copies: three models, of which the newest two are kept
        for _ in range(2):
            styled(first, feeds(1, width=width, height=64))
    assert first.compiles == 2 and len(list(folder.glob("*.blob"))) == 2


def test_without_a_writable_cache_models_still_compile(model, tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    engine = OpenVinoEngine(model, CPU, "fp32")
    assert styled(engine, feeds(1)).shape == (1, 96, 160, 3)
