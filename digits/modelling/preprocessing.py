"""Image preprocessing steps that belong to a model's pipeline (fitted, pickled and served with it).

``Deskew`` is the classic MNIST deskewing: each digit is sheared so that its principal axis is upright
(skew = mu11 / mu02 from the intensity-weighted second-order moments) and its centre of mass moves to the
field's centre, resampled with bilinear interpolation. It is a pipeline step, so a model trained with it is
always served with it and a model trained without it never is.

Everything is vectorised over images: the moments are one matrix product, the resampling is a gather from a
zero-bordered copy of each image. No per-image Python loop, so one request costs tens of microseconds.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, TransformerMixin

from digits.mnist import CENTRE, N_PIXELS, SIDE

__all__ = ["MOMENT_BASIS", "Deskew", "affine_resample", "deskew"]

# The centre of mass goes to mnist.CENTRE (as in the classic deskewing: shape / 2).
# Rows per block: bounds the temporaries (a few float32/intp arrays of CHUNK x 784) on large batches.
CHUNK_ROWS: Final = 2048

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

_rows, _cols = np.mgrid[0:SIDE, 0:SIDE]
_ROW: Final = _rows.reshape(-1).astype(np.float64)
_COL: Final = _cols.reshape(-1).astype(np.float64)
# Mass, first and second moments of every image in one (n, 784) @ (784, 6) product. Coordinates are taken
# relative to the field's centre so that the second moments do not cancel catastrophically.
_R, _C = _ROW - CENTRE, _COL - CENTRE
MOMENT_BASIS: Final = np.stack([np.ones(N_PIXELS), _R, _C, _R * _R, _R * _C, _C * _C], axis=1)
_PADDED: Final = SIDE + 2
_ROW_OFFSETS: Final = np.arange(SIDE, dtype=np.float64) - CENTRE
_COLUMNS: Final = np.arange(SIDE, dtype=np.intp)


def affine_resample(images: npt.ArrayLike, row_of: F64, col_of: F64) -> F32:
    """Bilinear samples of ``images`` (n, 784) at source coordinates (row_of, col_of), each (n, 784).

    Output pixel k of image i is the bilinear interpolation of image i at (row_of[i, k], col_of[i, k]),
    zero outside the 28x28 field (MNIST's background). Weights are non-negative and sum to <= 1, so the
    output stays within [min(0, input), max(input)].
    """
    pixels = np.asarray(images, dtype=np.float32).reshape(-1, SIDE, SIDE)
    n = pixels.shape[0]
    padded = np.zeros((n, _PADDED, _PADDED), dtype=np.float32)
    padded[:, 1:-1, 1:-1] = pixels
    flat = padded.reshape(-1)
    r0f = np.floor(row_of)
    c0f = np.floor(col_of)
    fr = (row_of - r0f).astype(np.float32)
    fc = (col_of - c0f).astype(np.float32)
    # +1 for the border; anything outside the field is clipped onto the (zero) border.
    r0 = np.clip(r0f.astype(np.intp) + 1, 0, _PADDED - 1)
    r1 = np.clip(r0f.astype(np.intp) + 2, 0, _PADDED - 1)
    c0 = np.clip(c0f.astype(np.intp) + 1, 0, _PADDED - 1)
    c1 = np.clip(c0f.astype(np.intp) + 2, 0, _PADDED - 1)
    base = (np.arange(n, dtype=np.intp) * (_PADDED * _PADDED))[:, None]
    top0, top1 = base + r0 * _PADDED, base + r1 * _PADDED
    one = np.float32(1.0)
    out: F32 = (flat[top0 + c0] * (one - fc) + flat[top0 + c1] * fc) * (one - fr)
    out += (flat[top1 + c0] * (one - fc) + flat[top1 + c1] * fc) * fr
    return out


def deskew(images: npt.ArrayLike) -> F32:
    """Deskewed copies of ``images`` (n, 784), float32, see ``Deskew``."""
    pixels = np.asarray(images, dtype=np.float32)
    if pixels.ndim != 2 or pixels.shape[1] != N_PIXELS:
        raise ValueError(f"expected a 2-D array with {N_PIXELS} features, got shape {pixels.shape}")
    if len(pixels) <= CHUNK_ROWS:
        return _deskew_block(pixels)
    return np.concatenate([_deskew_block(pixels[s : s + CHUNK_ROWS]) for s in range(0, len(pixels), CHUNK_ROWS)])


def _deskew_block(pixels: F32) -> F32:
    moments = pixels.astype(np.float64) @ MOMENT_BASIS
    mass = moments[:, 0]
    empty = ~(mass > 0)
    safe_mass = np.where(empty, 1.0, mass)
    cy = moments[:, 1] / safe_mass  # relative to the centre
    cx = moments[:, 2] / safe_mass
    mu02 = moments[:, 3] / safe_mass - cy * cy  # variance along rows (y)
    mu11 = moments[:, 4] / safe_mass - cy * cx  # covariance
    skew = np.where(mu02 > 1e-6, mu11 / np.where(mu02 > 1e-6, mu02, 1.0), 0.0)
    cy, cx, skew = np.where(empty, 0.0, cy), np.where(empty, 0.0, cx), np.where(empty, 0.0, skew)
    out = _shear(pixels, cy, cx, skew)
    out[empty] = pixels[empty]
    return out


def _shear(pixels: F32, dy: F64, dx: F64, skew: F64) -> F32:
    """Output (r, c) = bilinear input at (r + dy, c + dx + skew * (r - centre)), zero outside the field.

    Both fractional offsets are constant along an output row (the row one for the whole image), so the
    bilinear sample factors exactly into a vertical interpolation between two source rows followed by a
    horizontal one between two source columns: four gathers of whole rows, no per-pixel coordinates.
    """
    n = pixels.shape[0]
    grid = pixels.reshape(n, SIDE, SIDE)
    one = np.float32(1.0)
    # Vertical: output row r blends source rows r + floor(dy) and the next one (index 0 / SIDE+1 = zero rows).
    tall = np.zeros((n, _PADDED, SIDE), dtype=np.float32)
    tall[:, 1:-1] = grid
    floor_dy = np.floor(dy)
    fr = (dy - floor_dy).astype(np.float32)[:, None, None]
    first = _COLUMNS[None, :] + (floor_dy.astype(np.intp) + 1)[:, None]
    top, below = np.clip(first, 0, _PADDED - 1), np.clip(first + 1, 0, _PADDED - 1)
    base = (np.arange(n, dtype=np.intp) * _PADDED)[:, None]
    tall_rows = tall.reshape(n * _PADDED, SIDE)
    rows = tall_rows[base + top] * (one - fr)
    rows += tall_rows[base + below] * fr
    # Horizontal: output (r, c) blends columns c + floor(shift_r) and the next one, shift_r per row.
    wide = np.zeros((n, SIDE, _PADDED), dtype=np.float32)
    wide[:, :, 1:-1] = rows
    shift = dx[:, None] + skew[:, None] * _ROW_OFFSETS[None, :]  # (n, SIDE)
    floor_shift = np.floor(shift)
    fc = (shift - floor_shift).astype(np.float32)[:, :, None]
    first = _COLUMNS[None, None, :] + (floor_shift.astype(np.intp) + 1)[:, :, None]
    left, right = np.clip(first, 0, _PADDED - 1), np.clip(first + 1, 0, _PADDED - 1)
    line = (np.arange(n * SIDE, dtype=np.intp) * _PADDED).reshape(n, SIDE, 1)
    flat = wide.reshape(-1)
    out = flat[line + left] * (one - fc)
    out += flat[line + right] * fc
    result: F32 = out.reshape(n, N_PIXELS)
    return result


class Deskew(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Shear each 28x28 digit upright and centre its mass; stateless (``fit`` learns nothing).

    ``transform(X (n, 784)) -> (n, 784) float32`` in the input's range. Blank images pass through unchanged.
    """

    def fit(self, X: Any, y: Any = None) -> Deskew:
        self.n_features_in_ = N_PIXELS
        return self

    def transform(self, X: Any) -> F32:
        return deskew(X)

    def __sklearn_is_fitted__(self) -> bool:
        return True
