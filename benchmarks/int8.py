#!/usr/bin/env python3
"""int8 against fp32 and bf16 for framefleet's style model: speed, quality on real footage, a still strip.

Speed, model only: the fused style model (uint8 frames in and out, style 7) on frames of real footage
already in RAM, one engine of one thread per core, batches of 4 (as benchmarks/runtimes.py). Contenders:

  onnxruntime fp32          today's reference
  openvino fp32 / bf16      OpenVINO at the float precisions this CPU runs
  openvino int8             `--precision int8` as framefleet runs it: the model quantized by `ops.quantize`
                            (QDQ, per-channel weights, the first three convolutions left in float),
                            calibrated on framefleet's textured frames, bf16 (else fp32) around int8
  openvino int8, all convs  every convolution in int8, the same calibration (the recipe not taken)
  openvino int8, fp32 rest  framefleet's int8 model with fp32 around the convolutions: what a CPU with
                            VNNI but no bf16 runs under --precision int8
  onnxruntime int8          framefleet's int8 model on onnxruntime

Quality, on every clip in ../shared/videos with at least 8 frames, fitted within 640 px: 16 consecutive
frames from the clip's middle through each precision, against onnxruntime fp32 on the same frames: PSNR,
mean absolute difference (levels of 255), the worst frame's MAD, and the flicker ratio (Lai et al.'s
warping error of the precision's frames over fp32's, along the input's motion; 1.00 = as steady). Then 8
frames spread over the whole clip, its first included (fades from black live there): the worst frame's MAD.

The strip: one frame of bigbuckbunny at 1280 x 720 through fp32, bf16 and int8, scaled down, with 1:1 crops
and the difference from fp32 magnified 8x (docs/images/precision-strip.jpg).

    flock /tmp/framefleet-bench.lock .venv/bin/python benchmarks/int8.py            # ~8 min on 2 cores
    .venv/bin/python benchmarks/int8.py --quick                                     # smoke test
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
from common import DEFAULT_RESULTS, ROOT, log, parse_size, print_table, write_results
from PIL import Image, ImageDraw
from runtimes import Contender, alternate, footage, runtime_machine

from framefleet.ops import fused
from framefleet.ops.base import Device
from framefleet.ops.model_engines import open_engine
from framefleet.ops.quantize import Calibration, cached_int8, quantize_int8
from framefleet.ops.runtime_choice import compare
from framefleet.ops.runtimes import REFERENCE, Choice, cpu_precisions
from framefleet.ops.style import KEEP_FLOAT, MIN_SIDE, StyleTransferOp, fused_multistyle, parse_style
from framefleet.processing.images import fit_within
from framefleet.processing.streaming import available_cores
from framefleet.processing.temporal import FlowEstimator, pair_error
from framefleet.video.synth import ClipSpec, write_clip

VIDEOS = ROOT.parent / "shared" / "videos"
STRIP = ROOT / "docs" / "images" / "precision-strip.jpg"
STYLE = "7"


def models() -> dict[str, tuple[bytes, str]]:
    """The model bytes and float precision of each int8 variant, and the float models."""
    model = fused_multistyle(False)
    op = StyleTransferOp(style=STYLE)
    best_float = cpu_precisions()[-1]
    ours = cached_int8(model, Calibration(op.calibration_feeds, KEEP_FLOAT))
    return {"onnxruntime fp32": (model, "ort"), "openvino fp32": (model, "fp32"),
            **({"openvino bf16": (model, "bf16")} if "bf16" in cpu_precisions() else {}),
            "openvino int8": (ours, best_float),
            "openvino int8, all convs": (quantize_int8(model, op.calibration_feeds()), best_float),
            **({"openvino int8, fp32 rest": (ours, "fp32")} if best_float != "fp32" else {}),
            "onnxruntime int8": (ours, "ort")}


def choice_of(precision: str) -> Choice:
    return REFERENCE if precision == "ort" else Choice("openvino", precision)


def speed(sizes: list[tuple[str, int, int]], frames_per_size: dict[str, int], repeats: int, fallback: Path,
          variants: dict[str, tuple[bytes, str]]) -> list[dict[str, Any]]:
    """Model-only rate of every variant at each size, alternating rounds."""
    rows = []
    for label, width, height in sizes:
        frames = footage(width, height, frames_per_size[label], fallback)
        contenders = [Contender(name, data, choice_of(precision), available_cores())
                      for name, (data, precision) in variants.items()]
        rows += alternate(label, contenders, frames, repeats)
    return rows


def clip_frames(path: Path, count: int, spread: bool) -> np.ndarray:
    """`count` frames of a clip fitted within 640 px (even sides): consecutive from its middle, or spread
    over the whole clip from its first frame."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        width, height = fit_within(stream.codec_context.width, stream.codec_context.height, 640)
        size = {"width": width - width % 2, "height": height - height % 2}
        frames = [f.to_ndarray(format="rgb24", **size) for f in container.decode(video=0)]
    if spread:
        return np.stack(frames[::max(1, len(frames) // count)][:count])
    start = max(0, len(frames) // 2 - count // 2)
    return np.stack(frames[start:start + count])


def stylize(engine: Any, frames: np.ndarray) -> np.ndarray:
    """`frames` through a fused-model engine, one at a time."""
    height, width = frames.shape[1:3]
    feeds = {fused.PADS: fused.reflect_pads(height, width, 4, MIN_SIDE), "style_weights": parse_style(STYLE)}
    return np.concatenate([engine.run(None, {**feeds, fused.FRAMES: f[None]})[0] for f in frames])


def flicker(inputs: np.ndarray, outputs: np.ndarray) -> float:
    """Mean warping error of `outputs` along the motion of `inputs`."""
    estimator = FlowEstimator()
    return statistics.fmean(pair_error(estimator, (inputs[i - 1], inputs[i]), (outputs[i - 1], outputs[i]), i).error
                            for i in range(1, len(inputs)))


def quality(clips: list[Path], count: int, engines: dict[str, Any]) -> list[dict[str, Any]]:
    """Each precision against onnxruntime fp32 on every clip."""
    rows = []
    for clip in clips:
        log(f"quality: {clip.name}")
        run, spread = clip_frames(clip, count, spread=False), clip_frames(clip, max(8, count // 2), spread=True)
        outputs = {name: (stylize(engine, run), stylize(engine, spread)) for name, engine in engines.items()}
        reference = outputs["onnxruntime fp32"]
        base = flicker(run, reference[0])
        for name, (styled, styled_spread) in outputs.items():
            if name == "onnxruntime fp32":
                continue
            psnr, mad = compare([reference[0]], [styled])
            worst = max(compare([r], [s])[1] for r, s in zip(reference[0], styled))
            worst_spread = max(compare([r], [s])[1] for r, s in zip(reference[1], styled_spread))
            rows.append({"clip": clip.name, "size": f"{run.shape[2]}x{run.shape[1]}", "contender": name,
                         "psnr": psnr, "mad": mad, "worst_frame_mad": worst, "flicker_ratio": flicker(run, styled) / base,
                         "spread_worst_frame_mad": worst_spread, "frames": len(run)})
    return rows


def strip(engines: dict[str, Any], output: Path) -> dict[str, Any]:
    """fp32, bf16 and int8 on one 1280 x 720 frame, side by side: scaled, 1:1 crops, differences x 8."""
    frame = footage(1280, 720, 24, Path("unused"))[16]
    styled = {name: stylize(engine, frame[None])[0] for name, engine in engines.items()}
    tile, crop = (480, 270), (slice(250, 520), slice(560, 1040))
    columns = list(styled)
    sheet = Image.new("RGB", (tile[0] * len(columns), 24 + tile[1] * 3), "white")
    draw = ImageDraw.Draw(sheet)
    figures = {}
    for index, name in enumerate(columns):
        psnr, mad = compare([styled["onnxruntime fp32"]], [styled[name]])
        figures[name] = {"psnr": psnr, "mad": mad}
        label = name if name == "onnxruntime fp32" else f"{name}: MAD {mad:.2f}, PSNR {psnr:.1f} dB"
        draw.text((index * tile[0] + 6, 6), label, fill="black")
        sheet.paste(Image.fromarray(styled[name]).resize(tile, Image.LANCZOS), (index * tile[0], 24))
        sheet.paste(Image.fromarray(styled[name][crop]), (index * tile[0], 24 + tile[1]))
        difference = np.abs(styled[name].astype(np.int16) - styled["onnxruntime fp32"].astype(np.int16)) * 8
        shown = frame[crop] if name == "onnxruntime fp32" else difference[crop].clip(0, 255).astype(np.uint8)
        sheet.paste(Image.fromarray(shown), (index * tile[0], 24 + 2 * tile[1]))
        for row, text in ((1, "1:1 crop"), (2, "source, 1:1" if name == "onnxruntime fp32" else "|difference| x 8")):
            draw.rectangle((index * tile[0], 24 + row * tile[1], index * tile[0] + 110, 40 + row * tile[1]), fill="white")
            draw.text((index * tile[0] + 4, 26 + row * tile[1]), text, fill="black")
    output.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(output, quality=88)
    log(f"wrote {output}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 round, tiny counts (not results)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--sizes", default="360p,720p", help="comma-separated sizes (default 360p,720p)")
    parser.add_argument("--strip", type=Path, default=STRIP, help=f"the still strip (default {STRIP})")
    parser.add_argument("--speed-only", action="store_true", help="model-only rates only (no quality, no strip)")
    parser.add_argument("--output", type=Path, default=DEFAULT_RESULTS / "int8.json")
    args = parser.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    repeats = 1 if args.quick else args.repeats
    frames = {label: (4 if args.quick else (16 if height <= 480 else 8)) for label, _, height in sizes}
    started = time.perf_counter()
    machine = runtime_machine()
    fallback = DEFAULT_RESULTS / "int8-fallback.mp4"
    if not VIDEOS.is_dir():
        fallback.parent.mkdir(parents=True, exist_ok=True)
        write_clip(fallback, ClipSpec(width=1280, height=720, frames=48))
    variants = models()
    rates = speed(sizes, frames, repeats, fallback, variants)
    shown = [n for n in ("onnxruntime fp32", "openvino bf16", "openvino int8", "openvino int8, all convs") if n in variants]
    engines = {name: open_engine(variants[name][0], Device(threads=available_cores()), choice_of(variants[name][1]))
               for name in shown}
    clips = sorted(p for p in VIDEOS.glob("*") if p.suffix in (".mp4", ".webm", ".ts", ".avi", ".mov")) if VIDEOS.is_dir() else []
    clips = [c for c in clips if "two_frames" not in c.name and "video_90" not in c.name]  # 2 and 3 frames
    clips = [] if args.speed_only else clips[:2] if args.quick else clips
    scores = quality(clips, 4 if args.quick else 16, engines)
    figures = strip({n: engines[n] for n in shown[:3]}, args.strip) if VIDEOS.is_dir() and not args.speed_only else {}
    print_table("\nmodel only (frames in RAM, one engine per core, medians)",
                ["size", "contender", "fps", "x onnxruntime fp32", "PSNR dB", "MAD levels"],
                [[r["size"], r["contender"], f"{r['fps']:.2f}", f"{r['ratio']:.2f}x",
                  "ref" if r["contender"] == "onnxruntime fp32" else f"{r['psnr']:.1f}", f"{r['mad']:.2f}"]
                 for r in rates], right={2, 3, 4, 5})
    if scores:
        print_table("\nquality against onnxruntime fp32 (16 frames from each clip's middle; worst of 8 spread frames)",
                    ["clip", "size", "contender", "PSNR dB", "MAD", "worst frame", "flicker ratio", "worst spread"],
                    [[r["clip"], r["size"], r["contender"], f"{r['psnr']:.1f}", f"{r['mad']:.2f}",
                      f"{r['worst_frame_mad']:.2f}", f"{r['flicker_ratio']:.2f}", f"{r['spread_worst_frame_mad']:.1f}"]
                     for r in scores], right={3, 4, 5, 6, 7})
    write_results(args.output, {"date": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine,
                                "repeats": repeats, "quick": args.quick, "model_only": rates, "quality": scores,
                                "strip": {"path": str(args.strip), **figures}}, time.perf_counter() - started)


if __name__ == "__main__":
    main()
