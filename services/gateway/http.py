"""The gateway's HTTP side: the web page, JSON predict and corrections, health and Prometheus metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import redis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from rq.registry import FailedJobRegistry

from digits import package_version
from digits.errors import DigitsError, InvalidInput, TooLarge, Unavailable, http_status, http_status_of
from digits.mnist import N_PIXELS, SIDE
from digits.platform import corrections as stored_corrections
from digits.platform.registry import ModelRecord, Registry
from digits.platform.rpc import LATENCY_BUCKETS, upstream_retry_after
from digits.settings import Settings
from digits.training import jobs
from digits.v1 import recognizer_pb2 as pb
from services.gateway import feedback as corrections
from services.gateway import openapi, reports
from services.gateway.answers import verdict_fields
from services.gateway.blocking import off_loop
from services.gateway.forwarding import Forwarder
from services.gateway.open_inference import rest as open_inference_rest
from services.gateway.open_inference.protocol import OpenInferenceModel
from services.gateway.replicas import ReplicaWatch

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
HTTP_REQUESTS = Counter(
    "digits_http_requests_total", "HTTP requests answered by the gateway, by route and status.", ["route", "status"]
)
HTTP_LATENCY = Histogram(
    "digits_http_request_duration_seconds", "Time to answer an HTTP request, by route and method.",
    ["route", "method"], buckets=LATENCY_BUCKETS,
)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})  # any other: "other"
FAILED_JOBS = Gauge(
    "digits_training_jobs_failed", "Retrain jobs in RQ's failed-job registry (queue training), read at each scrape."
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FORWARDER = web.AppKey("forwarder", Forwarder)
REGISTRY = web.AppKey("registry", Registry)
REPLICAS = web.AppKey("replicas", ReplicaWatch)
MAX_BODY = web.AppKey("max_body", int)  # the largest request body, in bytes
IS_SERVING: web.AppKey[Callable[[], bool]] = web.AppKey("is_serving")
FEEDBACK: web.AppKey[corrections.Feedback | None] = web.AppKey("feedback")


def create_app(
    forwarder: Forwarder, registry: Registry, replicas: ReplicaWatch, model: OpenInferenceModel, settings: Settings,
    is_serving: Callable[[], bool], feedback: corrections.Feedback | None = None,
) -> web.Application:
    app = web.Application(client_max_size=settings.max_message_bytes, middlewares=[_security_headers, _json_errors])
    app[FORWARDER] = forwarder
    app[REGISTRY] = registry
    app[REPLICAS] = replicas
    app[MAX_BODY] = settings.max_message_bytes
    app[IS_SERVING] = is_serving
    app[FEEDBACK] = feedback
    app.router.add_get("/", _index)
    app.router.add_static("/static", STATIC)
    app.router.add_post("/api/predict", _predict)
    app.router.add_post("/api/feedback", _feedback)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/openapi.json", _openapi)
    app.router.add_get("/models", _models_page)
    app.router.add_get(r"/models/{version:v\d+}", _model_page)
    app.router.add_get(r"/models/{version:v\d+}/confusion.png", _chart(reports.confusion_png))
    app.router.add_get(r"/models/{version:v\d+}/f1.png", _chart(reports.f1_png))
    app.router.add_get(r"/models/{version:v\d+}/error-reject.png", _chart(reports.error_reject_png))
    app.router.add_get(r"/models/{version:v\d+}/familiarity.png", _chart(reports.familiarity_png))
    open_inference_rest.add_routes(app, model, package_version(), settings.max_message_bytes)
    return app


# The page and its assets come from the gateway alone; the browser enforces it.
CONTENT_SECURITY_POLICY = "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'"


@web.middleware
async def _security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as JSON ``{"error": ...}`` with the status that fits; counted and timed by route."""
    started = time.perf_counter()
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    try:
        response = await handler(request)
    except DigitsError as error:
        response = _error(http_status_of(error), str(error), _retry_after(error))
    except grpc.aio.AioRpcError as error:
        hint = upstream_retry_after(error)
        response = _error(http_status(error.code(), hint), error.details() or error.code().name, hint)
    except web.HTTPRequestEntityTooLarge as error:
        response = _error(413, f"the request body is too large: {error.text}")
    except web.HTTPException as error:
        response = _error(error.status, error.reason)
    except Exception:
        log.exception("unexpected error", extra={"route": route})
        response = _error(500, "internal error; the gateway logged the details")
    HTTP_REQUESTS.labels(route, str(response.status)).inc()
    method = request.method if request.method in _METHODS else "other"
    HTTP_LATENCY.labels(route, method).observe(time.perf_counter() - started)
    return response


def _error(status: int, message: str, retry_after: str | None = None) -> web.Response:
    headers = {"Retry-After": retry_after} if retry_after else None
    return web.json_response({"error": message}, status=status, headers=headers)


def _retry_after(error: DigitsError) -> str | None:
    return str(error.retry_after_seconds) if error.retry_after_seconds is not None else None


async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html")


async def _healthz(request: web.Request) -> web.Response:
    serving = request.app[IS_SERVING]()
    return web.json_response({"status": "serving" if serving else "not serving"}, status=200 if serving else 503)


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi.DOCUMENT)


async def _metrics(request: web.Request) -> web.Response:
    failed = FailedJobRegistry(jobs.QUEUE, connection=request.app[REGISTRY].redis, serializer=jobs.SERIALIZER,
                               job_class=jobs.TrustedJob)
    with contextlib.suppress(redis.RedisError):  # Redis away: the gauge keeps what it last read
        FAILED_JOBS.set(await asyncio.to_thread(failed.get_job_count, cleanup=False))
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _models_page(request: web.Request) -> web.Response:
    registry: Registry = request.app[REGISTRY]
    view = await off_loop(registry.view, 200)
    page = reports.models_page(view.records, view.active, set(view.pinned), request.app[REPLICAS].snapshot())
    return web.Response(text=page, content_type="text/html")


async def _model_page(request: web.Request) -> web.Response:
    registry: Registry = request.app[REGISTRY]
    view = await off_loop(registry.view_of, request.match_info["version"])
    record = view.records[0]
    corrected, error = None, ""
    try:  # the corrections are a part of the page: without them the rest still shows
        corrected = await asyncio.to_thread(stored_corrections.of_version, registry.redis, record.version)
    except redis.RedisError as failed:
        log.warning("corrections unread", extra={"version": record.version, "error": str(failed)})
        error = "Redis did not answer"
    page = reports.model_page(record, view.active, corrected, error)
    return web.Response(text=page, content_type="text/html")


def _chart(draw: Callable[[ModelRecord], bytes]) -> Handler:
    async def chart(request: web.Request) -> web.Response:
        registry: Registry = request.app[REGISTRY]
        record = await off_loop(registry.get, request.match_info["version"])
        png = await asyncio.to_thread(draw, record)  # matplotlib is slow and blocking
        return web.Response(body=png, content_type="image/png", headers={"Cache-Control": "max-age=3600"})

    return chart


async def _predict(request: web.Request) -> web.Response:
    forwarder: Forwarder = request.app[FORWARDER]
    declared = request.content_length
    if declared is not None and declared > request.app[MAX_BODY]:
        raise TooLarge(f"the request body is {declared:,} bytes; the limit is {request.app[MAX_BODY]:,}")
    # Admitted by the bytes it declares before they are read (a body without a length counts as the largest).
    with forwarder.admitted(declared or request.app[MAX_BODY]):
        predict_request = await _read_predict_request(request)
        answer = await forwarder.predict(predict_request)
    body: dict[str, Any] = {
        "digit": answer.digit,
        "confidence": answer.confidence,
        "probabilities": list(answer.probabilities),
        "version": answer.version,
        "prediction_id": answer.prediction_id,
        **verdict_fields(answer),
    }
    if answer.model_input:
        body["model_input"] = list(answer.model_input)
    return web.json_response(body)


async def _feedback(request: web.Request) -> web.Response:
    """A correction, as the Feedback service's Correct takes it: ``{"prediction_id", "digit" | "not_a_digit"}``."""
    feedback = request.app[FEEDBACK]
    if feedback is None:
        raise Unavailable("this gateway takes no corrections")
    if request.content_type != "application/json":
        raise InvalidInput(f"send application/json, not {request.content_type!r}: "
                           '{"prediction_id": "...", "digit": 7} or {"prediction_id": "...", "not_a_digit": true}')
    prediction_id, digit = corrections.parse_json(await _small_body(request, corrections.MAX_BODY))
    correction, created = await feedback.correct(prediction_id, digit, corrections.caller_of_address(request.remote))
    return web.json_response(corrections.as_json(correction, created), status=201 if created else 200)


async def _small_body(request: web.Request, limit: int) -> bytes:
    """The body, refused as too large past ``limit`` bytes, whether or not it declares its length."""
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"the request body is {request.content_length:,} bytes; the limit here is {limit:,}")
    body = bytearray()
    async for chunk in request.content.iter_chunked(limit + 1):
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"the request body is larger than the limit here, {limit:,} bytes")
    return bytes(body)


async def _read_predict_request(request: web.Request) -> pb.PredictRequest:
    """Raw image bytes, a multipart upload (field ``image``) or JSON ``{"pixels": [784 numbers]}``."""
    want_input = request.query.get("model_input", "") in {"1", "true", "yes"}
    content_type = request.content_type
    if content_type.startswith("image/") or content_type == "application/octet-stream":
        return pb.PredictRequest(image=await request.read(), return_model_input=want_input)
    if content_type == "multipart/form-data":
        return pb.PredictRequest(image=await _uploaded_image(request), return_model_input=want_input)
    if content_type == "application/json":
        return pb.PredictRequest(pixels=pb.Pixels(values=_pixels(await request.read())), return_model_input=want_input)
    raise InvalidInput(
        f"unsupported Content-Type {content_type!r}: send image/*, multipart/form-data with a field 'image', "
        "or application/json with {\"pixels\": [784 numbers]}"
    )


async def _uploaded_image(request: web.Request) -> bytes:
    reader = await request.multipart()
    async for part in reader:
        if getattr(part, "name", None) == "image":
            return bytes(await part.read())  # type: ignore[union-attr]
    raise InvalidInput("the multipart upload has no field named 'image'")


def _pixels(body: bytes) -> list[float]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise InvalidInput(f"the body is not valid JSON: {str(error)[:200]}") from None
    pixels = document.get("pixels") if isinstance(document, dict) else None
    if not isinstance(pixels, list):
        raise InvalidInput('expected a JSON object {"pixels": [784 numbers from 0 to 255]}')
    if len(pixels) != N_PIXELS:
        raise InvalidInput(f"expected {N_PIXELS} pixels ({SIDE}x{SIDE}), got {len(pixels)}")
    if not all(isinstance(p, int | float) and not isinstance(p, bool) for p in pixels):
        raise InvalidInput("every pixel must be a number from 0 to 255")
    try:
        return [float(p) for p in pixels]
    except OverflowError:  # an integer beyond any float: far outside 0..255
        raise InvalidInput("every pixel must be a number from 0 to 255; one is too large to be a number") from None
