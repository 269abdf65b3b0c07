"""Coalesced batches go to inference as messages on long-lived streams, and as unary ``PredictEach`` calls when no
stream can take them.

A Python gRPC unary call costs both ends about a millisecond at concurrency 1 (``python -m bench.grpc_floor``); a
message on an open stream costs a quarter of that. So the gateway keeps one stream per upstream slot
(``DIGITS_GATEWAY_BATCHES_IN_FLIGHT``) on the inference channel, where round robin spreads them over the replicas,
and sends each batch on the next one.

The unary call stays the contract. A stream answers a batch only with its outcomes; anything else — the replica
refused the whole batch (no model, out of time, draining), the stream ended or broke, it could not be opened — and
the batch is asked again as a unary ``PredictEach`` within what is left of its deadline, with the channel's
retries on another replica and its health-aware balancing, and every caller gets what that call gives. A slot
whose stream failed sends unary calls for ``RETRY_SECONDS`` before it opens another, so a replica that keeps
failing costs one repeated batch a second, not one a batch.

A stream takes new batches for ``STREAM_SECONDS``, then half-closes (its last answers still arrive) and the slot
opens a new one: the round robin sees replicas that joined since. A batch whose callers have all gone is
withdrawn, and the replica cancels its work as it cancels an abandoned unary call's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import grpc

from digits.v1 import batch_stream_pb2 as bs
from digits.v1 import recognizer_pb2 as pb
from services.gateway.wire import length_prefix

log = logging.getLogger(__name__)

STREAM_SECONDS = 5.0
RETRY_SECONDS = 1.0
_BATCH_FIELD = 2  # StreamedBatch.batch

CallEach = grpc.aio.UnaryUnaryMultiCallable[bytes, pb.PredictEachResponse]
OpenStream = Callable[[], grpc.aio.StreamStreamCall[bytes, bs.StreamedOutcomes]]
Spawn = Callable[[Coroutine[Any, Any, None]], None]


class StreamGone(Exception):
    """The stream could not answer a batch: ask again by unary call."""


class _Stream:
    """One open BatchStream call: batches written under a lock (gRPC takes one write at a time), answers matched to
    them by id as they arrive."""

    def __init__(self, call: grpc.aio.StreamStreamCall[bytes, bs.StreamedOutcomes], spawn: Spawn) -> None:
        self._call = call
        self._spawn = spawn
        self._waiting: dict[int, asyncio.Future[bs.StreamedOutcomes]] = {}
        self._writing = asyncio.Lock()
        self._next_id = 0
        self.opened = asyncio.get_running_loop().time()
        self.taking = True  # takes new batches: neither half-closed nor ended
        spawn(self._read())

    async def ask(self, payload: bytes, timeout: float) -> pb.PredictEachResponse:
        """The outcomes of one serialized PredictEachRequest, or StreamGone."""
        batch_id, self._next_id = self._next_id, self._next_id + 1
        answer: asyncio.Future[bs.StreamedOutcomes] = asyncio.get_running_loop().create_future()
        self._waiting[batch_id] = answer
        header = bs.StreamedBatch(id=batch_id, timeout_seconds=timeout).SerializeToString()
        try:
            await self._write(header + length_prefix(_BATCH_FIELD, len(payload)) + payload)
            reply = await answer
        except asyncio.CancelledError:  # every caller of the batch is gone
            if self._waiting.pop(batch_id, None) is not None and self.taking:
                self._spawn(self._withdraw(batch_id))
            raise
        finally:
            self._waiting.pop(batch_id, None)
        if reply.HasField("refusal"):
            raise StreamGone(f"refused: {reply.refusal.message}")
        return reply.outcomes

    async def _write(self, message: bytes) -> None:
        try:
            async with self._writing:
                await self._call.write(message)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as error:
            self.taking = False
            raise StreamGone(f"the stream ended: {error}") from None

    async def _withdraw(self, batch_id: int) -> None:
        with contextlib.suppress(StreamGone):
            await self._write(bs.StreamedBatch(id=batch_id, withdraw=True).SerializeToString())

    async def close(self) -> None:
        """Take no more batches; the replica answers those it has and ends the stream."""
        self.taking = False
        with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            async with self._writing:
                await self._call.done_writing()

    async def _read(self) -> None:
        try:
            async for reply in self._call:
                answer = self._waiting.pop(reply.id, None)
                if answer is not None and not answer.done():
                    answer.set_result(reply)
        except grpc.aio.AioRpcError as error:
            log.info("a batch stream to inference broke", extra={"code": error.code().name,
                                                                  "error": error.details()})
        except Exception:
            log.exception("a batch stream to inference failed")
        finally:
            self.taking = False
            for answer in self._waiting.values():
                if not answer.done():
                    answer.set_exception(StreamGone("the stream ended before it answered"))
            self._waiting.clear()


class Upstream:
    """Sends each coalesced batch (a serialized PredictEachRequest) to inference: on a stream, else by unary call.

    Called as the coalescer calls it, ``upstream(payload, timeout=...)``, it returns a task: awaited for the
    PredictEachResponse (or the unary call's error), cancelled when every caller of the batch is gone.
    """

    def __init__(self, open_stream: OpenStream, call_each: CallEach, slots: int) -> None:
        self._open_stream = open_stream
        self._call_each = call_each
        self._streams: list[_Stream | None] = [None] * slots
        self._retry_at = [0.0] * slots
        self._next_slot = 0
        self._background: set[asyncio.Task[None]] = set()  # readers, withdrawals, closings: kept until done

    def __call__(self, payload: bytes, *, timeout: float) -> asyncio.Task[pb.PredictEachResponse]:
        return asyncio.get_running_loop().create_task(self._send(payload, timeout))

    async def _send(self, payload: bytes, timeout: float) -> pb.PredictEachResponse:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        slot, self._next_slot = self._next_slot, (self._next_slot + 1) % len(self._streams)
        stream = self._stream(slot, loop.time())
        if stream is not None:
            try:
                return await stream.ask(payload, timeout)
            except StreamGone as gone:
                log.debug("a batch goes by unary call", extra={"reason": str(gone)})
                if self._streams[slot] is stream:
                    self._streams[slot] = None
                    self._retry_at[slot] = loop.time() + RETRY_SECONDS
        return await self._call_each(payload, timeout=max(deadline - loop.time(), 0.001), wait_for_ready=True)

    def _stream(self, slot: int, now: float) -> _Stream | None:
        """The slot's stream, opened or renewed as needed; None while the slot waits after a failure."""
        stream = self._streams[slot]
        if stream is not None and stream.taking and now - stream.opened > STREAM_SECONDS:
            self._spawn(stream.close())
            stream = None
        if stream is None or not stream.taking:
            if now < self._retry_at[slot]:
                return None
            stream = self._streams[slot] = _Stream(self._open_stream(), self._spawn)
        return stream

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
