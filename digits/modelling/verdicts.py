"""What an answer means: a digit, two digits too close to call, not a digit at all, or several digits.

A model answers every input with a digit and ten probabilities; those are calibrated among the ten digits, so they
cannot say "none of these". The verdict adds what they cannot, from scores the model computes with its answer and
thresholds the trainer calibrated for that very version (``digits.training.open_set``):

- ``SEVERAL``: two or more digit-sized marks of ink stand side by side (``digits.modelling.marks``);
- ``NOT_A_DIGIT``: the model's decision for its digit against the "not a digit" class it learned from the project's
  own non-digits (``familiarity``) is below the version's threshold;
- ``UNSURE``: its decision between the digit and the runner-up (``margin``) is below the version's threshold;
- ``DIGIT`` otherwise.

A version without calibrated thresholds (an ensemble, a recipe without the "not a digit" class, a model stored
before verdicts existed) answers ``DIGIT`` or ``SEVERAL`` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from digits.mnist import N_CLASSES

# The label of the non-digits a recipe may learn from: the class after the ten digits. It is never answered as a
# digit; the decision against it is the familiarity score.
NOT_A_DIGIT_LABEL: Final = N_CLASSES

Floats = npt.NDArray[np.float32]
Scores = npt.NDArray[np.float64]
Labels = npt.NDArray[np.int64]


class Verdict(StrEnum):
    DIGIT = "DIGIT"
    UNSURE = "UNSURE"
    NOT_A_DIGIT = "NOT_A_DIGIT"
    SEVERAL = "SEVERAL"


@dataclass(frozen=True)
class Thresholds:
    """A version's calibrated thresholds: below ``familiarity``, not a digit; below ``margin``, unsure."""

    familiarity: float
    margin: float

    def describe(self) -> dict[str, float]:
        return {"familiarity": self.familiarity, "margin": self.margin}


@dataclass(frozen=True)
class Answers:
    """A model's answers for n rows: the digit, ten probabilities, the runner-up digit, and (for models that
    compute them) the decision values behind the verdict."""

    labels: Labels
    probabilities: Floats
    runner_up: Labels
    margin: Scores | None = None
    familiarity: Scores | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def rows(self, start: int, stop: int) -> Answers:
        """The answers of rows ``start`` to ``stop``: how a shared model call is handed back to its callers."""
        part = slice(start, stop)
        return Answers(self.labels[part], self.probabilities[part], self.runner_up[part],
                       None if self.margin is None else self.margin[part],
                       None if self.familiarity is None else self.familiarity[part])

    @classmethod
    def from_probabilities(cls, labels: Labels, probabilities: Floats) -> Answers:
        """Answers of a model that computes no decision values: the runner-up is the second most probable digit."""
        masked = np.array(probabilities, dtype=np.float32, copy=True)
        masked[np.arange(len(labels)), labels] = -np.inf
        return cls(labels, probabilities, np.argmax(masked, axis=1).astype(np.int64))


def judge(answers: Answers, index: int, marks: int, thresholds: Thresholds | None) -> Verdict:
    """The verdict on row ``index`` of ``answers``, whose input held ``marks`` digit-sized marks of ink."""
    if marks >= 2:
        return Verdict.SEVERAL
    if thresholds is None:
        return Verdict.DIGIT
    if answers.familiarity is not None and answers.familiarity[index] < thresholds.familiarity:
        return Verdict.NOT_A_DIGIT
    if answers.margin is not None and answers.margin[index] < thresholds.margin:
        return Verdict.UNSURE
    return Verdict.DIGIT


def judge_all(answers: Answers, marks: npt.NDArray[Any], thresholds: Thresholds | None) -> list[Verdict]:
    return [judge(answers, index, int(marks[index]), thresholds) for index in range(len(answers))]
