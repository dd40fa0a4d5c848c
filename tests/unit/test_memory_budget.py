"""The memory budget's estimate and decisions: fewer sessions, then a smaller inference size, or a refusal;
a job's workers and their caps."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from framefleet.engines import local
from framefleet.errors import LimitError, OptionError
from framefleet.pipeline import Pipeline
from framefleet.processing import memory_budget, streaming
from framefleet.processing.limits import is_out_of_memory
from framefleet.processing.memory_budget import (
    BUDGET_ENV,
    MIB,
    available_bytes,
    estimate,
    fit_local_workers,
    fit_stylize,
)
from framefleet.settings import EngineOptions

UHD = (3840, 2160)


@pytest.fixture(autouse=True)
def two_cores(monkeypatch):
    """Two cores, and a CPU with bf16: `auto` sessions are planned with onnxruntime's figures wherever the
    tests run."""
    monkeypatch.setattr(streaming, "available_cores", lambda: 2)
    monkeypatch.setattr(local, "available_cores", lambda: 2)
    monkeypatch.setattr(memory_budget, "cpu_precisions", lambda: ("fp32", "bf16"))


def budget(monkeypatch, mib: int) -> None:
    monkeypatch.setenv(BUDGET_ENV, str(mib))


def style(max_size: int | None = None, **more) -> Pipeline:
    return Pipeline.from_options({"max_size": max_size, **more})


def test_the_estimate_follows_the_measured_figures():
    # measured (docs/benchmarks.md): one session at 1080p full size with a batch of 4 peaks at 2.6 GB
    session = estimate(style(), 1920, 1080, 2) - estimate(style(), 1920, 1080, 1)
    assert 2.4e9 < session < 3.2e9
    full, capped = estimate(style(), *UHD, 1), estimate(style(1440), *UHD, 1)
    assert 10e9 < full < 14e9 and capped < full / 2
    assert estimate(style(batch_size=1), *UHD, 1) < full / 3


def test_what_fits_runs_as_asked(monkeypatch, caplog):
    budget(monkeypatch, 8192)
    pipeline = style()
    with caplog.at_level(logging.WARNING):
        fit = fit_stylize(pipeline, 1280, 720, None, size_fixed=False)
    assert (fit.pipeline, fit.sessions) == (pipeline, 2)
    assert not caplog.records


def test_fewer_sessions_come_before_a_smaller_size(monkeypatch, caplog):
    budget(monkeypatch, 14000)
    with caplog.at_level(logging.WARNING):
        fit = fit_stylize(style(), *UHD, None, size_fixed=False)
    assert fit.sessions == 1 and fit.pipeline.ops[0].max_size is None
    assert [r.getMessage() for r in caplog.records] == [
        "3840x2160 at full size with 2 sessions needs ~23.5 GB, above the 14.7 GB available: running 1 session "
        "(~12.3 GB; set --max-size or --sessions to choose)"]


def test_then_the_largest_size_that_fits(monkeypatch, caplog):
    budget(monkeypatch, 4200)
    with caplog.at_level(logging.WARNING):
        fit = fit_stylize(style(), *UHD, None, size_fixed=False)
    assert fit.sessions == 1 and fit.pipeline.ops[0].max_size == 1440
    assert fit.needed <= 4200 * MIB < estimate(style(1920), *UHD, 1)
    assert len(caplog.records) == 1 and "running 1 session and the model at max-size 1440" in caplog.text


def test_given_sessions_are_kept_and_the_size_adapts(monkeypatch):
    budget(monkeypatch, 6000)
    fit = fit_stylize(style(), *UHD, 2, size_fixed=False)
    assert fit.sessions == 2 and fit.pipeline.ops[0].max_size == 960


def test_a_given_size_that_cannot_fit_is_refused(monkeypatch):
    budget(monkeypatch, 6000)
    with pytest.raises(LimitError) as caught:
        fit_stylize(style(3840), *UHD, None, size_fixed=True)
    assert caught.value.error_class == "limit:memory"
    assert str(caught.value) == (
        "limit:memory: 3840x2160 at full size with 1 session needs ~12.3 GB, above the 6.3 GB available "
        "(FRAMEFLEET_MEMORY_BUDGET_MB sets it); lower or drop --max-size (framefleet then picks what fits), "
        "or free memory")


def test_given_sessions_that_cannot_fit_are_refused(monkeypatch):
    budget(monkeypatch, 3000)
    with pytest.raises(LimitError, match="at max-size 360 with 2 sessions .* lower or drop --sessions"):
        fit_stylize(style(), *UHD, 2, size_fixed=False)


def test_a_given_size_that_fits_with_fewer_sessions_runs(monkeypatch):
    budget(monkeypatch, 3000)
    fit = fit_stylize(style(720), *UHD, None, size_fixed=True)
    assert fit.sessions == 1 and fit.pipeline.ops[0].max_size == 720


def test_only_a_built_in_style_is_fitted(monkeypatch):
    budget(monkeypatch, 100)
    for options in ({"op": "identity"}, {"op": "resize"}):
        fit = fit_stylize(Pipeline.from_options(options), *UHD, None, size_fixed=False)
        assert fit.sessions == 2


def test_the_budget_comes_from_the_machine_or_the_environment(monkeypatch):
    monkeypatch.delenv(BUDGET_ENV, raising=False)
    assert 0 < available_bytes() < memory_budget._meminfo_available()
    budget(monkeypatch, 512)
    assert available_bytes() == 512 * MIB
    monkeypatch.setenv(BUDGET_ENV, "lots")
    with pytest.raises(OptionError, match="FRAMEFLEET_MEMORY_BUDGET_MB='lots': give the memory"):
        available_bytes()


def test_a_job_caps_each_default_worker_at_its_share(monkeypatch, caplog):
    budget(monkeypatch, 8000)
    options, pipeline = fit_local_workers(EngineOptions(), style())
    assert options.workers is None and pipeline.limits.memory_mb == 4000
    given = style(limits={"memory_mb": 6000})
    assert fit_local_workers(EngineOptions(), given) == (EngineOptions(), given)
    cuda = style(device="cuda")
    assert fit_local_workers(EngineOptions(), cuda)[1] is cuda


def test_a_job_runs_the_workers_that_fit_or_refuses_those_given(monkeypatch, caplog):
    budget(monkeypatch, 500)
    with caplog.at_level(logging.WARNING):
        options, pipeline = fit_local_workers(EngineOptions(), style())
    assert options.workers == 1 and pipeline.limits.memory_mb == 500
    assert len(caplog.records) == 1 and "running 1 worker (set --workers to choose)" in caplog.text
    with pytest.raises(LimitError, match=r"limit:memory: 2 workers need at least ~0.8 GB .* use --workers 1 or"):
        fit_local_workers(EngineOptions(workers=2), style())


def test_out_of_memory_from_python_or_onnxruntime():
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(Fail("bfc_arena.cc:360 Failed to allocate memory for requested buffer of size 398131200"))
    assert not is_out_of_memory(Fail("Non-zero status code returned while running Conv node"))
    assert not is_out_of_memory(RuntimeError("Failed to allocate memory"))


def test_out_of_memory_from_opencv():
    # a real refusal: OpenCV asked for 1.2 GB under a 1 GiB address-space cap (in a child process)
    script = """
import resource, numpy as np, cv2
from framefleet.processing.limits import is_out_of_memory
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
def refusal(call):
    try:
        call()
    except cv2.error as exc:
        return exc

print(is_out_of_memory(refusal(lambda: cv2.resize(np.zeros((10, 10, 3), np.uint8), (20000, 20000)))),
      is_out_of_memory(refusal(lambda: cv2.resize(np.zeros((0, 0, 3), np.uint8), (0, 0)))))  # another error
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "False"], done.stderr


@pytest.mark.parametrize(("options", "bf16_cpu", "openvino_fp32"), [
    ({"runtime": "openvino", "precision": "fp32"}, True, True),
    ({"runtime": "openvino"}, False, True),  # auto precision without bf16: fp32
    ({}, False, True),  # auto: OpenVINO fp32 is the usual pick without bf16
    ({}, True, False),  # auto with bf16: bf16 (or onnxruntime fp32), under onnxruntime's figure
    ({"runtime": "openvino", "precision": "bf16"}, True, False),
    ({"runtime": "onnxruntime"}, False, False),
])
def test_a_session_that_may_run_on_openvino_fp32_is_planned_with_its_larger_peak(monkeypatch, options, bf16_cpu,
                                                                                 openvino_fp32):
    # measured (docs/benchmarks.md, memory): OpenVINO fp32 peaks at 1.4x onnxruntime fp32 at 1080p
    monkeypatch.setattr(memory_budget, "openvino_installed", lambda: True)
    if not bf16_cpu:
        monkeypatch.setattr(memory_budget, "cpu_precisions", lambda: ("fp32",))
    session = estimate(style(**options), 1920, 1080, 2) - estimate(style(**options), 1920, 1080, 1)
    reference = estimate(style(runtime="onnxruntime"), 1920, 1080, 2) - estimate(
        style(runtime="onnxruntime"), 1920, 1080, 1)
    assert session / reference == (pytest.approx(1.35, abs=0.03) if openvino_fp32 else 1.0)
