"""What a user brings, for the custom-op tests: a module of ops written to a folder of theirs (not a
package framefleet knows), and small ONNX models built with the `onnx` package.

The module is written as a file at test time, so that nothing but framefleet's own mechanisms (the current
directory for the local engine, pickling by value for Ray) can make it importable on workers.
"""

from __future__ import annotations

from pathlib import Path

USER_OPS_SOURCE = '''
from dataclasses import dataclass

import numpy as np

from framefleet import FrameBatch, Op


@dataclass(kw_only=True)
class Brightness(Op):
    """Records each frame's mean brightness and a 4-bin histogram of its red channel."""

    name = "brightness"
    writes_frames = False
    writes_records = True

    def process(self, batch: FrameBatch) -> FrameBatch:
        for row, frame in enumerate(batch.frames):
            histogram = np.bincount((frame[..., 0] // 64).ravel(), minlength=4)
            batch.add_record(row, brightness=float(frame.mean()), histogram=histogram)
        return batch


@dataclass(kw_only=True)
class Bright(Op):
    """Flags (records) the frames brighter than `level`; changes no pixel."""

    name = "bright"
    writes_frames = False
    writes_records = True
    level: float = 128.0

    def process(self, batch: FrameBatch) -> FrameBatch:
        for row, frame in enumerate(batch.frames):
            if frame.mean() > self.level:
                batch.add_record(row, brightness=float(frame.mean()))
        return batch


@dataclass(kw_only=True)
class Invert(Op):
    """The negative of every frame."""

    name = "invert"

    def process(self, batch: FrameBatch) -> FrameBatch:
        return batch.with_frames(255 - batch.frames)
'''


def write_user_ops(folder: Path, module: str) -> str:
    """Write the user's op module as `folder/module.py`; returns the module name."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(USER_OPS_SOURCE)
    return module


def channel_mean_model(path: Path) -> Path:
    """An ONNX feature extractor: NCHW float image (any batch and size) -> `mean`, N x 3 per-channel means."""
    import onnx
    from onnx import TensorProto, helper

    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])
    mean = helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["N", 3])
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])
    graph = helper.make_graph([helper.make_node("ReduceMean", ["image", "axes"], ["mean"], keepdims=0)],
                              "channel_mean", [image], [mean], initializer=[axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
