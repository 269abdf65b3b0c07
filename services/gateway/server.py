"""The gateway process: one event loop serving gRPC on :50051 and HTTP on :8080."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

import grpc
import redis
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from digits import logs, package_version
from digits.errors import Unavailable
from digits.oip import grpc_predict_v2_pb2_grpc as oip_grpc
from digits.platform import rpc
from digits.platform.corrections import Corrections
from digits.platform.redis_connection import connect, connect_async
from digits.platform.registry import Registry
from digits.settings import Settings, get_settings
from digits.v1 import feedback_pb2, feedback_pb2_grpc, models_pb2, models_pb2_grpc, training_pb2, training_pb2_grpc
from services.gateway import forwarding
from services.gateway.blocking import off_loop
from services.gateway.feedback import Feedback
from services.gateway.http import create_app
from services.gateway.models import Models
from services.gateway.open_inference.grpc_service import SERVICE as OIP
from services.gateway.open_inference.grpc_service import OpenInference
from services.gateway.open_inference.protocol import OpenInferenceModel
from services.gateway.predictions import InputKeeper
from services.gateway.replicas import ReplicaWatch
from services.gateway.training import Training

log = logging.getLogger(__name__)

MODELS = models_pb2.DESCRIPTOR.services_by_name["Models"].full_name
TRAINING = training_pb2.DESCRIPTOR.services_by_name["Training"].full_name
FEEDBACK = feedback_pb2.DESCRIPTOR.services_by_name["Feedback"].full_name
HEALTH_POLL_SECONDS = 1.0
CONTROL_CALLS = 64  # Models, Training, Feedback and health calls held at once, besides Recognizer calls


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


def _tls(settings: Settings) -> tuple[bytes, bytes] | None:
    """(private key, certificate chain) when the gateway should serve TLS."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    return settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes()


async def main() -> None:
    settings = get_settings()
    logs.configure("gateway", settings.log_level)
    settings.check_secrets("gateway")
    registry = Registry.from_settings(settings, timeout=2.0)
    connection = connect(settings, timeout=2.0)

    # gRPC refuses calls beyond these before reading their bytes: Recognizer calls past the forwarder's limit
    # (which it sheds with a retry hint) plus room for Models, Training and health.
    server = rpc.create_server(settings.max_message_bytes,
                               max_concurrent_rpcs=2 * settings.gateway_max_in_flight + CONTROL_CALLS)
    health_servicer = rpc.add_health_and_reflection(server, [forwarding.SERVICE, MODELS, TRAINING, FEEDBACK, OIP])
    channel = forwarding.inference_channel(settings.inference_target, settings.max_message_bytes)
    inference_health = InferenceHealth(channel, health_servicer, registry)
    # Kept inputs and corrections on a connection of their own: a slow write never holds the registry's.
    store = Corrections(connect(settings, timeout=2.0), keep_seconds=settings.keep_inputs_seconds,
                        keep_max=settings.keep_inputs_max, max_corrections=settings.corrections_max)
    keeper = InputKeeper(store) if settings.keep_inputs_seconds > 0 else None
    forwarder = forwarding.Forwarder(channel, settings, no_model=lambda: inference_health.no_model, keeper=keeper)
    server.add_generic_rpc_handlers([forwarder.handler()])
    replicas = ReplicaWatch(connect_async(settings), settings.replica_report_seconds)
    models_pb2_grpc.add_ModelsServicer_to_server(Models(registry, replicas, settings), server)
    training_pb2_grpc.add_TrainingServicer_to_server(Training(connection, settings), server)
    feedback = Feedback(store, keeper, settings)
    feedback_pb2_grpc.add_FeedbackServicer_to_server(feedback, server)
    digits_model = OpenInferenceModel(forwarder, registry, lambda: inference_health.serving, settings.max_batch_items)
    oip_grpc.add_GRPCInferenceServiceServicer_to_server(OpenInference(digits_model, package_version()), server)
    await rpc.set_serving(health_servicer, ["", MODELS, TRAINING, FEEDBACK, OIP], True)
    await rpc.set_serving(health_servicer, [forwarding.SERVICE], False)
    grpc_address = f"{settings.bind_host}:{settings.gateway_grpc_port}"
    tls = _tls(settings)
    if tls:
        server.add_secure_port(grpc_address, grpc.ssl_server_credentials([tls]))
    else:
        server.add_insecure_port(grpc_address)
    await server.start()

    background = [asyncio.create_task(inference_health.run()), asyncio.create_task(replicas.run())]
    if keeper is not None:
        background.append(asyncio.create_task(keeper.run()))
    app = create_app(forwarder, registry, replicas, digits_model, settings, lambda: inference_health.serving,
                     feedback)
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
