"""Corrections end to end, on the real stack: every answer carries a prediction id (gRPC, HTTP, Open Inference);
a correction of it over gRPC, HTTP and the CLI; the admin's review (the training token refused); the accepted ones
read back by the trainer's Redis user as the very pixels the model saw; unknown, expired, hostile and duplicate
corrections; and a flood past a caller's share answered 429 / RESOURCE_EXHAUSTED."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from digits.client import (
    Client,
    FailedPreconditionError,
    InvalidInputError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
)
from digits.oip import grpc_predict_v2_pb2 as oip
from digits.oip import grpc_predict_v2_pb2_grpc as oip_grpc
from digits.platform.corrections import accepted, new_prediction_id
from digits.settings import process_environment
from digits.stack.local import REPO, LocalStack, free_ports
from digits.v1 import recognizer_pb2 as pb
from digits.v1 import recognizer_pb2_grpc
from tests.integration.digits_data import as_png, held_out
from tests.stacks import ADMIN_TOKEN

pytestmark = pytest.mark.integration
TRAINING_TOKEN = "test-training-token-for-corrections"


def post(url: str, document: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
    """POST JSON; the status, the JSON answer and the headers, whatever the status."""
    request = urllib.request.Request(url, data=json.dumps(document).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), dict(error.headers)


def cli(stack: LocalStack, *args: str, token: str = ADMIN_TOKEN) -> subprocess.CompletedProcess[str]:
    env = process_environment() | {"DIGITS_TOKEN": token}
    return subprocess.run([sys.executable, "-m", "digits.cli", "--gateway", stack.ports.gateway, *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_every_answer_carries_a_prediction_id(stack: LocalStack, channel: grpc.Channel) -> None:
    pixels, _ = held_out(3)
    recognizer = recognizer_pb2_grpc.RecognizerStub(channel)
    one = recognizer.Predict(pb.PredictRequest(image=as_png(pixels[0])), timeout=10)
    batch = recognizer.PredictBatch(pb.PredictBatchRequest(requests=[
        pb.PredictRequest(pixels=pb.Pixels(values=r.tolist())) for r in pixels]), timeout=10).responses
    # The gateway asked for the model's input to keep it, and gave it to nobody who did not ask.
    assert not one.model_input and not any(r.model_input for r in batch)
    asked = recognizer.Predict(pb.PredictRequest(image=as_png(pixels[0]), return_model_input=True), timeout=10)
    assert len(asked.model_input) == 784

    http = f"http://127.0.0.1:{stack.ports.gateway_http}"
    request = urllib.request.Request(f"{http}/api/predict", data=as_png(pixels[1]),
                                     headers={"Content-Type": "image/png"})
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
    assert "model_input" not in answer

    rows = [{"name": "pixels", "datatype": "FP32", "shape": [2, 784], "data": pixels[:2].ravel().tolist()}]
    status, mine, _ = post(f"{http}/v2/models/digits/infer", {"inputs": rows})
    status_echo, theirs, _ = post(f"{http}/v2/models/digits/infer", {"id": "req-7", "inputs": rows})
    assert status == status_echo == 200
    rest_ids = mine["parameters"]["prediction_ids"].split(",")
    assert mine["id"] == ",".join(rest_ids)  # no id of its own: ours
    assert theirs["id"] == "req-7" and len(theirs["parameters"]["prediction_ids"].split(",")) == 2

    infer = oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(oip.ModelInferRequest(
        model_name="digits", id="mine", inputs=[oip.ModelInferRequest.InferInputTensor(
            name="pixels", datatype="FP32", shape=[1, 784],
            contents=oip.InferTensorContents(fp32_contents=pixels[2].tolist()))]), timeout=10)
    grpc_id = infer.parameters["prediction_ids"].string_param
    assert infer.id == "mine"

    ids = [one.prediction_id, *(r.prediction_id for r in batch), asked.prediction_id, answer["prediction_id"],
           *rest_ids, *theirs["parameters"]["prediction_ids"].split(","), grpc_id]
    assert len(ids) == len(set(ids)) == 11 and all(len(i) == 32 for i in ids)


def test_correct_over_grpc_http_and_the_cli_then_review_and_train_on_it(stack: LocalStack) -> None:
    pixels, labels = held_out(3)
    with Client(stack.ports.gateway, insecure=True, token=ADMIN_TOKEN) as client:
        answers = [client.predict(as_png(row), return_model_input=True) for row in pixels]
        seen = [a.model_input for a in answers]
        wrong = [(int(label) + 1) % 10 for label in labels]  # whatever it said, a truth it did not say

        by_grpc = client.correct(answers[0].prediction_id, wrong[0])
        assert (by_grpc.status, by_grpc.digit, by_grpc.created) == ("pending", wrong[0], True)
        assert (by_grpc.predicted_digit, by_grpc.model_version) == (answers[0].digit, answers[0].version)
        status, by_http, _ = post(f"http://127.0.0.1:{stack.ports.gateway_http}/api/feedback",
                                  {"prediction_id": answers[1].prediction_id, "not_a_digit": True})
        assert status == 201 and by_http["not_a_digit"] and by_http["status"] == "pending"
        said = cli(stack, "correct", "--json", answers[2].prediction_id, str(wrong[2]))
        assert said.returncode == 0, said.stderr
        assert json.loads(said.stdout)["digit"] == wrong[2]

        # The same again is the first answered again; another truth for it is refused.
        assert not client.correct(answers[0].prediction_id, wrong[0]).created
        with pytest.raises(FailedPreconditionError, match="corrected already"):
            client.correct(answers[0].prediction_id, None)

        # The admin reviews: the list, one shown with the pixels, two accepted and one rejected by the CLI.
        pending = {c.prediction_id for c in client.corrections("pending", 1000).corrections}
        assert {a.prediction_id for a in answers} <= pending
        assert client.correction(answers[0].prediction_id).model_input == seen[0]
        shown = cli(stack, "corrections", "show", answers[0].prediction_id)
        drawing = [line for line in shown.stdout.splitlines() if line.startswith("  |")]
        assert shown.returncode == 0 and len(drawing) == 28, shown.stdout + shown.stderr
        reviewed = cli(stack, "corrections", "accept", "--json", answers[0].prediction_id, answers[1].prediction_id)
        assert reviewed.returncode == 0, reviewed.stderr
        assert [json.loads(line)["status"] for line in reviewed.stdout.splitlines()] == ["accepted", "accepted"]
        assert cli(stack, "corrections", "reject", answers[2].prediction_id).returncode == 0
        listed = cli(stack, "corrections", "list", "--status", "accepted", "--json")
        assert {answers[0].prediction_id, answers[1].prediction_id} <= {
            json.loads(line)["prediction_id"] for line in listed.stdout.splitlines()}

    # What the trainer reads (as its own Redis user): the accepted digit with the pixels the model saw; the
    # accepted "not a digit" kept apart; the rejected one nowhere.
    data = accepted(stack.redis_client("trainer"))
    assert answers[0].prediction_id in data.ids and answers[2].prediction_id not in data.ids
    row = data.ids.index(answers[0].prediction_id)
    assert data.pixels[row].tobytes() == seen[0] and data.labels[row] == wrong[0]
    assert data.pixels.dtype == np.uint8 and data.labels.dtype == np.int64
    assert answers[1].prediction_id not in data.ids


def test_unknown_and_hostile_ids_get_clear_errors(stack: LocalStack) -> None:
    with Client(stack.ports.gateway, insecure=True) as client:
        with pytest.raises(NotFoundError, match=r"expired .* or never existed"):
            client.correct(new_prediction_id(), 3)
        with pytest.raises(InvalidInputError, match="32 hex digits"):
            client.correct("digits:active", 3)
    feedback = f"http://127.0.0.1:{stack.ports.gateway_http}/api/feedback"
    assert post(feedback, {"prediction_id": new_prediction_id(), "digit": 3})[0] == 404
    assert post(feedback, {"prediction_id": "a" * 32, "digit": 12})[0] == 400
    assert post(feedback, {"prediction_id": "a" * 32, "digit": 1, "evil": "x" * 500})[0] == 400
    assert post(feedback, ["not", "an", "object"])[0] == 400
    bad = cli(stack, "correct", new_prediction_id(), "eleven")
    assert bad.returncode == 2 and "0 to 9 or not-a-digit" in bad.stderr


@contextlib.contextmanager
def other_gateway(stack: LocalStack, **env: str) -> Iterator[tuple[str, int]]:
    """A second gateway in front of the same stack, configured by ``env``; yields its gRPC target and HTTP port."""
    grpc_port, http_port = free_ports(2)
    spec = next(p for p in stack.processes() if p.name == "gateway")
    log = (stack.run_dir / "logs" / f"gateway-corrections-{grpc_port}.log").open("ab")
    process = subprocess.Popen(list(spec.argv), cwd=REPO, stdout=log, stderr=log, env={
        **spec.env, "GATEWAY_GRPC_PORT": str(grpc_port), "GATEWAY_HTTP_PORT": str(http_port), **env})
    try:
        deadline = time.monotonic() + 30
        while not _listening(http_port):
            assert process.poll() is None and time.monotonic() < deadline, "the second gateway did not start"
            time.sleep(0.1)
        yield f"127.0.0.1:{grpc_port}", http_port
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_training_token_expiry_and_a_flood(stack: LocalStack) -> None:
    pixels, _ = held_out(1)
    with other_gateway(stack, DIGITS_TRAINING_TOKEN=TRAINING_TOKEN, DIGITS_KEEP_INPUTS_SECONDS="1",
                       DIGITS_CORRECTIONS_PER_MINUTE="5") as (target, http_port):
        with Client(target, insecure=True, token=TRAINING_TOKEN, timeout=20) as trainer:
            # Training may not review: PERMISSION_DENIED, on listing as on accepting.
            with pytest.raises(PermissionDeniedError, match="may not make corrections calls"):
                trainer.corrections()
            with pytest.raises(PermissionDeniedError):
                trainer.accept(new_prediction_id())
            # An answer's input is kept one second here: after that its id has expired.
            answer = trainer.predict(as_png(pixels[0]))
            time.sleep(1.5)
            with pytest.raises(NotFoundError, match=r"expired \(inputs are kept 1 s"):
                trainer.correct(answer.prediction_id, 3)

        # A flood from one address: 5 a minute pass (these are unknown ids: 404), then 429 with Retry-After,
        # over HTTP and over gRPC alike (one share per address).
        statuses = []
        for _ in range(12):
            status, body, headers = post(f"http://127.0.0.1:{http_port}/api/feedback",
                                         {"prediction_id": new_prediction_id(), "digit": 1})
            statuses.append(status)
        assert statuses[:4] == [404] * 4 and statuses[4:] == [429] * 8, statuses  # one went to the expired id
        assert int(headers["Retry-After"]) >= 1 and "too many corrections" in body["error"]
        with Client(target, insecure=True) as anyone, pytest.raises(OverloadedError) as limited:
            anyone.correct(new_prediction_id(), 1)
        assert limited.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and (limited.value.retry_after or 0) >= 1
