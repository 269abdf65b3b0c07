"""Hostile input, property-based, against the running gateway over gRPC and HTTP: always a 4xx-class answer
with a message (INVALID_ARGUMENT or RESOURCE_EXHAUSTED), never INTERNAL, and memory stays bounded."""

from __future__ import annotations

import asyncio
import io
import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from digits.stack.local import LocalStack
from digits.v1 import recognizer_pb2 as pb
from digits.v1 import recognizer_pb2_grpc
from tests.stacks import running_process_groups

REFUSED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
EXAMPLES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares its size and holds a few rows: enough to fool a reader that trusts headers."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def decompression_bomb() -> bytes:
    """A real 20,000 x 20,000 all-black PNG: under 1 MB on the wire, 400 million pixels decoded."""
    width = height = 20_000
    raw = zlib.compress(b"\0" * ((width // 8) + 1) * height, 9)
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def real_images() -> list[bytes]:
    out = []
    picture = Image.fromarray((np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8))
    for fmt in ("PNG", "JPEG", "GIF", "BMP", "WEBP"):
        buffer = io.BytesIO()
        picture.save(buffer, format=fmt)
        out.append(buffer.getvalue())
    return out


@pytest.fixture(scope="module")
def recognizer(stack: LocalStack) -> Iterator[recognizer_pb2_grpc.RecognizerStub]:
    with grpc.insecure_channel(stack.ports.gateway) as channel:
        yield recognizer_pb2_grpc.RecognizerStub(channel)


def refused_or_answered(recognizer: recognizer_pb2_grpc.RecognizerStub, request: pb.PredictRequest) -> None:
    try:
        reply = recognizer.Predict(request, timeout=30)
    except grpc.RpcError as error:
        assert error.code() in REFUSED, f"{error.code()}: {error.details()}"
        assert error.details(), "a refusal must say why"
        return
    assert 0 <= reply.digit <= 9  # some noise does look like a digit: an answer is fine, a crash is not


@given(data=st.binary(max_size=4096))
@EXAMPLES
def test_random_bytes(recognizer: recognizer_pb2_grpc.RecognizerStub, data: bytes) -> None:
    refused_or_answered(recognizer, pb.PredictRequest(image=data))


@given(index=st.integers(0, 4), cut=st.floats(0.0, 1.0), flips=st.lists(st.integers(0, 10_000), max_size=8))
@EXAMPLES
def test_truncated_and_corrupted_images(
    recognizer: recognizer_pb2_grpc.RecognizerStub, index: int, cut: float, flips: list[int]
) -> None:
    data = bytearray(real_images()[index])
    data = data[: max(1, int(len(data) * cut))]
    for at in flips:
        data[at % len(data)] ^= 0x5A
    refused_or_answered(recognizer, pb.PredictRequest(image=bytes(data)))


@given(values=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=1000))
@EXAMPLES
def test_pixel_lists(recognizer: recognizer_pb2_grpc.RecognizerStub, values: list[float]) -> None:
    refused_or_answered(recognizer, pb.PredictRequest(pixels=pb.Pixels(values=values)))


@pytest.mark.parametrize(
    "data",
    [png_header_only(1, 1), png_header_only(30_000, 30_000), decompression_bomb(), b"\x89PNG" + bytes(30_000_000)],
    ids=["1x1", "30000x30000 declared", "decompression bomb", "oversized message"],
)
def test_extreme_images(stack: LocalStack, recognizer: recognizer_pb2_grpc.RecognizerStub, data: bytes) -> None:
    refused_or_answered(recognizer, pb.PredictRequest(image=data))


def rss_megabytes(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@given(depth=st.integers(1, 200_000), width=st.integers(0, 5000), junk=st.text(max_size=200))
@EXAMPLES
def test_hostile_json_over_http(stack: LocalStack, depth: int, width: int, junk: str) -> None:
    bodies = [b"[" * depth + b"]" * depth, json.dumps({"pixels": [junk] * width}).encode(),
              json.dumps({"pixels": [[1] * 3] * width}).encode(), junk.encode()]

    async def post_all() -> list[tuple[int, dict[str, str]]]:
        url = f"http://127.0.0.1:{stack.ports.gateway_http}/api/predict"
        async with aiohttp.ClientSession() as session:
            answers = []
            for body in bodies:
                async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
                    answers.append((response.status, await response.json()))
            return answers

    for status, body in asyncio.run(post_all()):
        assert 400 <= status < 500, body
        assert body["error"]


def test_memory_stays_bounded(stack: LocalStack, recognizer: recognizer_pb2_grpc.RecognizerStub) -> None:
    pids = {name: pid for name, pid in running_process_groups(stack.run_dir).items()
            if name.startswith(("inference", "gateway"))}
    before = {name: round(rss_megabytes(pid)) for name, pid in pids.items()}
    for _ in range(5):
        for data in (decompression_bomb(), png_header_only(30_000, 30_000), b"\x89PNG" + bytes(7_000_000)):
            refused_or_answered(recognizer, pb.PredictRequest(image=data))
    after = {name: round(rss_megabytes(pid)) for name, pid in pids.items()}
    print(f"[hostile input] resident memory MB before {before}, after {after}")
    for name in pids:
        assert after[name] < before[name] + 150, f"{name} grew from {before[name]:.0f} to {after[name]:.0f} MB"
