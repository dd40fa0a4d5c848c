"""Device selection: auto falls back to the CPU, an unavailable CUDA is a clear error, CUDA matches CPU."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from framefleet.errors import DeviceUnavailableError, OptionError
from framefleet.ops import Device, StyleTransferOp
from framefleet.processing.batch import FrameBatch
from framefleet.processing.streaming import Parallelism, available_cores
from framefleet.video.synth import picture

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()
needs_gpu = pytest.mark.needs_gpu


def test_auto_device_is_cuda_only_when_onnxruntime_has_it():
    assert StyleTransferOp(device="auto").resolve_device() == ("cuda" if HAS_CUDA else "cpu")


@pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime has CUDA")
def test_cuda_without_a_cuda_build_is_a_one_line_error():
    with pytest.raises(DeviceUnavailableError, match="framefleet\\[gpu\\]"):
        StyleTransferOp(device="cuda").resolve_device()


def test_unknown_device_is_an_option_error():
    with pytest.raises(OptionError, match="auto, cpu or cuda"):
        StyleTransferOp(device="tpu").resolve_device()


def test_cpu_parallelism_uses_one_single_threaded_session_per_core():
    plan = Parallelism.choose([StyleTransferOp(device="cpu")])
    assert plan.sessions == available_cores()
    assert plan.threads_per_session == 1
    one = Parallelism.choose([StyleTransferOp(device="cpu")], sessions=1)
    assert one.threads_per_session == available_cores()


@needs_gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs onnxruntime-gpu and a CUDA device")
def test_cuda_output_matches_cpu_output():
    frame = picture(5, 320, 180)[None]
    batch = FrameBatch(frame, np.zeros(1, np.int64))
    results = []
    for kind in ("cpu", "cuda"):
        op = StyleTransferOp(style="7", device=kind)
        op.setup(Device(kind=kind, threads=1))
        results.append(op.process(batch).frames[0].astype(int))
    assert np.abs(results[0] - results[1]).mean() < 1.0
