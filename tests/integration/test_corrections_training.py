"""Corrections back into training, on the real stack: predictions corrected and accepted by an admin, a retrain on
``sample+corrections`` whose report says how many corrections it fitted on and kept to validate on, and the
predicting version's page showing what people corrected."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

from digits.client import Client
from digits.settings import process_environment
from digits.stack.local import LocalStack
from digits.v1 import models_pb2, models_pb2_grpc, training_pb2_grpc
from tests.integration.digits_data import as_png, held_out
from tests.integration.test_registry_flow import retrain
from tests.stacks import ADMIN_TOKEN

pytestmark = pytest.mark.integration
Metadata = tuple[tuple[str, str], ...]
# Five each of three digits: few enough for a caller's share of corrections (DIGITS_CORRECTIONS_PER_MINUTE), and
# enough of each digit for a stratified fifth of them to validate on.
DIGITS, EACH = (1, 4, 7), 5


def test_retrain_on_accepted_corrections_reports_how_they_were_split(
    stack: LocalStack, models: models_pb2_grpc.ModelsStub, training: training_pb2_grpc.TrainingStub,
    admin: Metadata,
) -> None:
    pixels, labels = held_out(200)
    chosen = np.concatenate([np.flatnonzero(labels == d)[:EACH] for d in DIGITS])
    assert len(chosen) == len(DIGITS) * EACH
    with Client(stack.ports.gateway, insecure=True, token=ADMIN_TOKEN) as client:
        answers = [client.predict(as_png(pixels[row])) for row in chosen]
        for answer, row in zip(answers, chosen, strict=True):
            assert client.correct(answer.prediction_id, int(labels[row])).created
            assert client.accept(answer.prediction_id).status == "accepted"
        square = np.zeros((28, 28), np.float32)
        square[6:22, 6:22], square[9:19, 9:19] = 255, 0  # a hollow square: no digit
        not_a_digit = client.predict(as_png(square.ravel()))
        client.correct(not_a_digit.prediction_id, None)
        client.accept(not_a_digit.prediction_id)

    job = retrain(training, admin, data="sample+corrections", limit=1000, candidates=["logreg"], no_activate=True)
    report = json.loads(models.GetModel(models_pb2.GetModelRequest(version=job.version), timeout=10).report_json)
    sample, corrections = report["dataset"]["parts"]
    assert (sample["source"], sample["size"]) == ("sample", 5000) and "fit" not in sample
    # Other tests of the session may have accepted a correction or two; the "not a digit" one is never a digit.
    assert corrections["source"] == "corrections" and corrections["size"] >= len(chosen)
    assert corrections["fit"] + corrections["validation"] == corrections["size"]
    assert corrections["validation"] >= len(DIGITS)  # a stratified fifth: at least one of each digit corrected
    assert "a stratified 20% of corrections" in report["split"]["validated_on"]

    shown = subprocess.run(
        [sys.executable, "-m", "digits.cli", "--gateway", stack.ports.gateway, "models", "show", job.version],
        env=process_environment() | {"DIGITS_TOKEN": ADMIN_TOKEN}, capture_output=True, text=True, timeout=60,
        check=True).stdout
    assert (f"data: corrections, {corrections['size']} digits ({corrections['fit']} fitted on, "
            f"{corrections['validation']} kept to validate on)") in shown

    predicted_by = answers[0].version
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.ports.gateway_http}/models/{predicted_by}",
                                timeout=30) as response:
        page = response.read().decode()
    assert "What people corrected" in page and "accepted and pending" in page
    assert '<th scope="col">not a digit</th>' in page
