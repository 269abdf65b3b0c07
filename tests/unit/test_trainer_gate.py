"""The promotion gate (services/trainer/gate.py), against a real Redis and real digits: the job's winner and the
active model are compared only on validation digits neither was fitted on, whatever data the active model came
from. Digits the active version was fitted on (its fingerprints, or for an older version its data set and split
rebuilt) are dropped and both models are scored on the rest; only an active version that fails verification or
does not load, or whose fitted digits cannot be known, leaves the choice to an admin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from digits.modelling import storage
from digits.modelling.model import ServedModel
from digits.platform.registry import Registry, blob_key, fitted_key, model_key
from digits.platform.signing import SigningKey, Verifier
from digits.training import datasets, fingerprints
from digits.training.candidates import resolve
from digits.training.evaluation import score
from services.trainer.comparison import Fitted, fit_base
from services.trainer.gate import (
    ADMIN_MAY_ACTIVATE,
    FROM_FINGERPRINTS,
    REBUILT,
    WHOLE_DATA_SET,
    JobDigits,
    Unseen,
    dropped,
    judge,
    unseen,
)
from tests.gates import WEAK_KNN
from tests.unit.test_datasets import write_idx

KEY = SigningKey.generate()
CHECKED = {"passed": True, "rows": 0}
FIGURES = {"accuracy": 0.93, "f1_weighted": 0.92}


class NeverScored(ServedModel):
    """A winner for the gates that compare recorded figures or refuse: it must not be asked anything."""

    def predict(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise AssertionError("the gate scored a model it should not have")

    def describe(self) -> dict[str, Any]:
        return {}


@pytest.fixture
def registry(redis_client: redis.Redis) -> Registry:
    return Registry(redis_client, Verifier([KEY.public]), KEY)


def knn(split: datasets.Split, **params: Any) -> Fitted:
    (candidate,) = resolve(["knn"])
    return fit_base(candidate.with_params(params), split, 0)


def activated(registry: Registry, model: object, data: datasets.Dataset, split: datasets.Split, /, *,
              fitted_on: str = "split", with_fingerprints: bool = True, **record: Any) -> str:
    """``model`` registered as fitted on ``split`` of ``data`` (``fitted_on``) and activated: its version. ``record``
    overrides fields of its record (a version registered before some of them were kept)."""
    fields: dict[str, Any] = {"metrics": FIGURES, "dataset": data.record(), "split": split.spec, **record}
    version = registry.register(
        storage.dump(model), kind="knn", params={}, fitted_on=fitted_on, served_check=CHECKED,
        fitted_digits=JobDigits.of(data, split).fitted(fitted_on) if with_fingerprints else None, **fields,
    ).version
    assert registry.activate(version, expected=None, why="test")
    return version


def as_rows(pixels: np.ndarray) -> list[bytes]:
    return [row.astype(np.uint8).tobytes() for row in pixels]


def neither_fitted(split: datasets.Split, *fitted_by_active: np.ndarray) -> np.ndarray:
    """The job's validation digits that neither the active model (``fitted_by_active``) nor the job's split fit saw,
    found by comparing pixels, independently of fingerprints."""
    seen = {row for part in (*fitted_by_active, split.x_train, split.x_hold) for row in as_rows(part)}
    return np.array([row not in seen for row in as_rows(split.x_val)])


def other_data_set(data: datasets.Dataset) -> datasets.Dataset:
    """Another data set (another digest) that shares digits with ``data``: 3,000 of its digits, shuffled."""
    chosen = np.random.default_rng(1).permutation(data.size)[:3000]
    return datasets.Dataset(data.pixels[chosen], data.labels[chosen], "sample")


def gate(registry: Registry, data: datasets.Dataset, split: datasets.Split, winner: Fitted,
         min_gain: float = 0.0, cache_dir: Path = Path(".")) -> Any:
    assert winner.model is not None
    return judge(registry, JobDigits.of(data, split), winner.model, winner.metrics, min_gain, cache_dir)


def test_with_nothing_active_the_winner_is_activated(registry: Registry, mnist_sample: datasets.Dataset) -> None:
    split = datasets.split(mnist_sample, seed=3, limit=1000)
    verdict = judge(registry, JobDigits.of(mnist_sample, split), NeverScored(), {}, 0.0, Path("."))
    assert (verdict.active, verdict.activate, verdict.why, verdict.report) == (None, True, "no model was active", None)


def test_on_the_same_validation_digits_the_recorded_figures_are_compared(registry: Registry,
                                                                        mnist_sample: datasets.Dataset) -> None:
    """The active version was validated on exactly the job's digits: its recorded figures are compared with the
    winner's, without loading it (its split fit never saw them, nor did the winner)."""
    split = datasets.split(mnist_sample, seed=3, limit=1000)
    version = activated(registry, "never loaded", mnist_sample, split, fitted_on="all")
    job = JobDigits.of(mnist_sample, split)
    verdict = judge(registry, job, NeverScored(), {"accuracy": 0.95, "f1_weighted": 0.94}, 0.0, Path("."))
    assert verdict.activate and verdict.active is not None and verdict.active.version == version
    assert verdict.why == ("accuracy 0.9500 > 0.9300 and weighted F1 0.9400 >= 0.9200 on the same split "
                           f"(vs {version}, on the same validation digits)")
    assert verdict.report == {"version": version, "same_digits": True,
                              "compared_on": "its recorded validation figures", **FIGURES, "digits": 200}
    worse = judge(registry, job, NeverScored(), {"accuracy": 0.93, "f1_weighted": 0.94}, 0.0, Path("."))
    assert not worse.activate and "not better" in worse.why
    demanding = judge(registry, job, NeverScored(), {"accuracy": 0.95, "f1_weighted": 0.94}, 0.05, Path("."))
    assert not demanding.activate and "0.9300 + 0.0500" in demanding.why


@pytest.mark.parametrize("with_fingerprints", [True, False], ids=["fingerprints", "registered-before-them"])
def test_on_another_data_set_both_models_are_scored_on_the_digits_neither_was_fitted_on(
    registry: Registry, mnist_sample: datasets.Dataset, with_fingerprints: bool
) -> None:
    """The issue's case: the active model came from another data set that shares digits with the job's. The job's
    validation digits it was fitted on are dropped, both models are scored on the rest, and the gate says so with
    the counts. A version registered before fingerprints has its fitted digits rebuilt from its data set (loaded
    by its source: the digest matches) and split, to the same digits."""
    before = datasets.split(mnist_sample, seed=3, limit=1000)
    weak = knn(before, **WEAK_KNN)
    version = activated(registry, weak.model, mnist_sample, before, with_fingerprints=with_fingerprints)

    data = other_data_set(mnist_sample)
    split = datasets.split(data, seed=0)
    strong = knn(split)
    verdict = gate(registry, data, split, strong)

    keep = neither_fitted(split, before.x_train, before.x_hold)
    kept, total = int(keep.sum()), len(keep)
    assert 0 < total - kept < total, "the data sets should share some validation digits, not all"
    assert weak.model is not None and strong.model is not None
    theirs = score(weak.model, split.x_val[keep], split.y_val[keep])
    ours = score(strong.model, split.x_val[keep], split.y_val[keep])
    rebuilt = "" if with_fingerprints else f"; {version}'s fitted digits {REBUILT}, as it predates their fingerprints"
    assert verdict.activate, verdict.why
    assert verdict.why == (
        f"accuracy {ours['accuracy']:.4f} > {theirs['accuracy']:.4f} and weighted F1 {ours['f1_weighted']:.4f} >= "
        f"{theirs['f1_weighted']:.4f} on the {kept:,} validation digits neither model was fitted on "
        f"({total - kept:,} of the job's {total:,} dropped: {version} was fitted on them{rebuilt})")
    assert verdict.report == {
        "version": version, "same_digits": False, "compared_on": "validation digits neither model was fitted on",
        **theirs, "winner": ours, "digits": kept, "validation": total,
        "dropped": {"fitted_by_active": total - kept, "repeat_job_digits": 0},
        "fitted_digits": FROM_FINGERPRINTS if with_fingerprints else REBUILT}

    # The other way round: the weak model as the job's winner does not replace the strong one.
    assert not gate(registry, data, split, weak).activate


def test_when_a_record_does_not_say_which_digits_every_digit_of_its_data_set_counts(
    registry: Registry, mnist_sample: datasets.Dataset, tmp_path: Path
) -> None:
    """A version registered before fingerprints and before splits were recorded: it was fitted on some digits of
    its data set (here 2,000 sample digits in IDX files), so all of them are dropped, and the comparison is on the
    job's digits outside that set."""
    chosen = np.random.default_rng(2).permutation(mnist_sample.size)[:2000]
    write_idx(tmp_path, mnist_sample.pixels[chosen].reshape(-1, 28, 28), mnist_sample.labels[chosen].astype(np.uint8),
              compress=True)
    old = datasets.load(f"idx:{tmp_path}", cache_dir=tmp_path)
    old_split = datasets.split(old, seed=0)
    version = activated(registry, knn(old_split, **WEAK_KNN).model, old, old_split, with_fingerprints=False, split={})

    split = datasets.split(mnist_sample, seed=0)
    verdict = gate(registry, mnist_sample, split, knn(split), cache_dir=tmp_path)
    keep = neither_fitted(split, old.pixels)
    assert verdict.report is not None and verdict.report["digits"] == int(keep.sum()) < len(keep)
    assert verdict.report["fitted_digits"] == WHOLE_DATA_SET and verdict.activate
    assert verdict.why.endswith(
        f"({len(keep) - int(keep.sum()):,} of the job's {len(keep):,} dropped: {version} may have been fitted on "
        f"them; its record does not say which digits of its data set {version} was fitted on, so all of them count)")


def test_a_job_whose_every_validation_digit_the_active_model_was_fitted_on_cannot_compare(
    registry: Registry, mnist_sample: datasets.Dataset
) -> None:
    """A final fit on the whole sample is active; a job on the sample with another seed validates on digits it was
    fitted on, every one: nothing is unseen by both."""
    version = activated(registry, "never loaded", mnist_sample, datasets.split(mnist_sample, seed=0), fitted_on="all")
    split = datasets.split(mnist_sample, seed=1)
    verdict = judge(registry, JobDigits.of(mnist_sample, split), NeverScored(), FIGURES, 0.0, Path("."))
    assert not verdict.activate
    assert verdict.why == (f"cannot compare with the active model {version}: of this job's 1,000 validation digits, "
                           f"none is unseen by both models (1,000 of the job's 1,000 dropped: {version} was fitted on "
                           f"them); {ADMIN_MAY_ACTIVATE}")


def damage_blob(client: redis.Redis, version: str) -> None:
    stored = client.get(blob_key(version))
    assert isinstance(stored, bytes)  # the client does not decode responses
    blob = bytearray(stored)
    blob[len(blob) // 2] ^= 0xFF
    client.set(blob_key(version), bytes(blob))


@pytest.mark.parametrize(("damage", "reason"), [
    (damage_blob, "it fails verification (model {v}: blob digest does not match its record)"),
    (lambda client, v: client.set(fitted_key(v), b"\0" * 16),
     "model {v}: the fingerprints of its fitted digits do not match its record"),
    (lambda client, v: client.delete(fitted_key(v)), "model {v}: the fingerprints of its fitted digits are missing"),
], ids=["blob", "fingerprints", "fingerprints-missing"])
def test_an_active_version_that_fails_verification_is_not_compared(
    registry: Registry, redis_client: redis.Redis, mnist_sample: datasets.Dataset, damage: Any, reason: str
) -> None:
    before = datasets.split(mnist_sample, seed=3, limit=1000)
    version = activated(registry, knn(before, **WEAK_KNN).model, mnist_sample, before)
    damage(redis_client, version)
    split = datasets.split(mnist_sample, seed=4, limit=1000)
    verdict = gate(registry, mnist_sample, split, knn(split))
    assert not verdict.activate
    assert verdict.why == f"cannot compare with the active model {version}: {reason.format(v=version)}; " \
                          f"{ADMIN_MAY_ACTIVATE}"
    assert verdict.report == {"version": version, "same_digits": False, "compared_on": None,
                              "reason": reason.format(v=version)}


def test_recorded_figures_are_believed_only_when_their_signature_holds(registry: Registry, redis_client: redis.Redis,
                                                                       mnist_sample: datasets.Dataset) -> None:
    split = datasets.split(mnist_sample, seed=3, limit=1000)
    version = activated(registry, "never loaded", mnist_sample, split)
    redis_client.hset(model_key(version), "metrics", '{"accuracy": 0.1, "f1_weighted": 0.1}')
    verdict = judge(registry, JobDigits.of(mnist_sample, split), NeverScored(), FIGURES, 0.0, Path("."))
    assert not verdict.activate
    assert verdict.why.startswith(f"cannot compare with the active model {version}: it fails verification (")
    assert "signature" in verdict.why


def test_a_verified_blob_that_does_not_serve_is_not_compared(registry: Registry,
                                                            mnist_sample: datasets.Dataset) -> None:
    before = datasets.split(mnist_sample, seed=3, limit=1000)
    version = activated(registry, {"not": "a model"}, mnist_sample, before)
    split = datasets.split(mnist_sample, seed=4, limit=1000)
    verdict = gate(registry, mnist_sample, split, knn(split))
    assert not verdict.activate
    assert verdict.why.startswith(f"cannot compare with the active model {version}: its blob does not load and serve "
                                  f"here (NotServable: model {version} is a dict")


@pytest.mark.parametrize(("dataset", "reason"), [
    ({"source": "idx:/nonexistent/mnist", "size": 60000, "digest": "d-elsewhere"},
     "its data set (idx:/nonexistent/mnist) cannot be loaded here (idx: no train-images-idx3-ubyte[.gz] in "
     "/nonexistent/mnist), so which digits it was fitted on is unknown"),
    ({"source": "sample", "size": 5000, "digest": "d-another-sample"},
     "sample here is not the data set it was fitted on (another digest), so which digits it was fitted on is unknown"),
    ({}, "its record does not name its data set, so which digits it was fitted on is unknown"),
])
def test_an_older_version_whose_data_set_is_not_here_cannot_be_compared(
    registry: Registry, mnist_sample: datasets.Dataset, dataset: dict[str, Any], reason: str
) -> None:
    before = datasets.split(mnist_sample, seed=3, limit=1000)
    version = activated(registry, knn(before, **WEAK_KNN).model, mnist_sample, before, with_fingerprints=False,
                        dataset=dataset)
    split = datasets.split(mnist_sample, seed=4, limit=1000)
    verdict = gate(registry, mnist_sample, split, knn(split))
    assert not verdict.activate
    assert verdict.why == (f"cannot compare with the active model {version}: it predates the fingerprints of fitted "
                           f"digits, and {reason}; {ADMIN_MAY_ACTIVATE}")


def test_a_job_keeps_the_fingerprints_of_what_its_version_was_fitted_on(mnist_sample: datasets.Dataset) -> None:
    split = datasets.split(mnist_sample, seed=3, limit=1000)
    job = JobDigits.of(mnist_sample, split)
    for fitted_on, parts in (("all", (split.x_train, split.x_hold, split.x_val)), ("split", (split.x_train,
                                                                                             split.x_hold))):
        kept = job.fitted(fitted_on)
        expected = fingerprints.distinct(*(fingerprints.of(p) for p in parts))
        assert kept.about == {"scheme": fingerprints.SCHEME, "count": len(expected)}
        assert np.array_equal(fingerprints.load(kept.data), expected)
    assert job.fitted("all").about["count"] == 1000


def digits_of(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.uint64)


def test_validation_digits_that_repeat_the_jobs_own_fitted_digits_are_dropped_too(
    mnist_sample: datasets.Dataset
) -> None:
    """Neither model may have seen a compared digit: one whose pixels repeat a digit of the job's training share or
    holdout is dropped as surely as one the active version was fitted on."""
    split = datasets.split(mnist_sample, seed=3, limit=1000)
    job = JobDigits(mnist_sample, "d", split, train=digits_of(1, 2, 3), holdout=digits_of(4),
                    validation=digits_of(2, 5, 6, 7, 4))
    left = unseen(job, fingerprints.distinct(digits_of(5, 9, 2)))
    assert left.keep.tolist() == [False, False, True, True, False]
    assert (left.by_active, left.by_job, left.kept, left.total) == (2, 1, 2, 5)


@pytest.mark.parametrize(("by_active", "by_job", "known", "words"), [
    (0, 0, FROM_FINGERPRINTS, "v1 was fitted on none of the job's 10,000"),
    (13, 0, FROM_FINGERPRINTS, "13 of the job's 10,000 dropped: v1 was fitted on them"),
    (0, 2, FROM_FINGERPRINTS, "2 of the job's 10,000 dropped: they repeat digits this job was fitted on"),
    (1_300, 2, FROM_FINGERPRINTS,
     "1,302 of the job's 10,000 dropped: v1 was fitted on 1,300 of them, 2 repeat digits this job was fitted on"),
    (13, 0, REBUILT, "13 of the job's 10,000 dropped: v1 was fitted on them; v1's fitted digits rebuilt from its "
                     "data set and split, as it predates their fingerprints"),
    (13, 0, WHOLE_DATA_SET, "13 of the job's 10,000 dropped: v1 may have been fitted on them; its record does not "
                            "say which digits of its data set v1 was fitted on, so all of them count"),
])
def test_the_gate_says_how_many_digits_were_dropped_and_why(by_active: int, by_job: int, known: str,
                                                            words: str) -> None:
    keep = np.ones(10_000, dtype=bool)
    keep[: by_active + by_job] = False
    assert dropped("v1", Unseen(keep, by_active, by_job), known) == words
