"""`measure_flicker`: the temporal warping error of a processed video against its input, streamed.

Both videos are decoded side by side, two frames at a time, scaled so the longest side is at most `side`;
each consecutive pair gets Lai et al.'s warping error (`temporal.pair_error`). Memory holds four frames,
whatever the length. Lower is steadier; 0 means every visible pixel moved exactly with the input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from framefleet.errors import OptionError
from framefleet.temporal import FlowEstimator, PairError, pair_error
from framefleet.video import VideoReader
from framefleet.video.container import VideoSource

DEFAULT_SIDE = 480


@dataclass
class FlickerReport:
    """Per-pair warping errors of a processed video and their summary."""

    input: str
    processed: str
    frames: int
    side: int
    """Longest side the frames were compared at."""
    pairs: list[PairError] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return float(np.mean([p.error for p in self.pairs])) if self.pairs else 0.0

    @property
    def p95(self) -> float:
        return float(np.percentile([p.error for p in self.pairs], 95)) if self.pairs else 0.0

    def to_dict(self) -> dict:
        return {"input": self.input, "processed": self.processed, "frames": self.frames, "side": self.side,
                "warping_error": {"mean": self.mean, "p95": self.p95},
                "pairs": [{"frame": p.frame, "error": p.error, "visible": round(p.visible, 4)} for p in self.pairs]}


def measure_flicker(source: VideoSource, processed: VideoSource, *, side: int = DEFAULT_SIDE,
                    progress: Callable[[int], None] | None = None) -> FlickerReport:
    """The warping error of `processed` against the motion of `source` (same frames, any sizes)."""
    if side < 32:
        raise OptionError(f"--side must be at least 32 pixels, got {side}")
    report = FlickerReport(input=str(source), processed=str(processed), frames=0, side=side)
    estimator = FlowEstimator()
    previous: tuple[np.ndarray, np.ndarray] | None = None
    with VideoReader(source) as a, VideoReader(processed) as b:
        for count, (original, result) in enumerate(_paired(a, b, side, source, processed)):
            if previous is not None:
                report.pairs.append(pair_error(estimator, (previous[0], original), (previous[1], result), count))
            previous = (original, result)
            report.frames = count + 1
            if progress:
                progress(1)
    return report


def _paired(a: VideoReader, b: VideoReader, side: int, source: VideoSource,
            processed: VideoSource) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Frames of both videos, one pair at a time, at a common size whose longest side is at most `side`."""
    batches_a, batches_b = a.batches(1), b.batches(1)
    size: tuple[int, int] | None = None
    count = 0
    while True:
        first, second = next(batches_a, None), next(batches_b, None)
        if first is None or second is None:
            if first is not second:
                longer = source if second is None else processed
                raise OptionError(f"{longer}: has more frames than the other video after frame {count}; "
                                  "compare a video with its own processed version")
            return
        if size is None:
            width, height = first.size
            scale = min(1.0, side / max(width, height))
            size = max(8, round(width * scale)), max(8, round(height * scale))
        yield first.frames_at(*size)[0], second.frames_at(*size)[0]
        count += 1
