"""`framefleet ingest` local -> local: tree copies, the skip and resume rules, --verify, per-file failures,
the CLI's summary and one-line errors, and destinations that never leave DEST."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import threading
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from framefleet.cli import app
from framefleet.errors import InputNotFoundError, OptionError, OutputError
from framefleet.files import ingest as ingest_module
from framefleet.files import storage
from framefleet.files.ingest import IngestProgress, ingest, stored_md5

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def make_tree(root: Path, files: dict[str, bytes]) -> dict[str, bytes]:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root (hidden ones included) by relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def src(tmp_path: Path) -> Path:
    rng = random.Random(7)
    root = tmp_path / "src"
    make_tree(root, {
        "top.bin": rng.randbytes(70_000),
        "a/one.txt": b"one\n",
        "a/b/c/deep.bin": rng.randbytes(300_000),
        "a/b/empty.dat": b"",
        "x y/é 10:30.txt": b"unicode name",
        ".hidden": b"hidden file",
        ".cache/inside.txt": b"in a hidden folder",
        "a/.also-hidden": b"hidden too",
    })
    return root


VISIBLE = {"top.bin", "a/one.txt", "a/b/c/deep.bin", "a/b/empty.dat", "x y/é 10:30.txt"}


def test_copies_a_nested_tree_skipping_hidden_names_like_walk_files(src: Path, tmp_path: Path):
    dest = tmp_path / "dest"
    progress: list[IngestProgress] = []
    result = ingest(str(src), str(dest), threads=4, on_progress=progress.append)
    assert {rel for _, rel in storage.walk_files(str(src))} == VISIBLE
    assert tree(dest) == {rel: (src / rel).read_bytes() for rel in VISIBLE}  # no temporaries left either
    assert (result.files, result.copied, result.skipped, result.failed) == (5, 5, 0, 0)
    assert result.bytes == sum((src / rel).stat().st_size for rel in VISIBLE)
    assert result.exit_code == 0 and not result.interrupted and result.failures == []
    assert [p.files_done for p in progress] == [1, 2, 3, 4, 5]
    assert progress[-1].bytes_done == progress[-1].bytes_total == result.bytes


def test_a_single_file_goes_under_dest_by_its_name(src: Path, tmp_path: Path):
    result = ingest(f"file://{src / 'a' / 'one.txt'}", str(tmp_path / "dest"))
    assert result.copied == 1
    assert tree(tmp_path / "dest") == {"one.txt": b"one\n"}


def test_default_skips_complete_files_and_redoes_truncated_or_changed_ones(src: Path, tmp_path: Path):
    dest = tmp_path / "dest"
    ingest(str(src), str(dest))
    (dest / "a/b/c/deep.bin").write_bytes((src / "a/b/c/deep.bin").read_bytes()[:1000])  # an interrupted copy
    same_size = bytearray((src / "top.bin").read_bytes())
    same_size[0] ^= 0xFF
    (dest / "top.bin").write_bytes(bytes(same_size))  # same size, other content: the MD5s differ
    (dest / "a/one.txt").unlink()

    result = ingest(str(src), str(dest))
    assert (result.copied, result.skipped, result.failed) == (3, 2, 0)
    assert result.bytes == sum((src / rel).stat().st_size for rel in ("a/b/c/deep.bin", "top.bin", "a/one.txt"))
    assert tree(dest) == {rel: (src / rel).read_bytes() for rel in VISIBLE}


def test_skip_existing_skips_whatever_is_there_and_overwrite_redoes_everything(src: Path, tmp_path: Path):
    dest = tmp_path / "dest"
    ingest(str(src), str(dest))
    (dest / "top.bin").write_bytes(b"truncated")

    skipped = ingest(str(src), str(dest), existing="skip")
    assert (skipped.copied, skipped.skipped) == (0, 5)
    assert (dest / "top.bin").read_bytes() == b"truncated"

    overwritten = ingest(str(src), str(dest), existing="overwrite")
    assert (overwritten.copied, overwritten.skipped) == (5, 0)
    assert tree(dest) == {rel: (src / rel).read_bytes() for rel in VISIBLE}


def test_verify_passes_on_good_copies_and_fails_a_corrupted_one(src: Path, tmp_path: Path, monkeypatch):
    good = ingest(str(src), str(tmp_path / "good"), verify=True)
    assert (good.copied, good.failed) == (5, 0)

    write = ingest_module._write_local

    def corrupting(reader, target: Path) -> str:  # a copy that lands with one byte flipped
        md5 = write(reader, target)
        if target.name == "deep.bin":
            data = bytearray(target.read_bytes())
            data[100] ^= 1
            target.write_bytes(bytes(data))
        return md5

    monkeypatch.setattr(ingest_module, "_write_local", corrupting)
    bad = ingest(str(src), str(tmp_path / "bad"), verify=True)
    assert (bad.copied, bad.failed, bad.exit_code) == (4, 1, 3)
    (failure,) = bad.failures
    assert failure["path"] == "a/b/c/deep.bin"
    assert "verification failed: MD5" in failure["error"] and "\n" not in failure["error"]


def test_a_file_that_cannot_be_written_fails_alone(src: Path, tmp_path: Path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "a").write_text("a file where the folder a/ is needed")
    result = ingest(str(src), str(dest), threads=2)
    assert result.failed == 3 and result.copied == 2 and result.exit_code == 3
    assert [f["path"] for f in result.failures] == ["a/b/c/deep.bin", "a/b/empty.dat", "a/one.txt"]  # sorted
    for failure in result.failures:
        assert failure["error"].startswith(f"{dest.as_posix()}/{failure['path']}: cannot write (")
        assert "\n" not in failure["error"]
    assert (dest / "top.bin").read_bytes() == (src / "top.bin").read_bytes()


@pytest.mark.parametrize(("name", "fragment"), [("back\\slash.txt", "backslash"), ("new\nline.txt", "control")])
def test_names_that_are_unsafe_elsewhere_are_refused_per_file(tmp_path: Path, name: str, fragment: str):
    src = tmp_path / "src"
    make_tree(src, {name: b"x", "fine.txt": b"y"})
    result = ingest(str(src), str(tmp_path / "dest"))
    assert (result.copied, result.failed) == (1, 1)
    assert result.failures[0]["path"] == name and fragment in result.failures[0]["error"]
    assert tree(tmp_path / "dest") == {"fine.txt": b"y"}


def test_a_symlinked_folder_in_dest_cannot_lead_outside_it(tmp_path: Path):
    src, dest, outside = tmp_path / "src", tmp_path / "dest", tmp_path / "outside"
    make_tree(src, {"link/x.txt": b"x", "y.txt": b"y"})
    outside.mkdir()
    dest.mkdir()
    (dest / "link").symlink_to(outside, target_is_directory=True)
    result = ingest(str(src), str(dest))
    assert (result.copied, result.failed) == (1, 1)
    assert "symlinked folder" in result.failures[0]["error"]
    assert list(outside.iterdir()) == []


def test_stop_submits_no_more_files_and_reports_interrupted(src: Path, tmp_path: Path):
    stop = threading.Event()
    result = ingest(str(src), str(tmp_path / "dest"), threads=1, on_progress=lambda _: stop.set(), stop=stop)
    assert result.interrupted and result.exit_code == 130
    assert 1 <= result.copied < result.files
    resumed = ingest(str(src), str(tmp_path / "dest"))
    assert resumed.skipped == result.copied and resumed.copied == result.files - result.copied


def test_bad_sources_and_destinations_raise(src: Path, tmp_path: Path):
    with pytest.raises(InputNotFoundError, match="no such file or folder"):
        ingest(str(tmp_path / "missing"), str(tmp_path / "dest"))
    with pytest.raises(OptionError, match="inside the source"):
        ingest(str(src), str(src / "a"))
    with pytest.raises(OptionError, match="is a file"):
        ingest(str(src), str(src / "top.bin"))
    with pytest.raises(OptionError, match="at least one thread"):
        ingest(str(src), str(tmp_path / "dest"), threads=0)


# -- destinations never leave DEST --------------------------------------------------------------------

_PIECES = ["..", ".", "", "a", "b.mp4", "/", "\\", "C:", "\x00", "\n", "~", " ", "..."]
_keys = st.one_of(st.text(), st.lists(st.sampled_from(_PIECES), max_size=8).map("/".join),
                  st.lists(st.sampled_from(_PIECES), max_size=8).map("".join))


@pytest.fixture(scope="module")
def dest_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dest").resolve()


@given(key=_keys)
@example(key="../escape.txt")
@example(key="a/../../escape.txt")
@example(key="/etc/passwd")
@example(key="a\\..\\..\\x")
@example(key="a\x00b")
def test_the_destination_of_any_key_is_refused_or_inside_dest(dest_root: Path, key: str):
    for root in (str(dest_root), "az://container/prefix"):
        try:
            target = storage.join(root, key)
        except OutputError:
            continue
        if root.startswith("az://"):
            rel = target.removeprefix(root + "/")
            assert target.startswith(root + "/") and rel and "\\" not in rel
            assert all(part not in ("", ".", "..") for part in rel.split("/"))
        else:
            resolved = Path(target).resolve()
            assert resolved != dest_root and resolved.is_relative_to(dest_root)


def test_stored_md5_reads_each_stores_checksum():
    md5 = hashlib.md5(b"x").digest()
    assert stored_md5({"content_settings": {"content_md5": bytearray(md5)}}, "az") == md5.hex()
    assert stored_md5({"content_settings": {"content_md5": None}}, "az") is None
    assert stored_md5({"ETag": f'"{md5.hex()}"'}, "s3") == md5.hex()
    assert stored_md5({"ETag": f'"{md5.hex()}-3"'}, "s3") is None  # multipart
    assert stored_md5({"ETag": f'"{md5.hex()}"', "ServerSideEncryption": "aws:kms"}, "s3") is None
    assert stored_md5({"md5Hash": base64.b64encode(md5).decode()}, "gs") == md5.hex()
    assert stored_md5({"etag": '"0x8D"'}, "az") is None and stored_md5({"size": 1}, None) is None


# -- the command --------------------------------------------------------------------------------------


def cli(*args: object) -> Result:
    return CliRunner().invoke(app, ["ingest", *(str(a) for a in args)])


def stderr_lines(result: Result) -> list[str]:
    return [line for line in ANSI.sub("", result.stderr).splitlines() if line.strip()]


def test_cli_json_summary(src: Path, tmp_path: Path):
    result = cli(src, tmp_path / "dest", "--json", "--threads", "3")
    assert result.exit_code == 0, result.output
    summary = json.loads(ANSI.sub("", result.stdout))
    assert {k: summary[k] for k in ("files", "copied", "skipped", "failed", "failures", "interrupted")} == {
        "files": 5, "copied": 5, "skipped": 0, "failed": 0, "failures": [], "interrupted": False}
    assert summary["bytes"] == sum((src / rel).stat().st_size for rel in VISIBLE)
    assert summary["seconds"] >= 0 and summary["mb_per_s"] >= 0
    again = json.loads(ANSI.sub("", cli(src, tmp_path / "dest", "--json").stdout))
    assert (again["copied"], again["skipped"]) == (0, 5)


def test_cli_summary_line_and_failures_exit_3(src: Path, tmp_path: Path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "a").write_text("blocks the folder a/")
    result = cli(src, dest, "--quiet")
    assert result.exit_code == 3
    lines = stderr_lines(result)
    assert re.fullmatch(r"5 files: 2 copied, 0 skipped, 3 failed; [\d.]+ MB in [\d.]+ s \([\d.]+ MB/s\)", lines[0])
    assert [line.split(":", 1)[0] for line in lines[1:]] == [
        "failed a/b/c/deep.bin", "failed a/b/empty.dat", "failed a/one.txt"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [(["{tmp}/missing", "{tmp}/dest"], "missing: no such file or folder"),
     (["{src}", "{tmp}/dest", "--overwrite", "--skip-existing"], "contradict"),
     (["{src}", "{src}/a"], "inside the source"),
     (["{src}", "https://example.com/x"], "read-only"),
     (["{src}", "{tmp}/dest", "--storage-options", "{tmp}/missing.yaml"], "cannot read the storage options")],
)
def test_cli_bad_paths_and_options_are_one_line_errors(src: Path, tmp_path: Path, args: list[str], fragment: str):
    result = cli(*(a.format(tmp=tmp_path, src=src) for a in args))
    lines = stderr_lines(result)
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines
    assert not (tmp_path / "dest").exists()


def test_cli_threads_must_be_positive(src: Path, tmp_path: Path):
    result = cli(src, tmp_path / "dest", "--threads", "0")
    assert result.exit_code == 2 and "--threads" in result.stderr
    assert not (tmp_path / "dest").exists()
