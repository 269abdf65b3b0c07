"""Bad input gets the right status and a message that says what was wrong; the services stay up."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

import aiohttp
import grpc
import pytest

from digits.platform.healthcheck import is_serving
from digits.stack.local import LocalStack
from digits.v1 import (
    models_pb2,
    models_pb2_grpc,
    recognizer_pb2,
    recognizer_pb2_grpc,
    training_pb2,
    training_pb2_grpc,
)
from tests.integration.digits_data import as_png, held_out

pb = recognizer_pb2
INVALID = grpc.StatusCode.INVALID_ARGUMENT
Metadata = tuple[tuple[str, str], ...]
AdminCall = Callable[[Metadata], object]


def pixels(values: list[float]) -> pb.PredictRequest:
    return pb.PredictRequest(pixels=pb.Pixels(values=values))


CASES = [
    ("empty bytes", pb.PredictRequest(image=b""), INVALID, "empty"),
    ("no input", pb.PredictRequest(), INVALID, "no input"),
    ("not an image", pb.PredictRequest(image=b"this is not an image" * 10), INVALID, "image"),
    ("truncated png", pb.PredictRequest(image=as_png(held_out(1)[0][0])[:60]), INVALID, "image"),
    ("20 MB payload", pb.PredictRequest(image=b"\x89PNG" + bytes(20_000_000)), grpc.StatusCode.RESOURCE_EXHAUSTED,
     "larger than"),
    ("783 pixels", pixels([0.0] * 783), INVALID, "784"),
    ("NaN pixel", pixels([0.0] * 783 + [math.nan]), INVALID, "NaN"),
    ("pixel above 255", pixels([0.0] * 783 + [300.0]), INVALID, "255"),
]


@pytest.mark.parametrize(("name", "request_", "code", "word"), CASES, ids=[c[0] for c in CASES])
def test_bad_predict_input(
    stack: LocalStack, recognizer: recognizer_pb2_grpc.RecognizerStub, name: str, request_: pb.PredictRequest,
    code: grpc.StatusCode, word: str,
) -> None:
    with pytest.raises(grpc.RpcError) as error:
        recognizer.Predict(request_, timeout=30)
    assert error.value.code() == code, error.value.details()
    assert word.lower() in (error.value.details() or "").lower(), error.value.details()
    assert is_serving(stack.ports.gateway, "digits.v1.Recognizer")
    good = recognizer.Predict(pixels(held_out(1)[0][0].tolist()), timeout=10)
    assert good.version


def test_bad_batch_item_is_named(recognizer: recognizer_pb2_grpc.RecognizerStub) -> None:
    good = pixels(held_out(1)[0][0].tolist())
    with pytest.raises(grpc.RpcError) as error:
        recognizer.PredictBatch(pb.PredictBatchRequest(requests=[good, good, pixels([1.0])]), timeout=10)
    assert error.value.code() == INVALID
    assert "item 2" in (error.value.details() or "")


HTTP_CASES = [
    ("not json", {"data": b"{nope", "headers": {"Content-Type": "application/json"}}, 400, "JSON"),
    ("wrong count", {"json": {"pixels": [1, 2, 3]}}, 400, "784"),
    ("not numbers", {"json": {"pixels": ["a"] * 784}}, 400, "number"),
    ("deeply nested", {"data": b"[" * 100_000 + b"]" * 100_000, "headers": {"Content-Type": "application/json"}},
     400, "JSON"),
    ("wrong type", {"data": b"hello", "headers": {"Content-Type": "text/plain"}}, 400, "Content-Type"),
    ("not an image", {"data": b"GIF89a garbage", "headers": {"Content-Type": "image/gif"}}, 400, "image"),
    ("too large", {"data": bytes(20_000_000), "headers": {"Content-Type": "image/png"}}, 413, "limit"),
    ("integer beyond any float", {"data": b'{"pixels": [' + b", ".join([b"1" + b"0" * 400] * 784) + b"]}",
                                  "headers": {"Content-Type": "application/json"}}, 400, "number"),
]


@pytest.mark.parametrize(("name", "kwargs", "status", "word"), HTTP_CASES, ids=[c[0] for c in HTTP_CASES])
def test_bad_http_predict(stack: LocalStack, name: str, kwargs: dict[str, object], status: int, word: str) -> None:
    async def post() -> tuple[int, dict[str, str]]:
        url = f"http://127.0.0.1:{stack.ports.gateway_http}/api/predict"
        async with aiohttp.ClientSession() as session, session.post(url, **kwargs) as response:  # type: ignore[arg-type]
            return response.status, await response.json()

    got, body = asyncio.run(post())
    assert got == status, body
    assert word.lower() in body["error"].lower(), body


def test_admin_calls_need_the_token(
    models: models_pb2_grpc.ModelsStub, training: training_pb2_grpc.TrainingStub
) -> None:
    calls: list[AdminCall] = [
        lambda md: models.ActivateModel(models_pb2.ActivateModelRequest(version="v1"), metadata=md, timeout=10),
        lambda md: models.Rollback(models_pb2.RollbackRequest(), metadata=md, timeout=10),
        lambda md: training.Retrain(training_pb2.RetrainRequest(), metadata=md, timeout=10),
        lambda md: training.ListJobs(training_pb2.ListJobsRequest(), metadata=md, timeout=10),
    ]
    for call in calls:
        for metadata in [(), (("authorization", "Bearer wrong-token"),), (("authorization", "Basic abc"),)]:
            with pytest.raises(grpc.RpcError) as error:
                call(metadata)
            assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "token" in (error.value.details() or "")


def test_bad_retrain_spec_is_refused(
    training: training_pb2_grpc.TrainingStub, admin: tuple[tuple[str, str], ...]
) -> None:
    with pytest.raises(grpc.RpcError) as error:
        training.Retrain(training_pb2.RetrainRequest(data="ftp://elsewhere"), metadata=admin, timeout=10)
    assert error.value.code() == INVALID
    assert "sample" in (error.value.details() or "")
