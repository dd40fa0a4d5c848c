"""Peak memory of one built-in style session against the model's input size (docs/benchmarks.md, memory).

Each case runs in a fresh process capped at 8 GiB (RLIMIT_DATA): set up one `StyleTransferOp` session
(2 threads) and run three batches of random frames; its peak RSS is the figure. `--pattern on` turns
onnxruntime's memory pattern back on, `--arena off` its CPU arena off, to compare; `--runtime openvino`
(and `--precision`) measures an OpenVINO session instead.

    .venv/bin/python benchmarks/style_memory.py [--batch 4] [--pattern on|off] [--arena on|off]
                                                [--runtime onnxruntime|openvino] [--precision auto|fp32|bf16]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys

CASES = [(640, 360, None), (1280, 720, None), (1920, 1080, None), (2560, 1440, None), (3840, 2160, 720),
         (3840, 2160, 1440)]
CAP_BYTES = 8 << 30

_CASE = """
import resource, sys
import numpy as np
import onnxruntime as ort
from framefleet.processing.batch import FrameBatch
from framefleet.ops import onnx_session
from framefleet.ops.base import Device
from framefleet.ops.style import StyleTransferOp

width, height, batch = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[4])
max_size = None if sys.argv[3] == "full" else int(sys.argv[3])
arena, pattern = sys.argv[5] == "on", sys.argv[6] == "on"
runtime, precision = sys.argv[7], sys.argv[8]
open_with_options = ort.InferenceSession


def session(model, options, **kwargs):  # after open_session's own settings
    options.enable_cpu_mem_arena, options.enable_mem_pattern = arena, pattern
    return open_with_options(model, options, **kwargs)


onnx_session.ort.InferenceSession = session
op = StyleTransferOp(max_size=max_size, batch_size=batch, device="cpu", runtime=runtime, precision=precision)
frames = np.random.default_rng(0).integers(0, 255, (batch, height, width, 3), dtype=np.uint8)
op.setup(Device(kind="cpu", threads=2))
for _ in range(3):  # the second compiles a fixed-shape copy on OpenVINO, the third runs it
    op.process(FrameBatch(frames=frames, pts=np.arange(batch)))
w, h = op.input_size(width, height)
print(w * h, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def _capped() -> None:
    resource.setrlimit(resource.RLIMIT_DATA, (CAP_BYTES, CAP_BYTES))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--arena", choices=("on", "off"), default="on")
    parser.add_argument("--pattern", choices=("on", "off"), default="off")
    parser.add_argument("--runtime", choices=("onnxruntime", "openvino"), default="onnxruntime")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    parser.add_argument("--largest", type=int, default=None, help="only frames up to this many pixels")
    args = parser.parse_args()
    print(f"batch {args.batch}, {args.runtime} {args.precision}, arena {args.arena}, memory pattern {args.pattern}")
    print(f"{'frame':>10} {'model input':>12} {'Mpx':>6} {'peak MiB':>9}")
    for width, height, max_size in CASES:
        if args.largest is not None and width * height > args.largest:
            continue
        done = subprocess.run([sys.executable, "-c", _CASE, str(width), str(height), str(max_size or "full"),
                               str(args.batch), args.arena, args.pattern, args.runtime, args.precision],
                              capture_output=True, text=True, preexec_fn=_capped)
        if done.returncode != 0:
            print(f"{width}x{height} at {max_size or 'full size'}: failed under the 8 GiB cap")
            continue
        pixels, peak = (int(v) for v in done.stdout.split())
        print(f"{f'{width}x{height}':>10} {max_size or 'full':>12} {pixels / 1e6:6.2f} {peak:9d}")


if __name__ == "__main__":
    main()
