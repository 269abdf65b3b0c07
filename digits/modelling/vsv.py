"""Virtual support vectors (Schölkopf, Burges & Vapnik; DeCoste & Schölkopf 2002).

Fit an RBF SVC, keep its support vectors, add copies of them moved by a pixel or two (and optionally rotated a
few degrees), and fit the final SVC on that set. The invariances are learned from the digits that matter
(the support vectors) at a fraction of the cost of augmenting the whole training set.

The estimator works on the 28x28 grid it receives, i.e. after the pipeline's earlier steps (scaled and, in
the ``svc-vsv`` recipe, deskewed pixels). With ``components`` > 0 both SVCs see the digits projected on their
first principal components (fitted on the training digits) instead of 784 pixels: shifting still happens on the
grid, then the copies are projected (the final SVC on components fitted to the copies). On deskewed MNIST 50
components lose no accuracy, and every kernel evaluation, in training and in serving, costs 1/16 of a 784-pixel
one.

The final SVC is exposed as ``svc_`` and the projection as ``projection_`` (None without one); everything a
served model needs (predict, decision_function, classes_, support_vectors_, ...) is delegated to them, so
``DigitModel`` and the fast path (``digits.modelling.fastsvc``) treat it exactly like a projection step and a plain SVC.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.decomposition import PCA
from sklearn.svm import SVC
from sklearn.utils.validation import check_is_fitted

from digits.mnist import CENTRE, N_PIXELS, SIDE
from digits.modelling.augment import shift
from digits.modelling.preprocessing import affine_resample

__all__ = ["SHIFT_SETS", "VirtualSupportVectorSVC", "rotate", "virtual_offsets"]

_FOUR = ((-1, 0), (1, 0), (0, -1), (0, 1))
_DIAGONALS = ((-1, -1), (-1, 1), (1, -1), (1, 1))
_TWO = ((-2, 0), (2, 0), (0, -2), (0, 2))
# "4": one pixel in 4 directions; "8": plus diagonals; "4x2": 4 directions by one and by two pixels.
SHIFT_SETS: dict[str, tuple[tuple[int, int], ...]] = {
    "": (), "none": (), "4": _FOUR, "8": _FOUR + _DIAGONALS, "4x2": _FOUR + _TWO, "8x2": _FOUR + _DIAGONALS + _TWO,
}


def virtual_offsets(shifts: str) -> tuple[tuple[int, int], ...]:
    try:
        return SHIFT_SETS[str(shifts)]
    except KeyError:
        raise ValueError(f"shifts must be one of {', '.join(repr(k) for k in SHIFT_SETS)}, not {shifts!r}") from None


def rotate(pixels: npt.ArrayLike, degrees: float) -> npt.NDArray[np.float32]:
    """Rows of ``pixels`` (n, 784) rotated by ``degrees`` about the field's centre, clockwise on screen."""
    rows = np.asarray(pixels, dtype=np.float32).reshape(-1, N_PIXELS)
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    r, c = np.mgrid[0:SIDE, 0:SIDE]
    dr, dc = r.reshape(-1) - CENTRE, c.reshape(-1) - CENTRE
    # Inverse mapping: the source of each output pixel is the output position rotated back.
    row_of = CENTRE + cos * dr - sin * dc
    col_of = CENTRE + sin * dr + cos * dc
    n = len(rows)
    return affine_resample(rows, np.broadcast_to(row_of, (n, N_PIXELS)), np.broadcast_to(col_of, (n, N_PIXELS)))


def _project(projection: PCA | None, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return rows if projection is None else np.asarray(projection.transform(rows), dtype=np.float32)


class VirtualSupportVectorSVC(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """RBF SVC retrained on its support vectors plus their shifted/rotated copies.

    ``gamma`` may be "scale": it is resolved once, on the training digits of the first fit, and the final
    SVC uses that same value (recorded as ``gamma_``), so both fits share one kernel.
    """

    def __init__(
        self,
        C: float = 10.0,
        gamma: float | str = "scale",
        shifts: str = "4",
        rotations_deg: Sequence[float] = (),
        break_ties: bool = True,
        cache_size: float = 2000.0,  # MB of kernel rows per fit: speed only; the trainer pod may use 8 GiB
        components: int = 0,
    ) -> None:
        self.C = C
        self.gamma = gamma
        self.shifts = shifts
        self.rotations_deg = rotations_deg
        self.break_ties = break_ties
        self.cache_size = cache_size
        self.components = components

    def _svc(self, gamma: float | str) -> SVC:
        return SVC(kernel="rbf", C=self.C, gamma=gamma, break_ties=self.break_ties, cache_size=self.cache_size)

    def fit(self, X: Any, y: Any) -> VirtualSupportVectorSVC:
        offsets = virtual_offsets(self.shifts)
        rows = np.asarray(X, dtype=np.float32)
        labels = np.asarray(y)
        if rows.ndim != 2 or rows.shape[1] != N_PIXELS:
            raise ValueError(f"expected a 2-D array with {N_PIXELS} features (28x28 digits), got shape {rows.shape}")
        first_projection = self._projection(rows)
        first = self._svc(self.gamma).fit(_project(first_projection, rows), labels)
        self.gamma_ = float(first._gamma)
        self.n_first_support_vectors_ = int(first.support_.shape[0])
        sv, sv_labels = rows[first.support_], labels[first.support_]
        copies = [sv, *(shift(sv, dy, dx) for dy, dx in offsets)]
        copies += [rotate(sv, float(degrees)) for degrees in self.rotations_deg]
        virtual = np.concatenate(copies)
        self.n_virtual_training_ = len(virtual)
        # The final projection is fitted on what the final SVC learns from, shifted copies included: on 50k
        # MNIST digits that read 5 more of 10,000 validation digits than reusing the first one.
        self.projection_ = self._projection(virtual)
        self.svc_ = self._svc(self.gamma_).fit(self._project(virtual), np.tile(sv_labels, len(copies)))
        self.n_features_in_ = N_PIXELS
        return self

    def _projection(self, rows: npt.NDArray[np.float32]) -> PCA | None:
        if not self.components:
            return None
        if not 1 <= int(self.components) < N_PIXELS:
            raise ValueError(f"components must be 0 (pixels) or 1 to {N_PIXELS - 1}, not {self.components}")
        # The full SVD is deterministic (no random_state to carry) and takes seconds on 60,000 digits.
        return PCA(int(self.components), svd_solver="full").fit(rows)

    def _project(self, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        # projection_ is absent from models pickled before projections existed.
        return _project(getattr(self, "projection_", None), rows)

    # Everything below is the final SVC's.
    @property
    def classes_(self) -> npt.NDArray[Any]:
        check_is_fitted(self, "svc_")
        return self.svc_.classes_  # type: ignore[no-any-return]

    @property
    def support_vectors_(self) -> npt.NDArray[Any]:
        check_is_fitted(self, "svc_")
        return self.svc_.support_vectors_  # type: ignore[no-any-return]

    @property
    def n_support_(self) -> npt.NDArray[Any]:
        check_is_fitted(self, "svc_")
        return self.svc_.n_support_  # type: ignore[no-any-return]

    @property
    def dual_coef_(self) -> npt.NDArray[Any]:
        check_is_fitted(self, "svc_")
        return self.svc_.dual_coef_  # type: ignore[no-any-return]

    @property
    def intercept_(self) -> npt.NDArray[Any]:
        check_is_fitted(self, "svc_")
        return self.svc_.intercept_  # type: ignore[no-any-return]

    def decision_function(self, X: Any) -> npt.NDArray[Any]:
        check_is_fitted(self, "svc_")
        return self.svc_.decision_function(self._project(np.asarray(X, dtype=np.float32)))  # type: ignore[no-any-return]

    def predict(self, X: Any) -> npt.NDArray[Any]:
        check_is_fitted(self, "svc_")
        return self.svc_.predict(self._project(np.asarray(X, dtype=np.float32)))  # type: ignore[no-any-return]
