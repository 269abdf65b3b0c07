"""Bounded resources: a flood of the largest images the limits allow keeps every replica's peak memory under its
configured limit while other callers keep being answered; a batch stops decoding at its first bad item; the
gateway bounds the bytes it holds and the deadlines it passes on; HTTP overload is a 503 with Retry-After."""

from __future__ import annotations

import asyncio
import io
import re
import time
from pathlib import Path

import aiohttp
import grpc
import numpy as np
import yaml
from PIL import Image, ImageDraw

from digits.settings import Settings
from digits.stack.local import REPO, LocalStack
from digits.v1 import recognizer_pb2 as pb
from digits.v1 import recognizer_pb2_grpc
from tests.faults.conftest import extra_gateway
from tests.faults.load import Load
from tests.integration.digits_data import held_out
from tests.stacks import replicas_metric, running_process_groups

MB = 1024 * 1024


def picture(width: int, height: int, fmt: str = "PNG", noise: bool = False) -> bytes:
    """A digit ("0") drawn large on a transparent page: RGBA decodes to the most bytes per pixel."""
    page = Image.new("RGBA", (width, height), (255, 255, 255, 255))
    ImageDraw.Draw(page).ellipse((width * 0.3, height * 0.2, width * 0.7, height * 0.8), outline=(0, 0, 0, 255),
                                 width=max(2, width // 40))
    if noise:  # incompressible: many bytes on the wire
        grain = np.random.default_rng(0).integers(0, 8, (height, width, 4), dtype=np.uint8)
        page = Image.fromarray(np.maximum(np.asarray(page) - grain, 0).astype(np.uint8), "RGBA")
    out = io.BytesIO()
    (page if fmt == "PNG" else page.convert("RGB")).save(out, format=fmt)
    return out.getvalue()


def largest_allowed(settings: Settings) -> tuple[int, int]:
    side = int(settings.max_image_pixels ** 0.5)
    return side, settings.max_image_pixels // side


def inference_memory_limit() -> int:
    """The inference pod's memory limit in the Kubernetes manifests, in bytes."""
    deployment = next(d for d in yaml.safe_load_all((REPO / "deploy/k8s/inference.yaml").read_text())
                      if d and d["kind"] == "Deployment")
    limit = str(deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"])
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", limit).groups()  # type: ignore[union-attr]
    return int(number) * (MB if unit == "Mi" else 1024 * MB)


def peak_memory(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1)) * 1024  # type: ignore[union-attr]


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the kernel's "reset the peak resident set size"


def replica_pids(stack: LocalStack) -> dict[str, int]:
    return {n: p for n, p in running_process_groups(stack.run_dir).items() if n.startswith("inference")}


def test_a_flood_of_the_largest_images_keeps_replicas_under_their_memory_limit(stack: LocalStack) -> None:
    settings = Settings()  # the stack runs the defaults
    width, height = largest_allowed(settings)
    png, jpeg = picture(width, height), picture(width, height, "JPEG")
    per_batch = max(1, settings.max_batch_pixels // (width * height))
    floods = [pb.PredictRequest(image=png), pb.PredictRequest(image=jpeg)]
    batch = pb.PredictBatchRequest(requests=[pb.PredictRequest(image=png)] * per_batch)
    pids = replica_pids(stack)
    for pid in pids.values():
        reset_peak(pid)
    codes: dict[str, int] = {}

    async def flood(seconds: float) -> None:
        async with grpc.aio.insecure_channel(stack.ports.gateway) as channel:
            stub = recognizer_pb2_grpc.RecognizerStub(channel)
            until = time.monotonic() + seconds

            async def client(index: int) -> None:
                while time.monotonic() < until:
                    try:
                        if index % 4 == 0:
                            await stub.PredictBatch(batch, timeout=30)
                        else:
                            await stub.Predict(floods[index % 2], timeout=30)
                        code = "OK"
                    except grpc.aio.AioRpcError as error:
                        code = error.code().name
                    codes[code] = codes.get(code, 0) + 1

            await asyncio.gather(*(client(i) for i in range(32)))

    with Load(stack.ports.gateway, clients=8) as others:
        asyncio.run(flood(15.0))
    peaks = {name: peak_memory(pid) for name, pid in pids.items()}
    limit = inference_memory_limit()
    others.report("others during the flood")
    print(f"[image flood] {width}x{height} PNG ({len(png) / 1e3:.0f} KB) and JPEG, batches of {per_batch}, "
          f"32 clients for 15 s: {codes}; peak resident memory MB "
          f"{ {n: round(p / MB) for n, p in peaks.items()} } against a limit of {limit // MB} MB")
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"} and codes.get("OK")
    assert not others.failures(), others.failures()[:5]
    assert all(peak < limit for peak in peaks.values())


def test_the_first_bad_item_of_a_batch_stops_the_rest_from_being_decoded(stack: LocalStack) -> None:
    heavy = picture(1400, 1400)
    broken = heavy[: len(heavy) // 3]  # its header reads well; its pixels do not
    items = [pb.PredictRequest(image=broken)] + [pb.PredictRequest(image=heavy)] * 30
    before = replicas_metric(stack, "digits_images_decoded_total")  # fails if the replicas do not count decoding
    with grpc.insecure_channel(stack.ports.gateway) as channel:
        stub = recognizer_pb2_grpc.RecognizerStub(channel)
        started = time.monotonic()
        try:
            stub.PredictBatch(pb.PredictBatchRequest(requests=items), timeout=60)
            raise AssertionError("a batch with a broken image was answered")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "item 0" in (error.details() or "")
        answered = time.monotonic() - started
    time.sleep(2)  # anything still queued would have been decoded by now
    work = replicas_metric(stack, "digits_images_decoded_total") - before
    print(f"[bad batch] refused in {answered * 1000:.0f} ms; {work:.0f} of {len(items)} images were decoded")
    # The broken one (so the counter counts), and at most what the two decoding threads had already started.
    assert 1 <= work <= 1 + 2


def test_the_gateway_bounds_bytes_in_flight_and_the_deadlines_it_passes_on(stack: LocalStack) -> None:
    big = picture(700, 700, noise=True)  # about a megabyte on the wire
    limit = 3 * len(big)
    slow = pb.PredictBatchRequest(requests=[pb.PredictRequest(image=picture(1400, 1400))] * 30)  # seconds of work
    with grpc.insecure_channel(stack.ports.gateway) as channel:
        started = time.monotonic()
        recognizer_pb2_grpc.RecognizerStub(channel).PredictBatch(slow, timeout=60)
        work = time.monotonic() - started
    # A cap well under the batch's own time on this machine: a fixed cap raced the work on faster machines.
    cap = round(work / 4, 3)
    assert cap >= 0.05, f"the batch took {work:.2f} s: too little work to tell a cap from the answer"
    with extra_gateway(stack, DIGITS_GATEWAY_MAX_BYTES_IN_FLIGHT=str(limit),
                       DIGITS_MAX_DEADLINE_SECONDS=str(cap)) as (grpc_port, _):
        time.sleep(2)  # let it see a ready replica

        async def calls() -> tuple[list[tuple[str, str, str]], tuple[str, float]]:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                stub = recognizer_pb2_grpc.RecognizerStub(channel)

                async def one(request: pb.PredictRequest) -> tuple[str, str, str]:
                    call = stub.Predict(request, timeout=60)
                    try:
                        await call
                        return "OK", "", ""
                    except grpc.aio.AioRpcError as error:
                        hint = dict(await call.trailing_metadata() or ()).get("retry-after", "")
                        return error.code().name, error.details() or "", str(hint)

                burst = await asyncio.gather(*(one(pb.PredictRequest(image=big)) for _ in range(12)))
                started = time.monotonic()
                try:
                    await stub.PredictBatch(slow, timeout=60)  # the caller would wait a minute
                    late = "OK"
                except grpc.aio.AioRpcError as error:
                    late = error.code().name
                return burst, (late, time.monotonic() - started)

        burst, (late, took) = asyncio.run(calls())
    codes = sorted({code for code, _, _ in burst})
    shed = [(details, hint) for code, details, hint in burst if code == "RESOURCE_EXHAUSTED"]
    print(f"[gateway bounds] 12 calls of {len(big) / 1e6:.1f} MB at once against {limit / 1e6:.1f} MB in flight: "
          f"{codes}; a batch of {work:.2f} s with a 60 s deadline through a {cap:.2f} s cap: {late} after {took:.2f} s")
    assert "OK" in codes and shed and all("bytes" in details and hint for details, hint in shed)
    assert late == "DEADLINE_EXCEEDED" and took < work


def test_http_overload_is_503_with_retry_after(stack: LocalStack) -> None:
    pixels, _ = held_out(1)
    with extra_gateway(stack, DIGITS_GATEWAY_MAX_IN_FLIGHT="2") as (_, http_port):
        time.sleep(2)

        async def burst() -> list[tuple[int, str | None]]:
            url = f"http://127.0.0.1:{http_port}/api/predict"
            async with aiohttp.ClientSession() as session:

                async def one() -> tuple[int, str | None]:
                    async with session.post(url, json={"pixels": pixels[0].tolist()}) as response:
                        await response.read()
                        return response.status, response.headers.get("Retry-After")

                return await asyncio.gather(*(one() for _ in range(64)))

        answers = asyncio.run(burst())
    statuses = sorted({status for status, _ in answers})
    print(f"[http overload] 64 requests at once against 2 in flight: statuses {statuses}")
    assert 503 in statuses and set(statuses) <= {200, 503}
    assert all(hint for status, hint in answers if status == 503)
