"""Whole-pixel shifts of training digits: every pixel moves by exactly (dy, dx), what leaves the field is lost."""

from __future__ import annotations

import numpy as np
import pytest

from digits.mnist import SIDE
from digits.modelling.augment import EIGHT_SHIFTS, FOUR_SHIFTS, one_pixel_shifts, shift, with_shifts


def _grid(n: int = 3) -> np.ndarray:
    return np.arange(1, n * SIDE * SIDE + 1, dtype=np.float32).reshape(n, SIDE * SIDE)


@pytest.mark.parametrize(("dy", "dx"), [(1, 0), (-1, 0), (0, 1), (0, -1), (2, -1), (-2, 2), (0, 0)])
def test_shift_moves_every_pixel_and_fills_with_zeros(dy: int, dx: int) -> None:
    pixels = _grid()
    out = shift(pixels, dy, dx).reshape(-1, SIDE, SIDE)
    images = pixels.reshape(-1, SIDE, SIDE)
    expected = np.zeros_like(images)
    for r in range(SIDE):
        for c in range(SIDE):
            if 0 <= r + dy < SIDE and 0 <= c + dx < SIDE:
                expected[:, r + dy, c + dx] = images[:, r, c]
    assert np.array_equal(out, expected)  # no wrap-around: np.roll would put the far edge here
    assert out.dtype == np.float32


def test_shift_leaves_its_input_alone() -> None:
    pixels = _grid()
    before = pixels.copy()
    shift(pixels, 1, 1)
    assert np.array_equal(pixels, before)


def test_with_shifts_is_the_originals_then_one_copy_per_shift_with_labels_repeated() -> None:
    pixels, labels = _grid(2), np.array([3, 7], dtype=np.int64)
    rows, tiled = with_shifts(pixels, labels, EIGHT_SHIFTS)
    assert rows.shape == (18, SIDE * SIDE) and tiled.tolist() == [3, 7] * 9
    assert np.array_equal(rows[:2], pixels)
    for k, (dy, dx) in enumerate(EIGHT_SHIFTS, start=1):
        assert np.array_equal(rows[2 * k : 2 * k + 2], shift(pixels, dy, dx))


def test_one_pixel_shifts_come_in_four_or_eight_distinct_directions() -> None:
    assert one_pixel_shifts(4) == FOUR_SHIFTS and len(set(FOUR_SHIFTS)) == 4
    assert one_pixel_shifts(8) == EIGHT_SHIFTS and len(set(EIGHT_SHIFTS)) == 8
    assert all(max(abs(dy), abs(dx)) == 1 for dy, dx in EIGHT_SHIFTS)
    with pytest.raises(ValueError, match="4 or 8"):
        one_pixel_shifts(2)
