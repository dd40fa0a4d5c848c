"""Carrying a source's audio, subtitle and data streams into an output, packet for packet.

Streams the output container accepts are stream-copied (no re-encode, byte-identical packets). Audio
the container cannot hold is transcoded (AAC, or what the container takes: Opus for WebM), and the reason
is logged. Subtitles and data the
container cannot hold, extra video streams and attachments are left out, and that is logged too.
Packets are read lazily and muxed in time order next to the video, so memory stays bounded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import av.error

from framefleet.video.container import VideoSource, check_reads, open_input
from framefleet.video.muxing import audio_encoder_for, holds_copy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CarriedStream:
    """What happened to one source stream in the output."""

    source_index: int
    kind: str
    codec: str
    action: str
    """copy, transcode or drop."""
    reason: str = ""


class StreamCarrier:
    """Copies the non-video streams of `source` into `output` in step with the encoded video.

    `offset` (seconds) is subtracted from every timestamp, so the output starts where the video writer's
    output starts. Call `advance(seconds)` before muxing a video packet with that decode time and
    `finish()` once the video is flushed.
    """

    def __init__(
        self, source: VideoSource, output: av.container.OutputContainer, *, video_index: int, offset: Fraction
    ) -> None:
        self._source = source
        self._input = open_input(source)
        self._output = output
        self._offset = offset
        self.carried: list[CarriedStream] = []
        self._targets: dict[int, av.stream.Stream] = {}
        self._transcoders: dict[int, _AudioTranscoder] = {}
        for stream in self._input.streams:
            if stream.index == video_index:
                continue
            decision = self._add(stream)
            self.carried.append(decision)
            if decision.action != "copy":
                log.info("%s: stream %d (%s %s): %s, %s", source, stream.index, stream.type, decision.codec,
                         decision.action, decision.reason)
        self._packets = self._demux() if self._targets or self._transcoders else iter(())
        self._pending: av.Packet | None = None
        self._last_dts: dict[int, int] = {}
        """The last decode time muxed per source stream: a damaged input's packet timed at or before it is
        left out (logged), as is one the muxer refuses."""

    def _add(self, stream: av.stream.Stream) -> CarriedStream:
        codec = stream.codec_context.name if stream.codec_context is not None else "unknown"
        desc = _codec_id_name(stream)
        if stream.type == "video":
            return CarriedStream(stream.index, stream.type, codec, "drop", "only one video stream is processed")
        if stream.type == "attachment":
            return CarriedStream(stream.index, stream.type, codec, "drop", "attachments are not carried")
        if stream.codec_context is None:  # a damaged header: nothing to copy or decode it with
            return CarriedStream(stream.index, stream.type, codec, "drop", "its codec is unknown")
        if holds_copy(self._output, stream):
            self._targets[stream.index] = self._output.add_stream_from_template(stream)
            return CarriedStream(stream.index, stream.type, codec, "copy")
        reason = f"{self._output.format.name} cannot hold {desc}"
        if desc in self._output.supported_codecs:  # the codec, yes; this stream's parameters (damage), no
            reason += " as this stream describes it"
        encoder = audio_encoder_for(self._output.format.name) if stream.type == "audio" else None
        if encoder is not None:
            self._transcoders[stream.index] = _AudioTranscoder(stream, self._output, encoder)
            return CarriedStream(stream.index, stream.type, codec, "transcode", f"{reason}; transcoded with {encoder}")
        return CarriedStream(stream.index, stream.type, codec, "drop", reason)

    def _demux(self) -> Iterator[av.Packet]:
        streams = [self._input.streams[i] for i in (*self._targets, *self._transcoders)]
        try:
            for packet in self._input.demux(streams):
                if packet.dts is None and packet.pts is None:
                    continue  # flush marker
                yield packet
        except (av.error.FFmpegError, IndexError) as exc:  # a damaged tail: carry what came before it
            log.warning("%s: the other streams end early (%s)", self._source, exc)

    def advance(self, seconds: Fraction | None) -> None:
        """Mux every carried packet whose decode time (after the offset) is at or before `seconds`."""
        while True:
            if self._pending is None:
                self._pending = next(self._packets, None)
                if self._pending is None:
                    return
            packet = self._pending
            stamp = packet.dts if packet.dts is not None else packet.pts
            if seconds is not None and stamp * packet.time_base - self._offset > seconds:
                return
            self._pending = None
            self._mux(packet)

    def finish(self) -> None:
        """Mux everything left, flush transcoders, close the source."""
        self.advance(None)
        for transcoder in self._transcoders.values():
            transcoder.flush()
        self._input.close()
        check_reads(self._source)

    def close(self) -> None:
        self._input.close()

    def _mux(self, packet: av.Packet) -> None:
        index = packet.stream.index
        shift = round(self._offset / packet.time_base)
        if index in self._transcoders:
            self._transcoders[index].feed(packet, shift)
            return
        if packet.pts is not None:
            packet.pts -= shift
        packet.dts = packet.dts - shift if packet.dts is not None else packet.pts
        if packet.dts is not None and packet.dts <= self._last_dts.get(index, packet.dts - 1):
            self._drop(packet, index, "timed at or before the previous one")
            return
        dts = packet.dts  # in the source's time base (muxing rescales the packet to the output's)
        packet.stream = self._targets[index]
        try:
            self._output.mux(packet)
        except (av.error.ArgumentError, av.error.InvalidDataError) as exc:
            self._drop(packet, index, f"the muxer refuses it: {exc.strerror or exc}")
            return
        if dts is not None:
            self._last_dts[index] = dts

    def _drop(self, packet: av.Packet, index: int, why: str) -> None:
        log.warning("%s: leaving out a packet of stream %d at %s (%s)", self._source, index, packet.dts, why)


class _AudioTranscoder:
    """Decodes one audio stream and encodes it with `encoder` in the output, keeping its timing."""

    def __init__(self, stream: av.audio.stream.AudioStream, output: av.container.OutputContainer,
                 encoder: str) -> None:
        self._source = stream
        self._output = output
        codec = av.Codec(encoder, "w")
        rate = stream.codec_context.sample_rate or 48000
        if codec.audio_rates and rate not in codec.audio_rates:  # Opus: 48 kHz (or 8-24)
            rate = 48000 if 48000 in codec.audio_rates else max(codec.audio_rates)
        self._stream = output.add_stream(encoder, rate=rate)
        self._stream.layout = stream.codec_context.layout if stream.codec_context.layout.nb_channels else "stereo"
        sample_format = codec.audio_formats[0].name if codec.audio_formats else "fltp"
        self._stream.format = sample_format
        self._resampler = av.AudioResampler(format=sample_format, layout=self._stream.layout, rate=rate)

    def feed(self, packet: av.Packet, shift: int) -> None:
        try:
            frames = packet.decode()
        except av.error.FFmpegError as exc:
            log.warning("skipping an undecodable audio packet of stream %d: %s", self._source.index, exc)
            return
        for frame in frames:
            if frame.pts is not None:
                frame.pts -= shift
            for resampled in self._resampler.resample(frame):
                self._output.mux(self._stream.encode(resampled))

    def flush(self) -> None:
        for resampled in self._resampler.resample(None):
            self._output.mux(self._stream.encode(resampled))
        self._output.mux(self._stream.encode(None))


def _codec_id_name(stream: av.stream.Stream) -> str:
    """The codec's descriptor name (e.g. "mp3" for the "mp3float" decoder), as muxers list them."""
    cc = stream.codec_context
    if cc is None:
        return "unknown"
    return cc.codec.canonical_name
