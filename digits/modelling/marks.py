"""Separate marks of ink, and how many of them are digit-sized: the test behind the ``SEVERAL`` verdict.

A picture of "42" holds two marks of about the same height side by side; a digit holds one, perhaps with a stray
dot, a detached bar (a 5's flag, a 7's cross) or a stroke the pen broke. So a mark counts as digit-sized only when it
is at least ``MIN_HEIGHT`` of the ink's whole height and carries ``MIN_INK`` of its ink, and marks that stand one
above the other, or mostly overlap from left to right, count as parts of one digit.

Marks are found on the ink's bounding box, scaled down so that its longer side is at most ``GRID`` px: about the
same answer for a 28x28 row and for a 1,000-pixel photo, at a bounded cost (at most a 64x64 labelling).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image
from scipy import ndimage

GRID: Final = 64
# Ink below this share of the strongest is the haze around strokes, not a mark of its own.
INK_LEVEL: Final = 0.2
MIN_HEIGHT: Final = 0.55
MIN_INK: Final = 0.12
# Two digit-sized marks whose left-to-right extents overlap by more than this share of the narrower one's width
# are parts of one digit (a 4 drawn in two strokes), not two digits.
MAX_OVERLAP: Final = 0.3
_EIGHT_NEIGHBOURS: Final = np.ones((3, 3), dtype=bool)


def digit_sized(ink: npt.NDArray[np.floating]) -> int:
    """How many digit-sized marks stand side by side in ``ink`` (2-D, ink > 0 on a 0 background): 0 for no ink."""
    grid = _on_grid(ink)
    if grid is None:
        return 0
    labels, count = ndimage.label(grid > INK_LEVEL * float(grid.max()), structure=_EIGHT_NEIGHBOURS)
    if count < 2:
        return int(count)
    boxes = ndimage.find_objects(labels)
    masses = ndimage.sum_labels(grid, labels, index=np.arange(1, count + 1))
    height = max(box[0].stop for box in boxes if box) - min(box[0].start for box in boxes if box)
    total = float(masses.sum())
    columns = sorted((box[1].start, box[1].stop) for box, mass in zip(boxes, masses, strict=True)
                     if box and box[0].stop - box[0].start >= MIN_HEIGHT * height and mass >= MIN_INK * total)
    return _side_by_side(columns)


def _side_by_side(columns: list[tuple[int, int]]) -> int:
    """Groups of (start, stop) column extents, sorted by start, that do not overlap much."""
    groups = 0
    current: tuple[int, int] | None = None
    for start, stop in columns:
        if current is not None:
            overlap = min(stop, current[1]) - max(start, current[0])
            if overlap > MAX_OVERLAP * min(stop - start, current[1] - current[0]):
                current = (current[0], max(stop, current[1]))
                continue
        groups += 1
        current = (start, stop)
    return groups


def _on_grid(ink: npt.NDArray[np.floating]) -> npt.NDArray[np.float32] | None:
    """The ink cropped to its bounding box and scaled so that its longer side is ``GRID`` px."""
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return None
    crop = np.ascontiguousarray(ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], dtype=np.float32)
    if max(crop.shape) <= GRID:  # a 28x28 row: its strokes are already a few pixels wide
        return crop
    scale = GRID / max(crop.shape)
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    # BOX averages: a thin gap survives as a dip.
    return np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BOX), dtype=np.float32)
