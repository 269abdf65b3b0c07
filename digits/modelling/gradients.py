"""Gradient-direction features of normalised digits, a pipeline step fitted and served with the model.

Liu et al. (2003, "Handwritten digit recognition: benchmarking of state-of-the-art techniques", Pattern
Recognition 36) read 99.58% of MNIST's test digits with an RBF SVC on such features; on the classic 50k/10k split
they lift the production recipe from 99.25% to 99.62% (docs/model-quality.md).

Input: (n, 784) floats in MNIST layout (28x28 row-major, light ink on a 0 background), **scaled to 0..1** (the
pipeline's ``scale`` step comes first): a model trained on one range must be served on the same range.

Steps, all vectorised over images (no per-image Python loop), in blocks of ``CHUNK_ROWS`` images so that memory
stays bounded on large batches:

1. **Normalisation** onto a ``canvas`` x ``canvas`` field, one bilinear resampling per image:
   - ``"deskew"``: the classic MNIST deskew (centre of mass to the canvas centre, shear so that the principal
     axis is upright: skew = mu11 / mu02), no scaling: ``digits.modelling.preprocessing.deskew`` on a larger canvas.
   - ``"moment"``: moment normalisation (Liu et al.): centre of mass to the centre; optional slant correction
     (the deskew's shear); each axis scaled so that 4 standard deviations of ink (2 * ``radius`` sd) span
     ``size`` px on the longer axis and ``size * r2`` on the shorter one, where r1 = short / long extent and
     r2 = ``aspect`` mapping of r1: "aran" sqrt(sin(pi/2 r1)) (Liu's aspect-ratio-adaptive normalisation),
     "sqrt" sqrt(r1), "keep" r1 (aspect preserved), "square" 1.
2. **Sobel gradients** of the normalised field (zero padded, on the image axes only: images never mix).
3. **Direction decomposition** into ``directions`` planes: each gradient vector is split between its two
   neighbouring directions (parallelogram rule). The coefficient on direction k is
   max(0, g.e_k - cot(step) |g x e_k|), which equals the parallelogram rule exactly and needs no arctan.
4. **Gaussian sampling**: each plane is blurred by a Gaussian of ``sigma`` px and sampled at the centres of a
   ``grid`` x ``grid`` lattice of equal cells over the canvas (a separable (grid x canvas) weight matrix per
   axis: blur and sampling in one product).
5. **Power**: features ** ``power`` (0.5: square root; variance stabilising).
6. With ``components=k`` (fitted): centred and projected on the top-k principal axes of the training digits'
   features, so that the RBF SVC after it works in k dimensions (a kernel evaluation costs k, not 784).

Output: (n, m) float32. Deterministic: the same input always gives the same output; an image's features depend
on the other images of its batch only through BLAS's float32 summation order (agreement to ~1e-6).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, TransformerMixin

from digits.mnist import CENTRE, N_PIXELS, SIDE
from digits.modelling.preprocessing import MOMENT_BASIS

__all__ = ["CHUNK_ROWS", "GradientFeatures", "gradient_features", "normalise", "principal_axes"]

# Images per block: bounds temporaries (each ~ canvas^2 * directions * 4 bytes = 32 KB per image at 32 px, 8 directions)
# and keeps them cache-sized; 128 was the fastest of 32..1024 on this machine.
CHUNK_ROWS: Final = 128
# Smallest ink standard deviation (px) used for moment normalisation: a dot or a thin stroke is not blown up
# more than size / (2 * radius * MIN_SD) times.
MIN_SD: Final = 0.25
# Rows per block when projecting on principal axes (bounds the full-width features to ~25 MB at 784 wide).
_PROJECT_ROWS: Final = 8192
# Zero border around the 28x28 input during resampling (see ``normalise``).
_BORDER: Final = 2

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Normalisation = Literal["deskew", "moment"]
Aspect = Literal["aran", "sqrt", "keep", "square"]


# ---------------------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------------------


def _aspect_map(r1: F64, aspect: str) -> F64:
    if aspect == "aran":
        return np.sqrt(np.sin(0.5 * math.pi * r1))
    if aspect == "sqrt":
        return np.sqrt(r1)
    if aspect == "keep":
        return r1
    if aspect == "square":
        return np.ones_like(r1)
    raise ValueError(f"aspect must be 'aran', 'sqrt', 'keep' or 'square', not {aspect!r}")


def _source_map(
    pixels: F32, normalisation: str, size: float, aspect: str, slant: bool, radius: float
) -> tuple[F64, F64, F64, F64, F64]:
    """Per image: centre (cy, cx) in 28x28 pixel units, source px per output px (ry, rx), and shear.

    Output pixel (o, c) of the canvas samples the input at
        row = cy + ry * (o - oc),   col = cx + rx * (c - oc) + skew * ry * (o - oc)
    where oc is the canvas centre.
    """
    m = pixels.astype(np.float64) @ MOMENT_BASIS
    mass = m[:, 0]
    ink = mass > 0
    safe = np.where(ink, mass, 1.0)
    dy, dx = m[:, 1] / safe, m[:, 2] / safe
    vyy = np.maximum(m[:, 3] / safe - dy * dy, 0.0)
    vxy = m[:, 4] / safe - dy * dx
    vxx = np.maximum(m[:, 5] / safe - dx * dx, 0.0)
    cy = np.where(ink, dy + CENTRE, CENTRE)
    cx = np.where(ink, dx + CENTRE, CENTRE)
    # The classic deskew's guard: no shear when there is (almost) no vertical extent.
    skew = np.where(vyy > 1e-6, vxy / np.where(vyy > 1e-6, vyy, 1.0), 0.0)
    skew = np.where(ink, skew, 0.0)
    ones = np.ones_like(cy)
    if normalisation == "deskew":
        return cy, cx, ones, ones, skew
    if normalisation != "moment":
        raise ValueError(f"normalisation must be 'deskew' or 'moment', not {normalisation!r}")
    if not slant:
        skew = np.zeros_like(skew)
    # Horizontal variance after the shear x' = x - skew * y: vxx - 2 skew vxy + skew^2 vyy = vxx - skew vxy.
    vxx_after = np.maximum(vxx - skew * vxy, 0.0) if slant else vxx
    ext_y = 2.0 * radius * np.maximum(np.sqrt(vyy), MIN_SD)
    ext_x = 2.0 * radius * np.maximum(np.sqrt(vxx_after), MIN_SD)
    longer = np.maximum(ext_y, ext_x)
    r2 = _aspect_map(np.minimum(ext_y, ext_x) / longer, aspect)
    tall = ext_y >= ext_x
    target_y = np.where(tall, size, size * r2)
    target_x = np.where(tall, size * r2, size)
    ry = np.where(ink, ext_y / target_y, 1.0)
    rx = np.where(ink, ext_x / target_x, 1.0)
    return cy, cx, ry, rx, skew


@lru_cache(maxsize=8)
def _canvas_offsets(canvas: int) -> F64:
    return np.arange(canvas, dtype=np.float64) - canvas / 2.0


def normalise(
    pixels: npt.ArrayLike,
    normalisation: str = "deskew",
    canvas: int = 32,
    size: float = 24.0,
    aspect: str = "aran",
    slant: bool = True,
    radius: float = 2.0,
) -> F32:
    """(n, 784) -> (n, canvas, canvas) float32 normalised digits (bilinear, zero outside the input field).

    The row coordinate of a sample is constant along an output row, so the bilinear sample factors into a
    vertical 2-tap interpolation between whole source rows, then a horizontal 2-tap one per output pixel.
    """
    x = np.asarray(pixels, dtype=np.float32).reshape(-1, N_PIXELS)
    n = x.shape[0]
    cy, cx, ry, rx, skew = _source_map(x, normalisation, size, aspect, slant, radius)
    off = _canvas_offsets(canvas)
    one = np.float32(1.0)
    # The input sits in a zero border of _BORDER px. A source position's floor is clipped (in floating point, to
    # [-_BORDER, SIDE]) before it becomes an index: anything clipped has both taps on zero border rows/columns.
    padded_side = SIDE + 2 * _BORDER
    # Vertical: output row o blends source rows floor(y) and floor(y)+1, y = cy + ry * off[o].
    src_y = cy[:, None] + ry[:, None] * off[None, :]  # (n, canvas)
    y0 = np.floor(src_y)
    fy = (src_y - y0).astype(np.float32)[:, :, None]
    np.maximum(y0, -_BORDER, out=y0)
    np.minimum(y0, SIDE, out=y0)
    tall = np.zeros((n, padded_side, SIDE), dtype=np.float32)
    tall[:, _BORDER:-_BORDER] = x.reshape(n, SIDE, SIDE)
    top = y0.astype(np.intp)
    top += (np.arange(n, dtype=np.intp) * padded_side + _BORDER)[:, None]
    flat_rows = tall.reshape(n * padded_side, SIDE)
    rows = flat_rows[top] * (one - fy)  # (n, canvas, 28)
    top += 1
    rows += flat_rows[top] * fy
    # Horizontal: output (o, c) blends columns floor(x) and floor(x)+1 of that row,
    # x = cx + rx * off[c] + skew * ry * off[o].
    wide = np.zeros((n, canvas, padded_side), dtype=np.float32)
    wide[:, :, _BORDER:-_BORDER] = rows
    row_shift = cx[:, None] + (skew * ry)[:, None] * off[None, :]  # (n, canvas): per output row
    src_x = row_shift[:, :, None] + (rx[:, None] * off[None, :])[:, None, :]  # (n, canvas, canvas)
    x0 = np.floor(src_x)
    fx = (src_x - x0).astype(np.float32)
    np.maximum(x0, -_BORDER, out=x0)
    np.minimum(x0, SIDE, out=x0)
    left = x0.astype(np.intp)
    left += (np.arange(n * canvas, dtype=np.intp) * padded_side + _BORDER).reshape(n, canvas, 1)
    flat = wide.reshape(-1)
    out: F32 = flat[left] * (one - fx)
    left += 1
    out += flat[left] * fx
    return out


# ---------------------------------------------------------------------------------------------------------
# Gradient features
# ---------------------------------------------------------------------------------------------------------


def _sobel(field: F32) -> tuple[F32, F32]:
    """Sobel x (columns) and y (rows) derivatives of (n, s, s) fields, zero padded; axes 1 and 2 only."""
    n, s, _ = field.shape
    p = np.zeros((n, s + 2, s + 2), dtype=np.float32)
    p[:, 1:-1, 1:-1] = field
    two = np.float32(2.0)
    v = p[:, :-2, :] + two * p[:, 1:-1, :] + p[:, 2:, :]  # (n, s, s+2): smoothed down the rows
    gx = v[:, :, 2:] - v[:, :, :-2]
    h = p[:, :, :-2] + two * p[:, :, 1:-1] + p[:, :, 2:]  # (n, s+2, s): smoothed along the columns
    gy = h[:, 2:, :] - h[:, :-2, :]
    return gx, gy


@lru_cache(maxsize=16)
def _directions(directions: int) -> tuple[F32, F32, np.float32]:
    angles = 2.0 * math.pi * np.arange(directions) / directions
    cot = 1.0 / math.tan(2.0 * math.pi / directions)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32), np.float32(cot)


@lru_cache(maxsize=16)
def _sampling_matrix(canvas: int, grid: int, sigma: float) -> F32:
    """(grid, canvas) Gaussian weights centred on the grid's cell centres: blur + sample along one axis."""
    centres = (np.arange(grid) + 0.5) * canvas / grid - 0.5
    pos = np.arange(canvas, dtype=np.float64)
    weights = np.exp(-((pos[None, :] - centres[:, None]) ** 2) / (2.0 * sigma * sigma))
    return np.ascontiguousarray(weights, dtype=np.float32)


def _features_block(field: F32, grid: int, sigma: float, directions: int, power: float) -> F32:
    n, s, _ = field.shape
    gx, gy = _sobel(field)
    cos, sin, cot = _directions(directions)
    # Planes are laid out (image, row, direction, column) so that both sampling products are single GEMMs.
    gx4, gy4 = gx[:, :, None, :], gy[:, :, None, :]
    zero = np.float32(0.0)
    if directions % 2 == 0:
        # e_{k+D/2} = -e_k: the opposite direction has the negated projection and the same |cross product|.
        half = directions // 2
        c4, s4 = cos[None, None, :half, None], sin[None, None, :half, None]
        along = gx4 * c4 + gy4 * s4  # g . e_k, (n, s, D/2, s)
        across = gy4 * c4 - gx4 * s4  # g x e_k
        np.abs(across, out=across)
        across *= cot
        planes = np.empty((n, s, directions, s), dtype=np.float32)
        np.subtract(along, across, out=planes[:, :, :half])
        np.negative(along, out=along)
        np.subtract(along, across, out=planes[:, :, half:])
    else:
        c4, s4 = cos[None, None, :, None], sin[None, None, :, None]
        planes = gx4 * c4 + gy4 * s4
        across = gy4 * c4 - gx4 * s4
        np.abs(across, out=across)
        across *= cot
        planes -= across
    np.maximum(planes, zero, out=planes)  # parallelogram coefficients: max(0, g.e_k - cot(step) |g x e_k|)
    weights_t = _sampling_matrix(s, grid, sigma).T  # (s, grid)
    # Columns: (n*s*D, s) @ (s, grid); then rows: (n*D*grid, s) @ (s, grid).
    by_cols = (planes.reshape(n * s * directions, s) @ weights_t).reshape(n, s, directions * grid)
    by_rows = np.ascontiguousarray(by_cols.transpose(0, 2, 1)).reshape(n * directions * grid, s) @ weights_t
    out = by_rows.reshape(n, directions * grid * grid)  # ordered (direction, column cell, row cell)
    if power == 0.5:
        np.sqrt(out, out=out)
    elif power != 1.0:
        np.power(out, np.float32(power), out=out)
    return out


def gradient_features(
    pixels: npt.ArrayLike,
    normalisation: str = "moment",
    canvas: int = 32,
    grid: int = 7,
    sigma: float = 2.0,
    directions: int = 16,
    power: float = 0.5,
    size: float = 24.0,
    aspect: str = "sqrt",
    slant: bool = True,
    radius: float = 2.0,
) -> F32:
    """(n, 784) pixels 0..1 -> (n, grid*grid*directions) float32 features; see the module docstring.

    The defaults are the production recipe's, as ``GradientFeatures``' are (which adds the projection on
    principal components, a fitted step, on top of these unfitted features).
    """
    x = np.asarray(pixels, dtype=np.float32)
    if x.ndim == 1 and x.size == N_PIXELS:
        x = x.reshape(1, N_PIXELS)
    if x.ndim != 2 or x.shape[1] != N_PIXELS:
        raise ValueError(f"expected a 2-D array with {N_PIXELS} features, got shape {x.shape}")
    if directions < 3:
        raise ValueError("directions must be at least 3 (the parallelogram rule needs < 180 degrees between them)")
    width = grid * grid * directions
    out = np.empty((len(x), width), dtype=np.float32)
    for start in range(0, len(x), CHUNK_ROWS):
        block = x[start : start + CHUNK_ROWS]
        field = normalise(block, normalisation, canvas, size, aspect, slant, radius)
        out[start : start + len(block)] = _features_block(field, grid, sigma, directions, power)
    return out


def principal_axes(blocks: Iterable[F32], components: int) -> tuple[F32, F32]:
    """Mean and top ``components`` principal axes (components, d) of the rows of ``blocks``, deterministically.

    One pass, memory O(d^2) whatever the number of rows: the sum and the scatter matrix are accumulated in
    float64 block by block (features are O(1), so the centred covariance X'X/n - mean mean' loses nothing that
    matters in float64), then eigendecomposed. Each axis' sign is fixed so that its largest-magnitude entry is
    positive. Same subspace as sklearn's PCA with an exact solver.
    """
    total: F64 | None = None
    scatter: F64 | None = None
    n = 0
    for block in blocks:
        b = np.asarray(block, dtype=np.float64)
        if total is None or scatter is None:
            total, scatter = np.zeros(b.shape[1]), np.zeros((b.shape[1], b.shape[1]))
        total += b.sum(axis=0)
        scatter += b.T @ b
        n += len(b)
    if total is None or scatter is None or n < 2:
        raise ValueError("principal axes need at least 2 rows")
    d = len(total)
    if not 0 < components <= d:
        raise ValueError(f"components must be in 1..{d}, not {components}")
    mean = total / n
    covariance = (scatter - n * np.outer(mean, mean)) / (n - 1)
    values, vectors = np.linalg.eigh(covariance)
    axes = vectors[:, np.argsort(values)[::-1][:components]].T  # (components, d)
    signs = np.sign(axes[np.arange(components), np.argmax(np.abs(axes), axis=1)])
    axes *= signs[:, None]
    return mean.astype(np.float32), np.ascontiguousarray(axes, dtype=np.float32)


class GradientFeatures(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Gradient-direction features; ``transform((n, 784) pixels in 0..1) -> (n, m)`` float32.

    With ``components=0`` it is stateless (``fit`` learns nothing) and m = grid * grid * directions. With
    ``components=k > 0``, ``fit`` also learns the mean and top-k principal axes of the training digits' features
    and ``transform`` returns the centred features projected on them (m = k): the kernel of an RBF SVC after it
    then costs k instead of grid*grid*directions per support vector.

    Defaults are the production recipe's (``svc-grad``, docs/model-quality.md); the plain gradient SVC it was
    measured against is ``normalisation="deskew", directions=8, components=0`` (``svc-grad-deskew``).
    """

    def __init__(
        self,
        normalisation: Normalisation = "moment",
        canvas: int = 32,
        grid: int = 7,
        sigma: float = 2.0,
        directions: int = 16,
        power: float = 0.5,
        size: float = 24.0,
        aspect: Aspect = "sqrt",
        slant: bool = True,
        radius: float = 2.0,
        components: int = 128,
    ) -> None:
        self.normalisation = normalisation
        self.canvas = canvas
        self.grid = grid
        self.sigma = sigma
        self.directions = directions
        self.power = power
        self.size = size
        self.aspect = aspect
        self.slant = slant
        self.radius = radius
        self.components = components

    def _raw(self, X: Any) -> F32:
        return gradient_features(
            X, self.normalisation, self.canvas, self.grid, self.sigma, self.directions, self.power,
            self.size, self.aspect, self.slant, self.radius,
        )

    mean_: F32 | None
    axes_: F32 | None

    def fit(self, X: Any, y: Any = None) -> GradientFeatures:
        self.n_features_in_ = N_PIXELS
        if self.components:
            x = np.asarray(X, dtype=np.float32).reshape(-1, N_PIXELS)
            blocks = (self._raw(x[s : s + _PROJECT_ROWS]) for s in range(0, len(x), _PROJECT_ROWS))
            self.mean_, self.axes_ = principal_axes(blocks, int(self.components))
        else:
            self.mean_ = self.axes_ = None
        return self

    def transform(self, X: Any) -> F32:
        if not self.components:
            return self._raw(X)
        mean, axes = getattr(self, "mean_", None), getattr(self, "axes_", None)
        if mean is None or axes is None:
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("GradientFeatures with components > 0 must be fitted before transform")
        x = np.asarray(X, dtype=np.float32)
        if x.ndim == 1 and x.size == N_PIXELS:
            x = x.reshape(1, N_PIXELS)
        out = np.empty((len(x), int(self.components)), dtype=np.float32)
        for start in range(0, len(x), _PROJECT_ROWS):  # the full-width features exist one block at a time
            features = self._raw(x[start : start + _PROJECT_ROWS])
            features -= mean
            out[start : start + len(features)] = features @ axes.T
        return out

    def get_feature_names_out(self, input_features: Any = None) -> npt.NDArray[np.object_]:
        if self.components:
            return np.array([f"grad_pc{i}" for i in range(int(self.components))], dtype=object)
        g, d = self.grid, self.directions
        return np.array([f"grad_d{k}_c{j}_r{i}" for k in range(d) for j in range(g) for i in range(g)], dtype=object)

    def __sklearn_is_fitted__(self) -> bool:
        return not self.components or getattr(self, "axes_", None) is not None
