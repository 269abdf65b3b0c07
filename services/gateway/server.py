"""The gateway process: one event loop serving gRPC on :50051 and HTTP on :8080."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Any

import grpc
import redis
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from digits import logs, rpc
from digits.errors import Unavailable
from digits.oip import grpc_predict_v2_pb2_grpc as oip_grpc
from digits.redis_connection import connect, connect_async
from digits.registry import Registry
from digits.settings import Settings, get_settings
from digits.v1 import models_pb2, models_pb2_grpc, training_pb2, training_pb2_grpc
from services.gateway import forwarding, open_inference
from services.gateway.blocking import off_loop
from services.gateway.http import create_app
from services.gateway.models import Models
from services.gateway.open_inference import OpenInference
from services.gateway.replicas import ReplicaWatch
from services.gateway.training import Training

log = logging.getLogger(__name__)

MODELS = models_pb2.DESCRIPTOR.services_by_name["Models"].full_name
TRAINING = training_pb2.DESCRIPTOR.services_by_name["Training"].full_name
OIP = open_inference.SERVICE
HEALTH_POLL_SECONDS = 1.0
CONTROL_CALLS = 64  # Models, Training and health calls held at once, besides Recognizer calls


# What Recognizer calls answer while no model exists anywhere (a fresh cluster, an empty registry).
NO_MODEL = ("no model is active yet; train one: `digits retrain --wait` (on Kubernetes the bootstrap Job does, "
            "deploy/k8s/bootstrap.yaml)")


class InferenceHealth:
    """Mirrors whether any inference replica is SERVING into the gateway's own health for Recognizer, and knows
    when no model exists at all (no replica serves and the registry has no active version)."""

    def __init__(self, channel: grpc.aio.Channel, servicer: health.aio.HealthServicer, registry: Registry) -> None:
        self._check = health_pb2_grpc.HealthStub(channel).Check
        self._servicer = servicer
        self._registry = registry
        self.serving = False
        self.no_model = False

    async def run(self) -> None:
        while True:
            serving = await self._probe()
            if serving != self.serving:
                self.serving = serving
                await rpc.set_serving(self._servicer, [forwarding.SERVICE], serving)
                log.info("inference health changed", extra={"serving": serving})
            self.no_model = not serving and await self._nothing_active()
            await asyncio.sleep(HEALTH_POLL_SECONDS)

    async def _probe(self) -> bool:
        try:
            reply = await self._check(health_pb2.HealthCheckRequest(service=forwarding.SERVICE), timeout=1.0)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def _nothing_active(self) -> bool:
        try:
            return await off_loop(self._registry.active_version) is None
        except (Unavailable, redis.RedisError):
            return False  # cannot tell: calls wait for a replica, as they do while one loads a model


class ModelGate(grpc.GenericRpcHandler):
    """Recognizer calls answer UNAVAILABLE with ``NO_MODEL`` at once while no model exists, rather than wait for a
    replica that cannot come until someone trains one (the forwarder waits for a ready replica up to the deadline).
    """

    def __init__(self, inner: grpc.GenericRpcHandler, no_model: Callable[[], bool]) -> None:
        self._inner = inner
        self._no_model = no_model
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = details.method
        if method not in self._handlers:
            handler = self._inner.service(details)
            if handler is None or handler.unary_unary is None:
                return handler
            self._handlers[method] = self._gated(handler)
        return self._handlers[method]

    def _gated(self, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        behavior: Any = handler.unary_unary  # a coroutine function: this is an asyncio server
        no_model = self._no_model

        async def gated(request: Any, context: rpc.Context) -> Any:
            if no_model():
                raise Unavailable(NO_MODEL)
            return await behavior(request, context)

        return grpc.unary_unary_rpc_method_handler(gated, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)


def _tls(settings: Settings) -> tuple[bytes, bytes] | None:
    """(private key, certificate chain) when the gateway should serve TLS."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    return settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes()


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("digits")
    except PackageNotFoundError:
        return "unknown"


async def main() -> None:
    settings = get_settings()
    logs.configure("gateway", settings.log_level)
    settings.check_secrets("gateway")
    registry = Registry.from_settings(settings, timeout=2.0)
    connection = connect(settings, timeout=2.0)

    channel = forwarding.inference_channel(settings.inference_target, settings.max_message_bytes)
    forwarder = forwarding.Forwarder(channel, settings.inference_timeout_seconds, settings.max_deadline_seconds,
                                     settings.gateway_max_in_flight, settings.gateway_max_bytes_in_flight)
    # gRPC refuses calls beyond these before reading their bytes: Recognizer calls past the forwarder's limit
    # (which it sheds with a retry hint) plus room for Models, Training and health.
    server = rpc.create_server(settings.max_message_bytes,
                               max_concurrent_rpcs=2 * settings.gateway_max_in_flight + CONTROL_CALLS)
    health_servicer = rpc.add_health_and_reflection(server, [forwarding.SERVICE, MODELS, TRAINING, OIP])
    replicas = ReplicaWatch(connect_async(settings), settings.replica_report_seconds)
    models_pb2_grpc.add_ModelsServicer_to_server(Models(registry, replicas, settings), server)
    training_pb2_grpc.add_TrainingServicer_to_server(Training(connection, settings), server)
    inference_health = InferenceHealth(channel, health_servicer, registry)
    server.add_generic_rpc_handlers([ModelGate(forwarder.handler(), lambda: inference_health.no_model)])
    oip_grpc.add_GRPCInferenceServiceServicer_to_server(
        OpenInference(forwarder, registry, lambda: inference_health.serving, settings.max_batch_items,
                      version=_package_version()),
        server,
    )
    await rpc.set_serving(health_servicer, ["", MODELS, TRAINING, OIP], True)
    await rpc.set_serving(health_servicer, [forwarding.SERVICE], False)
    grpc_address = f"{settings.bind_host}:{settings.gateway_grpc_port}"
    tls = _tls(settings)
    if tls:
        server.add_secure_port(grpc_address, grpc.ssl_server_credentials([tls]))
    else:
        server.add_insecure_port(grpc_address)
    await server.start()

    background = [asyncio.create_task(inference_health.run()), asyncio.create_task(replicas.run())]
    app = create_app(forwarder, registry, replicas, settings, lambda: inference_health.serving)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ssl_context = None
    if tls:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(str(settings.tls_cert_file), str(settings.tls_key_file))
    await web.TCPSite(runner, settings.bind_host, settings.gateway_http_port, ssl_context=ssl_context).start()
    log.info("gateway listening", extra={"grpc": grpc_address, "http_port": settings.gateway_http_port,
                                         "tls": bool(tls), "inference_target": settings.inference_target})

    await rpc.serve_until_signalled(server, health_servicer, settings.shutdown_grace_seconds,
                                    settings.shutdown_notice_seconds)
    for task in background:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await runner.cleanup()
    await channel.close()
