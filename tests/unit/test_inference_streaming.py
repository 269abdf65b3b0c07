"""A replica's side of the batch streams, against a stand-in for its PredictEach (pure logic: answers by id,
withdrawal, deadlines, refusals, draining)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from digits.errors import Unavailable
from digits.v1 import batch_stream_pb2 as bs
from digits.v1 import recognizer_pb2 as pb
from services.inference.streaming import BatchStreamer


class Work:
    """PredictEach that takes ``seconds`` for each request's first pixel (digit: the pixel), or refuses pixel 99."""

    def __init__(self) -> None:
        self.cancelled: list[int] = []

    async def predict_each(self, request: pb.PredictEachRequest) -> pb.PredictEachResponse:
        value = request.requests[0].pixels.values[0]
        if value == 99:
            raise Unavailable("no model is loaded yet")
        try:
            await asyncio.sleep(value / 100)
        except asyncio.CancelledError:
            self.cancelled.append(int(value))
            raise
        return pb.PredictEachResponse(outcomes=[pb.PredictOutcome(response=pb.PredictResponse(digit=int(value)))])


def batch(batch_id: int, value: float, timeout: float = 5.0) -> bs.StreamedBatch:
    request = pb.PredictRequest(pixels=pb.Pixels(values=[value]))
    return bs.StreamedBatch(id=batch_id, batch=pb.PredictEachRequest(requests=[request]), timeout_seconds=timeout)


async def gateway(messages: list[bs.StreamedBatch],
                  then: asyncio.Event | None = None) -> AsyncIterator[bs.StreamedBatch]:
    """Writes ``messages`` a moment apart, then stops writing (or keeps the stream open until ``then``)."""
    for message in messages:
        yield message
        await asyncio.sleep(0.005)
    if then is not None:
        await then.wait()


def replies(messages: list[bs.StreamedBatch],
            drain_after: float | None = None) -> tuple[list[bs.StreamedOutcomes], list[int]]:
    work = Work()

    async def stream() -> list[bs.StreamedOutcomes]:
        drained = asyncio.Event()
        if drain_after is not None:
            asyncio.get_running_loop().call_later(drain_after, drained.set)
        streamer = BatchStreamer(work.predict_each, drained)
        never = asyncio.Event() if drain_after is not None else None
        return [r async for r in streamer.PredictEach(gateway(messages, never), None)]  # type: ignore[arg-type]

    return asyncio.run(asyncio.wait_for(stream(), 5)), work.cancelled


def test_batches_are_answered_by_id_as_they_finish_and_the_stream_ends_when_the_gateway_stops_writing() -> None:
    answered, _ = replies([batch(1, 20), batch(2, 1)])
    assert [(r.id, r.outcomes.outcomes[0].response.digit) for r in answered] == [(2, 1), (1, 20)]


def test_a_withdrawn_batch_is_cancelled_and_not_answered() -> None:
    answered, cancelled = replies([batch(1, 50), batch(2, 1), bs.StreamedBatch(id=1, withdraw=True)])
    assert [r.id for r in answered] == [2]
    assert cancelled == [50]


def test_a_batch_out_of_time_or_refused_is_answered_with_a_refusal() -> None:
    answered, cancelled = replies([batch(1, 50, timeout=0.05), batch(2, 99)])
    refusals = {r.id: (r.refusal.code, r.refusal.message) for r in answered}
    assert refusals.keys() == {1, 2}
    assert refusals[1][0] == grpc.StatusCode.DEADLINE_EXCEEDED.value[0] and "deadline" in refusals[1][1]
    assert refusals[2][0] == grpc.StatusCode.UNAVAILABLE.value[0] and "no model" in refusals[2][1]
    assert cancelled == [50]


def test_a_draining_replica_answers_what_it_read_and_ends_the_stream_though_the_gateway_still_writes() -> None:
    """The gateway asks again elsewhere for what it writes after; the replica does not wait out its grace."""
    answered, cancelled = replies([batch(1, 30)], drain_after=0.05)
    assert [(r.id, r.outcomes.outcomes[0].response.digit) for r in answered] == [(1, 30)]
    assert not cancelled
