"""What every Digits gRPC server shares: errors mapped to status codes in one place, request metrics,
health and reflection, and a shutdown that stops taking calls, drains, and exits within a grace period.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter, Histogram

from digits.errors import RETRY_AFTER_KEY, DigitsError
from digits.platform import memory

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
else:
    Context = grpc.aio.ServicerContext
    Handler = grpc.RpcMethodHandler

# The go-grpc-prometheus / py-grpc-prometheus names and labels, which standard gRPC dashboards query; grpc_code is
# the status code's name as Python's grpc spells it ("OK", "INVALID_ARGUMENT"), as py-grpc-prometheus has it.
# In flight = started - handled.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
STARTED = Counter(
    "grpc_server_started_total", "RPCs started on the server.", ["grpc_type", "grpc_service", "grpc_method"],
)
HANDLED = Counter(
    "grpc_server_handled_total", "RPCs completed on the server, regardless of success or failure.",
    ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
)
RECEIVED = Counter(
    "grpc_server_msg_received_total", "gRPC stream messages received on the server.",
    ["grpc_type", "grpc_service", "grpc_method"],
)
SENT = Counter(
    "grpc_server_msg_sent_total", "gRPC stream messages sent on the server.",
    ["grpc_type", "grpc_service", "grpc_method"],
)
LATENCY = Histogram(
    "grpc_server_handling_seconds", "Time to answer an RPC, from receipt to the last response.",
    ["grpc_type", "grpc_service", "grpc_method"], buckets=LATENCY_BUCKETS,
)

# Calls whose health is not a service's own business.
_UNMEASURED = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class ServingInterceptor(grpc.aio.ServerInterceptor):
    """Turns DigitsError into its status code, hides unexpected errors behind INTERNAL, counts every call.

    Each method's wrapped handler is built once, on its first call, and reused: this runs on every call."""

    def __init__(self) -> None:
        self._wrapped: dict[str, Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method: str = details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = await continuation(details)
            if handler is None:  # not a method of this server: nothing to keep for a name a caller made up
                return None
            wrapped = self._wrapped[method] = _wrap(handler, method)
        return wrapped


def _wrap(handler: Handler, method: str) -> Handler:
    if method.startswith(_UNMEASURED):
        return handler
    service, _, name = method.strip("/").rpartition("/")
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            _unary(handler.unary_unary, ("unary", service, name)),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            _streaming(handler.unary_stream, ("server_stream", service, name)),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(
            _bidi(handler.stream_stream, ("bidi_stream", service, name)),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


# (grpc_type, grpc_service, grpc_method)
Labels: TypeAlias = tuple[str, str, str]


def _unary(behavior: Any, labels: Labels) -> Any:
    async def wrapped(request: Any, context: Context) -> Any:
        started = _start(labels)
        code = grpc.StatusCode.OK
        try:
            return await behavior(request, context)
        except BaseException as error:
            del request  # an abort's traceback holds this frame (see _abort_for)
            code = _code_for(error, context)
            await _abort_for(error, context, labels[2])
            raise
        finally:
            _observe(labels, code, started)

    return wrapped


def _streaming(behavior: Any, labels: Labels) -> Any:
    async def wrapped(request: Any, context: Context) -> AsyncIterator[Any]:
        started = _start(labels)
        sent = _sent(labels)
        code = grpc.StatusCode.OK
        try:
            async for response in behavior(request, context):
                sent.inc()
                yield response
        except BaseException as error:
            del request  # an abort's traceback holds this frame (see _abort_for)
            code = _code_for(error, context)
            await _abort_for(error, context, labels[2])
            raise
        finally:
            _observe(labels, code, started)

    return wrapped


def _bidi(behavior: Any, labels: Labels) -> Any:
    """A stream of requests answered by a stream of responses: counted and mapped as a server stream is, and its
    requests counted as they arrive."""
    async def counted(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        received = _received(labels)
        async for request in requests:
            received.inc()
            yield request

    return _streaming(lambda requests, context: behavior(counted(requests), context), labels)


def _code_for(error: BaseException, context: Context) -> grpc.StatusCode:
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED
    if isinstance(error, DigitsError):
        return error.code
    if isinstance(error, grpc.aio.AioRpcError):
        return error.code()
    if isinstance(error, grpc.aio.AbortError):
        code = context.code()
        return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
    return grpc.StatusCode.INTERNAL


async def _abort_for(error: BaseException, context: Context, method: str) -> None:
    """Abort the call with the status the error stands for (abort raises); leave the rest as they are.

    gRPC keeps the AbortError that abort raises on the call's state, and the AbortError's traceback holds the frames
    it passes through, which hold the context, which holds the state: a cycle, freed only by the cyclic garbage
    collector, and whatever it reaches stays until then. Lest that be the request (an image of up to 8 MB), the
    wrappers let go of it before they call this, and the error answered here, which the AbortError keeps as its
    ``__context__``, loses its traceback: the frames of the handler that raised it, which hold the request.
    """
    if isinstance(error, asyncio.CancelledError | GeneratorExit | grpc.aio.AbortError):
        return
    if isinstance(error, DigitsError):
        log.info("call refused", extra={"method": method, "code": error.code.name, "reason": str(error)})
        error.__traceback__ = None
        await context.abort(error.code, str(error), trailing_metadata=_retry_after(error))
    if isinstance(error, grpc.aio.AioRpcError):
        # An upstream call (gateway -> inference) failed: the caller gets its status, words and retry hint unchanged.
        hint = upstream_retry_after(error)
        error.__traceback__ = None
        await context.abort(error.code(), error.details() or error.code().name,
                            trailing_metadata=((RETRY_AFTER_KEY, hint),) if hint else ())
    log.exception("unexpected error", extra={"method": method})
    error.__traceback__ = None  # logged
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; the service logged the details")


def _retry_after(error: DigitsError) -> tuple[tuple[str, str], ...]:
    seconds = error.retry_after_seconds
    return ((RETRY_AFTER_KEY, str(seconds)),) if seconds is not None else ()


def upstream_retry_after(error: grpc.aio.AioRpcError) -> str | None:
    """The ``retry-after`` an upstream service attached to its refusal (it was busy, not the request wrong)."""
    for key, value in error.trailing_metadata() or ():
        if key == RETRY_AFTER_KEY:
            return str(value)
    return None


# Label lookups are bound once per (method, code): these run on every call.
@functools.cache
def _started(labels: Labels) -> Any:
    return STARTED.labels(*labels)


@functools.cache
def _handled(labels: Labels, code: str) -> Any:
    return HANDLED.labels(*labels, code)


@functools.cache
def _received(labels: Labels) -> Any:
    return RECEIVED.labels(*labels)


@functools.cache
def _sent(labels: Labels) -> Any:
    return SENT.labels(*labels)


@functools.cache
def _histogram(labels: Labels) -> Any:
    return LATENCY.labels(*labels)


def _start(labels: Labels) -> float:
    _started(labels).inc()
    return time.perf_counter()


def _observe(labels: Labels, code: grpc.StatusCode, started: float) -> None:
    _handled(labels, code.name).inc()
    _histogram(labels).observe(time.perf_counter() - started)


def create_server(max_message_bytes: int, max_connection_age_seconds: float = 0, *,
                  max_concurrent_rpcs: int | None = None) -> grpc.aio.Server:
    """A server with the interceptor; past ``max_concurrent_rpcs`` calls, gRPC refuses new ones with
    RESOURCE_EXHAUSTED before reading their messages, which bounds the request bytes a server holds."""
    options: list[tuple[str, int]] = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),  # a second process on the same port is an error, not a silent split
    ]
    if max_connection_age_seconds:
        # Clients reconnect now and then, and so re-resolve DNS: new replicas behind a headless Service
        # join the round robin. In-flight calls get the grace period to finish.
        options += [("grpc.max_connection_age_ms", int(max_connection_age_seconds * 1000)),
                    ("grpc.max_connection_age_grace_ms", 30_000)]
    return grpc.aio.server(interceptors=[ServingInterceptor()], options=options,
                           maximum_concurrent_rpcs=max_concurrent_rpcs)


def add_health_and_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> health.aio.HealthServicer:
    """Health starts NOT_SERVING for every service; the caller says when it is ready."""
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    names = list(service_names)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    return servicer


async def set_serving(servicer: health.aio.HealthServicer, names: Iterable[str], serving: bool) -> None:
    """Set the health of the named services ("" is the server as a whole: alive and answering)."""
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in names:
        await servicer.set(name, status)


async def serve_until_signalled(
    server: grpc.aio.Server, servicer: health.aio.HealthServicer, grace_seconds: float, notice_seconds: float,
    draining: asyncio.Event | None = None,
) -> None:
    """Run until SIGTERM/SIGINT; then report NOT_SERVING (and set ``draining``, for long-lived streams to end),
    and after ``notice_seconds`` refuse new calls and drain the ones in flight for up to ``grace_seconds``.

    The notice matters: clients that watch health (the gateway does) move new calls elsewhere first; a call
    that reached a server already shutting down would be cancelled, which no client retries.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: not serving, draining", extra={"grace_seconds": grace_seconds})
    await servicer.enter_graceful_shutdown()
    if draining is not None:
        draining.set()
    await asyncio.sleep(notice_seconds)
    await server.stop(grace_seconds)
    log.info("stopped")


def run(main: Callable[[], Coroutine[Any, Any, None]], large_block_bytes: int = memory.MESSAGE_BLOCK_BYTES) -> None:
    """Run a serving process's asyncio main on uvloop; blocks of ``large_block_bytes`` or more go back to the system
    once freed (``digits.platform.memory``)."""
    import uvloop

    memory.return_large_buffers(large_block_bytes)
    uvloop.run(main())
