"""Hostile input, property-based, against the running gateway over gRPC and HTTP: always a 4xx-class answer
with a message (INVALID_ARGUMENT or RESOURCE_EXHAUSTED), never INTERNAL. Inputs the docs promise to refuse are
refused with the documented code: too large (bytes or declared pixels) RESOURCE_EXHAUSTED, HTTP 413, never as
"overloaded"; unreadable or blank INVALID_ARGUMENT, HTTP 400. Refusing them keeps every serving process's peak
memory bounded."""

from __future__ import annotations

import asyncio
import io
import json
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from digits.errors import RETRY_AFTER_KEY
from digits.stack.local import REPO, LocalStack
from digits.v1 import recognizer_pb2 as pb
from digits.v1 import recognizer_pb2_grpc
from tests.stacks import running_process_groups

REFUSED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
EXAMPLES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TOO_LARGE = (grpc.StatusCode.RESOURCE_EXHAUSTED, 413)
BAD_INPUT = (grpc.StatusCode.INVALID_ARGUMENT, 400)
# How much a serving process's peak resident memory (a replica's or the gateway's) may rise while it refuses the
# hostile images below, each padded to LARGE bytes, HOSTILE_SENT times over gRPC and as many over HTTP. Refused by
# their headers and sizes, they cost a few copies of the 7 MB message at a time; the bomb decoded would cost a
# replica 400 MB at least (400 million pixels at a byte each), and a gateway that kept each refused request's bytes
# until Python's cyclic garbage collector came round rose from 94 to 488 MB here (its pod's limit is 512Mi).
PEAK_GROWTH_LIMIT_MB = 100
LARGE = 7_000_000  # under DIGITS_MAX_IMAGE_BYTES (8 MB): read whole, forwarded, refused by a replica
HOSTILE_SENT = 40


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


def padded(data: bytes) -> bytes:
    """``data`` followed by zeros up to LARGE bytes; after a PNG's end, so its header says what it said."""
    return data + bytes(LARGE - len(data))


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


def refused_as(recognizer: recognizer_pb2_grpc.RecognizerStub, data: bytes, code: grpc.StatusCode) -> str:
    """Predict on ``data`` must be refused with ``code`` and a message; too large is not "overloaded" (no
    retry-after). Returns the message."""
    try:
        reply = recognizer.Predict(pb.PredictRequest(image=data), timeout=30)
    except grpc.RpcError as error:
        assert error.code() == code, f"{error.code()} where {code} is promised: {error.details()}"
        assert error.details(), "a refusal must say why"
        hint = next((item.value for item in error.trailing_metadata() or () if item.key == RETRY_AFTER_KEY), None)
        assert hint is None, f"refused as overloaded (retry-after {hint!r}), not as {code}: {error.details()}"
        return error.details() or ""
    raise AssertionError(f"answered {reply.digit} (confidence {reply.confidence:.2f}) where {code} is promised")


def posted(stack: LocalStack, data: bytes) -> tuple[int, dict[str, Any]]:
    """The gateway's HTTP answer to ``data`` posted as a PNG: its status and JSON body."""

    async def post() -> tuple[int, dict[str, Any]]:
        url = f"http://127.0.0.1:{stack.ports.gateway_http}/api/predict"
        async with aiohttp.ClientSession() as session, session.post(
            url, data=data, headers={"Content-Type": "image/png"}
        ) as response:
            return response.status, await response.json()

    return asyncio.run(post())


def refused_over_http(stack: LocalStack, data: bytes, status: int) -> str:
    got, body = posted(stack, data)
    assert got == status, f"HTTP {got} where {status} is promised: {body}"
    assert body["error"], "a refusal must say why"
    return str(body["error"])


OVERSIZED = b"\x89PNG" + bytes(30_000_000)  # past DIGITS_MAX_IMAGE_BYTES (8 MB) and the largest message


@pytest.mark.parametrize(
    ("data", "refusal", "words"),
    [(png_header_only(1, 1), BAD_INPUT, "no digit found"),
     (png_header_only(30_000, 30_000), TOO_LARGE, "pixels"),
     (decompression_bomb(), TOO_LARGE, "pixels"),
     (OVERSIZED, TOO_LARGE, "")],  # worded by gRPC itself ("larger than max") and by the gateway ("the limit is")
    ids=["1x1", "30000x30000 declared", "decompression bomb", "oversized message"],
)
def test_extreme_images(stack: LocalStack, recognizer: recognizer_pb2_grpc.RecognizerStub, data: bytes,
                        refusal: tuple[grpc.StatusCode, int], words: str) -> None:
    code, status = refusal
    over_grpc = refused_as(recognizer, data, code)
    over_http = refused_over_http(stack, data, status)
    print(f"[hostile input] {len(data):,} bytes: gRPC {code.name} {over_grpc!r}; HTTP {status} {over_http!r}")
    assert words in over_grpc.lower() and words in over_http.lower()


def peak_megabytes(pid: int) -> float:
    """The process's peak resident memory (VmHWM) since it started or since ``reset_peak``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the kernel's "reset the peak resident set size"


def pod_memory_limit_megabytes(service: str) -> int:
    """The memory limit of ``service``'s pod in the Kubernetes manifests, in MB."""
    deployment = next(d for d in yaml.safe_load_all((REPO / "deploy" / "k8s" / f"{service}.yaml").read_text())
                      if d and d["kind"] == "Deployment")
    limit = str(deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"])
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", limit).groups()  # type: ignore[union-attr]
    return int(number) * (1 if unit == "Mi" else 1024)


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
    for pid in pids.values():
        reset_peak(pid)
    before = {name: round(peak_megabytes(pid)) for name, pid in pids.items()}  # just reset: the resident set
    hostile = [(padded(decompression_bomb()), TOO_LARGE), (padded(png_header_only(30_000, 30_000)), TOO_LARGE),
               (padded(b"\x89PNG"), BAD_INPUT)]
    for index in range(HOSTILE_SENT):
        data, (code, status) = hostile[index % len(hostile)]
        refused_as(recognizer, data, code)
        refused_over_http(stack, data, status)
    peak = {name: round(peak_megabytes(pid)) for name, pid in pids.items()}
    gateway_limit = pod_memory_limit_megabytes("gateway")
    print(f"[hostile input] peak resident memory MB, reset to {before}, peak {peak}; each may rise by "
          f"{PEAK_GROWTH_LIMIT_MB}, the gateway's pod limit is {gateway_limit}")
    replicas = [name for name in pids if name.startswith("inference")]
    assert len(replicas) == 2 and "gateway" in pids, pids
    # Replicas decode images: a bomb let through shows here. The gateway holds each request's bytes while it forwards
    # them: bytes it kept after the refusal (a reference cycle through an exception's traceback) show here.
    for name in [*replicas, "gateway"]:
        assert peak[name] - before[name] < PEAK_GROWTH_LIMIT_MB, (
            f"{name}'s peak memory rose from {before[name]} to {peak[name]} MB refusing {HOSTILE_SENT} hostile "
            f"images of {LARGE:,} bytes over gRPC and as many over HTTP")
    assert peak["gateway"] < gateway_limit, f"the gateway's peak memory {peak['gateway']} MB is past its pod's limit"
