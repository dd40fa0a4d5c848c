"""HDR input (PQ and HLG) through ops that expect SDR pictures and through ops that keep pixels.

The reference SDR rendition is computed independently of framefleet's tables: the transfer functions and
primaries come from colour-science, the EETF is written out here from ITU-R BT.2390, all in float64 on the
code values the clip was written with.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import ClassVar

import av
import media_checks
import numpy as np
import pytest

from framefleet.errors import OutputError
from framefleet.ops.base import Op
from framefleet.ops.identity import IdentityOp
from framefleet.ops.simple import BlurOp
from framefleet.pipeline import Pipeline
from framefleet.processing.batch import FrameBatch
from framefleet.processing.streaming import process_video
from framefleet.video import EncodeOptions, probe
from framefleet.video.synth import ClipSpec, hdr_picture, write_clip

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # colour-science warns that matplotlib is absent
    import colour

SIZE = (192, 108)
FRAMES = 6
SEEN: list[np.ndarray] = []


@dataclass(kw_only=True)
class SeesSdr(Op):
    """Keeps what it is given (an op that expects SDR pictures, like a model), and passes it on."""

    picture: ClassVar[str] = "sdr"

    def process(self, batch: FrameBatch) -> FrameBatch:
        SEEN.extend(frame.copy() for frame in batch.frames)
        return batch.with_frames(batch.frames.copy())


def hdr_clip(path, transfer: str, **spec) -> None:
    width, height = SIZE
    write_clip(path, ClipSpec(width=width, height=height, frames=FRAMES, codec="libx265", pix_fmt=spec.pop("pix_fmt", "yuv420p10le"),
                              transfer=transfer, lossless=True, bframes=0, **spec))


def eetf(nits: np.ndarray, source_peak: float, target_peak: float) -> np.ndarray:
    """ITU-R BT.2390's EETF (section 5.4.1, no black lift), per channel in the PQ domain."""
    pq = colour.models.eotf_inverse_ST2084
    e1 = np.minimum(pq(nits) / pq(source_peak), 1.0)
    max_lum = pq(target_peak) / pq(source_peak)
    ks = 1.5 * max_lum - 0.5
    t = (e1 - ks) / (1 - ks)
    spline = (2 * t**3 - 3 * t**2 + 1) * ks + (t**3 - 2 * t**2 + t) * (1 - ks) + (-2 * t**3 + 3 * t**2) * max_lum
    return colour.models.eotf_ST2084(np.where(e1 < ks, e1, spline) * pq(source_peak))


def reference_sdr(codes: np.ndarray, transfer: str) -> np.ndarray:
    """The SDR BT.709 rendition (0-255 floats) of full-range BT.2020 R'G'B' code values for a 100 cd/m2 screen."""
    signal = codes / 65535.0
    if transfer == "pq":
        display = colour.models.eotf_ST2084(signal)
    else:
        display = colour.models.eotf_BT2100_HLG(signal, L_B=0, L_W=1000, gamma=1.2)
    brightest = np.maximum(display.max(axis=-1, keepdims=True), 1e-9)
    light = display * eetf(brightest, 1000.0, 100.0) / brightest / 100.0  # the curve on max(R, G, B)
    linear = colour.RGB_to_RGB(light, "ITU-R BT.2020", "ITU-R BT.709", chromatic_adaptation_transform=None)
    return colour.models.eotf_inverse_BT1886(np.clip(linear, 0.0, 1.0), L_B=0, L_W=1) * 255.0


def decoded_codes(path) -> list[np.ndarray]:
    """The clip's decoded samples as full-range 16-bit R'G'B' (swscale, BT.2020 matrix)."""
    with av.open(str(path)) as container:
        return [frame.reformat(format="rgb48le", src_colorspace=9, src_color_range=1, dst_color_range=2).to_ndarray()
                for frame in container.decode(video=0)]


@pytest.mark.parametrize("transfer", ["pq", "hlg"])
def test_a_model_sees_hdr_as_an_sdr_screen_shows_it(tmp_path, transfer):
    source = tmp_path / f"{transfer}.mkv"
    hdr_clip(source, transfer, pix_fmt="yuv444p10le")  # 4:4:4, so chroma subsampling does not blur edges
    SEEN.clear()
    result = process_video(source, tmp_path / "out.mp4", Pipeline.of([SeesSdr()], temporal="none"), sessions=1)
    assert result.frames == FRAMES and len(SEEN) == FRAMES
    for index, (seen, decoded) in enumerate(zip(SEEN, decoded_codes(source), strict=True)):
        # the rendering itself: the decoded samples, rendered in float64 by colour-science and BT.2390
        rendered = np.abs(seen - reference_sdr(decoded.astype(np.float64), transfer))
        assert rendered.max() <= 1.5, (index, rendered.max())
        # against the picture as written (float code values): 10-bit coding moves a level on average (more
        # where a colour outside BT.709 leaves a channel near black, where SDR's gamma magnifies tiny errors)
        written = np.abs(seen - reference_sdr(hdr_picture(index, *SIZE).astype(np.float64), transfer))
        assert written.mean() < 1.0, (index, written.mean())


def output_tags(path) -> tuple[str, int, int, int, dict]:
    """The output's pixel format, primaries, transfer, matrix, and the HDR10 metadata its first frame carries."""
    info = probe(path, keyframes=False)
    metadata = info.hdr_metadata
    return info.pix_fmt, info.color_primaries, info.color_trc, info.colorspace, {
        "mastering": metadata.max_luminance, "max_cll": metadata.max_cll}


def test_sdr_output_of_an_hdr_input_is_8_bit_bt709_and_tagged_so(tmp_path):
    source = tmp_path / "pq.mkv"
    hdr_clip(source, "pq", audio=("aac",))
    out = tmp_path / "out.mp4"
    result = process_video(source, out, Pipeline.of([SeesSdr()], temporal="none"))
    assert output_tags(out) == ("yuv420p", 1, 1, 1, {"mastering": None, "max_cll": None})
    assert result.colour == "HDR PQ 10-bit -> SDR BT.709 8-bit (tone-mapped)"
    assert media_checks.decoded_times(out) == media_checks.decoded_times(source)
    assert media_checks.packet_digests(out)[1] == media_checks.packet_digests(source)[1]  # audio copied


@pytest.mark.parametrize("transfer", ["pq", "hlg"])
def test_hdr_keep_places_the_sdr_picture_back_in_the_source_transfer_in_10_bits(tmp_path, transfer):
    source = tmp_path / f"{transfer}.mkv"
    hdr_clip(source, transfer)
    out = tmp_path / "out.mkv"
    SEEN.clear()
    process_video(source, out, Pipeline.of([SeesSdr()], temporal="none", encode=EncodeOptions(hdr="keep", crf=0)), sessions=1)
    pix_fmt, primaries, trc, matrix, metadata = output_tags(out)
    assert (pix_fmt, primaries, trc, matrix) == ("yuv420p10le", 9, {"pq": 16, "hlg": 18}[transfer], 9)
    # the mastering display is still the source's; its content light levels are not the new picture's
    assert metadata == ({"mastering": 1000.0, "max_cll": None} if transfer == "pq" else {"mastering": None, "max_cll": None})
    for sdr, written in zip(SEEN, decoded_codes(out), strict=True):
        # SDR white at BT.2408's 203 cd/m2, BT.709 inside BT.2020, coded in the source's transfer
        light = colour.models.eotf_BT1886(sdr / 255.0, L_B=0, L_W=1) * 203.0
        light = colour.RGB_to_RGB(light, "ITU-R BT.709", "ITU-R BT.2020", chromatic_adaptation_transform=None)
        with np.errstate(invalid="ignore", divide="ignore"):  # colour-science's HLG takes logs of black
            expected = (colour.models.eotf_inverse_ST2084(light) if transfer == "pq" else
                        colour.models.eotf_inverse_BT2100_HLG(light, L_B=0, L_W=1000, gamma=1.2)) * 65535
        # in 10-bit steps (64 of these 16-bit units): 4:2:0 and lossy coding move a few on average; white at
        # 100 cd/m2 instead of 203, or BT.709 primaries left as they are, would move tens
        assert np.abs(written - np.nan_to_num(expected)).mean() / 64 < 3.0


def test_pixel_keeping_ops_keep_10_bits_the_tags_and_the_hdr10_metadata(tmp_path):
    source = tmp_path / "pq.mkv"
    hdr_clip(source, "pq")
    out = tmp_path / "out.mp4"
    result = process_video(source, out, Pipeline.of([IdentityOp()], encode=EncodeOptions(crf=0)))
    assert output_tags(out) == ("yuv420p10le", 9, 16, 9, {"mastering": 1000.0, "max_cll": 1000})
    assert result.colour == "HDR PQ 10-bit"
    with av.open(str(source)) as a, av.open(str(out)) as b:
        for before, after in zip(a.decode(video=0), b.decode(video=0), strict=True):
            error = np.abs(before.to_ndarray().astype(int) - after.to_ndarray().astype(int)).mean()
            assert error < 0.6  # in 10-bit codes; rounding to 8 bits alone would make it 1.0


def test_a_webm_output_of_hdr_takes_an_encoder_that_writes_10_bits(tmp_path):
    source = tmp_path / "hlg.mkv"
    hdr_clip(source, "hlg")
    out = tmp_path / "out.webm"
    result = process_video(source, out, [IdentityOp()])
    assert result.encoder == "libsvtav1"  # this build's VP9 encoder writes 8 bits only
    assert output_tags(out)[:4] == ("yuv420p10le", 9, 18, 9)
    assert media_checks.decoded_times(out) == media_checks.decoded_times(source)


def test_the_shared_10_bit_vp9_clip_stays_10_bit_and_frame_exact(tmp_path, shared_videos):
    source = shared_videos / "androidx__roadtrip-vp92-10bit.webm"
    out = tmp_path / "out.mkv"
    result = process_video(source, out, [IdentityOp()])
    assert result.frames == 72 and result.colour == "SDR 10-bit"
    assert probe(out, keyframes=False).pix_fmt == "yuv420p10le"
    assert media_checks.decoded_times(out) == media_checks.decoded_times(source)


def test_probe_and_stylize_say_what_an_hdr_input_is_and_becomes(tmp_path):
    from cli_helpers import cli, stderr_lines, stdout_json

    source = tmp_path / "hlg.mkv"
    hdr_clip(source, "hlg", audio=("aac",))
    described = stdout_json(cli("probe", source, "--json"))
    assert (described["hdr"], described["transfer"], described["bit_depth"]) == (True, "hlg", 10)
    assert described["output_colour"] == {
        "sdr_ops": "HDR HLG 10-bit -> SDR BT.709 8-bit (tone-mapped)",
        "sdr_ops_hdr_keep": "HDR HLG 10-bit -> HDR HLG 10-bit (tone-mapped for the model, SDR white at 203 cd/m2)",
        "other_ops": "HDR HLG 10-bit"}
    out = tmp_path / "styled.mp4"
    result = stdout_json(cli("stylize", source, "-o", out, "--json", "--temporal", "none"))
    assert result["colour"] == "HDR HLG 10-bit -> SDR BT.709 8-bit (tone-mapped)"
    assert output_tags(out)[:4] == ("yuv420p", 1, 1, 1)
    assert media_checks.decoded_times(out) == media_checks.decoded_times(source)
    refused = cli("stylize", source, "-o", tmp_path / "x.mp4", "--hdr", "bright")
    assert refused.exit_code == 2 and stderr_lines(refused) == ["error: --hdr must be sdr or keep, got 'bright'"]


def test_an_encoder_that_cannot_write_10_bits_is_refused_for_hdr_in_one_line(tmp_path):
    source = tmp_path / "pq.mkv"
    hdr_clip(source, "pq")
    with pytest.raises(OutputError) as refused:
        process_video(source, tmp_path / "out.mkv", Pipeline.of([IdentityOp()], encode=EncodeOptions(codec="libvpx-vp9")))
    assert str(refused.value) == ("out.mkv: libvpx-vp9 cannot encode 10-bit video, which an HDR output needs (8 bits "
                                  "under HDR tags would band); use --codec libx264")
    assert not (tmp_path / "out.mkv").exists()


def test_a_job_splits_an_hdr_video_and_joins_it_still_10_bit_with_its_metadata(tmp_path):
    from cli_helpers import cli, stdout_json

    width, height = SIZE
    source = tmp_path / "in" / "pq.mkv"
    source.parent.mkdir()
    write_clip(source, ClipSpec(width=width, height=height, frames=48, gop=12, bframes=0, codec="libx265",
                                pix_fmt="yuv420p10le", transfer="pq"))
    summary = stdout_json(cli("run", source.parent, "-o", tmp_path / "out", "--op", "identity",
                              "--segment-seconds", "0.5", "--json"))
    assert summary["counts"]["done"] == 1 and summary["frames"] == 48
    out = tmp_path / "out" / "pq.mkv"
    assert output_tags(out) == ("yuv420p10le", 9, 16, 9, {"mastering": 1000.0, "max_cll": 1000})
    assert media_checks.decoded_times(out) == media_checks.decoded_times(source)


@dataclass(kw_only=True)
class Depths(Op):
    """Notes the pixel type it is given (an op that takes 16-bit pixels) and passes the frames on."""

    high_bit_depth: ClassVar[bool] = True

    def process(self, batch: FrameBatch) -> FrameBatch:
        SEEN.append(batch.frames[0].copy())
        return batch.with_frames(batch.frames.copy())


def test_ops_that_read_pixels_get_16_bits_from_a_10_bit_source_when_they_all_take_them(tmp_path):
    source = tmp_path / "pq.mkv"
    hdr_clip(source, "pq")
    SEEN.clear()
    out = tmp_path / "out.mp4"
    process_video(source, out, Pipeline.of([Depths(), BlurOp(radius=0.5)], encode=EncodeOptions(crf=0)), sessions=1)
    assert {frame.dtype for frame in SEEN} == {np.dtype(np.uint16)}
    assert output_tags(out)[:4] == ("yuv420p10le", 9, 16, 9)

    def round_trip_error(op: Op) -> float:  # mean, in 10-bit codes, of the samples after YUV -> RGB -> YUV
        process_video(source, out, Pipeline.of([op], encode=EncodeOptions(crf=0)), sessions=1)
        with av.open(str(source)) as a, av.open(str(out)) as b:
            return float(np.mean([np.abs(x.to_ndarray().astype(int) - y.to_ndarray().astype(int)).mean()
                                  for x, y in zip(a.decode(video=0), b.decode(video=0), strict=True)]))

    deep, shallow = round_trip_error(Depths()), round_trip_error(Eight())
    assert deep < 0.5 * shallow, (deep, shallow)  # measured 0.56 against 4.2


def test_an_op_that_reads_8_bits_only_gets_8_bits_and_that_is_logged(tmp_path, caplog):
    source = tmp_path / "hlg.mkv"
    hdr_clip(source, "hlg")
    SEEN.clear()
    with caplog.at_level(logging.INFO, logger="framefleet.processing.streaming"):
        process_video(source, tmp_path / "out.mp4", [Depths(), Eight()], sessions=1)
    assert {frame.dtype for frame in SEEN} == {np.dtype(np.uint8)}
    assert any("Eight works on 8-bit pixels, so the 10-bit output holds 8 bits of precision" in r.getMessage()
               for r in caplog.records)


@dataclass(kw_only=True)
class Eight(Op):
    """An op that reads 8-bit pixels only (the default)."""

    def process(self, batch: FrameBatch) -> FrameBatch:
        return batch
