"""Who may change what serves, what the logs keep, TLS, deadlines and overload."""

from __future__ import annotations

import asyncio
import re
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import aiohttp
import grpc
import pytest

from digits.stack import secrets
from digits.stack.local import METRICS_OFFSET, LocalStack
from digits.v1 import models_pb2, models_pb2_grpc, recognizer_pb2, recognizer_pb2_grpc, training_pb2, training_pb2_grpc
from tests.faults.conftest import TRAINING_TOKEN, extra_gateway
from tests.faults.load import Load
from tests.integration.digits_data import held_out
from tests.stacks import ADMIN_TOKEN


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def test_tokens_and_scopes(stack: LocalStack, models: models_pb2_grpc.ModelsStub) -> None:
    with grpc.insecure_channel(stack.ports.gateway) as channel:
        training = training_pb2_grpc.TrainingStub(channel)
        activate = models_pb2.ActivateModelRequest(version="v1")
        cases = [
            ((), grpc.StatusCode.UNAUTHENTICATED),
            (bearer("wrong"), grpc.StatusCode.UNAUTHENTICATED),
            (bearer(ADMIN_TOKEN[:-1]), grpc.StatusCode.UNAUTHENTICATED),
            (bearer(TRAINING_TOKEN), grpc.StatusCode.PERMISSION_DENIED),  # may train, may not promote
        ]
        for metadata, code in cases:
            with pytest.raises(grpc.RpcError) as error:
                models.ActivateModel(activate, metadata=metadata, timeout=10)
            assert error.value.code() == code
        jobs = training.ListJobs(training_pb2.ListJobsRequest(), metadata=bearer(TRAINING_TOKEN), timeout=10)
        assert jobs is not None
    log = (stack.run_dir / "logs" / "gateway.log").read_text()
    assert log.count("admin call refused") >= len(cases)


def test_secrets_never_reach_logs_or_job_records(stack: LocalStack) -> None:
    texts = [p.read_text(errors="replace") for p in (stack.run_dir / "logs").glob("*.log")]
    client = stack.redis_client()
    texts += [str(client.hgetall(key)) for key in client.scan_iter("rq:job:*")]
    # The records (hashes); not the blobs and fitted-digit fingerprints beside them (bytes, written by the trainer).
    texts += [str(client.hgetall(key)) for key in client.scan_iter("digits:model:v*")
              if re.fullmatch(rb"digits:model:v\d+", key)]
    texts.append((stack.run_dir / "redis" / "users.acl").read_text())  # hashes only
    kept = [stack.env[name] for name in secrets.SECRET_VARIABLES if stack.env.get(name)]
    for secret in {ADMIN_TOKEN, TRAINING_TOKEN, *kept}:
        assert not any(secret in text for text in texts), "a secret was written where people read"


def self_signed(directory: Path) -> tuple[Path, Path]:
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def test_gateway_serves_tls_from_certificate_files(stack: LocalStack, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    with extra_gateway(stack, DIGITS_TLS_CERT_FILE=str(cert), DIGITS_TLS_KEY_FILE=str(key)) as (grpc_port, http_port):
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{grpc_port}", credentials) as channel:
            pixels, _ = held_out(1)
            request = recognizer_pb2.PredictRequest(pixels=recognizer_pb2.Pixels(values=pixels[0].tolist()))
            deadline = time.monotonic() + 30
            while True:
                try:
                    reply = recognizer_pb2_grpc.RecognizerStub(channel).Predict(request, timeout=10)
                    break
                except grpc.RpcError:
                    assert time.monotonic() < deadline
                    time.sleep(0.5)
            assert reply.version
        context = ssl.create_default_context(cafile=str(cert))
        with urllib.request.urlopen(f"https://127.0.0.1:{http_port}/healthz", context=context, timeout=10) as r:
            assert r.status in (200, 503)
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as plain, pytest.raises(grpc.RpcError):
            recognizer_pb2_grpc.RecognizerStub(plain).Predict(request, timeout=3)


def abandoned(stack: LocalStack) -> float:
    total = 0.0
    for port in stack.ports.inference:
        url = f"http://127.0.0.1:{port + METRICS_OFFSET}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            found = re.search(r"^digits_abandoned_requests_total (\S+)$", response.read().decode(), re.M)
            total += float(found.group(1)) if found else 0.0
    return total


def test_deadlines_are_honoured_end_to_end(stack: LocalStack) -> None:
    """Calls whose deadline passes while inference is busy are dropped there, not computed for nobody."""
    before = abandoned(stack)
    pixels, _ = held_out(64)
    requests = [recognizer_pb2.PredictRequest(pixels=recognizer_pb2.Pixels(values=r.tolist())) for r in pixels]

    async def flood() -> list[grpc.StatusCode]:
        async with grpc.aio.insecure_channel(stack.ports.gateway) as channel:
            stub = recognizer_pb2_grpc.RecognizerStub(channel)

            async def one(request: recognizer_pb2.PredictRequest, timeout: float) -> grpc.StatusCode:
                try:
                    await stub.Predict(request, timeout=timeout)
                    return grpc.StatusCode.OK
                except grpc.aio.AioRpcError as error:
                    return error.code()

            big = recognizer_pb2.PredictBatchRequest(requests=requests * 16)
            stop = asyncio.Event()

            async def keep_busy() -> None:
                while not stop.is_set():
                    await stub.PredictBatch(big, timeout=60)

            # Keep both replicas' models saturated, then send calls that cannot wait in line that long.
            busy = [asyncio.ensure_future(keep_busy()) for _ in range(8)]
            await asyncio.sleep(1.5)
            codes = await asyncio.gather(*(one(r, 0.25) for r in requests * 4))
            stop.set()
            await asyncio.gather(*busy)
            return list(codes)

    codes = asyncio.run(flood())
    expired = codes.count(grpc.StatusCode.DEADLINE_EXCEEDED)
    print(f"[deadlines] {len(codes)} calls with a 250 ms deadline: {expired} expired, "
          f"{abandoned(stack) - before:.0f} dropped by inference before the model ran")
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED}
    assert expired > 0
    assert abandoned(stack) > before


def test_overload_is_shed_not_queued(stack: LocalStack) -> None:
    with extra_gateway(stack, DIGITS_GATEWAY_MAX_IN_FLIGHT="4") as (grpc_port, _):
        time.sleep(2)  # let it see a ready replica
        with Load(f"127.0.0.1:{grpc_port}", clients=64) as load:
            time.sleep(5)
    load.report("overload: 64 clients against a gateway that admits 4 calls at once")
    codes = {c.code for c in load.failures()}
    assert codes == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert all("limit" in c.details for c in load.failures())


def test_http_errors_are_json_with_a_message(stack: LocalStack) -> None:
    async def post() -> tuple[int, dict[str, str]]:
        url = f"http://127.0.0.1:{stack.ports.gateway_http}/api/predict"
        async with aiohttp.ClientSession() as session, session.post(url, data=b"\0" * 10,
                                                                    headers={"Content-Type": "image/png"}) as r:
            return r.status, await r.json()

    status, body = asyncio.run(post())
    assert status == 400 and body["error"]
