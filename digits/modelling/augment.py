"""Training-data augmentation: copies of each digit shifted by whole pixels (zero-filled, as MNIST's background)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from digits.mnist import N_PIXELS, SIDE

# One pixel up, down, left, right.
FOUR_SHIFTS: tuple[tuple[int, int], ...] = ((-1, 0), (1, 0), (0, -1), (0, 1))
# ... and the four diagonals.
EIGHT_SHIFTS = (*FOUR_SHIFTS, (-1, -1), (-1, 1), (1, -1), (1, 1))


def one_pixel_shifts(count: int) -> tuple[tuple[int, int], ...]:
    if count not in (4, 8):
        raise ValueError(f"one-pixel shifts come in 4 or 8 directions, not {count}")
    return FOUR_SHIFTS if count == 4 else EIGHT_SHIFTS


def shift(pixels: npt.NDArray[np.float32], dy: int, dx: int) -> npt.NDArray[np.float32]:
    """Shift every row of ``pixels`` (n, 784) by (dy, dx) on the 28x28 grid; what leaves the field is lost."""
    images = pixels.reshape(-1, SIDE, SIDE)
    out = np.zeros_like(images)
    ys, yd = _window(dy)
    xs, xd = _window(dx)
    out[:, yd, xd] = images[:, ys, xs]
    return out.reshape(len(pixels), N_PIXELS)


def with_shifts(
    pixels: npt.NDArray[np.float32], labels: npt.NDArray[np.int64], shifts: Sequence[tuple[int, int]] = FOUR_SHIFTS
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """The originals followed by one shifted copy per shift: (1 + len(shifts)) times the data."""
    copies = [pixels, *(shift(pixels, dy, dx) for dy, dx in shifts)]
    return np.concatenate(copies), np.tile(labels, len(copies))


def _window(offset: int) -> tuple[slice, slice]:
    """(source, destination) slices along one axis for a shift by ``offset``."""
    if offset >= 0:
        return slice(0, SIDE - offset), slice(offset, SIDE)
    return slice(-offset, SIDE), slice(0, SIDE + offset)
