"""BatchStream: the gateway's coalesced batches as messages on long-lived streams (protos/digits/v1/batch_stream.proto).

Each batch runs as a unary ``PredictEach`` runs, in a task of its own under the deadline it came with, so that the
batches of one stream overlap as unary calls do and reach the micro-batcher together. A withdrawn batch's task is
cancelled, as a cancelled call's handler is: the batcher drops its rows before the model runs (counted as
abandoned). When the replica drains, its streams stop reading, answer every batch they read, and end with OK; the
gateway asks again elsewhere for what it wrote after.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from digits.errors import DigitsError
from digits.platform.rpc import Context
from digits.v1 import batch_stream_pb2 as bs
from digits.v1 import batch_stream_pb2_grpc as bs_grpc
from digits.v1 import recognizer_pb2 as pb

log = logging.getLogger(__name__)

PredictEach = Callable[[pb.PredictEachRequest], Awaitable[pb.PredictEachResponse]]


def refusal(code: grpc.StatusCode, message: str, retry_after_seconds: int | None = None) -> pb.Refusal:
    return pb.Refusal(code=code.value[0], message=message, retry_after_seconds=retry_after_seconds or 0)


def refusal_for(error: DigitsError) -> pb.Refusal:
    return refusal(error.code, str(error), error.retry_after_seconds)


class BatchStreamer(bs_grpc.BatchStreamServicer):
    def __init__(self, predict_each: PredictEach, draining: asyncio.Event) -> None:
        self._predict_each = predict_each
        self._draining = draining

    async def PredictEach(self, batches: AsyncIterator[bs.StreamedBatch],
                          context: Context) -> AsyncIterator[bs.StreamedOutcomes]:
        replies: asyncio.Queue[bs.StreamedOutcomes | None] = asyncio.Queue()  # None: the stream is done
        working: dict[int, asyncio.Task[None]] = {}
        reading = asyncio.create_task(self._read(batches, working, replies))
        try:
            while (reply := await replies.get()) is not None:
                yield reply
        finally:  # ended, or the gateway went away: nobody waits for the rest
            reading.cancel()
            for task in working.values():
                task.cancel()

    async def _read(self, batches: AsyncIterator[bs.StreamedBatch], working: dict[int, asyncio.Task[None]],
                    replies: asyncio.Queue[bs.StreamedOutcomes | None]) -> None:
        """Take batches until the gateway stops writing or the replica drains, then wait for their answers."""
        taking = asyncio.create_task(self._take(batches, working, replies))
        drained = asyncio.create_task(self._draining.wait())
        try:
            await asyncio.wait({taking, drained}, return_when=asyncio.FIRST_COMPLETED)
            taking.cancel()
            await asyncio.wait({taking})
            if not taking.cancelled() and taking.exception() is not None:
                log.info("a batch stream broke", extra={"error": str(taking.exception())})
            if working:
                await asyncio.wait(list(working.values()))
        finally:
            taking.cancel()
            drained.cancel()
        replies.put_nowait(None)

    async def _take(self, batches: AsyncIterator[bs.StreamedBatch], working: dict[int, asyncio.Task[None]],
                    replies: asyncio.Queue[bs.StreamedOutcomes | None]) -> None:
        async for batch in batches:
            if batch.withdraw:
                if (task := working.pop(batch.id, None)) is not None:
                    task.cancel()
            else:
                working[batch.id] = asyncio.create_task(self._answer(batch, working, replies))

    async def _answer(self, batch: bs.StreamedBatch, working: dict[int, asyncio.Task[None]],
                      replies: asyncio.Queue[bs.StreamedOutcomes | None]) -> None:
        try:
            async with asyncio.timeout(batch.timeout_seconds if batch.timeout_seconds > 0 else None):
                reply = bs.StreamedOutcomes(id=batch.id, outcomes=await self._predict_each(batch.batch))
        except DigitsError as error:
            reply = bs.StreamedOutcomes(id=batch.id, refusal=refusal_for(error))
        except TimeoutError:
            reply = bs.StreamedOutcomes(id=batch.id, refusal=refusal(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer within the deadline ({batch.timeout_seconds:.3g} s)"))
        except Exception:
            log.exception("unexpected error", extra={"method": "BatchStream.PredictEach"})
            reply = bs.StreamedOutcomes(id=batch.id, refusal=refusal(
                grpc.StatusCode.INTERNAL, "internal error; the service logged the details"))
        finally:
            working.pop(batch.id, None)
        replies.put_nowait(reply)
