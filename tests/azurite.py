"""A real Azure Blob server for the storage tests: Azurite (npm package ``azurite``, pinned in tools/azurite).

``make test-storage`` installs it with ``npm ci --prefix tools/azurite``; the ``azurite`` fixture in
conftest.py starts one :class:`Azurite` per test session. ``stop()`` followed by ``start()`` brings the
server back on the same port with the same data folder, so blobs survive a restart (the "storage went away
mid-job" tests rely on that).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCAL_BINARY = REPO_ROOT / "tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"

# Azurite's fixed development account (documented by Microsoft; not a secret).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

# Azurite loads ~2,500 JavaScript files at start-up: ~3 s on an idle machine, 10-15 s on a loaded 2-core one.
START_TIMEOUT_S = float(os.environ.get("FRAMEFLEET_AZURITE_START_TIMEOUT", "60"))


def find_azurite_blob() -> str | None:
    """The azurite-blob executable: tools/azurite's pinned copy, else one on PATH, else None."""
    if LOCAL_BINARY.is_file() and os.access(LOCAL_BINARY, os.X_OK):
        return str(LOCAL_BINARY)
    return shutil.which("azurite-blob")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class AzuriteError(RuntimeError):
    pass


class Azurite:
    """One azurite-blob process on 127.0.0.1 with its own data folder."""

    account_name = ACCOUNT_NAME
    account_key = ACCOUNT_KEY

    def __init__(self, executable: str | None = None, location: str | Path | None = None):
        executable = executable or find_azurite_blob()
        if executable is None:
            raise AzuriteError("azurite-blob is not installed (run: npm ci --prefix tools/azurite)")
        self.executable = executable
        self._own_location = location is None
        self.location = Path(location or tempfile.mkdtemp(prefix="framefleet-azurite-"))
        self.log_path = self.location / "azurite.log"
        self._port: int | None = None
        self._process: subprocess.Popen | None = None
        self._log = None
        atexit.register(self.close)  # a crashed script or session must leave no server (or data) behind

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise AzuriteError("Azurite has not been started")
        return self._port

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> Azurite:
        """Start the server (same port and data as before after a stop()) and wait until it answers."""
        if self.running:
            return self
        if self._port is None:
            self._port = _free_port()
        command = [
            self.executable,
            "--blobHost", "127.0.0.1",
            "--blobPort", str(self._port),
            "--location", str(self.location / "data"),
            "--silent",
            "--skipApiVersionCheck",
            "--loose",
            "--disableProductStyleUrl",
            "--disableTelemetry",
        ]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed by stop())
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal is for pytest, not for the server
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._fail(f"azurite-blob exited with status {self._process.returncode}")
            if _port_answers(self._port):
                return self
            time.sleep(0.1)
        self._fail(f"azurite-blob did not answer on port {self._port} within {START_TIMEOUT_S:.0f} s")
        raise AssertionError("unreachable")

    def _fail(self, message: str) -> None:
        self.stop()
        raise AzuriteError(f"{message}; command {self.executable}; log tail:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def stop(self) -> None:
        """Terminate the server (it saves its metadata on SIGTERM) and wait for it; data stays."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._port is not None:  # the port is free again only once nothing listens on it
            deadline = time.monotonic() + 5
            while _port_answers(self._port) and time.monotonic() < deadline:
                time.sleep(0.05)

    def close(self) -> None:
        """stop() and delete the data folder (if this object made it)."""
        self.stop()
        if self._own_location:
            shutil.rmtree(self.location, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- addresses and credentials -----------------------------------------------------------------

    @property
    def blob_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.account_name}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account_name};"
            f"AccountKey={self.account_key};BlobEndpoint={self.blob_endpoint};"
        )

    def sas_connection_string(self, sas: str) -> str:
        return f"BlobEndpoint={self.blob_endpoint};SharedAccessSignature={sas.lstrip('?')}"

    def container_sas(self, container: str, permissions: str, expiry_minutes: float = 60) -> str:
        """A container SAS token signed with the account key; permissions like "rl", "wc", "racwdl"."""
        from azure.storage.blob import generate_container_sas

        now = datetime.now(timezone.utc)
        return generate_container_sas(
            account_name=self.account_name,
            container_name=container,
            account_key=self.account_key,
            permission=permissions,
            start=now - timedelta(minutes=5),
            expiry=now + timedelta(minutes=expiry_minutes),
        )

    def storage_options(self, sas: str | None = None) -> dict:
        """Keyword arguments for adlfs.AzureBlobFileSystem / fsspec.filesystem("az", ...)."""
        if sas is None:
            return {"connection_string": self.connection_string}
        return {"connection_string": self.sas_connection_string(sas)}

    # -- conveniences for tests (azure-storage-blob with the account key) --------------------------

    def service_client(self):
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)

    def create_container(self, name: str, public: bool = False) -> str:
        """Create a container; public=True allows anonymous blob reads (plain HTTP GET, Range too)."""
        self.service_client().create_container(name, public_access="blob" if public else None)
        return name

    def blob_url(self, container: str, name: str) -> str:
        return f"{self.blob_endpoint}/{container}/{name}"

    def blob_names(self, container: str) -> list[str]:
        client = self.service_client().get_container_client(container)
        return sorted(blob.name for blob in client.list_blobs())

    def read_blob(self, container: str, name: str) -> bytes:
        return self.service_client().get_blob_client(container, name).download_blob().readall()

    def upload_blob(self, container: str, name: str, data: bytes) -> None:
        self.service_client().get_blob_client(container, name).upload_blob(data, overwrite=True)
