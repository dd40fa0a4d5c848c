"""framefleet: run deep-learning models over large collections of videos.

The names below are the Python API (docs/api.md), with one subpackage that has an API of its own:
`framefleet.plan` (plans from Python). Every other module is internal and may change. They are
loaded on first use, so `import framefleet` (and the light `framefleet.settings`) pulls in no PyAV, model
runtime or scheduler until a program asks for them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from framefleet._version import __version__

if TYPE_CHECKING:
    from framefleet.errors import FramefleetError, LimitError, OptionError
    from framefleet.files.ingest import ingest
    from framefleet.files.storage import configure as configure_storage
    from framefleet.jobs.directory import JobBusyError, JobDir
    from framefleet.jobs.records import load_records
    from framefleet.jobs.run import JobResult, job_settings, retry, run
    from framefleet.jobs.spec import JobSpec
    from framefleet.jobs.view import JobStatus, JobView, job_status
    from framefleet.ops import (
        BlurOp,
        FaceAnonymizerOp,
        IdentityOp,
        OnnxModelOp,
        Op,
        ResizeOp,
        Resources,
        SampleOp,
        StyleTransferOp,
    )
    from framefleet.pipeline import Pipeline
    from framefleet.processing.batch import FrameBatch
    from framefleet.processing.streaming import StreamResult, process_video
    from framefleet.service.api import create_app
    from framefleet.service.config import ServiceConfig
    from framefleet.service.runtime import Service
    from framefleet.service.watcher import WatchRule
    from framefleet.settings import (
        EngineOptions,
        InputAccess,
        InputLimits,
        RayOptions,
        RetryPolicy,
        RunSettings,
    )
    from framefleet.util.redact import redact
    from framefleet.video import EncodeOptions, VideoFormat, VideoInfo, VideoReader, VideoWriter, probe

_WHERE = {
    "framefleet.errors": ("FramefleetError", "LimitError", "OptionError"),
    "framefleet.jobs.records": ("load_records",),
    "framefleet.files.ingest": ("ingest",),
    "framefleet.files.storage": ("configure_storage",),
    "framefleet.jobs.directory": ("JobBusyError", "JobDir"),
    "framefleet.jobs.run": ("JobResult", "job_settings", "retry", "run"),
    "framefleet.jobs.spec": ("JobSpec",),
    "framefleet.jobs.view": ("JobStatus", "JobView", "job_status"),
    "framefleet.ops": ("BlurOp", "FaceAnonymizerOp", "IdentityOp", "OnnxModelOp", "Op", "ResizeOp", "Resources",
                       "SampleOp", "StyleTransferOp"),
    "framefleet.pipeline": ("Pipeline",),
    "framefleet.processing.batch": ("FrameBatch",),
    "framefleet.processing.streaming": ("StreamResult", "process_video"),
    "framefleet.service.api": ("create_app",),
    "framefleet.service.config": ("ServiceConfig",),
    "framefleet.service.runtime": ("Service",),
    "framefleet.service.watcher": ("WatchRule",),
    "framefleet.settings": ("EngineOptions", "InputAccess", "InputLimits", "RayOptions", "RetryPolicy",
                            "RunSettings"),
    "framefleet.util.redact": ("redact",),
    "framefleet.video": ("EncodeOptions", "VideoFormat", "VideoInfo", "VideoReader", "VideoWriter", "probe"),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}
_RENAMED = {"configure_storage": "configure"}
"""Public names that differ from the name in their module."""

__all__ = [  # noqa: RUF022 - grouped as _WHERE is
    "FramefleetError", "LimitError", "OptionError", "ingest", "configure_storage", "JobBusyError", "JobDir",
    "load_records", "JobResult", "job_settings", "retry", "run", "JobSpec", "JobStatus", "JobView", "job_status",
    "BlurOp", "FaceAnonymizerOp", "IdentityOp", "OnnxModelOp", "Op", "ResizeOp", "Resources", "SampleOp",
    "StyleTransferOp", "Pipeline", "FrameBatch", "StreamResult", "process_video", "EngineOptions", "InputAccess",
    "InputLimits", "RayOptions", "RetryPolicy", "RunSettings", "create_app", "ServiceConfig", "Service",
    "WatchRule", "redact", "EncodeOptions", "VideoFormat", "VideoInfo",
    "VideoReader", "VideoWriter", "probe", "__version__",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'framefleet' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
