"""`probe`: what is in a video file, from its header and (when asked) from a scan of its packets.

Header fields are what the container claims; `frame_count` (exact) and `keyframe_pts` come from reading
the file and say so in their names, like ffprobe's `nb_frames` versus `-count_frames`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any

import av
import av.error

from framefleet.errors import CorruptVideoError
from framefleet.settings import InputLimits
from framefleet.video.colour import HdrMetadata, bit_depth_of, output_colours, transfer_of
from framefleet.video.container import VideoSource, check_reads, open_input, select_video_stream, source_size
from framefleet.video.frames import display_matrix
from framefleet.video.orientation import Orientation


@dataclass(frozen=True)
class StreamInfo:
    """One stream of a container, as its header describes it."""

    index: int
    kind: str
    """video, audio, subtitle, data or attachment."""
    codec: str | None
    time_base: Fraction | None
    start_time: float | None
    """Seconds."""
    duration: float | None
    """Seconds, from the header (None when the container does not say)."""
    language: str | None = None
    width: int | None = None
    height: int | None = None
    pix_fmt: str | None = None
    average_rate: Fraction | None = None
    real_rate: Fraction | None = None
    """The base rate: the smallest frame rate that represents all timestamps exactly."""
    frames_header: int | None = None
    """Frame count the header claims (0 or missing in many containers)."""
    sample_rate: int | None = None
    channels: int | None = None
    channel_layout: str | None = None


@dataclass(frozen=True)
class VideoInfo:
    """A video file: its container, its streams, and the selected video stream in detail."""

    path: str
    format_name: str
    size_bytes: int
    duration: float | None
    """Container duration in seconds (the longest stream)."""
    start_time: float | None
    bit_rate: int | None
    streams: tuple[StreamInfo, ...]
    video_index: int
    """Index of the video stream framefleet processes."""
    coded_width: int
    coded_height: int
    width: int
    """Displayed width, after the display matrix (what framefleet outputs, before rounding to even)."""
    height: int
    rotation: int
    """Counter-clockwise display rotation in degrees (0, 90, 180, 270)."""
    mirrored: bool
    orientation: Orientation
    pix_fmt: str | None
    color_range: int
    colorspace: int
    color_primaries: int
    color_trc: int
    average_rate: Fraction | None
    real_rate: Fraction | None
    time_base: Fraction
    frame_count_header: int | None
    """Frames claimed by the header, or estimated from duration x average rate when it claims none."""
    frame_count: int | None = None
    """Frames that actually decode (only when probed with ``exact=True``)."""
    keyframe_pts: tuple[int, ...] | None = field(default=None, repr=False)
    """Presentation timestamps of the video keyframes, in `time_base` units (only with ``keyframes=True``)."""
    packet_count: int | None = None
    hdr_metadata: HdrMetadata = field(default_factory=HdrMetadata)
    """HDR10 static metadata and Dolby Vision signalling of the first frame."""

    @property
    def transfer(self) -> str:
        """pq, hlg (HDR) or sdr."""
        return transfer_of(self.color_trc)

    @property
    def bit_depth(self) -> int:
        """Bits per component of the decoded frames."""
        return bit_depth_of(self.pix_fmt)

    @property
    def keyframe_times(self) -> tuple[float, ...] | None:
        """Keyframe positions in seconds."""
        if self.keyframe_pts is None:
            return None
        return tuple(float(p * self.time_base) for p in self.keyframe_pts)

    @property
    def video(self) -> StreamInfo:
        return next(s for s in self.streams if s.index == self.video_index)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (fractions as "num/den" strings)."""
        data = _jsonable(asdict(self))
        data["keyframe_times"] = list(self.keyframe_times) if self.keyframe_pts is not None else None
        data["orientation"] = {"rotation": self.rotation, "mirrored": self.mirrored}
        data["transfer"], data["hdr"], data["bit_depth"] = self.transfer, self.transfer != "sdr", self.bit_depth
        data["output_colour"] = self.output_colours()
        return data

    def output_colours(self) -> dict[str, str]:
        """What this video becomes through ops that expect SDR (by default and with --hdr keep) and others."""
        return output_colours(color_trc=self.color_trc, pix_fmt=self.pix_fmt, metadata=self.hdr_metadata)


def probe(
    path: VideoSource,
    *,
    exact: bool = False,
    keyframes: bool = True,
    video_stream: int | None = None,
    limits: InputLimits | None = None,
) -> VideoInfo:
    """Describe a video: a local file or a `RemoteVideo`.

    `keyframes` reads the packets (no decoding) to list keyframe positions; `exact` decodes every frame
    of the video stream to count the frames that really decode. With `limits`, what the header claims is
    checked before the first frame is decoded, and that frame's size after. Raises `InputNotFoundError`,
    `NotAVideoError`, `CorruptVideoError` or `LimitError` with a one-line message.
    """
    with open_input(path) as container:
        vs = select_video_stream(container, video_stream)
        if vs.codec_context is None:
            raise CorruptVideoError(f"{path}: corrupt video, the codec of its video stream {vs.index} is unknown")
        streams = tuple(_stream_info(s) for s in container.streams)
        header_frames = vs.frames or None
        if header_frames is None and vs.average_rate:
            # Matroska/WebM give no stream duration: fall back to the container's
            if vs.duration:
                seconds = vs.duration * vs.time_base
            elif container.duration:
                seconds = Fraction(container.duration, av.time_base)
            else:
                seconds = None
            if seconds:
                header_frames = round(min(float(seconds * vs.average_rate), 1e18))
        if limits is not None:
            limits.check_header(path, streams=len(streams), width=vs.codec_context.width,
                                height=vs.codec_context.height, frames=header_frames,
                                seconds=container.duration / av.time_base if container.duration else None)
        first = _first_frame(container, vs, path)
        if limits is not None:
            limits.check_frame_size(path, first.width, first.height)
        orientation = Orientation.from_display_matrix(display_matrix(first))
        width, height = orientation.display_size(first.width, first.height)
        info = dict(
            path=str(path),
            format_name=container.format.name,
            size_bytes=source_size(path),
            duration=container.duration / av.time_base if container.duration else None,
            start_time=container.start_time / av.time_base if container.start_time is not None else None,
            bit_rate=container.bit_rate or None,
            streams=streams,
            video_index=vs.index,
            coded_width=first.width,
            coded_height=first.height,
            width=width,
            height=height,
            rotation=orientation.rotation,
            mirrored=orientation.mirrored,
            orientation=orientation,
            pix_fmt=first.format.name,
            color_range=int(first.color_range),
            colorspace=int(first.colorspace),
            color_primaries=int(first.color_primaries),
            color_trc=int(first.color_trc),
            average_rate=_fraction(vs.average_rate),
            real_rate=_fraction(vs.base_rate),
            time_base=Fraction(vs.time_base),
            frame_count_header=header_frames,
            hdr_metadata=HdrMetadata.from_frame(first),
        )
    if keyframes:
        info["keyframe_pts"], info["packet_count"] = _scan_keyframes(path, info["video_index"])
    if exact:
        info["frame_count"] = count_frames(path, video_stream=info["video_index"])
    check_reads(path)
    return VideoInfo(**info)


def count_frames(path: VideoSource, *, video_stream: int | None = None) -> int:
    """Decode the whole video stream and count the frames that come out."""
    with open_input(path) as container:
        vs = select_video_stream(container, video_stream)
        vs.thread_type = "AUTO"
        count = 0
        try:
            for _ in container.decode(vs):
                count += 1
        except av.error.FFmpegError as exc:
            check_reads(path)
            raise CorruptVideoError(f"{path}: corrupt video, decoding stopped after {count} frames ({exc})") from None
        check_reads(path)
        return count


def _first_frame(container: av.container.InputContainer, vs, path) -> av.VideoFrame:
    try:
        for frame in container.decode(vs):
            return frame
    except av.error.FFmpegError as exc:
        raise CorruptVideoError(f"{path}: corrupt video, its first frame does not decode ({exc})") from None
    raise CorruptVideoError(f"{path}: corrupt video, no frame of stream {vs.index} decodes")


def _scan_keyframes(path, index: int) -> tuple[tuple[int, ...], int]:
    keys: list[int] = []
    packets = 0
    with open_input(path) as container:
        vs = select_video_stream(container, index)
        try:
            for packet in container.demux(vs):
                if packet.size == 0:
                    continue
                packets += 1
                if packet.is_keyframe and packet.pts is not None:
                    keys.append(packet.pts)
        except (av.error.FFmpegError, IndexError):  # IndexError: a stream that appears mid-file (damage)
            pass  # a damaged tail: the keyframes read so far are still right
    return tuple(sorted(set(keys))), packets


def _stream_info(stream) -> StreamInfo:
    cc = stream.codec_context
    common = dict(
        index=stream.index,
        kind=stream.type,
        codec=cc.name if cc is not None else None,
        time_base=_fraction(stream.time_base),
        start_time=float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else None,
        duration=float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None,
        language=stream.language,
    )
    if cc is None:  # a codec FFmpeg does not know (a damaged header): nothing more to say
        return StreamInfo(**common)
    if stream.type == "video":
        return StreamInfo(
            **common,
            width=cc.width,
            height=cc.height,
            pix_fmt=cc.pix_fmt,
            average_rate=_fraction(stream.average_rate),
            real_rate=_fraction(stream.base_rate),
            frames_header=stream.frames or None,
        )
    if stream.type == "audio":
        return StreamInfo(
            **common,
            sample_rate=cc.sample_rate,
            channels=cc.channels,
            channel_layout=cc.layout.name if cc.layout else None,
            frames_header=stream.frames or None,
        )
    return StreamInfo(**common)


def _fraction(value) -> Fraction | None:
    return Fraction(value) if value else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, Fraction):
        return f"{value.numerator}/{value.denominator}"
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
