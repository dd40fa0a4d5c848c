"""Output codecs: what choosing the output's container (or `--codec`) costs in speed and size.

One clip (moving test pattern and a tone, made with PyAV) goes through framefleet's identity transcode
(decode, encode; no model) into each contender, `--repeats` times, alternating; the table gives the median
fps, the ratio to H.264 measured in the same run, and the output's size. Defaults: CRF 20 and preset
veryfast (mapped to each encoder's own speed setting, docs/video.md#encoding).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

from common import DEFAULT_RESULTS, NAMED_SIZES, log, machine_info, print_table, write_results

from framefleet.ops import IdentityOp
from framefleet.pipeline import Pipeline
from framefleet.processing.streaming import process_video
from framefleet.video import EncodeOptions
from framefleet.video.synth import ClipSpec, write_clip

CONTENDERS = {  # name: (output suffix, --codec)
    "H.264 in .mp4 (default)": (".mp4", None),
    "VP9 in .webm (default)": (".webm", None),
    "AV1 in .webm (--codec libsvtav1)": (".webm", "libsvtav1"),
    "HEVC in .mkv (--codec libx265)": (".mkv", "libx265"),
}


def transcode(clip: Path, output: Path, codec: str | None) -> dict[str, Any]:
    started = time.perf_counter()
    result = process_video(clip, output, Pipeline.of([IdentityOp()], encode=EncodeOptions(codec=codec)))
    return {"frames": result.frames, "seconds": time.perf_counter() - started, "encoder": result.encoder,
            "bytes": output.stat().st_size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="360p", choices=sorted(NAMED_SIZES))
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=DEFAULT_RESULTS / f"codecs-{time.strftime('%Y%m%dT%H%M%S')}.json")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CONTENDERS}
    with tempfile.TemporaryDirectory(prefix="framefleet-codecs-") as tmp:
        clip = Path(tmp) / "clip.mp4"
        width, height = NAMED_SIZES[args.size]
        write_clip(clip, ClipSpec(width=width, height=height, frames=args.frames, rate=Fraction(25), audio=("aac",)))
        names = list(CONTENDERS)
        for repeat in range(args.repeats):
            for name in names[repeat % len(names):] + names[:repeat % len(names)]:
                suffix, codec = CONTENDERS[name]
                runs[name].append(transcode(clip, Path(tmp) / f"out{names.index(name)}{suffix}", codec))
                log(f"{name}: {runs[name][-1]['frames'] / runs[name][-1]['seconds']:.1f} fps")
    fps = {name: statistics.median(r["frames"] / r["seconds"] for r in rs) for name, rs in runs.items()}
    baseline = fps["H.264 in .mp4 (default)"]
    rows = [[name, runs[name][-1]["encoder"], f"{value:.1f}", f"{value / baseline:.2f}",
             f"{runs[name][-1]['bytes'] / 1024:.0f}"] for name, value in fps.items()]
    print_table(f"\nidentity transcode, {args.size}, {args.frames} frames ({args.repeats} repeats, medians)",
                ["output", "encoder", "fps", "vs H.264", "KiB"], rows, right={2, 3, 4})
    write_results(args.output, {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()},
                                "fps": fps, "raw": runs}, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
