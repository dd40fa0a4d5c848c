"""Ops: the per-frame steps framefleet runs (models and plain transforms)."""

from framefleet.ops.base import Device, Knob, Op, Resources
from framefleet.ops.identity import IdentityOp
from framefleet.ops.style import StyleTransferOp

__all__ = ["Device", "IdentityOp", "Knob", "Op", "Resources", "StyleTransferOp"]
