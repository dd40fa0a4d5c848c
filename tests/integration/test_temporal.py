"""Flicker: the warping-error metric on clips with known motion, and the blend that removes flicker.

The clips are made here: a smooth random texture, still or panning 4 px a frame, and frames of noise.
"""

from __future__ import annotations

import json

import media_checks
import numpy as np
import pytest

from framefleet.errors import OptionError
from framefleet.ops import StyleTransferOp
from framefleet.pipeline import Pipeline
from framefleet.processing.detail import detail_kept
from framefleet.processing.flicker import measure_flicker
from framefleet.processing.streaming import process_video
from framefleet.processing.temporal import fine_sigma, temporal_filter
from framefleet.video.synth import ClipSpec, write_clip

cv2 = pytest.importorskip("cv2")
WIDTH, HEIGHT, FRAMES = 256, 144, 16


def texture(seed: int) -> np.ndarray:
    """A smooth random picture, wide enough to pan across."""
    rng = np.random.default_rng(seed)
    coarse = (rng.random((HEIGHT // 4, WIDTH // 2, 3)) * 255).astype(np.uint8)
    return cv2.GaussianBlur(cv2.resize(coarse, (WIDTH * 2, HEIGHT), interpolation=cv2.INTER_CUBIC), (0, 0), 2)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("flicker")
    spec = ClipSpec(width=WIDTH, height=HEIGHT, frames=FRAMES, bframes=0, audio=("aac",))
    picture, rng = texture(1), np.random.default_rng(2)
    made = {
        "still": lambda i: np.ascontiguousarray(picture[:, :WIDTH]),
        "pan": lambda i: np.ascontiguousarray(picture[:, 4 * i:4 * i + WIDTH]),
        "noise": lambda i: (rng.random((HEIGHT, WIDTH, 3)) * 255).astype(np.uint8),
    }
    for name, pictures in made.items():
        write_clip(folder / f"{name}.mp4", spec, pictures)
    return {name: folder / f"{name}.mp4" for name in made}


def test_a_still_video_compared_with_itself_does_not_flicker(clips):
    report = measure_flicker(clips["still"], clips["still"])
    assert report.frames == FRAMES and len(report.pairs) == FRAMES - 1
    assert report.mean < 1e-4 and report.p95 < 1e-4
    assert min(p.visible for p in report.pairs) > 0.9


def test_motion_the_flow_follows_is_not_flicker_but_noise_is(clips):
    panned = measure_flicker(clips["pan"], clips["pan"])
    noisy = measure_flicker(clips["pan"], clips["noise"])
    assert panned.mean < 2e-4  # the whole picture moved, exactly as the input did
    assert noisy.mean > 0.03 and noisy.mean > 100 * panned.mean
    assert 0.8 < np.mean([p.visible for p in panned.pairs]) < 1.0  # the edge that scrolls in is not visible


def test_videos_of_different_lengths_are_refused(clips, tmp_path):
    short = tmp_path / "short.mp4"
    write_clip(short, ClipSpec(width=WIDTH, height=HEIGHT, frames=5, bframes=0))
    with pytest.raises(OptionError, match="more frames"):
        measure_flicker(clips["still"], short)


@pytest.mark.parametrize("mode", ["bands", "blend"])
def test_the_filters_leave_a_first_frame_and_a_scene_cut_alone(mode):
    blend = temporal_filter(mode)
    first, second = texture(3)[:, :WIDTH], texture(4)[:, :WIDTH]
    frames = np.stack([first, second])
    out = blend(blend.plan(None, frames, WIDTH, HEIGHT), frames)
    assert np.array_equal(out[0], first) and np.array_equal(out[1], second)
    assert blend.restarts == 2
    for wrong in (-0.1, 1.5, "high"):
        with pytest.raises(OptionError, match="--temporal-strength must be between 0 and 1"):
            temporal_filter(mode, wrong)


def test_bands_take_more_of_a_larger_frames_finest_texture_from_the_frame_itself():
    assert fine_sigma(640, 360) == pytest.approx(1.4)
    assert 1.4 < fine_sigma(1280, 720) < fine_sigma(1920, 1080) < 2.5
    assert fine_sigma(7680, 4320) == 2.5 and fine_sigma(426, 240) == pytest.approx(1.4)
    rng = np.random.default_rng(5)
    for width, height in ((320, 180), (1280, 720)):  # a still picture whose fine texture changes every frame
        base = cv2.resize(texture(7), (width, height), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        frames = np.clip(base + rng.normal(0, 20, (12, height, width, 3)), 0, 255).astype(np.uint8)
        small = np.stack([cv2.resize(frame, (160, 90), interpolation=cv2.INTER_AREA) for frame in frames])
        bands = temporal_filter("bands")
        out = bands(bands.plan(None, small, width, height), frames)
        assert bands.restarts == 1
        assert min(detail_kept(o, f) for o, f in zip(out, frames)) > 0.85, (width, height)
        assert np.abs(out[-1].astype(np.float32) - frames[-1]).mean() > 1.0  # and it did average something


def test_stylize_with_temporal_blend_is_frame_exact_and_flickers_less(clips, tmp_path):
    plain, stable = tmp_path / "plain.mp4", tmp_path / "stable.mp4"
    process_video(clips["pan"], plain, Pipeline.of([StyleTransferOp(style="7")], temporal="none"))
    result = process_video(clips["pan"], stable, [StyleTransferOp(style="7")])  # bands: the style op's default
    assert result.frames == FRAMES and result.temporal == "bands"
    assert media_checks.decoded_pts(stable) == media_checks.decoded_pts(clips["pan"])
    assert media_checks.packet_digests(stable)[1] == media_checks.packet_digests(clips["pan"])[1]
    before, after = measure_flicker(clips["pan"], plain), measure_flicker(clips["pan"], stable)
    assert after.mean < 0.6 * before.mean, (before.mean, after.mean)


def test_bands_remove_flicker_and_keep_the_style_detail_that_blend_smears(tmp_path):
    fine = cv2.resize(texture(6), (WIDTH * 4, HEIGHT * 2), interpolation=cv2.INTER_CUBIC)
    source, plain, outputs = tmp_path / "pan.mp4", tmp_path / "plain.mp4", {}
    write_clip(source, ClipSpec(width=WIDTH, height=HEIGHT, frames=24, bframes=0),  # 2.5 px a frame
               lambda i: cv2.resize(fine[:, 5 * i:5 * i + 2 * WIDTH], (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA))
    process_video(source, plain, Pipeline.of([StyleTransferOp(style="7")], temporal="none"))
    for mode in ("bands", "blend"):
        outputs[mode] = tmp_path / f"{mode}.mp4"
        process_video(source, outputs[mode], Pipeline.of([StyleTransferOp(style="7")], temporal=mode))
    bands, blend = (measure_flicker(source, outputs[mode], reference=plain) for mode in ("bands", "blend"))
    assert bands.ratios()["flicker"] < 0.6 and bands.ratios()["high"] < 0.7, bands.ratios()
    assert bands.details_summary()["median"] >= 0.9 and bands.details_summary()["worst"] >= 0.7, bands.details_summary()
    assert blend.details_summary()["median"] < 0.8  # the recursive blend resamples and averages the strokes away


def test_a_job_with_temporal_blend_splits_joins_and_stays_frame_exact(tmp_path):
    from fractions import Fraction

    from typer.testing import CliRunner

    from framefleet.cli import app

    picture = texture(5)
    folder = tmp_path / "in"
    folder.mkdir()
    source = folder / "pan.mp4"
    write_clip(source, ClipSpec(width=WIDTH, height=HEIGHT, frames=75, rate=Fraction(25), gop=25, bframes=0,
                                audio=("aac",)),
               lambda i: np.ascontiguousarray(picture[:, 3 * i:3 * i + WIDTH]))
    runner = CliRunner()
    bad = runner.invoke(app, ["run", str(folder), "-o", str(tmp_path / "bad"), "--temporal", "smooth"])
    assert bad.exit_code == 2 and "--temporal must be one of none, bands, blend" in bad.stderr
    outputs = {}
    for mode in ("none", "bands"):
        out = tmp_path / mode
        result = runner.invoke(app, ["run", str(folder), "-o", str(out), "--style", "7", "--temporal", mode,
                                     "--segment-seconds", "1", "--workers", "2", "--json", "-q"])
        assert result.exit_code == 0, (result.stdout, result.stderr)
        outputs[mode] = out / "pan.mp4"
    assert media_checks.decoded_pts(outputs["bands"]) == media_checks.decoded_pts(source)
    (audio_in,), (audio_out,) = (media_checks.streams_of_kind(p, "audio") for p in (source, outputs["bands"]))
    assert media_checks.packet_payloads(outputs["bands"], audio_out) == media_checks.packet_payloads(source, audio_in)
    plain, stable = (measure_flicker(source, outputs[mode]) for mode in ("none", "bands"))
    assert stable.mean < 0.6 * plain.mean
    # 3 segments of 25 frames: each continues the blend of the one before (it runs the frames before its
    # start through the model and the blend first), so a seam flickers no more than the frames around it
    seams = [p.error for p in stable.pairs if p.frame in (25, 50)]
    assert len(seams) == 2 and max(seams) < 0.6 * plain.mean, (seams, plain.mean, stable.mean)


def test_style_pipelines_blend_by_default_and_others_do_not():
    from framefleet.pipeline import Pipeline

    assert Pipeline.from_options({"style": "7"}).temporal == "bands"
    assert Pipeline.from_options({"style": "7", "temporal": "none"}).temporal == "none"
    assert Pipeline.from_options({"op": "identity"}).temporal == "none"
    assert Pipeline.from_options({"op": "blur", "temporal": "blend"}).temporal == "blend"
    stored = Pipeline.from_options({"style": "7"}).spec()
    assert Pipeline.from_spec({**stored, "temporal": "none"}).temporal == "none"  # a stored choice is kept


def test_flicker_reports_detail_and_bands_against_the_per_frame_output(clips, tmp_path):
    from typer.testing import CliRunner

    from framefleet.cli import app
    from framefleet.video import VideoReader

    plain, blurred, small = tmp_path / "plain.mp4", tmp_path / "blurred.mp4", tmp_path / "small.mp4"
    process_video(clips["pan"], plain, Pipeline.of([StyleTransferOp(style="7")], temporal="none"))
    with VideoReader(plain) as reader:
        frames = [rgb for _, rgb in reader.frames()]
    write_clip(blurred, ClipSpec(width=WIDTH, height=HEIGHT, frames=FRAMES, bframes=0),
               lambda i: cv2.GaussianBlur(frames[i], (0, 0), 1.5))
    write_clip(small, ClipSpec(width=WIDTH // 2, height=HEIGHT // 2, frames=FRAMES, bframes=0),
               lambda i: cv2.resize(frames[i], (WIDTH // 2, HEIGHT // 2)))
    runner = CliRunner()

    def measured(processed, reference):
        result = runner.invoke(app, ["flicker", str(clips["pan"]), str(processed), "--reference", str(reference),
                                     "--json", "-q"])
        assert result.exit_code == 0, (result.stdout, result.stderr)
        return json.loads(result.stdout)

    itself, soft = measured(plain, plain), measured(blurred, plain)
    assert itself["detail"]["median"] == itself["detail"]["worst"] == 1.0
    assert itself["ratios"] == {"flicker": 1.0, "low": 1.0, "high": 1.0}
    assert itself["detail"]["ssim_mean"] > 0.999 and len(itself["detail"]["frames"]) == FRAMES
    assert soft["detail"]["median"] < 0.5 and soft["detail"]["ssim_mean"] < 0.95
    assert soft["ratios"]["high"] < soft["ratios"]["low"]  # blur takes the shimmer, not the colour pulses
    text = runner.invoke(app, ["flicker", str(clips["pan"]), str(blurred), "--reference", str(plain)])
    assert text.exit_code == 0 and "detail kept" in text.stdout and "high band" in text.stdout
    unequal = runner.invoke(app, ["flicker", str(clips["pan"]), str(plain), "--reference", str(small), "-q"])
    assert unequal.exit_code == 2 and unequal.stderr.strip().startswith("error:") and "equal sizes" in unequal.stderr
    assert len(unequal.stderr.strip().splitlines()) == 1


def test_temporal_strength_is_a_flag_a_pipeline_key_and_checked(tmp_path, clips):
    from typer.testing import CliRunner

    from framefleet.cli import app
    from framefleet.pipeline import Pipeline

    pipeline = Pipeline.from_options({"style": "7", "temporal_strength": 0.5})
    assert pipeline.temporal_strength == 0.5 and Pipeline.from_spec(pipeline.spec()).temporal_strength == 0.5
    assert pipeline.fingerprint() != Pipeline.from_options({"style": "7"}).fingerprint()
    yaml_file = tmp_path / "steady.yaml"
    yaml_file.write_text("style: 7\ntemporal: blend\ntemporal_strength: 0.3\n")
    assert Pipeline.from_yaml(yaml_file).temporal_strength == 0.3
    runner = CliRunner()
    for command in (["stylize", str(clips["pan"]), "-o", str(tmp_path / "x.mp4")],
                    ["run", str(clips["pan"]), "-o", str(tmp_path / "out")]):
        bad = runner.invoke(app, [*command, "--temporal-strength", "1.5"])
        assert bad.exit_code == 2, (bad.stdout, bad.stderr)
        assert bad.stderr.strip().splitlines() == [bad.stderr.strip()] and bad.stderr.strip().startswith("error:")
        assert "--temporal-strength must be between 0 and 1, got 1.5" in bad.stderr
    outputs = {}
    for strength in ("0", "1"):
        outputs[strength] = tmp_path / f"s{strength}.mp4"
        done = runner.invoke(app, ["stylize", str(clips["pan"]), "-o", str(outputs[strength]), "--temporal-strength",
                                   strength, "--json", "-q"])
        assert done.exit_code == 0, (done.stdout, done.stderr)
    off, most = (measure_flicker(clips["pan"], outputs[s]) for s in ("0", "1"))
    assert most.mean < 0.6 * off.mean, (off.mean, most.mean)
