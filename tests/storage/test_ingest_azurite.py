"""`framefleet ingest` against a real Azurite: an upload interrupted part-way and resumed, downloads back,
container-to-container copies, --verify on the stored Content-MD5, and per-file permission errors."""

from __future__ import annotations

import errno
import hashlib
import json
import random
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import pytest

from framefleet.errors import StorageError
from framefleet.files import ingest as ingest_module
from framefleet.files import storage
from framefleet.files.ingest import ingest, stored_md5

pytestmark = pytest.mark.storage
AzureBlobFile = pytest.importorskip("adlfs.spec").AzureBlobFile

CLI = [str(Path(sys.executable).parent / "framefleet")]
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
FILES = 240


class Tree(NamedTuple):
    root: Path
    md5s: dict[str, str]  # relpath -> MD5 of the file's bytes

    def expected(self, prefix: str = "") -> dict[str, str]:
        return {prefix + rel: md5 for rel, md5 in self.md5s.items()}


@pytest.fixture(scope="module")
def local_tree(tmp_path_factory) -> Tree:
    """240 files in nested folders: random sizes up to 64 KB, every eighth about 1 MB, a few empty."""
    root = tmp_path_factory.mktemp("tree")
    rng = random.Random(20261122)
    md5s = {}
    for i in range(FILES):
        size = rng.randint(900_000, 1_100_000) if i % 8 == 0 else 0 if i % 50 == 1 else rng.randint(1, 64_000)
        rel = f"set{i % 5}/part{i % 3}/file-{i:03d}.bin"
        data = rng.randbytes(size)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        md5s[rel] = hashlib.md5(data).hexdigest()
    return Tree(root, md5s)


def blob_md5s(azurite, container: str) -> dict[str, str]:
    """The MD5 of every blob's bytes as read back (in parallel: Azurite answers each request slowly)."""
    client = azurite.service_client().get_container_client(container)
    names = azurite.blob_names(container)
    with ThreadPoolExecutor(8) as pool:
        data = pool.map(lambda name: client.download_blob(name).readall(), names)
        return {name: hashlib.md5(blob).hexdigest() for name, blob in zip(names, data)}


def stored_md5s(prefix: str) -> dict[str, str | None]:
    """relpath -> the Content-MD5 (hex) Azurite keeps for each blob under `prefix`."""
    return {rel: stored_md5(info, "az") for _, rel, info in storage.walk_remote(prefix)}


@pytest.fixture
def options(azurite, tmp_path: Path) -> Path:
    """A storage-options file with Azurite's connection string; the same options for this process."""
    path = tmp_path / "storage-options.json"
    path.write_text(json.dumps(azurite.storage_options()))
    storage.configure(azurite.storage_options())
    yield path
    storage.configure(None)


def framefleet_ingest(*args: object) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "ingest", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_an_interrupted_upload_resumes_and_every_file_arrives_once_and_whole(
        azurite, azurite_container, local_tree, options, sig):
    src, dest = local_tree.root, f"az://{azurite_container}/up"
    proc = framefleet_ingest(src, dest, "--threads", "16", "--storage-options", options, "--json")
    deadline = time.monotonic() + 120
    arrived: list[str] = []
    while proc.poll() is None and len(arrived) < FILES // 3 and time.monotonic() < deadline:
        arrived = azurite.blob_names(azurite_container)
        time.sleep(0.05)
    assert proc.poll() is None, f"the upload finished before it could be interrupted: {proc.stderr.read()}"
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    present = blob_md5s(azurite, azurite_container)
    want = local_tree.expected("up/")
    assert FILES // 3 <= len(present) < FILES
    assert {name: want[name] for name in present} == present  # whatever arrived is whole (atomic commits)
    if sig == signal.SIGINT:  # stopped gracefully: in-flight transfers finished, then the summary
        assert proc.returncode == 130, stderr
        first = json.loads(ANSI.sub("", stdout))
        assert first["interrupted"] and first["failed"] == 0 and first["copied"] == len(present)
    else:
        assert proc.returncode == -signal.SIGKILL

    again = framefleet_ingest(src, dest, "--threads", "16", "--storage-options", options, "--json")
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    second = json.loads(ANSI.sub("", stdout))
    assert second["files"] == FILES and second["failed"] == 0 and not second["interrupted"]
    assert second["skipped"] + second["copied"] == FILES
    assert second["skipped"] >= len(present)
    assert blob_md5s(azurite, azurite_container) == want  # each file exactly once, byte for byte


def test_uploads_carry_the_content_md5_so_verify_and_rechecks_read_nothing_back(
        azurite, azurite_container, local_tree, options, monkeypatch):
    dest = f"az://{azurite_container}/tree"
    first = ingest(str(local_tree.root), dest, threads=16, verify=True)
    assert (first.copied, first.failed) == (FILES, 0), first.failures
    fs, _ = storage.filesystem(dest)
    assert stored_md5s(dest) == local_tree.expected()

    def no_read_back(*args, **kwargs):
        raise AssertionError("a store file was read back although the store keeps its MD5")

    monkeypatch.setattr(type(fs), "open", no_read_back)
    second = ingest(str(local_tree.root), dest, threads=16, verify=True)
    assert (second.copied, second.skipped) == (0, FILES)


def test_download_and_container_to_container_copy_round_trip(azurite, local_tree, options, tmp_path: Path):
    first, second = azurite.create_container(f"a{time.time_ns()}"), azurite.create_container(f"b{time.time_ns()}")
    up = ingest(str(local_tree.root), f"az://{first}/data", threads=16)
    assert up.copied == FILES

    copied = ingest(f"az://{first}/data", f"az://{second}/copy", threads=16, verify=True)
    assert (copied.copied, copied.failed) == (FILES, 0), copied.failures
    assert blob_md5s(azurite, second) == local_tree.expected("copy/")
    assert stored_md5s(f"az://{second}/copy") == local_tree.expected()
    assert ingest(f"az://{first}/data", f"az://{second}/copy").skipped == FILES

    down = tmp_path / "down"
    got = ingest(f"az://{second}/copy", str(down), threads=16, verify=True)
    assert (got.copied, got.failed) == (FILES, 0), got.failures
    assert {p.relative_to(down).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
            for p in down.rglob("*") if p.is_file()} == local_tree.expected()
    truncated = down / "set0/part0/file-000.bin"
    truncated.write_bytes(truncated.read_bytes()[:10])
    again = ingest(f"az://{second}/copy", str(down))
    assert (again.copied, again.skipped) == (1, FILES - 1)
    assert hashlib.md5(truncated.read_bytes()).hexdigest() == local_tree.expected()["set0/part0/file-000.bin"]


def test_big_files_stream_with_their_md5_and_a_failed_stream_commits_nothing(azurite, local_tree, options,
                                                                            monkeypatch):
    monkeypatch.setattr(ingest_module, "CHUNK", 256 << 10)  # files over 256 KiB are streamed in chunks
    first, second = azurite.create_container(f"a{time.time_ns()}"), azurite.create_container(f"b{time.time_ns()}")
    src = local_tree.root / "set0"
    want = {rel[len("set0/"):]: md5 for rel, md5 in local_tree.md5s.items() if rel.startswith("set0/")}
    big = {rel for rel in want if (src / rel).stat().st_size > 256 << 10}
    assert len(big) >= 5
    assert ingest(str(src), f"az://{first}/data").copied == len(want)

    copied = ingest(f"az://{first}/data", f"az://{second}/copy", verify=True)
    assert (copied.copied, copied.failed) == (len(want), 0), copied.failures
    assert stored_md5s(f"az://{second}/copy") == want  # the streamed commits carry the MD5 too
    assert blob_md5s(azurite, second) == {f"copy/{rel}": md5 for rel, md5 in want.items()}

    reads: dict[int, int] = {}
    read = AzureBlobFile.read

    def breaks_after_one_chunk(self, length=-1):
        reads[id(self)] = reads.get(id(self), 0) + 1
        if reads[id(self)] > 1:
            raise ConnectionResetError(errno.ECONNRESET, "connection reset by peer")
        return read(self, length)

    monkeypatch.setattr(AzureBlobFile, "read", breaks_after_one_chunk)
    broken = ingest(f"az://{first}/data", f"az://{second}/broken")
    assert (broken.copied, broken.failed) == (len(want) - len(big), len(big))
    assert all("the store is unavailable, cannot read" in f["error"] for f in broken.failures), broken.failures
    assert not [name for name in azurite.blob_names(second) if name.startswith("broken/") and name[7:] in big]


def test_keys_that_would_leave_dest_fail_alone_on_download(azurite, azurite_container, options, tmp_path: Path):
    azurite.upload_blob(azurite_container, "in/ok.txt", b"fine")
    azurite.upload_blob(azurite_container, "in//absolute.txt", b"listed as /absolute.txt")
    azurite.upload_blob(azurite_container, "in/a\\..\\..\\evil.txt", b"stored as in/a/../../evil.txt")
    assert "in/a/../../evil.txt" in azurite.blob_names(azurite_container)
    down = tmp_path / "sandbox" / "down"
    result = ingest(f"az://{azurite_container}/in", str(down))
    assert (result.copied, result.failed) == (1, 1), result.failures  # adlfs does not list the .. key at all
    assert result.failures[0]["path"] == "/absolute.txt" and "absolute" in result.failures[0]["error"]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "sandbox/down/ok.txt", "storage-options.json"]


def test_a_read_only_sas_fails_each_upload_with_one_line_and_no_secret(azurite, azurite_container, local_tree,
                                                                       tmp_path: Path):
    sas = azurite.container_sas(azurite_container, "rl")
    path = tmp_path / "read-only.json"
    path.write_text(json.dumps(azurite.storage_options(sas)))
    src = local_tree.root / "set1" / "part1"
    proc = framefleet_ingest(src, f"az://{azurite_container}/x", "--storage-options", path, "--quiet")
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3, stderr
    lines = [line for line in ANSI.sub("", stderr).splitlines() if line.strip()]
    assert len(lines) == 1 + len(list(src.iterdir()))
    assert all("permission denied to write" in line for line in lines[1:]), lines
    signature = re.search(r"sig=([^&]+)", sas).group(1)
    assert signature not in stderr + stdout and "AccountKey" not in stderr


def test_a_write_only_sas_needs_overwrite_which_lists_nothing(azurite, azurite_container, local_tree):
    sas = azurite.container_sas(azurite_container, "wc")
    storage.configure(azurite.storage_options(sas))
    try:
        src, dest = local_tree.root / "set2" / "part0", f"az://{azurite_container}/w"
        with pytest.raises(StorageError, match="permission denied to list.*--overwrite does not list it"):
            ingest(str(src), dest)
        result = ingest(str(src), dest, existing="overwrite")
    finally:
        storage.configure(None)
    assert (result.copied, result.failed) == (len(list(src.iterdir())), 0)
    assert len(azurite.blob_names(azurite_container)) == result.copied
