"""A bounded load generator: N concurrent clients call Predict through the gateway until told to stop.

It runs on its own thread and event loop so that a test can inject faults meanwhile; every call is
recorded (start, end, status code, version that answered) and the figures are printed at the end.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc
import numpy as np

from digits.v1 import recognizer_pb2 as pb
from digits.v1 import recognizer_pb2_grpc
from tests.integration.digits_data import held_out

MAX_SECONDS = 180  # a load never outlives this, whatever the test does


@dataclass(frozen=True)
class Call:
    start: float
    end: float
    code: grpc.StatusCode
    version: str
    details: str = ""


@dataclass
class Load:
    target: str
    clients: int = 32
    deadline_seconds: float = 10.0
    calls: list[Call] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 60
        while not any(c.code == grpc.StatusCode.OK for c in list(self.calls)):
            assert time.monotonic() < deadline, "the load never got an answer"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(60)

    async def _run(self) -> None:
        pixels, _ = held_out(64)
        requests = [pb.PredictRequest(pixels=pb.Pixels(values=row.tolist())) for row in pixels]
        started = time.monotonic()
        async with grpc.aio.insecure_channel(self.target) as channel:
            stub = recognizer_pb2_grpc.RecognizerStub(channel)

            async def client(index: int) -> None:
                n = index
                while not self._stop.is_set() and time.monotonic() - started < MAX_SECONDS:
                    request = requests[n % len(requests)]
                    n += self.clients
                    begin = time.monotonic()
                    try:
                        reply = await stub.Predict(request, timeout=self.deadline_seconds)
                        self.calls.append(Call(begin, time.monotonic(), grpc.StatusCode.OK, reply.version))
                    except grpc.aio.AioRpcError as error:
                        self.calls.append(Call(begin, time.monotonic(), error.code(), "", error.details() or ""))

            await asyncio.gather(*(client(i) for i in range(self.clients)))

    def failures(self) -> list[Call]:
        return [c for c in self.calls if c.code != grpc.StatusCode.OK]

    def report(self, case: str) -> str:
        latencies = np.array([c.end - c.start for c in self.calls if c.code == grpc.StatusCode.OK])
        by_code = Counter(c.code.name for c in self.failures())
        p99 = float(np.percentile(latencies, 99) * 1000) if len(latencies) else float("nan")
        line = (f"[{case}] sent {len(self.calls)}, answered {len(latencies)}, failed {sum(by_code.values())} "
                f"{dict(by_code)}, p99 {p99:.1f} ms")
        print(line)
        return line
