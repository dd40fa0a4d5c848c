"""An ONNX model on OpenVINO's CPU plugin, compiled for the exact input shapes it keeps being given.

The models framefleet ships take frames of any size and count, and the style model takes its reflection
pads as an input, so every shape inside it is only known when it runs. OpenVINO runs such a dynamic model
at 0.76-0.79x the speed of the same model compiled for fixed shapes (docs/benchmarks.md, "Fixed shapes"):
it plans its memory and picks its kernels per inference. So the engine compiles the model as loaded (the
check that OpenVINO can compile it at all, and the path for one-off shapes), and once the same inputs come
twice in a row (the same shapes, and the same values in small integer inputs such as the pads), compiles a
copy for exactly them: those integer inputs become constants, the other inputs fixed shapes. It keeps one
such copy at a time, and stops compiling copies when shapes change more often than a compile pays back.

Compiled models are cached on disk (OpenVINO's model cache, `~/.cache/framefleet/openvino`, the newest
`CACHED_MODELS` kept): loading one takes about half the time of compiling it. Compiles hold a lock on the
folder, so no process reads a model another is still writing.
"""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from framefleet.errors import OptionError
from framefleet.ops.base import Device
from framefleet.ops.runtimes import (
    OV_PRECISION,
    Choice,
    EngineError,
    cpu_has_int8,
    cpu_name,
    cpu_precisions,
    one_line,
    ov_core,
)
from framefleet.util.cache import cache_dir

CONSTANT_LIMIT = 16
"""Integer inputs of at most this many values (pads, sizes) are folded into a fixed-shape copy."""
RUNS_PER_COMPILE = 16
"""After the first two, one more fixed-shape compile is allowed per this many runs."""
CACHED_MODELS = 64
"""How many compiled models the disk cache keeps (about 1 MB each for the style model)."""

_DISPATCH = threading.Lock()
"""Held while Python copies data into or out of an OpenVINO infer request (see `OpenVinoEngine.run`)."""

Signature = tuple[tuple[str, tuple[int, ...], str, bytes | None], ...]
"""Each input's name, shape, dtype, and (for a small integer input, else None) its values."""


def signature_of(feeds: dict[str, np.ndarray]) -> Signature:
    """What a fixed-shape copy of the model must match to take `feeds`."""
    return tuple(sorted((name, tuple(values.shape), values.dtype.str,
                         values.tobytes() if _folded(values) else None) for name, values in feeds.items()))


def _folded(values: np.ndarray) -> bool:
    """Whether an input becomes a constant in a fixed-shape copy (a small integer tensor)."""
    return values.dtype.kind in "iu" and values.size <= CONSTANT_LIMIT


class _Compiled:
    """A compiled model with its one infer request and output ports."""

    def __init__(self, network: Any, config: dict[str, Any]) -> None:
        with _model_cache() as folder:
            cached = {"CACHE_DIR": str(folder)} if folder else {}
            self.model = ov_core().compile_model(network, "CPU", {**config, **cached})
        self.request = self.model.create_infer_request()
        self.outputs = {port.get_any_name(): port for port in self.model.outputs}


@contextmanager
def _model_cache() -> Iterator[Path | None]:
    """The model cache's folder, locked against other compiles for the block (None where it cannot be
    made or written: compiles then go uncached); the oldest models past `CACHED_MODELS` are removed."""
    folder = cache_dir("openvino")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / ".lock", "a+")
    except OSError:
        yield None
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield folder
        finally:
            blobs = sorted(folder.glob("*.blob"), key=lambda blob: blob.stat().st_mtime, reverse=True)
            for old in blobs[CACHED_MODELS:]:
                old.unlink(missing_ok=True)
            fcntl.flock(handle, fcntl.LOCK_UN)


class OpenVinoEngine:
    """An OpenVINO model compiled for the CPU: as loaded, and for the inputs it is steadily given."""

    def __init__(self, model: Path | bytes, device: Device, precision: str, *, fixed_shapes: bool = True) -> None:
        if device.kind != "cpu":
            raise OptionError("--runtime openvino runs on the CPU; use --device cpu, or --runtime onnxruntime on CUDA")
        if precision not in (*cpu_precisions(), *(("int8",) if cpu_has_int8() else ())):
            raise OptionError(f"--precision {precision}: this CPU ({cpu_name()}) runs OpenVINO at "
                              f"{' or '.join(cpu_precisions())} only")
        self.choice = Choice("openvino", precision)
        floats = cpu_precisions()[-1] if precision == "int8" else precision  # around int8's convolutions
        self._config = {"INFERENCE_PRECISION_HINT": OV_PRECISION[floats], "INFERENCE_NUM_THREADS": max(1, device.threads),
                        "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}
        try:
            self._network = ov_core().read_model(model if isinstance(model, bytes) else str(model))
            self._dynamic = _Compiled(self._network, self._config)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError and its own types
            raise EngineError(one_line(exc)) from None
        self._fixed: tuple[Signature, _Compiled] | None = None
        self._last: Signature | None = None
        self._runs = 0
        self.fixed_shapes = fixed_shapes
        """Whether steady inputs get a fixed-shape copy (False: always the model as loaded; for comparisons)."""
        self.compiles = 0
        """How many fixed-shape copies were compiled."""
        self.fixed_runs = 0
        """How many runs took a fixed-shape copy (the rest ran the model as loaded)."""

    def run(self, outputs: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        signature = signature_of(feeds)
        compiled = self._compiled_for(signature)
        if compiled is not self._dynamic:
            feeds = {name: values for name, values in feeds.items() if not _folded(values)}
            self.fixed_runs += 1
        self._runs += 1
        self._last = signature
        names = list(compiled.outputs) if outputs is None else outputs
        request = compiled.request
        # OpenVINO's Python side deadlocked when two threads copied inputs at once (two sessions in one
        # process, each its own compiled model: both stuck in its data dispatcher). Only the copies in and
        # out are serialised; the inference itself (`wait`, which releases the GIL) runs side by side.
        try:
            with _DISPATCH:
                request.start_async(feeds)
            request.wait()
        except RuntimeError as exc:  # OpenVINO reports a refused allocation as a plain failure of its CPU plugin
            if "allocate" in str(exc).lower() or "cpu_memory" in str(exc):
                raise MemoryError(one_line(exc)) from exc
            raise
        with _DISPATCH:
            return [request.get_tensor(compiled.outputs[name]).data.copy() for name in names]

    def _compiled_for(self, signature: Signature) -> _Compiled:
        """The fixed-shape copy for `signature` (compiled now when these inputs came last time too, and
        compiles are still paying back), else the model as loaded."""
        if self._fixed is not None and self._fixed[0] == signature:
            return self._fixed[1]
        paying = self.compiles < 2 + self._runs // RUNS_PER_COMPILE
        if self.fixed_shapes and signature == self._last and paying:
            self._fixed = None  # one copy at a time: free the old one before compiling the next
            self.compiles += 1
            try:
                self._fixed = (signature, _Compiled(self._fixed_network(signature), self._config))
            except Exception:  # noqa: BLE001 - a copy that will not compile: the model as loaded runs it
                self.fixed_shapes = False  # and no further copies are tried
            else:
                return self._fixed[1]
        return self._dynamic

    def _fixed_network(self, signature: Signature) -> Any:
        """A copy of the model with `signature`'s small integer inputs as constants and the rest fixed."""
        from openvino import opset13

        network = self._network.clone()
        shapes = {}
        for name, shape, dtype, values in signature:
            parameter = next(p for p in network.get_parameters() if p.get_output_tensor(0).get_names() & {name})
            if values is not None:
                constant = opset13.constant(np.frombuffer(values, dtype=np.dtype(dtype)).reshape(shape))
                for target in list(parameter.output(0).get_target_inputs()):
                    target.replace_source_output(constant.output(0))
                network.remove_parameter(parameter)
            else:
                shapes[name] = list(shape)
        network.reshape(shapes)
        return network
