"""`OnnxOp`: the base of the ops that run an ONNX model on a runtime chosen per machine, and the session bound
to a model's constant inputs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from framefleet.errors import OptionError
from framefleet.ops.base import Device, DeviceKind, Op, Resources
from framefleet.ops.ort_session import resolve_onnx_device
from framefleet.ops.quantize import Calibration
from framefleet.ops.runtime_choice import select_engine
from framefleet.ops.runtimes import Engine, check_choice, require_openvino

log = logging.getLogger(__name__)


class BoundSession:
    """An engine whose constant inputs are given once; on CUDA (onnxruntime) they are placed on the device
    once and each run binds the host inputs and its first output through IO binding (no per-run device
    allocations for the constants)."""

    def __init__(self, engine: Engine, device: Device, constants: dict[str, np.ndarray]) -> None:
        self.engine = engine
        self._cuda = device.kind == "cuda"
        self._constants: dict = (
            {name: ort.OrtValue.ortvalue_from_numpy(value, "cuda", device.index) for name, value in constants.items()}
            if self._cuda else dict(constants)
        )

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The first output for these inputs (plus the constants), as a host array."""
        if not self._cuda:
            return self.engine.run(None, {**feeds, **self._constants})[0]
        session = self.engine.session  # CUDA runs on onnxruntime only
        binding = session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
        for name, value in self._constants.items():
            binding.bind_ortvalue_input(name, value)
        binding.bind_output(session.get_outputs()[0].name, "cpu")
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]


@dataclass(kw_only=True)
class OnnxOp(Op):
    """Base of the ops that run ONNX models: on onnxruntime (CPU, or CUDA where asked and available) or
    OpenVINO (CPU), at fp32, bf16 or int8 (`framefleet.ops.runtime_choice`)."""

    runtime: str = "auto"
    """auto, onnxruntime or openvino."""
    precision: str = "auto"
    """auto, fp32, bf16 or int8 (models whose op gives calibration inputs: the built-in styles)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self.runtime, self.precision)
        if self.runtime == "openvino":
            require_openvino()  # on the machine that builds the pipeline, before any worker starts
        if self.precision == "int8" and not self.quantizable():
            raise OptionError(f"--precision int8: op {self.name} cannot be quantized (int8 is for the built-in styles); "
                              "use --precision auto, fp32 or bf16")
        self._ran: list[str] = []

    def quantizable(self) -> bool:
        """Whether the op gives its model calibration inputs, so that it can run at int8."""
        return False

    def params(self) -> dict[str, Any]:
        """The parameters, without runtime and precision while they are auto (so fingerprints of pipelines
        that leave them alone stay as they were)."""
        values = super().params()
        for key in ("runtime", "precision"):
            if values.get(key) == "auto":
                values.pop(key)
        return values

    def open_engine(self, model: Path | bytes, device: Device, sample: Callable[[], dict[str, np.ndarray]],
                    what: str, calibration: Calibration | None = None) -> Engine:
        """`model` on the runtime and precision this op asks for (auto: the machine's fastest that passes
        the quality gate on `sample()`'s inputs; int8 only with `calibration`); remembered for `runtime_used`."""
        engine = select_engine(model, device, self.runtime, self.precision, sample, what, calibration)
        self._ran.append(str(engine.choice))
        return engine

    def runtime_used(self) -> str | None:
        return ", ".join(dict.fromkeys(self._ran)) or None

    @property
    def resources(self) -> Resources:
        """One CPU; a whole GPU when the device is explicitly cuda (engines may ask for a fraction)."""
        return Resources(cpus=1.0, gpus=1.0 if self.device == "cuda" else 0.0)

    def resolve_device(self) -> DeviceKind:
        return resolve_onnx_device(self.device)
