"""Concurrent predictions leave the gateway in batches: many Predict calls, one ``PredictEach`` upstream.

Every prediction the gateway forwards one by one — gRPC ``Predict``, HTTP ``/api/predict``, each item of an Open
Inference call — joins a queue. At most ``max_upstream`` ``PredictEach`` calls are in flight to inference; while
they are, new predictions wait, and when one returns, everything waiting leaves as the next call. A lone request
finds no call in flight and leaves at once, alone; under load, batches grow by themselves, and the per-call cost of
the inference hop (Python gRPC work on both sides) is paid per batch instead of per request.

Each prediction keeps its own answer, error, deadline and cancellation: ``PredictEach`` answers or refuses every
item on its own; a caller whose deadline passes gets DEADLINE_EXCEEDED while the batch goes on for the others; a
caller that went away before its batch left is not sent. The batch carries the longest deadline among its items.

Requests and responses stay serialized: a batch is the items' bytes framed as the repeated field of
``PredictEachRequest``, so the gateway never decodes a request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from digits.errors import DeadlineExceeded, Refused
from digits.v1 import recognizer_pb2 as pb

_CODES = {code.value[0]: code for code in grpc.StatusCode}
_REQUESTS_FIELD = 1  # PredictEachRequest.requests
_LENGTH_DELIMITED = 2


class UpstreamCall(Protocol):
    """What a call to PredictEach returns (a grpc.aio call): awaitable for the reply's bytes, cancellable."""

    def __await__(self) -> Generator[Any, None, bytes]: ...

    def done(self) -> bool: ...

    def cancel(self) -> bool: ...


CallEach = Callable[..., UpstreamCall]  # (payload, timeout=..., wait_for_ready=...) -> call


def _framed(request: bytes, suffix: bytes = b"") -> list[bytes]:
    """One ``requests`` entry of a PredictEachRequest: the field's key, the length as a varint, the bytes (and any
    fields appended to them), as parts to join: the request is copied once, into the batch."""
    length, varint = len(request) + len(suffix), bytearray()
    while length > 0x7F:
        varint.append((length & 0x7F) | 0x80)
        length >>= 7
    varint.append(length)
    return [bytes([(_REQUESTS_FIELD << 3) | _LENGTH_DELIMITED]) + bytes(varint), request, suffix]


@dataclass
class _Waiting:
    request: bytes
    deadline: float  # loop time
    future: asyncio.Future[bytes] = field(repr=False)
    suffix: bytes = b""  # fields appended to the request (the gateway asking for the model's input)


class Coalescer:
    def __init__(self, call_each: CallEach, max_upstream: int, max_items: int) -> None:
        self._call_each = call_each
        self._max_upstream = max_upstream
        self._max_items = max_items
        self._waiting: list[_Waiting] = []
        self._upstream = 0
        self._flush_scheduled = False

    async def predict(self, request: bytes, timeout: float, suffix: bytes = b"") -> bytes:
        """The serialized PredictResponse for one serialized PredictRequest (``suffix``: serialized fields that
        follow it), or the error it was refused with."""
        loop = asyncio.get_running_loop()
        waiting = _Waiting(request, loop.time() + timeout, loop.create_future(), suffix)
        self._waiting.append(waiting)
        self._schedule_flush()
        try:
            return await asyncio.wait_for(waiting.future, timeout)
        except TimeoutError:
            raise DeadlineExceeded(f"no answer within the deadline ({timeout:.3g} s)") from None
        except Exception as error:
            # The future keeps the error it was settled with, and the error's traceback now holds wait_for's frame
            # and this one, which hold the future: a cycle that would keep the request's bytes, and every caller's
            # frame above with its own copies, until the cyclic garbage collector ran (a stream of refused 7 MB
            # images took the gateway past its memory limit). The error leaves without the frames it came through.
            error.__traceback__ = None
            raise

    async def predict_many(self, requests: Sequence[bytes], timeout: float) -> list[bytes]:
        """Several predictions that succeed or fail together (an Open Inference call); errors name the item."""
        answers = await asyncio.gather(*(self.predict(r, timeout) for r in requests), return_exceptions=True)
        for index, answer in enumerate(answers):
            if isinstance(answer, Refused):
                raise Refused(answer.code, f"item {index}: {answer}", answer.retry_after_seconds)
            if isinstance(answer, BaseException):
                try:
                    raise answer
                finally:  # else its traceback holds this frame, which holds it (and every request): a cycle
                    del answer, answers
        return answers  # type: ignore[return-value]

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
            payload = b"".join(part for w in batch for part in _framed(w.request, w.suffix))
            call = self._call_each(payload, timeout=max(timeout, 0.001), wait_for_ready=True)
            _cancel_when_all_gone(call, batch)
            try:
                reply = await call
            except grpc.aio.AioRpcError as error:  # the whole call failed: every item gets its status
                for waiting in batch:
                    _settle(waiting, error=error)
                return
            outcomes = pb.PredictEachResponse.FromString(reply).outcomes
            for waiting, outcome in zip(batch, outcomes, strict=True):
                if outcome.HasField("response"):
                    _settle(waiting, answer=outcome.response.SerializeToString())
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

    def gone(_: asyncio.Future[bytes]) -> None:
        nonlocal remaining
        remaining -= 1
        if remaining == 0 and not call.done():
            call.cancel()

    for waiting in batch:
        waiting.future.add_done_callback(gone)


def _settle(waiting: _Waiting, *, answer: bytes | None = None, error: BaseException | None = None) -> None:
    if waiting.future.done():  # its caller went away or its deadline passed
        return
    if error is not None:
        waiting.future.set_exception(error)
    else:
        waiting.future.set_result(answer)  # type: ignore[arg-type]
