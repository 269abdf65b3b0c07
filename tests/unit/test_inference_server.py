"""The inference Recognizer with the real decoder and micro-batcher and a stand-in model (pure logic): answers
(digit, confidence, probabilities, version, the model's input when asked), batch limits, and PredictEach's
per-item refusals."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import pytest

from digits.errors import InvalidInput, Overloaded, TooLarge, Unavailable
from digits.modelling.imaging import Reading
from digits.modelling.verdicts import Answers, Thresholds
from digits.settings import Settings
from digits.v1 import recognizer_pb2 as pb
from services.inference.active_model import Loaded
from services.inference.batching import MicroBatcher
from services.inference.decoding import Decoder
from services.inference.server import Recognizer, _answer
from services.inference.streaming import refusal_for


class StandInModel:
    """digit = the first pixel mod 10, with probability 0.91; every other digit 0.01. The second pixel is the
    familiarity, the third the margin; both thresholds are 1."""

    thresholds: Thresholds | None = Thresholds(familiarity=1.0, margin=1.0)

    def answer(self, rows: npt.NDArray[np.float32]) -> Answers:
        digits = rows[:, 0].astype(np.int64) % 10
        probabilities = np.full((len(rows), 10), 0.01, dtype=np.float32)
        probabilities[np.arange(len(rows)), digits] = 0.91
        return Answers(digits, probabilities, (digits + 1) % 10, rows[:, 2].astype(np.float64),
                       rows[:, 1].astype(np.float64))


class Follower:
    def __init__(self, loaded: Loaded | None) -> None:
        self.current = loaded

    def require(self) -> Loaded:
        if self.current is None:
            raise Unavailable("no model is loaded yet; this replica is still starting")
        return self.current


LOADED = Loaded("v4", "digest", StandInModel())  # type: ignore[arg-type]


def pixels(first: float, return_model_input: bool = False, familiarity: float = 5.0,
           margin: float = 5.0) -> pb.PredictRequest:
    return pb.PredictRequest(pixels=pb.Pixels(values=[first, familiarity, margin] + [0.0] * 781),
                             return_model_input=return_model_input)


def one_answer(digit: int, probabilities: npt.NDArray[np.float32], familiarity: float = 5.0,
               margin: float = 5.0) -> Answers:
    return Answers(np.array([digit]), probabilities[np.newaxis], np.array([(digit + 1) % 10]),
                   np.array([margin]), np.array([familiarity]))


def with_recognizer(test: Callable[[Recognizer], Awaitable[Any]], loaded: Loaded | None = LOADED,
                    max_batch_items: int = 8) -> Any:
    async def run() -> Any:
        settings = Settings(max_batch_items=max_batch_items)
        batcher, decoder = MicroBatcher(max_size=64, max_wait_seconds=0), Decoder(settings)
        try:
            return await test(Recognizer(Follower(loaded), batcher, decoder, settings))  # type: ignore[arg-type]
        finally:
            await batcher.close()
            decoder.close()

    return asyncio.run(run())


def test_an_answer_carries_digit_confidence_probabilities_and_version() -> None:
    probabilities = np.array([0.05] * 9 + [0.55], dtype=np.float32)
    response = _answer(LOADED, one_answer(9, probabilities), 0, Reading(np.zeros(784, np.float32), 1), False)
    assert (response.digit, response.version, response.verdict) == (9, "v4", pb.VERDICT_DIGIT)
    assert response.confidence == pytest.approx(0.55)
    assert list(response.probabilities) == pytest.approx(probabilities.tolist())
    assert response.model_input == b""


def test_the_model_input_is_returned_as_rounded_clipped_bytes_when_asked() -> None:
    seen = np.array([-3.0, 0.4, 0.6, 254.5, 300.0] + [0.0] * 779, dtype=np.float32)
    response = _answer(LOADED, one_answer(0, np.full(10, 0.1, dtype=np.float32)), 0, Reading(seen, 1), True)
    assert len(response.model_input) == 784
    assert list(response.model_input[:5]) == [0, 0, 1, 254, 255]  # 254.5 rounds half to even


@pytest.mark.parametrize(("familiarity", "margin", "marks", "verdict"), [
    (5.0, 5.0, 1, pb.VERDICT_DIGIT), (5.0, 0.5, 1, pb.VERDICT_UNSURE), (0.5, 0.5, 1, pb.VERDICT_NOT_A_DIGIT),
    (0.5, 5.0, 2, pb.VERDICT_SEVERAL), (5.0, 5.0, 3, pb.VERDICT_SEVERAL)])
def test_an_answer_carries_its_verdict_scores_runner_up_and_marks(familiarity: float, margin: float, marks: int,
                                                                 verdict: int) -> None:
    probabilities = np.full(10, 0.1, dtype=np.float32)
    response = _answer(LOADED, one_answer(4, probabilities, familiarity, margin), 0,
                       Reading(np.zeros(784, np.float32), marks), False)
    assert response.verdict == verdict and (response.digit, response.runner_up, response.marks) == (4, 5, marks)
    assert (response.familiarity, response.margin) == (familiarity, margin)


def test_a_model_without_scores_answers_digit_with_its_scores_unset() -> None:
    class Plain(StandInModel):
        thresholds = None

        def answer(self, rows: npt.NDArray[np.float32]) -> Answers:
            full = super().answer(rows)
            return Answers.from_probabilities(full.labels, full.probabilities)

    response = _answer(Loaded("v1", "digest", Plain()), Plain().answer(np.zeros((1, 784), np.float32)), 0,  # type: ignore[arg-type]
                       Reading(np.zeros(784, np.float32), 1), False)
    assert response.verdict == pb.VERDICT_DIGIT
    assert not response.HasField("familiarity") and not response.HasField("margin")


def test_a_refusal_carries_the_code_the_message_and_a_retry_hint_if_any() -> None:
    refusal = refusal_for(InvalidInput("item 2 is not an image"))
    assert (refusal.code, refusal.message, refusal.retry_after_seconds) == (
        grpc.StatusCode.INVALID_ARGUMENT.value[0], "item 2 is not an image", 0)
    busy = refusal_for(Overloaded("too many pixels in flight"))
    assert busy.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0] and busy.retry_after_seconds == 1


def test_predict_answers_with_the_loaded_version() -> None:
    async def one(recognizer: Recognizer) -> pb.PredictResponse:
        return await recognizer.Predict(pixels(7, return_model_input=True), None)  # type: ignore[arg-type]

    response = with_recognizer(one)
    assert (response.digit, response.version) == (7, "v4") and response.confidence == pytest.approx(0.91)
    assert response.model_input[0] == 7 and len(response.model_input) == 784


def test_without_a_model_predictions_are_unavailable() -> None:
    async def one(recognizer: Recognizer) -> pb.PredictResponse:
        return await recognizer.Predict(pixels(7), None)  # type: ignore[arg-type]

    with pytest.raises(Unavailable, match="still starting"):
        with_recognizer(one, loaded=None)


def test_a_batch_answers_in_order_and_only_items_that_asked_get_their_input() -> None:
    async def batch(recognizer: Recognizer) -> pb.PredictBatchResponse:
        request = pb.PredictBatchRequest(requests=[pixels(1), pixels(2, return_model_input=True), pixels(3)])
        return await recognizer.PredictBatch(request, None)  # type: ignore[arg-type]

    responses = with_recognizer(batch).responses
    assert [r.digit for r in responses] == [1, 2, 3]
    assert [len(r.model_input) for r in responses] == [0, 784, 0]


def test_an_empty_or_oversized_batch_is_refused() -> None:
    async def empty(recognizer: Recognizer) -> Any:
        return await recognizer.PredictBatch(pb.PredictBatchRequest(), None)  # type: ignore[arg-type]

    async def oversized(recognizer: Recognizer) -> Any:
        request = pb.PredictBatchRequest(requests=[pixels(1)] * 3)
        return await recognizer.PredictBatch(request, None)  # type: ignore[arg-type]

    async def oversized_each(recognizer: Recognizer) -> Any:
        return await recognizer.PredictEach(pb.PredictEachRequest(requests=[pixels(1)] * 3), None)  # type: ignore[arg-type]

    with pytest.raises(InvalidInput, match="the batch is empty"):
        with_recognizer(empty)
    with pytest.raises(TooLarge, match="the batch has 3 items; the limit is 2"):
        with_recognizer(oversized, max_batch_items=2)
    with pytest.raises(TooLarge, match="the call has 3 items; the limit is 2"):
        with_recognizer(oversized_each, max_batch_items=2)
    assert with_recognizer(oversized, max_batch_items=3).responses[0].digit == 1  # at the limit: answered


def test_predict_each_refuses_a_bad_item_alone_and_answers_the_others() -> None:
    async def each(recognizer: Recognizer) -> pb.PredictEachResponse:
        bad = pb.PredictRequest(pixels=pb.Pixels(values=[1.0] * 10))  # not 784 values
        request = pb.PredictEachRequest(requests=[pixels(4), bad, pixels(6, return_model_input=True)])
        return await recognizer.PredictEach(request, None)  # type: ignore[arg-type]

    first, refused, last = with_recognizer(each).outcomes
    assert first.WhichOneof("outcome") == "response" and first.response.digit == 4
    assert refused.WhichOneof("outcome") == "refusal"
    assert refused.refusal.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and refused.refusal.message
    assert last.response.digit == 6 and len(last.response.model_input) == 784


def test_predict_each_with_every_item_refused_or_none_calls_no_model() -> None:
    async def each(recognizer: Recognizer) -> tuple[pb.PredictEachResponse, pb.PredictEachResponse]:
        bad = pb.PredictRequest(image=b"not an image")
        return (await recognizer.PredictEach(pb.PredictEachRequest(requests=[bad]), None),  # type: ignore[arg-type]
                await recognizer.PredictEach(pb.PredictEachRequest(), None))  # type: ignore[arg-type]

    refused, empty = with_recognizer(each)
    assert [o.WhichOneof("outcome") for o in refused.outcomes] == ["refusal"]
    assert list(empty.outcomes) == []
