"""Fit, evaluate and compare a job's candidates on one shared split.

Base candidates are fitted on ``split.x_train`` and calibrated on the holdout; ensembles are made from the
``top_n`` base models ranked by holdout accuracy; every model is judged on the validation digits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from digits.modelling import augment
from digits.modelling.ensembles import BlendEnsemble, VoteEnsemble
from digits.modelling.model import DigitModel, ServedModel
from digits.training import open_set, recipes
from digits.training.candidates import Candidate
from digits.training.datasets import Split
from digits.training.evaluation import evaluate

log = logging.getLogger(__name__)

Starting = Callable[[int, Candidate], None]  # (1-based index, candidate): called before each fit


@dataclass
class Fitted:
    """A candidate's outcome: its model and figures, or why it failed."""

    candidate: Candidate
    model: ServedModel | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.model is not None

    def row(self) -> dict[str, Any]:
        """One line of the comparison table."""
        keys = ("accuracy", "f1_weighted", "holdout_accuracy", "fit_seconds", "predict_ms_per_image",
                "serialized_bytes", "n_support_vectors")
        row = {"name": self.candidate.name, "kind": self.candidate.kind, "params": dict(self.candidate.params)}
        row.update({k: self.metrics[k] for k in keys if k in self.metrics})
        if self.error:
            row["error"] = self.error
        return row


def fit_base(candidate: Candidate, split: Split, seed: int) -> Fitted:
    model, fit_seconds, train_size = _fitted(candidate, split.x_train, split.y_train, seed)
    model.calibrate(split.x_hold, split.y_hold)
    calibration = open_set.calibrate(model, split.x_hold, split.y_hold, seed) if model.learned_not_a_digit else None
    judged = _judged(candidate, model, split, fit_seconds, train_size=train_size)
    if calibration is not None:
        judged.metrics["verdicts"] = {"calibration": calibration,
                                      "validation": open_set.judged_on(model, split.x_val, split.y_val)}
    return judged


def fit_final(split_fit: Fitted, split: Split, seed: int) -> tuple[DigitModel, dict[str, Any]]:
    """The split's winner refitted on every digit of the job (training share, holdout and validation).

    No digit is left to calibrate on, so the final model keeps the split fit's softmax temperature (a property of
    the recipe's score scale). Returns the model and what the record says about the fit: how many digits, how
    long, and how often it answers the validation digits as the split fit did (it has now seen them: a sanity
    check, never a figure of merit).
    """
    assert isinstance(split_fit.model, DigitModel), "only base candidates are refitted"
    pixels = np.concatenate([split.x_train, split.x_hold, split.x_val])
    labels = np.concatenate([split.y_train, split.y_hold, split.y_val])
    model, fit_seconds, train_size = _fitted(split_fit.candidate, pixels, labels, seed, pool=split.x_train)
    # Both are properties of the recipe's score scale, which more digits barely move (docs/model-quality.md).
    model.temperature = split_fit.model.temperature
    model.calibrated = split_fit.model.calibrated
    model.prepare()
    before, _ = split_fit.model.predict(split.x_val)
    after, _ = model.predict(split.x_val)
    facts = {"train_size": train_size, "fit_seconds": round(fit_seconds, 3),
             "validation_agreement_with_split_fit": float(np.mean(before == after))}
    described = model.describe()
    if "n_support_vectors" in described:
        facts["n_support_vectors"] = int(described["n_support_vectors"])
    log.info("final fit done", extra={"candidate": split_fit.candidate.name, **facts})
    return model, facts


def _fitted(candidate: Candidate, pixels: np.ndarray, labels: np.ndarray, seed: int,
            pool: np.ndarray | None = None) -> tuple[DigitModel, float, int]:
    """A base candidate's pipeline fitted on these digits (and the shifted copies it asks for); with a "not a digit"
    class, on non-digits whose two-digit pages come from ``pool`` (these digits by default)."""
    if candidate.shifts:
        pixels, labels = augment.with_shifts(pixels, labels, augment.one_pixel_shifts(candidate.shifts))
    started = time.perf_counter()
    model = DigitModel(recipes.estimator(candidate, seed))
    if candidate.not_a_digit:
        open_set.fit(model, pixels, labels, candidate.not_a_digit, seed, pool)
    else:
        model.estimator.fit(pixels, labels)
    return model, time.perf_counter() - started, len(labels)


def fit_ensemble(candidate: Candidate, bases: Sequence[Fitted], split: Split, seed: int) -> Fitted:
    chosen = rank(bases)[: candidate.top_n]
    members = [b.model for b in chosen]
    if len(members) < 2:
        raise ValueError(f"{candidate.name} needs at least two fitted base models, {len(members)} succeeded")
    assert all(isinstance(m, DigitModel) for m in members)
    started = time.perf_counter()
    model: ServedModel
    if candidate.kind == "vote":
        model = VoteEnsemble(members, soft=candidate.name == "vote-soft")  # type: ignore[arg-type]
    else:
        model = BlendEnsemble.fit(members, recipes.estimator(candidate, seed), split.x_hold, split.y_hold)  # type: ignore[arg-type]
    # Producing an ensemble costs its members' fits too.
    fit_seconds = time.perf_counter() - started + sum(b.metrics["fit_seconds"] for b in chosen)
    judged = _judged(candidate, model, split, fit_seconds, train_size=len(split.y_hold))
    judged.metrics["members"] = [b.candidate.name for b in chosen]
    del judged.metrics["holdout_accuracy"]  # the blender was fitted on the holdout: not a fair figure
    return judged


def rank(fitted: Sequence[Fitted]) -> list[Fitted]:
    """Successful base models, best on the holdout first (never on validation: that judges the ensembles)."""
    return sorted((f for f in fitted if f.ok), key=lambda f: -f.metrics["holdout_accuracy"])


def winner(fitted: Sequence[Fitted]) -> Fitted | None:
    """The most accurate on validation; weighted F1, then the smaller model, break ties."""
    ok = [f for f in fitted if f.ok]
    if not ok:
        return None
    return max(ok, key=lambda f: (f.metrics["accuracy"], f.metrics["f1_weighted"], -f.metrics["serialized_bytes"]))


def compare(candidates: Sequence[Candidate], split: Split, seed: int, starting: Starting) -> list[Fitted]:
    """Fit every candidate in order (bases first); a failing candidate is recorded and skipped."""
    fitted: list[Fitted] = []
    for index, candidate in enumerate(candidates, start=1):
        starting(index, candidate)
        bases = [f for f in fitted if f.candidate.kind == "base"]
        fitted.append(attempt(candidate, partial(fit_one, candidate, bases, split, seed)))
    return fitted


def fit_one(candidate: Candidate, bases: Sequence[Fitted], split: Split, seed: int) -> Fitted:
    return fit_base(candidate, split, seed) if candidate.kind == "base" else fit_ensemble(candidate, bases, split, seed)


def attempt(candidate: Candidate, fit: Callable[[], Fitted]) -> Fitted:
    try:
        return fit()
    except Exception as error:  # one bad candidate must not sink the comparison
        log.exception("candidate failed", extra={"candidate": candidate.name})
        return Fitted(candidate, error=f"{type(error).__name__}: {error}")


def _judged(candidate: Candidate, model: ServedModel, split: Split, fit_seconds: float, train_size: int) -> Fitted:
    model.prepare()
    metrics = evaluate(model, split.x_val, split.y_val)
    holdout_labels, _ = model.predict(split.x_hold)
    metrics.update(fit_seconds=round(fit_seconds, 3), train_size=train_size,
                   holdout_accuracy=float(np.mean(holdout_labels == split.y_hold)))
    log.info("candidate judged", extra={"candidate": candidate.name, "accuracy": metrics["accuracy"],
                                        "fit_seconds": metrics["fit_seconds"]})
    return Fitted(candidate, model, metrics)
