"""Storage: local URIs, file versions, listings, and output paths that never leave the output root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from framefleet.errors import InputNotFoundError, OptionError, OutputError
from framefleet.files import storage

# Strings built from the pieces that make paths dangerous, so Hypothesis tries them in many combinations.
_PIECES = ["..", ".", "", "a", "b.mp4", "/", "\\", "C:", "c:\\", "\x00", "\n", "~", " ", "..."]
_path_like = st.lists(st.sampled_from(_PIECES), max_size=8).map("/".join)
_glued = st.lists(st.sampled_from(_PIECES), max_size=8).map("".join)


@pytest.fixture(scope="module")
def output_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("out").resolve()


@given(rel=st.one_of(st.text(), _path_like, _glued))
@example(rel="../x.mp4")
@example(rel="a/../../x")
@example(rel="/etc/passwd")
@example(rel="C:/x.mp4")
@example(rel=".")
def test_safe_relpath_either_raises_or_stays_inside_the_root(output_root: Path, rel: str):
    try:
        safe = storage.safe_relpath(rel)
    except OutputError:
        return
    joined = (output_root / safe).resolve()
    assert joined != output_root
    assert joined.is_relative_to(output_root)
    assert storage.safe_relpath(safe) == safe  # normalised: a second pass changes nothing


@pytest.mark.parametrize(
    "rel",
    ["", "/abs/x.mp4", "../x.mp4", "a/../../x.mp4", "a\\b.mp4", "a\x00b.mp4", "a\nb.mp4", "a\x7fb.mp4",
     "a//b.mp4", "a/b/", "C:/x.mp4", "c:x.mp4", "./C:", ".", "./."],
)
def test_unsafe_relpaths_are_one_line_output_errors(rel: str):
    with pytest.raises(OutputError) as info:
        storage.safe_relpath(rel)
    assert "\n" not in str(info.value)
    assert repr(rel) in str(info.value)


@pytest.mark.parametrize(
    ("rel", "safe"),
    [("a/b.mp4", "a/b.mp4"), ("./a/./b.mp4", "a/b.mp4"), ("x y/é 10:30.mkv", "x y/é 10:30.mkv"),
     ("~", "~")],
)
def test_safe_relpaths_are_normalised(rel: str, safe: str):
    assert storage.safe_relpath(rel) == safe


@pytest.mark.parametrize(
    ("rel", "out"),
    [("a/b.avi", "a/b.mp4"), ("x.ts", "x.ts"), ("x.mp4", "x.mp4"), ("c/x.MOV", "c/x.MOV"),
     ("x.mkv", "x.mkv"), ("x.mpg", "x.mp4"),
     ("x.webm", "x.webm"), ("noext", "noext.mp4"), ("a.b/c", "a.b/c.mp4"), ("v.tar.ts", "v.tar.ts")],
)
def test_output_extension_is_kept_for_containers_framefleet_writes_and_mp4_otherwise(rel: str, out: str):
    assert storage.output_relpath(rel) == out


def test_output_uri_joins_in_the_roots_own_form(tmp_path: Path):
    assert storage.output_uri(str(tmp_path), "a/b.avi") == str(tmp_path / "a" / "b.mp4")
    assert storage.output_uri(f"file://{tmp_path}/", "x.mpg") == f"file://{tmp_path}/x.mp4"
    with pytest.raises(OutputError, match="'..'"):
        storage.output_uri(str(tmp_path), "../escape.mp4")
    with pytest.raises(OutputError, match="empty output root"):
        storage.output_uri("", "x.mp4")


def test_local_paths_and_file_urls_are_local(tmp_path: Path):
    assert storage.is_local("videos/a.mp4")
    assert storage.is_local(f"file://{tmp_path}/a.mp4")
    assert not storage.is_local("az://container/a.mp4")
    assert storage.local_path(f"file://{tmp_path}/a.mp4") == tmp_path / "a.mp4"
    assert storage.local_path("rel/a.mp4") == Path("rel/a.mp4")
    assert storage.canonical_uri(f"file://{tmp_path}/x/../a.mp4") == (tmp_path / "a.mp4").as_posix()


def test_remote_urls_are_canonical_and_need_a_local_path_only_where_one_is_required():
    assert storage.canonical_uri("az://c/videos/") == "az://c/videos"
    assert storage.protocol_of("s3://bucket/a.mp4") == "s3" and storage.protocol_of("/x/a.mp4") is None
    assert storage.join("az://c/out", "a/b.mp4") == "az://c/out/a/b.mp4"
    assert storage.is_inside("az://c/out/a.mp4", "az://c/out") and not storage.is_inside("az://c/outer.mp4", "az://c/out")
    with pytest.raises(OptionError, match="a local path is needed"):
        storage.local_path("az://c/a.mp4")


def test_an_unknown_protocol_is_a_one_line_option_error():
    with pytest.raises(OptionError, match="unknown storage protocol"):
        storage.stat("nosuchstore://bucket/a.mp4")


def test_a_store_whose_extra_is_missing_names_the_extra_to_install():
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        with pytest.raises(OptionError, match=r"pip install 'framefleet\[gcs\]'"):
            storage.stat("gs://bucket/a.mp4")
    else:
        pytest.skip("gcsfs is installed")


def test_pre_signed_urls_are_refused_as_inputs_without_echoing_the_signature():
    url = "https://bucket.s3.amazonaws.com/a.mp4?X-Amz-Credential=AKIA&X-Amz-Signature=deadbeefcafe1234"
    with pytest.raises(OptionError, match="pre-signed") as info:
        storage.canonical_uri(url)
    assert "deadbeefcafe1234" not in str(info.value)


def test_https_is_read_only_as_an_output():
    with pytest.raises(OptionError, match="read-only"):
        storage.check_writable("https://example.org/out")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"account_name": "acct", "sas_token": "sv=1&sig=abc"}', {"account_name": "acct", "sas_token": "sv=1&sig=abc"}),
        ("", {}),
    ],
)
def test_storage_options_parse_inline_json(text: str, expected: dict):
    assert storage.load_options(text) == expected


def test_storage_options_load_from_yaml_and_json_files_and_bad_ones_do_not_echo(tmp_path: Path):
    (tmp_path / "o.yaml").write_text("az://in:\n  sas_token: 'sv=1&sig=topsecret99'\n")
    assert storage.load_options(str(tmp_path / "o.yaml")) == {"az://in": {"sas_token": "sv=1&sig=topsecret99"}}
    (tmp_path / "o.json").write_text('{"key": "v"}')
    assert storage.load_options(str(tmp_path / "o.json")) == {"key": "v"}
    (tmp_path / "bad.yaml").write_text("sas_token: [topsecret99\n")
    with pytest.raises(OptionError, match="not valid JSON or YAML") as info:
        storage.load_options(str(tmp_path / "bad.yaml"))
    assert "topsecret99" not in str(info.value)
    with pytest.raises(OptionError, match="not valid JSON") as info:
        storage.load_options('{"sas_token": "topsecret99",}')
    assert "topsecret99" not in str(info.value)


def test_per_prefix_options_pick_the_longest_matching_prefix():
    try:
        storage.configure({"az://in": {"account_name": "a"}, "az://in/special": {"account_name": "b"}})
        assert storage.options_for("az://in/x.mp4") == {"account_name": "a"}
        assert storage.options_for("az://in/special/x.mp4") == {"account_name": "b"}
        assert storage.options_for("az://inner/x.mp4") == {}
        storage.configure({"account_name": "all"})
        assert storage.options_for("s3://any/x.mp4") == {"account_name": "all"}
    finally:
        storage.configure(None)


def test_stat_version_is_mtime_ns_and_size(tmp_path: Path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"12345")
    os.utime(path, ns=(1_000_000_000, 1_700_000_000_123_456_789))
    assert storage.stat(str(path)) == (5, "1700000000123456789-5")
    assert storage.stat(f"file://{path}") == (5, "1700000000123456789-5")


def test_stat_of_a_missing_file_names_it(tmp_path: Path):
    with pytest.raises(InputNotFoundError, match="missing.mp4: no such file"):
        storage.stat(str(tmp_path / "missing.mp4"))


def test_walk_skips_hidden_entries_and_does_not_follow_folder_links(tmp_path: Path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".framefleet-job").mkdir()
    for name in ["x.mp4", "a/y.mp4", "a/b/z.mp4", ".hidden.mp4", ".framefleet-job/state.mp4"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "a" / "loop").symlink_to(tmp_path)
    os.mkfifo(tmp_path / "pipe")
    listed = storage.walk_files(str(tmp_path))
    assert [rel for _, rel in listed] == ["a/b/z.mp4", "a/y.mp4", "x.mp4"]
    assert listed[0][0] == (tmp_path / "a/b/z.mp4").as_posix()


def test_kind_names_files_folders_and_missing_paths(tmp_path: Path):
    (tmp_path / "f").write_bytes(b"")
    os.mkfifo(tmp_path / "pipe")
    assert storage.kind(str(tmp_path / "f")) == "file"
    assert storage.kind(str(tmp_path)) == "directory"
    assert storage.kind(str(tmp_path / "pipe")) == "other"
    assert storage.kind(str(tmp_path / "nope")) is None


def test_glob_returns_its_base_and_matches(tmp_path: Path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "a.mp4").write_bytes(b"")
    (tmp_path / "d" / "e" / "b.mp4").write_bytes(b"")
    base, matches = storage.glob(f"{tmp_path}/d/**/*.mp4")
    assert base == (tmp_path / "d").as_posix()
    assert matches == [(tmp_path / "d/a.mp4").as_posix(), (tmp_path / "d/e/b.mp4").as_posix()]


def test_read_text_rejects_non_utf8(tmp_path: Path):
    path = tmp_path / "list.txt"
    path.write_bytes(b"caf\xe9.mp4\n")
    with pytest.raises(OptionError, match="not UTF-8"):
        storage.read_text(str(path))


def test_range_readers_sharing_a_block_cache_read_like_a_file_and_fetch_each_block_once(tmp_path: Path):
    data = bytes(range(256)) * 40  # 10,240 bytes
    (tmp_path / "blob.bin").write_bytes(data)
    uri = str(tmp_path / "blob.bin")
    cache = storage.block_cache(uri, len(data), block_size=1024, max_blocks=16)
    first, second = storage.RangeReader(uri, cache), storage.RangeReader(uri, cache)
    assert first.read(100) == data[:100] and first.tell() == 100
    first.seek(-50, os.SEEK_END)
    assert first.read() == data[-50:] and first.read(10) == b""
    second.seek(3000)
    assert second.read(5000) == data[3000:8000]
    fetched = cache.total_requested_bytes
    for reader in (first, second):
        reader.seek(0)
        assert reader.read() == data
    assert cache.total_requested_bytes == fetched + 1024 * 2 == len(data)  # only blocks 1 and 8 were new
