"""``python -m bench.grpc_floor``: what one gRPC call costs in Python before any work, the floor under every hop.

    python -m bench.grpc_floor [--seconds 5] [--concurrency 1,64]

A server as Digits' are built (``grpc.aio`` on uvloop, the same grpcio) that answers each message with itself,
in its own process, and a client in this one: unary calls, and messages on one long-lived bidirectional stream
per concurrent sender. For each, at each concurrency: calls a second, and the CPU of the server process and of the
client per call, read from /proc. A message is 900 bytes, about a ``pixels`` request. Loopback only.

The gateway answers each Open Inference request with one unary call (its cost is the floor of the gateway's CPU a
prediction) and forwards coalesced batches to inference with one more (whose cost is shared by the batch).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence

import grpc

from bench.load import process_cpu_seconds
from bench.writers import text_table

SERVICE = "bench.Echo"
PAYLOAD = b"x" * 900


async def _echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def _echo_stream(requests: AsyncIterator[bytes],
                       context: grpc.aio.ServicerContext[bytes, bytes]) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request


async def serve(port: int) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(_echo),
        "Stream": grpc.stream_stream_rpc_method_handler(_echo_stream)})])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def measure(port: int, server_pid: int, kind: str, concurrency: int, seconds: float) -> list[str]:
    """One row: kind, concurrency, calls/s, server and client CPU µs a call."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        unary: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(f"/{SERVICE}/Unary")
        stream: grpc.aio.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(f"/{SERVICE}/Stream")
        await unary(PAYLOAD, wait_for_ready=True)
        calls = 0

        async def sender(until: float) -> None:
            nonlocal calls
            if kind == "unary":
                while time.monotonic() < until:
                    await unary(PAYLOAD)
                    calls += 1
                return
            call = stream()
            while time.monotonic() < until:
                await call.write(PAYLOAD)
                if await call.read() != PAYLOAD:
                    raise RuntimeError("the echo answered something else")
                calls += 1
            await call.done_writing()

        server_before, client_before = process_cpu_seconds([server_pid]), time.process_time()
        started = time.monotonic()
        await asyncio.gather(*(sender(started + seconds) for _ in range(concurrency)))
        elapsed = time.monotonic() - started
        server_cpu, client_cpu = process_cpu_seconds([server_pid]) - server_before, time.process_time() - client_before
    return [kind, str(concurrency), f"{calls / elapsed:,.0f}", f"{server_cpu / calls * 1e6:.0f}",
            f"{client_cpu / calls * 1e6:.0f}"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_floor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="per cell")
    parser.add_argument("--concurrency", default="1,64")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the server process's own entry
    args = parser.parse_args(argv)
    import uvloop

    if args.serve:
        uvloop.run(serve(args.serve))
        return
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "bench.grpc_floor", "--serve", str(port)])
    try:
        rows = [uvloop.run(measure(port, server.pid, kind, int(c), args.seconds))
                for kind in ("unary", "stream") for c in args.concurrency.split(",")]
    finally:
        server.terminate()
        server.wait()
    print(text_table(("calls", "C", "calls/s", "server CPU µs/call", "client CPU µs/call"), rows, align="l"))


if __name__ == "__main__":
    main()
