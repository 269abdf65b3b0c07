"""The served model: fast path agrees with scikit-learn, probabilities are calibrated and consistent."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from digits.modelling.model import DigitModel
from digits.training import candidates, datasets, recipes


@pytest.fixture(scope="module")
def fitted(mnist_sample: datasets.Dataset) -> tuple[DigitModel, datasets.Split]:
    split = datasets.split(mnist_sample, seed=0, validation_fraction=0.2, limit=1000)
    model = DigitModel(recipes.estimator(candidates.CANDIDATES["svc"], seed=0))
    model.estimator.fit(split.x_train, split.y_train)
    model.calibrate(split.x_hold, split.y_hold)
    return model, split


def test_fast_path_answers_like_scikit_learn(fitted: tuple[DigitModel, datasets.Split]) -> None:
    model, split = fitted
    slow_labels, slow_probabilities = model.predict(split.x_val)
    model.prepare()
    assert model.fast
    fast_labels, fast_probabilities = model.predict(split.x_val)
    assert np.array_equal(fast_labels, model.estimator.predict(split.x_val))
    assert np.array_equal(fast_labels, slow_labels)
    assert np.allclose(fast_probabilities, slow_probabilities, atol=1e-4)


def test_probabilities_are_calibrated_and_agree_with_the_digit(fitted: tuple[DigitModel, datasets.Split]) -> None:
    model, split = fitted
    assert model.temperature is not None and model.temperature > 0
    labels, probabilities = model.predict(split.x_val)
    assert probabilities.shape == (len(labels), 10)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (np.argmax(probabilities, axis=1) == labels).mean() > 0.99
    # Calibrated: confident answers are right more often than unsure ones.
    confidence = probabilities[np.arange(len(labels)), labels]
    right = labels == split.y_val
    assert right[confidence > np.median(confidence)].mean() > right[confidence <= np.median(confidence)].mean()


def test_pickle_drops_the_fast_path(fitted: tuple[DigitModel, datasets.Split]) -> None:
    model, split = fitted
    model.prepare()
    restored = pickle.loads(pickle.dumps(model))
    assert not restored.fast
    restored.prepare()
    assert np.array_equal(restored.predict(split.x_val[:50])[0], model.predict(split.x_val[:50])[0])
