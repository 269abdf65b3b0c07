"""Teaching a model what is not a digit, and calibrating its verdict's thresholds.

A recipe with the ``not_a_digit`` parameter learns an eleventh class from the project's own non-digits
(``digits.training.nondigits``): its feature steps are fitted on the digits alone, its SVC on the digits and the
non-digits, with the kernel width the digits alone would give. libsvm fits each pair of classes on those two
classes only, so every digit-against-digit decision, and therefore the ``digit`` answered, is exactly what the
recipe without the extra class answers; the decision of the answered digit against "not a digit" is the
familiarity score.

The thresholds are calibrated on digits and non-digits the model was not fitted on (the job's holdout, and
non-digits drawn with another seed, their two-digit pages made of holdout digits): ``familiarity`` flags
``FLAGGED_SHARE`` of the digits as not a digit, ``margin`` then leaves ``UNSURE_SHARE`` of them unsure. What the
calibration saw goes into the version's record: the shares, the non-digits caught per family, the error-reject
curve and the familiarity distributions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from digits.modelling import marks
from digits.modelling.model import DigitModel
from digits.modelling.verdicts import NOT_A_DIGIT_LABEL, Answers, Thresholds, Verdict, judge_all
from digits.training import nondigits

log = logging.getLogger(__name__)

Rows = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]

# The share of unseen digits a version's thresholds are set to call "not a digit", and then "unsure". Together
# with the rare "several" (two marks of ink side by side), they keep the digits refused under 1% and the digits
# not answered DIGIT under 3% (docs/model-quality.md, "Honest answers").
FLAGGED_SHARE: Final = 0.0075
UNSURE_SHARE: Final = 0.015
# Non-digits per family to calibrate and report on: drawn with their own seed, never fitted on.
CALIBRATION_PER_FAMILY: Final = 200
# At most a ninth of the training digits per family, so that on a small data set the non-digits do not outnumber
# the digits.
FIT_SHARE: Final = 9
# Seeds of the non-digits by purpose, so that what is fitted on, calibrated on and measured on never overlap.
FIT_PAGES: Final = 1
CALIBRATION_PAGES: Final = 2
REJECT_SHARES: Final = (0.0, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1)


def non_digits(per_family: int, seed: Sequence[int], pool: Rows) -> dict[str, tuple[Rows, npt.NDArray[np.int64]]]:
    """Each family's rows and marks: ``per_family`` pages each, as inference reads them."""
    result = {}
    for family in nondigits.FAMILIES:
        readings = nondigits.readings(nondigits.family_pages(family, per_family, seed, pool))
        result[family] = (np.stack([r.row for r in readings]), np.array([r.marks for r in readings], dtype=np.int64))
    return result


def fit(model: DigitModel, pixels: Rows, labels: Labels, per_family: int, seed: int, pool: Rows | None = None) -> int:
    """Fit ``model``'s pipeline on the digits plus its non-digits; returns how many non-digits it learned from.

    The non-digits depend on ``pool`` (the digits their two-digit pages are made of; ``pixels`` by default) and its
    size: a final fit given the split fit's training digits learns from the very same non-digits, drawn once."""
    rubbish = _fit_pages(min(per_family, len(pixels if pool is None else pool) // FIT_SHARE), seed,
                         pixels if pool is None else pool)
    pipeline = model.estimator
    features = pipeline[:-1].fit(pixels, labels)  # the steps are shared: fitted in place, on digits alone
    digits_features = features.transform(pixels)
    svc = pipeline[-1]
    if svc.gamma == "scale":  # what the digits alone give: the digit pairs stay exactly as without the extra class
        svc.set_params(gamma=1.0 / (digits_features.shape[1] * float(digits_features.var())))
    svc.fit(np.concatenate([digits_features, features.transform(rubbish)]),
            np.concatenate([labels, np.full(len(rubbish), NOT_A_DIGIT_LABEL, dtype=labels.dtype)]))
    return len(rubbish)


_drawn: dict[tuple[int, int, int], tuple[Rows, Rows]] = {}


def _fit_pages(per_family: int, seed: int, pool: Rows) -> Rows:
    """The non-digits to fit on, remembered for the last pool (an array kept alive with them, so its id holds)."""
    key = (per_family, seed, id(pool))
    if key not in _drawn:
        _drawn.clear()
        pages = non_digits(per_family, (FIT_PAGES, seed), pool)
        _drawn[key] = (pool, np.concatenate([rows for rows, _ in pages.values()]))
    return _drawn[key][1]


def calibrate(model: DigitModel, pixels: Rows, labels: Labels, seed: int) -> dict[str, Any]:
    """Set ``model.calibrated`` from digits it was not fitted on (and fresh non-digits); returns what was seen."""
    answers = model.answer(pixels)
    assert answers.familiarity is not None and answers.margin is not None, "the model scores no verdict"
    familiarity = float(np.quantile(answers.familiarity, FLAGGED_SHARE))
    known = answers.familiarity >= familiarity
    margin = float(np.quantile(answers.margin[known], UNSURE_SHARE / (1 - FLAGGED_SHARE)))
    model.calibrated = Thresholds(familiarity=familiarity, margin=margin)
    pages = non_digits(CALIBRATION_PER_FAMILY, (CALIBRATION_PAGES, seed), pixels)
    facts = {"thresholds": model.calibrated.describe(), "digits": len(labels),
             "digits_verdicts": shares(judge_all(answers, row_marks(pixels), model.calibrated)),
             "error_among_digit": error_among(answers, labels, row_marks(pixels), model.calibrated),
             "error_reject_curve": error_reject_curve(answers, labels),
             "non_digits_per_family": CALIBRATION_PER_FAMILY,
             "non_digits_caught": {family: caught(judge_all(model.answer(rows), family_marks, model.calibrated))
                                   for family, (rows, family_marks) in pages.items()},
             "familiarity_histogram": histogram(answers.familiarity, {
                 family: model.answer(rows).familiarity for family, (rows, _) in pages.items()})}
    log.info("verdict thresholds calibrated", extra={"thresholds": facts["thresholds"],
                                                    "caught": facts["non_digits_caught"]})
    return facts


def judged_on(model: DigitModel, pixels: Rows, labels: Labels) -> dict[str, Any]:
    """The verdicts' shares on these digits and the error of those answered DIGIT."""
    answers, found = model.answer(pixels), row_marks(pixels)
    assert model.calibrated is not None
    return {"digits": len(labels), "verdicts": shares(judge_all(answers, found, model.calibrated)),
            "error_among_digit": error_among(answers, labels, found, model.calibrated),
            "error": float(np.mean(answers.labels != labels))}


def row_marks(pixels: Rows) -> npt.NDArray[np.int64]:
    """Digit-sized marks in each 28x28 row, as inference counts them for pixel inputs."""
    return np.array([marks.digit_sized(row.reshape(28, 28)) for row in pixels], dtype=np.int64)


def shares(verdicts: Sequence[Verdict]) -> dict[str, float]:
    counts = {verdict.value: 0 for verdict in Verdict}
    for verdict in verdicts:
        counts[verdict.value] += 1
    return {name: count / max(1, len(verdicts)) for name, count in counts.items()}


def caught(verdicts: Sequence[Verdict]) -> float:
    """The share answered NOT_A_DIGIT or SEVERAL: non-digits the verdict did not pass off as one digit."""
    return sum(v in (Verdict.NOT_A_DIGIT, Verdict.SEVERAL) for v in verdicts) / max(1, len(verdicts))


def error_among(answers: Answers, labels: Labels, row_marks: npt.NDArray[np.int64],
                thresholds: Thresholds) -> float:
    """The error of the digits answered DIGIT."""
    said_digit = np.array([v == Verdict.DIGIT for v in judge_all(answers, row_marks, thresholds)])
    if not said_digit.any():
        return 0.0
    return float(np.mean(answers.labels[said_digit] != labels[said_digit]))


def error_reject_curve(answers: Answers, labels: Labels) -> list[dict[str, float]]:
    """The error among the digits kept when the smallest margins are rejected, for shares ``REJECT_SHARES``."""
    assert answers.margin is not None
    order = np.argsort(answers.margin, kind="stable")
    wrong = (answers.labels != labels)[order]
    points = []
    for share in REJECT_SHARES:
        rejected = round(share * len(labels))
        kept = wrong[rejected:]
        points.append({"rejected": rejected / max(1, len(labels)), "error": float(kept.mean()) if len(kept) else 0.0})
    return points


def histogram(digits: npt.NDArray[np.float64], others: dict[str, npt.NDArray[np.float64] | None],
              bins: int = 24) -> dict[str, Any]:
    """Shares of the digits' and each family's familiarity scores in common bins."""
    values = [digits, *(v for v in others.values() if v is not None)]
    low, high = (float(np.quantile(np.concatenate(values), q)) for q in (0.005, 0.995))
    edges = np.linspace(low, high, bins + 1)

    def shares_in(scores: npt.NDArray[np.float64]) -> list[float]:
        counts, _ = np.histogram(np.clip(scores, low, high), edges)
        return [round(float(c) / max(1, len(scores)), 4) for c in counts]

    return {"edges": [round(float(e), 4) for e in edges], "digits": shares_in(digits),
            **{family: shares_in(v) for family, v in others.items() if v is not None}}
