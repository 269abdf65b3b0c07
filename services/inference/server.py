"""The inference gRPC server: Recognizer over the model this replica holds."""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from typing import Any

import numpy as np
import numpy.typing as npt
import prometheus_client
from prometheus_client import Counter, Histogram
from threadpoolctl import threadpool_limits

from digits import logs
from digits.errors import DigitsError, InvalidInput, TooLarge
from digits.modelling.verdicts import Answers, Verdict, judge
from digits.platform import rpc
from digits.platform.redis_connection import connect_async
from digits.platform.registry import Registry
from digits.platform.rpc import Context
from digits.settings import Settings, get_settings
from digits.v1 import batch_stream_pb2 as bs
from digits.v1 import batch_stream_pb2_grpc as bs_grpc
from digits.v1 import recognizer_pb2 as pb
from digits.v1 import recognizer_pb2_grpc as pb_grpc
from services.inference.active_model import Loaded, ModelFollower
from services.inference.batching import MicroBatcher
from services.inference.decoding import Decoder, Reading
from services.inference.streaming import BatchStreamer, refusal_for

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["Recognizer"].full_name
BATCH_STREAM = bs.DESCRIPTOR.services_by_name["BatchStream"].full_name
# Calls a replica holds at once (each up to one message of DIGITS_MAX_IMAGE_BYTES): beyond, gRPC refuses them
# before reading their bytes. Replicas are reached only through gateways, which bound their own bytes in flight.
MAX_CONCURRENT_CALLS = 256
VERDICTS = Counter("digits_verdicts_total", "Answers by the version that gave them and their verdict.",
                   ["version", "verdict"])
BATCH_SECONDS = Histogram("digits_batch_seconds", "Time to answer a batch from a gateway (PredictEach, on a stream "
                          "or by unary call), from reading it to its answer.", buckets=rpc.LATENCY_BUCKETS)
_VERDICTS_ON_THE_WIRE = {
    Verdict.DIGIT: pb.VERDICT_DIGIT, Verdict.UNSURE: pb.VERDICT_UNSURE, Verdict.NOT_A_DIGIT: pb.VERDICT_NOT_A_DIGIT,
    Verdict.SEVERAL: pb.VERDICT_SEVERAL,
}


class Recognizer(pb_grpc.RecognizerServicer):
    def __init__(self, follower: ModelFollower, batcher: MicroBatcher, decoder: Decoder, settings: Settings) -> None:
        self._follower = follower
        self._batcher = batcher
        self._decoder = decoder
        self._settings = settings

    async def Predict(self, request: pb.PredictRequest, context: Context) -> pb.PredictResponse:
        loaded = self._follower.require()
        with self._batcher.arriving():
            (reading,) = await self._decoder.rows([request], batch=False)
        answers = await self._batcher.predict(loaded, reading.row[np.newaxis])
        return _answer(loaded, answers, 0, reading, request.return_model_input)

    async def PredictBatch(
        self, request: pb.PredictBatchRequest, context: Context
    ) -> pb.PredictBatchResponse:
        items = request.requests
        if not items:
            raise InvalidInput("the batch is empty: send at least one request")
        if len(items) > self._settings.max_batch_items:
            raise TooLarge(f"the batch has {len(items)} items; the limit is {self._settings.max_batch_items}")
        loaded = self._follower.require()
        with self._batcher.arriving():
            readings = await self._decoder.rows(items, batch=True)
        answers = await self._batcher.predict(loaded, np.stack([reading.row for reading in readings]))
        return pb.PredictBatchResponse(responses=[
            _answer(loaded, answers, index, reading, item.return_model_input)
            for index, (item, reading) in enumerate(zip(items, readings, strict=True))
        ])

    async def PredictEach(self, request: pb.PredictEachRequest, context: Context) -> pb.PredictEachResponse:
        return await self.predict_each(request)

    async def predict_each(self, request: pb.PredictEachRequest) -> pb.PredictEachResponse:
        """Each request answered or refused on its own; the call as a whole is refused only when it has too many
        items or the replica no model (a unary PredictEach, or a batch on a gateway's stream)."""
        with BATCH_SECONDS.time():
            return await self._predict_each(request)

    async def _predict_each(self, request: pb.PredictEachRequest) -> pb.PredictEachResponse:
        items = request.requests
        if len(items) > self._settings.max_batch_items:
            raise TooLarge(f"the call has {len(items)} items; the limit is {self._settings.max_batch_items}")
        loaded = self._follower.require()
        with self._batcher.arriving():
            readings = await self._decoder.rows_each(items)
        readable = [(index, r) for index, r in enumerate(readings) if not isinstance(r, DigitsError)]
        responses: dict[int, pb.PredictResponse] = {}
        if readable:
            answers = await self._batcher.predict(loaded, np.stack([reading.row for _, reading in readable]))
            for position, (index, reading) in enumerate(readable):
                responses[index] = _answer(loaded, answers, position, reading, items[index].return_model_input)
        return pb.PredictEachResponse(outcomes=[
            pb.PredictOutcome(refusal=refusal_for(reading)) if isinstance(reading, DigitsError)
            else pb.PredictOutcome(response=responses[index]) for index, reading in enumerate(readings)
        ])


@functools.lru_cache(maxsize=64)  # a few versions a replica has served, four verdicts each: bound once, not per answer
def _verdicts(version: str, verdict: Verdict) -> Any:
    return VERDICTS.labels(version, verdict.value)


def _answer(loaded: Loaded, answers: Answers, index: int, reading: Reading, return_input: bool) -> pb.PredictResponse:
    """Row ``index`` of ``answers`` as a response, with its verdict (counted per version)."""
    digit = int(answers.labels[index])
    probabilities = answers.probabilities[index]
    verdict = judge(answers, index, reading.marks, loaded.model.thresholds)
    _verdicts(loaded.version, verdict).inc()
    response = pb.PredictResponse(
        digit=digit,
        confidence=float(probabilities[digit]),
        probabilities=probabilities.tolist(),
        version=loaded.version,
        verdict=_VERDICTS_ON_THE_WIRE[verdict],
        runner_up=int(answers.runner_up[index]),
        marks=reading.marks,
    )
    if answers.familiarity is not None:
        response.familiarity = float(answers.familiarity[index])
    if answers.margin is not None:
        response.margin = float(answers.margin[index])
    if return_input:
        response.model_input = _as_bytes(reading.row)
    return response


def _as_bytes(seen: npt.NDArray[np.float32]) -> bytes:
    return np.clip(np.rint(seen), 0, 255).astype(np.uint8).tobytes()


async def main() -> None:
    settings = get_settings()
    logs.configure("inference", settings.log_level)
    settings.check_secrets("inference")
    threadpool_limits(settings.blas_threads)  # process-wide, before any model is loaded
    registry = Registry.from_settings(settings)

    server = rpc.create_server(settings.max_message_bytes, settings.max_connection_age_seconds,
                               max_concurrent_rpcs=MAX_CONCURRENT_CALLS)
    health = rpc.add_health_and_reflection(server, [SERVICE, BATCH_STREAM])
    # The process is alive at once (liveness: ""); it is ready for Recognizer calls once a model is loaded.
    await rpc.set_serving(health, [""], True)
    await rpc.set_serving(health, [SERVICE], False)

    async def on_swap(loaded: Loaded) -> None:
        await rpc.set_serving(health, [SERVICE], True)

    replica = f"{socket.gethostname()}:{settings.inference_port}"
    follower = ModelFollower(registry, connect_async(settings), replica, settings.model_poll_seconds,
                             settings.replica_report_seconds, on_swap)
    batcher = MicroBatcher(settings.batch_max_size, settings.batch_max_wait_ms / 1000.0)
    decoder = Decoder(settings)
    recognizer = Recognizer(follower, batcher, decoder, settings)
    pb_grpc.add_RecognizerServicer_to_server(recognizer, server)
    draining = asyncio.Event()  # set when the replica stops serving: gateways' streams end, their batches go elsewhere
    bs_grpc.add_BatchStreamServicer_to_server(BatchStreamer(recognizer.predict_each, draining), server)
    address = f"{settings.bind_host}:{settings.inference_port}"
    server.add_insecure_port(address)
    if settings.metrics_port:
        prometheus_client.start_http_server(settings.metrics_port, addr=settings.bind_host)
    await server.start()
    log.info("inference listening", extra={"address": address, "metrics_port": settings.metrics_port,
                                           "replica": replica})

    following = asyncio.create_task(follower.run())
    await rpc.serve_until_signalled(server, health, settings.shutdown_grace_seconds,
                                    settings.shutdown_notice_seconds, draining)
    following.cancel()
    await follower.say_goodbye()
    await batcher.close()
    decoder.close()
