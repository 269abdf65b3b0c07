"""The retrain job's promotion step: a job whose every candidate failed says why, the report shows every candidate
beside the active version and the gate's verdict (the gate itself: tests/unit/test_trainer_gate.py), and the
promotion runs against a real Redis: a job that may not activate (--no-activate, a training token) leaves the
active version as it was even when its winner passes the gate, and a job on another data set than the active
model's is compared with it on the digits neither was fitted on, registering the fingerprints of its own.
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import redis

from digits.platform.registry import ModelRecord, Registry, fitted_key
from digits.platform.signing import SigningKey, Verifier
from digits.training import datasets, fingerprints, jobs
from digits.training.candidates import resolve
from services.trainer.comparison import Fitted, fit_base
from services.trainer.gate import Verdict
from services.trainer.retrain import JobSetup, _report, promote
from tests.gates import GATE_PASSED, WEAK_KNN

DATA = {"source": "sample", "size": 5000, "digest": "d-sample"}
SPEC = jobs.RetrainSpec(data="sample", seed=3, limit=1000)
SPLIT = {"seed": 3, "validation_fraction": 0.2, "holdout_fraction": 0.1, "limit": 1000}  # datasets.Split.spec
WINNER = {"accuracy": 0.95, "f1_weighted": 0.94, "fit_seconds": 1.0}


def active_record() -> ModelRecord:
    return ModelRecord(version="v5", kind="svc", params={}, metrics={"accuracy": 0.93, "f1_weighted": 0.92},
                       dataset=DATA, created_at="", parent="", sha256="s", signature="", blob_size=1, split=SPLIT)


class FakeRegistry:
    def __init__(self, active: ModelRecord | None) -> None:
        self.active = active

    def active_version(self) -> str | None:
        return self.active.version if self.active else None

    def get(self, version: str, *, with_report: bool = True) -> ModelRecord:
        assert self.active is not None and version == self.active.version
        return self.active


def setup(active: ModelRecord | None, spec: jobs.RetrainSpec = SPEC) -> Any:
    return SimpleNamespace(
        spec=spec, job_id="job-1", progress=lambda *a, **k: None, registry=FakeRegistry(active),
        data=SimpleNamespace(record=lambda: dict(DATA), report=lambda split=None: {**DATA, "parts": [dict(DATA)]}),
        split=SimpleNamespace(sizes=lambda: {"train": 720, "holdout": 80, "validation": 200}, spec=SPLIT,
                              validated_on=lambda: "a stratified 20% of the set (seed 3)"))


def test_the_report_sets_every_candidate_beside_the_active_version() -> None:
    svc, hist = resolve(["svc", "hist-gb"])
    fitted = [Fitted(svc, object(), dict(WINNER)), Fitted(hist, error="out of memory")]  # type: ignore[arg-type]
    compared = {"version": "v5", "accuracy": 0.93, "f1_weighted": 0.92, "digits": 180, "validation": 200}
    verdict = Verdict(active_record(), True, "the gate's words", compared)
    report = _report(setup(active_record()), fitted, fitted[0], verdict)
    assert report["job"] == "job-1" and report["winner"] == "svc" and report["gate"] == "the gate's words"
    assert report["spec"] == SPEC.to_dict() and report["dataset"] == {**DATA, "parts": [DATA]}
    assert report["split"] == {"train": 720, "holdout": 80, "validation": 200,
                               "validated_on": "a stratified 20% of the set (seed 3)"}
    assert [(c["name"], c.get("accuracy"), c.get("error")) for c in report["candidates"]] == [
        ("svc", 0.95, None), ("hist-gb", None, "out of memory")]
    assert report["active"] == compared
    assert _report(setup(None), fitted, fitted[0], Verdict(None, True, "no model was active", None))["active"] is None


def test_a_job_whose_every_candidate_failed_registers_nothing_and_says_why() -> None:
    svc, hist = resolve(["svc", "hist-gb"])
    failed = [Fitted(svc, error="did not converge"), Fitted(hist, error="out of memory")]
    with pytest.raises(RuntimeError, match=r"every candidate failed \(svc: did not converge; hist-gb: out of memory\)"):
        promote(setup(active_record()), failed)


KEY = SigningKey.generate()


def real_setup(redis_client: redis.Redis, data: datasets.Dataset, split: datasets.Split,
               **flags: bool) -> JobSetup:
    """A job on 1,000 sample digits (seed 3) promoting into a real registry; ``flags`` are the spec's."""
    spec = jobs.RetrainSpec(data="sample", seed=3, limit=1000, final_fit=False, **flags)  # type: ignore[arg-type]
    registry = Registry(redis_client, Verifier([KEY.public]), KEY)
    return JobSetup(spec, "job-1", jobs.Progress(None), registry, data, split)


@pytest.mark.parametrize(("flags", "said"), [
    ({"no_activate": True}, "the job asked for --no-activate"),
    ({"may_activate": False}, "a training token started the job, and such jobs never change the active model"),
], ids=["no-activate", "training-token"])
def test_a_job_that_may_not_activate_leaves_the_active_version_even_when_its_winner_passes_the_gate(
    redis_client: redis.Redis, mnist_sample: datasets.Dataset, flags: dict[str, bool], said: str
) -> None:
    split = datasets.split(mnist_sample, seed=3, limit=1000)
    (knn,) = resolve(["knn"])
    weak, strong = fit_base(knn.with_params(WEAK_KNN), split, 3), fit_base(knn, split, 3)
    registry = real_setup(redis_client, mnist_sample, split).registry
    first = promote(real_setup(redis_client, mnist_sample, split), [weak])
    assert first["outcome"] == f"activated {first['version']}: no model was active"

    held = promote(real_setup(redis_client, mnist_sample, split, **flags), [strong])
    passed = GATE_PASSED.search(held["outcome"])
    print(f"[{'/'.join(flags)}] {held['outcome']}")
    assert passed and passed[3] == first["version"], f"the gate should have passed: {held['outcome']}"
    assert registry.active_version() == first["version"], f"{held['version']} was activated"
    assert held["outcome"].startswith(f"registered {held['version']}, not activated: {said} (")
    assert [p.to_version for p in registry.promotions()] == [first["version"]]

    # The same winner in a job without the flag is activated: the gate passes, so the flag alone held it back.
    free = promote(real_setup(redis_client, mnist_sample, split), [strong])
    assert free["outcome"].startswith(f"activated {free['version']}: accuracy ")
    assert registry.active_version() == free["version"] != first["version"]


def test_a_job_on_another_data_set_is_compared_on_the_digits_neither_model_was_fitted_on(
    redis_client: redis.Redis, mnist_sample: datasets.Dataset
) -> None:
    """Issue #22's case: the active model was fitted on other data than the job's (which shares digits with it).
    The job is no longer refused: the gate drops the validation digits the active version was fitted on (the
    fingerprints it registered), compares both models on the rest, and activates the better one, saying so with the
    counts in the outcome, the report and the promotion log. The new version keeps its own fingerprints."""
    first_split = datasets.split(mnist_sample, seed=3, limit=1000)
    (knn,) = resolve(["knn"])
    first = promote(real_setup(redis_client, mnist_sample, first_split),
                    [fit_base(knn.with_params(WEAK_KNN), first_split, 3)])
    registry = real_setup(redis_client, mnist_sample, first_split).registry
    kept = registry.get(first["version"]).fitted_digits  # a split fit: its training share and holdout
    assert kept["scheme"] == fingerprints.SCHEME and kept["count"] == 800 and kept["bytes"] == 800 * 8
    assert len(redis_client.get(fitted_key(first["version"])) or b"") == 800 * 8

    chosen = np.random.default_rng(1).permutation(mnist_sample.size)[:3000]
    other = datasets.Dataset(mnist_sample.pixels[chosen], mnist_sample.labels[chosen], "sample")
    split = datasets.split(other, seed=0)
    second = promote(real_setup(redis_client, other, split), [fit_base(knn, split, 0)])
    print(second["outcome"])
    compared = re.fullmatch(r"activated (v\d+): (accuracy .* on the ([\d,]+) validation digits neither model was "
                            r"fitted on \(([\d,]+) of the job's 600 dropped: (v\d+) was fitted on them\))",
                            second["outcome"])
    assert compared, second["outcome"]
    assert compared[1] == second["version"] and compared[5] == first["version"]
    assert int(compared[3]) + int(compared[4]) == 600 and int(compared[4]) > 0
    assert registry.active_version() == second["version"]
    assert registry.promotions()[0].why == compared[2]
    record = registry.get(second["version"])
    assert record.report["gate"] == compared[2]
    assert record.report["active"]["version"] == first["version"]
    assert (record.report["active"]["digits"], record.report["active"]["validation"]) == (int(compared[3]), 600)
    assert record.report["active"]["accuracy"] < record.report["active"]["winner"]["accuracy"]
    assert record.fitted_digits["count"] == len(split.y_train) + len(split.y_hold)
