"""Model runtimes behind the ONNX ops: onnxruntime (CPU, CUDA) or OpenVINO (CPU), at a chosen precision.

An `Engine` runs one ONNX model the way an onnxruntime session does (`run(outputs, feeds)`, the outputs in
the model's order), so the ops above it do not care which runtime it is. OpenVINO comes from the
`openvino` wheel, part of the base install (never `onnxruntime-openvino` beside `onnxruntime`).

Each op instance compiles its own OpenVINO model with the instance's threads and core pinning off: two
one-thread models pinned by OpenVINO landed on one core and ran at half speed (docs/benchmarks.md,
runtimes), while unpinned ones run as fast as one compiled model with a stream per core. Precision is
OpenVINO's `INFERENCE_PRECISION_HINT`: fp32, or bf16 where the CPU has it (AVX-512 BF16, AMX). int8 is the
model quantized by `ops.quantize` (its convolutions in int8, calibrated on the op's calibration inputs),
the rest at the CPU's best float precision (bf16 where it has it, else fp32).
"""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from framefleet.errors import DeviceUnavailableError, OptionError

if TYPE_CHECKING:
    pass

RUNTIMES = ("auto", "onnxruntime", "openvino")
PRECISIONS = ("auto", "fp32", "bf16", "int8")
INSTALL_HINT = "pip install openvino"
OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}


@dataclass(frozen=True)
class Choice:
    """A concrete runtime and precision."""

    runtime: str
    precision: str

    def __str__(self) -> str:
        return f"{self.runtime} {self.precision}"


REFERENCE = Choice("onnxruntime", "fp32")
"""What every other choice is compared with."""


class Engine(Protocol):
    """One loaded model, run like an onnxruntime session."""

    choice: Choice

    def run(self, outputs: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The named outputs (None: all, in the model's order) for these inputs."""


class EngineError(Exception):
    """A runtime could not load or compile a model (the message is its reason, one line)."""


def check_choice(runtime: str, precision: str) -> None:
    """Refuse unknown names and combinations no runtime offers (OptionError, one line)."""
    if runtime not in RUNTIMES:
        raise OptionError(f"--runtime must be {', '.join(RUNTIMES)}; got {runtime!r}")
    if precision not in PRECISIONS:
        raise OptionError(f"--precision must be {', '.join(PRECISIONS)}; got {precision!r}")
    if runtime == "onnxruntime" and precision in ("bf16", "int8"):
        raise OptionError(f"--precision {precision} runs on OpenVINO; use --runtime openvino or auto "
                          "(onnxruntime runs fp32 on the CPU)")


def openvino_installed() -> bool:
    """Whether the `openvino` package can be imported."""
    return importlib.util.find_spec("openvino") is not None


def require_openvino() -> None:
    """DeviceUnavailableError (one line, with the install command) when OpenVINO is missing."""
    if not openvino_installed():
        raise DeviceUnavailableError(f"--runtime openvino: OpenVINO is not installed; {INSTALL_HINT}")


def import_openvino() -> Any:
    """The `openvino` module, imported without its model-conversion tools (`openvino.tools.ovc`, which
    `import openvino` loads only if it can, and framefleet never calls): without them a style worker's
    set-up took 0.25-0.30 s here, against 0.31-0.38 s. A later `import openvino.tools.ovc` still works."""
    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    absent = "openvino.tools.ovc" not in sys.modules
    if absent:
        sys.modules["openvino.tools.ovc"] = None  # type: ignore[assignment] - makes that import fail
    try:
        import openvino
    finally:
        if absent:
            del sys.modules["openvino.tools.ovc"]
    return openvino


@cache
def ov_core() -> Any:
    """This process's OpenVINO `Core` (OpenVINO is imported on first use)."""
    return import_openvino().Core()


@cache
def cpu_precisions() -> tuple[str, ...]:
    """The precisions OpenVINO can run on this CPU (fp32 always; bf16 where the CPU has it)."""
    capabilities = ov_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return ("fp32", "bf16") if "BF16" in capabilities else ("fp32",)


@cache
def cpu_has_int8() -> bool:
    """Whether OpenVINO runs int8 convolutions on this CPU (VNNI makes them fast; AVX2 runs them too)."""
    return "INT8" in ov_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def cpu_name() -> str:
    """The CPU's model name as OpenVINO reports it ("" without OpenVINO)."""
    return str(ov_core().get_property("CPU", "FULL_DEVICE_NAME")) if openvino_installed() else ""


def one_line(exc: BaseException) -> str:
    """A runtime's error as one short line, without its source locations."""
    lines = [line.strip() for line in str(exc).splitlines()
             if line.strip() and not re.match(r"^(Exception from|Check '|Summary:|To facilitate)", line.strip())]
    return (" ".join(lines) or type(exc).__name__)[:300]
