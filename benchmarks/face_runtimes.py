#!/usr/bin/env python3
"""The face detector (CenterFace, op faces) on OpenVINO against onnxruntime: speed, and whether the faces agree.

Frames: the shared broadcast clip `tsduck__test-025.ts` (61 frames of 720 x 576 with one or two faces in
nearly every frame), decoded into RAM; the detector sees them at their own size (736 x 576). Each
contender runs as the op runs it: one engine of one thread per core, batches of 8 fed by a thread pool,
threshold 0.2 (the op's default). Contenders: onnxruntime fp32 (today's), OpenVINO fp32, and OpenVINO
bf16 where the CPU has it (`--runtime auto` never takes it: the heatmaps move 1.4 levels, over the bf16
gate). Agreement: for every face onnxruntime finds, its best intersection over union with a face the
contender finds in the same frame; a face is kept when that IoU is at least 0.9.

    flock /tmp/framefleet-bench.lock .venv/bin/python benchmarks/face_runtimes.py    # ~2 min on 2 cores
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
from common import DEFAULT_RESULTS, ROOT, print_table, write_results
from runtimes import alternate, runtime_machine, side_by_side

from framefleet.ops.base import Device
from framefleet.ops.faces import Faces, detect_faces, load_model, matched_ious, model_path
from framefleet.ops.model_engines import open_engine
from framefleet.ops.runtimes import REFERENCE, Choice, cpu_precisions
from framefleet.processing.streaming import available_cores

CLIP = ROOT.parent / "shared" / "videos" / "tsduck__test-025.ts"
BATCH = 8
THRESHOLD = 0.2
AGREE = 0.9


class Detector:
    """One engine per core (one thread each) detecting faces in batches side by side."""

    def __init__(self, name: str, choice: Choice, sessions: int) -> None:
        self.name = name
        model = load_model(model_path())
        self.engines = [open_engine(model, Device(threads=1), choice) for _ in range(sessions)]

    def run(self, frames: np.ndarray) -> list[Faces]:
        batches = [frames[i:i + BATCH] for i in range(0, len(frames), BATCH)]
        found = side_by_side(self.engines, batches, lambda engine, batch: detect_faces(engine, batch, THRESHOLD))
        return [faces for batch in found for faces in batch]


def agreement(reference: list[Faces], found: list[Faces]) -> dict[str, Any]:
    """How the faces of `found` match `reference`'s, frame by frame."""
    ious = [iou for ref, other in zip(reference, found) for iou in matched_ious(ref, other)]
    return {"faces": len(ious), "found": sum(len(f) for f in found), "agree": sum(iou >= AGREE for iou in ious),
            "min_iou": min(ious, default=1.0), "median_iou": float(np.median(ious)) if ious else 1.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--output", type=Path, default=DEFAULT_RESULTS / "face_runtimes.json")
    args = parser.parse_args()
    if not CLIP.is_file():
        raise SystemExit(f"needs {CLIP} (the shared videos)")
    started = time.perf_counter()
    machine = runtime_machine()
    with av.open(str(CLIP)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    choices = [("onnxruntime fp32", REFERENCE), ("openvino fp32", Choice("openvino", "fp32"))]
    choices += [("openvino bf16", Choice("openvino", "bf16"))] if "bf16" in cpu_precisions() else []
    detectors = [Detector(name, choice, available_cores()) for name, choice in choices]
    rows = alternate(f"{frames.shape[2]}x{frames.shape[1]}", detectors, frames, args.repeats, agreement)
    print_table(f"\nCenterFace on {CLIP.name}, {len(frames)} frames (one engine per core, batches of {BATCH}, medians)",
                ["contender", "fps", "x onnxruntime fp32", "faces (onnxruntime)", f"IoU >= {AGREE}", "min IoU",
                 "faces found"],
                [[r["contender"], f"{r['fps']:.2f}", f"{r['ratio']:.2f}x", str(r["faces"]), str(r["agree"]),
                  f"{r['min_iou']:.3f}", str(r["found"])] for r in rows], right={1, 2, 3, 4, 5, 6})
    write_results(args.output, {"date": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine,
                                "clip": CLIP.name, "repeats": args.repeats, "rows": rows},
                  time.perf_counter() - started)


if __name__ == "__main__":
    main()
