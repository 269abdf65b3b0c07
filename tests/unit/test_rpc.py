"""The gRPC metrics carry the names and labels standard gRPC dashboards query (go-grpc-prometheus's)."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from digits.errors import InvalidInput
from digits.platform import rpc

SERVICE = "test.metrics.Echo"


def _identity(data: bytes) -> bytes:
    return data


async def _unary(request: bytes, context: Any) -> bytes:
    if request == b"bad":
        raise InvalidInput("bad input")
    return request


async def _stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for _ in range(3):
        yield request


async def _bidi(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request * 2


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"grpc_service": SERVICE, **labels}) or 0.0


async def _call_each_kind() -> None:
    server = rpc.create_server(1 << 20)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary, _identity, _identity),
        "Stream": grpc.unary_stream_rpc_method_handler(_stream, _identity, _identity),
        "Bidi": grpc.stream_stream_rpc_method_handler(_bidi, _identity, _identity),
    })])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            unary = channel.unary_unary(f"/{SERVICE}/Unary", _identity, _identity)
            assert await unary(b"ok", timeout=5) == b"ok"
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await unary(b"bad", timeout=5)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            stream = channel.unary_stream(f"/{SERVICE}/Stream", _identity, _identity)
            assert [m async for m in stream(b"x", timeout=5)] == [b"x"] * 3
            bidi = channel.stream_stream(f"/{SERVICE}/Bidi", _identity, _identity)
            assert [m async for m in bidi(iter([b"a", b"b"]), timeout=5)] == [b"aa", b"bb"]
    finally:
        await server.stop(None)


def test_calls_are_counted_when_started_and_handled_with_type_service_method_and_code() -> None:
    """And the messages of streams, as py-grpc-prometheus counts them."""
    unary = {"grpc_type": "unary", "grpc_method": "Unary"}
    stream = {"grpc_type": "server_stream", "grpc_method": "Stream"}
    bidi = {"grpc_type": "bidi_stream", "grpc_method": "Bidi"}
    before = {
        "started": _value("grpc_server_started_total", **unary),
        "ok": _value("grpc_server_handled_total", grpc_code="OK", **unary),
        "bad": _value("grpc_server_handled_total", grpc_code="INVALID_ARGUMENT", **unary),
        "timed": _value("grpc_server_handling_seconds_count", **unary),
        "stream": _value("grpc_server_handled_total", grpc_code="OK", **stream),
        "stream started": _value("grpc_server_started_total", **stream),
        "stream sent": _value("grpc_server_msg_sent_total", **stream),
        "bidi": _value("grpc_server_handled_total", grpc_code="OK", **bidi),
        "bidi received": _value("grpc_server_msg_received_total", **bidi),
        "bidi sent": _value("grpc_server_msg_sent_total", **bidi),
    }
    asyncio.run(_call_each_kind())
    assert _value("grpc_server_started_total", **unary) == before["started"] + 2
    assert _value("grpc_server_handled_total", grpc_code="OK", **unary) == before["ok"] + 1
    assert _value("grpc_server_handled_total", grpc_code="INVALID_ARGUMENT", **unary) == before["bad"] + 1
    assert _value("grpc_server_handling_seconds_count", **unary) == before["timed"] + 2
    assert _value("grpc_server_handled_total", grpc_code="OK", **stream) == before["stream"] + 1
    assert _value("grpc_server_started_total", **stream) == before["stream started"] + 1
    assert _value("grpc_server_msg_sent_total", **stream) == before["stream sent"] + 3
    assert _value("grpc_server_handled_total", grpc_code="OK", **bidi) == before["bidi"] + 1
    assert _value("grpc_server_msg_received_total", **bidi) == before["bidi received"] + 2
    assert _value("grpc_server_msg_sent_total", **bidi) == before["bidi sent"] + 2


async def _refuse_and_keep(request: bytes, context: Any) -> bytes:
    _KEPT.append(request)
    raise InvalidInput("refused")


_KEPT: list[bytes] = []


async def _refused_request_references() -> int:
    """The references left to a request the server refused, once its caller has the refusal (the list's own
    and getrefcount's argument: 2)."""
    server = rpc.create_server(1 << 20)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
        "Refuse": grpc.unary_unary_rpc_method_handler(_refuse_and_keep, _identity, _identity)})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await channel.unary_unary(f"/{SERVICE}/Refuse", _identity, _identity)(b"x" * 100_000, timeout=5)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        for _ in range(100):  # the server may finish the call just after the caller has its answer
            if sys.getrefcount(_KEPT[0]) <= 2:
                break
            await asyncio.sleep(0.01)
        return sys.getrefcount(_KEPT[0])
    finally:
        await server.stop(None)


def test_a_refused_request_is_freed_without_the_cycle_collector() -> None:
    # gRPC keeps the AbortError of an aborted call on the call's state, in a cycle with the frames of its
    # traceback: those frames, and the error being answered, must not hold the request (an 8 MB image).
    _KEPT.clear()
    gc.collect()
    gc.disable()
    try:
        assert asyncio.run(_refused_request_references()) == 2
    finally:
        gc.enable()
        _KEPT.clear()
