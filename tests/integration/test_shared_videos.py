"""`framefleet stylize` on every real clip in ../shared/videos (listed in its manifest.json).

Real footage brings what synthetic clips do not: VP9 at an odd size, 10-bit, MPEG-4 Part 2 in AVI with
timestamp gaps, an iPhone clip rotated by its display matrix, a 2-frame clip, variable frame rate, 1080p
HEVC and 5.1 AAC in MPEG-TS, two video and two audio tracks with subtitles, and an interlaced broadcast
capture that starts on an open GOP. Each clip is stylized once (`--max-size 96 --sessions 1 --preset
ultrafast`, about a minute for the whole set on two cores) and the output is checked against what PyAV
reads from the input (tests/media_checks.py), not against framefleet's own reader.

The clips stay in ../shared/videos (never copy them into the repository); the tests skip without them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import media_checks
import pytest
from typer.testing import CliRunner

from framefleet.cli import app
from framefleet.video.frames import side_data_of

pytestmark = pytest.mark.slow

SHARED_VIDEOS = Path(__file__).resolve().parents[2].parent / "shared" / "videos"
MANIFEST = SHARED_VIDEOS / "manifest.json"
ENTRIES = json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else []
CLIPS = [entry["file"] for entry in ENTRIES]
CLIPS_WITH_AUDIO = [entry["file"] for entry in ENTRIES if entry["audio"]]
ABSENT = [pytest.param("absent", marks=pytest.mark.skip(reason=f"{MANIFEST} is absent"))]
every_clip = pytest.mark.parametrize("name", CLIPS or ABSENT)
every_clip_with_audio = pytest.mark.parametrize("name", CLIPS_WITH_AUDIO or ABSENT)


@dataclass
class Stylized:
    source: Path
    output: Path
    exit_code: int
    stdout: str
    stderr: str

    @property
    def summary(self) -> dict:
        """The --json summary."""
        return json.loads(self.stdout)


@pytest.fixture(scope="module")
def stylize(shared_videos, tmp_path_factory):
    """stylize(name) -> Stylized: run `framefleet stylize` once per clip and keep the result."""
    folder = tmp_path_factory.mktemp("shared-stylized")
    done: dict[str, Stylized] = {}

    def run(name: str) -> Stylized:
        if name not in done:
            source = shared_videos / name
            output = folder / f"{Path(name).stem}.mp4"
            args = ["stylize", str(source), "-o", str(output), "--max-size", "96", "--sessions", "1",
                    "--preset", "ultrafast", "--json", "--quiet"]
            result = CliRunner().invoke(app, args)
            stdout = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)  # rich colours JSON on a terminal
            done[name] = Stylized(source, output, result.exit_code, stdout, result.stderr)
        return done[name]

    return run


def stylized_ok(stylize, name: str) -> Stylized:
    run = stylize(name)
    assert run.exit_code == 0, f"{name}: exit {run.exit_code}: {run.stderr}"
    return run


def audio_payloads(path: Path, stream: int) -> list[bytes]:
    """The audio packets' bytes; AAC loses its 7- or 9-byte ADTS headers (MPEG-TS carries them, MP4 must
    not, so FFmpeg strips them when stream-copying from one to the other: the coded audio is unchanged)."""
    packets = media_checks.packet_payloads(path, stream)
    codec = dict(enumerate(media_checks.stream_codecs(path)))[stream][1]
    if codec != "aac":
        return packets
    return [p[7 if p[1] & 1 else 9 :] if p[0] == 0xFF and p[1] & 0xF6 == 0xF0 else p for p in packets]


def first_audio_time(path: Path) -> Fraction | None:
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        for packet in container.demux(container.streams.audio[0]):
            if packet.pts is not None:
                return packet.pts * packet.time_base
    return None


def output_size(path: Path) -> tuple[int, int]:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        return video.width, video.height


# -- every clip ---------------------------------------------------------------------------------------


@every_clip
def test_each_clip_stylizes_with_exit_0(stylize, name):
    run = stylized_ok(stylize, name)
    summary = run.summary
    assert summary["frames"] > 0 and run.output.is_file()
    assert summary["frames"] == media_checks.frame_count(run.output)


@every_clip
def test_the_output_has_every_frame_that_decodes_from_the_input(stylize, name):
    run = stylized_ok(stylize, name)
    assert media_checks.frame_count(run.output) == media_checks.frame_count(run.source)


@every_clip
def test_the_output_keeps_every_frame_time(stylize, name):
    run = stylized_ok(stylize, name)
    assert media_checks.decoded_times(run.output) == media_checks.decoded_times(run.source)


@every_clip
def test_every_audio_track_is_copied_packet_for_packet(stylize, name):
    run = stylized_ok(stylize, name)
    source_tracks = media_checks.streams_of_kind(run.source, "audio")
    output_tracks = media_checks.streams_of_kind(run.output, "audio")
    assert len(output_tracks) == len(source_tracks)
    for source_track, output_track in zip(source_tracks, output_tracks):
        source_packets = audio_payloads(run.source, source_track)
        assert audio_payloads(run.output, output_track) == source_packets, f"audio stream {source_track}"
    actions = {s["source_index"]: s["action"] for s in run.summary["streams"]}
    assert all(actions[track] == "copy" for track in source_tracks)


@every_clip_with_audio
def test_the_video_keeps_its_place_against_the_audio(stylize, name):
    run = stylized_ok(stylize, name)
    source_audio, output_audio = first_audio_time(run.source), first_audio_time(run.output)
    lead_in = media_checks.decoded_times(run.source, relative=False)[0] - source_audio
    lead_out = media_checks.decoded_times(run.output, relative=False)[0] - output_audio
    assert abs(lead_out - lead_in) <= Fraction(2, 1000), (float(lead_in), float(lead_out))


@every_clip
def test_subtitle_tracks_are_kept(stylize, name):
    run = stylized_ok(stylize, name)
    assert len(media_checks.streams_of_kind(run.output, "subtitle")) == len(
        media_checks.streams_of_kind(run.source, "subtitle"))


# -- clips with a particular trap ----------------------------------------------------------------------


def needs(name: str) -> None:
    if name not in CLIPS:
        pytest.skip(f"{name} is not in {MANIFEST}")


def test_a_rotated_iphone_clip_comes_out_upright(stylize):
    needs("decord__video_90.mov")
    run = stylized_ok(stylize, "decord__video_90.mov")
    assert output_size(run.output) == (320, 568)
    with av.open(str(run.output)) as container:  # stored upright: no display matrix left to apply
        frame = next(container.decode(video=0))
        assert not any(side.type.name == "DISPLAYMATRIX" for side in side_data_of(frame))


def test_an_odd_size_is_padded_to_the_next_even_size(stylize):
    needs("androidx__bear-vp9-odd-dimensions.webm")
    run = stylized_ok(stylize, "androidx__bear-vp9-odd-dimensions.webm")
    assert output_size(run.output) == (162, 122)
    assert (run.summary["width"], run.summary["height"]) == (161, 121)


def test_the_second_video_stream_is_not_processed_but_both_audio_tracks_are_kept(stylize):
    needs("torchcodec__nasa_13013.mp4")
    run = stylized_ok(stylize, "torchcodec__nasa_13013.mp4")
    assert len(media_checks.streams_of_kind(run.output, "video")) == 1
    assert len(media_checks.streams_of_kind(run.output, "audio")) == 2
    dropped = [s for s in run.summary["streams"] if s["action"] == "drop"]
    assert [(s["kind"], s["codec"]) for s in dropped] == [("video", "h264")]


def test_an_open_gop_start_keeps_exactly_the_frames_ffmpeg_decodes(stylize):
    """tsduck__test-025.ts starts on an open GOP: its first B-frames reference a picture before the file
    and cannot be decoded. FFmpeg drops them (with 4 error lines); framefleet does the same, so the output
    has the 61 frames that decode, at their own times (0.816 s after the audio starts, as in the input),
    and is a clean file that decodes without an error."""
    needs("tsduck__test-025.ts")
    run = stylized_ok(stylize, "tsduck__test-025.ts")
    assert run.summary["frames"] == 61
    with av.open(str(run.output)) as container:  # decodes to the end without raising
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == 61
    assert output_size(run.output) == (720, 576)
    assert media_checks.decoded_times(run.output) == media_checks.decoded_times(run.source)
    lead = media_checks.decoded_times(run.output, relative=False)[0] - first_audio_time(run.output)
    assert abs(lead - Fraction(816, 1000)) <= Fraction(2, 1000)
