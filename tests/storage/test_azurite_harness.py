"""The Azurite harness itself (tests/azurite.py): adlfs can talk to it, container SAS permissions are
enforced, and stop()/start() keeps the data (the other storage tests rely on all three)."""

from __future__ import annotations

import fsspec
import pytest

try:
    from azure.core.exceptions import HttpResponseError
except ImportError:  # no .[azure] extra: the azurite fixture skips (fails under FRAMEFLEET_REQUIRE_AZURITE=1)
    HttpResponseError = Exception

pytestmark = pytest.mark.storage


def az_fs(azurite, sas=None):
    return fsspec.filesystem("az", skip_instance_cache=True, **azurite.storage_options(sas))


def test_adlfs_writes_and_reads_a_blob(azurite, azurite_container):
    fs = az_fs(azurite)
    with fs.open(f"{azurite_container}/dir/a.bin", "wb") as f:
        f.write(b"hello azurite")
    assert fs.cat_file(f"{azurite_container}/dir/a.bin") == b"hello azurite"
    assert fs.info(f"{azurite_container}/dir/a.bin")["size"] == 13
    assert azurite.blob_names(azurite_container) == ["dir/a.bin"]
    assert azurite.read_blob(azurite_container, "dir/a.bin") == b"hello azurite"


def test_a_read_list_sas_reads_but_cannot_write(azurite, azurite_container):
    azurite.upload_blob(azurite_container, "in/x.bin", b"x" * 10)
    fs = az_fs(azurite, azurite.container_sas(azurite_container, "rl"))
    assert fs.find(azurite_container) == [f"{azurite_container}/in/x.bin"]
    assert fs.cat_file(f"{azurite_container}/in/x.bin") == b"x" * 10
    with pytest.raises(HttpResponseError) as caught:
        fs.pipe_file(f"{azurite_container}/out/y.bin", b"y")
    assert caught.value.status_code == 403
    assert azurite.blob_names(azurite_container) == ["in/x.bin"]


def test_a_write_create_sas_writes_but_cannot_read_or_list(azurite, azurite_container, tmp_path):
    azurite.upload_blob(azurite_container, "in/x.bin", b"x")
    fs = az_fs(azurite, azurite.container_sas(azurite_container, "wc"))
    local = tmp_path / "y.bin"
    local.write_bytes(b"payload")
    fs.put_file(str(local), f"{azurite_container}/out/y.bin")
    assert azurite.read_blob(azurite_container, "out/y.bin") == b"payload"
    for denied in (lambda: fs.cat_file(f"{azurite_container}/in/x.bin"),
                   lambda: fs.info(f"{azurite_container}/in/x.bin"),
                   lambda: fs.ls(azurite_container)):
        with pytest.raises(HttpResponseError) as caught:
            denied()
        assert caught.value.status_code == 403


def test_stop_and_start_keep_the_port_and_the_blobs(azurite, azurite_container):
    azurite.upload_blob(azurite_container, "kept.bin", b"still here")
    port = azurite.port
    azurite.stop()
    assert not azurite.running
    azurite.start()
    assert azurite.port == port
    assert azurite.read_blob(azurite_container, "kept.bin") == b"still here"
