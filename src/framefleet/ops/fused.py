"""Image models wrapped to take and return uint8 frames, so pixel arithmetic runs where the model runs.

An image-to-image model that reads NCHW floats in [0, 1] and writes NCHW floats in [0, 1] is wrapped in
one ONNX graph that takes N x H x W x 3 uint8 frames, converts them to floats, reflect-pads them to the
size the network needs, runs the model, crops, optionally resizes the result (bilinear) and rounds it
back to uint8 frames. On a GPU this moves the per-pixel work off the CPU and cuts the bytes crossing the
bus four-fold; on the CPU it costs what the same numpy code did. The batch dimension is made dynamic
(the networks here normalise per image, so frames of a batch do not mix).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from framefleet.files.temporary import temporary_path
from framefleet.util.cache import cache_dir

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

FORMAT = 1
"""Bumped when the wrapper graph changes, so cached wrappers of an older shape are built afresh."""

FRAMES = "frames"
"""Input: N x H x W x 3 uint8 RGB."""
PADS = "pads"
"""Input: 2 int64, the rows and columns of reflection padding added at the bottom and right."""
OUTPUT_SIZE = "output_size"
"""Input (resizing graphs only): 2 int64, the height and width of the returned frames."""
OUTPUT = "frames_out"
"""Output: N x H' x W' x 3 uint8 RGB."""


def cached_uint8(model_file: Path, *, image_input: str, resize_output: bool) -> bytes:
    """`fuse_uint8`'s graph, kept in framefleet's cache (keyed by the model's content) so that workers load
    it without importing the onnx package, which costs about half a second of every worker's start-up."""
    digest = hashlib.sha256(model_file.read_bytes()).hexdigest()[:16]
    target = cache_dir("models") / f"{model_file.stem}-uint8{'-resize' if resize_output else ''}-{digest}-v{FORMAT}.onnx"
    try:
        return target.read_bytes()
    except OSError:
        pass
    graph = fuse_uint8(model_file, image_input=image_input, resize_output=resize_output)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = temporary_path(target)
        staging.write_bytes(graph)
        os.replace(staging, target)
    except OSError as exc:  # a read-only home: build it in every process instead
        log.info("cannot cache %s (%s)", target, exc)
    return graph


def fuse_uint8(model_file: Path, *, image_input: str, resize_output: bool) -> bytes:
    """The serialized wrapper graph around `model_file`, whose input `image_input` is NCHW float in [0, 1]
    and whose single float output is NCHW in [0, 1]; its other inputs stay inputs of the wrapper."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(model_file))
    graph = model.graph
    image = next(i for i in graph.input if i.name == image_input)
    image.type.tensor_type.shape.dim[0].dim_param = "batch"
    graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    inner_out = graph.output[0].name
    prefix = "framefleet_"

    def name(text: str) -> str:
        return prefix + text

    constants = [
        helper.make_tensor(name("scale_in"), TensorProto.FLOAT, [], [1.0 / 255.0]),
        helper.make_tensor(name("scale_out"), TensorProto.FLOAT, [], [255.0]),
        helper.make_tensor(name("half"), TensorProto.FLOAT, [], [0.5]),
        helper.make_tensor(name("low"), TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor(name("high"), TensorProto.FLOAT, [], [255.0]),
        helper.make_tensor(name("zeros6"), TensorProto.INT64, [6], [0] * 6),
        helper.make_tensor(name("zeros2"), TensorProto.INT64, [2], [0, 0]),
        helper.make_tensor(name("axes_hw"), TensorProto.INT64, [2], [2, 3]),
    ]
    graph.initializer.extend(constants)
    pre = [
        helper.make_node("Cast", [FRAMES], [name("f")], to=TensorProto.FLOAT),
        helper.make_node("Mul", [name("f"), name("scale_in")], [name("unit")]),
        helper.make_node("Transpose", [name("unit")], [name("nchw")], perm=[0, 3, 1, 2]),
        helper.make_node("Concat", [name("zeros6"), PADS], [name("pads8")], axis=0),
        helper.make_node("Pad", [name("nchw"), name("pads8")], [image_input], mode="reflect"),
        helper.make_node("Shape", [FRAMES], [name("shape_in")]),
        helper.make_node("Slice", [name("shape_in"), helper_const(graph, name("one"), [1]),
                                   helper_const(graph, name("three"), [3])], [name("hw_in")]),
    ]
    post = [
        helper.make_node("Slice", [inner_out, name("zeros2"), name("hw_in"), name("axes_hw")], [name("cropped")]),
    ]
    last = name("cropped")
    if resize_output:
        post += [
            helper.make_node("Shape", [last], [name("shape_out")]),
            helper.make_node("Slice", [name("shape_out"), name("zeros1"), helper_const(graph, name("two"), [2])],
                             [name("nc")]),
            helper.make_node("Concat", [name("nc"), OUTPUT_SIZE], [name("sizes")], axis=0),
            helper.make_node("Resize", [last, "", "", name("sizes")], [name("resized")], mode="linear"),
        ]
        graph.initializer.append(helper.make_tensor(name("zeros1"), TensorProto.INT64, [1], [0]))
        last = name("resized")
    post += [
        helper.make_node("Mul", [last, name("scale_out")], [name("scaled")]),
        helper.make_node("Add", [name("scaled"), name("half")], [name("rounded")]),
        helper.make_node("Clip", [name("rounded"), name("low"), name("high")], [name("clipped")]),
        helper.make_node("Cast", [name("clipped")], [name("bytes")], to=TensorProto.UINT8),
        helper.make_node("Transpose", [name("bytes")], [OUTPUT], perm=[0, 2, 3, 1]),
    ]
    nodes = pre + list(graph.node) + post
    del graph.node[:]
    graph.node.extend(nodes)
    others = [i for i in graph.input if i.name != image_input]
    del graph.input[:]
    graph.input.extend([
        helper.make_tensor_value_info(FRAMES, TensorProto.UINT8, ["batch", "height", "width", 3]),
        helper.make_tensor_value_info(PADS, TensorProto.INT64, [2]),
        *([helper.make_tensor_value_info(OUTPUT_SIZE, TensorProto.INT64, [2])] if resize_output else []),
        *others,
    ])
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.UINT8, ["batch", "out_height", "out_width", 3]))
    onnx.checker.check_model(model)
    return model.SerializeToString()


def helper_const(graph: onnx.GraphProto, name: str, values: list[int]) -> str:
    """Add an int64 vector initializer to `graph`; returns its name."""
    from onnx import TensorProto, helper

    graph.initializer.append(helper.make_tensor(name, TensorProto.INT64, [len(values)], values))
    return name


def reflect_pads(height: int, width: int, multiple: int, minimum: int) -> np.ndarray:
    """The bottom and right padding that brings height x width to a multiple of `multiple`, at least `minimum`."""
    def target(side: int) -> int:
        return max(minimum, -(-side // multiple) * multiple)

    return np.asarray([target(height) - height, target(width) - width], dtype=np.int64)
