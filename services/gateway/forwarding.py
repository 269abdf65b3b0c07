"""Recognizer calls forwarded to inference replicas, as raw bytes: the gateway never decodes them.

One channel serves every call. Its service config balances round-robin over every address
``INFERENCE_TARGET`` resolves to, retries UNAVAILABLE on another replica, and watches replica health
so that a draining replica gets no new calls. The caller's deadline travels with the call.

Single predictions (gRPC ``Predict``, HTTP, Open Inference items) travel in batches (``coalescing.py``), on
long-lived streams where they can and by unary ``PredictEach`` where they cannot (``streaming.py``);
``PredictBatch`` and ``PredictEach`` calls are batches already and are forwarded as they are. Every answer leaves
with a prediction id, and its input is kept when keeping is on (``predictions.py``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
from prometheus_client import Counter

from digits.errors import Overloaded, Unavailable
from digits.platform.rpc import Context
from digits.settings import Settings
from digits.v1 import batch_stream_pb2 as bs
from digits.v1 import recognizer_pb2 as pb
from services.gateway.coalescing import Coalescer
from services.gateway.predictions import (
    RETURN_MODEL_INPUT,
    Answers,
    InputKeeper,
    asks_for_model_input,
    batch_asking_for_inputs,
)
from services.gateway.streaming import Upstream
from services.gateway.wire import WireError

SERVICE = pb.DESCRIPTOR.services_by_name["Recognizer"].full_name
BATCH_STREAM = bs.DESCRIPTOR.services_by_name["BatchStream"].full_name
# What predictions answer while no model exists anywhere (a fresh cluster, an empty registry).
NO_MODEL = ("no model is active yet; train one: `digits retrain --wait` (on Kubernetes the bootstrap Job does, "
            "deploy/k8s/bootstrap.yaml)")
SHED = Counter("digits_gateway_shed_total",
               "Recognizer calls refused because too many calls or request bytes were in flight.")

_SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": SERVICE},
    "methodConfig": [
        {
            "name": [{"service": SERVICE}],
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.02s",
                "maxBackoff": "0.2s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}


def inference_channel(target: str, max_message_bytes: int) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        target,
        options=[
            ("grpc.service_config", json.dumps(_SERVICE_CONFIG)),
            ("grpc.enable_retries", 1),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
            # Re-resolve DNS often enough to see new replicas (dns:/// targets).
            ("grpc.dns_min_time_between_resolutions_ms", 5000),
            # A restarted replica rejoins within a second or two, not after gRPC's default backoff (up to 2 min).
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ],
    )


class Forwarder:
    """Forwards Recognizer calls; also offers the typed predictions that HTTP and the Open Inference Protocol use.

    At most ``max_in_flight`` calls and ``max_bytes_in_flight`` request bytes are forwarded at once: past that
    the gateway refuses at once as overloaded (RESOURCE_EXHAUSTED with a retry hint; HTTP 503) rather than
    queueing without bound behind a saturated inference. No call waits longer than ``max_timeout``.
    """

    def __init__(self, channel: grpc.aio.Channel, settings: Settings, no_model: Callable[[], bool],
                 keeper: InputKeeper | None = None) -> None:
        self._no_model = no_model
        self.answers = Answers(keeper)
        self._default_timeout = settings.inference_timeout_seconds
        self._max_timeout = settings.max_deadline_seconds
        self._max_in_flight = settings.gateway_max_in_flight
        self._max_bytes = settings.gateway_max_bytes_in_flight
        self._in_flight = 0
        self._bytes = 0
        self._raw: dict[str, grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = {
            name: channel.unary_unary(f"/{SERVICE}/{name}") for name in ("PredictBatch", "PredictEach")
        }
        upstream = Upstream(
            channel.stream_stream(f"/{BATCH_STREAM}/PredictEach", response_deserializer=bs.StreamedOutcomes.FromString),
            channel.unary_unary(f"/{SERVICE}/PredictEach", response_deserializer=pb.PredictEachResponse.FromString),
            settings.gateway_batches_in_flight,
        )
        self._coalescer = Coalescer(upstream, settings.gateway_batches_in_flight, settings.max_batch_items)

    def handler(self) -> grpc.GenericRpcHandler:
        methods = {"Predict": self._forward_predict, **{name: self._forwarder(name) for name in self._raw}}
        return grpc.method_handlers_generic_handler(
            SERVICE, {name: grpc.unary_unary_rpc_method_handler(method) for name, method in methods.items()}
        )

    async def _forward_predict(self, request: bytes, context: Context) -> bytes:
        with self.admitted(len(request)):
            wanted, suffix = True, b""
            if self.answers.keeping:
                with contextlib.suppress(WireError):  # not a message: inference refuses it as it is
                    wanted, suffix = asks_for_model_input(request), RETURN_MODEL_INPUT
            answer = await self._coalescer.predict(request, self._timeout(context.time_remaining()), suffix)
        self.answers.finish(answer, wanted)
        return answer.SerializeToString()

    def _forwarder(self, name: str) -> Any:
        call = self._raw[name]
        each = name == "PredictEach"

        async def forward(request: bytes, context: Context) -> bytes:
            # An upstream error reaches the caller with its own status (digits.platform.rpc maps it).
            # Keeping inputs rewrites the request (one copy of it while it is forwarded): admitted as twice its size.
            keeping = self.answers.keeping
            with self.admitted(len(request) * (2 if keeping else 1)):
                wanted: list[bool] | None = None
                if keeping:
                    with contextlib.suppress(WireError):
                        request, wanted = batch_asking_for_inputs(request)
                response: bytes = await call(request, timeout=self._timeout(context.time_remaining()),
                                             wait_for_ready=True)
            return self._finish_batch(response, wanted, each)

        return forward

    def _finish_batch(self, reply: bytes, wanted: list[bool] | None, each: bool) -> bytes:
        """A PredictBatch or PredictEach reply with every answer named (and its input kept)."""
        if each:
            outcomes = pb.PredictEachResponse.FromString(reply)
            answers = [(o.response, i) for i, o in enumerate(outcomes.outcomes) if o.HasField("response")]
            message: pb.PredictEachResponse | pb.PredictBatchResponse = outcomes
        else:
            batch = pb.PredictBatchResponse.FromString(reply)
            answers = [(r, i) for i, r in enumerate(batch.responses)]
            message = batch
        for response, index in answers:
            self.answers.finish(response, wanted[index] if wanted is not None and index < len(wanted) else True)
        return message.SerializeToString()

    @contextlib.contextmanager
    def admitted(self, size: int) -> Iterator[None]:
        """Hold one call of ``size`` request bytes in flight, or refuse it: no model exists yet, or overloaded."""
        if self._no_model():
            # Rather than wait for a replica that cannot come until someone trains a model.
            raise Unavailable(NO_MODEL)
        if self._in_flight >= self._max_in_flight:
            SHED.inc()
            raise Overloaded(f"the gateway is at its limit of {self._max_in_flight} calls in flight; retry shortly")
        if self._bytes + size > self._max_bytes:
            SHED.inc()
            raise Overloaded(f"the gateway holds {self._bytes:,} bytes of requests, near its limit of "
                             f"{self._max_bytes:,}; retry shortly")
        self._in_flight += 1
        self._bytes += size
        try:
            yield
        finally:
            self._in_flight -= 1
            self._bytes -= size

    async def predict(self, request: pb.PredictRequest, timeout: float | None = None) -> pb.PredictResponse:
        """One typed prediction, named; the caller holds its admission (``admitted``) from before it read the
        request."""
        wanted = self._ask_for_input(request)
        answer = await self._coalescer.predict(request.SerializeToString(), self._timeout(timeout))
        self.answers.finish(answer, wanted)
        return answer

    async def predict_many(self, requests: Sequence[pb.PredictRequest],
                           timeout: float | None = None) -> list[pb.PredictResponse]:
        """Typed predictions that succeed or fail together, each named; the caller holds their admission."""
        wanted = [self._ask_for_input(r) for r in requests]
        replies = await self._coalescer.predict_many([r.SerializeToString() for r in requests], self._timeout(timeout))
        for reply, asked in zip(replies, wanted, strict=True):
            self.answers.finish(reply, asked)
        return replies

    def _ask_for_input(self, request: pb.PredictRequest) -> bool:
        """Whether the caller asked for the model's input; asks for it anyway while inputs are kept."""
        wanted = request.return_model_input
        if self.answers.keeping:
            request.return_model_input = True
        return wanted

    def _timeout(self, remaining: float | None) -> float:
        return min(remaining if remaining is not None else self._default_timeout, self._max_timeout)
