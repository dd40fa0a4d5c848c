"""Least-privilege SAS tokens against a real Azurite, and no secret in anything framefleet emits.

The job reads its inputs with a read+list SAS of the input container and writes with a write-only SAS of
the output container (per-prefix storage options). Every secret (the SAS signatures, an account key given
for an unused prefix) is a canary: it must not appear in stdout or stderr (with --debug logging), in any
file of the job directory (the ledger's raw bytes included), in `status`/`failures` JSON, or in the report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, quote

import media_checks
import pytest
import yaml

from framefleet.video.synth import ClipSpec, write_clip

pytestmark = pytest.mark.storage

CLI = [str(Path(sys.executable).parent / "framefleet")]
CANARY_KEY = "Q2FuYXJ5QWNjb3VudEtleURvTm90TGVhazEyMzQ1Njc4OTA="


def secrets_of(sas: str) -> list[str]:
    """The signature of a SAS token, raw and URL-encoded."""
    sig = parse_qs(sas.lstrip("?"))["sig"][0]
    return [sig, quote(sig, safe="")]


def framefleet(*args: object, check: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def assert_no_secret(secrets: list[str], *texts: str) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"a secret leaked: ...{text[max(0, text.find(secret) - 80):][:200]}"


def tree_bytes(root: Path) -> str:
    """Every file under `root`, as one text (bytes decoded leniently): SQLite pages, WAL, logs."""
    return "\n".join(p.read_bytes().decode("latin-1") for p in sorted(root.rglob("*")) if p.is_file())


@pytest.fixture
def least_privilege(azurite, tmp_path: Path):
    """Input and output containers, a clip in the input, and a storage-options file with one SAS each."""
    inputs = azurite.create_container(f"in{os.urandom(6).hex()}")
    outputs = azurite.create_container(f"out{os.urandom(6).hex()}")
    clip = tmp_path / "clip.mp4"
    write_clip(clip, ClipSpec(width=96, height=64, frames=24, gop=6, audio=("aac",)))
    azurite.upload_blob(inputs, "videos/clip.mp4", clip.read_bytes())
    read_sas = azurite.container_sas(inputs, "rl")
    write_sas = azurite.container_sas(outputs, "w")
    wrong_sas = azurite.container_sas(outputs, "rl")  # may read and list the output container, not write

    def options_file(output_sas: str) -> Path:
        path = tmp_path / f"options-{len(list(tmp_path.glob('options-*')))}.yaml"
        path.write_text(yaml.safe_dump({
            f"az://{inputs}": azurite.storage_options(read_sas),
            f"az://{outputs}": azurite.storage_options(output_sas),
            "az://unused": {"account_name": "someone", "account_key": CANARY_KEY},
        }))
        return path

    secrets = [CANARY_KEY, *secrets_of(read_sas), *secrets_of(write_sas), *secrets_of(wrong_sas)]
    return dict(inputs=inputs, outputs=outputs, clip=clip, good=options_file(write_sas),
                wrong=options_file(wrong_sas), secrets=secrets)


def test_a_read_sas_for_inputs_and_a_write_only_sas_for_outputs_are_enough(azurite, least_privilege, tmp_path):
    p = least_privilege
    job = tmp_path / "job"
    proc = framefleet("--debug", "run", f"az://{p['inputs']}/videos", "-o", f"az://{p['outputs']}/styled",
                      "--op", "identity", "--workers", "1", "--job-dir", job, "--storage-options", p["good"])
    assert proc.returncode == 0, proc.stderr
    # the output and its manifest (written: the SAS may write; unread: it may not read, so nothing is adopted)
    assert azurite.blob_names(p["outputs"]) == ["styled/.clip.mp4.framefleet.json", "styled/clip.mp4"]
    output = tmp_path / "out.mp4"
    output.write_bytes(azurite.read_blob(p["outputs"], "styled/clip.mp4"))
    assert media_checks.decoded_pts(output) == media_checks.decoded_pts(p["clip"])
    status = framefleet("status", job, "--json", check=True)
    assert_no_secret(p["secrets"], proc.stdout, proc.stderr, status.stdout, status.stderr, tree_bytes(job))


def test_a_missing_write_permission_is_a_clear_error_and_leaks_nothing(azurite, least_privilege, tmp_path):
    p = least_privilege
    job = tmp_path / "job"
    proc = framefleet("--debug", "run", f"az://{p['inputs']}/videos", "-o", f"az://{p['outputs']}/styled",
                      "--op", "identity", "--workers", "1", "--job-dir", job, "--storage-options", p["wrong"],
                      "--max-attempts", "1")
    assert proc.returncode == 3, proc.stderr
    expected = f"az://{p['outputs']}/styled/clip.mp4: permission denied to write"
    assert expected in proc.stderr
    failures = framefleet("failures", job, "--json", check=True)
    assert expected in json.loads(failures.stdout)[0]["error"]
    report = tmp_path / "report.html"
    framefleet("report", job, "-o", report, check=True)
    assert expected in report.read_text()
    assert azurite.blob_names(p["outputs"]) == []
    assert_no_secret(p["secrets"], proc.stdout, proc.stderr, failures.stdout, report.read_text(), tree_bytes(job))


def test_a_missing_read_permission_on_the_inputs_is_one_line_naming_the_operation(azurite, least_privilege, tmp_path):
    p = least_privilege
    options = tmp_path / "write-only-inputs.json"
    options.write_text(json.dumps(azurite.storage_options(azurite.container_sas(p["inputs"], "w"))))
    proc = framefleet("run", f"az://{p['inputs']}/videos", "-o", tmp_path / "out", "--storage-options", options)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "permission denied to" in lines[0] and f"az://{p['inputs']}/videos" in lines[0], lines
    assert_no_secret(secrets_of(json.loads(options.read_text())["connection_string"].split("SharedAccessSignature=")[1]),
                     proc.stderr, proc.stdout)


def test_a_sas_url_pasted_as_an_input_is_refused_without_echoing_its_signature(azurite, least_privilege, tmp_path):
    p = least_privilege
    sas = azurite.container_sas(p["inputs"], "rl")
    url = f"{azurite.blob_url(p['inputs'], 'videos/clip.mp4')}?{sas}"
    proc = framefleet("--debug", "run", url, "-o", tmp_path / "out")
    assert proc.returncode == 2
    assert "pre-signed URLs are credentials" in proc.stderr
    assert_no_secret(secrets_of(sas), proc.stderr, proc.stdout)
