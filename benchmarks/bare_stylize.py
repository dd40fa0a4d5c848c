#!/usr/bin/env python3
"""The fewest steps that stylize a video on this machine: the baseline `stylize` end to end is held to.

PyAV decodes (its own threads), the frames become RGB arrays, one engine per core runs framefleet's fused
style model on them (the runtime and precision `--runtime auto` picks here, a frame at a time, one thread
each, as the style op does), and x264 encodes them (crf 20, preset veryfast, its own threads: framefleet's
defaults). Nothing else: no flicker removal, no audio, no checks, no progress, no ledger. A queue of
`2 x engines` frames bounds what is in flight. It reports frames and seconds as JSON on stdout.

    .venv/bin/python benchmarks/bare_stylize.py IN.mp4 OUT.mp4
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from queue import Queue

import av
import numpy as np

from framefleet.ops import fused
from framefleet.ops.base import Device
from framefleet.ops.model_engines import open_engine
from framefleet.ops.runtimes import Choice, cpu_precisions
from framefleet.ops.style import MIN_SIDE, fused_multistyle, parse_style
from framefleet.processing.streaming import available_cores


def decoded(path: str) -> Iterator[np.ndarray]:
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")


def main(source: str, target: str) -> None:
    started = time.perf_counter()
    cores = available_cores()
    choice = Choice("openvino", cpu_precisions()[-1])
    idle: Queue = Queue()
    for _ in range(cores):
        idle.put(open_engine(fused_multistyle(False), Device(threads=1), choice))
    with av.open(source) as probe:
        video = probe.streams.video[0]
        rate, width, height = video.average_rate, video.width, video.height
    constants = {fused.PADS: fused.reflect_pads(height, width, 4, MIN_SIDE), "style_weights": parse_style("7")}

    def stylized(frame: np.ndarray) -> np.ndarray:
        engine = idle.get()
        try:
            return engine.run(None, {**constants, fused.FRAMES: frame[None]})[0][0]
        finally:
            idle.put(engine)
    in_flight: Queue[Future | None] = Queue(maxsize=2 * cores)
    frames = 0
    with ThreadPoolExecutor(cores) as pool, av.open(target, "w") as output:
        stream = output.add_stream("libx264", rate=rate, options={"crf": "20", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"

        def feed() -> None:
            for frame in decoded(source):
                in_flight.put(pool.submit(stylized, frame))
            in_flight.put(None)

        threading.Thread(target=feed, daemon=True).start()
        while (future := in_flight.get()) is not None:
            picture = av.VideoFrame.from_ndarray(future.result(), format="rgb24")
            picture.pts = frames
            output.mux(stream.encode(picture))
            frames += 1
        output.mux(stream.encode(None))
    print(json.dumps({"frames": frames, "seconds": time.perf_counter() - started, "runtime": str(choice)}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", help="the video to stylize")
    parser.add_argument("target", help="the stylized video to write (.mp4)")
    args = parser.parse_args()
    if not Path(args.source).is_file():
        parser.error(f"{args.source}: no such file")
    main(args.source, args.target)
