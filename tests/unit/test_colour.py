"""The colour plan's decisions and the HDR10 metadata's encoder parameters."""

from __future__ import annotations

import logging

import pytest

from framefleet.errors import CorruptVideoError
from framefleet.video.colour import HdrMetadata, check_tags, plan_colour

PQ, HLG, UNSPECIFIED = 16, 18, 2
MASTERED = HdrMetadata(max_luminance=1000.0, min_luminance=0.005, max_cll=1000, max_fall=400,
                       display_primaries=((0.708, 0.292), (0.17, 0.797), (0.131, 0.046), (0.3127, 0.329)))


def test_hdr10_metadata_becomes_each_encoders_own_parameters():
    assert MASTERED.encoder_options("libx265") == {"x265-params": (
        "hdr10=1:master-display=G(8500,39850)B(6550,2300)R(35400,14600)WP(15635,16450)L(10000000,50):"
        "max-cll=1000,400")}
    assert MASTERED.encoder_options("libx264", content_light=False) == {"x264-params": (
        "mastering-display=G(8500,39850)B(6550,2300)R(35400,14600)WP(15635,16450)L(10000000,50)")}
    assert MASTERED.encoder_options("libsvtav1")["svtav1-params"].endswith(
        "WP(0.3127,0.3290)L(1000.0000,0.0050):content-light=1000,400")
    assert MASTERED.encoder_options("h264_nvenc") == {} and HdrMetadata().encoder_options("libx265") == {}
    assert MASTERED.peak == 1000.0 and HdrMetadata(max_luminance=4000.0).peak == 4000.0


@pytest.mark.parametrize(("trc", "pix_fmt", "sdr_ops", "hdr", "expected"), [
    (PQ, "yuv420p10le", True, "sdr", ("sdr", 8, (1, 1, 1))),
    (PQ, "yuv420p10le", True, "keep", ("pq", 10, (9, 9, PQ))),
    (HLG, "yuv420p10le", False, "sdr", ("hlg", 10, (None, None, None))),
    (UNSPECIFIED, "yuv420p10le", False, "sdr", ("sdr", 10, (None, None, None))),  # 10-bit SDR stays 10-bit
    (UNSPECIFIED, "yuv420p10le", True, "keep", ("sdr", 8, (None, None, None))),  # keep means nothing for SDR
    (PQ, "yuv420p", False, "sdr", ("pq", 10, (None, None, None))),  # never 8 bits under HDR tags
])
def test_the_plan_says_what_the_output_is(trc, pix_fmt, sdr_ops, hdr, expected):
    plan = plan_colour(color_trc=trc, pix_fmt=pix_fmt, metadata=MASTERED, expects_sdr=sdr_ops, hdr=hdr)
    assert (plan.output, plan.bits, (plan.colorspace, plan.color_primaries, plan.color_trc)) == expected
    assert plan.passthrough == (not sdr_ops or trc == UNSPECIFIED)


def test_dolby_vision_with_no_hdr_base_layer_is_a_warning_or_under_strict_an_error(caplog):
    profile_5 = HdrMetadata(dolby_vision=True)
    with caplog.at_level(logging.INFO, logger="framefleet.video.colour"):
        check_tags(color_trc=UNSPECIFIED, color_primaries=UNSPECIFIED, metadata=profile_5, name="dv.mp4")
        check_tags(color_trc=HLG, color_primaries=9, metadata=profile_5, name="iphone.mov")
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "dv.mp4: Dolby Vision with no HDR10 or HLG base layer" in warned[0].getMessage()
    assert any("iphone.mov: Dolby Vision metadata dropped" in r.getMessage() for r in caplog.records)
    with pytest.raises(CorruptVideoError, match="profile 5"):
        check_tags(color_trc=UNSPECIFIED, color_primaries=UNSPECIFIED, metadata=profile_5, strict=True, name="dv.mp4")


def test_partial_tags_are_taken_as_ffmpegs_defaults_with_a_note(caplog):
    with caplog.at_level(logging.INFO, logger="framefleet.video.colour"):
        check_tags(color_trc=UNSPECIFIED, color_primaries=9, metadata=None, name="a.webm")
        check_tags(color_trc=PQ, color_primaries=UNSPECIFIED, metadata=None, name="b.mp4")
    notes = [r.getMessage() for r in caplog.records]
    assert notes == ["a.webm: BT.2020 primaries with no transfer: taken as SDR (FFmpeg's default), not HDR",
                     "b.mp4: PQ transfer with primaries 2: taken as BT.2020 primaries"]
