"""A real local stack on free ports, serving the benchmark's model, and the clients that load it."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import numpy as np
import numpy.typing as npt
import redis
from PIL import Image

from bench.load import Send
from digits.mnist import N_PIXELS, SHAPE
from digits.modelling import storage
from digits.modelling.model import DigitModel, check_round_trip
from digits.stack.local import LocalStack
from digits.v1 import recognizer_pb2 as pb

PREDICT = "/digits.v1.Recognizer/Predict"
ADMIN_TOKEN = "bench-admin-token"


@dataclass(frozen=True)
class RunningStack:
    stack: LocalStack
    version: str

    @property
    def run_dir(self) -> Path:
        return self.stack.run_dir

    @property
    def gateway_grpc(self) -> str:
        return self.stack.ports.gateway

    @property
    def gateway_http(self) -> str:
        return f"http://127.0.0.1:{self.stack.ports.gateway_http}/api/predict"

    @property
    def inference(self) -> str:
        return f"127.0.0.1:{self.stack.ports.inference[0]}"

    def pids(self) -> dict[str, int]:
        state = json.loads((self.run_dir / "processes.json").read_text())
        return {name: int(entry["pid"]) for name, entry in state.items() if entry.get("pid")}

    def serving_pids(self) -> list[int]:
        """The inference replicas and the gateway: the processes whose CPU a prediction costs."""
        return [pid for name, pid in self.pids().items() if name == "gateway" or name.startswith("inference-")]

    def inference_memory(self) -> dict[str, dict[str, int]]:
        """VmRSS and VmHWM (peak), in bytes, of each inference replica."""
        memory = {}
        for name, pid in self.pids().items():
            if name.startswith("inference-"):
                status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
                memory[name] = {key: int(status[key].split()[0]) * 1024 for key in ("VmRSS", "VmHWM")}
        return memory


@contextlib.contextmanager
def running_stack(model: DigitModel, dataset: dict[str, object], replicas: int,
                  extra_env: dict[str, str] | None = None) -> Iterator[RunningStack]:
    """Start the stack on free ports, register and activate ``model``, wait until Predict is served; stop it after."""
    run_dir = Path(tempfile.mkdtemp(prefix="digits-bench-"))
    stack = LocalStack.isolated(run_dir, admin_token=ADMIN_TOKEN, DIGITS_INFERENCE_REPLICAS=str(replicas),
                                **(extra_env or {}))
    stack.start()
    try:
        client = stack.redis_client()
        stack.wait_until(lambda: _pings(client), "redis answering", 60)
        registry = stack.registry(signing=True)
        blob = storage.dump(model)
        record = registry.register(blob, kind="svc", params={"recipe": "bench"}, metrics={}, dataset=dataset,
                                   split={}, fitted_on="bench", code_version="bench",
                                   served_check=check_round_trip(model, blob, np.zeros((4, N_PIXELS), np.float32)))
        registry.activate(record.version, expected=None, why="benchmark")
        stack.wait_until_serving(timeout=180)
        running = RunningStack(stack, record.version)
        # The gateway is serving once one replica is: wait for every replica (a direct health check each).
        stack.wait_until(lambda: all(_serving(f"127.0.0.1:{p}") for p in stack.ports.inference),
                         "every inference replica serving", 180)
        yield running
    except BaseException:
        stack.stop()
        print(f"bench: the stack's logs are in {run_dir / 'logs'}")
        raise
    stack.stop()
    shutil.rmtree(run_dir, ignore_errors=True)  # its Redis holds a copy of the model; the logs are kept on failure


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def _serving(target: str) -> bool:
    from digits.platform import healthcheck

    return healthcheck.is_serving(target, "digits.v1.Recognizer")


# -- clients ---------------------------------------------------------------------------------------


PAYLOADS = ("png", "pixels", "pixel-bytes")


def png(row: npt.NDArray[np.float32]) -> bytes:
    """A 28x28 grey PNG of one digit, as a client that has the digit as a picture sends it."""
    out = io.BytesIO()
    Image.fromarray(row.reshape(SHAPE).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def grpc_requests(pixels: npt.NDArray[np.float32], payload: str = "png") -> list[bytes]:
    """Serialized ``PredictRequest``s, built before the clock starts: a 28x28 PNG, 784 floats or 784 bytes."""
    def request(row: npt.NDArray[np.float32]) -> pb.PredictRequest:
        if payload == "png":
            return pb.PredictRequest(image=png(row))
        if payload == "pixel-bytes":
            return pb.PredictRequest(pixel_bytes=row.astype(np.uint8).tobytes())
        return pb.PredictRequest(pixels=pb.Pixels(values=row.tolist()))

    return [request(row).SerializeToString() for row in pixels]


def http_requests(pixels: npt.NDArray[np.float32], payload: str = "png") -> list[tuple[bytes, str]]:
    """(body, content type) per digit: the PNG as the body, or JSON pixels."""
    if payload == "png":
        return [(png(row), "image/png") for row in pixels]
    return [(json.dumps({"pixels": [int(v) for v in row]}).encode(), "application/json") for row in pixels]


@contextlib.asynccontextmanager
async def grpc_sender(target: str, requests: list[bytes]) -> AsyncIterator[Send]:
    """One channel (one HTTP/2 connection) to ``target``; every worker's calls share it, as one client would."""
    async with grpc.aio.insecure_channel(target) as channel:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, pb.PredictResponse] = channel.unary_unary(
            PREDICT, request_serializer=None, response_deserializer=pb.PredictResponse.FromString)
        await asyncio.wait_for(channel.channel_ready(), 30)

        async def send(index: int) -> int | None:
            try:
                response: pb.PredictResponse = await call(requests[index], timeout=30)
            except grpc.aio.AioRpcError:
                return None
            return int(response.digit)

        yield send


@contextlib.asynccontextmanager
async def http_sender(url: str, requests: list[tuple[bytes, str]], concurrency: int) -> AsyncIterator[Send]:
    """One aiohttp session keeping up to ``concurrency`` connections alive."""
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def send(index: int) -> int | None:
            body, content_type = requests[index]
            try:
                async with session.post(url, data=body, headers={"Content-Type": content_type}) as response:
                    if response.status != 200:
                        await response.read()
                        return None
                    answer = await response.json()
            except (aiohttp.ClientError, TimeoutError):
                return None
            return int(answer["digit"])

        yield send
