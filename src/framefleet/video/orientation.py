"""Display orientation: read FFmpeg's display matrix and apply it to RGB frames.

framefleet *applies* the display matrix while decoding (like the ffmpeg CLI's autorotate): ops see the
picture upright, and outputs carry no display matrix. A rotated or mirrored phone clip therefore comes
out with its displayed width and height swapped into the coded size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Orientation:
    """How stored pixels map to the displayed picture.

    The displayed picture is the stored one with its axes swapped when `transpose` is set, then flipped
    vertically (`flip_rows`) and horizontally (`flip_cols`). Eight combinations cover all rotations by
    multiples of 90 degrees, with or without mirroring.
    """

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    @classmethod
    def from_display_matrix(cls, matrix: list[int] | tuple[int, ...] | None) -> Orientation:
        """Build from FFmpeg's 3x3 display matrix (16.16 fixed point, row-major, 9 ints).

        The matrix maps a stored point (x, y) to the displayed (a*x + c*y, b*x + d*y); only multiples of
        90 degrees are honoured (other angles are rounded to the nearest one).
        """
        if matrix is None or len(matrix) < 5:
            return cls()
        a, b, c, d = matrix[0], matrix[1], matrix[3], matrix[4]
        if abs(a) >= abs(b):  # x stays on the x axis: no transpose
            return cls(transpose=False, flip_rows=d < 0, flip_cols=a < 0)
        # x goes to the y axis: after transposing, rows follow x (sign b) and columns follow y (sign c)
        return cls(transpose=True, flip_rows=b < 0, flip_cols=c < 0)

    @property
    def is_identity(self) -> bool:
        return not (self.transpose or self.flip_rows or self.flip_cols)

    @property
    def rotation(self) -> int:
        """Counter-clockwise rotation in degrees (0, 90, 180, 270) of the unmirrored part."""
        table = {
            (False, False, False): 0,
            (True, True, False): 90,
            (False, True, True): 180,
            (True, False, True): 270,
        }
        key = (self.transpose, self.flip_rows, self.flip_cols)
        if key in table:
            return table[key]
        # mirrored: undo the horizontal mirror, then look the rotation up
        return table[(self.transpose, self.flip_rows, not self.flip_cols)]

    @property
    def mirrored(self) -> bool:
        """True when the displayed picture is a mirror image of the stored one."""
        key = (self.transpose, self.flip_rows, self.flip_cols)
        return key not in {(False, False, False), (True, True, False), (False, True, True), (True, False, True)}

    def display_size(self, width: int, height: int) -> tuple[int, int]:
        """The displayed (width, height) of a stored picture of this size."""
        return (height, width) if self.transpose else (width, height)

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """Turn a stored H x W x C frame into the displayed one (a contiguous copy when changed)."""
        if self.is_identity:
            return frame
        out = frame.transpose(1, 0, 2) if self.transpose else frame
        if self.flip_rows:
            out = out[::-1]
        if self.flip_cols:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)
