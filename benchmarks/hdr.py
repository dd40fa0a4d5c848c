"""HDR input: what rendering HDR for an SDR model costs, per frame and end to end, and the still strip.

An HDR10 clip (PQ, BT.2020, HEVC Main 10, 1,000 cd/m2 mastering) and an HLG clip are graded from a real SDR
clip (the shared 1080p `mediabunny__hevc.ts` when ../shared/videos holds it, else a synthetic picture): SDR
light placed at HDR reference white (203 cd/m2) and its brightest tenth stretched towards 1,000 cd/m2. Then:

1. per 1080p frame: the decoder's frame to 8-bit RGB as an SDR video's (rgb24), against the same frame
   rendered as an SDR screen shows it (rgb48, then `ToSdr`), one thread, alternating rounds, medians;
2. `framefleet stylize` end to end (the whole command) on the HDR clip against the SDR clip it was graded
   from, alternating runs, medians: the cost a user sees;
3. the strip in docs/images/hdr-strip.jpg: the HDR input as an SDR screen shows it, the stylized output as
   framefleet made it before (the model painting PQ code values, written under PQ tags) shown by a player
   that honours the tags and by one that ignores them, and the stylized output now.

    .venv/bin/python benchmarks/hdr.py [--frames 12] [--repeats 3] [--strip docs/images/hdr-strip.jpg]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import ClassVar

import av
import numpy as np
from common import DEFAULT_RESULTS, ROOT, log, machine_info, print_table, write_results
from PIL import Image, ImageDraw

from framefleet.ops.style import StyleTransferOp
from framefleet.pipeline import Pipeline
from framefleet.processing.streaming import process_video
from framefleet.video.frames import frame_to_rgb, thread_reformatter
from framefleet.video.synth import HDR_MASTERING, HDR_MAX_CLL, picture
from framefleet.video.tone_map import (
    HDR_REFERENCE_WHITE,
    HLG_DISPLAY_PEAK,
    HLG_GAMMA,
    ToSdr,
    nits_to_pq,
    primaries_matrix,
    scene_to_hlg,
)

SHARED_CLIP = ROOT.parent / "shared" / "videos" / "mediabunny__hevc.ts"
WIDTH, HEIGHT = 1920, 1080


@dataclass(kw_only=True)
class StyleOnCodeValues(StyleTransferOp):
    """The style op as framefleet ran it before it knew HDR: the model paints whatever the code values are."""

    picture: ClassVar[str] = "any"


def sdr_frames(count: int, start: int) -> list[np.ndarray]:
    """`count` 1080p SDR RGB frames of a real clip from frame `start` (or the synthetic picture when it is
    absent)."""
    if not SHARED_CLIP.exists():
        log(f"{SHARED_CLIP} is absent: grading the synthetic picture instead")
        return [picture(i, WIDTH, HEIGHT) for i in range(count)]
    with av.open(str(SHARED_CLIP)) as container:
        frames = []
        for index, frame in enumerate(container.decode(video=0)):
            if index < start:
                continue
            frames.append(frame.to_ndarray(format="rgb24", width=WIDTH, height=HEIGHT))
            if len(frames) == count:
                return frames
    return frames


def grade(rgb: np.ndarray, transfer: str) -> np.ndarray:
    """An SDR frame graded to HDR code values (uint16, BT.2020): white at 203 cd/m2, the brightest tenth of the
    light stretched towards 1,000 cd/m2 (highlights)."""
    light = np.power(rgb / 255.0, 2.4)
    boost = 1 + (1000 / HDR_REFERENCE_WHITE - 1) * np.clip((light.max(axis=2, keepdims=True) - 0.9) / 0.1, 0, 1) ** 2
    nits = (light * boost * HDR_REFERENCE_WHITE) @ primaries_matrix("bt709", "bt2020").T
    if transfer == "pq":
        codes = nits_to_pq(nits)
    else:  # BT.2100's inverse OOTF for the 1,000 cd/m2 display, then the OETF
        display = np.clip(nits / HLG_DISPLAY_PEAK, 0, 1)
        luma = np.maximum(display @ np.array([0.2627, 0.6780, 0.0593]), 1e-9)[..., None]
        codes = scene_to_hlg(display * np.power(luma, (1 - HLG_GAMMA) / HLG_GAMMA))
    return (np.clip(codes, 0, 1) * 65535 + 0.5).astype(np.uint16)


def write(path: Path, frames: list[np.ndarray], transfer: str) -> None:
    """HEVC Main 10 (HDR) or H.264 (SDR), 24 fps, with the HDR10 metadata for PQ."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx265" if transfer != "sdr" else "libx264", rate=24)
        stream.width, stream.height = WIDTH, HEIGHT
        stream.pix_fmt = "yuv420p10le" if transfer != "sdr" else "yuv420p"
        context = stream.codec_context
        params = ["log-level=error"]
        if transfer != "sdr":
            context.color_primaries, context.colorspace = 9, 9
            context.color_trc = 16 if transfer == "pq" else 18
        if transfer == "pq":
            params += ["hdr10=1", f"master-display={HDR_MASTERING}", "max-cll={},{}".format(*HDR_MAX_CLL)]
        context.options = {"crf": "16", "preset": "fast"} | ({"x265-params": ":".join(params)}
                                                            if transfer != "sdr" else {})
        matrix = 9 if transfer != "sdr" else 1
        for index, rgb in enumerate(frames):
            kind = "rgb48le" if rgb.dtype == np.uint16 else "rgb24"
            frame = av.VideoFrame.from_ndarray(rgb, format=kind).reformat(
                format=stream.pix_fmt, dst_colorspace=matrix, src_color_range=2, dst_color_range=1)
            frame.pts, frame.time_base = index, Fraction(1, 24)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def conversion_ms(path: Path, transfer: str, repeats: int) -> dict[str, float]:
    """Median ms per frame: to 8-bit RGB as for SDR, and rendered to SDR (one thread each)."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    to_sdr = ToSdr.for_source(transfer, 1000.0)
    reformatter = thread_reformatter("bench")
    timings: dict[str, list[float]] = {"rgb24": [], "to_sdr": []}
    for _ in range(repeats):
        for name, render in (("rgb24", None), ("to_sdr", to_sdr)):
            for frame in frames:
                started = time.perf_counter()
                frame_to_rgb(frame, reformatter, threads=1, to_sdr=render)
                timings[name].append((time.perf_counter() - started) * 1000)
    return {name: statistics.median(values) for name, values in timings.items()}


def stylize_seconds(source: Path, output: Path) -> float:
    """Wall time of the whole `framefleet stylize` command (default settings)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "framefleet", "stylize", str(source), "-o", str(output), "--overwrite",
                    "--quiet"], check=True, capture_output=True)
    return time.perf_counter() - started


def first_frame(path: Path, render: ToSdr | None) -> np.ndarray:
    """The first frame as an SDR screen shows it: rendered from HDR with `render`, or its code values as they are."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
    return frame_to_rgb(frame, thread_reformatter("bench"), to_sdr=render)


def strip(panels: list[tuple[str, np.ndarray]], path: Path, width: int = 480) -> None:
    """The panels side by side, each `width` wide, captioned."""
    height = round(width * HEIGHT / WIDTH)
    canvas = Image.new("RGB", (width * len(panels), height + 34), "white")
    draw = ImageDraw.Draw(canvas)
    for index, (caption, rgb) in enumerate(panels):
        canvas.paste(Image.fromarray(rgb).resize((width, height), Image.LANCZOS), (index * width, 34))
        draw.multiline_text((index * width + 6, 2), caption, fill="black", spacing=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, quality=85, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--start", type=int, default=96, help="first frame of the real clip (its sky and trees)")
    parser.add_argument("--strip", type=Path, default=ROOT / "docs" / "images" / "hdr-strip.jpg")
    parser.add_argument("--output", type=Path, default=DEFAULT_RESULTS / "hdr.json")
    args = parser.parse_args()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="framefleet-hdr-") as folder:
        work = Path(folder)
        sdr = sdr_frames(args.frames, args.start)
        clips = {"sdr": work / "sdr.mp4", "pq": work / "pq.mkv", "hlg": work / "hlg.mkv"}
        write(clips["sdr"], sdr, "sdr")
        for transfer in ("pq", "hlg"):
            write(clips[transfer], [grade(rgb, transfer) for rgb in sdr], transfer)
        log("clips written; timing the conversions")
        conversions = {t: conversion_ms(clips[t], t, args.repeats) for t in ("pq", "hlg")}
        log("timing framefleet stylize end to end")
        runs: dict[str, list[float]] = {"sdr": [], "pq": []}
        for _ in range(args.repeats):
            for name in runs:
                runs[name].append(stylize_seconds(clips[name], work / f"styled-{name}.mp4"))
        wall = {name: statistics.median(values) for name, values in runs.items()}
        log("the strip")
        before = work / "before.mkv"
        process_video(clips["pq"], before, Pipeline.of([StyleOnCodeValues()], temporal="bands"))
        pq_render = ToSdr.for_source("pq", 1000.0)
        strip([("HDR10 input, as an SDR\nscreen shows it", first_frame(clips["pq"], pq_render)),
               ("stylized before: a player\nhonouring its PQ tags", first_frame(before, pq_render)),
               ("stylized before: a player\nignoring its tags", first_frame(before, None)),
               ("stylized now: SDR BT.709,\ntone-mapped for the model", first_frame(work / "styled-pq.mp4", None))],
              args.strip)
    rows = [[f"{t.upper()} 1080p frame to RGB", f"{conversions[t]['rgb24']:.1f}", f"{conversions[t]['to_sdr']:.1f}",
             f"{conversions[t]['to_sdr'] / conversions[t]['rgb24']:.2f}x"] for t in ("pq", "hlg")]
    rows.append([f"stylize {args.frames} frames 1080p, whole command (s)", f"{wall['sdr']:.1f}", f"{wall['pq']:.1f}",
                 f"{wall['pq'] / wall['sdr']:.2f}x"])
    print_table("HDR: rendering for an SDR model (ms per frame, one thread; seconds end to end; medians)",
                ["figure", "SDR path", "HDR rendered to SDR", "ratio"], rows, right={1, 2, 3})
    write_results(args.output, {"machine": machine_info(), "frames": args.frames, "repeats": args.repeats,
                                "conversion_ms": conversions, "stylize_seconds": runs,
                                "strip": str(args.strip)}, time.perf_counter() - began)


if __name__ == "__main__":
    main()
