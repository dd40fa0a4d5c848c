"""`open_engine`: a model loaded on the runtime and precision chosen for it (`ops.runtimes` names them)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from framefleet.ops.base import Device
from framefleet.ops.runtimes import REFERENCE, Choice, Engine, EngineError

if TYPE_CHECKING:
    from framefleet.ops.quantize import Calibration


def open_engine(model: Path | bytes, device: Device, choice: Choice,
                calibration: Calibration | None = None) -> Engine:
    """`model` (a file or a serialized model) loaded on `choice`'s runtime at its precision, with
    `device.threads` threads on the CPU; int8 quantizes it first on `calibration` (cached,
    `ops.quantize`). EngineError when the runtime cannot compile it or it cannot be quantized."""
    if choice.precision == "int8":
        from framefleet.ops.quantize import QuantizationError, cached_int8

        if calibration is None:
            raise EngineError("int8 needs calibration inputs, which this model's op does not give")
        data = model if isinstance(model, bytes) else Path(model).read_bytes()
        try:
            model = cached_int8(data, calibration)
        except QuantizationError as exc:
            raise EngineError(f"cannot quantize it: {exc}") from None
    if choice.runtime == "onnxruntime":
        from framefleet.ops.ort_session import open_session

        return OrtEngine(open_session(model, device))
    from framefleet.ops.openvino_engine import OpenVinoEngine

    return OpenVinoEngine(model, device, choice.precision)


class OrtEngine:
    """An onnxruntime session as an engine (it always runs fp32 here)."""

    choice = REFERENCE

    def __init__(self, session: Any) -> None:
        self.session = session

    def run(self, outputs: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(outputs, feeds)
