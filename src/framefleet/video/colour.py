"""What a video's pixel values mean (transfer, primaries, bit depth, HDR metadata), and how one input's
colours go through a pipeline (`ColourPlan`).

Ops say which picture they expect (`Op.picture`): "sdr" (models trained on SDR pictures, such as the style
models) or "any" (identity, blur, resize: they keep whatever the pixels mean). For an HDR input (PQ or HLG):

- when some op expects SDR, the decoder's frames are rendered as an SDR screen shows them (`ToSdr`) and
  the output is SDR BT.709, 8-bit, tagged so; with `hdr="keep"` the op's output is placed back in the
  source's transfer and BT.2020 primaries (`FromSdr`), 10-bit, tagged as the source;
- otherwise the pixels keep their values, the output keeps the source's tags and HDR10 static metadata,
  10-bit: an 8-bit picture is never written under PQ or HLG tags.

A 10-bit SDR input keeps 10 bits through ops that keep its picture where the encoder allows. Dolby Vision's
RPU is never carried (PyAV cannot write it); a stream with no HDR10 or HLG base layer (profile 5) cannot be
shown right without it, which is a warning (an error when strict).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import av
from av.sidedata.sidedata import Type as SideDataType

from framefleet.errors import CorruptVideoError, OptionError
from framefleet.video.frames import side_data_of
from framefleet.video.tone_map import DEFAULT_SOURCE_PEAK, HDR_REFERENCE_WHITE, FromSdr, ToSdr

log = logging.getLogger(__name__)

HDR_MODES: tuple[str, ...] = ("sdr", "keep")

# FFmpeg's AVColorPrimaries / AVColorTransferCharacteristic / AVColorSpace values.
PRIMARIES_BT709, PRIMARIES_UNSPECIFIED, PRIMARIES_BT2020 = 1, 2, 9
TRC_BT709, TRC_UNSPECIFIED, TRC_PQ, TRC_HLG = 1, 2, 16, 18
MATRIX_BT709, MATRIX_BT2020 = 1, 9
_TRANSFERS = {TRC_PQ: "pq", TRC_HLG: "hlg"}
_TRANSFER_NAMES = {"pq": "PQ (SMPTE ST 2084)", "hlg": "HLG (ARIB STD-B67)", "sdr": "SDR"}
_TEN_BIT = "yuv420p10le"


def check_hdr_mode(mode: str) -> str:
    """`mode` if it is one of HDR_MODES, else a one-line OptionError."""
    if mode not in HDR_MODES:
        raise OptionError(f"--hdr must be sdr or keep, got {mode!r}")
    return mode


def transfer_of(color_trc: int) -> str:
    """pq, hlg or sdr (any other transfer)."""
    return _TRANSFERS.get(color_trc, "sdr")


def bit_depth_of(pix_fmt: str | None) -> int:
    """Bits per component of a pixel format (8 when unknown)."""
    if not pix_fmt:
        return 8
    try:
        return max(component.bits for component in av.VideoFormat(pix_fmt).components)
    except (ValueError, TypeError):
        return 8


@dataclass(frozen=True)
class HdrMetadata:
    """HDR10 static metadata and Dolby Vision signalling, as the decoder exports them on the first frame."""

    max_luminance: float | None = None
    """Mastering display peak, cd/m2."""
    min_luminance: float | None = None
    display_primaries: tuple[tuple[float, float], ...] | None = None
    """Mastering display red, green, blue and white point (CIE 1931 xy)."""
    max_cll: int | None = None
    """Maximum content light level, cd/m2."""
    max_fall: int | None = None
    """Maximum frame-average light level, cd/m2."""
    dolby_vision: bool = False
    """The stream carries Dolby Vision RPUs."""

    @classmethod
    def from_frame(cls, frame: av.VideoFrame) -> HdrMetadata:
        """What `frame`'s side data says (all None when it says nothing)."""
        values: dict = {}
        for side_data in side_data_of(frame):
            kind, raw = side_data.type, bytes(side_data)
            if kind == SideDataType.MASTERING_DISPLAY_METADATA and len(raw) >= 88:
                numbers = struct.unpack("<20i2i", raw[:88])
                ratio = [numbers[i] / numbers[i + 1] if numbers[i + 1] else 0.0 for i in range(0, 20, 2)]
                has_primaries, has_luminance = numbers[20], numbers[21]
                if has_primaries:
                    values["display_primaries"] = tuple(zip(ratio[0:8:2], ratio[1:8:2]))
                if has_luminance:
                    values["min_luminance"], values["max_luminance"] = ratio[8], ratio[9]
            elif kind == SideDataType.CONTENT_LIGHT_LEVEL and len(raw) >= 8:
                values["max_cll"], values["max_fall"] = struct.unpack("<2I", raw[:8])
            elif kind in (SideDataType.DOVI_RPU_BUFFER, SideDataType.DOVI_METADATA):
                values["dolby_vision"] = True
        return cls(**values)

    @property
    def peak(self) -> float | None:
        """The brightest light the source holds, cd/m2: its content light level, else its mastering peak."""
        return float(self.max_cll) if self.max_cll else self.max_luminance or None

    def encoder_options(self, codec: str, *, content_light: bool = True) -> dict[str, str]:
        """Encoder parameters that write this metadata in the stream (x264, x265, SVT-AV1; {} for others)."""
        parts: list[str] = []
        if self.display_primaries and self.max_luminance:
            (rx, ry), (gx, gy), (bx, by), (wx, wy) = self.display_primaries
            xy = [gx, gy, bx, by, rx, ry, wx, wy]
            if codec == "libsvtav1":
                text = "G({:.4f},{:.4f})B({:.4f},{:.4f})R({:.4f},{:.4f})WP({:.4f},{:.4f})".format(*xy)
                parts.append(f"mastering-display={text}L({self.max_luminance:.4f},{self.min_luminance or 0:.4f})")
            else:  # x264 and x265: chromaticities in 0.00002 units, luminance in 0.0001 cd/m2
                text = "G({},{})B({},{})R({},{})WP({},{})".format(*(round(v / 0.00002) for v in xy))
                name = "master-display" if codec == "libx265" else "mastering-display"
                parts.append(f"{name}={text}L({round(self.max_luminance * 10000)},"
                             f"{round((self.min_luminance or 0) * 10000)})")
        if content_light and self.max_cll is not None:
            name = {"libx265": "max-cll", "libsvtav1": "content-light"}.get(codec, "cll")
            parts.append(f"{name}={self.max_cll},{self.max_fall or 0}")
        if not parts:
            return {}
        key = {"libx264": "x264-params", "libx265": "x265-params", "libsvtav1": "svtav1-params"}.get(codec)
        if key is None:
            return {}
        if codec == "libx265":
            parts.insert(0, "hdr10=1")
        return {key: ":".join(parts)}


@dataclass(frozen=True)
class ColourPlan:
    """How one input's colours go through a pipeline: what the ops see, and what the output is."""

    source: str
    """pq, hlg or sdr."""
    source_bits: int
    to_sdr: ToSdr | None
    """Renders the decoder's frames for ops that expect SDR (None: the ops see the pixels as they are)."""
    from_sdr: FromSdr | None
    """Places the ops' SDR output back in the source's HDR transfer (`hdr="keep"`)."""
    colorspace: int | None
    """The output's tags (None: the source's)."""
    color_primaries: int | None
    color_trc: int | None
    bits: int
    """Bits per component of the output (8 or 10)."""
    metadata: HdrMetadata | None
    """HDR10 static metadata to write in the output (None: none)."""
    content_light: bool = True
    """Whether the source's content light levels still hold for the output."""

    @property
    def passthrough(self) -> bool:
        """Whether decoded frames may go to the encoder as they are (no rendering between)."""
        return self.to_sdr is None

    @property
    def output(self) -> str:
        """pq, hlg or sdr."""
        if self.to_sdr is not None and self.from_sdr is None:
            return "sdr"
        return self.source

    def describe(self) -> str:
        """One line: the input's picture and the output's, e.g. "HDR PQ 10-bit -> SDR BT.709 8-bit (tone-mapped)"."""
        before = _describe(self.source, self.source_bits)
        after = _describe(self.output, self.bits).replace("SDR", "SDR BT.709") if self.to_sdr else _describe(
            self.output, self.bits)
        if self.to_sdr is not None:
            how = "tone-mapped" if self.from_sdr is None else f"tone-mapped for the model, SDR white at {HDR_REFERENCE_WHITE:g} cd/m2"
            return f"{before} -> {after} ({how})"
        return before if before == after else f"{before} -> {after}"


def _describe(transfer: str, bits: int) -> str:
    if transfer == "sdr":
        return f"SDR {bits}-bit"
    return f"HDR {transfer.upper()} {bits}-bit"


def plan_colour(*, color_trc: int, pix_fmt: str | None, metadata: HdrMetadata | None, expects_sdr: bool,
                hdr: str = "sdr") -> ColourPlan:
    """The colour plan of an input with these tags for a pipeline whose ops expect SDR or not (`expects_sdr`);
    `hdr` is sdr (HDR inputs become SDR for such pipelines) or keep."""
    check_hdr_mode(hdr)
    metadata = metadata or HdrMetadata()
    source = transfer_of(color_trc)
    bits = bit_depth_of(pix_fmt)
    if source == "sdr":
        return ColourPlan(source, bits, None, None, None, None, None, 10 if bits > 8 and not expects_sdr else 8, None)
    if not expects_sdr:
        return ColourPlan(source, bits, None, None, None, None, None, 10, metadata)
    to_sdr = ToSdr.for_source(source, float(metadata.peak or DEFAULT_SOURCE_PEAK))
    if hdr == "keep":
        return ColourPlan(source, bits, to_sdr, FromSdr.for_target(source), MATRIX_BT2020, PRIMARIES_BT2020,
                          color_trc, 10, metadata, content_light=False)
    return ColourPlan(source, bits, to_sdr, None, MATRIX_BT709, PRIMARIES_BT709, TRC_BT709, 8, None)


def check_tags(*, color_trc: int, color_primaries: int, metadata: HdrMetadata | None, strict: bool = False,
               name: str = "") -> None:
    """Log what framefleet assumes for odd or partial colour tags; Dolby Vision with no HDR10 or HLG base
    layer is a warning (a CorruptVideoError when strict)."""
    source = transfer_of(color_trc)
    if source == "sdr" and color_primaries == PRIMARIES_BT2020 and color_trc == TRC_UNSPECIFIED:
        log.info("%s: BT.2020 primaries with no transfer: taken as SDR (FFmpeg's default), not HDR", name)
    if source != "sdr" and color_primaries != PRIMARIES_BT2020:
        log.info("%s: %s transfer with primaries %d: taken as BT.2020 primaries", name, source.upper(),
                 color_primaries)
    if metadata is None or not metadata.dolby_vision:
        return
    if source != "sdr":
        log.info("%s: Dolby Vision metadata dropped (PyAV cannot write it); the output keeps the %s base layer",
                 name, source.upper())
        return
    message = (f"{name}: Dolby Vision with no HDR10 or HLG base layer (profile 5): its colours cannot be rendered "
               "without the Dolby Vision metadata, which framefleet does not read")
    if strict:
        raise CorruptVideoError(message)
    log.warning("%s; its pixels are processed as they are, and will look wrong", message)


def output_colours(*, color_trc: int, pix_fmt: str | None, metadata: HdrMetadata | None) -> dict[str, str]:
    """What an input becomes: through ops that expect SDR (by default, and with hdr keep), and through others."""
    def described(sdr: bool, hdr: str = "sdr") -> str:
        return plan_colour(color_trc=color_trc, pix_fmt=pix_fmt, metadata=metadata, expects_sdr=sdr,
                           hdr=hdr).describe()

    return {"sdr_ops": described(True), "sdr_ops_hdr_keep": described(True, "keep"), "other_ops": described(False)}


def expects_sdr(ops: Sequence[object]) -> bool:
    """Whether some op of a chain expects SDR pictures (`Op.picture`)."""
    return any(getattr(op, "picture", "any") == "sdr" for op in ops)


def output_pix_fmt(bits: int) -> str:
    """The encoder's pixel format for an output of `bits` per component (4:2:0)."""
    return _TEN_BIT if bits > 8 else "yuv420p"
