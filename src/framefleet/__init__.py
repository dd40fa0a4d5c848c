"""framefleet: run deep-learning models over large collections of videos."""

__version__ = "0.1.0"  # before the imports: modules below read it

from framefleet.processing.batch import FrameBatch
from framefleet.errors import FramefleetError
from framefleet.ops import (BlurOp, FaceAnonymizerOp, IdentityOp, OnnxModelOp, Op, Resources, ResizeOp, SampleOp,
                            StyleTransferOp)
from framefleet.jobs.run import JobResult, retry, run
from framefleet.files.remote_inputs import InputAccess
from framefleet.pipeline import Pipeline
from framefleet.jobs.records import load_records
from framefleet.jobs.spec import JobSpec, RunSettings
from framefleet.processing.streaming import StreamResult, process_video
from framefleet.video import probe

__all__ = [
    "BlurOp",
    "FaceAnonymizerOp",
    "FrameBatch",
    "FramefleetError",
    "IdentityOp",
    "InputAccess",
    "JobResult",
    "JobSpec",
    "OnnxModelOp",
    "Op",
    "Pipeline",
    "Resources",
    "RunSettings",
    "ResizeOp",
    "SampleOp",
    "StreamResult",
    "StyleTransferOp",
    "__version__",
    "load_records",
    "probe",
    "process_video",
    "retry",
    "run",
]
