"""The gateway's forwarder against a stand-in channel (pure logic): the deadline it gives inference (the caller's,
else the default, never past the maximum), admission (no model yet, calls and bytes in flight) and its release."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from digits.errors import Overloaded, Unavailable
from digits.settings import Settings
from digits.v1 import recognizer_pb2 as pb
from services.gateway.forwarding import NO_MODEL, Forwarder

DEFAULT, MAXIMUM = 10.0, 30.0


class FakeChannel:
    """Records each raw call (method, timeout); PredictEach answers digit = first pixel, PredictBatch echoes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    def unary_unary(self, path: str) -> Any:
        method = path.rsplit("/", 1)[1]

        def call(payload: bytes, timeout: float, wait_for_ready: bool) -> Any:
            self.calls.append((method, timeout))
            return asyncio.ensure_future(self._answer(method, payload))

        return call

    async def _answer(self, method: str, payload: bytes) -> bytes:
        if method != "PredictEach":
            return payload
        requests = pb.PredictEachRequest.FromString(payload).requests
        return pb.PredictEachResponse(outcomes=[
            pb.PredictOutcome(response=pb.PredictResponse(digit=int(r.pixels.values[0]), version="v1"))
            for r in requests]).SerializeToString()


class FakeContext:
    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining


def forwarder(no_model: bool = False, **settings: Any) -> tuple[Forwarder, FakeChannel]:
    channel = FakeChannel()
    values = {"inference_timeout_seconds": DEFAULT, "max_deadline_seconds": MAXIMUM, **settings}
    return Forwarder(channel, Settings(**values), lambda: no_model), channel  # type: ignore[arg-type]


def predict(digit: int) -> pb.PredictRequest:
    return pb.PredictRequest(pixels=pb.Pixels(values=[float(digit)] * 784))


@pytest.mark.parametrize(("remaining", "sent"), [(2.5, 2.5), (None, DEFAULT), (MAXIMUM + 100, MAXIMUM), (0.5, 0.5)])
def test_the_deadline_given_to_inference(remaining: float | None, sent: float) -> None:
    forward, channel = forwarder()
    handlers = forward.handler()
    assert handlers.service_name() == "digits.v1.Recognizer"  # type: ignore[attr-defined]

    async def calls() -> None:
        raw_batch = forward._forwarder("PredictBatch")
        await raw_batch(b"batch", FakeContext(remaining))
        await forward._forward_predict(predict(3).SerializeToString(), FakeContext(remaining))  # type: ignore[arg-type]
        await forward.predict(predict(4), remaining)
        await forward.predict_many([predict(5), predict(6)], remaining)

    asyncio.run(calls())
    # A raw batch gets it as it is; coalesced predictions get what is left of it when their batch leaves.
    assert [timeout for _, timeout in channel.calls] == [sent] + [pytest.approx(sent, abs=0.2)] * 3
    assert all(timeout <= sent for _, timeout in channel.calls)
    assert [method for method, _ in channel.calls] == ["PredictBatch"] + ["PredictEach"] * 3


def test_raw_batches_pass_through_and_typed_predictions_come_back_typed() -> None:
    forward, _ = forwarder()

    async def calls() -> tuple[bytes, pb.PredictResponse, list[pb.PredictResponse]]:
        raw = await forward._forwarder("PredictBatch")(b"\x01\x02", FakeContext(None))
        return raw, await forward.predict(predict(7)), await forward.predict_many([predict(1), predict(2)])

    raw, one, many = asyncio.run(calls())
    assert raw == b"\x01\x02"
    assert one.digit == 7 and one.version == "v1"
    assert [r.digit for r in many] == [1, 2]


def test_with_no_model_anywhere_calls_are_refused_as_unavailable_saying_how_to_train() -> None:
    forward, channel = forwarder(no_model=True)
    with pytest.raises(Unavailable, match="no model is active yet; train one"), forward.admitted(10):
        pass
    assert "digits retrain --wait" in NO_MODEL

    async def call() -> None:
        await forward._forwarder("PredictEach")(b"x", FakeContext(None))

    with pytest.raises(Unavailable):
        asyncio.run(call())
    assert channel.calls == []


def test_calls_past_the_in_flight_limit_are_shed_until_one_ends() -> None:
    forward, _ = forwarder(gateway_max_in_flight=2)
    with forward.admitted(1), forward.admitted(1), \
            pytest.raises(Overloaded, match="at its limit of 2 calls in flight; retry shortly"), forward.admitted(1):
        pass
    with forward.admitted(1), forward.admitted(1):  # released: admitted again
        pass


def test_bytes_past_the_limit_are_shed_and_released_even_when_a_call_fails() -> None:
    forward, _ = forwarder(gateway_max_bytes_in_flight=1000)
    with forward.admitted(600):
        with pytest.raises(Overloaded, match="holds 600 bytes of requests, near its limit of 1,000"), \
                forward.admitted(401):
            pass
        with forward.admitted(400):  # exactly at the limit: admitted
            pass
    with pytest.raises(RuntimeError), forward.admitted(1000):
        raise RuntimeError("the upstream call failed")
    with forward.admitted(1000):  # the failed call's bytes were given back
        pass
    assert forward._in_flight == 0 and forward._bytes == 0


def test_an_overloaded_refusal_carries_a_retry_hint() -> None:
    forward, _ = forwarder(gateway_max_in_flight=1)
    with forward.admitted(1), pytest.raises(Overloaded) as refused, forward.admitted(1):
        pass
    assert refused.value.retry_after_seconds == 1
