"""onnxruntime sessions with framefleet's choice of providers and threads."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import onnxruntime as ort

from framefleet.errors import DeviceUnavailableError, OptionError
from framefleet.ops.base import Device, DeviceKind, Op, Resources

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


class BoundSession:
    """A session whose constant inputs are placed on its device once; on CUDA each run binds the host
    inputs and its first output through IO binding (no per-run device allocations for the constants)."""

    def __init__(self, session: ort.InferenceSession, device: Device, constants: dict[str, np.ndarray]) -> None:
        self.session = session
        self._cuda = device.kind == "cuda"
        self._output = session.get_outputs()[0].name
        self._constants: dict = (
            {name: ort.OrtValue.ortvalue_from_numpy(value, "cuda", device.index) for name, value in constants.items()}
            if self._cuda else dict(constants)
        )

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The first output for these inputs (plus the constants), as a host array."""
        if not self._cuda:
            return self.session.run([self._output], {**feeds, **self._constants})[0]
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
        for name, value in self._constants.items():
            binding.bind_ortvalue_input(name, value)
        binding.bind_output(self._output, "cpu")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]


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


@dataclass(kw_only=True)
class OnnxOp(Op):
    """Base of the ops that run onnxruntime models: on the CPU, or on CUDA where asked and available."""

    @property
    def resources(self) -> Resources:
        """One CPU; a whole GPU when the device is explicitly cuda (engines may ask for a fraction)."""
        return Resources(cpus=1.0, gpus=1.0 if self.device == "cuda" else 0.0)

    def resolve_device(self) -> DeviceKind:
        return resolve_onnx_device(self.device)
