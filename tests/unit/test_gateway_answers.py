"""An answer's verdict in the gateway's JSON: the enum in plain words (null when not judged), scores null when
unset (not 0), and /api/predict's body, in process against a stand-in forwarder, valid by /openapi.json."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]  # no stubs; openapi-spec-validator uses it

from digits.settings import Settings
from digits.v1 import recognizer_pb2 as pb
from services.gateway.answers import verdict_fields, verdict_word
from services.gateway.http import create_app
from services.gateway.openapi import DOCUMENT, VERDICTS


@pytest.mark.parametrize(("verdict", "word"), [
    (pb.VERDICT_DIGIT, "DIGIT"), (pb.VERDICT_UNSURE, "UNSURE"), (pb.VERDICT_NOT_A_DIGIT, "NOT_A_DIGIT"),
    (pb.VERDICT_SEVERAL, "SEVERAL"), (pb.VERDICT_UNSPECIFIED, None), (99, None),  # 99: newer than this gateway
])
def test_each_verdict_is_a_plain_word_and_not_judged_is_none(verdict: int, word: str | None) -> None:
    assert verdict_word(pb.PredictResponse(verdict=verdict)) == word  # type: ignore[arg-type]


def test_every_word_is_one_the_openapi_document_lists() -> None:
    words = {verdict_word(pb.PredictResponse(verdict=v)) for v in pb.Verdict.values()}
    assert words == {*VERDICTS, None}


def test_scores_are_null_when_unset_and_kept_when_zero() -> None:
    unset = verdict_fields(pb.PredictResponse(verdict=pb.VERDICT_SEVERAL, runner_up=3, marks=2))
    assert unset == {"verdict": "SEVERAL", "runner_up": 3, "familiarity": None, "margin": None, "marks": 2}
    zero = verdict_fields(pb.PredictResponse(verdict=pb.VERDICT_UNSURE, familiarity=0.0, margin=-0.25, marks=1))
    assert (zero["familiarity"], zero["margin"]) == (0.0, -0.25)


class FakeForwarder:
    """What /api/predict needs of the forwarder: admission, and one answer to give."""

    def __init__(self, answer: pb.PredictResponse) -> None:
        self.answer = answer

    @contextlib.contextmanager
    def admitted(self, size: int) -> Iterator[None]:
        yield

    async def predict(self, request: pb.PredictRequest, timeout: float | None = None) -> pb.PredictResponse:
        return self.answer


def predicted(answer: pb.PredictResponse) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        app = create_app(FakeForwarder(answer), None, None, None, Settings(), lambda: True)  # type: ignore[arg-type]
        async with TestClient(TestServer(app)) as client:
            response = await client.post("/api/predict", json={"pixels": [0] * 784})
            assert response.status == 200
            body: dict[str, Any] = await response.json()
            return body

    return asyncio.run(run())


PREDICTION = Draft202012Validator(DOCUMENT["components"]["schemas"]["Prediction"])
BASE = {"digit": 4, "confidence": 0.5, "probabilities": [0.05] * 10, "version": "v2", "prediction_id": "a" * 32}


def reply(**verdict: Any) -> pb.PredictResponse:
    """An answer with BASE's digit and figures, and ``verdict``'s fields."""
    return pb.PredictResponse(digit=4, confidence=0.5, probabilities=[0.05] * 10, version="v2",
                              prediction_id="a" * 32, **verdict)


@pytest.mark.parametrize(("answer", "expected"), [
    (reply(verdict=pb.VERDICT_UNSURE, runner_up=9, familiarity=1.5, margin=0.125, marks=1),
     {"verdict": "UNSURE", "runner_up": 9, "familiarity": 1.5, "margin": 0.125, "marks": 1}),
    (reply(verdict=pb.VERDICT_NOT_A_DIGIT, runner_up=2, familiarity=-2.0, margin=0.5, marks=0),
     {"verdict": "NOT_A_DIGIT", "runner_up": 2, "familiarity": -2.0, "margin": 0.5, "marks": 0}),
    (reply(verdict=pb.VERDICT_SEVERAL, runner_up=1, marks=3),
     {"verdict": "SEVERAL", "runner_up": 1, "familiarity": None, "margin": None, "marks": 3}),
    (reply(verdict=pb.VERDICT_DIGIT, runner_up=7, familiarity=3.0, margin=2.0, marks=1),
     {"verdict": "DIGIT", "runner_up": 7, "familiarity": 3.0, "margin": 2.0, "marks": 1}),
    (reply(), {"verdict": None, "runner_up": 0, "familiarity": None, "margin": None, "marks": 0}),
], ids=["unsure", "not a digit", "several, no scores", "digit", "not judged"])
def test_api_predict_answers_the_verdict_beside_the_digit(answer: pb.PredictResponse,
                                                          expected: dict[str, Any]) -> None:
    body = predicted(answer)
    assert {key: body[key] for key in expected} == expected
    assert body["digit"] == 4 and body["prediction_id"] == "a" * 32  # the rest as before
    PREDICTION.validate(body)


def test_the_openapi_prediction_requires_every_verdict_key() -> None:
    PREDICTION.validate({**BASE, "verdict": None, "runner_up": 0, "familiarity": None, "margin": None, "marks": 0})
    assert not PREDICTION.is_valid({**BASE, "runner_up": 0, "familiarity": None, "margin": None, "marks": 0})
    assert not PREDICTION.is_valid({**BASE, "verdict": "MAYBE", "runner_up": 0, "familiarity": None, "margin": None,
                                    "marks": 0})
