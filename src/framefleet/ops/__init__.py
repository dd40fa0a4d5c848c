"""Ops: the per-frame steps framefleet runs (models and plain transforms).

Each op's module is loaded on first use of its name, so a worker that unpickles an identity pipeline does
not import the face detector's onnxruntime, OpenCV and Pillow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from framefleet.ops.base import Device, Knob, Op, Resources

if TYPE_CHECKING:
    from framefleet.ops.faces import FaceAnonymizerOp
    from framefleet.ops.identity import IdentityOp
    from framefleet.ops.onnx_model import OnnxModelOp
    from framefleet.ops.simple import BlurOp, ResizeOp, SampleOp
    from framefleet.ops.style import StyleTransferOp

_MODULE_OF = {"FaceAnonymizerOp": "framefleet.ops.faces", "IdentityOp": "framefleet.ops.identity",
              "OnnxModelOp": "framefleet.ops.onnx_model", "BlurOp": "framefleet.ops.simple",
              "ResizeOp": "framefleet.ops.simple", "SampleOp": "framefleet.ops.simple",
              "StyleTransferOp": "framefleet.ops.style"}

__all__ = ["BlurOp", "Device", "FaceAnonymizerOp", "IdentityOp", "Knob", "OnnxModelOp", "Op", "Resources", "ResizeOp",
           "SampleOp", "StyleTransferOp"]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'framefleet.ops' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
