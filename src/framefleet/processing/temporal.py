"""Temporal stability of processed video: optical flow between input frames, the warping error that
measures flicker, and the flow-guided blend that removes it.

Flow is DIS optical flow (OpenCV) between consecutive *input* frames, computed on a copy scaled so its
longest side is at most `FLOW_SIDE` and scaled back up. A pixel counts as visible in both frames when the
forward and backward flows agree (Sundaram et al. 2010, as used by Ruder et al. 2016 and Lai et al. 2018)
and stays inside the picture.

- `warping_error`: Lai et al., "Learning Blind Video Temporal Consistency" (ECCV 2018): the previous
  output frame is warped onto the current one along the input's flow; the error is the mean squared
  difference (RGB in [0, 1], averaged over channels) over the visible pixels.
- `TemporalBlend`: each output frame is blended with the previous *output* warped onto it, where that
  pixel is visible in both frames and its input did not change (new content keeps the model's frame);
  a scene cut (few visible pixels) restarts it. Applied in decode order, it turns the model's
  frame-to-frame jitter into a running average along motion paths (`blend`), but resampling and averaging
  the previous output frame after frame also wipes out the style's fine texture.
- `BandBlend` (`bands`, the default for style transfer): the same steps per band of spatial frequency: low
  and mid bands averaged along the motion, the mid band's contrast restored, the finest band the current
  frame's. Steady colour and strokes, detail kept.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from framefleet.errors import OptionError
from framefleet.processing.detail import BAND_SIGMA, low_band, split_bands

if TYPE_CHECKING:
    from framefleet.ops.base import Op

FLOW_SIDE = 320
"""Flow is estimated on frames whose longest side is at most this (then scaled to the frame's size)."""
CUT_VISIBLE = 0.4
"""Fewer pixels than this share visible in both frames: a scene cut, the blend restarts."""
TEMPORAL_MODES = ("none", "bands", "blend")
FINE_SIGMA = 1.4
"""`bands`: in frames up to 640x360, the finest band, below a Gaussian of this many px, is always the
current frame's (`fine_sigma`)."""
FINE_GROWTH = 0.2
"""`bands`: in larger frames that sigma grows as (frame pixels / 640x360) to this power, up to `FINE_MAX`."""
FINE_MAX = 2.5
ENERGY_SIGMA = 6.0
"""`bands`: the mid band's energy is matched over Gaussian windows of this many px."""
DEFAULT_STRENGTH = {"bands": 0.9, "blend": 0.8}
"""Each mode's strength (share of the warped previous output a steady pixel keeps) unless told otherwise."""
PREROLL_MAX = 24
"""The most frames a segment runs through before its start to continue the previous segment's filter."""
MAX_GAIN = 4.0
"""`bands`: the most the mid band's contrast is raised to make up for averaging."""


def default_mode(ops: Sequence[Op]) -> str:
    """bands when an op returns frames that flicker (style transfer), else none."""
    return "bands" if any(op.flickers and op.writes_frames for op in ops) else "none"


def check_strength(strength: float) -> float:
    """`strength` when it is in [0, 1], else a one-line OptionError."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
        raise OptionError(f"--temporal-strength must be between 0 and 1, got {strength!r}")
    return float(strength)


def temporal_filter(mode: str, strength: float | None = None) -> TemporalBlend | None:
    """The filter of a temporal mode (None for none), at `strength` (None: the mode's default)."""
    if check_mode(mode) == "none":
        return None
    kind = BandBlend if mode == "bands" else TemporalBlend
    return kind(DEFAULT_STRENGTH[mode] if strength is None else strength)


def preroll_frames(strength: float) -> int:
    """Frames a segment runs through before its start so the previous segment's say falls below 7%."""
    if strength <= 0.0:
        return 0
    return PREROLL_MAX if strength >= 1.0 else min(PREROLL_MAX, math.ceil(math.log(0.07) / math.log(strength)))


def fine_sigma(width: int, height: int) -> float:
    """`bands`: the Gaussian sigma (px) below which a frame of width x height keeps its own detail. Flicker
    is seen on the picture fitted to a screen, detail at 1:1: the larger the frame, the smaller on screen
    its finest texture, so more of it is taken from the current frame (1.4 px up to 640x360, 1.85 at 720p,
    2.17 at 1080p)."""
    growth = max(1.0, width * height / (640 * 360)) ** FINE_GROWTH
    return min(FINE_SIGMA * growth, FINE_MAX)


def check_mode(mode: str) -> str:
    """`mode` when it is a known temporal mode, else a one-line OptionError."""
    if mode not in TEMPORAL_MODES:
        raise OptionError(f"--temporal must be one of {', '.join(TEMPORAL_MODES)}; got {mode!r}")
    return mode


def flow_size(width: int, height: int) -> tuple[int, int]:
    """The size flow is estimated at for frames of width x height."""
    scale = min(1.0, FLOW_SIDE / max(width, height))
    return max(8, round(width * scale)), max(8, round(height * scale))


class FlowEstimator:
    """DIS optical flow between consecutive grey frames (one instance per thread)."""

    def __init__(self) -> None:
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)

    def grey(self, rgb: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)

    def flow(self, source: np.ndarray, target: np.ndarray) -> np.ndarray:
        """H x W x 2 float32: for each pixel of `source`, where it is in `target` (grey frames)."""
        return self._dis.calc(source, target, None)

    def visible(self, backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
        """H x W bool: pixels of the current frame whose backward flow (current to previous) lands inside
        the previous frame and comes back with the forward flow (previous to current)."""
        height, width = backward.shape[:2]
        grid = _grid(height, width)
        target = grid + backward
        inside = (target[..., 0] >= 0) & (target[..., 0] <= width - 1) & (target[..., 1] >= 0) & (target[..., 1] <= height - 1)
        forward_there = cv2.remap(forward, target[..., 0], target[..., 1], cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
        round_trip = backward + forward_there
        agree = (round_trip ** 2).sum(-1) < 0.01 * ((backward ** 2).sum(-1) + (forward_there ** 2).sum(-1)) + 0.5
        return inside & agree

    def warp(self, image: np.ndarray, backward: np.ndarray) -> np.ndarray:
        """`image` (the previous frame) moved onto the current frame along `backward` (current to previous)
        flow of the same size."""
        height, width = backward.shape[:2]
        target = _grid(height, width) + backward
        return cv2.remap(image, target[..., 0], target[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def motion(self, previous: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(backward flow from `current` to `previous`, the pixels of `current` visible in both): grey frames."""
        backward = self.flow(current, previous)
        return backward, self.visible(backward, self.flow(previous, current))


_GRIDS: dict[tuple[int, int], np.ndarray] = {}


def _grid(height: int, width: int) -> np.ndarray:
    """H x W x 2 float32 pixel coordinates (x, y), cached per size."""
    key = (height, width)
    if key not in _GRIDS:
        xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
        _GRIDS[key] = np.stack([xs, ys], axis=-1)
    return _GRIDS[key]


@dataclass
class PairError:
    """The warping error of one pair of consecutive frames."""

    frame: int
    """The later frame's number (0-based)."""
    error: float
    """Mean squared difference over visible pixels, RGB in [0, 1]."""
    visible: float
    """Share of the frame's pixels visible in both frames."""
    low: float = 0.0
    """The error of the difference's low band (`detail.split_bands`): colour and lighting pulses."""
    high: float = 0.0
    """The error of the difference's high band: texture shimmer."""


def pair_error(estimator: FlowEstimator, inputs: tuple[np.ndarray, np.ndarray],
               outputs: tuple[np.ndarray, np.ndarray], frame: int, sigma: float = BAND_SIGMA) -> PairError:
    """Lai et al.'s warping error of outputs (previous, current) along the flow of inputs (previous, current),
    and of its bands split at a Gaussian of `sigma` px; all four frames the same size."""
    backward, visible = estimator.motion(*(estimator.grey(f) for f in inputs))
    warped = estimator.warp(outputs[0], backward)
    diff = (outputs[1].astype(np.float32) - warped.astype(np.float32)) / 255.0
    count = int(visible.sum())

    def error(values: np.ndarray) -> float:
        return float((values ** 2).mean(-1)[visible].mean()) if count else 0.0

    low, high = split_bands(diff, sigma)
    return PairError(frame=frame, error=error(diff), visible=count / visible.size, low=error(low), high=error(high))


@dataclass
class BlendStep:
    """How one frame takes from the previous output, worked out from the input alone (so in any thread,
    ahead of the model): both at the flow's size, scaled to the frame's when applied."""

    where: np.ndarray
    """h x w x 2 float32: the full-size pixel position of the previous output to sample."""
    keep: np.ndarray
    """h x w float32 in [0, strength): how much of that sample a pixel keeps."""


class TemporalBlend:
    """Flow-guided blending of processed frames in decode order (one instance per video or segment).

    `plan` (input frames only, thread-safe, any order) gives each frame's `BlendStep`, or None where the blend
    restarts (the first frame, a scene cut); calling the instance applies them to the outputs in order.
    `strength` is how much of the warped previous output a visible, unchanged pixel keeps (0: off)."""

    def __init__(self, strength: float = 0.8) -> None:
        self.strength = check_strength(strength)
        self._estimators = threading.local()
        self._previous: tuple[np.ndarray, ...] | None = None
        """What the next frame takes from the previous output (its bands, for `BandBlend`)."""
        self.restarts = 0
        """How many frames started afresh (the first, and each scene cut)."""

    def plan(self, previous: np.ndarray | None, small_inputs: np.ndarray,
             width: int, height: int) -> list[BlendStep | None]:
        """The steps of frames `small_inputs` (N x h x w x 3, consecutive, scaled to `flow_size`), `previous`
        being the input frame before the first (same size; None: the first frame starts afresh), for outputs
        of width x height."""
        estimator = getattr(self._estimators, "estimator", None)
        if estimator is None:
            estimator = self._estimators.estimator = FlowEstimator()
        greys = [estimator.grey(frame) for frame in small_inputs]
        before = [None if previous is None else estimator.grey(previous), *greys[:-1]]
        return [None if prior is None else self._step(estimator, prior, grey, width, height)
                for prior, grey in zip(before, greys)]

    def _step(self, estimator: FlowEstimator, previous: np.ndarray, grey: np.ndarray,
              width: int, height: int) -> BlendStep | None:
        backward, visible = estimator.motion(previous, grey)
        if visible.mean() < CUT_VISIBLE:  # a scene cut: the previous frame says nothing about this one
            return None
        # where the input itself changed (lighting, new content), keep the model's frame
        moved = estimator.warp(previous, backward).astype(np.float32)
        same = np.exp(-((grey.astype(np.float32) - moved) / 255.0) ** 2 * 50.0) * visible
        # full-size pixel coordinates at the flow's size (linear resizing commutes with the change of scale)
        small_h, small_w = backward.shape[:2]
        scale = np.array([width / small_w, height / small_h], dtype=np.float32)
        return BlendStep(where=(_grid(small_h, small_w) + backward + 0.5) * scale - 0.5,
                         keep=(self.strength * same).astype(np.float32))

    def __call__(self, steps: Sequence[BlendStep | None], outputs: np.ndarray) -> np.ndarray:
        """Blend `outputs` (N x H x W x 3, the next frames in decode order) by their planned `steps`."""
        blended = np.empty_like(outputs)
        height, width = outputs.shape[1:3]
        for i, (step, output) in enumerate(zip(steps, outputs, strict=True)):
            if step is None or self._previous is None:
                self.restarts += 1
                self._previous = self._start(output)
                blended[i] = output
                continue
            where = cv2.resize(step.where, (width, height), interpolation=cv2.INTER_LINEAR)
            keep = cv2.resize(step.keep, (width, height), interpolation=cv2.INTER_LINEAR)
            blended[i] = self._blend(output, where, keep)
        return blended

    def _start(self, output: np.ndarray) -> tuple[np.ndarray, ...]:
        """What the next frame takes from `output`, a frame taken as the ops returned it."""
        return (output,)

    def _blend(self, output: np.ndarray, where: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """The whole previous output, warped, mixed in by `keep` (the running average of `blend`)."""
        warped = cv2.remap(self._previous[0], where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        result = cv2.blendLinear(warped, output, keep, 1.0 - keep)
        self._previous = (result,)
        return result


class BandBlend(TemporalBlend):
    """`bands`: the same steps, applied per band of spatial frequency so the style's detail survives.

    The output splits at Gaussians of `fine_sigma` (1.4 px up to 360p, more in larger frames) and `BAND_SIGMA`
    px into low (colour, light), mid (brush strokes) and fine (the crispest texture, edges) bands. Low and
    mid each get the running average along the motion; the mid band is then scaled back, locally, to the
    current frame's mid-band energy (averaging strokes that differ from frame to frame would fade them);
    the fine band is the current frame's, untouched, so no detail is resampled frame after frame."""

    def _bands(self, output: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        values = output.astype(np.float32)
        low = low_band(values, BAND_SIGMA)
        below_fine, fine = split_bands(values, fine_sigma(output.shape[1], output.shape[0]))
        return low, cv2.subtract(below_fine, low), fine

    def _start(self, output: np.ndarray) -> tuple[np.ndarray, ...]:
        return self._bands(output)[:2]

    def _blend(self, output: np.ndarray, where: np.ndarray, keep: np.ndarray) -> np.ndarray:
        low, mid, fine = self._bands(output)
        past_low = cv2.remap(self._previous[0], where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        past_mid = cv2.remap(self._previous[1], where, None, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
        rest = 1.0 - keep
        low = cv2.blendLinear(past_low, low, keep, rest)
        mixed = cv2.blendLinear(past_mid, mid, keep, rest)
        mixed = cv2.multiply(mixed, _energy_gain(mid, mixed))
        self._previous = (low, mixed)
        total = cv2.add(cv2.add(low, mixed), fine)
        return np.clip(total + 0.5, 0, 255).astype(np.uint8)


def _energy_gain(target: np.ndarray, mixed: np.ndarray) -> np.ndarray:
    """H x W x 3 gain (1 to `MAX_GAIN`, the same in each channel) that brings the local energy of `mixed` up
    to that of `target` (mid bands), measured over Gaussian windows of `ENERGY_SIGMA` px on a copy a quarter
    the size."""
    height, width = target.shape[:2]
    small = max(1, width // 4), max(1, height // 4)

    def energy(band: np.ndarray) -> np.ndarray:
        squares = cv2.resize(cv2.multiply(band, band), small, interpolation=cv2.INTER_AREA).sum(-1)
        return cv2.GaussianBlur(squares, (0, 0), ENERGY_SIGMA / 4)

    ratio = (energy(target) + 1e-3) / (energy(mixed) + 1e-3)
    gain = np.sqrt(np.clip(ratio, 1.0, MAX_GAIN ** 2))
    return cv2.cvtColor(cv2.resize(gain, (width, height), interpolation=cv2.INTER_LINEAR), cv2.COLOR_GRAY2RGB)
