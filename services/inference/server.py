"""The inference gRPC server: Recognizer over the model this replica holds."""

from __future__ import annotations

import asyncio
import logging
import socket

import numpy as np
import numpy.typing as npt
import prometheus_client
from threadpoolctl import threadpool_limits

from digits import logs
from digits.errors import DigitsError, InvalidInput, TooLarge
from digits.platform import rpc
from digits.platform.redis_connection import connect_async
from digits.platform.registry import Registry
from digits.platform.rpc import Context
from digits.settings import Settings, get_settings
from digits.v1 import recognizer_pb2 as pb
from digits.v1 import recognizer_pb2_grpc as pb_grpc
from services.inference.active_model import Loaded, ModelFollower
from services.inference.batching import MicroBatcher
from services.inference.decoding import Decoder

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["Recognizer"].full_name
# Calls a replica holds at once (each up to one message of DIGITS_MAX_IMAGE_BYTES): beyond, gRPC refuses them
# before reading their bytes. Replicas are reached only through gateways, which bound their own bytes in flight.
MAX_CONCURRENT_CALLS = 256


class Recognizer(pb_grpc.RecognizerServicer):
    def __init__(self, follower: ModelFollower, batcher: MicroBatcher, decoder: Decoder, settings: Settings) -> None:
        self._follower = follower
        self._batcher = batcher
        self._decoder = decoder
        self._settings = settings

    async def Predict(self, request: pb.PredictRequest, context: Context) -> pb.PredictResponse:
        loaded = self._follower.require()
        with self._batcher.arriving():
            (row,) = await self._decoder.rows([request], batch=False)
        labels, probabilities = await self._batcher.predict(loaded, row[np.newaxis])
        return _answer(loaded, int(labels[0]), probabilities[0], row if request.return_model_input else None)

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
            rows = await self._decoder.rows(items, batch=True)
        labels, probabilities = await self._batcher.predict(loaded, np.stack(rows))
        return pb.PredictBatchResponse(
            responses=[
                _answer(loaded, int(label), probs, row if item.return_model_input else None)
                for item, label, probs, row in zip(items, labels, probabilities, rows, strict=True)
            ]
        )


    async def PredictEach(self, request: pb.PredictEachRequest, context: Context) -> pb.PredictEachResponse:
        items = request.requests
        if len(items) > self._settings.max_batch_items:
            raise TooLarge(f"the call has {len(items)} items; the limit is {self._settings.max_batch_items}")
        loaded = self._follower.require()
        with self._batcher.arriving():
            rows = await self._decoder.rows_each(items)
        readable = [(index, row) for index, row in enumerate(rows) if not isinstance(row, DigitsError)]
        answers: dict[int, pb.PredictResponse] = {}
        if readable:
            labels, probabilities = await self._batcher.predict(loaded, np.stack([row for _, row in readable]))
            for (index, row), label, probs in zip(readable, labels, probabilities, strict=True):
                answers[index] = _answer(loaded, int(label), probs, row if items[index].return_model_input else None)
        return pb.PredictEachResponse(outcomes=[
            pb.PredictOutcome(refusal=_refusal(row)) if isinstance(row, DigitsError)
            else pb.PredictOutcome(response=answers[index]) for index, row in enumerate(rows)
        ])


def _refusal(error: DigitsError) -> pb.Refusal:
    return pb.Refusal(code=error.code.value[0], message=str(error),
                      retry_after_seconds=error.retry_after_seconds or 0)


def _answer(
    loaded: Loaded, digit: int, probabilities: npt.NDArray[np.float32], seen: npt.NDArray[np.float32] | None
) -> pb.PredictResponse:
    response = pb.PredictResponse(
        digit=digit,
        confidence=float(probabilities[digit]),
        probabilities=probabilities.tolist(),
        version=loaded.version,
    )
    if seen is not None:
        response.model_input = np.clip(np.rint(seen), 0, 255).astype(np.uint8).tobytes()
    return response


async def main() -> None:
    settings = get_settings()
    logs.configure("inference", settings.log_level)
    settings.check_secrets("inference")
    threadpool_limits(settings.blas_threads)  # process-wide, before any model is loaded
    registry = Registry.from_settings(settings)

    server = rpc.create_server(settings.max_message_bytes, settings.max_connection_age_seconds,
                               max_concurrent_rpcs=MAX_CONCURRENT_CALLS)
    health = rpc.add_health_and_reflection(server, [SERVICE])
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
    pb_grpc.add_RecognizerServicer_to_server(Recognizer(follower, batcher, decoder, settings), server)
    address = f"{settings.bind_host}:{settings.inference_port}"
    server.add_insecure_port(address)
    if settings.metrics_port:
        prometheus_client.start_http_server(settings.metrics_port, addr=settings.bind_host)
    await server.start()
    log.info("inference listening", extra={"address": address, "metrics_port": settings.metrics_port,
                                           "replica": replica})

    following = asyncio.create_task(follower.run())
    await rpc.serve_until_signalled(server, health, settings.shutdown_grace_seconds,
                                    settings.shutdown_notice_seconds)
    following.cancel()
    await follower.say_goodbye()
    await batcher.close()
    decoder.close()
