"""The gateway's batch streams, against stand-ins for a replica's BatchStream call and its unary PredictEach (pure
logic: which batches go on a stream, which by unary call, withdrawal, renewal)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from digits.v1 import batch_stream_pb2 as bs
from digits.v1 import recognizer_pb2 as pb
from services.gateway import streaming
from services.gateway.streaming import Upstream


def outcomes(digit: int) -> pb.PredictEachResponse:
    return pb.PredictEachResponse(outcomes=[pb.PredictOutcome(response=pb.PredictResponse(digit=digit))])


def payload(digit: int) -> bytes:
    return pb.PredictEachRequest(requests=[pb.PredictRequest(pixels=pb.Pixels(values=[float(digit)]))]
                                 ).SerializeToString()


class FakeStream:
    """A BatchStream call: answers each batch with its first pixel as the digit, or as ``answer`` says; records what
    it was sent; ``breaks()`` ends it with UNAVAILABLE."""

    def __init__(self, answer: Callable[[bs.StreamedBatch], bs.StreamedOutcomes | None] | None = None) -> None:
        self.answer = answer or (lambda batch: bs.StreamedOutcomes(
            id=batch.id, outcomes=outcomes(int(batch.batch.requests[0].pixels.values[0]))))
        self.sent: list[bs.StreamedBatch] = []
        self.half_closed = False
        self._replies: asyncio.Queue[bs.StreamedOutcomes | grpc.aio.AioRpcError | None] = asyncio.Queue()

    async def write(self, message: bytes) -> None:
        if self.half_closed:
            raise grpc.aio.UsageError("half-closed")
        batch = bs.StreamedBatch.FromString(message)
        self.sent.append(batch)
        if not batch.withdraw and (reply := self.answer(batch)) is not None:
            self._replies.put_nowait(reply)

    async def done_writing(self) -> None:
        self.half_closed = True
        self._replies.put_nowait(None)

    def breaks(self) -> None:
        self._replies.put_nowait(grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(),
                                                      grpc.aio.Metadata(), "replica gone"))

    def __aiter__(self) -> FakeStream:
        return self

    async def __anext__(self) -> bs.StreamedOutcomes:
        reply = await self._replies.get()
        if reply is None:
            raise StopAsyncIteration
        if isinstance(reply, grpc.aio.AioRpcError):
            raise reply
        return reply


class Replica:
    """Opens FakeStreams (each made by ``make``) and answers unary PredictEach calls with digit 100 + the first
    pixel, so that an answer shows which way it came."""

    def __init__(self, make: Callable[[], FakeStream] = FakeStream) -> None:
        self.make = make
        self.streams: list[FakeStream] = []
        self.unary: list[float] = []  # the timeout of each unary call

    def open(self) -> FakeStream:
        self.streams.append(self.make())
        return self.streams[-1]

    def call_each(self, request: bytes, timeout: float, wait_for_ready: bool) -> Any:
        assert wait_for_ready
        self.unary.append(timeout)

        async def answer() -> pb.PredictEachResponse:
            return outcomes(100 + int(pb.PredictEachRequest.FromString(request).requests[0].pixels.values[0]))

        return answer()


def upstream(replica: Replica, slots: int = 2) -> Upstream:
    return Upstream(replica.open, replica.call_each, slots)  # type: ignore[arg-type]


def digit(reply: pb.PredictEachResponse) -> int:
    return reply.outcomes[0].response.digit


def test_batches_go_on_one_stream_per_slot_with_their_deadline() -> None:
    replica = Replica()

    async def batches() -> list[int]:
        send = upstream(replica)
        return [digit(await send(payload(d), timeout=2.5)) for d in range(6)]

    assert asyncio.run(batches()) == list(range(6))
    assert len(replica.streams) == 2 and not replica.unary
    assert [b.timeout_seconds for s in replica.streams for b in s.sent] == [2.5] * 6
    assert sorted(b.id for s in replica.streams for b in s.sent) == [0, 0, 1, 1, 2, 2]  # ids count per stream


def test_a_refused_batch_is_asked_again_by_unary_call_and_its_slot_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """A replica that refuses a whole batch (no model, draining) gets it again with gRPC's retries and balancing;
    its slot sends unary calls until RETRY_SECONDS have passed, then opens a new stream."""
    monkeypatch.setattr(streaming, "RETRY_SECONDS", 0.2)
    refusing = [True]

    def make() -> FakeStream:
        def answer(batch: bs.StreamedBatch) -> bs.StreamedOutcomes:
            if refusing[0]:
                return bs.StreamedOutcomes(id=batch.id, refusal=pb.Refusal(code=14, message="no model yet"))
            return bs.StreamedOutcomes(id=batch.id, outcomes=outcomes(7))
        return FakeStream(answer)

    replica = Replica(make)

    async def batches() -> list[int]:
        send = upstream(replica, slots=1)
        first = [digit(await send(payload(d), timeout=1)) for d in (1, 2)]
        refusing[0] = False
        await asyncio.sleep(0.25)
        return [*first, digit(await send(payload(3), timeout=1))]

    assert asyncio.run(batches()) == [101, 102, 7]
    assert len(replica.streams) == 2 and len(replica.unary) == 2
    assert 0.9 < replica.unary[0] <= 1


def test_a_stream_that_breaks_sends_every_waiting_batch_by_unary_call() -> None:
    replica = Replica(lambda: FakeStream(answer=lambda batch: None))  # reads, never answers

    async def batches() -> list[int]:
        send = upstream(replica, slots=1)
        waiting = [send(payload(d), timeout=1) for d in range(3)]
        await asyncio.sleep(0.01)
        replica.streams[0].breaks()
        return [digit(reply) for reply in await asyncio.gather(*waiting)]

    assert asyncio.run(batches()) == [100, 101, 102]
    assert len(replica.streams[0].sent) == 3 and len(replica.unary) == 3


def test_a_batch_whose_callers_are_gone_is_withdrawn() -> None:
    replica = Replica(lambda: FakeStream(answer=lambda batch: None))

    async def cancel() -> None:
        task = upstream(replica, slots=1)(payload(4), timeout=1)
        await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.sleep(0.01)

    asyncio.run(cancel())
    assert [(b.id, b.withdraw) for b in replica.streams[0].sent] == [(0, False), (0, True)]
    assert not replica.unary


def test_a_stream_is_renewed_after_its_time_and_the_old_one_half_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """So that the round robin sees replicas that joined since it opened."""
    monkeypatch.setattr(streaming, "STREAM_SECONDS", 0.05)
    replica = Replica()

    async def batches() -> list[int]:
        send = upstream(replica, slots=1)
        first = digit(await send(payload(1), timeout=1))
        await asyncio.sleep(0.1)
        second = digit(await send(payload(2), timeout=1))
        await asyncio.sleep(0.01)
        return [first, second]

    assert asyncio.run(batches()) == [1, 2]
    assert len(replica.streams) == 2 and replica.streams[0].half_closed and not replica.streams[1].half_closed
    assert not replica.unary
