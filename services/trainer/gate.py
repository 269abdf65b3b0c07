"""The promotion gate: whether a job's winner replaces the active model, and why (docs/training.md, "The gate").

The two are compared only on digits neither was fitted on:

- No model active: the winner is activated.
- The active version was validated on exactly this job's validation digits (the same data, the same validation
  rule) and its figures are recorded: those figures are compared with the winner's. Both come from split fits
  judged on digits they were not fitted on.
- Otherwise the active version's blob is verified and loaded as a replica loads it; the job's validation digits it
  was fitted on are dropped (its fingerprints, or for a version registered before they were kept, its data set and
  split rebuilt), and both models are scored on the rest.

Only what cannot be compared is left to an admin: an active version that fails verification or does not load,
whose fitted digits cannot be known, or that was fitted on every validation digit of the job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from digits.errors import DigitsError
from digits.modelling import storage
from digits.modelling.model import ServedModel, ready_to_serve
from digits.platform.registry import FittedDigits, ModelRecord, Registry
from digits.training import datasets, fingerprints
from digits.training.evaluation import beats, score
from digits.training.fingerprints import Fingerprints

log = logging.getLogger(__name__)

ADMIN_MAY_ACTIVATE = "an admin may activate it (digits models activate)"
# How the active version's fitted digits are known (ActiveDigits.known).
FROM_FINGERPRINTS, REBUILT, WHOLE_DATA_SET = "fingerprints", "rebuilt from its data set and split", "its data set"


@dataclass(frozen=True)
class JobDigits:
    """The job's side of the gate: its data and split, and the fingerprints of the split's parts (in row order)."""

    data: datasets.Dataset
    digest: str
    split: datasets.Split
    train: Fingerprints
    holdout: Fingerprints
    validation: Fingerprints

    @classmethod
    def of(cls, data: datasets.Dataset, split: datasets.Split) -> JobDigits:
        return cls(data, data.digest, split, fingerprints.of(split.x_train), fingerprints.of(split.x_hold),
                   fingerprints.of(split.x_val))

    def fitted(self, fitted_on: str) -> FittedDigits:
        """What the version this job registers was fitted on, as the registry stores it: every digit of the job
        for a final fit (``all``), the training share and the holdout for a split fit."""
        parts = (self.train, self.holdout, self.validation) if fitted_on == "all" else (self.train, self.holdout)
        kept = fingerprints.distinct(*parts)
        return FittedDigits({"scheme": fingerprints.SCHEME, "count": len(kept)}, fingerprints.dump(kept))


@dataclass(frozen=True)
class ActiveDigits:
    """The digits the active version was fitted on, and how that is known (FROM_FINGERPRINTS, REBUILT, or
    WHOLE_DATA_SET: a superset, when its record does not say which of its data set's digits it was fitted on)."""

    fingerprints: Fingerprints
    known: str


@dataclass(frozen=True)
class Unseen:
    """Which of the job's validation digits neither model was fitted on (``keep``), and why the others were dropped:
    the active version was fitted on them, or (not the active version) their pixels repeat a digit the job fitted
    on."""

    keep: npt.NDArray[np.bool_]
    by_active: int
    by_job: int

    @property
    def total(self) -> int:
        return len(self.keep)

    @property
    def kept(self) -> int:
        return int(self.keep.sum())


@dataclass(frozen=True)
class Verdict:
    """The gate's decision, its words (the job's outcome, the promotion log's why), and the report's "active"
    entry: the active version's figures on the digits compared, and how many."""

    active: ModelRecord | None
    activate: bool
    why: str
    report: dict[str, Any] | None


class CannotCompare(Exception):
    """Why no digits are known to be unseen by both models."""


def judge(registry: Registry, job: JobDigits, winner: ServedModel, metrics: dict[str, Any], min_gain: float,
          cache_dir: Path) -> Verdict:
    """The gate for ``winner`` (the job's split fit, with its validation ``metrics``) against the active model."""
    version = registry.active_version()
    if version is None:
        return Verdict(None, True, "no model was active", None)
    active = registry.get(version, with_report=False)
    try:
        return _judged(registry, active, job, winner, metrics, min_gain, cache_dir)
    except CannotCompare as reason:
        return Verdict(active, False, f"cannot compare with the active model {version}: {reason}; "
                                      f"{ADMIN_MAY_ACTIVATE}",
                       {"version": version, "same_digits": False, "compared_on": None, "reason": str(reason)})


def validated_on_the_same_digits(active: ModelRecord, job: JobDigits) -> bool:
    """Whether the active version's recorded validation figures are on exactly this job's validation digits."""
    return (active.dataset.get("digest") == job.digest
            and datasets.same_validation_digits(active.split, job.split.spec)
            and {"accuracy", "f1_weighted"} <= active.metrics.keys())


def _judged(registry: Registry, active: ModelRecord, job: JobDigits, winner: ServedModel, metrics: dict[str, Any],
            min_gain: float, cache_dir: Path) -> Verdict:
    """Nothing of the active version is believed before its signature is checked: neither its recorded figures nor
    its fitted digits nor its blob."""
    try:
        record, blob = registry.verify(active.version)
    except DigitsError as error:
        raise CannotCompare(f"it fails verification ({error})") from error
    if validated_on_the_same_digits(record, job):
        better, why = beats(metrics, record.metrics, min_gain)
        report = {"version": record.version, "same_digits": True, "compared_on": "its recorded validation figures",
                  "accuracy": record.metrics["accuracy"], "f1_weighted": record.metrics["f1_weighted"],
                  "digits": len(job.validation)}
        return Verdict(record, better, f"{why} (vs {record.version}, on the same validation digits)", report)
    return _scored(registry, record, blob, job, winner, min_gain, cache_dir)


def _scored(registry: Registry, record: ModelRecord, blob: bytes, job: JobDigits, winner: ServedModel,
            min_gain: float, cache_dir: Path) -> Verdict:
    """Score both models on the job's validation digits neither was fitted on (CannotCompare when none is known)."""
    version = record.version
    fitted = fitted_digits(registry, record, job, cache_dir)
    left = unseen(job, fitted.fingerprints)
    if not left.kept:
        raise CannotCompare(f"of this job's {left.total:,} validation digits, none is unseen by both models "
                            f"({dropped(version, left, fitted.known)})")
    pixels, labels = job.split.x_val[left.keep], job.split.y_val[left.keep]
    try:  # only now, verified and needed, is the blob unpickled
        theirs = score(ready_to_serve(storage.load(blob), f"model {version}"), pixels, labels)
    except Exception as error:  # a verified blob that no longer loads must not sink the job: its version is kept
        log.exception("the active model could not be scored", extra={"version": version})
        raise CannotCompare(f"its blob does not load and serve here ({type(error).__name__}: {error})") from error
    ours = score(winner, pixels, labels)
    better, why = beats(ours, theirs, min_gain, on=where(version, left, fitted.known))
    report = {"version": version, "same_digits": False, "compared_on": "validation digits neither model was fitted on",
              **theirs, "winner": ours, "digits": left.kept, "validation": left.total,
              "dropped": {"fitted_by_active": left.by_active, "repeat_job_digits": left.by_job},
              "fitted_digits": fitted.known}
    return Verdict(record, better, why, report)


def fitted_digits(registry: Registry, record: ModelRecord, job: JobDigits, cache_dir: Path) -> ActiveDigits:
    """The digits the active version (``record``, verified) was fitted on: its fingerprints; for a version
    registered before they were kept, rebuilt from its data set (the job's, or loaded by its source when the
    digest matches) and its split, or that whole data set when the record does not say which digits."""
    try:
        stored = registry.fitted_digits(record)
    except DigitsError as error:
        raise CannotCompare(str(error)) from error
    if stored is not None:
        if record.fitted_digits.get("scheme") != fingerprints.SCHEME:
            raise CannotCompare(f"its fitted digits' fingerprints are of another kind "
                                f"({record.fitted_digits.get('scheme')!r})")
        return ActiveDigits(fingerprints.load(stored), FROM_FINGERPRINTS)
    data = _data_set_of(record, job, cache_dir)
    parts = datasets.fitted_digits(data, record.split, record.fitted_on)
    if parts is None:
        return ActiveDigits(fingerprints.distinct(fingerprints.of(data.pixels)), WHOLE_DATA_SET)
    return ActiveDigits(fingerprints.distinct(*(fingerprints.of(p) for p in parts)), REBUILT)


def _data_set_of(record: ModelRecord, job: JobDigits, cache_dir: Path) -> datasets.Dataset:
    digest, source = record.dataset.get("digest"), str(record.dataset.get("source", ""))
    unknown = "it predates the fingerprints of fitted digits, and "
    if not digest or not source:
        raise CannotCompare(unknown + "its record does not name its data set, so which digits it was fitted on is "
                            "unknown")
    if digest == job.digest:
        return job.data
    try:
        data = datasets.load_source(source, cache_dir=cache_dir)
    except (DigitsError, OSError, ValueError) as error:
        raise CannotCompare(f"{unknown}its data set ({source}) cannot be loaded here ({error}), so which digits it "
                            "was fitted on is unknown") from error
    if data.digest != digest:
        raise CannotCompare(f"{unknown}{source} here is not the data set it was fitted on (another digest), so "
                            "which digits it was fitted on is unknown")
    return data


def unseen(job: JobDigits, active: Fingerprints) -> Unseen:
    """The job's validation digits the active version was not fitted on and whose pixels repeat no digit the job
    fitted on (its training share and holdout), so that neither model was fitted on them."""
    by_active = fingerprints.among(job.validation, active)
    by_job = fingerprints.among(job.validation, fingerprints.distinct(job.train, job.holdout)) & ~by_active
    return Unseen(~(by_active | by_job), int(by_active.sum()), int(by_job.sum()))


def where(version: str, left: Unseen, known: str) -> str:
    """Which digits the comparison is on, in the gate's words."""
    return f"on the {left.kept:,} validation digits neither model was fitted on ({dropped(version, left, known)})"


def dropped(version: str, left: Unseen, known: str) -> str:
    """How many of the job's validation digits were dropped, and why."""
    fitted = "may have been fitted on" if known == WHOLE_DATA_SET else "was fitted on"
    if not left.by_active and not left.by_job:
        words = f"{version} {fitted} none of the job's {left.total:,}"
    else:
        words = f"{left.by_active + left.by_job:,} of the job's {left.total:,} dropped: "
        if not left.by_job:
            words += f"{version} {fitted} them"
        elif not left.by_active:
            words += "they repeat digits this job was fitted on"
        else:
            words += (f"{version} {fitted} {left.by_active:,} of them, {left.by_job:,} repeat digits this job was "
                      "fitted on")
    if known == WHOLE_DATA_SET:
        words += f"; its record does not say which digits of its data set {version} was fitted on, so all of them count"
    elif known == REBUILT:
        words += f"; {version}'s fitted digits {REBUILT}, as it predates their fingerprints"
    return words
