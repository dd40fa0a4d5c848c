"""The manifest beside a committed output: written, read back, and matched against the work it would save.

Each mismatch (another pipeline, another input version, another segment, a truncated, replaced or missing
file, a malformed manifest) is refused: only a manifest that describes its file exactly is adopted.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from framefleet.files.sources import expand_inputs
from framefleet.jobs import manifest as manifests
from framefleet.jobs.manifest import CHECK_BYTES, InputFingerprint, Manifest

PIPELINE = "a" * 64
INPUT = InputFingerprint("/data/in/a.mp4", 1000, "1700000000000000000-1000")


def committed(folder: Path, data: bytes = b"", name: str = "a.mp4", segment=None) -> str:
    """A file committed at folder/name with its manifest, as a worker leaves it; its URI."""
    path = folder / name
    path.write_bytes(data or bytes(range(256)) * 1024)  # 256 KiB: both ends differ from the middle
    uri = str(path)
    check = manifests.check_local(uri, name, manifests.committed_version(uri))
    manifests.write_manifest(uri, Manifest(input=INPUT, pipeline=PIPELINE, frames=24, files=(check,),
                                           segment=segment))
    return uri


def adopt(uri: str, input=INPUT, pipeline=PIPELINE, segment=None, names=("a.mp4",)) -> Manifest | None:
    return manifests.adoptable(uri, input, pipeline, segment, list(names))


def test_the_manifest_is_a_hidden_json_file_named_after_its_output(tmp_path: Path):
    uri = committed(tmp_path)
    assert manifests.manifest_uri(uri) == f"{tmp_path}/.a.mp4.framefleet.json"
    assert manifests.manifest_uri("az://c/out/sub/b.mov") == "az://c/out/sub/.b.mov.framefleet.json"
    assert manifests.manifest_uri("sub/b.mov") == "sub/.b.mov.framefleet.json"
    assert manifests.manifest_uri("b.mov") == ".b.mov.framefleet.json"
    assert (tmp_path / ".a.mp4.framefleet.json").is_file()


def test_a_manifest_reads_back_as_written(tmp_path: Path):
    uri = committed(tmp_path, segment=(0, 512))
    found = manifests.read_manifest(uri)
    assert found is not None
    assert (found.input, found.pipeline, found.frames, found.segment) == (INPUT, PIPELINE, 24, (0, 512))
    assert found.files[0].size == 256 * 1024 and found.files[0].version is not None
    assert Manifest.from_json(found.to_json()) == found


def test_a_matching_manifest_is_adopted(tmp_path: Path):
    found = adopt(committed(tmp_path))
    assert found is not None and found.frames == 24


def test_a_part_is_adopted_only_for_its_own_segment(tmp_path: Path):
    uri = committed(tmp_path, name="00001.nut", segment=(512, 1024))
    assert adopt(uri, segment=(512, 1024), names=["00001.nut"]) is not None
    assert adopt(uri, segment=(512, 2048), names=["00001.nut"]) is None, "another segment length"
    assert adopt(uri, segment=None, names=["00001.nut"]) is None


def test_an_output_without_a_manifest_is_not_adopted(tmp_path: Path):
    (tmp_path / "a.mp4").write_bytes(b"video")
    assert adopt(str(tmp_path / "a.mp4")) is None


def test_another_pipeline_is_not_adopted(tmp_path: Path):
    assert adopt(committed(tmp_path), pipeline="b" * 64) is None


def test_another_version_of_the_input_is_not_adopted(tmp_path: Path):
    uri = committed(tmp_path)
    assert adopt(uri, input=InputFingerprint(INPUT.uri, INPUT.size, "1700000000000000001-1000")) is None
    assert adopt(uri, input=InputFingerprint("/data/in/other.mp4", INPUT.size, INPUT.version)) is None


def test_a_truncated_output_is_not_adopted(tmp_path: Path):
    uri = committed(tmp_path)
    with open(uri, "r+b") as f:
        f.truncate(100_000)
    assert adopt(uri) is None


def test_a_replaced_output_is_not_adopted_even_with_its_size_and_time_kept(tmp_path: Path):
    uri = committed(tmp_path)
    before = os.stat(uri)
    data = bytearray(Path(uri).read_bytes())
    data[-10] ^= 0xFF  # the last 64 KiB change; size and mtime are put back, so only the hash can tell
    Path(uri).write_bytes(bytes(data))
    os.utime(uri, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert manifests.committed_version(uri) == manifests.read_manifest(uri).files[0].version
    assert adopt(uri) is None


def test_a_replaced_output_is_not_adopted_by_its_version(tmp_path: Path):
    uri = committed(tmp_path)
    data = Path(uri).read_bytes()
    os.utime(uri, ns=(1, os.stat(uri).st_mtime_ns + 1_000_000))  # same bytes, rewritten later
    assert Path(uri).read_bytes() == data
    assert adopt(uri) is None


def test_a_missing_file_of_the_manifest_is_not_adopted(tmp_path: Path):
    uri = committed(tmp_path)
    os.unlink(uri)
    assert adopt(uri) is None
    assert adopt(committed(tmp_path), names=["a.mp4", "a.mp4.records.parquet"]) is None, "the records file too"


@pytest.mark.parametrize("text", ["", "{", "[]", '{"framefleet_manifest": 99}', '{"framefleet_manifest": 1}',
                                  '{"framefleet_manifest": 1, "input": {"uri": "x"}, "pipeline": "p"}'])
def test_a_malformed_manifest_is_ignored(tmp_path: Path, text: str):
    uri = committed(tmp_path)
    Path(manifests.manifest_uri(uri)).write_text(text)
    assert manifests.read_manifest(uri) is None
    assert adopt(uri) is None


def test_a_small_file_is_checked_whole(tmp_path: Path):
    uri = committed(tmp_path, data=b"tiny output")
    check = manifests.read_manifest(uri).files[0]
    assert check.size == 11 and check.head_sha256 == check.tail_sha256
    assert CHECK_BYTES == 64 << 10
    assert adopt(uri) is not None


def test_manifests_are_never_taken_for_inputs(tmp_path: Path):
    committed(tmp_path)
    listing = expand_inputs([str(tmp_path)])
    assert [Path(ref.uri).name for ref in listing.refs] == ["a.mp4"]
    assert listing.skipped == []
