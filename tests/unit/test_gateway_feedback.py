"""The Feedback service (a real Redis behind it): callers told apart by address, their share of corrections a
minute, the JSON a correction is sent as over HTTP, the RPCs and their scopes, and POST /api/feedback in process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from digits.errors import InvalidInput, NotFound, PermissionDenied, RateLimited, Unauthenticated
from digits.platform.corrections import Corrections, KeptInput, accepted, new_prediction_id
from digits.settings import Settings
from digits.v1 import feedback_pb2 as pb
from services.gateway.feedback import (
    CORRECTIONS,
    Feedback,
    RateLimiter,
    caller_of_address,
    caller_of_peer,
    parse_json,
)
from services.gateway.http import create_app
from tests.unit.test_gateway_auth import ADMIN, TRAINING, FakeContext

ADMIN_CALL = FakeContext((("authorization", f"Bearer {ADMIN}"),))
TRAINING_CALL = FakeContext((("authorization", f"Bearer {TRAINING}"),))
ANONYMOUS = FakeContext(())


@pytest.mark.parametrize(("peer", "caller"), [
    ("ipv4:10.0.0.7:5555", "10.0.0.7"), ("ipv6:[::1]:5555", "::1"),
    ("ipv6:[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"), ("ipv6:[::ffff:10.1.2.3]:80", "10.1.2.3"),
    ("unix:/run/digits.sock", "unix"), ("", "unknown"),
])
def test_callers_are_their_address_an_ipv6_host_its_64(peer: str, caller: str) -> None:
    assert caller_of_peer(peer) == caller


def test_http_callers_too() -> None:
    assert caller_of_address("192.0.2.1") == "192.0.2.1"
    assert caller_of_address("2001:db8::9") == caller_of_address("2001:db8::1") == "2001:db8::/64"
    assert caller_of_address(None) == "unknown" and caller_of_address("fe80::1%eth0") == "fe80::/64"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_each_caller_has_a_bucket_of_its_own_refilled_over_the_minute() -> None:
    clock = Clock()
    limiter = RateLimiter(6, clock=clock)  # 6 a minute: one every 10 s, bursts of 6
    for _ in range(6):
        limiter.take("a")
    with pytest.raises(RateLimited, match="at most 6 a minute; retry in 10 s") as limited:
        limiter.take("a")
    assert limited.value.retry_after_seconds == 10 and limited.value.http == 429
    limiter.take("b")  # another caller is not held back
    clock.now += 5
    with pytest.raises(RateLimited, match="retry in 5 s"):
        limiter.take("a")
    clock.now += 5
    limiter.take("a")
    clock.now += 3600  # an hour later: a full bucket, no more
    for _ in range(6):
        limiter.take("a")
    with pytest.raises(RateLimited):
        limiter.take("a")


def test_the_callers_table_is_bounded_forgetting_the_least_recently_seen() -> None:
    clock = Clock()
    limiter = RateLimiter(1, max_callers=100, clock=clock)
    limiter.take("first")
    for n in range(1000):
        limiter.take(f"10.0.{n // 256}.{n % 256}")
    assert len(limiter) == 100
    limiter.take("first")  # forgotten, so a fresh bucket


@pytest.mark.parametrize(("body", "words"), [
    (b"not json", "not valid JSON"), (b"[1]", "expected a JSON object"), (b"[" * 100_000, "not valid JSON"),
    (b'{"prediction_id": "x", "digit": 1}', "32 hex digits"),
    (json.dumps({"prediction_id": "a" * 32}).encode(), "either \"digit\""),
    (json.dumps({"prediction_id": "a" * 32, "digit": 1, "not_a_digit": True}).encode(), "not both"),
    (json.dumps({"prediction_id": "a" * 32, "digit": 10}).encode(), "0 to 9"),
    (json.dumps({"prediction_id": "a" * 32, "digit": "7"}).encode(), "0 to 9"),
    (json.dumps({"prediction_id": "a" * 32, "digit": True}).encode(), "0 to 9"),
    (json.dumps({"prediction_id": "a" * 32, "not_a_digit": False}).encode(), "must be true"),
    (json.dumps({"prediction_id": "a" * 32, "digit": 1, "label": 2}).encode(), "unknown field 'label'"),
])
def test_hostile_json_gets_clear_words(body: bytes, words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        parse_json(body)


def test_good_json() -> None:
    assert parse_json(json.dumps({"prediction_id": "a" * 32, "digit": 0}).encode()) == ("a" * 32, 0)
    assert parse_json(json.dumps({"prediction_id": "b" * 32, "not_a_digit": True}).encode()) == ("b" * 32, None)


# -- the service, on a real Redis -----------------------------------------------------------------------------------

def service(client: redis.Redis, **settings: Any) -> tuple[Feedback, Corrections]:
    values = {"admin_token": SecretStr(ADMIN), "training_token": SecretStr(TRAINING), **settings}
    chosen = Settings(**values)
    store = Corrections(client, keep_seconds=chosen.keep_inputs_seconds, keep_max=chosen.keep_inputs_max,
                        max_corrections=chosen.corrections_max)
    return Feedback(store, None, chosen), store


def predicted(store: Corrections, digit: int = 7) -> str:
    kept = KeptInput(new_prediction_id(), bytes([digit] * 784), digit, "v5")
    store.keep([kept])
    return kept.prediction_id


def test_correct_then_review_with_the_admin_token_only(redis_client: redis.Redis) -> None:
    feedback, store = service(redis_client)
    prediction_id = predicted(store)
    before = CORRECTIONS.labels("v5", "7", "1")._value.get()

    async def calls() -> None:
        done = await feedback.Correct(pb.CorrectRequest(prediction_id=prediction_id, digit=1), ANONYMOUS)  # type: ignore[arg-type]
        assert (done.status, done.digit, done.predicted_digit, done.caller, done.created) == (
            "pending", 1, 7, "10.0.0.7", True)
        assert CORRECTIONS.labels("v5", "7", "1")._value.get() - before == 1
        again = await feedback.Correct(pb.CorrectRequest(prediction_id=prediction_id, digit=1), ANONYMOUS)  # type: ignore[arg-type]
        assert not again.created and CORRECTIONS.labels("v5", "7", "1")._value.get() - before == 1

        for context, error in ((ANONYMOUS, Unauthenticated), (TRAINING_CALL, PermissionDenied)):
            with pytest.raises(error):
                await feedback.ListCorrections(pb.ListCorrectionsRequest(), context)  # type: ignore[arg-type]
            with pytest.raises(error):
                await feedback.ReviewCorrection(pb.ReviewCorrectionRequest(prediction_id=prediction_id, accept=True),
                                                context)  # type: ignore[arg-type]
            with pytest.raises(error):
                await feedback.GetCorrection(pb.GetCorrectionRequest(prediction_id=prediction_id), context)  # type: ignore[arg-type]
            with pytest.raises(error):
                await feedback.DeleteCorrection(pb.GetCorrectionRequest(prediction_id=prediction_id), context)  # type: ignore[arg-type]

        listed = await feedback.ListCorrections(pb.ListCorrectionsRequest(status="pending"), ADMIN_CALL)  # type: ignore[arg-type]
        assert [c.prediction_id for c in listed.corrections] == [prediction_id]
        assert (listed.pending, listed.accepted, listed.rejected, listed.capacity) == (1, 0, 0, 10_000)
        shown = await feedback.GetCorrection(pb.GetCorrectionRequest(prediction_id=prediction_id), ADMIN_CALL)  # type: ignore[arg-type]
        assert shown.model_input == bytes([7] * 784)
        done = await feedback.ReviewCorrection(pb.ReviewCorrectionRequest(prediction_id=prediction_id, accept=True),
                                               ADMIN_CALL)  # type: ignore[arg-type]
        assert done.status == "accepted" and done.reviewed_by == "admin@10.0.0.7"

    asyncio.run(calls())
    assert accepted(redis_client).ids == [prediction_id]


def test_a_correction_names_its_truth(redis_client: redis.Redis) -> None:
    feedback, store = service(redis_client)

    async def calls() -> None:
        with pytest.raises(InvalidInput, match="say what it is"):
            await feedback.Correct(pb.CorrectRequest(prediction_id=predicted(store)), ANONYMOUS)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="must be true"):
            await feedback.Correct(pb.CorrectRequest(prediction_id=predicted(store), not_a_digit=False), ANONYMOUS)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="0 to 9"):
            await feedback.Correct(pb.CorrectRequest(prediction_id=predicted(store), digit=12), ANONYMOUS)  # type: ignore[arg-type]
        done = await feedback.Correct(pb.CorrectRequest(prediction_id=predicted(store), not_a_digit=True), ANONYMOUS)  # type: ignore[arg-type]
        assert done.WhichOneof("truth") == "not_a_digit"
        zero = await feedback.Correct(pb.CorrectRequest(prediction_id=predicted(store), digit=0), ANONYMOUS)  # type: ignore[arg-type]
        assert zero.WhichOneof("truth") == "digit" and zero.digit == 0

    asyncio.run(calls())


def test_a_gateway_that_keeps_nothing_says_so(redis_client: redis.Redis) -> None:
    feedback, _ = service(redis_client, keep_inputs_seconds=0)
    with pytest.raises(NotFound, match="keeps no inputs \\(DIGITS_KEEP_INPUTS_SECONDS=0\\)"):
        asyncio.run(feedback.correct(new_prediction_id(), 3, "10.0.0.1"))


def test_auto_accept(redis_client: redis.Redis) -> None:
    feedback, store = service(redis_client, auto_accept_corrections=True)
    done, _ = asyncio.run(feedback.correct(predicted(store), 3, "10.0.0.1"))
    assert done.status == "accepted" and done.reviewed_by == "auto"


# -- POST /api/feedback -------------------------------------------------------------------------------------------

def with_client(feedback: Feedback, test: Callable[[TestClient[web.Request, web.Application]], Awaitable[None]]
                ) -> None:
    async def run() -> None:
        app = create_app(None, None, None, None, Settings(), lambda: True, feedback)  # type: ignore[arg-type]
        async with TestClient(TestServer(app)) as client:
            await test(client)

    asyncio.run(run())


def test_http_feedback_takes_the_same_message_and_says_what_went_wrong(redis_client: redis.Redis) -> None:
    feedback, store = service(redis_client, corrections_per_minute=4)
    ids = [predicted(store) for _ in range(3)]

    async def check(client: TestClient[web.Request, web.Application]) -> None:
        created = await client.post("/api/feedback", json={"prediction_id": ids[0], "digit": 4})
        assert created.status == 201
        body = await created.json()
        assert (body["status"], body["digit"], body["not_a_digit"], body["predicted_digit"], body["created"]) == (
            "pending", 4, False, 7, True)
        again = await client.post("/api/feedback", json={"prediction_id": ids[0], "digit": 4})
        assert again.status == 200 and (await again.json())["created"] is False
        other = await client.post("/api/feedback", json={"prediction_id": ids[0], "not_a_digit": True})
        assert other.status == 409 and "corrected already, as a 4" in (await other.json())["error"]
        unknown = await client.post("/api/feedback", json={"prediction_id": new_prediction_id(), "digit": 4})
        assert unknown.status == 404 and "expired" in (await unknown.json())["error"]
        bad = await client.post("/api/feedback", json={"prediction_id": "../etc", "digit": 4})
        assert bad.status == 400 and "32 hex digits" in (await bad.json())["error"]
        # That was 4 corrections from this address: its share of the minute. Invalid ones cost nothing.
        limited = await client.post("/api/feedback", json={"prediction_id": ids[1], "digit": 4})
        assert limited.status == 429 and int(limited.headers["Retry-After"]) >= 1
        assert "too many corrections" in (await limited.json())["error"]
        form = await client.post("/api/feedback", data=b"prediction_id=x", headers={"Content-Type": "text/plain"})
        assert form.status == 400 and "application/json" in (await form.json())["error"]
        huge = await client.post("/api/feedback", data=b"{" + b" " * 5000 + b"}",
                                 headers={"Content-Type": "application/json"})
        assert huge.status == 413

    with_client(feedback, check)
