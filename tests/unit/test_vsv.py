"""Virtual support vectors (digits.modelling.vsv): the final SVC learns from the first one's support vectors plus
exactly the copies asked for, both fits share one kernel, a projection is fitted only when asked; rotations and shift
sets."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.svm import SVC

from digits.modelling.augment import shift
from digits.modelling.vsv import SHIFT_SETS, VirtualSupportVectorSVC, rotate, virtual_offsets
from digits.training import datasets

F32 = npt.NDArray[np.float32]


@pytest.fixture(scope="module")
def digits(mnist_sample: datasets.Dataset) -> tuple[F32, npt.NDArray[np.int64]]:
    """300 digits, every class, scaled to 0..1 (what the estimator sees after the pipeline's scale step)."""
    return np.asarray(mnist_sample.pixels[::16], dtype=np.float32) / 255.0, mnist_sample.labels[::16]


@pytest.mark.parametrize(("shifts", "rotations", "copies", "components"),
                         [("8x2", (), 13, 50), ("4", (), 5, 0), ("", (-10.0, 10.0), 3, 0)])
def test_the_final_svc_fits_on_support_vectors_and_their_copies(
    digits: tuple[F32, npt.NDArray[np.int64]], shifts: str, rotations: tuple[float, ...], copies: int,
    components: int,
) -> None:
    x, y = digits
    vsv = VirtualSupportVectorSVC(shifts=shifts, rotations_deg=rotations, components=components).fit(x, y)
    first = SVC(C=10.0, gamma="scale", break_ties=True).fit(x if not components else _pca(x, components), y)
    assert vsv.n_first_support_vectors_ == first.support_.shape[0]
    assert vsv.n_virtual_training_ == copies * vsv.n_first_support_vectors_
    assert vsv.svc_.gamma == vsv.gamma_ and vsv.gamma_ == pytest.approx(first._gamma)  # one kernel for both fits
    features = components or 784
    assert vsv.support_vectors_.shape[1] == features
    assert (vsv.projection_ is not None) == bool(components)
    assert np.array_equal(vsv.classes_, np.arange(10))
    assert vsv.predict(x[:20]).shape == (20,) and vsv.decision_function(x[:20]).shape == (20, 10)


def _pca(x: F32, components: int) -> F32:
    from sklearn.decomposition import PCA

    return np.asarray(PCA(components, svd_solver="full").fit_transform(x), dtype=np.float32)


def test_without_a_projection_the_final_svc_is_an_svc_on_the_copies(
    digits: tuple[F32, npt.NDArray[np.int64]],
) -> None:
    x, y = digits
    vsv = VirtualSupportVectorSVC(shifts="4").fit(x, y)
    first = SVC(C=10.0, gamma="scale", break_ties=True).fit(x, y)
    sv, sv_y = x[first.support_], y[first.support_]
    virtual = np.concatenate([sv, *(shift(sv, dy, dx) for dy, dx in SHIFT_SETS["4"])])
    reference = SVC(C=10.0, gamma=vsv.gamma_, break_ties=True).fit(virtual, np.tile(sv_y, 5))
    assert np.array_equal(vsv.predict(x), reference.predict(x))
    np.testing.assert_allclose(vsv.decision_function(x[:50]), reference.decision_function(x[:50]), atol=1e-6)


def test_bad_shapes_and_parameters_are_refused(digits: tuple[F32, npt.NDArray[np.int64]]) -> None:
    x, y = digits
    with pytest.raises(ValueError, match="784 features"):
        VirtualSupportVectorSVC().fit(x[:, :100], y)
    with pytest.raises(ValueError, match="components must be"):
        VirtualSupportVectorSVC(components=784).fit(x, y)
    with pytest.raises(ValueError, match="shifts must be one of"):
        VirtualSupportVectorSVC(shifts="5").fit(x, y)
    with pytest.raises(ValueError, match=r"not fitted|fitted yet"):
        VirtualSupportVectorSVC().predict(x[:1])


def test_rotations_turn_about_the_centre(digits: tuple[F32, npt.NDArray[np.int64]]) -> None:
    x, _ = digits
    assert np.array_equal(rotate(x[:10], 0.0), x[:10])
    turned = rotate(x[:10], 10.0)
    assert not np.allclose(turned, x[:10]) and turned.min() >= 0 and turned.max() <= x[:10].max()
    # A quarter turn about (14, 14) lands on whole pixels: exact, no interpolation. +90 degrees takes the pixel ten
    # to the left of the centre to ten above it (counter-clockwise with rows counted upwards; on screen, where rows
    # go down, that is clockwise) and -90 degrees back.
    grid = np.zeros((1, 784), dtype=np.float32)
    grid[0, 14 * 28 + 4] = 1.0
    quarter = rotate(grid, 90.0)
    assert quarter.reshape(28, 28)[4, 14] == pytest.approx(1.0) and quarter.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(rotate(quarter, -90.0), grid, atol=1e-6)


def test_shift_sets() -> None:
    assert len(virtual_offsets("4")) == 4 and len(virtual_offsets("8")) == 8 and len(virtual_offsets("4x2")) == 8
    assert len(set(virtual_offsets("8x2"))) == 12 and virtual_offsets("") == virtual_offsets("none") == ()
    with pytest.raises(ValueError, match="shifts"):
        virtual_offsets("5")
