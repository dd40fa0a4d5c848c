"""Encoding frames to a new file that keeps every frame's timestamp, with the source's other streams.

Defaults: H.264 (libx264, bundled in PyAV's wheels) in yuv420p, CRF 20, preset veryfast, limited range,
tagged with the source's colour matrix, primaries and transfer. The output's extension picks the container;
when that container cannot hold H.264 (WebM) and no codec was asked for, the first it holds of VP9
(libvpx-vp9), AV1 (libsvtav1), ... is used, and logged. `codec: auto` takes NVIDIA's hardware encoder
(h264_nvenc) where it opens and the default where it does not, logging why. 4:2:0 needs even sizes,
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
from dataclasses import dataclass, replace
from fractions import Fraction
from functools import cache
from pathlib import Path

import av
import av.error
import numpy as np

from framefleet.errors import OptionError, OutputError
from framefleet.files.temporary import temporary_path
from framefleet.processing.batch import FrameBatch
from framefleet.settings import PRESETS
from framefleet.video.colour import ColourPlan, check_hdr_mode, output_pix_fmt
from framefleet.video.container import VideoSource
from framefleet.video.frames import rgb_to_frame, thread_reformatter
from framefleet.video.muxing import encodes, holds_encoder, output_format, video_encoder_for
from framefleet.video.remux import CarriedStream, StreamCarrier

log = logging.getLogger(__name__)
os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its configuration to stderr unless told errors only

HARDWARE_CODECS = ("h264_nvenc", "hevc_nvenc", "av1_nvenc")
QSCALE_CODECS = ("mpeg4", "mpeg2video")
"""Encoders with no CRF: the quality setting becomes their fixed quantiser (`EncodeOptions.qscale`)."""
_NVENC_PRESETS = {"ultrafast": "p1", "superfast": "p1", "veryfast": "p2", "faster": "p3", "fast": "p4",
                  "medium": "p5", "slow": "p6", "slower": "p7", "veryslow": "p7"}
"""x264 preset names mapped to NVENC's p1 (fastest) to p7 (best); p1-p7 are taken as they are too."""
_VP9_SPEED = {"ultrafast": 8, "superfast": 7, "veryfast": 6, "faster": 5, "fast": 4, "medium": 3, "slow": 2,
              "slower": 1, "veryslow": 0}
"""x264 presets mapped to libvpx-vp9's cpu-used (8 fastest; 6 and above in its realtime mode)."""
_SVT_PRESET = {"ultrafast": 13, "superfast": 12, "veryfast": 10, "faster": 9, "fast": 8, "medium": 6, "slow": 5,
               "slower": 4, "veryslow": 2}
"""x264 presets mapped to SVT-AV1's presets (13 fastest)."""


@dataclass(frozen=True)
class EncodeOptions:
    """How the output video stream is encoded."""

    codec: str | None = None
    """An FFmpeg video encoder (libx264, libx265, libvpx-vp9, libsvtav1, h264_nvenc, ...); None: H.264
    (libx264) where the output's container holds it, else the first of VP9, AV1, ... it holds (WebM: VP9);
    auto: h264_nvenc where it opens, else as None."""
    crf: int = 20
    """Constant rate factor: 0 (lossless) to 51; lower is better and bigger."""
    preset: str = "veryfast"
    pix_fmt: str = "yuv420p"
    threads: int = 0
    """Encoder threads; 0 lets the encoder choose."""
    bframes: int | None = None
    """B-frames between reference frames; None lets the encoder's preset choose (0 for an AVI output, which
    stores no presentation times to reorder them by)."""
    hdr: str = "sdr"
    """What an HDR input becomes when an op expects SDR pictures (`framefleet.video.colour`): sdr (SDR BT.709,
    8-bit) or keep (the op's output placed back in the source's HDR transfer, 10-bit)."""

    def __post_init__(self) -> None:
        if not 0 <= self.crf <= 51:
            raise OptionError(f"--crf must be between 0 and 51, got {self.crf}")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 0:
            raise OptionError(f"threads must be a whole number, 0 or more (0: the encoder chooses), got {self.threads!r}")
        try:
            kind = "video" if self.codec in (None, "auto") else av.Codec(self.codec, "w").type
        except (ValueError, TypeError):
            kind = None
        if kind != "video":
            raise OptionError(f"codec {self.codec!r}: this FFmpeg build has no video encoder of that name")
        check_hdr_mode(self.hdr)
        nvenc_presets = tuple(f"p{n}" for n in range(1, 8))
        if self.codec not in HARDWARE_CODECS and self.preset not in PRESETS:
            raise OptionError(f"--preset must be one of {', '.join(PRESETS)}; got {self.preset!r}")
        if self.codec in HARDWARE_CODECS and self.preset not in PRESETS + nvenc_presets:
            raise OptionError(f"--preset for {self.codec} must be p1-p7 or one of {', '.join(PRESETS)}; "
                              f"got {self.preset!r}")

    def for_output(self, path: str | os.PathLike[str], *, bits: int = 8, hdr: bool = False) -> EncodeOptions:
        """These options with the encoder settled for a file named `path` (its extension picks the container):
        no codec or `auto` becomes the one to use there (logged when it is not H.264, or when the hardware
        encoder cannot open); a codec the container cannot hold is a one-line OutputError. With `bits` 10,
        the pixel format becomes 10-bit, and a codec that cannot encode it gives way to one that can (when
        none was asked for), else 8 bits are written (logged), except under HDR tags (`hdr`): an OutputError."""
        settled = self._settled(path)
        if bits <= 8:
            return settled
        return settled._ten_bit(Path(path).name, hdr=hdr, asked=self.codec not in (None, "auto"))

    def _ten_bit(self, name: str, *, hdr: bool, asked: bool) -> EncodeOptions:
        """These settled options writing 10 bits, with another codec when this one cannot and none was asked."""
        pix_fmt = output_pix_fmt(10)
        if encodes(self.codec, pix_fmt):
            return replace(self, pix_fmt=pix_fmt)
        other = video_encoder_for(output_format(name), pix_fmt)
        if not asked and other is not None:
            log.info("%s: %s cannot encode 10-bit video; encoding with %s, which can", name, self.codec, other)
            return replace(self, codec=other, pix_fmt=pix_fmt, preset=self.preset if self.preset in PRESETS
                           else "veryfast")
        if not hdr:
            log.info("%s: %s cannot encode 10-bit video; writing 8 bits", name, self.codec)
            return self
        hint = f"use --codec {other}" if other else "name the output .mp4 or .mkv"
        raise OutputError(f"{name}: {self.codec} cannot encode 10-bit video, which an HDR output needs (8 bits "
                          f"under HDR tags would band); {hint}")

    def _settled(self, path: str | os.PathLike[str]) -> EncodeOptions:
        name = Path(path).name
        container = output_format(name)
        options = replace(self, bframes=0) if container == "avi" and self.bframes is None else self
        codec = self.codec
        if codec in ("auto", *HARDWARE_CODECS):
            wanted = "h264_nvenc" if codec == "auto" else codec
            reason = hardware_encoder_problem(wanted)
            if reason is None and holds_encoder(container, wanted):
                return replace(options, codec=wanted)
            fallback = video_encoder_for(container) or "libx264"
            log.warning("%s cannot encode here (%s); encoding with %s instead", wanted,
                        reason or f"the {container} format cannot hold its video", fallback)
            return replace(options, codec=fallback, preset=self.preset if self.preset in PRESETS else "veryfast")
        if codec is None:
            chosen = video_encoder_for(container)
            if chosen is None:
                raise OutputError(f"{name}: the {container} format holds none of the video encoders framefleet "
                                  "uses; name the output .mp4, .mkv, .mov or .webm")
            if chosen != "libx264":
                log.info("%s: the %s format cannot hold H.264 video; encoding with %s", name, container, chosen)
            return replace(options, codec=chosen)
        if not holds_encoder(container, codec):
            usable = video_encoder_for(container)
            hint = f"use --codec {usable} or " if usable else ""
            raise OutputError(f"{name}: the {container} format cannot hold {av.Codec(codec, 'w').canonical_name} "
                              f"video; {hint}name the output .mp4, .mkv or .mov")
        return options

    def qscale(self) -> int:
        """CRF as the fixed quantiser of MPEG-4 part 2 and MPEG-2 (1-31; CRF 20 -> 3, and each 6 steps of CRF
        double it, as they roughly double x264's quantiser)."""
        return max(1, min(31, round(2 ** ((self.crf - 11) / 6))))

    def codec_options(self) -> dict[str, str]:
        """The encoder's private options for the quality and speed settings (CRF on x264's 0-51 scale,
        scaled to 0-63 for VP9 and AV1; x264's presets mapped to the others' speeds)."""
        wide_crf = str(max(1, round(self.crf * 63 / 51)))
        if self.codec == "libx264":
            return {"crf": str(self.crf), "preset": self.preset}
        if self.codec == "libx265":
            return {"crf": str(self.crf), "preset": self.preset, "x265-params": "log-level=error"}
        if self.codec == "libvpx-vp9":
            speed = _VP9_SPEED[self.preset]
            return {"crf": wide_crf, "b": "0", "row-mt": "1", "cpu-used": str(speed),
                    "deadline": "realtime" if speed >= 6 else "good"}
        if self.codec == "libsvtav1":
            return {"crf": wide_crf, "preset": str(_SVT_PRESET[self.preset])}
        if self.codec in HARDWARE_CODECS:
            return {"rc": "vbr", "cq": str(max(1, self.crf)), "preset": _NVENC_PRESETS.get(self.preset, self.preset)}
        return {}


@cache
def encodes_odd_sizes(codec: str, pix_fmt: str) -> bool:
    """Whether the encoder `codec` takes frames of `pix_fmt` with an odd width and height (VP9, AV1, MPEG-2 and
    MPEG-4 part 2 do in 4:2:0; x264 and x265 do not); tried once per process with a small frame."""
    try:
        context = av.CodecContext.create(codec, "w")
        context.width, context.height, context.pix_fmt = 161, 121, pix_fmt
        context.time_base = Fraction(1, 25)
        if codec == "libx265":
            context.options = {"x265-params": "log-level=none"}
        context.open()
    except (av.error.FFmpegError, ValueError, OSError):
        return False
    return True


@cache
def hardware_encoder_problem(codec: str) -> str | None:
    """Why `codec` (a hardware encoder) cannot open on this machine, or None when it can (tried once per
    process with a small frame)."""
    try:
        context = av.CodecContext.create(codec, "w")
        context.width, context.height, context.pix_fmt = 256, 256, "yuv420p"
        context.time_base = Fraction(1, 25)
        context.open()
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
    colour: ColourPlan | None = None
    """How the source's colours become the output's (bit depth, SDR rendering, HDR metadata); None: as SDR."""


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
        colour = video_format.colour
        options = options.for_output(self.path, bits=colour.bits if colour else 8,
                                     hdr=colour is not None and colour.output != "sdr")
        self.codec = options.codec
        self._size = self._width, self._height = width, height
        self._rescaling = False
        if (width % 2 or height % 2) and not encodes_odd_sizes(options.codec, options.pix_fmt):
            self._width, self._height = width + width % 2, height + height % 2
            log.info("%s: %dx%d padded to %dx%d (%s needs even sizes in 4:2:0)", self.path, width, height,
                     self._width, self._height, options.codec)
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
        if options.bframes is not None:
            cc.max_b_frames = options.bframes
        # PyAV opens encoders with thread_type SLICE, which makes libx264 use sliced threads; AUTO (FFmpeg's
        # and the ffmpeg CLI's default) gives x264's frame threads: faster and better compression.
        cc.thread_type = "AUTO"
        cc.options = self._with_metadata(options.codec_options(), options.codec)
        if options.codec in QSCALE_CODECS:
            cc.qscale = options.qscale()
        return stream

    def _with_metadata(self, codec_options: dict[str, str], codec: str) -> dict[str, str]:
        """The encoder's options plus the parameters that write the source's HDR10 metadata (when carried)."""
        colour = self._format.colour
        if colour is None or colour.metadata is None:
            return codec_options
        extra = colour.metadata.encoder_options(codec, content_light=colour.content_light)
        merged = dict(codec_options)
        for key, value in extra.items():
            merged[key] = f"{merged[key]}:{value}" if key in merged else value
        return merged

    def prepare(self, batch: FrameBatch) -> list[av.VideoFrame]:
        """The batch's frames as the encoder takes them, timestamps set; safe to call from several threads
        (each converts on one thread: the callers run side by side).

        Frames whose pixels no op read are the decoder's own (YUV to YUV at most); others are converted
        from RGB (H x W x 3 uint8 at the writer's size before even-padding)."""
        reformatter = thread_reformatter("encoder")
        colour = self._format.colour
        frames = None
        if not batch.pixels_read and batch.decoded is not None and (colour is None or colour.passthrough):
            frames = batch.decoded.for_encoder(self._stream.pix_fmt, self._format.colorspace,
                                               (self._width, self._height))
        if frames is None:
            to_hdr = colour.from_sdr if colour is not None else None
            frames = [rgb_to_frame(*self._fitted(to_hdr(rgb) if to_hdr else rgb), pix_fmt=self._stream.pix_fmt,
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

    def _fitted(self, rgb: np.ndarray) -> tuple[np.ndarray, tuple[int, int] | None]:
        """The frame and the size to scale it to on its way to YUV (None: none): a frame of the size this writer
        was made for is padded to even where the encoder needs it; one of another size (a stream whose size
        changes part-way) is scaled to the output's size, as the ffmpeg CLI does (logged once)."""
        height, width = rgb.shape[:2]
        if (width, height) != self._size:
            if not self._rescaling:
                log.warning("%s: the frames change size part-way (%dx%d, was %dx%d): scaled to the output's size",
                            self.path, width, height, *self._size)
                self._rescaling = True
            return rgb, (self._width, self._height)
        pad_h, pad_w = self._height - height, self._width - width
        if pad_h or pad_w:
            return np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge"), None
        return rgb, None
