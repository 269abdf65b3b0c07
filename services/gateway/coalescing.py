"""Concurrent predictions leave the gateway in batches: many Predict calls, one ``PredictEach`` upstream.

Every prediction the gateway forwards one by one — gRPC ``Predict``, HTTP ``/api/predict``, each item of an Open
Inference call — joins a queue. At most ``max_upstream`` ``PredictEach`` calls are in flight to inference; while
they are, new predictions wait, and when one returns, everything waiting leaves as the next call. A lone request
finds no call in flight and leaves at once, alone; under load, batches grow by themselves, and the per-call cost of
the inference hop (Python gRPC work on both sides) is paid per batch instead of per request.

Each prediction keeps its own answer, error, deadline and cancellation: ``PredictEach`` answers or refuses every
item on its own; a caller whose deadline passes gets DEADLINE_EXCEEDED while the batch goes on for the others; a
caller that went away before its batch left is not sent. The batch carries the longest deadline among its items.

Requests stay serialized: a batch is the items' bytes framed as the repeated field of ``PredictEachRequest``, so
the gateway never decodes a request. Each caller gets its answer as the message the reply was parsed into, with no
copy serialized and parsed again on the way; the items of an Open Inference call wait on their futures together,
under one deadline, with no task of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from digits.errors import DeadlineExceeded, Refused
from digits.v1 import recognizer_pb2 as pb
from services.gateway.wire import length_prefix

_CODES = {code.value[0]: code for code in grpc.StatusCode}
_REQUESTS_FIELD = 1  # PredictEachRequest.requests


class UpstreamCall(Protocol):
    """What sending a batch returns (``streaming.Upstream``): awaitable for the reply, cancellable."""

    def __await__(self) -> Generator[Any, None, pb.PredictEachResponse]: ...

    def done(self) -> bool: ...

    def cancel(self) -> bool: ...


SendBatch = Callable[..., UpstreamCall]  # (payload, timeout=...) -> call


@dataclass
class _Waiting:
    request: bytes
    deadline: float  # loop time
    future: asyncio.Future[pb.PredictResponse] = field(repr=False)
    suffix: bytes = b""  # fields appended to the request (the gateway asking for the model's input)


class Coalescer:
    def __init__(self, send_batch: SendBatch, max_upstream: int, max_items: int) -> None:
        self._send_batch = send_batch
        self._max_upstream = max_upstream
        self._max_items = max_items
        self._waiting: list[_Waiting] = []
        self._upstream = 0
        self._flush_scheduled = False

    async def predict(self, request: bytes, timeout: float, suffix: bytes = b"") -> pb.PredictResponse:
        """The PredictResponse for one serialized PredictRequest (``suffix``: serialized fields that follow it), or
        the error it was refused with."""
        waiting = self._enqueue(request, timeout, suffix)
        try:
            async with asyncio.timeout(timeout):
                return await waiting.future
        except TimeoutError:
            raise DeadlineExceeded(f"no answer within the deadline ({timeout:.3g} s)") from None
        except Exception as error:
            # The future keeps the error it was settled with, and the error's traceback now holds this frame, which
            # holds the future: a cycle that would keep the request's bytes, and every caller's frame above with its
            # own copies, until the cyclic garbage collector ran (a stream of refused 7 MB images took the gateway
            # past its memory limit). The error leaves without the frames it came through.
            error.__traceback__ = None
            raise

    async def predict_many(self, requests: Sequence[bytes], timeout: float) -> list[pb.PredictResponse]:
        """Several predictions that succeed or fail together (an Open Inference call); the error is the first
        failing item's, and names it. The items after it are not waited for (nor sent, if still waiting)."""
        waiting = [self._enqueue(request, timeout) for request in requests]
        answers: list[pb.PredictResponse] = []
        try:
            async with asyncio.timeout(timeout):
                for item in waiting:
                    answers.append(await item.future)
        except TimeoutError:
            raise DeadlineExceeded(f"item {len(answers)}: no answer within the deadline ({timeout:.3g} s)") from None
        except Refused as error:
            error.__traceback__ = None  # as in predict
            raise Refused(error.code, f"item {len(answers)}: {error}", error.retry_after_seconds) from None
        except Exception as error:
            error.__traceback__ = None
            raise
        finally:
            for item in waiting:
                item.future.cancel()  # a no-op for the answered; the others' callers are gone
            del waiting
        return answers

    def _enqueue(self, request: bytes, timeout: float, suffix: bytes = b"") -> _Waiting:
        loop = asyncio.get_running_loop()
        waiting = _Waiting(request, loop.time() + timeout, loop.create_future(), suffix)
        self._waiting.append(waiting)
        self._schedule_flush()
        return waiting

    def _schedule_flush(self) -> None:
        # On the next turn of the loop, so that predictions arriving together leave together.
        if not self._flush_scheduled and self._waiting and self._upstream < self._max_upstream:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        while self._waiting and self._upstream < self._max_upstream:
            live = [w for w in self._waiting[: self._max_items] if not w.future.done()]
            del self._waiting[: self._max_items]
            if live:
                self._upstream += 1
                asyncio.get_running_loop().create_task(self._send(live))

    async def _send(self, batch: list[_Waiting]) -> None:
        loop = asyncio.get_running_loop()
        try:
            timeout = max(w.deadline for w in batch) - loop.time()
            payload = b"".join(part for w in batch for part in (
                length_prefix(_REQUESTS_FIELD, len(w.request) + len(w.suffix)), w.request, w.suffix))
            call = self._send_batch(payload, timeout=max(timeout, 0.001))
            _cancel_when_all_gone(call, batch)
            try:
                reply = await call
            except grpc.aio.AioRpcError as error:  # the whole call failed: every item gets its status
                for waiting in batch:
                    _settle(waiting, error=error)
                return
            outcomes = reply.outcomes
            for waiting, outcome in zip(batch, outcomes, strict=True):
                if outcome.HasField("response"):
                    _settle(waiting, answer=outcome.response)
                else:
                    refusal = outcome.refusal
                    _settle(waiting, error=Refused(_CODES.get(refusal.code, grpc.StatusCode.UNKNOWN), refusal.message,
                                                   refusal.retry_after_seconds))
        except Exception as error:  # a reply that does not fit the batch: nobody may wait for ever
            for waiting in batch:
                _settle(waiting, error=error)
            raise
        finally:
            self._upstream -= 1
            self._schedule_flush()


def _cancel_when_all_gone(call: UpstreamCall, batch: list[_Waiting]) -> None:
    """Once every caller of a batch is gone (cancelled or out of time), inference stops working on it too."""
    remaining = len(batch)

    def gone(_: asyncio.Future[pb.PredictResponse]) -> None:
        nonlocal remaining
        remaining -= 1
        if remaining == 0 and not call.done():
            call.cancel()

    for waiting in batch:
        waiting.future.add_done_callback(gone)


def _settle(waiting: _Waiting, *, answer: pb.PredictResponse | None = None,
            error: BaseException | None = None) -> None:
    if waiting.future.done():  # its caller went away or its deadline passed
        return
    if error is not None:
        waiting.future.set_exception(error)
    else:
        waiting.future.set_result(answer)  # type: ignore[arg-type]
