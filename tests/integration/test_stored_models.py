"""Models a registry stored before the package layout changed keep serving after it: registered as an older
trainer registered them, they activate, every replica serves them with the answers they gave when they were
pickled, and a rollback returns to one of them."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import numpy as np

from digits.stack.local import LocalStack
from digits.training import datasets
from digits.v1 import models_pb2, models_pb2_grpc, recognizer_pb2, recognizer_pb2_grpc

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "stored_models"
ANSWERS = json.loads((FIXTURES / "answers.json").read_text())
Metadata = tuple[tuple[str, str], ...]


def register_as_before(stack: LocalStack, name: str) -> str:
    """The fixture blob registered with the record an older trainer wrote: signed, its served check passed then."""
    blob = (FIXTURES / f"{name}.joblib").read_bytes()
    record = stack.registry(signing=True).register(
        blob, kind=name, params={}, metrics={"accuracy": 0.9, "f1_weighted": 0.9}, dataset={"source": "sample"},
        split={}, fitted_on="split", code_version="e38e643", served_check={"passed": True, "rows": 64},
    )
    return record.version


def answers(recognizer: recognizer_pb2_grpc.RecognizerStub, pixels: np.ndarray) -> tuple[set[str], list[int]]:
    request = recognizer_pb2.PredictBatchRequest(requests=[
        recognizer_pb2.PredictRequest(pixels=recognizer_pb2.Pixels(values=row.tolist())) for row in pixels])
    replies = [recognizer.PredictBatch(request, timeout=30).responses for _ in range(4)]  # reaches every replica
    return {r.version for reply in replies for r in reply}, [r.digit for r in replies[-1]]


def serve(models: models_pb2_grpc.ModelsStub, recognizer: recognizer_pb2_grpc.RecognizerStub, version: str,
          pixels: np.ndarray) -> list[int]:
    """Wait until every replica reports ``version`` serving, then read the answers (from that version only)."""
    deadline = time.monotonic() + 60
    while True:
        replicas = models.ListModels(models_pb2.ListModelsRequest(), timeout=10).replicas
        if replicas and all(r.version == version and r.state == "serving" for r in replicas):
            break
        # A replica may still report an earlier test's failure until its next report: wait, then say what it said.
        said = [(r.version, r.state, r.error) for r in replicas]
        assert time.monotonic() < deadline, f"replicas did not serve {version}: {said}"
        time.sleep(0.2)
    versions, digits = answers(recognizer, pixels)
    assert versions == {version}
    return digits


def test_models_stored_before_the_move_activate_serve_and_roll_back(
    stack: LocalStack, models: models_pb2_grpc.ModelsStub, recognizer: recognizer_pb2_grpc.RecognizerStub,
    admin: Metadata,
) -> None:
    pixels = datasets.load_sample().pixels[::250].astype(np.float32)
    before = models.ListModels(models_pb2.ListModelsRequest(), timeout=10).active_version
    vote, blend = register_as_before(stack, "vote-soft"), register_as_before(stack, "blend-logreg")
    try:
        for version, name in ((vote, "vote-soft"), (blend, "blend-logreg")):
            models.ActivateModel(models_pb2.ActivateModelRequest(version=version, reason="stored before the move"),
                                 metadata=admin, timeout=30)
            assert serve(models, recognizer, version, pixels) == ANSWERS["models"][name]["labels"]
        rolled = models.Rollback(models_pb2.RollbackRequest(reason="back to a version stored before the move"),
                                 metadata=admin, timeout=30)
        assert (rolled.previous_version, rolled.active_version) == (blend, vote)
        assert serve(models, recognizer, vote, pixels) == ANSWERS["models"]["vote-soft"]["labels"]
    finally:
        try:
            models.ActivateModel(models_pb2.ActivateModelRequest(version=before, reason="test done"), metadata=admin,
                                 timeout=30)
        except grpc.RpcError as error:
            raise AssertionError(f"could not restore {before}: {error.details()}") from error
    print(f"[stored before the move] {vote} (vote-soft) and {blend} (blend-logreg), pickled at e38e643, served by "
          "every replica with their recorded answers; a rollback returned to the first")
