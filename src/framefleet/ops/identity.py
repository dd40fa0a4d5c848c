"""`IdentityOp`: returns frames unchanged, to measure framefleet's own decode/encode cost."""

from __future__ import annotations

from dataclasses import dataclass

from framefleet.ops.base import Op
from framefleet.processing.batch import FrameBatch


@dataclass(kw_only=True)
class IdentityOp(Op):
    """Passes frames through untouched (a transcode)."""

    name = "identity"
    batch_size: int = 8

    def input_size(self, width: int, height: int) -> None:
        return None  # the decoded frames go to the encoder as they are

    def process(self, batch: FrameBatch) -> FrameBatch:
        return batch
