"""Fit a video's processing into the machine's memory before any work starts.

A style-transfer session's peak grows with the pixels its model sees (the activations of a batch), so a 4K
clip at full size needs about 11 GB per session. `fit_stylize` estimates a `stylize` run's peak from the
probe (the frame size) and the pipeline (the model's input size, sessions, batch size), compares it with
the memory this machine has free, and adapts what the user left to the defaults: first fewer sessions
(the same output, slower), then a smaller inference size (`max_size`, the largest of `SIZE_LADDER` and the
op's own values that fits). It says so in one warning. What the user fixed (`--max-size`, `--sessions`)
and does not fit is refused with one `LimitError` line instead. `fit_local_workers` does what can be
done for a job before its videos are probed: as many workers as fit, each capped at its share of the
memory. The figures are measured (docs/benchmarks.md, memory); `FRAMEFLEET_MEMORY_BUDGET_MB` sets the
memory to fit in instead of the machine's free memory.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

from framefleet.engines.local import local_worker_count
from framefleet.errors import LimitError, OptionError
from framefleet.ops.base import Op
from framefleet.ops.runtimes import cpu_precisions, openvino_installed
from framefleet.ops.style import StyleTransferOp
from framefleet.pipeline import Pipeline
from framefleet.processing.streaming import Parallelism
from framefleet.settings import EngineOptions

log = logging.getLogger(__name__)

MIB = 1 << 20
BUDGET_ENV = "FRAMEFLEET_MEMORY_BUDGET_MB"
"""Environment variable: the memory (MiB) a run may use, instead of what the machine has available."""
HEADROOM = 0.85
"""Share of the machine's available memory a run may plan to use (the rest: other processes, estimate
error)."""
PROCESS_BYTES = 300 * MIB
"""Interpreter, numpy, onnxruntime, PyAV and FFmpeg, before any frame."""
SESSION_BYTES = 64 * MIB
"""One model session's weights and buffers, whatever the frame size."""
MODEL_PIXEL_BYTES = 320
"""Peak bytes per pixel the model sees, per frame of a batch (the network's activations), on onnxruntime fp32
(measured about 300) and on OpenVINO bf16 (about 220)."""
OPENVINO_FP32_PIXEL_BYTES = 440
"""The same on OpenVINO fp32 (measured about 420: 1.4x onnxruntime's), which `--runtime auto` may choose."""
SCALED_PIXEL_BYTES = 32
"""Bytes per frame pixel, per frame of a batch, in a session that scales frames to and from the model's
size."""
PIPELINE_PIXEL_BYTES = 64
"""Bytes per frame pixel for the decoder, the encoder and the temporal blend."""
QUEUED_PIXEL_BYTES = 8
"""Bytes per frame pixel of each frame in flight between decoder, sessions and encoder (YUV, RGB copies)."""
SIZE_LADDER = (2560, 1920, 1440, 1280, 960, 720, 480, 360)
"""Inference sizes (longest side) tried, largest first, when the frame's own size does not fit."""


@dataclass(frozen=True)
class Fit:
    """What a run will use: its pipeline (perhaps at a smaller `max_size`), sessions and estimated peak."""

    pipeline: Pipeline
    sessions: int
    needed: int
    """Estimated peak bytes."""


def available_bytes() -> int:
    """Memory this process may plan to use: `FRAMEFLEET_MEMORY_BUDGET_MB` when set, else `HEADROOM` of the
    smaller of the machine's available memory (MemAvailable) and what its cgroup's limit leaves."""
    text = os.environ.get(BUDGET_ENV, "").strip()
    if text:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise OptionError(f"{BUDGET_ENV}={text!r}: give the memory a run may use in MiB, e.g. 8192")
        return value * MIB
    free = [_meminfo_available(), _cgroup_left()]
    known = [value for value in free if value is not None]
    if not known:
        known = [os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")]
    return int(min(known) * HEADROOM)


def estimate(pipeline: Pipeline, width: int, height: int, sessions: int) -> int:
    """Estimated peak bytes of processing width x height frames with `sessions` copies of the op chain."""
    frame = width * height
    batch = max(op.batch_size for op in pipeline.ops)
    chain = sum(_session_bytes(op, width, height) for op in pipeline.ops)
    queued = (2 * sessions + 1) * batch  # the in-flight queue of `FrameProcessor`
    return PROCESS_BYTES + sessions * chain + frame * (PIPELINE_PIXEL_BYTES + queued * QUEUED_PIXEL_BYTES)


def fit_stylize(pipeline: Pipeline, width: int, height: int, sessions: int | None, *,
                size_fixed: bool) -> Fit:
    """The pipeline and session count a `stylize` of width x height frames runs with to fit in
    `available_bytes()`: as asked when it fits; else fewer sessions (unless `sessions` was given), then a
    smaller inference size (unless `size_fixed`), logged in one warning. Raises `LimitError` (limit:memory)
    when what the user fixed cannot fit. Only CPU runs with a built-in style (the measured model) are
    fitted: on CUDA the model's memory is the GPU's."""
    plan = Parallelism.choose(pipeline.ops, sessions)
    if plan.device.kind != "cpu" or not _styles(pipeline):
        return Fit(pipeline, plan.sessions, estimate(pipeline, width, height, plan.sessions))
    budget = available_bytes()
    asked = Fit(pipeline, plan.sessions, estimate(pipeline, width, height, plan.sessions))
    if asked.needed <= budget:
        return asked
    counts = [plan.sessions] if sessions is not None else list(range(plan.sessions, 0, -1))
    sizes = [None] if size_fixed else [None, *_smaller_sizes(pipeline, width, height)]
    for size in sizes:
        candidate = pipeline if size is None else _at_size(pipeline, size)
        for count in counts:
            needed = estimate(candidate, width, height, count)
            if needed <= budget:
                fit = Fit(candidate, count, needed)
                log.warning("%s", _adapted(asked, fit, width, height, budget))
                return fit
    least = Fit(candidate, counts[-1], estimate(candidate, width, height, counts[-1]))
    raise LimitError("memory", _refusal(least, width, height, budget, sessions is not None, size_fixed))


def fit_local_workers(options: EngineOptions, pipeline: Pipeline) -> tuple[EngineOptions, Pipeline]:
    """The local workers of a job and their memory caps, fitted to `available_bytes()` before it starts.

    A job's frame sizes are not known yet (each worker probes its own inputs), so this fits what is: each
    worker's footprint before any frame (a process and its op sessions) and its cap. Too many workers for
    that footprint are cut, in one warning (a `--workers` that cannot fit is refused: `LimitError`); the
    default cap (`limits.memory_mb`, not set by the user) is lowered to each worker's share, so a video too
    large for a worker fails as limit:memory instead of the machine's OOM killer ending the job (logged).
    CUDA workers have no cap and are left as they are."""
    if any(op.device == "cuda" for op in pipeline.ops):
        return options, pipeline
    workers, _ = local_worker_count(options, pipeline)
    budget = available_bytes()
    idle = PROCESS_BYTES + SESSION_BYTES * len(pipeline.ops)
    if workers * idle > budget:
        fits = max(1, budget // idle)
        message = (f"{workers} workers need at least ~{_gb(workers * idle)} before any frame, above the "
                   f"{_gb(budget)} available ({BUDGET_ENV} sets it)")
        if options.workers is not None:
            raise LimitError("memory", f"limit:memory: {message}; use --workers {fits} or fewer")
        log.warning("%s: running %d worker%s (set --workers to choose)", message, fits, "s" * (fits != 1))
        workers, options = fits, dataclasses.replace(options, workers=fits)
    limits = pipeline.limits
    share = budget // workers // MIB
    if "memory_mb" in limits.changed() or limits.memory_mb is None or limits.memory_mb <= share:
        return options, pipeline
    log.info("capping each of %d workers at %d MiB, their share of the %s available (set --limit memory_mb "
             "to choose)", workers, share, _gb(budget))
    return options, dataclasses.replace(pipeline, limits=dataclasses.replace(limits, memory_mb=share))


def _session_bytes(op: Op, width: int, height: int) -> int:
    """Peak bytes of one op instance on width x height frames: its weights, its frames' copies, and for a
    built-in style the model's activations (which grow with the model's input size)."""
    if not _is_style(op):
        return SESSION_BYTES + op.batch_size * width * height * SCALED_PIXEL_BYTES
    w, h = op.input_size(width, height)
    scaled = width * height * SCALED_PIXEL_BYTES if (w, h) != (width, height) else 0
    return SESSION_BYTES + op.batch_size * (w * h * _model_pixel_bytes(op) + scaled)


def _model_pixel_bytes(op: StyleTransferOp) -> int:
    """The model's peak bytes per pixel on the runtime `op` will likely run on: OpenVINO fp32 when asked, or
    under `auto` on a CPU without bf16 (where it is `auto`'s usual pick); else onnxruntime's figure, which
    bf16 stays under. (int8 is not measured: taken as onnxruntime's.)"""
    if op.runtime == "onnxruntime" or op.precision in ("bf16", "int8") or not openvino_installed():
        return MODEL_PIXEL_BYTES
    if op.precision == "fp32" and op.runtime == "openvino" or "bf16" not in cpu_precisions():
        return OPENVINO_FP32_PIXEL_BYTES
    return MODEL_PIXEL_BYTES


def _styles(pipeline: Pipeline) -> list[StyleTransferOp]:
    """The pipeline's style transfers with a built-in style: the ops whose model runs at the frame's size."""
    return [op for op in pipeline.ops if _is_style(op)]


def _is_style(op: Op) -> TypeGuard[StyleTransferOp]:
    return isinstance(op, StyleTransferOp) and op.style_image is None


def _smaller_sizes(pipeline: Pipeline, width: int, height: int) -> list[int]:
    """Inference sizes below the frame's longest side (and below the pipeline's own cap), largest first."""
    longest = max(width, height)
    caps = [op.max_size for op in _styles(pipeline) if op.max_size is not None]
    knob_values = {value for op in _styles(pipeline) for knob in op.knobs if knob.name == "max_size"
                   for value in knob.values if value}
    return sorted({s for s in (*SIZE_LADDER, *knob_values) if s < min([longest, *caps])}, reverse=True)


def _at_size(pipeline: Pipeline, size: int) -> Pipeline:
    """The pipeline with its built-in style transfers run at `size` pixels on the longest side."""
    ops = tuple(dataclasses.replace(op, max_size=size) if _is_style(op) else op for op in pipeline.ops)
    return dataclasses.replace(pipeline, ops=ops)


def _inference_size(pipeline: Pipeline, width: int, height: int) -> str:
    """How the model sees width x height frames: "full size", or "max-size N"."""
    styles = _styles(pipeline)
    if all(op.input_size(width, height) == (width, height) for op in styles):
        return "full size"
    return f"max-size {min(op.max_size for op in styles if op.max_size is not None)}"


def _gb(value: int) -> str:
    return f"{value / 1e9:.1f} GB"


def _adapted(asked: Fit, fit: Fit, width: int, height: int, budget: int) -> str:
    changes = []
    if fit.sessions != asked.sessions:
        changes.append(f"{fit.sessions} session{'s' * (fit.sessions != 1)}")
    if fit.pipeline is not asked.pipeline:
        changes.append(f"the model at {_inference_size(fit.pipeline, width, height)}")
    return (f"{width}x{height} at {_inference_size(asked.pipeline, width, height)} with {asked.sessions} "
            f"session{'s' * (asked.sessions != 1)} needs ~{_gb(asked.needed)}, above the {_gb(budget)} "
            f"available: running {' and '.join(changes)} (~{_gb(fit.needed)}; set --max-size or --sessions to "
            "choose)")


def _refusal(least: Fit, width: int, height: int, budget: int, sessions_fixed: bool, size_fixed: bool) -> str:
    """The error for a run that fits in no way left open: `least` is the smallest of those ways."""
    fixed = [flag for flag, given in (("--max-size", size_fixed), ("--sessions", sessions_fixed)) if given]
    fix = (f"lower or drop {' and '.join(fixed)} (framefleet then picks what fits), or free memory" if fixed
           else "free memory, or process a smaller video")
    return (f"limit:memory: {width}x{height} at {_inference_size(least.pipeline, width, height)} with "
            f"{least.sessions} session{'s' * (least.sessions != 1)} needs ~{_gb(least.needed)}, above the "
            f"{_gb(budget)} available ({BUDGET_ENV} sets it); {fix}")


def _meminfo_available() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), in bytes."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_left() -> int | None:
    """What this process's cgroup (v2) limit leaves: memory.max less memory.current (None: no limit)."""
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((root / "memory.current").read_text().strip()))
    except (OSError, ValueError):
        return None
