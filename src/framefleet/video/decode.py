"""Decoding a video stream to batches of RGB frames with their timestamps, whole or one segment."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from fractions import Fraction

import av
import av.error
import numpy as np
from av.video.reformatter import VideoReformatter

from framefleet.errors import CorruptVideoError, OptionError
from framefleet.video.container import VideoSource, check_reads, open_input, select_video_stream
from framefleet.batch import FrameBatch
from framefleet.video.frames import display_matrix, frame_to_rgb
from framefleet.video.orientation import Orientation

log = logging.getLogger(__name__)


class VideoReader:
    """Reads one video stream of a local file or a `RemoteVideo` as RGB frames in display orientation.

    >>> with VideoReader("in.mp4") as reader:
    ...     for batch in reader.batches(8):
    ...         print(batch.index, batch.frames.shape)

    Frames come with their presentation timestamps in `time_base` units. Timestamps FFmpeg cannot
    provide are filled in from the previous frame and the frame rate; a timestamp that does not
    increase is nudged one tick past the previous one (and logged), so the sequence is always strictly
    increasing, which every encoder needs. Frames FFmpeg cannot decode at all (e.g. the leading
    B-frames of an open GOP) are skipped by FFmpeg itself, as in the ffmpeg CLI.
    """

    def __init__(self, path: VideoSource, *, video_stream: int | None = None, threads: int = 0) -> None:
        self.path = str(path)
        self._source = path
        self._container = open_input(path)
        self._stream = select_video_stream(self._container, video_stream)
        self._stream.thread_type = "AUTO"
        self._stream.codec_context.thread_count = threads
        self.time_base = Fraction(self._stream.time_base)
        rate = self._stream.average_rate or self._stream.base_rate or Fraction(25)
        self.frame_rate = Fraction(rate)
        self._default_step = max(1, round(1 / (Fraction(rate) * self.time_base)))
        self.orientation: Orientation | None = None
        self._reformatter = VideoReformatter()
        self._used = False

    def frames(self, start_pts: int | None = None, end_pts: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (pts, H x W x 3 RGB) for every frame with start_pts <= pts < end_pts (None = open).

        With a start, the reader seeks to the keyframe at or before it and drops the frames before it,
        so consecutive segments [a, b), [b, c) yield each frame exactly once.
        """
        if start_pts is not None:
            self._container.seek(start_pts, stream=self._stream, backward=True, any_frame=False)
        elif self._used:  # read before: go back to the start rather than go on from where that read stopped
            self._container.seek(self._stream.start_time or 0, stream=self._stream, backward=True, any_frame=False)
        self._used = True
        previous: int | None = None
        decoded = 0
        try:
            for frame in self._container.decode(self._stream):
                decoded += 1
                pts = self._timestamp(frame, previous)
                if start_pts is not None and pts < start_pts:
                    continue
                if end_pts is not None and pts >= end_pts:
                    check_reads(self._source)
                    return
                previous = pts
                yield pts, self._to_rgb(frame)
        except av.error.FFmpegError as exc:
            check_reads(self._source)
            raise CorruptVideoError(
                f"{self.path}: corrupt video, decoding failed after {decoded} frames ({exc.strerror or exc})"
            ) from None
        check_reads(self._source)
        if decoded == 0:
            raise CorruptVideoError(f"{self.path}: corrupt video, no frame of stream {self._stream.index} decodes")

    def batches(
        self, batch_size: int, start_pts: int | None = None, end_pts: int | None = None
    ) -> Iterator[FrameBatch]:
        """Group `frames()` into `FrameBatch`es of at most `batch_size` frames."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        pixels: list[np.ndarray] = []
        stamps: list[int] = []
        index = 0
        for pts, rgb in self.frames(start_pts, end_pts):
            pixels.append(rgb)
            stamps.append(pts)
            if len(pixels) == batch_size:
                yield self._batch(pixels, stamps, index)
                index += len(pixels)
                pixels, stamps = [], []
        if pixels:
            yield self._batch(pixels, stamps, index)

    def _batch(self, pixels: list[np.ndarray], stamps: list[int], index: int) -> FrameBatch:
        return FrameBatch(np.stack(pixels), np.asarray(stamps, dtype=np.int64), index, time_base=self.time_base,
                          frame_rate=self.frame_rate)

    def frame_at(self, seconds: float) -> np.ndarray:
        """The first frame shown at or after `seconds` from the stream's start."""
        start = self._stream.start_time or 0
        target = start + round(Fraction(seconds).limit_denominator(1_000_000) / self.time_base)
        for _, rgb in self.frames(target if seconds > 0 else None):
            return rgb
        raise OptionError(f"{self.path}: no frame at or after {seconds} s (the video is shorter)")

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _timestamp(self, frame: av.VideoFrame, previous: int | None) -> int:
        pts = frame.pts if frame.pts is not None else frame.dts
        if pts is None:
            return 0 if previous is None else previous + self._default_step
        if previous is not None and pts <= previous:
            log.warning("%s: frame timestamp %d does not increase after %d; using %d", self.path, pts, previous, previous + 1)
            return previous + 1
        return pts

    def _to_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        if self.orientation is None:
            self.orientation = Orientation.from_display_matrix(display_matrix(frame))
        return self.orientation.apply(frame_to_rgb(frame, self._reformatter))
