"""Ops: the per-frame steps framefleet runs (models and plain transforms)."""

from framefleet.ops.base import Device, Knob, Op, Resources
from framefleet.ops.faces import FaceAnonymizerOp
from framefleet.ops.identity import IdentityOp
from framefleet.ops.onnx_model import OnnxModelOp
from framefleet.ops.simple import BlurOp, ResizeOp, SampleOp
from framefleet.ops.style import StyleTransferOp

__all__ = ["BlurOp", "Device", "FaceAnonymizerOp", "IdentityOp", "Knob", "OnnxModelOp", "Op", "Resources", "ResizeOp",
           "SampleOp", "StyleTransferOp"]
