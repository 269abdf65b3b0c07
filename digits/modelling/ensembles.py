"""Models made of other models: voting and blending over the top base candidates of a retrain job."""

from __future__ import annotations

from typing import Any

import numpy as np

from digits.mnist import N_CLASSES
from digits.modelling.model import DigitModel, Floats, Labels, ServedModel


class Ensemble(ServedModel):
    """Members are served models themselves: each gets its own fast path."""

    def __init__(self, members: list[DigitModel]) -> None:
        self.members = members

    def prepare(self) -> None:
        for member in self.members:
            member.prepare()

    @property
    def fast(self) -> bool:
        return any(member.fast for member in self.members)


class VoteEnsemble(Ensemble):
    """Hard voting (each member one vote, ties to the higher mean probability) or soft (mean probabilities)."""

    def __init__(self, members: list[DigitModel], soft: bool) -> None:
        super().__init__(members)
        self.soft = soft

    def predict(self, pixels: Floats) -> tuple[Labels, Floats]:
        answers = [member.predict(pixels) for member in self.members]
        mean = np.mean([probabilities for _, probabilities in answers], axis=0).astype(np.float32)
        if self.soft:
            return np.argmax(mean, axis=1).astype(np.int64), mean
        votes = np.zeros((len(pixels), N_CLASSES), dtype=np.float32)
        for labels, _ in answers:
            votes[np.arange(len(pixels)), labels] += 1.0
        shares = (votes / len(self.members)).astype(np.float32)
        return np.argmax(shares + 1e-3 * mean, axis=1).astype(np.int64), shares

    def describe(self) -> dict[str, Any]:
        return _members_described(f"{'soft' if self.soft else 'hard'} vote", self.members)


class BlendEnsemble(Ensemble):
    """A final classifier over the members' probabilities, fitted on digits the members never trained on."""

    def __init__(self, members: list[DigitModel], final: Any) -> None:
        super().__init__(members)
        self.final = final

    @classmethod
    def fit(cls, members: list[DigitModel], final: Any, pixels: Floats, labels: Labels) -> BlendEnsemble:
        blend = cls(members, final)
        final.fit(blend.features(pixels), labels)
        return blend

    def features(self, pixels: Floats) -> Floats:
        return np.hstack([member.predict(pixels)[1] for member in self.members]).astype(np.float32)

    def predict(self, pixels: Floats) -> tuple[Labels, Floats]:
        probabilities = np.asarray(self.final.predict_proba(self.features(pixels)), dtype=np.float32)
        return np.argmax(probabilities, axis=1).astype(np.int64), probabilities

    def describe(self) -> dict[str, Any]:
        return _members_described(f"blend by {type(self.final).__name__}", self.members)


def _members_described(how: str, members: list[DigitModel]) -> dict[str, Any]:
    described = [member.describe() for member in members]
    facts: dict[str, Any] = {"estimator": how, "members": described}
    support = [d["n_support_vectors"] for d in described if "n_support_vectors" in d]
    if support:
        facts["n_support_vectors"] = sum(support)
    return facts
