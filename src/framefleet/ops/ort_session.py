"""onnxruntime sessions with framefleet's choice of providers and threads."""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

import onnxruntime as ort

from framefleet.errors import DeviceUnavailableError, OptionError
from framefleet.ops.base import Device, DeviceKind

log = logging.getLogger(__name__)

_PROVIDERS = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


def resolve_onnx_device(requested: str) -> DeviceKind:
    """Map auto/cpu/cuda to what this onnxruntime build can run."""
    available = ort.get_available_providers()
    if requested == "auto":
        return "cuda" if _PROVIDERS["cuda"] in available else "cpu"
    if requested == "cpu":
        return "cpu"
    if requested == "cuda":
        if _PROVIDERS["cuda"] not in available:
            raise DeviceUnavailableError(
                "--device cuda: this onnxruntime has no CUDA provider "
                f"(found {', '.join(available)}); install framefleet[gpu] or use --device cpu"
            )
        return "cuda"
    raise OptionError(f"--device must be auto, cpu or cuda; got {requested!r}")


def open_session(model: Path | bytes, device: Device) -> ort.InferenceSession:
    """An inference session on `device` for a model file (or a serialized model), using `device.threads`
    intra-op threads on the CPU, without onnxruntime's memory pattern (docs/benchmarks.md, memory); on CUDA one
    host thread, which never spins (the host's cores belong to decoding, conversion and encoding there)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = max(1, device.threads) if device.kind == "cpu" else 1
    if device.kind == "cpu":  # a memory pattern preplans one block per input shape: twice the peak, no faster
        options.enable_mem_pattern = False
    if device.kind == "cuda":
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if device.kind == "cuda":
        _load_cuda_libraries()
        providers: list = [(_PROVIDERS["cuda"], {"device_id": device.index}), _PROVIDERS["cpu"]]
    else:
        providers = [_PROVIDERS["cpu"]]
    session = ort.InferenceSession(model if isinstance(model, bytes) else str(model), options, providers=providers)
    if device.kind == "cuda" and session.get_providers()[0] != _PROVIDERS["cuda"]:
        raise DeviceUnavailableError(
            "--device cuda: onnxruntime could not start CUDA (check the CUDA and cuDNN libraries) "
            "and fell back to the CPU; use --device cpu to run there"
        )
    return session


@cache
def _load_cuda_libraries() -> None:
    """Load CUDA and cuDNN from NVIDIA's pip wheels when they are installed (as `onnxruntime-gpu[cuda,cudnn]`
    or beside PyTorch), so no LD_LIBRARY_PATH is needed; system libraries are used otherwise."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
        except Exception as exc:  # noqa: BLE001 - the session then reports what is missing
            log.info("onnxruntime could not preload the CUDA libraries: %s", exc)
