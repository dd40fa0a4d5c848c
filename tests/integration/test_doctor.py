"""`framefleet doctor` on this machine, and on installs broken on purpose."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import av
import onnxruntime
from cli_helpers import cli, stdout_json

from framefleet.processing.streaming import available_cores
from framefleet.util.doctor import CPU_FEATURES


def doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """The real command in a process of its own, with `env` added to the environment."""
    return subprocess.run([sys.executable, "-m", "framefleet", "doctor", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def errors(ran: subprocess.CompletedProcess) -> list[str]:
    """doctor's error lines (onnxruntime may warn on stderr too, e.g. when it cannot write its own files)."""
    return [line for line in ran.stderr.splitlines() if line.startswith("error:")]


def test_doctor_reports_this_machine_and_finds_nothing_broken():
    ran = cli("doctor", "--json")
    assert ran.exit_code == 0, ran.stderr
    found = stdout_json(ran)
    assert found["versions"]["pyav"] == av.__version__ and found["problems"] == []
    assert found["runtimes"]["onnxruntime"]["version"] == onnxruntime.__version__
    assert "CPUExecutionProvider" in found["runtimes"]["onnxruntime"]["providers"]
    assert found["cpu"]["cores"] == available_cores() and set(found["cpu"]["features"]) <= set(CPU_FEATURES)
    assert found["encoders"]["libx264"] and found["cache"]["writable"]
    if "openvino" in found["runtimes"]:  # two sources agree: the kernel's CPU flags and OpenVINO's own probe
        bf16 = "BF16" in found["runtimes"]["openvino"]["cpu_capabilities"]
        assert bf16 == any(flag in found["cpu"]["features"] for flag in ("avx512_bf16", "amx_bf16"))


def test_an_unwritable_cache_is_broken_with_its_fix(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    ran = doctor({"XDG_CACHE_HOME": str(blocker)}, "--json")
    assert ran.returncode == 2
    assert json.loads(ran.stdout)["cache"]["writable"] is False
    assert errors(ran) == [
        f"error: the cache folder {blocker}/framefleet cannot be written (Not a directory); fix: set XDG_CACHE_HOME "
        "to a writable folder"]


def test_the_cpu_and_gpu_onnxruntime_packages_side_by_side_are_a_clash_with_its_fix(tmp_path):
    metadata = tmp_path / "onnxruntime_gpu-1.32.0.dist-info"  # what pip leaves when it installs the GPU package
    metadata.mkdir()
    (metadata / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime-gpu\nVersion: 1.32.0\n")
    ran = doctor({"PYTHONPATH": str(tmp_path)})
    assert ran.returncode == 2
    assert errors(ran) == [
        "error: onnxruntime and onnxruntime-gpu are both installed: they own the same module, and the CPU one can "
        "hide CUDA; fix: pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'framefleet[gpu]'"]
    assert "onnxruntime" in ran.stdout  # the report still printed
