"""Decoding a video stream to batches of frames with their timestamps, whole or one segment.

Batches keep the decoder's frames (`DecodedVideoFrames`): they become RGB only when an op reads them, in
the op's thread, so conversion runs in parallel with decoding and is skipped where nothing reads pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from fractions import Fraction

import av
import av.error
import numpy as np
from av.video.reformatter import VideoReformatter

from framefleet.errors import CorruptVideoError, OptionError
from framefleet.processing.batch import FrameBatch
from framefleet.settings import InputLimits
from framefleet.video.container import VideoSource, check_reads, open_input, select_video_stream
from framefleet.video.frames import (
    COLORSPACE_UNSPECIFIED,
    display_matrix,
    frame_to_rgb,
    thread_reformatter,
    yuv_for_encoder,
)
from framefleet.video.orientation import Orientation
from framefleet.video.tone_map import ToSdr

log = logging.getLogger(__name__)


class VideoReader:
    """Reads one video stream of a local file or a `RemoteVideo` as RGB frames in display orientation.

    >>> with VideoReader("in.mp4") as reader:
    ...     for batch in reader.batches(8):
    ...         print(batch.index, batch.frames.shape)

    Frames come with their presentation timestamps in `time_base` units. Timestamps FFmpeg cannot
    provide are filled in from the previous frame and the frame rate; a timestamp equal to the previous
    one is nudged one tick past it (and logged), and a frame whose timestamp goes back before one already
    given is dropped and counted in `frames_dropped` (the ffmpeg CLI drops it too), so the sequence is
    always strictly increasing, which every encoder needs. AVI stores no presentation times (its
    demuxer guesses them, wrongly once B-frames reorder): its frames are timed by their decode times,
    FFmpeg's best-effort timestamps there. Frames FFmpeg cannot decode at all (e.g. the leading
    B-frames of an open GOP) are skipped by FFmpeg itself, as in the ffmpeg CLI.

    Damage is what the ffmpeg CLI makes of it: a packet the decoder rejects is counted in `decode_errors`
    and skipped, and a container that breaks off ends the video there (`cut_short` says why), so every
    frame that decodes comes out. With `strict`, either is a `CorruptVideoError` instead. A video of which
    no frame decodes is one either way.
    """

    def __init__(self, path: VideoSource, *, video_stream: int | None = None, threads: int = 0,
                 hwaccel: str | None = None, strict: bool = False, limits: InputLimits | None = None,
                 to_sdr: ToSdr | None = None, deep: bool = False) -> None:
        self.path = str(path)
        self._source = path
        self._container = open_input(path, hwaccel=hwaccel)
        self._stream = select_video_stream(self._container, video_stream)
        self._hwaccel = hwaccel if hwaccel and self._stream.codec_context.is_hwaccel else None
        self._stream.thread_type = "AUTO"
        self._stream.codec_context.thread_count = threads
        self.time_base = Fraction(self._stream.time_base)
        rate = self._stream.average_rate or self._stream.base_rate or Fraction(25)
        self.frame_rate = Fraction(rate)
        self._default_step = max(1, round(1 / (Fraction(rate) * self.time_base)))
        self.orientation: Orientation | None = None
        if self._hwaccel:  # frames downloaded from the GPU carry no side data: take the CPU decode's display matrix
            self.orientation = _first_frame_orientation(path, self._stream.index)
        self._reformatter = VideoReformatter()
        self._used = False
        self.strict = strict
        self.to_sdr = to_sdr
        """Renders HDR frames as SDR wherever they become RGB (None: RGB holds the code values as they are)."""
        self.deep = deep
        """RGB in 16 bits (uint16) rather than 8, for a source of more bits whose ops all take them."""
        self.limits = limits
        """Checked as frames decode: their size, and how many packets the decoder rejects."""
        self.decode_errors = 0
        """Packets of the video stream the decoder rejected (skipped) in the last read."""
        self.cut_short: str | None = None
        """Why the container stopped before its end in the last read (None: it did not)."""
        self.frames_dropped = 0
        """Frames dropped in the last read because their timestamp went back (damage, a broken muxer)."""
        self._decode_times = self._container.format.name == "avi"

    @property
    def frame_ticks(self) -> int:
        """The nominal duration of one frame in `time_base` ticks."""
        return self._default_step

    @property
    def decoder(self) -> str:
        """Where frames are decoded: the hardware device (cuda: NVDEC) or cpu."""
        return self._hwaccel or "cpu"

    def frames(self, start_pts: int | None = None, end_pts: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (pts, H x W x 3 RGB) for every frame with start_pts <= pts < end_pts (None = open).

        With a start, the reader seeks to the keyframe at or before it and drops the frames before it,
        so consecutive segments [a, b), [b, c) yield each frame exactly once.
        """
        for pts, frame in self._decoded(start_pts, end_pts):
            yield pts, self._to_rgb(frame)

    def _decoded(self, start_pts: int | None, end_pts: int | None) -> Iterator[tuple[int, av.VideoFrame]]:
        """(pts, decoded frame) for the frames of `frames()`."""
        if start_pts is not None:
            self._container.seek(start_pts, stream=self._stream, backward=True, any_frame=False)
        elif self._used:  # read before: go back to the start rather than go on from where that read stopped
            self._container.seek(self._stream.start_time or 0, stream=self._stream, backward=True, any_frame=False)
        self._used = True
        self.decode_errors, self.cut_short, self.frames_dropped = 0, None, 0
        previous: int | None = None
        decoded = 0
        for frame in self._decode():
            decoded += 1
            pts = self._timestamp(frame, previous)
            if pts is None:
                self.frames_dropped += 1
                continue
            if start_pts is not None and pts < start_pts:
                continue
            if end_pts is not None and pts >= end_pts:
                check_reads(self._source)
                return
            previous = pts
            if self._hwaccel:  # downloaded frames lose the stream's colour tags: put them back
                _copy_colour_tags(frame, self._stream.codec_context)
            if self.orientation is None:
                self.orientation = Orientation.from_display_matrix(display_matrix(frame))
            yield pts, frame
        check_reads(self._source)
        if decoded == 0:
            raise CorruptVideoError(f"{self.path}: corrupt video, no frame of stream {self._stream.index} decodes")

    def _decode(self) -> Iterator[av.VideoFrame]:
        """The stream's frames, packet by packet: rejected packets counted and skipped, a container that
        breaks off ending the read (both errors when strict)."""
        decoded = 0
        size = (0, 0)
        packets = self._container.demux(self._stream)
        while True:
            try:
                packet = next(packets)  # at the end, an empty packet flushes the decoder, then StopIteration
            except StopIteration:
                return
            except MemoryError:
                raise
            except (av.error.FFmpegError, IndexError) as exc:  # the container breaks off (IndexError: PyAV
                # meeting a stream that appears mid-file): flush what the decoder holds
                check_reads(self._source)
                self.cut_short = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                if self.strict:
                    raise CorruptVideoError(f"{self.path}: corrupt video, the container breaks off after "
                                            f"{decoded} frames ({self.cut_short})") from None
                log.warning("%s: the container breaks off after %d frames (%s); keeping what decoded",
                            self.path, decoded, self.cut_short)
                packet = None
            try:
                frames = self._stream.codec_context.decode(packet)
            except MemoryError:
                raise  # not the stream's fault: the worker's memory cap (a limit) or the machine's
            except av.error.FFmpegError as exc:
                check_reads(self._source)
                if self.strict:
                    raise CorruptVideoError(f"{self.path}: corrupt video, decoding failed after {decoded} frames "
                                            f"({exc.strerror or exc})") from None
                self.decode_errors += 1
                if self.limits is not None:
                    self.limits.check_decode_errors(self.path, self.decode_errors)
                log.debug("%s: skipping a packet the decoder rejects (%s)", self.path, exc.strerror or exc)
                frames = []
            for frame in frames:
                decoded += 1
                if self.limits is not None and (frame.width, frame.height) != size:
                    self.limits.check_frame_size(self.path, frame.width, frame.height)
                    size = frame.width, frame.height
                yield frame
            if packet is None:
                return

    def batches(
        self, batch_size: int, start_pts: int | None = None, end_pts: int | None = None
    ) -> Iterator[FrameBatch]:
        """Group `frames()` into `FrameBatch`es of at most `batch_size` frames."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        pixels: list[av.VideoFrame] = []
        stamps: list[int] = []
        index = 0
        for pts, frame in self._decoded(start_pts, end_pts):
            pixels.append(frame)
            stamps.append(pts)
            if len(pixels) == batch_size:
                yield self._batch(pixels, stamps, index)
                index += len(pixels)
                pixels, stamps = [], []
        if pixels:
            yield self._batch(pixels, stamps, index)

    def _batch(self, pixels: list[av.VideoFrame], stamps: list[int], index: int) -> FrameBatch:
        assert self.orientation is not None
        decoded = DecodedVideoFrames(pixels, self.orientation, self.to_sdr, self.deep)
        return FrameBatch(None, np.asarray(stamps, dtype=np.int64), index, time_base=self.time_base,
                          frame_rate=self.frame_rate, decoded=decoded)

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

    def _timestamp(self, frame: av.VideoFrame, previous: int | None) -> int | None:
        """The frame's timestamp, or None to drop it (it goes back before `previous`)."""
        pts = frame.dts if self._decode_times else (frame.pts if frame.pts is not None else frame.dts)
        if pts is None:
            return 0 if previous is None else previous + self._default_step
        if previous is not None and pts < previous:
            log.warning("%s: dropping a frame whose timestamp %d goes back before %d", self.path, pts, previous)
            return None
        if previous is not None and pts == previous:
            log.warning("%s: frame timestamp %d does not increase after %d; using %d", self.path, pts, previous, previous + 1)
            return previous + 1
        return pts

    def _to_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        assert self.orientation is not None
        return self.orientation.apply(frame_to_rgb(frame, self._reformatter, to_sdr=self.to_sdr, deep=self.deep))


def _first_frame_orientation(path: VideoSource, index: int) -> Orientation:
    """The display orientation of a video's first frame, decoded on the CPU."""
    with open_input(path) as container:
        for frame in container.decode(container.streams[index]):
            return Orientation.from_display_matrix(display_matrix(frame))
    return Orientation()


def _copy_colour_tags(frame: av.VideoFrame, context: av.video.codeccontext.VideoCodecContext) -> None:
    if frame.colorspace == COLORSPACE_UNSPECIFIED:
        frame.colorspace = context.colorspace
    if frame.color_range == 0:
        frame.color_range = context.color_range


class DecodedVideoFrames:
    """A batch's frames as the decoder made them (YUV, NV12 from a hardware decoder, ...), turned into RGB,
    scaled or handed to the encoder unchanged only when asked (implements `batch.DecodedFrames`)."""

    def __init__(self, frames: list[av.VideoFrame], orientation: Orientation, to_sdr: ToSdr | None = None,
                 deep: bool = False) -> None:
        self.frames = frames
        self.orientation = orientation
        self.to_sdr = to_sdr
        self.deep = deep

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def size(self) -> tuple[int, int]:
        return self.orientation.display_size(self.frames[0].width, self.frames[0].height)

    def rgb(self, width: int, height: int) -> np.ndarray:
        coded = (height, width) if self.orientation.transpose else (width, height)
        out = np.empty((len(self.frames), height, width, 3), dtype=np.uint16 if self.deep else np.uint8)
        reformatter = thread_reformatter("rgb")
        for i, frame in enumerate(self.frames):
            out[i] = self.orientation.apply(frame_to_rgb(frame, reformatter, *coded, threads=1, to_sdr=self.to_sdr,
                                                          deep=self.deep))
        return out

    def subset(self, mask: np.ndarray) -> DecodedVideoFrames:
        return DecodedVideoFrames([f for f, keep in zip(self.frames, mask) if keep], self.orientation, self.to_sdr,
                                  self.deep)

    def for_encoder(self, pix_fmt: str, colorspace: int, size: tuple[int, int]) -> list[av.VideoFrame] | None:
        """The frames in the encoder's format and `size`, converted YUV to YUV where needed (no RGB); None when
        they must go through RGB instead (a rotation to apply, or an odd size to pad)."""
        first = self.frames[0]
        if not self.orientation.is_identity or (first.width, first.height) != size:
            return None
        reformatter = thread_reformatter("encoder")
        return [yuv_for_encoder(frame, pix_fmt, colorspace, reformatter, threads=1) for frame in self.frames]
