"""framefleet: run deep-learning models over large collections of videos.

The names below are the Python API (docs/api.md); every other module is internal and may change. They are
loaded on first use, so `import framefleet` (and the light `framefleet.settings`) pulls in no PyAV, model
runtime or scheduler until a program asks for them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from framefleet._version import __version__

if TYPE_CHECKING:
    from framefleet.errors import FramefleetError, LimitError, OptionError
    from framefleet.jobs.records import load_records
    from framefleet.jobs.run import JobResult, retry, run
    from framefleet.jobs.spec import JobSpec
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
    from framefleet.settings import (
        EngineOptions,
        InputAccess,
        InputLimits,
        RayOptions,
        RetryPolicy,
        RunSettings,
    )
    from framefleet.video import probe

_WHERE = {
    "framefleet.errors": ("FramefleetError", "LimitError", "OptionError"),
    "framefleet.jobs.records": ("load_records",),
    "framefleet.jobs.run": ("JobResult", "retry", "run"),
    "framefleet.jobs.spec": ("JobSpec",),
    "framefleet.ops": ("BlurOp", "FaceAnonymizerOp", "IdentityOp", "OnnxModelOp", "Op", "ResizeOp", "Resources",
                       "SampleOp", "StyleTransferOp"),
    "framefleet.pipeline": ("Pipeline",),
    "framefleet.processing.batch": ("FrameBatch",),
    "framefleet.processing.streaming": ("StreamResult", "process_video"),
    "framefleet.settings": ("EngineOptions", "InputAccess", "InputLimits", "RayOptions", "RetryPolicy",
                            "RunSettings"),
    "framefleet.video": ("probe",),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}

__all__ = [  # noqa: RUF022 - grouped as _WHERE is
    "FramefleetError", "LimitError", "OptionError", "load_records", "JobResult", "retry", "run", "JobSpec",
    "BlurOp", "FaceAnonymizerOp", "IdentityOp", "OnnxModelOp", "Op", "ResizeOp", "Resources", "SampleOp",
    "StyleTransferOp", "Pipeline", "FrameBatch", "StreamResult", "process_video", "EngineOptions", "InputAccess",
    "InputLimits", "RayOptions", "RetryPolicy", "RunSettings", "probe", "__version__",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'framefleet' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
