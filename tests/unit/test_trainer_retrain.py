"""The retrain job's promotion gate and report (pure logic, against a stand-in registry): a new version is
compared with the active one only on the same digits, a job whose every candidate failed says why, and the
report shows every candidate beside the active version. The promotion itself runs against a real Redis: a job
that may not activate (--no-activate, a training token) leaves the active version as it was even when its winner
passes the gate."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import redis

from digits.platform.registry import ModelRecord, Registry
from digits.platform.signing import SigningKey, Verifier
from digits.training import datasets, jobs
from digits.training.candidates import resolve
from services.trainer.comparison import Fitted, fit_base
from services.trainer.retrain import JobSetup, _gate, _report, _unlike_digits, promote
from tests.gates import GATE_PASSED, WEAK_KNN

DATA = {"source": "sample", "size": 5000, "digest": "d-sample"}
SPEC = jobs.RetrainSpec(data="sample", seed=3, limit=1000)
SPLIT = {"seed": 3, "validation_fraction": 0.2, "holdout_fraction": 0.1, "limit": 1000}  # datasets.Split.spec
WINNER = {"accuracy": 0.95, "f1_weighted": 0.94, "fit_seconds": 1.0}


def active_record(dataset: dict[str, Any] | None = None, split: dict[str, Any] | None = None,
                  metrics: dict[str, Any] | None = None) -> ModelRecord:
    return ModelRecord(
        version="v5", kind="svc", params={}, metrics={"accuracy": 0.93, "f1_weighted": 0.92} if metrics is None
        else metrics, dataset=DATA if dataset is None else dataset, created_at="", parent="", sha256="s",
        signature="", blob_size=1, split=SPLIT if split is None else split)


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
        data=SimpleNamespace(record=lambda: dict(DATA), report=lambda: {**DATA, "parts": [dict(DATA)]}),
        split=SimpleNamespace(sizes=lambda: {"train": 720, "holdout": 80, "validation": 200}, spec=SPLIT,
                              validated_on=lambda: "a stratified 20% of the set (seed 3)"))


def test_with_nothing_active_the_winner_is_activated() -> None:
    active, activate, why = _gate(setup(None), WINNER)
    assert active is None and activate and why == "no model was active"


def test_on_the_same_digits_a_better_winner_is_activated_a_worse_one_not() -> None:
    active, activate, why = _gate(setup(active_record()), WINNER)
    assert active is not None and active.version == "v5"
    assert activate and why.endswith("(vs v5, on the same validation digits)") and "0.9500 > 0.9300" in why
    _, activate, why = _gate(setup(active_record()), {**WINNER, "accuracy": 0.93})
    assert not activate and "not better" in why


def test_the_jobs_min_gain_raises_the_bar() -> None:
    demanding = jobs.RetrainSpec(data="sample", seed=3, limit=1000, min_gain=0.05)
    _, activate, why = _gate(setup(active_record(), demanding), WINNER)
    assert not activate and "+ 0.0500" in why


@pytest.mark.parametrize(("record", "reason"), [
    (active_record(dataset={"source": "openml", "size": 70000, "digest": "d-openml"}),
     "it was judged on another data set (openml, 70000 digits) than this job's (sample, 5000)"),
    (active_record(dataset={}), "another data set (?, ? digits)"),
    (active_record(split={**SPLIT, "seed": 4}), "it was judged on another split"),
    (active_record(split={}), "another split (unrecorded)"),
    (active_record(split={"seed": 3, "validation_last": 10_000, "holdout_fraction": 0.1, "limit": 0}),
     "it was judged on another split"),
    (active_record(metrics={"accuracy": 0.5}), "its validation figures are not recorded"),
])
def test_on_other_digits_there_is_no_comparison_and_activation_is_left_to_an_admin(record: ModelRecord,
                                                                                  reason: str) -> None:
    assert reason in _unlike_digits(record, setup(record))
    active, activate, why = _gate(setup(record), {**WINNER, "accuracy": 0.999, "f1_weighted": 0.999})
    assert active is record and not activate
    assert why.startswith("cannot compare with the active model v5: ") and reason in why
    assert why.endswith("an admin may activate it (digits models activate)")


def test_same_data_and_split_are_the_same_digits() -> None:
    assert _unlike_digits(active_record(), setup(active_record())) == ""


def test_the_report_sets_every_candidate_beside_the_active_version() -> None:
    svc, hist = resolve(["svc", "hist-gb"])
    fitted = [Fitted(svc, object(), dict(WINNER)), Fitted(hist, error="out of memory")]  # type: ignore[arg-type]
    report = _report(setup(active_record()), fitted, fitted[0], active_record(), "the gate's words")
    assert report["job"] == "job-1" and report["winner"] == "svc" and report["gate"] == "the gate's words"
    assert report["spec"] == SPEC.to_dict() and report["dataset"] == {**DATA, "parts": [DATA]}
    assert report["split"] == {"train": 720, "holdout": 80, "validation": 200,
                               "validated_on": "a stratified 20% of the set (seed 3)"}
    assert [(c["name"], c.get("accuracy"), c.get("error")) for c in report["candidates"]] == [
        ("svc", 0.95, None), ("hist-gb", None, "out of memory")]
    assert report["active"] == {"version": "v5", "accuracy": 0.93, "f1_weighted": 0.92, "same_digits": True}

    elsewhere = active_record(split={})
    assert _report(setup(elsewhere), fitted, fitted[0], elsewhere, "")["active"]["same_digits"] is False
    assert _report(setup(None), fitted, fitted[0], None, "")["active"] is None


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
