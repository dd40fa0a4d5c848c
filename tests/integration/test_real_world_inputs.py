"""Real-world inputs that FFmpeg decodes come out (issue 18): the output's extension picks a container and
the codec follows it, partly damaged files keep every frame that decodes, legacy and broadcast files keep
their audio and subtitles, files with several video streams say which one is processed.

Every check is against PyAV reading the files on its own (`media_checks`): frame counts and timestamps of
what decodes, and the bytes of every copied packet.
"""

from __future__ import annotations

import json
import random
from fractions import Fraction
from pathlib import Path

import av
import media_checks
import pytest
from cli_helpers import cli, stderr_lines

from framefleet.video.synth import ClipSpec, picture, write_clip

SIZE = dict(width=160, height=96)


def stylize(source: Path, output: Path, *args: str) -> dict:
    """`framefleet stylize` at a small size; its --json report."""
    result = cli("stylize", source, "-o", output, "--style", "7", "--max-size", "64", "--json", "-q", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def assert_same_times(output: Path, expected: list[Fraction]) -> None:
    """`output`'s frames are at `expected` (seconds from the first frame), to one tick of its time base."""
    times, tick = media_checks.decoded_times(output), media_checks.video_time_base(output)
    assert len(times) == len(expected)
    assert all(abs(a - b) <= tick for a, b in zip(times, expected)), (times, expected)


def one_line_error(result) -> str:
    lines = stderr_lines(result)
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def interleaved(source: Path, target: Path, extra: list[av.Packet] | None = None,
                subtitle_codec: str | None = None) -> Path:
    """`source`'s packets remuxed into `target` in time order (the synthetic clips hold all video, then all
    audio), plus, with `subtitle_codec`, a subtitle stream carrying `extra`'s packets."""
    with av.open(str(source)) as src, av.open(str(target), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in src.streams}
        subtitles = out.add_stream(subtitle_codec) if subtitle_codec else None
        packets = [p for p in src.demux() if p.dts is not None]
        for packet in packets:
            packet.stream = streams[packet.stream.index]
        for packet in extra or []:
            packet.stream = subtitles
        for packet in sorted([*packets, *(extra or [])], key=lambda p: p.dts * p.time_base):
            out.mux(packet)
    return target


def same_audio_and_subtitles(source: Path, output: Path) -> None:
    """Every audio and subtitle stream of `source` is in `output`, in order, packet for packet (AAC less the
    ADTS header the MPEG-TS muxer puts in front of each packet)."""
    for kind in ("audio", "subtitle"):
        ins, outs = media_checks.streams_of_kind(source, kind), media_checks.streams_of_kind(output, kind)
        assert len(ins) == len(outs), (kind, ins, outs)
        for a, b in zip(ins, outs):
            copied = [without_adts(p) for p in media_checks.packet_payloads(output, b)]
            assert copied == [without_adts(p) for p in media_checks.packet_payloads(source, a)], (kind, a)


def without_adts(payload: bytes) -> bytes:
    """An AAC packet without its ADTS header, when it has one (7 bytes, 9 with a CRC)."""
    if len(payload) > 7 and payload[0] == 0xFF and payload[1] & 0xF6 == 0xF0:
        return payload[7 if payload[1] & 0x01 else 9:]
    return payload


def cut_inside_video(source: Path, target: Path, at: float = 0.6) -> Path:
    """`source` cut mid-packet inside the video packet found at `at` of its video packets."""
    with av.open(str(source)) as container:
        positions = [p.pos for p in container.demux(video=0) if p.size and p.pos is not None and p.pos > 0]
    cut = positions[int(len(positions) * at)] + 101  # not on a packet (nor a 188-byte TS packet) boundary
    target.write_bytes(source.read_bytes()[:cut])
    return target


# -- outputs named for containers that cannot hold H.264, and --codec ------------------------------------


def test_a_webm_output_is_vp9_with_its_opus_audio_copied(tmp_path):
    source = tmp_path / "phone.webm"
    write_clip(source, ClipSpec(**SIZE, frames=24, codec="libvpx-vp9", audio=("libopus",),
                                time_base=Fraction(1, 1000)))
    report = stylize(source, tmp_path / "out.webm")
    assert report["encoder"] == "libvpx-vp9"
    assert media_checks.stream_codecs(tmp_path / "out.webm")[0] == ("video", "vp9")
    assert_same_times(tmp_path / "out.webm", media_checks.decoded_times(source))
    same_audio_and_subtitles(source, tmp_path / "out.webm")


def test_an_mp4_to_webm_gets_its_aac_transcoded_to_opus_and_says_so(clip_factory, tmp_path):
    source = clip_factory("aac.mp4", **SIZE, frames=24, audio=("aac",))
    report = stylize(source, tmp_path / "out.webm")
    assert media_checks.stream_codecs(tmp_path / "out.webm") == [("video", "vp9"), ("audio", "opus")]
    (audio,) = report["streams"]
    assert audio["action"] == "transcode" and "webm cannot hold aac" in audio["reason"]
    assert_same_times(tmp_path / "out.webm", media_checks.decoded_times(source))
    assert media_checks.audio_seconds(tmp_path / "out.webm", 1) == pytest.approx(
        media_checks.audio_seconds(source, 1), abs=0.05)


def test_codec_overrides_the_containers_choice_and_a_codec_it_cannot_hold_is_one_line(clip_factory, tmp_path):
    source = clip_factory("aac.mp4", **SIZE, frames=24, audio=("aac",))
    assert stylize(source, tmp_path / "av1.webm", "--codec", "libsvtav1")["encoder"] == "libsvtav1"
    with av.open(str(tmp_path / "av1.webm")) as container:
        assert container.streams.video[0].codec_context.codec.canonical_name == "av1"
    assert media_checks.frame_count(tmp_path / "av1.webm") == 24
    line = one_line_error(cli("stylize", source, "-o", tmp_path / "x.webm", "--codec", "libx264"))
    assert "x.webm: the webm format cannot hold h264 video; use --codec libvpx-vp9" in line
    assert not (tmp_path / "x.webm").exists()


@pytest.mark.parametrize("suffix", [".mkv", ".ts", ".mov", ".avi"])
def test_other_containers_keep_every_frame_time_and_the_audio(clip_factory, tmp_path, suffix):
    source = clip_factory("aac.mp4", **SIZE, frames=24, audio=("aac",))
    output = tmp_path / f"out{suffix}"
    assert stylize(source, output)["encoder"] == ("mpeg4" if suffix == ".avi" else "libx264")  # as the ffmpeg CLI
    assert_same_times(output, media_checks.decoded_times(source))
    same_audio_and_subtitles(source, output)


# -- legacy pairs: AVI with MP3 -----------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["mpeg4", "libx264"])
def test_an_avi_with_mp3_keeps_its_audio_and_every_frame(tmp_path, codec):
    source = tmp_path / "camera.avi"
    write_clip(source, ClipSpec(**SIZE, frames=24, codec=codec, bframes=2 if codec == "libx264" else 0,
                                audio=("libmp3lame",), time_base=Fraction(1, 24)))
    for output in (tmp_path / "out.avi", tmp_path / "out.mp4"):
        report = stylize(source, output)
        assert report["frames"] == media_checks.frame_count(source) == media_checks.frame_count(output)
        assert report["damaged"] is False  # FFmpeg's AVI index lists one entry more: not damage
        times = media_checks.decoded_times(output)
        assert times == sorted(set(times))  # strictly increasing: no B-frames in an AVI output
        if codec == "mpeg4":  # the source has no B-frames either: its AVI times are exact
            assert_same_times(output, media_checks.decoded_times(source))
        same_audio_and_subtitles(source, output)


# -- several video streams -----------------------------------------------------------------------------


def test_with_two_video_streams_probe_and_stylize_agree_on_the_one_processed(tmp_path):
    source = tmp_path / "two.mkv"
    with av.open(str(source), "w") as out:
        small, large = out.add_stream("libx264", rate=24), out.add_stream("libx264", rate=24)
        for stream, (width, height) in ((small, (96, 64)), (large, (160, 96))):
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(24):
            for stream, frames in ((small, 24), (large, 12)):
                if i < frames:
                    frame = av.VideoFrame.from_ndarray(picture(i, stream.width, stream.height), format="rgb24")
                    frame = frame.reformat(format="yuv420p")
                    frame.pts, frame.time_base = i, Fraction(1, 24)
                    out.mux(stream.encode(frame))
        for stream in (small, large):
            out.mux(stream.encode(None))
    probed = json.loads(cli("probe", source, "--json").stdout)
    with av.open(str(source)) as container:
        best = container.streams.best("video").index
    assert probed["video_index"] == best
    report = stylize(source, tmp_path / "out.mkv")
    assert report["frames"] == media_checks.frame_count(source, best)
    assert media_checks.streams_of_kind(tmp_path / "out.mkv", "video") == [0]
    (other,) = [s for s in report["streams"] if s["kind"] == "video"]
    assert other["action"] == "drop" and other["reason"] == "only one video stream is processed"
    chosen = 1 - best
    report = stylize(source, tmp_path / "other.mkv", "--video-stream", str(chosen))
    assert report["frames"] == media_checks.frame_count(source, chosen)


# -- broadcast TS: several E-AC-3 tracks and DVB subtitles ------------------------------------------------


def broadcast(tmp_path: Path) -> Path:
    base = tmp_path / "base.ts"
    write_clip(base, ClipSpec(**SIZE, frames=48, audio=("eac3", "eac3"), time_base=Fraction(1, 90000)))
    subtitles = []
    for i in range(4):  # an "end of display set" segment: the smallest valid DVB subtitle
        packet = av.Packet(bytes([0x0F, 0x80, 0x00, 0x01, 0x00, 0x00]))
        packet.time_base, packet.pts, packet.dts = Fraction(1, 90000), 90000 + i * 45000, 90000 + i * 45000
        subtitles.append(packet)
    return interleaved(base, tmp_path / "broadcast.ts", subtitles, subtitle_codec="dvbsub")


@pytest.mark.parametrize("suffix", [".ts", ".mkv"])
def test_a_broadcast_ts_keeps_every_eac3_track_and_its_dvb_subtitles(tmp_path, suffix):
    source = broadcast(tmp_path)
    assert [k for k, _ in media_checks.stream_codecs(source)] == ["video", "audio", "audio", "subtitle"]
    output = tmp_path / f"out{suffix}"
    report = stylize(source, output)
    assert [(s["codec"], s["action"]) for s in report["streams"]] == [("eac3", "copy")] * 2 + [("dvbsub", "copy")]
    assert_same_times(output, media_checks.decoded_times(source))
    same_audio_and_subtitles(source, output)


# -- partly damaged inputs ----------------------------------------------------------------------------


def test_a_transport_stream_cut_mid_packet_keeps_what_decodes(tmp_path):
    source = cut_inside_video(broadcast(tmp_path), tmp_path / "cut.ts")
    salvaged = media_checks.salvaged_pts(source)
    assert 0 < len(salvaged) < 48
    report = stylize(source, tmp_path / "out.ts")
    assert report["frames"] == len(salvaged) and report["frames_claimed"] is None  # TS lists no frames
    tick = media_checks.video_time_base(source)
    assert_same_times(tmp_path / "out.ts", [(p - salvaged[0]) * tick for p in salvaged])


def test_a_program_stream_cut_mid_gop_keeps_what_decodes(tmp_path):
    base = tmp_path / "base.mpg"
    write_clip(base, ClipSpec(**SIZE, frames=48, rate=Fraction(25), codec="mpeg2video", audio=("mp2",),
                              time_base=Fraction(1, 25)))
    source = cut_inside_video(interleaved(base, tmp_path / "dvd.mpg"), tmp_path / "cut.mpg", at=0.55)
    salvaged = media_checks.salvaged_pts(source)
    assert 0 < len(salvaged) < 48
    assert stylize(source, tmp_path / "out.mpg")["frames"] == len(salvaged)
    # MPEG-PS packs small frames into shared PES packets, so not every frame carries a time when read back:
    # count there, and check the times in Matroska
    assert media_checks.frame_count(tmp_path / "out.mpg") == len(salvaged)
    stylize(source, tmp_path / "out.mkv")
    tick = media_checks.video_time_base(source)
    assert_same_times(tmp_path / "out.mkv", [(p - salvaged[0]) * tick for p in salvaged])


def test_a_phone_hevc_whose_index_lists_one_frame_more_is_processed_and_counted(tmp_path):
    source = tmp_path / "phone.mp4"
    write_clip(source, ClipSpec(**SIZE, frames=24, codec="libx265", pix_fmt="yuv420p10le", bframes=0,
                                audio=("aac",)))
    data = bytearray(source.read_bytes())
    with av.open(str(source)) as container:
        last = [p for p in container.demux(video=0) if p.size][-1]
    data[last.pos:last.pos + last.size] = bytes(last.size)  # the last frame's bytes gone
    source.write_bytes(bytes(data))
    salvaged = media_checks.salvaged_pts(source)
    assert len(salvaged) == 23
    report = stylize(source, tmp_path / "out.mp4")
    assert (report["frames"], report["frames_claimed"]) == (23, 24)
    assert media_checks.decoded_pts(tmp_path / "out.mp4") == salvaged
    same_audio_and_subtitles(source, tmp_path / "out.mp4")


def test_a_broken_last_frame_is_counted_and_strict_refuses_the_file(clip_factory, tmp_path):
    source = tmp_path / "broken.mp4"
    data = bytearray(clip_factory("aac.mp4", **SIZE, frames=24, audio=("aac",)).read_bytes())
    source.write_bytes(bytes(data))
    with av.open(str(source)) as container:
        packets = sorted((p for p in container.demux(video=0) if p.size), key=lambda p: p.pts)
    for packet in packets[-3:]:  # the last frames shown: noise instead of their slices
        data[packet.pos + 4:packet.pos + packet.size] = random.Random(packet.pts).randbytes(packet.size - 4)
    source.write_bytes(bytes(data))
    salvaged = media_checks.salvaged_pts(source)
    report = stylize(source, tmp_path / "out.mp4")
    assert report["frames"] == len(salvaged) and report["frames_claimed"] == 24
    assert media_checks.decoded_pts(tmp_path / "out.mp4") == salvaged
    assert report["damaged"] is (report["decode_errors"] > 0 or len(salvaged) < 23)
    if report["damaged"]:
        line = one_line_error(cli("stylize", source, "-o", tmp_path / "strict.mp4", "--strict"))
        assert "broken.mp4: corrupt video" in line and not (tmp_path / "strict.mp4").exists()


def test_a_segmented_job_encodes_every_part_for_the_webm_it_joins_into(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    source = src / "long.webm"
    write_clip(source, ClipSpec(**SIZE, frames=72, gop=12, codec="libvpx-vp9", audio=("libopus",),
                                time_base=Fraction(1, 1000)))
    ran = cli("run", src, "-o", out, "--style", "7", "--max-size", "64", "--segment-seconds", "0.5",
              "--workers", "1", "--json")
    assert ran.exit_code == 0, ran.stderr
    with av.open(str(out / "long.webm")) as container:  # joined from VP9 parts without re-encoding
        assert container.streams.video[0].codec_context.codec.canonical_name == "vp9"
    assert_same_times(out / "long.webm", media_checks.decoded_times(source))
    same_audio_and_subtitles(source, out / "long.webm")
    status = json.loads(cli("status", out, "--json").stdout)
    assert status["items"]["done"] == 1 and status["tasks"]["done"] > 3  # a probe, the segments, a join
