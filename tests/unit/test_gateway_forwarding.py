"""The gateway's forwarder against a stand-in channel (pure logic): the deadline it gives inference (the caller's,
else the default, never past the maximum), admission (no model yet, calls and bytes in flight) and its release,
and the prediction id on every answer, with the model's input kept (and left out of the reply unless asked for)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest
import redis

from digits.errors import Overloaded, Unavailable
from digits.platform.corrections import KeptInput
from digits.settings import Settings
from digits.v1 import recognizer_pb2 as pb
from services.gateway.forwarding import NO_MODEL, Forwarder
from services.gateway.predictions import DROPPED, InputKeeper

DEFAULT, MAXIMUM = 10.0, 30.0


class FakeChannel:
    """Records each unary call (method, timeout, payload); answers as a replica does: digit = first pixel, and the
    model's input (every pixel the first's value) when asked for it. It has no batch stream (as a replica from
    before streams): every coalesced batch goes by unary PredictEach (streams: test_gateway_streaming.py)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []
        self.payloads: list[bytes] = []

    def unary_unary(self, path: str, response_deserializer: Callable[[bytes], Any] | None = None) -> Any:
        method = path.rsplit("/", 1)[1]

        def call(payload: bytes, timeout: float, wait_for_ready: bool) -> Any:
            self.calls.append((method, timeout))
            self.payloads.append(payload)
            return asyncio.ensure_future(self._answer(method, payload, response_deserializer))

        return call

    def stream_stream(self, path: str, response_deserializer: Callable[[bytes], Any]) -> Any:
        return NoStream

    async def _answer(self, method: str, payload: bytes,
                      deserializer: Callable[[bytes], Any] | None) -> bytes | pb.PredictEachResponse:
        requests = pb.PredictEachRequest.FromString(payload).requests  # the same wire format as PredictBatch's
        answers = [answer(r) for r in requests]
        if method == "PredictBatch":
            reply = pb.PredictBatchResponse(responses=answers).SerializeToString()
        else:
            outcomes = [pb.PredictOutcome(response=a) for a in answers]
            reply = pb.PredictEachResponse(outcomes=outcomes).SerializeToString()
        return deserializer(reply) if deserializer is not None else reply


class NoStream:
    """A BatchStream call to a replica that does not serve it: UNIMPLEMENTED."""

    def __aiter__(self) -> NoStream:
        return self

    async def __anext__(self) -> Any:
        raise grpc.aio.AioRpcError(grpc.StatusCode.UNIMPLEMENTED, grpc.aio.Metadata(), grpc.aio.Metadata())

    async def write(self, message: bytes) -> None:
        raise asyncio.InvalidStateError("the call is done")


def answer(request: pb.PredictRequest) -> pb.PredictResponse:
    digit = int(request.pixels.values[0])
    return pb.PredictResponse(digit=digit, version="v1",
                              model_input=bytes([digit] * 784) if request.return_model_input else b"")


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
        await raw_batch(pb.PredictBatchRequest(requests=[predict(2)]).SerializeToString(), FakeContext(remaining))
        await forward._forward_predict(predict(3).SerializeToString(), FakeContext(remaining))  # type: ignore[arg-type]
        await forward.predict(predict(4), remaining)
        await forward.predict_many([predict(5), predict(6)], remaining)

    asyncio.run(calls())
    # A raw batch gets it as it is; coalesced predictions get what is left of it when their batch leaves.
    assert [timeout for _, timeout in channel.calls] == [sent] + [pytest.approx(sent, abs=0.2)] * 3
    assert all(timeout <= sent for _, timeout in channel.calls)
    assert [method for method, _ in channel.calls] == ["PredictBatch"] + ["PredictEach"] * 3


def test_raw_batches_pass_through_and_typed_predictions_come_back_typed() -> None:
    forward, channel = forwarder()
    batch = pb.PredictBatchRequest(requests=[predict(3), predict(4)]).SerializeToString()

    async def calls() -> tuple[bytes, pb.PredictResponse, list[pb.PredictResponse]]:
        raw = await forward._forwarder("PredictBatch")(batch, FakeContext(None))
        return raw, await forward.predict(predict(7)), await forward.predict_many([predict(1), predict(2)])

    raw, one, many = asyncio.run(calls())
    assert channel.payloads[0] == batch  # keeping nothing: forwarded as it came
    assert [r.digit for r in pb.PredictBatchResponse.FromString(raw).responses] == [3, 4]
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


# -- prediction ids and kept inputs ---------------------------------------------------------------------------------

class FakeStore:
    """What InputKeeper writes to (digits.platform.corrections.Corrections): records every batch."""

    def __init__(self, keep_seconds: int = 3600) -> None:
        self.keep_seconds = keep_seconds
        self.batches: list[list[KeptInput]] = []

    def keep(self, inputs: list[KeptInput]) -> int:
        self.batches.append(list(inputs))
        return 0


def keeping(keep_seconds: int = 3600) -> tuple[Forwarder, FakeChannel, FakeStore, InputKeeper]:
    store = FakeStore(keep_seconds)
    keeper = InputKeeper(store)  # type: ignore[arg-type]
    channel = FakeChannel()
    return Forwarder(channel, Settings(), lambda: False, keeper), channel, store, keeper  # type: ignore[arg-type]


def test_every_answer_is_named_even_when_nothing_is_kept() -> None:
    forward, channel = forwarder()

    async def calls() -> list[str]:
        one = pb.PredictResponse.FromString(await forward._forward_predict(predict(3).SerializeToString(),
                                                                           FakeContext(None)))  # type: ignore[arg-type]
        batch = pb.PredictBatchResponse.FromString(await forward._forwarder("PredictBatch")(
            pb.PredictBatchRequest(requests=[predict(1), predict(2)]).SerializeToString(), FakeContext(None)))
        typed = [await forward.predict(predict(4)), *await forward.predict_many([predict(5)])]
        return [one.prediction_id, *(r.prediction_id for r in batch.responses), *(r.prediction_id for r in typed)]

    ids = asyncio.run(calls())
    assert len(set(ids)) == 5 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    # Not keeping: the gateway asks inference for nothing more than the caller did.
    assert not any(r.return_model_input for p in channel.payloads for r in pb.PredictEachRequest.FromString(p).requests)


def test_kept_inputs_are_what_the_model_saw_and_leave_the_reply_unless_the_caller_asked() -> None:
    forward, channel, store, keeper = keeping()
    asked = pb.PredictRequest(pixels=pb.Pixels(values=[6.0] * 784), return_model_input=True)
    batch = pb.PredictBatchRequest(requests=[predict(1), asked]).SerializeToString()
    each = pb.PredictEachRequest(requests=[predict(8)]).SerializeToString()

    async def calls() -> list[pb.PredictResponse]:
        writer = asyncio.create_task(keeper.run())
        one = pb.PredictResponse.FromString(await forward._forward_predict(predict(3).SerializeToString(),
                                                                           FakeContext(None)))  # type: ignore[arg-type]
        mine = pb.PredictResponse.FromString(await forward._forward_predict(asked.SerializeToString(),
                                                                            FakeContext(None)))  # type: ignore[arg-type]
        many = pb.PredictBatchResponse.FromString(await forward._forwarder("PredictBatch")(batch, FakeContext(None)))
        outcomes = pb.PredictEachResponse.FromString(await forward._forwarder("PredictEach")(each, FakeContext(None)))
        typed = [await forward.predict(predict(4)), *await forward.predict_many([predict(5), asked])]
        answers = [one, mine, *many.responses, *(o.response for o in outcomes.outcomes), *typed]
        await keeper.settled(typed[-1].prediction_id)
        writer.cancel()
        return answers

    answers = asyncio.run(calls())
    # Every request went to inference asking for the model's input ...
    sent = [r for p in channel.payloads for r in pb.PredictEachRequest.FromString(p).requests]
    assert len(sent) == 8 and all(r.return_model_input for r in sent)
    # ... which was kept under each answer's id, and returned only to the callers that asked for it.
    kept = {k.prediction_id: k for batch_ in store.batches for k in batch_}
    assert set(kept) == {a.prediction_id for a in answers}
    for reply in answers:
        assert kept[reply.prediction_id].pixels == bytes([reply.digit] * 784)
        assert kept[reply.prediction_id].digit == reply.digit and kept[reply.prediction_id].version == "v1"
        assert reply.model_input == (bytes([6] * 784) if reply.digit == 6 else b"")


def test_a_full_queue_drops_inputs_without_delaying_answers() -> None:
    store = FakeStore()
    keeper = InputKeeper(store, capacity=2)  # type: ignore[arg-type]
    before = DROPPED.labels("queue_full")._value.get()
    for n in range(5):
        keeper.keep(KeptInput(f"{n:032x}", bytes(784), 1, "v1"))
    assert DROPPED.labels("queue_full")._value.get() - before == 3
    assert store.batches == []  # nothing written until the writer runs: keep() never waits for Redis


def test_a_failing_redis_drops_the_batch_and_keeps_serving() -> None:
    class Away(FakeStore):
        def keep(self, inputs: list[KeptInput]) -> int:
            raise redis.ConnectionError("Redis is away")

    keeper = InputKeeper(Away())  # type: ignore[arg-type]
    before = DROPPED.labels("redis")._value.get()

    async def run() -> None:
        writer = asyncio.create_task(keeper.run())
        keeper.keep(KeptInput("f" * 32, bytes(784), 1, "v1"))
        await keeper.settled("f" * 32)
        writer.cancel()

    asyncio.run(run())
    assert DROPPED.labels("redis")._value.get() - before == 1


def test_a_trickle_of_inputs_is_written_in_one_batch() -> None:
    store = FakeStore()
    keeper = InputKeeper(store, linger=0.2)  # type: ignore[arg-type]

    async def run() -> None:
        writer = asyncio.create_task(keeper.run())
        for n in range(3):
            keeper.keep(KeptInput(f"{n:032x}", bytes(784), 1, "v1"))
            await asyncio.sleep(0.01)
        await keeper.settled(f"{2:032x}")
        writer.cancel()

    asyncio.run(run())
    assert [len(batch) for batch in store.batches] == [3]
