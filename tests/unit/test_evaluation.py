"""The promotion gate's rule and the confusions in words (pure logic)."""

from __future__ import annotations

import numpy as np
import pytest

from digits.evaluation import beats, confusion_sentences


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


def test_confusions_are_worded_most_frequent_first() -> None:
    matrix = np.eye(10, dtype=np.int64) * 100
    matrix[4, 9], matrix[4, 1], matrix[7, 2] = 6, 2, 3
    assert confusion_sentences(matrix, most=2) == ["75% of misread 4s were read as 9 (6 of 8)",
                                                   "100% of misread 7s were read as 2 (3 of 3)"]
