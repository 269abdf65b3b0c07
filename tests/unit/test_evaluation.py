"""Evaluation figures, the promotion gate's rule and the confusions in words (pure logic, on a stub model)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from digits.modelling import storage
from digits.modelling.model import Floats, Labels, ServedModel
from digits.training.evaluation import beats, confusion_sentences, evaluate


class Answers(ServedModel):
    """A served model that reads each row's first pixel as its digit."""

    def predict(self, pixels: Floats) -> tuple[Labels, Floats]:
        labels = pixels[:, 0].astype(np.int64)
        return labels, np.eye(10, dtype=np.float32)[labels]

    def describe(self) -> dict[str, Any]:
        return {"estimator": "Answers", "n_support_vectors": 3}


def test_evaluation_figures() -> None:
    truth = np.repeat(np.arange(10, dtype=np.int64), 10)  # ten of each digit
    read = truth.copy()
    read[[40, 41, 42]] = 9  # three 4s read as 9
    read[70] = 1  # one 7 read as 1
    pixels = np.zeros((100, 784), dtype=np.float32)
    pixels[:, 0] = read
    model = Answers()
    metrics = evaluate(model, pixels, truth)
    assert metrics["accuracy"] == pytest.approx(0.96)
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 100 and np.trace(matrix) == 96
    assert matrix[4, 9] == 3 and matrix[7, 1] == 1
    assert metrics["f1_per_class"][0] == 1.0 and metrics["f1_per_class"][4] == pytest.approx(2 * 0.7 / 1.7)
    assert 0.95 < metrics["f1_weighted"] < 0.97
    assert metrics["confusions"] == ["100% of misread 4s were read as 9 (3 of 3)",
                                     "100% of misread 7s were read as 1 (1 of 1)"]
    assert metrics["validation_size"] == 100 and metrics["predict_ms_per_image"] >= 0
    assert metrics["serialized_bytes"] == len(storage.dump(model))
    assert metrics["estimator"] == "Answers" and metrics["n_support_vectors"] == 3


@pytest.mark.parametrize(
    ("candidate", "active", "min_gain", "wins"),
    [
        ({"accuracy": 0.95, "f1_weighted": 0.95}, {"accuracy": 0.94, "f1_weighted": 0.94}, 0.0, True),
        ({"accuracy": 0.95, "f1_weighted": 0.95}, {"accuracy": 0.95, "f1_weighted": 0.94}, 0.0, False),
        ({"accuracy": 0.96, "f1_weighted": 0.93}, {"accuracy": 0.95, "f1_weighted": 0.94}, 0.0, False),
        ({"accuracy": 0.95, "f1_weighted": 0.95}, {"accuracy": 0.94, "f1_weighted": 0.94}, 0.02, False),
    ],
)
def test_gate_needs_strictly_better_accuracy_by_the_margin_and_no_worse_f1(
    candidate: dict[str, float], active: dict[str, float], min_gain: float, wins: bool
) -> None:
    won, why = beats(candidate, active, min_gain)
    assert won is wins
    assert f"{candidate['accuracy']:.4f}" in why and f"{active['accuracy']:.4f}" in why
    assert why.endswith("on the same split")
    assert beats(candidate, active, min_gain, on="on the 7 digits neither saw") == (
        wins, why.removesuffix("on the same split") + "on the 7 digits neither saw")


def test_confusions_are_worded_most_frequent_first() -> None:
    matrix = np.eye(10, dtype=np.int64) * 100
    matrix[4, 9], matrix[4, 1], matrix[7, 2] = 6, 2, 3
    assert confusion_sentences(matrix, most=2) == ["75% of misread 4s were read as 9 (6 of 8)",
                                                   "100% of misread 7s were read as 2 (3 of 3)"]
