"""Deskew (digits.modelling.preprocessing): sheared strokes come out upright, mass centred, batch == one by one,
values in range, as scipy would."""

from __future__ import annotations

import pickle

import numpy as np
import numpy.typing as npt
import pytest
from scipy.ndimage import affine_transform
from sklearn.base import clone

from digits.modelling.preprocessing import Deskew, deskew
from digits.training import datasets

SIDE = 28
F64 = npt.NDArray[np.float64]


def _moments(images: npt.ArrayLike) -> tuple[F64, F64, F64]:
    """Centre of mass (row, col) and skew mu11/mu02 of each image, the plain way."""
    grid = np.asarray(images, dtype=np.float64).reshape(-1, SIDE, SIDE)
    rows, cols = np.mgrid[0:SIDE, 0:SIDE]
    mass = grid.sum(axis=(1, 2))
    cy = (grid * rows).sum(axis=(1, 2)) / mass
    cx = (grid * cols).sum(axis=(1, 2)) / mass
    dy, dx = rows[None] - cy[:, None, None], cols[None] - cx[:, None, None]
    mu02 = (grid * dy * dy).sum(axis=(1, 2)) / mass
    mu11 = (grid * dy * dx).sum(axis=(1, 2)) / mass
    return cy, cx, mu11 / mu02


def _stroke(slant: float, row_offset: int = 0, col_offset: int = 0) -> F64:
    """A 3-px-wide stroke from row 5 to 22 whose column moves by ``slant`` px per row (a slanted '1')."""
    image = np.zeros((SIDE, SIDE))
    for r in range(5, 23):
        c = 14 + slant * (r - 14)
        lo = int(np.floor(c))
        frac = c - lo
        image[r + row_offset, lo - 1 + col_offset : lo + 2 + col_offset] += 1.0 - frac
        image[r + row_offset, lo + col_offset : lo + 3 + col_offset] += frac
    return image.reshape(1, -1)


@pytest.fixture(scope="module")
def digits(mnist_sample: datasets.Dataset) -> npt.NDArray[np.float32]:
    return np.asarray(mnist_sample.pixels[::10], dtype=np.float32) / 255.0  # 500 digits, every class


@pytest.mark.parametrize("slant", [-0.5, -0.25, 0.3, 0.6])
def test_a_sheared_stroke_comes_out_upright_and_centred(slant: float) -> None:
    stroke = _stroke(slant, row_offset=2, col_offset=-3)
    assert abs(_moments(stroke)[2][0] - slant) < 0.05
    upright = deskew(stroke)
    cy, cx, skew = _moments(upright)
    assert abs(skew[0]) < 0.03
    assert abs(cy[0] - 14) < 0.1 and abs(cx[0] - 14) < 0.1
    # Every inked row's own centre is now in the same column: the stroke is vertical.
    grid = upright.reshape(SIDE, SIDE)
    inked = grid.sum(axis=1) > 0.5
    row_centres = (grid[inked] * np.arange(SIDE)).sum(axis=1) / grid[inked].sum(axis=1)
    assert np.ptp(row_centres[1:-1]) < 0.05  # the two end rows are blurred vertically into half-rows


def test_real_digits_lose_their_skew_and_keep_their_mass_centred(digits: npt.NDArray[np.float32]) -> None:
    out = deskew(digits)
    cy, cx, skew = _moments(out)
    assert np.abs(_moments(digits)[2]).mean() > 0.15  # MNIST is slanted...
    assert np.abs(skew).mean() < 0.03  # ... deskewed digits are not
    assert np.abs(cy - 14).max() < 0.5 and np.abs(cx - 14).max() < 0.5
    assert np.abs(cy - 14).mean() < 0.1 and np.abs(cx - 14).mean() < 0.1
    # Ink is moved, not made or lost (bar the odd pixel sheared past the edge).
    assert np.median(np.abs(out.sum(axis=1) / digits.sum(axis=1) - 1)) < 0.01


def test_equals_the_classic_scipy_deskew_with_bilinear_interpolation(digits: npt.NDArray[np.float32]) -> None:
    def classic(image: F64) -> F64:
        cy, cx, skew = _moments(image.reshape(1, -1))
        affine = np.array([[1.0, 0.0], [skew[0], 1.0]])
        offset = np.array([cy[0], cx[0]]) - affine @ np.array([SIDE / 2, SIDE / 2])
        out: F64 = affine_transform(image.reshape(SIDE, SIDE), affine, offset=offset, order=1, cval=0.0)
        return out.reshape(-1)

    reference = np.stack([classic(image.astype(np.float64)) for image in digits[:100]])
    assert np.abs(deskew(digits[:100]) - reference).max() < 1e-5


def test_a_batch_is_deskewed_exactly_as_one_image_at_a_time(digits: npt.NDArray[np.float32]) -> None:
    batch = deskew(digits)
    one_by_one = np.concatenate([deskew(digits[i : i + 1]) for i in range(len(digits))])
    assert np.array_equal(batch, one_by_one)


def test_range_dtype_and_shape_are_kept(digits: npt.NDArray[np.float32]) -> None:
    for scale in (1.0, 255.0):
        out = deskew(digits * scale)
        assert out.dtype == np.float32 and out.shape == digits.shape
        assert out.min() >= 0.0 and out.max() <= scale * digits.max() + 1e-4
    noise = np.random.default_rng(0).random((50, SIDE * SIDE), dtype=np.float32)
    out = deskew(noise)
    assert out.min() >= 0.0 and out.max() <= noise.max()


def test_blank_and_extreme_images() -> None:
    blank = np.zeros((2, SIDE * SIDE), dtype=np.float32)
    assert np.array_equal(deskew(blank), blank)
    corners = np.zeros((1, SIDE * SIDE), dtype=np.float32)
    corners[0, [0, SIDE * SIDE - 1]] = 1.0  # skew 1: half the ink is sheared off the field, nothing breaks
    out = deskew(corners)
    assert np.isfinite(out).all() and 0 < out.sum() <= 2.0
    with pytest.raises(ValueError, match="784"):
        deskew(np.zeros((1, 100)))


def test_the_transformer_is_a_stateless_sklearn_step(digits: npt.NDArray[np.float32]) -> None:
    step = Deskew()
    assert step.fit(digits) is step
    assert clone(step).get_params() == {}
    restored = pickle.loads(pickle.dumps(step))
    assert np.array_equal(restored.transform(digits[:20]), deskew(digits[:20]))
    assert np.array_equal(Deskew().transform(digits[:20]), step.fit_transform(digits[:20]))
