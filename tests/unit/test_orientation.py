"""`Orientation`: reading FFmpeg's display matrix and turning stored pixels into the displayed picture."""

from __future__ import annotations

import math

import numpy as np
import pytest

from framefleet.video import Orientation

ONE = 1 << 16  # 1.0 in the matrix's 16.16 fixed point
W_ONE = 1 << 30  # the matrix's last element (2.30 fixed point)

ALL_EIGHT = [(rotation, hflip) for rotation in (0, 90, 180, 270) for hflip in (False, True)]


def display_matrix(ccw_degrees: float, hflip: bool = False, translate: tuple[int, int] = (0, 0)) -> list[int]:
    """The 9 ints FFmpeg stores for a counter-clockwise rotation, optionally mirrored horizontally.

    Same layout as libavutil's display.c (and what PyAV's `set_display_rotation` writes): row-major
    [a b u; c d v; x y w] with a = cos, b = -sin, c = sin, d = cos; a horizontal flip negates the first
    column.
    """
    rad = math.radians(ccw_degrees)
    a, b = round(math.cos(rad) * ONE), round(-math.sin(rad) * ONE)
    c, d = round(math.sin(rad) * ONE), round(math.cos(rad) * ONE)
    if hflip:
        a, c = -a, -c
    return [a, b, 0, c, d, 0, translate[0], translate[1], W_ONE]


def expected_display(stored: np.ndarray, rotation: int, hflip: bool) -> np.ndarray:
    """What a player shows: the stored picture rotated counter-clockwise, then mirrored."""
    shown = np.rot90(stored, k=rotation // 90)
    return shown[:, ::-1] if hflip else shown


def stored_picture(height: int = 3, width: int = 5) -> np.ndarray:
    """A small H x W x 3 picture whose every pixel is distinct, so any wrong transform shows."""
    return np.arange(height * width * 3, dtype=np.uint8).reshape(height, width, 3)


def test_no_matrix_means_identity():
    assert Orientation.from_display_matrix(None).is_identity
    assert Orientation.from_display_matrix([]).is_identity
    assert Orientation.from_display_matrix(None) == Orientation()


def test_identity_matrix_means_identity():
    orientation = Orientation.from_display_matrix(display_matrix(0))
    assert orientation.is_identity
    assert orientation.rotation == 0 and not orientation.mirrored


@pytest.mark.parametrize(("rotation", "hflip"), ALL_EIGHT)
def test_matrix_gives_its_rotation_and_mirroring(rotation, hflip):
    orientation = Orientation.from_display_matrix(display_matrix(rotation, hflip))
    assert orientation.rotation == rotation
    assert orientation.mirrored is hflip


@pytest.mark.parametrize(("rotation", "hflip"), ALL_EIGHT)
def test_apply_turns_stored_pixels_into_the_displayed_picture(rotation, hflip):
    stored = stored_picture()
    orientation = Orientation.from_display_matrix(display_matrix(rotation, hflip))
    shown = orientation.apply(stored)
    np.testing.assert_array_equal(shown, expected_display(stored, rotation, hflip))
    assert shown.flags.c_contiguous


@pytest.mark.parametrize(("rotation", "hflip"), ALL_EIGHT)
def test_display_size_swaps_width_and_height_for_quarter_turns(rotation, hflip):
    orientation = Orientation.from_display_matrix(display_matrix(rotation, hflip))
    expected = (120, 160) if rotation in (90, 270) else (160, 120)
    assert orientation.display_size(160, 120) == expected
    assert orientation.apply(np.zeros((120, 160, 3), np.uint8)).shape[:2] == expected[::-1]


def test_the_eight_matrices_give_eight_different_orientations():
    found = {Orientation.from_display_matrix(display_matrix(r, f)) for r, f in ALL_EIGHT}
    assert len(found) == 8


def test_iphone_matrix_with_translation_is_a_270_degree_turn():
    # The display matrix of decord's video_90.mov, as FFmpeg reads it (ffprobe says rotation -90).
    matrix = [0, ONE, 0, -ONE, 0, 0, 20971520, 0, W_ONE]
    orientation = Orientation.from_display_matrix(matrix)
    assert orientation.rotation == 270
    assert not orientation.mirrored
    assert orientation.display_size(568, 320) == (320, 568)


@pytest.mark.parametrize(("angle", "expected"), [(10, 0), (80, 90), (100, 90), (175, 180), (-80, 270), (265, 270)])
def test_angles_between_quarter_turns_round_to_the_nearest_one(angle, expected):
    assert Orientation.from_display_matrix(display_matrix(angle)).rotation == expected


def test_identity_apply_returns_the_frame_itself():
    frame = stored_picture()
    assert Orientation().apply(frame) is frame
