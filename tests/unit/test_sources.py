"""Sources: every input form a user can name becomes the same sorted, de-duplicated list of VideoRefs."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from framefleet.errors import InputNotFoundError, OptionError, OutputError
from framefleet.files.sources import SourceListing, VideoRef, expand_inputs, sniff_container

# The first bytes of each container family the sniffer knows, padded as a real file would be.
HEADS = {
    "mp4": b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00",
    "matroska": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01",
    "avi": b"RIFF\x10\x00\x00\x00AVI LIST",
    "mpegts": b"\x47\x40\x00\x10" + b"\xff" * 184 + b"\x47\x01\x00\x10" + b"\xff" * 184 + b"\x47\x01\x00\x11",
    "mpegps": b"\x00\x00\x01\xba\x44\x00\x04\x00",
    "flv": b"FLV\x01\x05\x00\x00\x00\x09",
    "ogg": b"OggS\x00\x02\x00\x00",
    "asf": bytes.fromhex("3026B2758E66CF11A6D900AA0062CE6C"),
}


def write(path: Path, data: bytes = b"\x00" * 64) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.ljust(600, b"\x00"))
    return path


def relpaths(listing: SourceListing) -> list[str]:
    return [ref.relpath for ref in listing.refs]


@pytest.mark.parametrize(("family", "head"), HEADS.items())
def test_sniffer_recognises_each_container_family(family: str, head: bytes):
    assert sniff_container(head.ljust(600, b"\x00")) == family


@pytest.mark.parametrize(
    "head",
    [b"", b"hello world", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", b"\x00\x00\x00\x20ftypM4A \x00",
     b"\x89PNG\r\n\x1a\n", b"RIFF\x10\x00\x00\x00WAVEfmt ",
     b"G" + b"x" * 187 + b"G" + b"x" * 187 + b"y" * 50],
)
def test_sniffer_rejects_images_audio_text_and_short_heads(head: bytes):
    assert sniff_container(head) is None


def test_a_real_clip_renamed_to_an_unknown_extension_is_sniffed(clip_factory):
    head = clip_factory("sniff.mp4", frames=4).read_bytes()[:512]
    assert sniff_container(head) == "mp4"


def test_directory_is_walked_recursively_skipping_hidden_entries_and_non_videos(tmp_path: Path, clip_factory):
    root = tmp_path / "in"
    write(root / "a.mp4")
    write(root / "sub" / "deeper" / "b.MKV")
    write(root / "sub" / "camera.bin", clip_factory("sniffed.mp4", frames=4).read_bytes())
    write(root / "sub" / "stream.dat", HEADS["mpegts"])
    write(root / "notes.txt", b"not a video")
    write(root / ".framefleet-job" / "c.mp4")
    write(root / ".hidden.mp4")
    listing = expand_inputs([str(root)])
    assert relpaths(listing) == ["a.mp4", "sub/camera.bin", "sub/deeper/b.MKV", "sub/stream.dat"]
    assert listing.skipped == [(root / "notes.txt").as_posix()]
    assert all(ref.uri == (root / ref.relpath).as_posix() for ref in listing.refs)


def test_a_named_file_is_always_included_under_its_file_name(tmp_path: Path):
    notes = write(tmp_path / "deep" / "notes.txt", b"not a video")
    listing = expand_inputs([str(notes)])
    assert relpaths(listing) == ["notes.txt"]
    assert listing.skipped == []


def test_video_ref_carries_size_version_and_a_content_id(tmp_path: Path):
    clip = write(tmp_path / "a.mp4")
    os.utime(clip, ns=(0, 1_700_000_000_000_000_001))
    (ref,) = expand_inputs([str(clip)]).refs
    assert (ref.size, ref.version) == (600, "1700000000000000001-600")
    assert len(ref.id) == 16
    os.utime(clip, ns=(0, 1_700_000_000_000_000_002))
    (touched,) = expand_inputs([f"file://{clip}"]).refs
    assert touched.uri == ref.uri and touched.id != ref.id


def test_video_ref_rejects_an_unnormalised_relpath():
    with pytest.raises(OutputError):
        VideoRef(uri="/x/a.mp4", relpath="./a.mp4", size=1, version="1-1")


def test_glob_is_relative_to_its_non_magic_base(tmp_path: Path):
    write(tmp_path / "v" / "a.mp4")
    write(tmp_path / "v" / "b.avi")
    write(tmp_path / "v" / "c.txt", b"text")
    write(tmp_path / "v" / "sub" / "d.mp4")
    listing = expand_inputs([f"{tmp_path}/v/*.[ma]*"])
    assert relpaths(listing) == ["a.mp4", "b.avi"]


def test_recursive_glob_spans_folders_but_not_hidden_ones(tmp_path: Path):
    write(tmp_path / "v" / "a.mp4")
    write(tmp_path / "v" / "x" / "y" / "b.mp4")
    write(tmp_path / "v" / "x" / "c.txt", b"text")
    write(tmp_path / "v" / ".cache" / "d.mp4")
    assert relpaths(expand_inputs([f"{tmp_path}/v/**/*.mp4"])) == ["a.mp4", "x/y/b.mp4"]
    everything = expand_inputs([f"{tmp_path}/v/**"])
    assert relpaths(everything) == ["a.mp4", "x/y/b.mp4"]
    assert everything.skipped == [(tmp_path / "v/x/c.txt").as_posix()]


def test_list_file_ignores_blank_lines_and_comments(tmp_path: Path, monkeypatch):
    write(tmp_path / "a" / "one.mp4")
    write(tmp_path / "b" / "two.mov")
    write(tmp_path / "dir" / "sub" / "three.mkv")
    listing_file = tmp_path / "list.txt"
    listing_file.write_text(
        f"# videos for today\n\n{tmp_path}/a/one.mp4\n   \n  b/two.mov  \n# b/ignored.mp4\ndir\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)  # list entries are relative to the current directory, like typed arguments
    assert relpaths(expand_inputs([f"@{listing_file}"])) == ["one.mp4", "sub/three.mkv", "two.mov"]


def test_dash_reads_entries_from_stdin(tmp_path: Path):
    a = write(tmp_path / "a.mp4")
    b = write(tmp_path / "x" / "b.webm")
    listing = expand_inputs(["-"], stdin=io.StringIO(f"{a}\n# comment\n\nfile://{b}\n"))
    assert relpaths(listing) == ["a.mp4", "b.webm"]


def test_the_same_file_named_twice_is_listed_once_with_its_first_relpath(tmp_path: Path):
    clip = write(tmp_path / "d" / "sub" / "a.mp4")
    listing = expand_inputs([str(tmp_path / "d"), str(clip), f"file://{clip}"])
    assert relpaths(listing) == ["sub/a.mp4"]


def test_missing_path_is_input_not_found_naming_it(tmp_path: Path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(InputNotFoundError, match="nope.mp4: no such file or directory"):
        expand_inputs([str(missing)])


def test_glob_matching_nothing_is_input_not_found_naming_it(tmp_path: Path):
    with pytest.raises(InputNotFoundError, match=r"\*\.mp4: no files match"):
        expand_inputs([f"{tmp_path}/*.mp4"])


def test_missing_list_entry_names_the_list_and_line(tmp_path: Path):
    listing_file = tmp_path / "list.txt"
    listing_file.write_text("# header\n/no/such/video.mp4\n", encoding="utf-8")
    with pytest.raises(InputNotFoundError, match=r"/no/such/video.mp4 \(line 2 of .*list.txt\)"):
        expand_inputs([f"@{listing_file}"])


def test_missing_list_file_is_input_not_found(tmp_path: Path):
    with pytest.raises(InputNotFoundError, match="absent.txt"):
        expand_inputs([f"@{tmp_path}/absent.txt"])


def test_same_relpath_from_two_inputs_suggests_their_common_parent(tmp_path: Path):
    a = write(tmp_path / "day1" / "cam.mp4")
    b = write(tmp_path / "day2" / "cam.mp4")
    with pytest.raises(OptionError) as info:
        expand_inputs([str(a), str(b)])
    message = str(info.value)
    assert str(a) in message and str(b) in message
    assert f"common parent directory ({tmp_path})" in message
    assert relpaths(expand_inputs([str(tmp_path)])) == ["day1/cam.mp4", "day2/cam.mp4"]


def test_inputs_mapping_to_the_same_output_extension_collide(tmp_path: Path):
    write(tmp_path / "clip.avi")
    write(tmp_path / "clip.mpg")
    with pytest.raises(OptionError, match="'clip.mp4'.*rename one"):
        expand_inputs([str(tmp_path)])


def test_a_file_name_unsafe_as_an_output_path_is_refused_and_the_others_listed(tmp_path: Path):
    write(tmp_path / "bad\\name.mp4")
    write(tmp_path / "bell\a.mp4")
    write(tmp_path / "good.mp4")
    listing = expand_inputs([str(tmp_path)])
    assert [ref.relpath for ref in listing.refs] == ["good.mp4"]
    assert set(listing.refused) == {(tmp_path / "bad\\name.mp4").as_posix(), (tmp_path / "bell\a.mp4").as_posix()}
    reasons = sorted(listing.refused.values())
    assert "backslash" in reasons[0] + reasons[1] and "control character" in reasons[0] + reasons[1]
    assert all("\n" not in reason for reason in reasons)


def test_an_unknown_store_is_a_clear_option_error():
    with pytest.raises(OptionError, match="unknown storage protocol"):
        expand_inputs(["nosuchstore://bucket/videos"])


def test_pipes_are_refused(tmp_path: Path):
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(OptionError, match="pipe or device"):
        expand_inputs([str(tmp_path / "pipe")])
