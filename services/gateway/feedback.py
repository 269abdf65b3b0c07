"""The Feedback service: corrections of predictions (anyone holding a prediction id, rate-limited per caller) and
their review (the admin token, scope "corrections"). HTTP's ``POST /api/feedback`` takes the same message, checked
by the same code (``Feedback.correct``).

Callers are told apart by address: the peer's IP (an IPv6 caller by its /64, the block one host usually holds),
never by a token. Behind a proxy every caller shares the proxy's address and its share; the gateway does not trust
``X-Forwarded-For``, which any caller can write.
"""

from __future__ import annotations

import collections
import ipaddress
import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter

from digits.errors import InvalidInput, NotFound, RateLimited
from digits.platform.corrections import Correction, Corrections, check_label, check_prediction_id
from digits.platform.rpc import Context
from digits.settings import Settings
from digits.v1 import feedback_pb2 as pb
from digits.v1 import feedback_pb2_grpc as pb_grpc
from services.gateway.auth import require_scope
from services.gateway.blocking import off_loop
from services.gateway.predictions import InputKeeper

log = logging.getLogger(__name__)

SCOPE = "corrections"
MAX_CALLERS = 10_000  # callers whose share the gateway remembers; the least recently seen is forgotten first
MAX_BODY = 1024  # bytes of a JSON correction
CORRECTIONS = Counter("digits_corrections_total",
                      "Corrections received (new ones), by the model version, its predicted digit and the true one "
                      "(a digit or not_a_digit).", ["version", "predicted", "corrected"])
REVIEWED = Counter("digits_corrections_reviewed_total", "Corrections accepted or rejected by an admin.", ["decision"])


def caller_of_address(address: str | None) -> str:
    """The key a caller's share is kept under: its IP; an IPv6 caller's /64."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address[:100]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if not ip.is_loopback:
            return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


def caller_of_peer(peer: str) -> str:
    """A gRPC peer (``ipv4:1.2.3.4:5678``, ``ipv6:[::1]:5678``, ``unix:...``) as a caller key."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return caller_of_address(rest.rpartition(":")[0])
    if kind == "ipv6":
        return caller_of_address(rest.rpartition(":")[0].strip("[]"))
    return kind[:20] or "unknown"


class RateLimiter:
    """A token bucket per caller: ``per_minute`` calls a minute, in bursts of as many. A bounded table: past
    ``max_callers`` the least recently seen caller is forgotten (and starts again with a full bucket)."""

    def __init__(self, per_minute: int, max_callers: int = MAX_CALLERS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0  # tokens a second
        self._max_callers = max_callers
        self._clock = clock
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, caller: str) -> None:
        """One call's token, or RateLimited with the seconds until the next."""
        now = self._clock()
        tokens, then = self._buckets.pop(caller, (self._capacity, now))
        tokens = min(self._capacity, tokens + (now - then) * self._rate)
        if tokens < 1.0:
            self._buckets[caller] = (tokens, now)
            wait = math.ceil((1.0 - tokens) / self._rate)
            raise RateLimited(f"too many corrections from this address: at most {self._capacity:g} a minute; "
                              f"retry in {wait} s", wait)
        self._buckets[caller] = (tokens - 1.0, now)
        while len(self._buckets) > self._max_callers:
            self._buckets.popitem(last=False)


def parse_json(body: bytes) -> tuple[str, int | None]:
    """``{"prediction_id": ..., "digit": 0-9}`` or ``{"prediction_id": ..., "not_a_digit": true}``."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise InvalidInput(f"the body is not valid JSON: {str(error)[:200]}") from None
    if not isinstance(document, dict):
        raise InvalidInput('expected a JSON object {"prediction_id": "...", "digit": 0-9} or '
                           '{"prediction_id": "...", "not_a_digit": true}')
    unknown = sorted(set(document) - {"prediction_id", "digit", "not_a_digit"})
    if unknown:
        raise InvalidInput(f"unknown field {', '.join(repr(k[:40]) for k in unknown[:3])}: send prediction_id, and "
                           "digit or not_a_digit")
    prediction_id = check_prediction_id(document.get("prediction_id"))
    digit, not_a_digit = document.get("digit"), document.get("not_a_digit")
    if (digit is None) == (not_a_digit is None):
        raise InvalidInput('say what it is: either "digit" (0 to 9) or "not_a_digit": true, not both')
    if not_a_digit is not None:
        if not_a_digit is not True:
            raise InvalidInput('"not_a_digit" must be true when sent; send "digit" for a digit')
        return prediction_id, None
    return prediction_id, check_label(digit)


def as_json(correction: Correction, created: bool | None = None) -> dict[str, Any]:
    document: dict[str, Any] = {
        "prediction_id": correction.prediction_id, "status": correction.status, "digit": correction.digit,
        "not_a_digit": correction.not_a_digit, "predicted_digit": correction.predicted_digit,
        "model_version": correction.model_version, "created_at": correction.created_at,
    }
    if created is not None:
        document["created"] = created
    return document


def to_proto(correction: Correction, created: bool = False) -> pb.Correction:
    message = pb.Correction(
        prediction_id=correction.prediction_id, status=correction.status,
        predicted_digit=correction.predicted_digit, model_version=correction.model_version,
        created_at=correction.created_at, caller=correction.caller, reviewed_at=correction.reviewed_at,
        reviewed_by=correction.reviewed_by, model_input=correction.pixels or b"", created=created,
    )
    if correction.digit is None:
        message.not_a_digit = True
    else:
        message.digit = correction.digit
    return message


class Feedback(pb_grpc.FeedbackServicer):
    def __init__(self, store: Corrections, keeper: InputKeeper | None, settings: Settings) -> None:
        self._store = store
        self._keeper = keeper
        self._settings = settings
        self._limiter = RateLimiter(settings.corrections_per_minute)

    async def correct(self, prediction_id: str, digit: int | None, caller: str) -> tuple[Correction, bool]:
        """Check, rate-limit and store one correction: what both the RPC and ``POST /api/feedback`` do."""
        check_prediction_id(prediction_id)
        if digit is not None:
            check_label(digit)
        self._limiter.take(caller)  # before Redis: a flood of made-up ids costs Redis nothing
        if self._keeper is not None:
            await self._keeper.settled(prediction_id)
        try:
            correction, created = await off_loop(self._store.correct, prediction_id, digit, caller,
                                                 auto_accept=self._settings.auto_accept_corrections)
        except NotFound as error:
            if self._store.keep_seconds > 0:
                raise
            raise NotFound(f"no prediction {prediction_id} to correct: this gateway keeps no inputs "
                           "(DIGITS_KEEP_INPUTS_SECONDS=0), so no prediction can be corrected") from error
        if created:
            CORRECTIONS.labels(correction.model_version, str(correction.predicted_digit),
                               "not_a_digit" if digit is None else str(digit)).inc()
            log.info("correction received", extra={"prediction_id": prediction_id, "caller": caller,
                                                   "predicted": correction.predicted_digit,
                                                   "corrected": correction.digit, "status": correction.status})
        return correction, created

    async def Correct(self, request: pb.CorrectRequest, context: Context) -> pb.Correction:
        truth = request.WhichOneof("truth")
        if truth is None:
            raise InvalidInput("say what it is: digit (0 to 9) or not_a_digit (true)")
        if truth == "not_a_digit" and not request.not_a_digit:
            raise InvalidInput("not_a_digit must be true when set; set digit for a digit")
        digit = request.digit if truth == "digit" else None
        correction, created = await self.correct(request.prediction_id, digit, caller_of_peer(context.peer()))
        return to_proto(correction, created)

    async def ListCorrections(self, request: pb.ListCorrectionsRequest,
                              context: Context) -> pb.ListCorrectionsResponse:
        require_scope(context, self._settings, SCOPE)
        listed = await off_loop(self._store.list, request.status, min(request.limit or 50, 1000))
        counts = await off_loop(self._store.counts)
        return pb.ListCorrectionsResponse(corrections=[to_proto(c) for c in listed], pending=counts.pending,
                                          accepted=counts.accepted, rejected=counts.rejected,
                                          capacity=self._store.max_corrections)

    async def GetCorrection(self, request: pb.GetCorrectionRequest, context: Context) -> pb.Correction:
        require_scope(context, self._settings, SCOPE)
        return to_proto(await off_loop(self._store.get, request.prediction_id))

    async def ReviewCorrection(self, request: pb.ReviewCorrectionRequest, context: Context) -> pb.Correction:
        require_scope(context, self._settings, SCOPE)
        reviewer = f"admin@{caller_of_peer(context.peer())}"
        correction, was = await off_loop(self._store.review, request.prediction_id, request.accept, reviewer)
        if was != correction.status:
            REVIEWED.labels(correction.status).inc()
            log.info("correction reviewed", extra={"prediction_id": correction.prediction_id, "from": was,
                                                   "to": correction.status, "by": reviewer})
        return to_proto(correction)

    async def DeleteCorrection(self, request: pb.GetCorrectionRequest,
                               context: Context) -> pb.DeleteCorrectionResponse:
        require_scope(context, self._settings, SCOPE)
        await off_loop(self._store.delete, request.prediction_id)
        log.info("correction deleted", extra={"prediction_id": request.prediction_id})
        return pb.DeleteCorrectionResponse(prediction_id=request.prediction_id)
