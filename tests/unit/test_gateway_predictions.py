"""Asking inference for the model's input without decoding a request: the flag read from and appended to
serialized requests, single and batched, exactly as protobuf reads them; malformed bytes left for inference."""

from __future__ import annotations

import pytest

from digits.v1 import recognizer_pb2 as pb
from services.gateway.predictions import (
    RETURN_MODEL_INPUT,
    Answers,
    asks_for_model_input,
    batch_asking_for_inputs,
)
from services.gateway.wire import WireError

IMAGE = bytes(range(256)) * 300  # a long bytes field: skipped by its length, never looked into


@pytest.mark.parametrize("request_", [
    pb.PredictRequest(image=IMAGE),
    pb.PredictRequest(image=IMAGE, return_model_input=True),
    pb.PredictRequest(pixels=pb.Pixels(values=[1.5] * 784), return_model_input=True),
    pb.PredictRequest(pixel_bytes=bytes(784)),
    pb.PredictRequest(),
])
def test_the_flag_is_read_as_protobuf_reads_it_and_appending_sets_it(request_: pb.PredictRequest) -> None:
    data = request_.SerializeToString()
    assert asks_for_model_input(data) == request_.return_model_input
    asked = pb.PredictRequest.FromString(data + RETURN_MODEL_INPUT)
    assert asked.return_model_input and asked.WhichOneof("input") == request_.WhichOneof("input")
    assert asked.image == request_.image and list(asked.pixels.values) == list(request_.pixels.values)


def test_the_last_occurrence_of_the_flag_wins() -> None:
    off_then_on = pb.PredictRequest(image=b"x").SerializeToString() + bytes([0x18, 0]) + bytes([0x18, 1])
    on_then_off = pb.PredictRequest(image=b"x").SerializeToString() + bytes([0x18, 1]) + bytes([0x18, 0])
    for data in (off_then_on, on_then_off):
        assert asks_for_model_input(data) == pb.PredictRequest.FromString(data).return_model_input


def test_every_item_of_a_batch_asks_and_each_says_whether_it_asked_itself() -> None:
    items = [pb.PredictRequest(image=IMAGE), pb.PredictRequest(pixel_bytes=bytes(784), return_model_input=True),
             pb.PredictRequest(pixels=pb.Pixels(values=[3.0] * 784))]
    for kind in (pb.PredictBatchRequest, pb.PredictEachRequest):
        rewritten, asked = batch_asking_for_inputs(kind(requests=items).SerializeToString())
        assert asked == [False, True, False]
        again = kind.FromString(rewritten).requests
        assert all(r.return_model_input for r in again)
        assert [r.WhichOneof("input") for r in again] == [r.WhichOneof("input") for r in items]
        assert again[0].image == IMAGE
    assert batch_asking_for_inputs(b"") == (b"", [])


@pytest.mark.parametrize("garbage", [b"\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x0a\x05ab", b"\x0f", b"\x80" * 20])
def test_malformed_bytes_are_left_alone(garbage: bytes) -> None:
    with pytest.raises(WireError):
        asks_for_model_input(garbage)
    with pytest.raises(WireError):
        batch_asking_for_inputs(garbage)


def test_a_batch_with_another_field_is_left_alone() -> None:
    with pytest.raises(WireError):
        batch_asking_for_inputs(bytes([0x10, 1]))


def test_answers_are_named_without_a_keeper_and_keep_what_they_hold() -> None:
    answers = Answers(None)
    reply = pb.PredictResponse(digit=3, version="v1", model_input=bytes(784))
    answers.finish(reply, wanted_input=False)
    assert len(reply.prediction_id) == 32 and reply.model_input == bytes(784)  # not keeping: nothing taken out
    assert not answers.keeping
