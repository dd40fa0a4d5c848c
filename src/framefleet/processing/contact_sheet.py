"""A contact sheet of the 26 built-in styles on one frame, to help pick a style."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from framefleet.ops.base import Device
from framefleet.ops.style import NUM_STYLES, StyleTransferOp
from framefleet.processing.batch import FrameBatch
from framefleet.processing.images import resize


def contact_sheet(frame: np.ndarray, *, tile: int = 256, columns: int = 7, device: str = "auto") -> Image.Image:
    """The frame and its 26 stylizations as labelled tiles of at most `tile` pixels on the long side."""
    height, width = frame.shape[:2]
    scale = min(1.0, tile / max(height, width))
    small = resize(frame, max(1, round(width * scale)), max(1, round(height * scale)))
    tiles = [("original", small)]
    runtime = precision = "auto"
    for index in range(NUM_STYLES):
        op = StyleTransferOp(style=str(index), device=device, runtime=runtime, precision=precision)
        op.setup(Device(kind=op.resolve_device(), threads=0))
        # The first style's runtime serves the others: each style's weights key a runtime profile of its
        # own, and timing and gating every runtime for all 26 took four minutes on 2 fresh cores.
        runtime, precision = (op.runtime_used() or "auto auto").split()
        tiles.append((f"style {index}", op.process(FrameBatch(small[None], np.zeros(1, np.int64))).frames[0]))
        op.teardown()
    th, tw = small.shape[:2]
    pad, label = 6, 16
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * (tw + pad) + pad, rows * (th + label + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for n, (name, pixels) in enumerate(tiles):
        row, col = divmod(n, columns)
        x, y = pad + col * (tw + pad), pad + row * (th + label + pad)
        sheet.paste(Image.fromarray(pixels), (x, y + label))
        draw.text((x + 2, y + 2), name, fill="black")
    return sheet
