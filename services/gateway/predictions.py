"""Every answer the gateway gives gets a prediction id; with ``DIGITS_KEEP_INPUTS_SECONDS`` set, what the model saw
is kept under it for a while, so that a correction can point at it (``digits.platform.corrections``).

The input kept is the 28x28 the model saw, never the upload: the gateway asks inference for it
(``return_model_input``) on every prediction, and takes it out of the reply again unless the caller asked too.
Requests stay serialized: the flag is appended to a request's bytes (a scalar field seen twice takes its last
value), and read from them, by walking the top-level fields of the wire format, never by decoding an image.

Keeping must never slow or fail an answer: inputs go into a bounded queue that a background task writes to Redis
in batches. A full queue (Redis slow or away) drops inputs and counts them; a Predict never waits for Redis.
The writer lingers a moment before each write, so that a trickle of predictions is written in batches too: one
write per prediction at concurrency 1 cost the gateway 0.19 ms of CPU a prediction, a seventh of all it spent.
"""

from __future__ import annotations

import asyncio
import collections
import logging

import redis
from prometheus_client import Counter

from digits.platform.corrections import Corrections, KeptInput, new_prediction_id
from digits.v1 import recognizer_pb2 as pb
from services.gateway.wire import LEN, VARINT, WireError, fields, length_prefix

log = logging.getLogger(__name__)

KEPT = Counter("digits_inputs_kept_total", "Inputs the model saw, kept in Redis under their prediction id.")
DROPPED = Counter("digits_inputs_dropped_total",
                  "Inputs not kept: the gateway's queue was full, or Redis did not take them.", ["reason"])
EVICTED = Counter("digits_inputs_evicted_total",
                  "Kept inputs deleted before their time to stay within DIGITS_KEEP_INPUTS_MAX.")

QUEUE_ITEMS = 4096  # inputs waiting for Redis at most (about 4 MB); more are dropped
WRITE_BATCH = 256  # inputs per write to Redis
SETTLE_SECONDS = 1.0  # how long a correction waits for its prediction's input to reach Redis
LINGER_SECONDS = 0.05  # how long the writer waits for more inputs before a write of less than a batch

# PredictRequest.return_model_input = true: field 3, varint, 1.
RETURN_MODEL_INPUT = bytes([(3 << 3) | 0, 1])
_REQUESTS_FIELD = 1  # PredictBatchRequest.requests and PredictEachRequest.requests


def asks_for_model_input(request: bytes | memoryview) -> bool:
    """Whether a serialized PredictRequest sets ``return_model_input`` (the last occurrence wins)."""
    asked = False
    for number, kind, value, _ in fields(memoryview(request)):
        if number == 3 and kind == VARINT:
            asked = value != 0
    return asked


def batch_asking_for_inputs(request: bytes) -> tuple[bytes, list[bool]]:
    """A serialized PredictBatchRequest or PredictEachRequest whose every item asks for the model's input, and
    whether each item asked for it itself."""
    data = memoryview(request)
    parts: list[bytes | memoryview] = []
    asked = []
    for number, kind, start, end in fields(data):
        if number != _REQUESTS_FIELD or kind != LEN:
            raise WireError(f"unexpected field {number}")
        item = data[start:end]
        asked.append(asks_for_model_input(item))
        parts += [length_prefix(_REQUESTS_FIELD, len(item) + len(RETURN_MODEL_INPUT)), item, RETURN_MODEL_INPUT]
    return b"".join(parts), asked


class InputKeeper:
    """Keeps inputs in Redis off the answers' path: a bounded queue, written in batches by ``run``."""

    def __init__(self, store: Corrections, capacity: int = QUEUE_ITEMS, batch: int = WRITE_BATCH,
                 linger: float = LINGER_SECONDS) -> None:
        self.store = store
        self._capacity = capacity
        self._batch = batch
        self._linger = linger
        self._queue: collections.deque[KeptInput] = collections.deque()
        self._unwritten: set[str] = set()  # ids queued or being written
        self._wake = asyncio.Event()
        self._written = asyncio.Event()  # set (and replaced) after every write
        self._failing = False

    @property
    def enabled(self) -> bool:
        return self.store.keep_seconds > 0

    def keep(self, kept: KeptInput) -> None:
        """Queue one input; never blocks. Dropped (and counted) when the queue is full."""
        if len(self._queue) >= self._capacity:
            DROPPED.labels("queue_full").inc()
            return
        self._queue.append(kept)
        self._unwritten.add(kept.prediction_id)
        self._wake.set()

    async def settled(self, prediction_id: str, timeout: float = SETTLE_SECONDS) -> None:
        """Wait (a little) until this gateway's queue no longer holds ``prediction_id``: a correction sent right
        after its answer finds the input in Redis."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while prediction_id in self._unwritten and loop.time() < deadline:
            try:
                await asyncio.wait_for(self._written.wait(), deadline - loop.time())
            except TimeoutError:
                return

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            if len(self._queue) < self._batch:
                await asyncio.sleep(self._linger)
            self._wake.clear()
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))]
                await self._write(batch)

    async def _write(self, batch: list[KeptInput]) -> None:
        try:
            evicted = await asyncio.to_thread(self.store.keep, batch)
        except (redis.RedisError, OSError) as error:
            DROPPED.labels("redis").inc(len(batch))
            if not self._failing:
                log.warning("cannot keep inputs in Redis; dropping them until it answers", extra={"error": str(error)})
            self._failing = True
        else:
            KEPT.inc(len(batch))
            EVICTED.inc(evicted)
            if self._failing:
                log.info("keeping inputs in Redis again")
            self._failing = False
        finally:
            self._unwritten.difference_update(k.prediction_id for k in batch)
            self._written.set()
            self._written = asyncio.Event()


class Answers:
    """Gives each answer its prediction id and keeps its input (when keeping is on)."""

    def __init__(self, keeper: InputKeeper | None) -> None:
        self.keeper = keeper if keeper is not None and keeper.enabled else None

    @property
    def keeping(self) -> bool:
        return self.keeper is not None

    def finish(self, response: pb.PredictResponse, wanted_input: bool) -> None:
        """Name ``response``; keep what the model saw; leave that in the reply only if the caller asked for it."""
        response.prediction_id = new_prediction_id()
        if self.keeper is None or len(response.model_input) == 0:
            return
        self.keeper.keep(KeptInput(response.prediction_id, response.model_input, response.digit, response.version))
        if not wanted_input:
            response.ClearField("model_input")
