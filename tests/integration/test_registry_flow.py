"""Retrain, activate, roll back and refuse tampered models, on the running stack."""

from __future__ import annotations

import json
import re
import time

import grpc
import pytest

from digits.platform.registry import ACTIVE_KEY, Registry, blob_key
from digits.stack.local import LocalStack
from digits.v1 import (
    models_pb2,
    models_pb2_grpc,
    recognizer_pb2,
    recognizer_pb2_grpc,
    training_pb2,
    training_pb2_grpc,
)
from tests.gates import GATE_PASSED, WEAK_KNN
from tests.integration.digits_data import held_out
from tests.stacks import FIRST_MODEL

Metadata = tuple[tuple[str, str], ...]
WEAK = {"candidates": ["knn"], "params_json": json.dumps({"knn": WEAK_KNN}), "no_final_fit": True}  # tests/gates.py


def retrain(training: training_pb2_grpc.TrainingStub, admin: Metadata, **fields: object) -> training_pb2.Job:
    job = training.Retrain(training_pb2.RetrainRequest(**fields), metadata=admin, timeout=10)  # type: ignore[arg-type]
    watched = training.WatchJob(training_pb2.GetJobRequest(id=job.id), metadata=admin, timeout=300)
    seen: list[training_pb2.Job] = [job, *watched]
    job = seen[-1]
    assert job.status == "finished", job.error
    assert any(0 < j.progress < 1 and j.stage for j in seen), "progress was never visible while the job ran"
    return job


def served_versions(recognizer: recognizer_pb2_grpc.RecognizerStub, calls: int = 8) -> set[str]:
    pixels, _ = held_out(1)
    request = recognizer_pb2.PredictRequest(pixels=recognizer_pb2.Pixels(values=pixels[0].tolist()))
    return {recognizer.Predict(request, timeout=10).version for _ in range(calls)}


def wait_for_version(recognizer: recognizer_pb2_grpc.RecognizerStub, version: str, timeout: float = 20) -> None:
    """Every replica answers with ``version`` (round robin spreads the calls)."""
    deadline = time.monotonic() + timeout
    while served_versions(recognizer) != {version}:
        assert time.monotonic() < deadline, f"inference did not switch to {version}"
        time.sleep(0.2)


def registry_of(stack: LocalStack) -> Registry:
    return stack.registry()


def test_retrain_registers_and_inference_switches_without_restart(
    stack: LocalStack, models: models_pb2_grpc.ModelsStub, training: training_pb2_grpc.TrainingStub,
    recognizer: recognizer_pb2_grpc.RecognizerStub, admin: Metadata,
) -> None:
    """--no-activate registers the winner and leaves the active model, even one the winner beats on the same
    digits; an admin then activates it, every replica switches without a restart, and a rollback switches back."""
    before = models.ListModels(models_pb2.ListModelsRequest(), timeout=10).active_version
    weak = retrain(training, admin, seed=7, no_activate=True, **WEAK).version
    models.ActivateModel(models_pb2.ActivateModelRequest(version=weak, reason="test: a weak model to beat"),
                         metadata=admin, timeout=30)
    try:
        job = retrain(training, admin, seed=7, no_activate=True, no_final_fit=True)
        assert job.version and job.version not in (before, weak)
        print(f"[--no-activate] {job.outcome}")
        passed = GATE_PASSED.search(job.outcome)
        assert passed and passed[3] == weak, f"the gate should have passed against {weak}: {job.outcome}"
        listed = models.ListModels(models_pb2.ListModelsRequest(), timeout=10)
        assert listed.active_version == weak, f"{job.version} was activated"
        assert "not activated" in job.outcome and "--no-activate" in job.outcome
        new = next(m for m in listed.models if m.version == job.version)
        assert not new.active and new.accuracy > 0.9 and new.dataset.source == "sample" and new.dataset.size == 5000
        assert new.fitted_on == "split" and "final_fit" not in json.loads(new.metrics_json)  # --no-final-fit
        assert new.parent == weak and new.job_id == job.id
        assert json.loads(new.metrics_json)["confusion_matrix"]

        done = models.ActivateModel(models_pb2.ActivateModelRequest(version=job.version, reason="test"),
                                    metadata=admin, timeout=30)
        assert (done.previous_version, done.active_version) == (weak, job.version)
        wait_for_version(recognizer, job.version)

        back = models.Rollback(models_pb2.RollbackRequest(reason="test"), metadata=admin, timeout=30)
        assert back.active_version == weak
        wait_for_version(recognizer, weak)
        log = registry_of(stack).promotions(3)
        assert [(p.action, p.to_version) for p in log[:2]] == [("rollback", weak), ("activate", job.version)]
    finally:
        models.ActivateModel(models_pb2.ActivateModelRequest(version=before, reason="test done"), metadata=admin,
                             timeout=30)
    wait_for_version(recognizer, before)


def test_the_served_model_is_refitted_on_every_digit_of_its_job(models: models_pb2_grpc.ModelsStub) -> None:
    """The stack's first model: chosen and judged on its split, then refitted on all the digits the job kept."""
    listed = models.ListModels(models_pb2.ListModelsRequest(), timeout=10).models
    oldest = min(listed, key=lambda m: int(m.version.removeprefix("v"))).version  # other tests activate others
    first = models.GetModel(models_pb2.GetModelRequest(version=oldest), timeout=10)
    metrics = json.loads(first.metrics_json)
    assert first.fitted_on == "all"
    final = metrics["final_fit"]
    assert final["train_size"] == FIRST_MODEL["limit"] > metrics["train_size"] + metrics["validation_size"]
    assert final["fit_seconds"] > 0 and final["n_support_vectors"] > 0
    # Its figures stay the split fit's: on validation digits that fit never saw (the refit has seen them, and
    # answers them nearly always as the split fit did).
    assert 0.9 < metrics["accuracy"] < 1.0 and final["validation_agreement_with_split_fit"] > 0.95


def test_the_gate_compares_only_on_digits_neither_model_was_trained_on(
    stack: LocalStack, models: models_pb2_grpc.ModelsStub, training: training_pb2_grpc.TrainingStub,
    admin: Metadata,
) -> None:
    def active() -> str:
        return str(models.ListModels(models_pb2.ListModelsRequest(), timeout=10).active_version)

    before = active()
    first = models.GetModel(models_pb2.GetModelRequest(version=before), timeout=10)
    # The active model's own split: the same held-out digits for both, so the gate compares the recorded figures
    # (and, the recipe and data being the same, finds the new version no better).
    spec = json.loads(first.report_json)["spec"]
    same = retrain(training, admin, seed=spec["seed"], limit=spec["limit"])
    assert "on the same validation digits" in same.outcome and "not better" in same.outcome, same.outcome
    assert active() == before

    # Another split: the active model (a weak one, fitted on 800 of 1,000 digits drawn with seed 7) was fitted on
    # some of this job's validation digits. Those are dropped, both models are scored on the rest, and the job's
    # winner, better there, is activated; the outcome, the report and the promotion log say so with the counts.
    weak = retrain(training, admin, seed=7, limit=1000, no_activate=True, **WEAK).version
    models.ActivateModel(models_pb2.ActivateModelRequest(version=weak, reason="test: a weak model on another split"),
                         metadata=admin, timeout=30)
    try:
        other = retrain(training, admin, seed=3)
        print(f"[another split] {other.outcome}")
        compared = re.fullmatch(
            rf"activated {other.version}: (accuracy \S+ > \S+ and weighted F1 \S+ >= \S+ on the ([\d,]+) validation "
            rf"digits neither model was fitted on \(([\d,]+) of the job's 1,000 dropped: {weak} was fitted on them\))",
            other.outcome)
        assert compared, other.outcome
        kept, dropped = int(compared[2].replace(",", "")), int(compared[3].replace(",", ""))
        assert kept + dropped == 1000 and 0 < dropped < 1000
        assert active() == other.version
        report = json.loads(models.GetModel(models_pb2.GetModelRequest(version=other.version),
                                            timeout=10).report_json)["active"]
        assert (report["version"], report["digits"], report["validation"]) == (weak, kept, 1000)
        assert registry_of(stack).promotions(1)[0].why == compared[1]
    finally:
        models.ActivateModel(models_pb2.ActivateModelRequest(version=before, reason="test done"), metadata=admin,
                             timeout=30)


def test_unknown_version_is_not_found(models: models_pb2_grpc.ModelsStub, admin: Metadata) -> None:
    with pytest.raises(grpc.RpcError) as error:
        models.ActivateModel(models_pb2.ActivateModelRequest(version="v999"), metadata=admin, timeout=10)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "v999" in (error.value.details() or "")


def test_tampered_blob_is_refused_and_the_active_model_keeps_serving(
    stack: LocalStack, models: models_pb2_grpc.ModelsStub, training: training_pb2_grpc.TrainingStub,
    recognizer: recognizer_pb2_grpc.RecognizerStub, admin: Metadata,
) -> None:
    serving = models.ListModels(models_pb2.ListModelsRequest(), timeout=10).active_version
    job = retrain(training, admin, seed=11, no_activate=True)
    client = stack.redis_client()
    stored = client.get(blob_key(job.version))
    assert isinstance(stored, bytes)
    blob = bytearray(stored)
    blob[len(blob) // 2] ^= 0xFF
    client.set(blob_key(job.version), bytes(blob))

    with pytest.raises(grpc.RpcError) as error:
        models.ActivateModel(models_pb2.ActivateModelRequest(version=job.version), metadata=admin, timeout=30)
    assert error.value.code() == grpc.StatusCode.DATA_LOSS
    details = error.value.details() or ""
    assert "digest" in details or "signature" in details
    assert models.ListModels(models_pb2.ListModelsRequest(), timeout=10).active_version == serving

    # A writer that bypasses the gateway: the replicas must still refuse the forged version.
    registry = registry_of(stack)
    assert registry.activate(job.version, expected=serving, why="forged by the test")
    time.sleep(3 * float(stack.env["DIGITS_MODEL_POLL_SECONDS"]) + 1)
    assert served_versions(recognizer) == {serving}
    logs = "".join((stack.run_dir / "logs" / f"inference-{i}.log").read_text() for i in (1, 2))
    assert "cannot serve model" in logs and job.version in logs
    assert registry.activate(serving, expected=job.version, why="undo the forgery")
    assert client.get(ACTIVE_KEY) == serving.encode()
