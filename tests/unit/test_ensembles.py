"""digits.modelling.ensembles: hard and soft voting, and a blend fitted on the members' probabilities (on stub
members)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from digits.modelling.ensembles import BlendEnsemble, VoteEnsemble
from digits.modelling.model import Floats, Labels, ServedModel


class Fixed(ServedModel):
    """A member that answers the same probabilities, row by row, whatever the pixels; its digit is their argmax."""

    def __init__(self, *rows: dict[int, float], fast: bool = False, support_vectors: int | None = None) -> None:
        self.probabilities = np.zeros((len(rows), 10), dtype=np.float32)
        for i, row in enumerate(rows):
            for digit, p in row.items():
                self.probabilities[i, digit] = p
        self._fast, self.support_vectors, self.prepared = fast, support_vectors, False

    def predict(self, pixels: Floats) -> tuple[Labels, Floats]:
        chosen = self.probabilities[: len(pixels)]
        return np.argmax(chosen, axis=1).astype(np.int64), chosen

    def prepare(self) -> None:
        self.prepared = True

    @property
    def fast(self) -> bool:
        return self._fast

    def describe(self) -> dict[str, Any]:
        return {"estimator": "Fixed"} | ({"n_support_vectors": self.support_vectors} if self.support_vectors else {})


def vote(members: list[Fixed], soft: bool) -> VoteEnsemble:
    # Stub members stand in for fitted DigitModels: an ensemble uses nothing but ServedModel's methods.
    return VoteEnsemble(members, soft=soft)  # type: ignore[arg-type]


PIXELS = np.zeros((1, 784), dtype=np.float32)
# Two members sure-ish of 4, one very sure of 7: the majority says 4, the mean probability says 7.
SPLIT = [Fixed({4: 0.4, 7: 0.35, 1: 0.25}), Fixed({4: 0.4, 7: 0.35, 1: 0.25}), Fixed({7: 0.99, 1: 0.01})]


def test_hard_voting_follows_the_majority_and_answers_the_share_of_votes() -> None:
    labels, shares = vote(SPLIT, soft=False).predict(PIXELS)
    assert labels.tolist() == [4]
    assert shares[0, 4] == pytest.approx(2 / 3) and shares[0, 7] == pytest.approx(1 / 3)
    assert shares.dtype == np.float32 and shares.sum() == pytest.approx(1.0)


def test_soft_voting_follows_the_mean_probability() -> None:
    labels, mean = vote(SPLIT, soft=True).predict(PIXELS)
    assert labels.tolist() == [7]
    assert mean[0, 7] == pytest.approx((0.35 + 0.35 + 0.99) / 3) and mean.dtype == np.float32


def test_a_tied_vote_goes_to_the_digit_of_higher_mean_probability() -> None:
    # Each row is a 1-1 tie between 1 and 2: in row 0 the mean probability favours 2, in row 1 it favours 1.
    first, second = Fixed({1: 0.6, 2: 0.4}, {1: 0.9, 2: 0.1}), Fixed({2: 0.9, 1: 0.1}, {2: 0.55, 1: 0.45})
    labels, shares = vote([first, second], soft=False).predict(np.zeros((2, 784), dtype=np.float32))
    assert labels.tolist() == [2, 1]
    assert shares[:, [1, 2]].tolist() == [[0.5, 0.5], [0.5, 0.5]]  # the tie-break never shows in the shares


def test_an_ensemble_prepares_every_member_and_is_fast_if_any_member_is() -> None:
    members = [Fixed({0: 1.0}), Fixed({0: 1.0}, fast=True)]
    ensemble = vote(members, soft=True)
    ensemble.prepare()
    assert all(m.prepared for m in members) and ensemble.fast
    assert not vote([Fixed({0: 1.0})], soft=True).fast


def test_the_description_names_the_method_and_sums_the_support_vectors() -> None:
    members = [Fixed({0: 1.0}, support_vectors=100), Fixed({0: 1.0}), Fixed({0: 1.0}, support_vectors=20)]
    hard = vote(members, soft=False).describe()
    assert hard["estimator"] == "hard vote" and hard["n_support_vectors"] == 120 and len(hard["members"]) == 3
    assert vote(members, soft=True).describe()["estimator"] == "soft vote"
    assert "n_support_vectors" not in vote([Fixed({0: 1.0})], soft=True).describe()


class FirstPixel(ServedModel):
    """A member that reads the digit from the first pixel (right), or one that always says 0 (useless)."""

    def __init__(self, useful: bool) -> None:
        self.useful = useful

    def predict(self, pixels: Floats) -> tuple[Labels, Floats]:
        digits = pixels[:, 0].astype(np.int64) if self.useful else np.zeros(len(pixels), dtype=np.int64)
        probabilities = np.full((len(pixels), 10), 0.01, dtype=np.float32)
        probabilities[np.arange(len(pixels)), digits] = 0.91
        return digits, probabilities

    def describe(self) -> dict[str, Any]:
        return {"estimator": "FirstPixel"}


def test_a_blend_learns_which_member_to_trust_from_the_members_probabilities() -> None:
    labels = np.tile(np.arange(10), 5).astype(np.int64)
    pixels = np.zeros((len(labels), 784), dtype=np.float32)
    pixels[:, 0] = labels
    members = [FirstPixel(useful=False), FirstPixel(useful=True)]
    blend = BlendEnsemble.fit(members, LogisticRegression(max_iter=1000), pixels, labels)  # type: ignore[arg-type]
    features = blend.features(pixels[:3])
    assert features.shape == (3, 20) and features.dtype == np.float32
    assert features[:, :10].argmax(axis=1).tolist() == [0, 0, 0]  # the first member's ten columns come first
    assert features[:, 10:].argmax(axis=1).tolist() == [0, 1, 2]
    predicted, probabilities = blend.predict(pixels[::-1])
    assert predicted.tolist() == labels[::-1].tolist()
    assert probabilities.shape == (len(labels), 10) and probabilities.dtype == np.float32
    assert blend.describe()["estimator"] == "blend by LogisticRegression"
