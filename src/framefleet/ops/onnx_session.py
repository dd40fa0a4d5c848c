"""onnxruntime sessions with framefleet's choice of providers and threads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from framefleet.errors import DeviceUnavailableError, OptionError
from framefleet.ops.base import Device, DeviceKind, Op, Resources

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
    intra-op threads on the CPU."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = max(1, device.threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if device.kind == "cuda":
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


@dataclass(kw_only=True)
class OnnxOp(Op):
    """Base of the ops that run onnxruntime models: on the CPU, or on CUDA where asked and available."""

    @property
    def resources(self) -> Resources:
        """One CPU; a whole GPU when the device is explicitly cuda (engines may ask for a fraction)."""
        return Resources(cpus=1.0, gpus=1.0 if self.device == "cuda" else 0.0)

    def resolve_device(self) -> DeviceKind:
        return resolve_onnx_device(self.device)
