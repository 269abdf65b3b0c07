"""The gateway's coalescer, against a stand-in for inference's PredictEach (pure logic: framing, batching,
per-request answers, errors, deadlines and cancellation)."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from digits.errors import DeadlineExceeded, Refused
from digits.v1 import recognizer_pb2 as pb
from services.gateway.coalescing import Coalescer


class FakeEach:
    """PredictEach as inference answers it: digit = the first pixel; a request without pixels is refused."""

    def __init__(self, delay: float = 0.0, failure: grpc.StatusCode | None = None) -> None:
        self.delay = delay
        self.failure = failure  # the whole call fails with this status
        self.batches: list[int] = []
        self.cancelled = 0

    def __call__(self, payload: bytes, timeout: float) -> Any:
        return asyncio.ensure_future(self._answer(payload))

    async def _answer(self, payload: bytes) -> pb.PredictEachResponse:
        requests = pb.PredictEachRequest.FromString(payload).requests
        self.batches.append(len(requests))
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.failure is not None:
            raise grpc.aio.AioRpcError(self.failure, grpc.aio.Metadata(), grpc.aio.Metadata(), "replica gone")
        outcomes = []
        for request in requests:
            if request.pixels.values:
                outcomes.append(pb.PredictOutcome(response=pb.PredictResponse(digit=int(request.pixels.values[0]))))
            else:
                outcomes.append(pb.PredictOutcome(refusal=pb.Refusal(code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
                                                                     message="no pixels")))
        return pb.PredictEachResponse(outcomes=outcomes)


def request(digit: int) -> bytes:
    return pb.PredictRequest(pixels=pb.Pixels(values=[float(digit)] * 784)).SerializeToString()


def run(test: Callable[[], Any]) -> Any:
    return asyncio.run(test())


def digit(answer: pb.PredictResponse) -> int:
    return answer.digit


def test_a_lone_request_leaves_at_once_and_alone() -> None:
    upstream = FakeEach()

    async def lone() -> int:
        return digit(await Coalescer(upstream, max_upstream=2, max_items=64).predict(request(7), timeout=1))

    assert run(lone) == 7
    assert upstream.batches == [1]


def test_concurrent_requests_share_upstream_calls_and_keep_their_own_answers() -> None:
    upstream = FakeEach(delay=0.01)

    async def many() -> list[int]:
        coalescer = Coalescer(upstream, max_upstream=2, max_items=64)
        answers = await asyncio.gather(*(coalescer.predict(request(i % 10), timeout=5) for i in range(200)))
        return [digit(a) for a in answers]

    assert run(many) == [i % 10 for i in range(200)]
    assert sum(upstream.batches) == 200 and len(upstream.batches) < 20  # batches, not 200 calls
    assert max(upstream.batches) <= 64


def test_a_refused_item_fails_alone() -> None:
    upstream = FakeEach(delay=0.01)

    async def mixed() -> list[object]:
        coalescer = Coalescer(upstream, max_upstream=1, max_items=64)
        bad = pb.PredictRequest().SerializeToString()
        return list(await asyncio.gather(coalescer.predict(request(3), 1), coalescer.predict(bad, 1),
                                         coalescer.predict(request(4), 1), return_exceptions=True))

    good, refused, other = run(mixed)
    assert digit(good) == 3 and digit(other) == 4
    assert isinstance(refused, Refused) and refused.code == grpc.StatusCode.INVALID_ARGUMENT


def test_each_request_keeps_its_own_deadline() -> None:
    upstream = FakeEach(delay=0.3)

    async def deadlines() -> list[object]:
        coalescer = Coalescer(upstream, max_upstream=1, max_items=64)
        return list(await asyncio.gather(coalescer.predict(request(1), 0.05), coalescer.predict(request(2), 2),
                                         return_exceptions=True))

    short, long = run(deadlines)
    assert isinstance(short, DeadlineExceeded)
    assert digit(long) == 2


def test_an_abandoned_batch_is_cancelled_upstream() -> None:
    upstream = FakeEach(delay=5)

    async def abandon() -> None:
        coalescer = Coalescer(upstream, max_upstream=1, max_items=64)
        calls = [asyncio.ensure_future(coalescer.predict(request(1), 10)) for _ in range(3)]
        await asyncio.sleep(0.05)
        for call in calls:
            call.cancel()
        await asyncio.sleep(0.05)

    run(abandon)
    assert upstream.cancelled == 1


def test_all_or_nothing_names_the_failing_item() -> None:
    upstream = FakeEach()

    async def many() -> None:
        coalescer = Coalescer(upstream, max_upstream=1, max_items=64)
        await coalescer.predict_many([request(1), pb.PredictRequest().SerializeToString()], 1)

    with pytest.raises(Refused, match="item 1: no pixels"):
        run(many)


@pytest.fixture
def no_cycle_collector() -> Iterator[None]:
    """What is freed is freed by reference counting alone."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("no_cycle_collector")
@pytest.mark.parametrize("many", [False, True], ids=["predict", "predict_many"])
@pytest.mark.parametrize("failure", [None, grpc.StatusCode.UNAVAILABLE], ids=["refused", "upstream failed"])
def test_a_refused_request_is_freed_with_its_answer(many: bool, failure: grpc.StatusCode | None) -> None:
    # The error a future is settled with must not hold, through its traceback, frames that hold the future: such a
    # cycle kept every refused request's bytes until the cyclic collector ran (hundreds of MB of refused images).
    upstream = FakeEach(failure=failure)
    refused = pb.PredictRequest(image=b"not an image, " * 1000).SerializeToString()
    held = sys.getrefcount(refused)

    async def refuse() -> str:
        coalescer = Coalescer(upstream, max_upstream=1, max_items=64)
        try:
            if many:
                await coalescer.predict_many([refused], 1)
            else:
                await coalescer.predict(refused, 1)
        except (Refused, grpc.aio.AioRpcError) as error:
            return type(error).__name__
        return "answered"

    assert run(refuse) == ("Refused" if failure is None else "AioRpcError")
    assert sys.getrefcount(refused) == held, "something still holds the refused request"
