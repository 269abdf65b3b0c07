"""Learning "not a digit" and calibrating the verdict on real digits (the bundled sample) and the project's own
non-digits: the digit answered is exactly the one a model without the extra class answers, the thresholds flag the
share of unseen digits they promise, and the model carries them through its blob."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from sklearn.svm import SVC

from digits.modelling import storage
from digits.modelling.model import DigitModel
from digits.modelling.verdicts import NOT_A_DIGIT_LABEL, Verdict, judge_all
from digits.training import candidates, datasets, nondigits, open_set, recipes

RECIPE = candidates.CANDIDATES["svc-grad"].with_params({"gradients": {"components": 32}})


@dataclass
class Fitted:
    model: DigitModel
    plain: SVC
    held_out: np.ndarray
    held_out_labels: np.ndarray
    calibration: dict[str, Any]


@pytest.fixture(scope="module")
def fitted() -> Fitted:
    split = datasets.split(datasets.load_sample(), seed=0, holdout_fraction=0.2)
    model = DigitModel(recipes.estimator(RECIPE, seed=0))
    learned = open_set.fit(model, split.x_train, split.y_train, per_family=300, seed=0)
    assert learned == 5 * 300
    model.calibrate(split.x_hold, split.y_hold)
    calibration = open_set.calibrate(model, split.x_hold, split.y_hold, seed=0)
    # The same features, the same kernel width, the digits alone: what the recipe fits without the extra class.
    features = model.estimator[:-1]
    plain = SVC(**{**RECIPE.estimator_params, "gamma": model.estimator[-1].gamma}).fit(
        features.transform(split.x_train), split.y_train)
    return Fitted(model, plain, split.x_val, split.y_val, calibration)


def test_the_extra_class_leaves_every_digit_answer_as_it_was(fitted: Fitted) -> None:
    assert fitted.model.learned_not_a_digit and NOT_A_DIGIT_LABEL in fitted.model.estimator.classes_
    answers = fitted.model.answer(fitted.held_out)
    plain = fitted.plain.predict(fitted.model.estimator[:-1].transform(fitted.held_out))
    assert np.array_equal(answers.labels, plain)
    assert answers.probabilities.shape == (len(fitted.held_out), 10)
    assert not np.any(answers.labels == NOT_A_DIGIT_LABEL) and not np.any(answers.runner_up == answers.labels)


def test_the_thresholds_flag_about_the_promised_share_of_unseen_digits(fitted: Fitted) -> None:
    model = fitted.model
    assert model.calibrated is not None
    seen = fitted.calibration["digits_verdicts"]
    assert seen["NOT_A_DIGIT"] == pytest.approx(open_set.FLAGGED_SHARE, abs=0.002)
    assert seen["UNSURE"] == pytest.approx(open_set.UNSURE_SHARE, abs=0.003)
    verdicts = judge_all(model.answer(fitted.held_out), open_set.row_marks(fitted.held_out), model.calibrated)
    refused = np.mean([v in (Verdict.NOT_A_DIGIT, Verdict.SEVERAL) for v in verdicts])
    assert refused < 0.03, f"{refused:.1%} of unseen digits refused"


def test_most_unseen_non_digits_are_caught(fitted: Fitted) -> None:
    pool = fitted.held_out
    for family in nondigits.FAMILIES:
        readings = nondigits.readings(nondigits.family_pages(family, 60, (99,), pool))
        rows, found = np.stack([r.row for r in readings]), np.array([r.marks for r in readings])
        caught = open_set.caught(judge_all(fitted.model.answer(rows), found, fitted.model.calibrated))
        assert caught >= 0.8, f"{family}: {caught:.0%} caught"
    assert set(fitted.calibration["non_digits_caught"]) == set(nondigits.FAMILIES)


def test_the_report_has_an_error_reject_curve_and_familiarity_distributions(fitted: Fitted) -> None:
    curve = fitted.calibration["error_reject_curve"]
    assert [p["rejected"] for p in curve] == sorted(p["rejected"] for p in curve)
    assert curve[-1]["error"] <= curve[0]["error"]
    histogram = fitted.calibration["familiarity_histogram"]
    assert set(histogram) == {"edges", "digits", *nondigits.FAMILIES}
    assert all(len(histogram[k]) == len(histogram["edges"]) - 1 for k in histogram if k != "edges")
    assert sum(histogram["digits"]) == pytest.approx(1.0, abs=0.01)


def test_the_thresholds_travel_with_the_model_through_its_blob(fitted: Fitted) -> None:
    loaded = storage.load(storage.dump(fitted.model))
    assert isinstance(loaded, DigitModel)
    loaded.prepare()
    assert loaded.thresholds == fitted.model.thresholds
    assert loaded.describe()["thresholds"] == fitted.model.calibrated.describe()  # type: ignore[union-attr]
