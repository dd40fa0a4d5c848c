"""How a pipeline names an op: the built-in ops by name, a user's op as `package.module:ClassName`.

Plain data and string checks, so `Op` itself can name its class without importing any op (the registry,
which imports them, builds on this)."""

from __future__ import annotations

BUILTIN_OPS: dict[str, str] = {
    "style": "framefleet.ops.style:StyleTransferOp",
    "identity": "framefleet.ops.identity:IdentityOp",
    "faces": "framefleet.ops.faces:FaceAnonymizerOp",
    "onnx": "framefleet.ops.onnx_model:OnnxModelOp",
    "sample": "framefleet.ops.simple:SampleOp",
    "resize": "framefleet.ops.simple:ResizeOp",
    "blur": "framefleet.ops.simple:BlurOp",
}
"""Built-in op name -> where its class lives (imported lazily: some need an extra)."""


def class_reference(op_class: type) -> str:
    """`module:QualifiedName` of a class."""
    return f"{op_class.__module__}:{op_class.__qualname__}"


def is_builtin(op_class: type) -> bool:
    """Whether `op_class` ships with framefleet (its code is covered by framefleet's version)."""
    return BUILTIN_OPS.get(getattr(op_class, "name", "")) == class_reference(op_class)


def op_reference(op_class: type) -> str:
    """How a pipeline file names `op_class`: its built-in name, else `module:QualifiedName`."""
    return op_class.name if is_builtin(op_class) else class_reference(op_class)  # type: ignore[attr-defined]
