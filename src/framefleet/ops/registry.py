"""Finding the op class a pipeline names (`framefleet.ops.names`): a built-in, or a user's op imported from its module."""

from __future__ import annotations

import importlib
import os
import sys
from functools import cache

from framefleet.errors import OptionError
from framefleet.ops.base import Op
from framefleet.ops.names import BUILTIN_OPS


@cache
def builtin_ops() -> dict[str, type[Op]]:
    """The ops a pipeline may name without a module, imported on first use."""
    return {name: _imported(reference) for name, reference in BUILTIN_OPS.items()}


def _imported(reference: str) -> type[Op]:
    module_name, _, class_name = reference.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


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
