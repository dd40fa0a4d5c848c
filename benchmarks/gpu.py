"""GPU benchmark: framefleet stylize on CUDA against the GPU model-only ceiling and against the CPU.

For each size (360p, 720p, 1080p by default) it makes a clip with PyAV (moving test pattern and a tone,
H.264 + AAC; no ffmpeg CLI needed) and runs, alternating, each contender `--repeats` times:

- `gpu ceiling bN`: `StyleTransferOp(device="cuda", batch_size=N)` over frames already decoded to RGB in
  RAM, one session, batches back to back; session set-up and a warm-up batch are not timed. The best of the
  batch sizes is the ceiling.
- `gpu stylize`: `process_video(...)` with the op on CUDA (batch 8), `codec: auto` (NVENC where it
  opens) and every frame on its own (`temporal: none`, as the ceiling), set-up included.
- `gpu stylize, libx264` / `gpu stylize, NVDEC` / `gpu stylize, 2 sessions`: one change each;
  `gpu stylize, blend`: with flicker removal, what `framefleet stylize --device cuda` does by default.
- `cpu stylize`: the same on the CPU (one session per core), on a clip of `--cpu-frames` frames only.
- `identity transcode`: no model, decode and encode only (libx264): what the machine's CPU side can feed.

Each end-to-end row also gives its steady rate: frames over time between the outputs that complete 25% and
95% of the clip (set-up, the pipeline's filling and the encoder's flush left out), the figure a long video
approaches. Prints one table (median fps, the fraction of the ceiling, GPU over CPU) and writes JSON. Timings never go
into tests. `benchmarks/gpu_check.sh` runs it after the GPU tests.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import numpy as np
from common import (
    DEFAULT_RESULTS,
    NAMED_SIZES,
    OutputClock,
    load_average,
    log,
    machine_info,
    print_table,
    write_results,
)

from framefleet.ops import Device, IdentityOp, StyleTransferOp
from framefleet.pipeline import Pipeline
from framefleet.processing.batch import FrameBatch
from framefleet.processing.streaming import process_video
from framefleet.video import EncodeOptions, VideoReader
from framefleet.video.synth import ClipSpec, write_clip

GPU_BATCH = 8


def make_clip(path: Path, width: int, height: int, frames: int) -> None:
    write_clip(path, ClipSpec(width=width, height=height, frames=frames, rate=Fraction(25), audio=("aac",),
                              gop=50, bframes=2, time_base=Fraction(1, 12800)))


def decoded(path: Path, limit: int) -> np.ndarray:
    with VideoReader(path) as reader:
        frames = []
        for _, rgb in reader.frames():
            frames.append(rgb)
            if len(frames) == limit:
                break
    return np.stack(frames)


def ceiling(frames: np.ndarray, batch_size: int, style: str, device: str) -> dict[str, Any]:
    op = StyleTransferOp(style=style, device=device, batch_size=batch_size)
    op.setup(Device(kind=device))
    try:
        op.process(FrameBatch(frames[:batch_size], np.zeros(min(batch_size, len(frames)), np.int64)))
        t0 = time.perf_counter()
        for i in range(0, len(frames), batch_size):
            chunk = frames[i:i + batch_size]
            op.process(FrameBatch(chunk, np.arange(len(chunk), dtype=np.int64)))
        seconds = time.perf_counter() - t0
    finally:
        op.teardown()
    return {"frames": len(frames), "seconds": seconds}


def stylize(path: Path, out: Path, style: str | None, *, device: str, codec: str = "auto", hw_decode: bool = False,
            sessions: int | None = None, temporal: str = "none") -> dict[str, Any]:
    """framefleet's stylize (`style` None: the identity op, no model) of `path`, timed."""
    op = (IdentityOp() if style is None
          else StyleTransferOp(style=style, device=device, batch_size=GPU_BATCH if device == "cuda" else 4))
    codec = codec if device == "cuda" and style is not None else "libx264"
    clock = OutputClock()
    t0 = time.perf_counter()
    result = process_video(path, out, Pipeline.of([op], encode=EncodeOptions(codec=codec), temporal=temporal), hw_decode=hw_decode,
                           sessions=sessions, progress=clock)
    return {"frames": result.frames, "seconds": time.perf_counter() - t0, "steady_fps": clock.steady_fps(),
            "decoder": result.decoder,
            "encoder": result.encoder, "sessions": result.sessions,
            "breakdown": {"decode": result.decode_seconds, "ops_summed": result.ops_seconds,
                          "encode_and_convert": result.encode_seconds}}


def median_fps(runs: list[dict[str, Any]]) -> float:
    return statistics.median(r["frames"] / r["seconds"] for r in runs)


def median_steady(runs: list[dict[str, Any]]) -> float | None:
    rates = [r["steady_fps"] for r in runs if r.get("steady_fps")]
    return statistics.median(rates) if rates else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="360p,720p,1080p")
    parser.add_argument("--frames", type=int, default=250, help="frames per clip (default 250: 10 s at 25 fps)")
    parser.add_argument("--cpu-frames", type=int, default=64,
                        help="frames the CPU contender stylizes (enough to keep every core's session busy)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--style", default="7")
    parser.add_argument("--contenders", default=None, help="semicolon-separated subset of the rows (default: all)")
    parser.add_argument("--device", default="cuda", help="where the 'gpu' rows run (cpu: a smoke test of this script)")
    parser.add_argument("--output", type=Path, default=DEFAULT_RESULTS / f"gpu-{time.strftime('%Y%m%dT%H%M%S')}.json")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    info = machine_info()
    load_before = load_average()
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="framefleet-gpu-bench-") as tmp:
        work = Path(tmp)
        for label in args.sizes.split(","):
            width, height = NAMED_SIZES[label]
            clip, short = work / f"{label}.mp4", work / f"{label}-short.mp4"
            log(f"{label}: making clips ({args.frames} frames)")
            make_clip(clip, width, height, args.frames)
            make_clip(short, width, height, args.cpu_frames)
            frames = decoded(clip, 96)
            contenders: dict[str, Callable[[], dict[str, Any]]] = {
                "gpu ceiling b4": lambda f=frames: ceiling(f, 4, args.style, args.device),
                "gpu ceiling b8": lambda f=frames: ceiling(f, 8, args.style, args.device),
                "gpu stylize": lambda: stylize(clip, work / "a.mp4", args.style, device=args.device),
                "gpu stylize, libx264": lambda: stylize(clip, work / "b.mp4", args.style, device=args.device,
                                                        codec="libx264"),
                "gpu stylize, NVDEC": lambda: stylize(clip, work / "c.mp4", args.style, device=args.device,
                                                      hw_decode=True),
                "gpu stylize, 2 sessions": lambda: stylize(clip, work / "d.mp4", args.style, device=args.device,
                                                           sessions=2),
                "gpu stylize, blend": lambda: stylize(clip, work / "f.mp4", args.style, device=args.device,
                                                      temporal="blend"),
                "cpu stylize": lambda: stylize(short, work / "e.mp4", args.style, device="cpu", codec="libx264"),
                "identity transcode": lambda: stylize(clip, work / "g.mp4", None, device="cpu"),
            }
            if args.contenders:
                contenders = {name: run for name, run in contenders.items() if name in args.contenders.split(";")}
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
            names = list(contenders)
            for repeat in range(args.repeats):
                order = names[repeat % len(names):] + names[:repeat % len(names)]
                for name in order:
                    runs[name].append(contenders[name]())
                    log(f"{label} {name}: {runs[name][-1]['frames'] / runs[name][-1]['seconds']:.1f} fps")
            raw[label] = runs
    rows, summary = [], {}
    for label, runs in raw.items():
        fps = {name: median_fps(r) for name, r in runs.items()}
        steady = {name: median_steady(r) for name, r in runs.items()}
        best = max(value for name, value in fps.items() if name.startswith("gpu ceiling"))
        gpu = fps.get("gpu stylize")
        summary[label] = {"fps": fps, "steady_fps": steady, "ceiling": best,
                          "fraction_of_ceiling": gpu / best if gpu else None,
                          "steady_fraction_of_ceiling": steady["gpu stylize"] / best if steady.get("gpu stylize") else None,
                          "gpu_over_cpu": gpu / fps["cpu stylize"] if gpu and "cpu stylize" in fps else None}
        for name, value in fps.items():
            extra = runs[name][-1]
            note = ""
            if name.startswith("gpu stylize"):
                note = f"{value / best:.2f} of ceiling; {extra['decoder']} decode, {extra['encoder']}"
                if steady[name]:
                    note = f"steady {steady[name] / best:.2f} of ceiling; " + note
            elif name == "cpu stylize" and gpu:
                note = f"GPU stylize {gpu / value:.1f}x faster; {extra['sessions']} sessions"
            rows.append([label, name, f"{value:.1f}", f"{steady[name]:.1f}" if steady[name] else "", note])
    print_table(f"\nframefleet on {info['cpu_model']} + GPU ({args.repeats} repeats, medians)",
                ["size", "contender", "fps", "steady fps", "note"], rows, right={2, 3})
    write_results(args.output, {"machine": info, "load_before": load_before, "load_after": load_average(),
                                "args": {k: str(v) for k, v in vars(args).items()}, "summary": summary,
                                "raw": raw}, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
