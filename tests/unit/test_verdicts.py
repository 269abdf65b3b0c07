"""The verdict from a model's scores, a version's thresholds and the marks of ink (pure logic)."""

from __future__ import annotations

import numpy as np
import pytest

from digits.modelling.verdicts import Answers, Thresholds, Verdict, judge, judge_all

THRESHOLDS = Thresholds(familiarity=0.0, margin=0.5)


def answers(familiarity: float, margin: float) -> Answers:
    probabilities = np.array([[0.05, 0.6, 0.3] + [0.05 / 7] * 7], dtype=np.float32)
    return Answers(np.array([1]), probabilities, np.array([2]), np.array([margin]), np.array([familiarity]))


@pytest.mark.parametrize(("familiarity", "margin", "marks", "expected"), [
    (1.0, 1.0, 1, Verdict.DIGIT),
    (1.0, 0.4, 1, Verdict.UNSURE),
    (-0.1, 1.0, 1, Verdict.NOT_A_DIGIT),
    (-0.1, 0.4, 1, Verdict.NOT_A_DIGIT),  # not a digit comes before unsure
    (-0.1, 0.4, 2, Verdict.SEVERAL),  # several comes first: two digits are unlike one
    (1.0, 1.0, 0, Verdict.DIGIT),
    (0.0, 0.5, 1, Verdict.DIGIT),  # at a threshold is not below it
])
def test_the_verdict_follows_marks_then_familiarity_then_margin(familiarity: float, margin: float, marks: int,
                                                                expected: Verdict) -> None:
    assert judge(answers(familiarity, margin), 0, marks, THRESHOLDS) == expected


def test_without_thresholds_only_several_or_digit() -> None:
    assert judge(answers(-5.0, 0.0), 0, 1, None) == Verdict.DIGIT
    assert judge(answers(-5.0, 0.0), 0, 2, None) == Verdict.SEVERAL


def test_a_model_without_scores_names_the_second_most_probable_digit_as_runner_up() -> None:
    plain = Answers.from_probabilities(np.array([1, 9]), np.array(
        [[0.05, 0.6, 0.3] + [0.05 / 7] * 7, [0.0] * 3 + [0.2] + [0.0] * 5 + [0.8]], dtype=np.float32))
    assert plain.runner_up.tolist() == [2, 3] and plain.margin is None and plain.familiarity is None
    assert judge_all(plain, np.array([1, 1]), THRESHOLDS) == [Verdict.DIGIT, Verdict.DIGIT]


def test_rows_of_shared_answers_keep_their_scores() -> None:
    both = Answers(np.array([1, 7]), np.zeros((2, 10), np.float32), np.array([2, 1]), np.array([0.1, 2.0]),
                   np.array([3.0, -1.0]))
    second = both.rows(1, 2)
    assert (second.labels.tolist(), second.runner_up.tolist()) == ([7], [1])
    assert second.margin is not None and second.familiarity is not None
    assert (second.margin.tolist(), second.familiarity.tolist()) == ([2.0], [-1.0])
