"""`measure_flicker`: the temporal warping error of a processed video against its input, streamed, and
optionally the detail it keeps against a reference (the same video processed frame by frame).

The videos are decoded side by side, one frame at a time. Flicker: each consecutive pair, scaled so the
longest side is at most `side`, gets Lai et al.'s warping error (`temporal.pair_error`), split into a low
and a high band at 3 px of the output's size. Detail (with a reference): each processed frame against the
reference frame at full size (`framefleet.processing.detail`). Memory holds a few frames, whatever the length. Lower
flicker is steadier; 0 means every visible pixel moved exactly with the input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

import numpy as np

from framefleet.errors import OptionError
from framefleet.processing.detail import BAND_SIGMA, detail_kept, ssim
from framefleet.processing.temporal import FlowEstimator, PairError, pair_error
from framefleet.settings import DEFAULT_SIDE
from framefleet.video import VideoReader
from framefleet.video.container import VideoSource


@dataclass
class FrameDetail:
    """One processed frame against the reference's frame, at full size."""

    frame: int
    detail: float
    """Laplacian variance over the reference's (`detail.detail_kept`)."""
    ssim: float


def _errors(pairs: Sequence[PairError]) -> dict[str, float]:
    """Mean and p95 of the warping error, and the means of its bands."""
    if not pairs:
        return {"mean": 0.0, "p95": 0.0, "low": 0.0, "high": 0.0}
    errors = [p.error for p in pairs]
    return {"mean": float(np.mean(errors)), "p95": float(np.percentile(errors, 95)),
            "low": float(np.mean([p.low for p in pairs])), "high": float(np.mean([p.high for p in pairs]))}


def _ratio(value: float, base: float) -> float:
    return value / base if base > 0 else 1.0


@dataclass
class FlickerReport:
    """Per-pair warping errors of a processed video and their summary; with a reference, its own errors
    and each frame's detail against it."""

    input: str
    processed: str
    frames: int
    side: int
    """Longest side the frames were compared at."""
    pairs: list[PairError] = field(default_factory=list)
    reference: str | None = None
    reference_pairs: list[PairError] = field(default_factory=list)
    details: list[FrameDetail] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return _errors(self.pairs)["mean"]

    @property
    def p95(self) -> float:
        return _errors(self.pairs)["p95"]

    def ratios(self) -> dict[str, float]:
        """Flicker (mean warping error) and its bands, over the reference's."""
        own, base = _errors(self.pairs), _errors(self.reference_pairs)
        return {"flicker": _ratio(own["mean"], base["mean"]), "low": _ratio(own["low"], base["low"]),
                "high": _ratio(own["high"], base["high"])}

    def details_summary(self) -> dict[str, float]:
        """Detail kept (median and worst frame) and SSIM (mean and worst frame) against the reference."""
        kept, similar = [d.detail for d in self.details], [d.ssim for d in self.details]
        return {"median": float(np.median(kept)), "worst": min(kept),
                "ssim_mean": float(np.mean(similar)), "ssim_worst": min(similar)}

    def to_dict(self) -> dict:
        own = _errors(self.pairs)
        result = {"input": self.input, "processed": self.processed, "frames": self.frames, "side": self.side,
                  "warping_error": {"mean": own["mean"], "p95": own["p95"]},
                  "bands": {"low": own["low"], "high": own["high"]},
                  "pairs": [{"frame": p.frame, "error": p.error, "low": p.low, "high": p.high,
                             "visible": round(p.visible, 4)} for p in self.pairs]}
        if self.reference is not None:
            base = _errors(self.reference_pairs)
            result["reference"] = {"path": self.reference, "warping_error": {"mean": base["mean"], "p95": base["p95"]},
                                   "bands": {"low": base["low"], "high": base["high"]}}
            result["ratios"] = self.ratios()
            result["detail"] = {**self.details_summary(), "frames": [{"frame": d.frame, "detail": d.detail, "ssim": d.ssim}
                                                             for d in self.details]}
        return result


def measure_flicker(source: VideoSource, processed: VideoSource, *, side: int = DEFAULT_SIDE,
                    reference: VideoSource | None = None,
                    progress: Callable[[int], None] | None = None) -> FlickerReport:
    """The warping error of `processed` against the motion of `source` (same frames, any sizes); with
    `reference` (same frames and size as `processed`), its errors too and the detail `processed` keeps."""
    if side < 32:
        raise OptionError(f"--side must be at least 32 pixels, got {side}")
    report = FlickerReport(input=str(source), processed=str(processed), frames=0, side=side,
                           reference=None if reference is None else str(reference))
    estimator = FlowEstimator()
    videos = [source, processed] if reference is None else [source, processed, reference]
    previous: list[np.ndarray] | None = None
    for count, (small, full) in enumerate(_aligned(videos, side)):
        if reference is not None:
            report.details.append(FrameDetail(frame=count, detail=detail_kept(full[0], full[1]),
                                              ssim=ssim(full[0], full[1])))
        if previous is not None:
            sigma = BAND_SIGMA * small[0].shape[1] / full[0].shape[1]  # 3 px at the output's size
            report.pairs.append(pair_error(estimator, (previous[0], small[0]), (previous[1], small[1]), count, sigma))
            if reference is not None:
                report.reference_pairs.append(
                    pair_error(estimator, (previous[0], small[0]), (previous[2], small[2]), count, sigma))
        previous = small
        report.frames = count + 1
        if progress:
            progress(1)
    return report


def _aligned(videos: list[VideoSource], side: int) -> Iterator[tuple[list[np.ndarray], list[np.ndarray]]]:
    """For each frame: all videos' frames at a common size whose longest side is at most `side`, and the
    processed videos' (all but the first) at full size. Different frame counts, or a reference whose frames
    differ in size from the processed video's, are refused."""
    with ExitStack() as stack:
        readers = [stack.enter_context(VideoReader(video)) for video in videos]
        streams = [reader.batches(1) for reader in readers]
        size: tuple[int, int] | None = None
        count = 0
        while True:
            batches = [next(stream, None) for stream in streams]
            if any(batch is None for batch in batches):
                if not all(batch is None for batch in batches):
                    longer = videos[next(i for i, b in enumerate(batches) if b is not None)]
                    raise OptionError(f"{longer}: has more frames than the other video after frame {count}; "
                                      "compare a video with its own processed version")
                return
            if size is None:
                if len(batches) > 2 and batches[1].size != batches[2].size:
                    raise OptionError(f"{videos[2]}: its frames are {_size(batches[2].size)}, those of "
                                      f"{videos[1]} {_size(batches[1].size)}; detail is compared at equal sizes")
                width, height = batches[0].size
                scale = min(1.0, side / max(width, height))
                size = max(8, round(width * scale)), max(8, round(height * scale))
            full = [batch.frames[0] for batch in batches[1:]]
            yield [batch.frames_at(*size)[0] for batch in batches], full
            count += 1


def _size(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"
