"""The model as the registry stores it and inference serves it.

Whatever the trainer registers is a ``ServedModel``: a single fitted pipeline (``DigitModel``) or an ensemble of
them (``digits.modelling.ensembles``). ``ready_to_serve`` is the one check every replica and the trainer run on a model
just unpickled, before it may answer.

A ``DigitModel`` is a fitted scikit-learn pipeline over 784 pixels (0..255, light ink on dark) plus,
for estimators that only vote (an SVC without ``probability=True``), a softmax temperature over their
vote scores, fitted on held-out digits. That gives calibrated probabilities for the price of one
scalar fit instead of libsvm's five-fold refit.

Serving goes through the fast exact path (``digits.modelling.fastsvc``) where the pipeline ends in an RBF SVC,
and through the estimator's own methods otherwise.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from digits.errors import NotServable
from digits.mnist import N_CLASSES, N_PIXELS
from digits.modelling import storage
from digits.modelling.verdicts import NOT_A_DIGIT_LABEL, Answers, Thresholds

Floats = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]


def scale_pixels(pixels: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """0..255 -> 0..1: the production recipe's first step (module level so that it pickles)."""
    return pixels / np.float32(255.0)


class ServedModel(ABC):
    """What inference can serve: digits and ten probabilities for rows of 784 pixels (0..255)."""

    @abstractmethod
    def predict(self, pixels: Floats) -> tuple[Labels, Floats]: ...

    def answer(self, pixels: Floats) -> Answers:
        """``predict`` with the runner-up and, for models that compute them, the scores behind the verdict."""
        return Answers.from_probabilities(*self.predict(pixels))

    @property
    def thresholds(self) -> Thresholds | None:
        """The verdict's thresholds, calibrated for this model when it was fitted; None: it has none."""
        return None

    def prepare(self) -> None:
        """Build derived serving state (the fast path) after unpickling; the default has none."""
        return None

    @property
    def fast(self) -> bool:
        return False

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Facts about the fitted model worth recording."""


def ready_to_serve(model: object, name: str) -> ServedModel:
    """Check that ``model`` is something inference serves, build its fast path and run one prediction."""
    if not isinstance(model, ServedModel):
        raise NotServable(f"{name} is a {type(model).__name__}, which inference cannot serve")
    model.prepare()
    labels, probabilities = model.predict(np.zeros((1, N_PIXELS), dtype=np.float32))
    if np.shape(labels) != (1,) or np.shape(probabilities) != (1, N_CLASSES) or not np.isfinite(probabilities).all():
        raise NotServable(f"{name} answered a warm-up call with labels {np.shape(labels)} and probabilities "
                          f"{np.shape(probabilities)}")
    return model


def check_round_trip(model: ServedModel, blob: bytes, pixels: Floats) -> dict[str, Any]:
    """Load ``blob`` as a replica will and require it to answer ``pixels`` exactly as ``model`` does: what the
    trainer checks before it registers anything (the record keeps these facts as ``served_check``)."""
    loaded = ready_to_serve(storage.load(blob), "the model, loaded back from its blob")
    expected, _ = model.predict(pixels)
    answered, probabilities = loaded.predict(pixels)
    if not np.array_equal(expected, answered) or not np.isfinite(probabilities).all():
        raise NotServable("loaded back from its blob, the model answers differently from the fitted one; it is not "
                          "registered")
    return {"passed": True, "class": type(loaded).__name__, "rows": len(pixels), "fast_path": loaded.fast}


class DigitModel(ServedModel):
    """One fitted scikit-learn pipeline."""

    def __init__(self, estimator: Any, temperature: float | None = None) -> None:
        self.estimator = estimator
        self.temperature = temperature
        self.calibrated: Thresholds | None = None
        self._fast: Any = None

    def __getstate__(self) -> dict[str, Any]:
        # The fast path is derived data: rebuilt after loading, never pickled.
        state = self.__dict__.copy()
        state["_fast"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.calibrated = None  # models stored before verdicts existed have no thresholds
        self.__dict__.update(state)

    @property
    def thresholds(self) -> Thresholds | None:
        return self.calibrated

    @property
    def learned_not_a_digit(self) -> bool:
        """True when the estimator learned a "not a digit" class besides the ten digits."""
        return NOT_A_DIGIT_LABEL in getattr(self.estimator, "classes_", ())

    @property
    def votes_only(self) -> bool:
        """True when the estimator has no probabilities of its own (an SVC without probability=True)."""
        final = self.estimator[-1] if hasattr(self.estimator, "steps") else self.estimator
        return not getattr(final, "probability", True) or not hasattr(final, "predict_proba")

    def prepare(self) -> None:
        """Build the fast decision path (if the pipeline allows one); call once after loading."""
        from digits.modelling.fastsvc import compile_svc_pipeline

        if hasattr(self.estimator, "steps"):
            self._fast = compile_svc_pipeline(self.estimator, reject_label=NOT_A_DIGIT_LABEL)
        if self.learned_not_a_digit and self._fast is None:
            raise NotServable("a model that learned a 'not a digit' class is served only on the fast SVC path")

    @property
    def fast(self) -> bool:
        return self._fast is not None

    def predict(self, pixels: Floats) -> tuple[Labels, Floats]:
        """Digits and their ten probabilities for each row of ``pixels`` (n, 784)."""
        if self._fast is not None:
            answers = self.answer(pixels)
            return answers.labels, answers.probabilities
        if self.votes_only:
            scores = self.estimator.decision_function(pixels)
            return np.asarray(self.estimator.predict(pixels), dtype=np.int64), self._softmax(scores)
        probabilities = np.asarray(self.estimator.predict_proba(pixels), dtype=np.float32)
        return np.argmax(probabilities, axis=1).astype(np.int64), probabilities

    def answer(self, pixels: Floats) -> Answers:
        if self._fast is None:
            return super().answer(pixels)
        decided = self._fast.decide(pixels)
        return Answers(np.asarray(decided.labels, dtype=np.int64), self._softmax(decided.scores),
                       np.asarray(decided.runner_up, dtype=np.int64), decided.margin, decided.familiarity)

    def calibrate(self, pixels: Floats, labels: Labels) -> None:
        """Fit the softmax temperature on held-out digits by minimising their negative log-likelihood."""
        if not self.votes_only:
            return
        if self._fast is None:
            self.prepare()
        scores = self._fast.decide(pixels).scores if self._fast is not None else np.asarray(
            self.estimator.decision_function(pixels), dtype=np.float64)
        rows = np.arange(len(labels))

        def nll(log_t: float) -> float:
            return float(-log_softmax(np.exp(log_t) * scores, axis=1)[rows, labels].mean())

        best = minimize_scalar(nll, bounds=(-5.0, 5.0), method="bounded")
        self.temperature = float(np.exp(best.x))

    def _softmax(self, scores: npt.NDArray[Any]) -> Floats:
        temperature = self.temperature if self.temperature is not None else 1.0
        return np.asarray(softmax(temperature * np.asarray(scores, dtype=np.float64), axis=1), dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        """The estimator, its temperature, and for SVC-family models the number of support vectors."""
        final = self.estimator[-1] if hasattr(self.estimator, "steps") else self.estimator
        facts: dict[str, Any] = {"estimator": type(final).__name__, "temperature": self.temperature,
                                 "learned_not_a_digit": self.learned_not_a_digit}
        if self.calibrated is not None:
            facts["thresholds"] = self.calibrated.describe()
        if hasattr(final, "support_vectors_"):
            facts["n_support_vectors"] = int(final.support_vectors_.shape[0])
            facts["n_features"] = int(final.support_vectors_.shape[1])  # what each kernel evaluation reads
        return facts
