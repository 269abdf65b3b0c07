"""Corrections under fault: a flood of feedback keeps Redis bounded and Predict answering, unknown, expired and
malformed ids and hostile payloads get a 4xx-class answer in words, a training token cannot review, and a
correction survives a Redis restart between its making and its review. Each case prints its figures."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial

import aiohttp
import grpc
import pytest

from digits.platform.corrections import CORRECTION_PREFIX, STATUSES, accepted, new_prediction_id, status_key
from digits.stack.local import LocalStack
from digits.v1 import feedback_pb2 as fb
from digits.v1 import feedback_pb2_grpc as fb_grpc
from digits.v1 import recognizer_pb2 as pb
from digits.v1 import recognizer_pb2_grpc
from tests.faults.conftest import ADMIN, TRAINING_TOKEN, extra_gateway
from tests.faults.load import Load
from tests.integration.digits_data import held_out
from tests.stacks import running_process_groups

TRAINING = (("authorization", f"Bearer {TRAINING_TOKEN}"),)
FLOOD_SECONDS = 10
FLOOD_CLIENTS = 8  # half over HTTP, half over gRPC
CORRECTIONS_MAX = 200
KEEP_MAX = 500
PER_MINUTE = 300  # a burst of 300, then 5 a second: the store fills before the address runs out of its share


def stored_ids(stack: LocalStack) -> set[str]:
    client = stack.redis_client()
    return {i.decode() for s in STATUSES for i in client.zrange(status_key(s), 0, -1)}  # type: ignore[union-attr]


def correction_keys(stack: LocalStack) -> int:
    return sum(1 for _ in stack.redis_client().scan_iter(match=f"{CORRECTION_PREFIX}*", count=1000))


def forget(stack: LocalStack, ids: set[str]) -> None:
    """Delete corrections this file made, so that the suite's stack is left as it was found."""
    client = stack.redis_client()
    with client.pipeline(transaction=True) as tx:
        for prediction_id in ids:
            tx.delete(CORRECTION_PREFIX + prediction_id)
            for status in STATUSES:
                tx.zrem(status_key(status), prediction_id)
        tx.execute()


def predict_ids(target: str, count: int) -> list[pb.PredictResponse]:
    pixels, _ = held_out(count)
    with grpc.insecure_channel(target) as channel:
        stub = recognizer_pb2_grpc.RecognizerStub(channel)
        batch = stub.PredictBatch(pb.PredictBatchRequest(requests=[
            pb.PredictRequest(pixels=pb.Pixels(values=row.tolist())) for row in pixels]), timeout=10)
    return list(batch.responses)


def post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def grpc_error(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


@pytest.fixture
def feedback(stack: LocalStack) -> Iterator[fb_grpc.FeedbackStub]:
    with grpc.insecure_channel(stack.ports.gateway) as channel:
        yield fb_grpc.FeedbackStub(channel)


# -- 1. a flood ------------------------------------------------------------------------------------------------------


class Flood:
    """``FLOOD_CLIENTS`` clients get prediction ids (PredictBatch of 16) and correct each as fast as they can, half
    over HTTP, half over gRPC, for ``FLOOD_SECONDS``; every outcome is counted by transport and status."""

    def __init__(self, grpc_port: int, http_port: int) -> None:
        self.target = f"127.0.0.1:{grpc_port}"
        self.url = f"http://127.0.0.1:{http_port}/api/feedback"
        self.outcomes: Counter[str] = Counter()
        self.unexpected: list[str] = []
        self.retry_after_missing = 0
        self.created: set[str] = set()

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        pixels, _ = held_out(16)
        batch = pb.PredictBatchRequest(requests=[pb.PredictRequest(pixels=pb.Pixels(values=r.tolist()))
                                                 for r in pixels])
        stop = time.monotonic() + FLOOD_SECONDS
        async with grpc.aio.insecure_channel(self.target) as channel, aiohttp.ClientSession() as session:
            recognizer = recognizer_pb2_grpc.RecognizerStub(channel)
            feedback = fb_grpc.FeedbackStub(channel)

            async def client(index: int) -> None:
                ids: list[tuple[str, int]] = []
                while time.monotonic() < stop:
                    if not ids:
                        reply = await recognizer.PredictBatch(batch, timeout=10)
                        ids = [(r.prediction_id, (r.digit + 1) % 10) for r in reply.responses]
                    prediction_id, digit = ids.pop()
                    if index % 2:
                        await self._http(session, prediction_id, digit)
                    else:
                        await self._grpc(feedback, prediction_id, digit)

            await asyncio.gather(*(client(i) for i in range(FLOOD_CLIENTS)))

    async def _http(self, session: aiohttp.ClientSession, prediction_id: str, digit: int) -> None:
        async with session.post(self.url, json={"prediction_id": prediction_id, "digit": digit},
                                timeout=aiohttp.ClientTimeout(total=10)) as response:
            body = await response.json()
            status = response.status
            self.outcomes[f"http {status}"] += 1
            if status == 201:
                self.created.add(prediction_id)
            elif status == 429 or (status == 503 and "store of corrections is full" in body.get("error", "")):
                self.retry_after_missing += int(int(response.headers.get("Retry-After", "0")) < 1)
            elif not (status == 404 and "expired" in body.get("error", "")):
                self.unexpected.append(f"http {status}: {body}")

    async def _grpc(self, feedback: fb_grpc.FeedbackAsyncStub, prediction_id: str, digit: int) -> None:
        try:
            await feedback.Correct(fb.CorrectRequest(prediction_id=prediction_id, digit=digit), timeout=10)
            self.outcomes["grpc OK"] += 1
            self.created.add(prediction_id)
        except grpc.aio.AioRpcError as error:
            code, details = error.code(), error.details() or ""
            full = "store of corrections is full" in details
            self.outcomes[f"grpc {code.name}{' (full)' if full else ''}"] += 1
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                hints = dict(error.trailing_metadata() or ())
                self.retry_after_missing += int(int(str(hints.get("retry-after", "0"))) < 1)
            elif not (code == grpc.StatusCode.NOT_FOUND and "expired" in details):
                self.unexpected.append(f"grpc {code.name}: {details}")


def test_a_flood_of_feedback_keeps_redis_bounded_and_predict_answering(stack: LocalStack) -> None:
    redis_client = stack.redis_client()
    before_ids = stored_ids(stack)
    assert len(before_ids) < CORRECTIONS_MAX
    memory_before = int(redis_client.info("memory")["used_memory"])
    most_keys = correction_keys(stack)
    sampled = threading.Event()
    env = {"DIGITS_CORRECTIONS_MAX": str(CORRECTIONS_MAX), "DIGITS_KEEP_INPUTS_MAX": str(KEEP_MAX),
           "DIGITS_CORRECTIONS_PER_MINUTE": str(PER_MINUTE)}
    try:
        with extra_gateway(stack, **env) as (grpc_port, http_port):
            flood = Flood(grpc_port, http_port)
            with Load(f"127.0.0.1:{grpc_port}", clients=2) as load:
                flooding = threading.Thread(target=flood.run, daemon=True)
                flooding.start()
                deadline = time.monotonic() + FLOOD_SECONDS + 30
                while flooding.is_alive():  # the key count, sampled all along
                    assert time.monotonic() < deadline, "the flood did not end"
                    most_keys = max(most_keys, correction_keys(stack))
                    sampled.set()
                    time.sleep(0.25)
                flooding.join(1)
            memory_after = int(redis_client.info("memory")["used_memory"])
            inputs = int(redis_client.zcard("digits:inputs"))
            # Past its maximum, the store refuses with its documented error, whoever asks.
            responses = predict_ids(f"127.0.0.1:{grpc_port}", 1)
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                refused = grpc_error(lambda: fb_grpc.FeedbackStub(channel).Correct(
                    fb.CorrectRequest(prediction_id=responses[0].prediction_id, digit=1), timeout=10))
        load.report("predict during the feedback flood, 2 clients")
        print(f"[feedback flood] {FLOOD_CLIENTS} clients (HTTP and gRPC) for {FLOOD_SECONDS} s against "
              f"DIGITS_CORRECTIONS_MAX={CORRECTIONS_MAX}, DIGITS_KEEP_INPUTS_MAX={KEEP_MAX}, "
              f"{PER_MINUTE}/min: {dict(sorted(flood.outcomes.items()))}; correction keys at most {most_keys}, "
              f"kept inputs {inputs}; Redis used_memory {memory_before / 2**20:.2f} -> {memory_after / 2**20:.2f} MB")
        print(f"[store full] {refused.code().name}: {refused.details()}")
        assert sampled.is_set()
        assert not flood.unexpected, flood.unexpected[:5]
        assert flood.retry_after_missing == 0
        assert most_keys <= CORRECTIONS_MAX and len(stored_ids(stack)) == CORRECTIONS_MAX
        assert flood.outcomes["http 429"] and flood.outcomes["grpc RESOURCE_EXHAUSTED"], flood.outcomes
        assert flood.outcomes["http 503"] + flood.outcomes["grpc RESOURCE_EXHAUSTED (full)"], flood.outcomes
        assert inputs <= KEEP_MAX + 1000  # the main gateway's own predictions may join the index after the trim
        assert memory_after - memory_before < 16 * 2**20
        assert not load.failures(), load.failures()[:5]
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "store of corrections is full" in (refused.details() or "")
    finally:
        forget(stack, stored_ids(stack) - before_ids)


# -- 2. unknown, expired and malformed ids -----------------------------------------------------------------------


def test_unknown_expired_and_malformed_ids(stack: LocalStack, feedback: fb_grpc.FeedbackStub) -> None:
    unknown = grpc_error(lambda: feedback.Correct(fb.CorrectRequest(prediction_id=new_prediction_id(), digit=3),
                                                  timeout=10))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND and "never existed" in (unknown.details() or "")
    with extra_gateway(stack, DIGITS_KEEP_INPUTS_SECONDS="1") as (grpc_port, _):
        answer = predict_ids(f"127.0.0.1:{grpc_port}", 1)[0]
        time.sleep(1.5)
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            expired = grpc_error(lambda: fb_grpc.FeedbackStub(channel).Correct(
                fb.CorrectRequest(prediction_id=answer.prediction_id, digit=3), timeout=10))
    assert expired.code() == grpc.StatusCode.NOT_FOUND
    assert "it expired (inputs are kept 1 s" in (expired.details() or "")
    malformed = ["", "digits:active", "A" * 32, "a" * 31, "a" * 33, "g" * 32, "ä" * 32, "a" * 32 + "\n",
                 "*", "../" * 10, "a" * 100_000]
    codes: Counter[str] = Counter()
    for prediction_id in malformed:
        error = grpc_error(partial(feedback.Correct, fb.CorrectRequest(prediction_id=prediction_id, digit=3),
                                   timeout=10))
        codes[error.code().name] += 1
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (prediction_id[:40], error.details())
        assert "32 hex digits" in (error.details() or "") and len(error.details() or "") < 300
    print(f"[unknown id] {unknown.code().name}: {unknown.details()}")
    print(f"[expired id] {expired.code().name}: {expired.details()}")
    print(f"[malformed ids] {len(malformed)} ids: {dict(codes)}")


# -- 3. hostile payloads ----------------------------------------------------------------------------------------


def test_hostile_feedback_payloads_get_a_4xx_in_words(stack: LocalStack, feedback: fb_grpc.FeedbackStub) -> None:
    url = f"http://127.0.0.1:{stack.ports.gateway_http}/api/feedback"
    some = new_prediction_id()
    nested = 100_000
    payloads: dict[str, tuple[bytes, str]] = {
        "huge JSON (8 MB)": (json.dumps({"prediction_id": some, "digit": 1, "x": "y" * 8_000_000}).encode(),
                             "application/json"),
        "deeply nested JSON": (b"[" * nested + b"]" * nested, "application/json"),
        "nested within the size limit": (b'{"prediction_id":' + b"[" * 400 + b"]" * 400 + b"}", "application/json"),
        "digit as text": (json.dumps({"prediction_id": some, "digit": "7"}).encode(), "application/json"),
        "digit as a float": (json.dumps({"prediction_id": some, "digit": 7.0}).encode(), "application/json"),
        "digit as a boolean": (json.dumps({"prediction_id": some, "digit": True}).encode(), "application/json"),
        "digit as a list": (json.dumps({"prediction_id": some, "digit": [7]}).encode(), "application/json"),
        "id as a number": (json.dumps({"prediction_id": 12345, "digit": 7}).encode(), "application/json"),
        "id as an object": (json.dumps({"prediction_id": {"$ne": ""}, "digit": 7}).encode(), "application/json"),
        "digit -1": (json.dumps({"prediction_id": some, "digit": -1}).encode(), "application/json"),
        "digit 10": (json.dumps({"prediction_id": some, "digit": 10}).encode(), "application/json"),
        "digit 10**300": (b'{"prediction_id": "%s", "digit": 1%s}' % (some.encode(), b"0" * 300), "application/json"),
        "digit 1e999": (b'{"prediction_id": "%s", "digit": 1e999}' % some.encode(), "application/json"),
        "digit NaN": (b'{"prediction_id": "%s", "digit": NaN}' % some.encode(), "application/json"),
        "both digit and not_a_digit": (json.dumps({"prediction_id": some, "digit": 1, "not_a_digit": True}).encode(),
                                       "application/json"),
        "neither": (json.dumps({"prediction_id": some}).encode(), "application/json"),
        "not_a_digit false": (json.dumps({"prediction_id": some, "not_a_digit": False}).encode(), "application/json"),
        "non-JSON": (b"\x89PNG\r\n\x1a\n\x00\xff garbage", "application/json"),
        "invalid UTF-8": (b'{"prediction_id": "\xff\xfe", "digit": 1}', "application/json"),
        "empty body": (b"", "application/json"),
        "a list": (b"[1, 2, 3]", "application/json"),
        "form-encoded": (b"prediction_id=x&digit=1", "application/x-www-form-urlencoded"),
        "huge id (1 MB)": (json.dumps({"prediction_id": "a" * 1_000_000, "digit": 1}).encode(), "application/json"),
        "long id within the size limit": (json.dumps({"prediction_id": "a" * 900, "digit": 1}).encode(),
                                          "application/json"),
    }
    statuses: dict[str, int] = {}
    for name, (body, content_type) in payloads.items():
        status, text = post(url, body, content_type)
        statuses[name] = status
        assert 400 <= status < 500 and status != 404, (name, status, text[:200])
        message = json.loads(text)["error"]
        assert message and len(message) < 500, (name, message)
    grpc_cases: dict[str, fb.CorrectRequest] = {
        "digit 10": fb.CorrectRequest(prediction_id=some, digit=10),
        "digit 2**32-1": fb.CorrectRequest(prediction_id=some, digit=2**32 - 1),
        "not_a_digit false": fb.CorrectRequest(prediction_id=some, not_a_digit=False),
        "no truth": fb.CorrectRequest(prediction_id=some),
        "huge id (1 MB)": fb.CorrectRequest(prediction_id="a" * 1_000_000, digit=1),
        "id of control characters": fb.CorrectRequest(prediction_id="\x00" * 32, digit=1),
    }
    codes: dict[str, str] = {}
    for name, request in grpc_cases.items():
        error = grpc_error(partial(feedback.Correct, request, timeout=10))
        codes[name] = error.code().name
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, error.code(), error.details())
        assert error.details() and len(error.details() or "") < 500
    print(f"[hostile feedback over HTTP] {len(payloads)} payloads: {dict(Counter(statuses.values()))} "
          f"(413: {sorted(n for n, s in statuses.items() if s == 413)})")
    print(f"[hostile feedback over gRPC] {len(grpc_cases)} requests: {dict(Counter(codes.values()))}")


# -- 4. a training token on the review -------------------------------------------------------------------------


def test_a_training_token_cannot_review_corrections(stack: LocalStack, feedback: fb_grpc.FeedbackStub) -> None:
    answer = predict_ids(stack.ports.gateway, 1)[0]
    made = feedback.Correct(fb.CorrectRequest(prediction_id=answer.prediction_id, digit=(answer.digit + 1) % 10),
                            timeout=10)
    try:
        assert made.status == "pending"
        calls = {
            "list": lambda: feedback.ListCorrections(fb.ListCorrectionsRequest(), metadata=TRAINING, timeout=10),
            "get": lambda: feedback.GetCorrection(fb.GetCorrectionRequest(prediction_id=made.prediction_id),
                                                  metadata=TRAINING, timeout=10),
            "accept": lambda: feedback.ReviewCorrection(fb.ReviewCorrectionRequest(
                prediction_id=made.prediction_id, accept=True), metadata=TRAINING, timeout=10),
            "reject": lambda: feedback.ReviewCorrection(fb.ReviewCorrectionRequest(
                prediction_id=made.prediction_id, accept=False), metadata=TRAINING, timeout=10),
            "delete": lambda: feedback.DeleteCorrection(fb.GetCorrectionRequest(prediction_id=made.prediction_id),
                                                        metadata=TRAINING, timeout=10),
        }
        refused: dict[str, str] = {}
        for name, call in calls.items():
            error = grpc_error(call)
            refused[name] = error.code().name
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED, (name, error.details())
            assert "corrections" in (error.details() or "")
        still = feedback.GetCorrection(fb.GetCorrectionRequest(prediction_id=made.prediction_id), metadata=ADMIN,
                                       timeout=10)
        assert still.status == "pending" and not still.reviewed_by
        print(f"[training token on corrections] {refused}; the correction stayed {still.status}")
    finally:
        forget(stack, {made.prediction_id})


# -- 5. Redis restarts between a correction and its review ------------------------------------------------------


def test_a_correction_survives_a_redis_restart_before_its_review(stack: LocalStack,
                                                                  feedback: fb_grpc.FeedbackStub) -> None:
    answer = predict_ids(stack.ports.gateway, 1)[0]
    truth = (answer.digit + 1) % 10
    made = feedback.Correct(fb.CorrectRequest(prediction_id=answer.prediction_id, digit=truth), timeout=10)
    try:
        assert made.status == "pending"
        redis_pid = running_process_groups(stack.run_dir)["redis"]
        time.sleep(1.5)  # appendfsync everysec
        os.killpg(redis_pid, signal.SIGKILL)
        started = time.monotonic()
        while running_process_groups(stack.run_dir).get("redis") in (None, redis_pid):
            assert time.monotonic() - started < 30, "the supervisor did not restart Redis"
            time.sleep(0.2)
        while True:
            try:
                back = feedback.GetCorrection(fb.GetCorrectionRequest(prediction_id=made.prediction_id),
                                              metadata=ADMIN, timeout=5)
                break
            except grpc.RpcError as error:
                assert error.code() != grpc.StatusCode.NOT_FOUND, "the correction was lost with Redis"
                assert time.monotonic() - started < 60, f"the gateway did not get Redis back: {error.details()}"
                time.sleep(0.5)
        recovered = time.monotonic() - started
        assert back.status == "pending" and back.digit == truth and len(back.model_input) == 784
        reviewed = feedback.ReviewCorrection(fb.ReviewCorrectionRequest(prediction_id=made.prediction_id,
                                                                        accept=True), metadata=ADMIN, timeout=10)
        assert reviewed.status == "accepted"
        data = accepted(stack.redis_client("trainer"))
        assert made.prediction_id in data.ids
        row = data.ids.index(made.prediction_id)
        assert data.pixels[row].tobytes() == back.model_input and data.labels[row] == truth
        # The rest of the stack answers again before the next case.
        with grpc.insecure_channel(stack.ports.gateway) as channel:
            recognizer = recognizer_pb2_grpc.RecognizerStub(channel)
            pixels, _ = held_out(1)
            assert recognizer.Predict(pb.PredictRequest(pixels=pb.Pixels(values=pixels[0].tolist())), timeout=10)
        print(f"[correction through a Redis restart] SIGKILLed Redis 1.5 s after the correction; it was back "
              f"{back.status} with its {len(back.model_input)}-byte input {recovered:.1f} s later; accepted, and "
              f"read back by the trainer among {len(data.ids)} accepted")
    finally:
        forget(stack, {made.prediction_id})
