"""Encoding frames to a new file that keeps every frame's timestamp, with the source's other streams.

Defaults: H.264 (libx264, bundled in PyAV's wheels) in yuv420p, CRF 20, preset veryfast, limited range,
tagged with the source's colour matrix, primaries and transfer. `codec: auto` takes NVIDIA's hardware
encoder (h264_nvenc) where it opens and libx264 where it does not, logging why. 4:2:0 needs even sizes,
so an odd width or height is padded by one edge-replicated column or row. The file is written under a
temporary name beside the target and renamed into place only when complete: a reader never sees a
partial file.

Frames reach the encoder in one of two ways (`prepare`): RGB pixels an op returned are converted to YUV
once; a batch whose pixels no op read goes in as the decoder made it (YUV to YUV only if the pixel format
differs), never through RGB. `prepare` may run in any thread, so conversion runs beside encoding.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import cache
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np

from framefleet.batch import FrameBatch
from framefleet.errors import OptionError, OutputError
from framefleet.temporary import temporary_path
from framefleet.video.container import VideoSource
from framefleet.video.frames import rgb_to_frame, thread_reformatter
from framefleet.video.remux import CarriedStream, StreamCarrier

log = logging.getLogger(__name__)

PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
HARDWARE_CODECS = ("h264_nvenc", "hevc_nvenc", "av1_nvenc")
_NVENC_PRESETS = {"ultrafast": "p1", "superfast": "p1", "veryfast": "p2", "faster": "p3", "fast": "p4",
                  "medium": "p5", "slow": "p6", "slower": "p7", "veryslow": "p7"}
"""x264 preset names mapped to NVENC's p1 (fastest) to p7 (best); p1-p7 are taken as they are too."""


@dataclass(frozen=True)
class EncodeOptions:
    """How the output video stream is encoded."""

    codec: str = "libx264"
    """An FFmpeg video encoder (libx264, libx265, h264_nvenc, ...), or auto: h264_nvenc where it opens, else
    libx264."""
    crf: int = 20
    """Constant rate factor: 0 (lossless) to 51; lower is better and bigger."""
    preset: str = "veryfast"
    pix_fmt: str = "yuv420p"
    threads: int = 0
    """Encoder threads; 0 lets the encoder choose."""

    def __post_init__(self) -> None:
        if not 0 <= self.crf <= 51:
            raise OptionError(f"--crf must be between 0 and 51, got {self.crf}")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 0:
            raise OptionError(f"threads must be a whole number, 0 or more (0: the encoder chooses), got {self.threads!r}")
        try:
            kind = "video" if self.codec == "auto" else av.Codec(self.codec, "w").type
        except (ValueError, TypeError):
            kind = None
        if kind != "video":
            raise OptionError(f"codec {self.codec!r}: this FFmpeg build has no video encoder of that name")
        nvenc_presets = tuple(f"p{n}" for n in range(1, 8))
        if self.codec in ("libx264", "auto") and self.preset not in PRESETS:
            raise OptionError(f"--preset must be one of {', '.join(PRESETS)}; got {self.preset!r}")
        if self.codec in HARDWARE_CODECS and self.preset not in PRESETS + nvenc_presets:
            raise OptionError(f"--preset for {self.codec} must be p1-p7 or one of {', '.join(PRESETS)}; "
                              f"got {self.preset!r}")

    def resolved(self) -> EncodeOptions:
        """These options with `auto` and an unusable hardware encoder replaced by what opens here (logged)."""
        if self.codec not in ("auto", *HARDWARE_CODECS):
            return self
        wanted = "h264_nvenc" if self.codec == "auto" else self.codec
        reason = hardware_encoder_problem(wanted)
        if reason is None:
            return EncodeOptions(codec=wanted, crf=self.crf, preset=self.preset, pix_fmt=self.pix_fmt,
                                 threads=self.threads)
        log.warning("%s cannot encode here (%s); encoding with libx264 instead", wanted, reason)
        return EncodeOptions(crf=self.crf, preset=self.preset if self.preset in PRESETS else "veryfast",
                             pix_fmt=self.pix_fmt, threads=self.threads)

    def codec_options(self) -> dict[str, str]:
        """The encoder's private options for the quality and speed settings."""
        if self.codec == "libx264":
            return {"crf": str(self.crf), "preset": self.preset}
        if self.codec in HARDWARE_CODECS:
            return {"rc": "vbr", "cq": str(max(1, self.crf)), "preset": _NVENC_PRESETS.get(self.preset, self.preset)}
        return {}


@cache
def hardware_encoder_problem(codec: str) -> str | None:
    """Why `codec` (a hardware encoder) cannot open on this machine, or None when it can (tried once per
    process with a small frame)."""
    try:
        context = av.CodecContext.create(codec, "w")
        context.width, context.height, context.pix_fmt = 256, 256, "yuv420p"
        context.time_base = Fraction(1, 25)
        context.open()
        context.close()
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        return str(exc) or type(exc).__name__
    return None


@dataclass(frozen=True)
class VideoFormat:
    """The timing and colour of the video being written (taken from its source)."""

    time_base: Fraction
    average_rate: Fraction | None
    colorspace: int
    color_primaries: int
    color_trc: int


class VideoWriter:
    """Writes batches of RGB frames as the video of `path`, plus the carried streams of `carry_from`.

    Timestamps are written as given, less `offset` seconds (the source's start time when carrying,
    so outputs start at zero like the ffmpeg CLI's), keeping variable frame rates and gaps exactly.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        width: int,
        height: int,
        video_format: VideoFormat,
        options: EncodeOptions = EncodeOptions(),
        carry_from: VideoSource | None = None,
        carry_skip_index: int = -1,
        offset: Fraction = Fraction(0),
    ) -> None:
        self.path = Path(path)
        self._tmp = temporary_path(self.path)
        self._format = video_format
        self._offset_pts = round(offset / video_format.time_base)
        options = options.resolved()
        self.codec = options.codec
        self._width, self._height = width + width % 2, height + height % 2
        if (self._width, self._height) != (width, height):
            log.info("%s: %dx%d padded to %dx%d (4:2:0 needs even sizes)", self.path, width, height,
                     self._width, self._height)
        try:
            self._container = av.open(str(self._tmp), mode="w", container_options={"avoid_negative_ts": "disabled"})
        except (av.error.FFmpegError, ValueError, OSError) as exc:
            raise OutputError(f"{self.path}: cannot create the output ({exc})") from None
        try:
            self._stream = self._add_video_stream(options)
            self._carrier = (
                StreamCarrier(carry_from, self._container, video_index=carry_skip_index, offset=offset)
                if carry_from
                else None
            )
        except BaseException:
            self.abort()
            raise
        self.closed = False

    @property
    def carried(self) -> list[CarriedStream]:
        """What happened to each non-video stream of the source."""
        return self._carrier.carried if self._carrier else []

    def _add_video_stream(self, options: EncodeOptions) -> av.video.stream.VideoStream:
        codec_id = av.codec.Codec(options.codec, "w").canonical_name
        if codec_id not in self._container.supported_codecs:
            raise OutputError(
                f"{self.path}: the {self._container.format.name} format cannot hold {codec_id} video; "
                "use .mp4, .mkv or .mov"
            )
        stream = self._container.add_stream(options.codec)
        stream.width, stream.height = self._width, self._height
        stream.pix_fmt = options.pix_fmt
        stream.time_base = self._format.time_base
        cc = stream.codec_context
        cc.time_base = self._format.time_base
        if self._format.average_rate:
            cc.framerate = self._format.average_rate
        cc.colorspace = self._format.colorspace
        cc.color_range = 1  # limited ("tv") range
        cc.color_primaries = self._format.color_primaries
        cc.color_trc = self._format.color_trc
        cc.thread_count = options.threads
        # PyAV opens encoders with thread_type SLICE, which makes libx264 use sliced threads; AUTO (FFmpeg's
        # and the ffmpeg CLI's default) gives x264's frame threads: faster and better compression.
        cc.thread_type = "AUTO"
        cc.options = options.codec_options()
        return stream

    def prepare(self, batch: FrameBatch) -> list[av.VideoFrame]:
        """The batch's frames as the encoder takes them, timestamps set; safe to call from several threads
        (each converts on one thread: the callers run side by side).

        Frames whose pixels no op read are the decoder's own (YUV to YUV at most); others are converted
        from RGB (H x W x 3 uint8 at the writer's size before even-padding)."""
        reformatter = thread_reformatter("encoder")
        frames = None
        if not batch.pixels_read and batch.decoded is not None:
            frames = batch.decoded.for_encoder(self._stream.pix_fmt, self._format.colorspace)
        if frames is None:
            frames = [rgb_to_frame(self._pad_even(rgb), pix_fmt=self._stream.pix_fmt,
                                   colorspace=self._format.colorspace, reformatter=reformatter, threads=1)
                      for rgb in batch.frames]
        for frame, pts in zip(frames, batch.pts):
            frame.pts = int(pts) - self._offset_pts
            frame.time_base = self._format.time_base
        return frames

    def write(self, batch: FrameBatch) -> None:
        """Encode a batch (see `prepare`)."""
        self.write_prepared(self.prepare(batch))

    def write_prepared(self, frames: list[av.VideoFrame]) -> None:
        """Encode frames made by `prepare`, in order."""
        for frame in frames:
            self._mux(self._stream.encode(frame))

    def close(self) -> None:
        """Flush the encoder, finish carrying streams, and move the file into place."""
        try:
            self._mux(self._stream.encode(None))
            if self._carrier:
                self._carrier.finish()
            self._container.close()
        except BaseException:
            self.abort()
            raise
        os.replace(self._tmp, self.path)
        self.closed = True

    def abort(self) -> None:
        """Stop writing and remove the temporary file; the target is left untouched."""
        for closer in (getattr(self, "_carrier", None), getattr(self, "_container", None)):
            if closer is not None:
                try:
                    closer.close()
                except Exception:  # noqa: BLE001 - best effort on the way out of an error
                    pass
        self._tmp.unlink(missing_ok=True)
        self.closed = True

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if self.closed:
            return
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _mux(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            if self._carrier and packet.dts is not None:
                self._carrier.advance(packet.dts * packet.time_base)
            self._container.mux(packet)

    def _pad_even(self, rgb: np.ndarray) -> np.ndarray:
        pad_h, pad_w = self._height - rgb.shape[0], self._width - rgb.shape[1]
        if pad_h or pad_w:
            return np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        return rgb
