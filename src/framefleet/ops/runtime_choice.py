"""Which runtime and precision a model runs on: what the user asked, or under `auto` the fastest that passes
the quality gate on this machine.

Every candidate (onnxruntime fp32; OpenVINO fp32 and, where the CPU has it, bf16; OpenVINO int8 for models
whose op gives calibration inputs) runs the model on the gate frames (`gate_frames`) and is compared with
onnxruntime fp32: PSNR and mean absolute difference, in levels of 255 over the reference output's range
(pixel levels for a uint8 image output). A candidate must pass its precision's `GATES`; `auto` takes the
fastest that passes, except that a choice of lower precision (bf16 below fp32, int8 below both) must run
at least its `MIN_GAIN` times the best choice above it: quality is not given away for a few per cent. The profile is kept in framefleet's
cache per model, threads and machine (CPU model, runtime versions), so a machine measures it once. A model
OpenVINO cannot compile falls back to onnxruntime fp32 under `auto`, with the reason logged; asked for
explicitly it is a one-line error.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import numpy as np

from framefleet.errors import DeviceUnavailableError, OpError, OptionError
from framefleet.files.temporary import write_text_atomically
from framefleet.ops.base import Device
from framefleet.ops.model_engines import open_engine
from framefleet.ops.quantize import FORMAT as QUANTIZE_FORMAT
from framefleet.ops.quantize import Calibration
from framefleet.ops.runtimes import (
    INSTALL_HINT,
    REFERENCE,
    Choice,
    Engine,
    EngineError,
    check_choice,
    cpu_has_int8,
    cpu_name,
    cpu_precisions,
    import_openvino,
    openvino_installed,
    require_openvino,
)
from framefleet.util.cache import cache_dir

log = logging.getLogger(__name__)

PROFILE_FORMAT = 3
"""Bumped when the profile's measurement changes, so older cached profiles are measured afresh."""
TIMED_RUNS = 3
GATE_SIZE = (640, 360)
"""Width and height of the gate frames (the rate of a model at this size ranks runtimes as at 720p)."""


@dataclass(frozen=True)
class Gate:
    """The least quality a precision must keep against onnxruntime fp32."""

    max_mad: float
    """Mean absolute difference, levels of 255."""
    min_psnr: float
    """dB."""


GATES = {"fp32": Gate(max_mad=0.1, min_psnr=50.0), "bf16": Gate(max_mad=1.0, min_psnr=35.0),
         "int8": Gate(max_mad=2.5, min_psnr=35.0)}
"""Measured on framefleet's style model (docs/benchmarks.md, runtimes and int8): OpenVINO fp32 0.002 levels; bf16
0.3-0.7 levels on the gate frames and 0.3-1.4 on real footage, by style; int8 about 2 levels on the gate frames."""
PRECISION_RANK = ("fp32", "bf16", "int8")
"""Highest precision first."""
MIN_GAIN = {"bf16": 1.2, "int8": 1.5}
"""How much faster a lower precision must run than the best higher one for `auto` to take it. int8's cost on
real footage is larger than its gate shows (docs/benchmarks.md, int8: 2-6 levels, 1.1-1.6x the flicker, dark
and fading frames 20-50 levels off), so it must pay for itself with a large gain."""


@dataclass(frozen=True)
class Trial:
    """One candidate on the gate frames: runs per second, quality against the reference, and why it was
    rejected (None: it passed)."""

    choice: str
    rate: float
    psnr: float
    mad: float
    rejected: str | None = None


def gate_frames(count: int = 2) -> np.ndarray:
    """count x 360 x 640 x 3 uint8 frames every gate runs on: framefleet's synthetic picture with a fixed
    fine-grained texture. The texture matters: on the bare picture's flat fields the style model's bf16
    error is 2-18x what it is on real footage, with it the same (docs/benchmarks.md, runtimes)."""
    return textured_frames(count, seed=25, start=0)


def textured_frames(count: int, *, seed: int, start: int) -> np.ndarray:
    """count x 360 x 640 x 3 uint8 frames: the synthetic picture from frame `start` on, 24 frames apart,
    with a fine-grained texture drawn from `seed`."""
    from PIL import Image, ImageFilter

    from framefleet.video.synth import picture

    width, height = GATE_SIZE
    noise = np.random.default_rng(seed).normal(128.0, 40.0, (height, width)).clip(0, 255).astype(np.uint8)
    texture = np.asarray(Image.fromarray(noise).filter(ImageFilter.GaussianBlur(1.5)), dtype=np.float32) - 128.0
    return np.stack([(picture(start + index * 24, width, height) + 1.5 * texture[..., None]).clip(0, 255)
                     .astype(np.uint8) for index in range(count)])


def compare(reference: list[np.ndarray], candidate: list[np.ndarray]) -> tuple[float, float]:
    """(PSNR dB, mean absolute difference) of `candidate`'s outputs against `reference`'s, both in levels of
    255 over the reference's value range (uint8 outputs: pixel levels)."""
    errors = []
    for ref, out in zip(reference, candidate):
        ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
        span = 255.0 if ref.dtype == np.uint8 else float(ref64.max() - ref64.min()) or 1.0
        errors.append(np.abs(out64 - ref64).ravel() * (255.0 / span))
    diff = np.concatenate(errors)
    mse = float(np.mean(diff ** 2))
    psnr = 10 * np.log10(255.0 ** 2 / mse) if mse > 0 else float("inf")
    return float(psnr), float(diff.mean())


def select_engine(model: Path | bytes, device: Device, runtime: str, precision: str,
                  sample: Callable[[], dict[str, np.ndarray]], what: str,
                  calibration: Calibration | None = None) -> Engine:
    """The engine to run `model` (`what` names it in messages) on `device`: the runtime and precision asked
    for, or under auto the fastest candidate that passes the gate on `sample()`'s inputs. int8 is a
    candidate only with `calibration` (the inputs it is quantized on)."""
    check_choice(runtime, precision)
    if precision == "int8" and calibration is None:
        raise OptionError(f"--precision int8: {what} cannot be quantized (int8 is for the built-in styles); "
                          "use --precision auto, fp32 or bf16")
    candidates = _candidates(runtime, precision, device, int8=calibration is not None)
    if len(candidates) == 1 and precision != "int8":
        try:
            return open_engine(model, device, candidates[0])
        except EngineError as exc:
            raise OpError(f"{what}: {candidates[0].runtime} cannot compile it ({exc}); "
                          "use --runtime onnxruntime") from None
    trials = [t for t in _profile(model, device, candidates, sample, what, calibration)
              if t.choice in {str(c) for c in candidates}]
    passed = [t for t in trials if t.rejected is None]
    if not passed:  # never under auto: there onnxruntime fp32 is a candidate and the reference
        reasons = "; ".join(f"{t.choice} rejected: {t.rejected}" for t in trials)
        fix = "use --precision auto" if precision == "int8" else "use --runtime onnxruntime"
        raise OpError(f"{what}: --runtime {runtime} --precision {precision}: {reasons}; {fix}")
    chosen = next(c for c in candidates if str(c) == best_trial(passed).choice)
    try:
        return open_engine(model, device, chosen, calibration)
    except EngineError as exc:
        log.warning("%s: %s cannot compile it (%s); running onnxruntime fp32", what, chosen, exc)
        return open_engine(model, device, REFERENCE)


def best_trial(passed: list[Trial]) -> Trial:
    """The fastest of `passed`, where a lower precision must run its `MIN_GAIN` times the best higher one."""
    best: Trial | None = None
    for precision in PRECISION_RANK:
        trials = [t for t in passed if t.choice.endswith(f" {precision}")]
        if not trials:
            continue
        fastest = max(trials, key=lambda t: t.rate)
        if best is None or fastest.rate >= MIN_GAIN[precision] * best.rate:
            best = fastest
    assert best is not None, "no trial passed"
    return best


def _candidates(runtime: str, precision: str, device: Device, *, int8: bool) -> list[Choice]:
    """The choices `runtime` and `precision` allow on `device` (fully explicit: one); `int8`: whether the
    model can be quantized."""
    if runtime == "openvino":
        require_openvino()
    if device.kind == "cuda":  # the GPU path stays on onnxruntime CUDA
        if runtime == "openvino" or precision in ("bf16", "int8"):
            raise DeviceUnavailableError(f"--runtime {runtime} --precision {precision}: on CUDA framefleet runs "
                                         "onnxruntime fp32; use --device cpu")
        return [REFERENCE]
    choices = [REFERENCE] if runtime in ("auto", "onnxruntime") else []
    if runtime in ("auto", "openvino") and openvino_installed():
        choices += [Choice("openvino", p) for p in cpu_precisions()]
        if int8 and cpu_has_int8():
            choices.append(Choice("openvino", "int8"))
    allowed = [c for c in choices if precision in ("auto", c.precision)]
    if not allowed:  # bf16 or int8 asked for, with OpenVINO missing or a CPU without it
        reason = INSTALL_HINT if not openvino_installed() else f"this CPU ({cpu_name()}) has no {precision}"
        raise DeviceUnavailableError(f"--precision {precision}: no runtime here runs it ({reason})")
    return allowed


def _profile(model: Path | bytes, device: Device, candidates: list[Choice],
             sample: Callable[[], dict[str, np.ndarray]], what: str, calibration: Calibration | None) -> list[Trial]:
    """The trials of `candidates` (and the reference) on this machine: from the cache, else measured once
    (one process at a time: a lock file keeps parallel workers from timing each other)."""
    data = model if isinstance(model, bytes) else Path(model).read_bytes()
    feeds = sample()
    digest = hashlib.sha256(data)
    for name in sorted(feeds):  # the inputs too: a style's weights change its error
        digest.update(name.encode() + np.ascontiguousarray(feeds[name]).tobytes())
    names = sorted({str(c) for c in [REFERENCE, *candidates]})
    gates = [asdict(GATES[n.split()[1]]) for n in names]  # a verdict is kept only under the gate that gave it
    key = hashlib.sha256(json.dumps([digest.hexdigest(), device.threads, names, _machine(), gates,
                                     PROFILE_FORMAT, QUANTIZE_FORMAT]).encode()).hexdigest()[:20]
    target = cache_dir("runtimes") / f"profile-{key}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            trials = [Trial(**t) for t in json.loads(target.read_text())]
            log.info("%s: runtime profile from %s", what, target)
        except (OSError, ValueError, TypeError):
            trials = _measure(data, device, [REFERENCE, *[c for c in candidates if c != REFERENCE]], feeds, calibration)
            write_text_atomically(target, json.dumps([asdict(t) for t in trials], indent=1))
    for trial in trials:
        log.log(logging.WARNING if trial.rejected and "cannot" in trial.rejected else logging.INFO,
                "%s: %s %.2f runs/s, PSNR %.1f dB, MAD %.3f levels%s", what, trial.choice, trial.rate, trial.psnr,
                trial.mad, f"; rejected: {trial.rejected}" if trial.rejected else "")
    return trials


def _measure(model: bytes, device: Device, choices: list[Choice], feeds: dict[str, np.ndarray],
             calibration: Calibration | None) -> list[Trial]:
    """Run each choice on `feeds` (the first is the reference): median rate of `TIMED_RUNS` after two warm
    runs, and its quality against the reference's outputs."""
    trials, reference = [], None
    for choice in choices:
        try:
            engine = open_engine(model, device, choice, calibration)
        except EngineError as exc:
            reason = str(exc) if str(exc).startswith("cannot quantize") else f"cannot compile it: {exc}"
            trials.append(Trial(str(choice), 0.0, 0.0, float("inf"), reason))
            continue
        outputs = engine.run(None, feeds)
        engine.run(None, feeds)  # the same inputs again: OpenVINO compiles its fixed-shape copy, which runs the rest
        times = []
        for _ in range(TIMED_RUNS):
            started = time.perf_counter()
            engine.run(None, feeds)
            times.append(time.perf_counter() - started)
        reference = reference if reference is not None else outputs
        psnr, mad = compare(reference, outputs)
        gate = GATES[choice.precision]
        rejected = (None if mad <= gate.max_mad and psnr >= gate.min_psnr
                    else f"fails the {choice.precision} gate (MAD <= {gate.max_mad}, PSNR >= {gate.min_psnr} dB)")
        trials.append(Trial(str(choice), 1.0 / statistics.median(times), min(psnr, 999.0), mad, rejected))
    return trials


@cache
def _machine() -> list[str]:
    """What a profile depends on besides the model: the CPU and the runtimes' versions."""
    import onnxruntime

    versions = [onnxruntime.__version__]
    if openvino_installed():
        versions.append(import_openvino().__version__)
    return [cpu_name() or "unknown CPU", *versions]
