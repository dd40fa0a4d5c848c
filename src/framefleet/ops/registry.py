"""Op names: the built-in ops by name, and user ops as `package.module:ClassName`."""

from __future__ import annotations

import importlib
import os
import sys
from functools import cache

from framefleet.errors import OptionError
from framefleet.ops.base import Op


@cache
def builtin_ops() -> dict[str, type[Op]]:
    """The ops a pipeline may name without a module (imported lazily: some need an extra)."""
    from framefleet.ops.faces import FaceAnonymizerOp
    from framefleet.ops.identity import IdentityOp
    from framefleet.ops.onnx_model import OnnxModelOp
    from framefleet.ops.simple import BlurOp, ResizeOp, SampleOp
    from framefleet.ops.style import StyleTransferOp

    ops = (StyleTransferOp, IdentityOp, FaceAnonymizerOp, OnnxModelOp, SampleOp, ResizeOp, BlurOp)
    return {op.name: op for op in ops}


def resolve_op(reference: str) -> type[Op]:
    """The op class a pipeline names: a built-in name (style, faces, onnx, ...) or `module:Class`, a
    subclass of `framefleet.Op` importable from the current directory or the Python path."""
    if not isinstance(reference, str) or not reference:
        raise OptionError(f"op must be a name or module:Class, got {reference!r}")
    builtins = builtin_ops()
    if ":" not in reference:
        if reference not in builtins:
            raise OptionError(f"unknown op {reference!r}; choose one of {', '.join(builtins)}, "
                              "or name your own as module:Class")
        return builtins[reference]
    module_name, _, class_name = reference.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: a module beside the user is found
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise OptionError(f"op {reference}: cannot import {module_name} ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
        raise OptionError(f"op {reference}: importing {module_name} failed: "
                          f"{type(exc).__name__}: {exc}") from None
    found = module
    for part in class_name.split("."):
        found = getattr(found, part, None)
    if found is None:
        raise OptionError(f"op {reference}: {module_name} has no {class_name}")
    if not (isinstance(found, type) and issubclass(found, Op)) or found is Op:
        raise OptionError(f"op {reference}: {class_name} is not a subclass of framefleet.Op")
    return found


def op_reference(op_class: type[Op]) -> str:
    """How a pipeline file names `op_class`: its built-in name, else `module:QualifiedName`."""
    builtin = builtin_ops().get(op_class.name)
    if builtin is op_class:
        return op_class.name
    return f"{op_class.__module__}:{op_class.__qualname__}"


def is_builtin(op_class: type[Op]) -> bool:
    """Whether `op_class` ships with framefleet (its code is covered by framefleet's version)."""
    return builtin_ops().get(op_class.name) is op_class
