"""Closed-loop load: each of C workers sends its next request as soon as its previous one is answered; and
open-loop load: requests sent at a fixed rate whatever the answers, which shows latency below saturation.

Network cases (gRPC and HTTP) run C asyncio workers over one client (one gRPC channel, or one aiohttp session
with up to C connections) for a warm-up and then a fixed window; a request counts if it started and ended in
the window. CPU is read from /proc for the serving processes at the window's edges, and for this process with
``time.process_time`` (grpc's C threads included).

In-process cases have no concurrency of their own: concurrency C is modelled as C requests that arrive
together and are answered by one model call on a batch of C rows, which is what the inference micro-batcher
does with C requests in flight. Every request of a call has that call's latency.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.stats import Cell

Pixels = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]
# A network request by payload index: the predicted digit, or None when the call failed.
Send = Callable[[int], Awaitable[int | None]]


def process_cpu_seconds(pids: Sequence[int]) -> float:
    """user + system CPU seconds of these processes, all their threads, from /proc/<pid>/stat."""
    import os

    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14 and 15 of stat)
    return total


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot, all cores (/proc/stat: everything but idle and iowait)."""
    import os

    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal (guest is inside user)
    return busy / os.sysconf("SC_CLK_TCK")


def run_in_process(
    case: str,
    predict: Callable[[Pixels], object],
    pixels: Pixels,
    labels: Labels,
    concurrency: int,
    duration: float,
    warmup: float,
) -> Cell:
    """Call ``predict`` on batches of ``concurrency`` rows back to back; CPU is this process's."""
    batches = _batches(len(pixels), concurrency)

    def call(index: int) -> tuple[float, int]:
        rows = batches[index % len(batches)]
        started = time.perf_counter()
        answer = predict(pixels[rows])
        elapsed = time.perf_counter() - started
        predicted = answer[0] if isinstance(answer, tuple) else answer
        return elapsed, int(np.sum(np.asarray(predicted) == labels[rows]))

    index = 0
    until = time.perf_counter() + warmup
    while time.perf_counter() < until:
        call(index)
        index += 1
    latencies: list[float] = []
    correct = 0
    machine_before, cpu_before, started = machine_cpu_seconds(), time.process_time(), time.perf_counter()
    until = started + duration
    while time.perf_counter() < until:
        elapsed, right = call(index)
        latencies.append(elapsed * 1000.0)
        correct += right
        index += 1
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_before
    machine = machine_cpu_seconds() - machine_before
    return Cell(case=case, concurrency=concurrency, predictions=len(latencies) * concurrency, errors=0,
                correct=correct, seconds=seconds, latencies_ms=tuple(latencies), serving_cpu_s=cpu, client_cpu_s=0.0,
                machine_cpu_s=machine)


def _batches(n: int, size: int) -> list[npt.NDArray[np.intp]]:
    """Row indices of consecutive batches cycling over a shuffled pool, so every call sees fresh digits."""
    order = np.random.default_rng(0).permutation(n)
    count = max(1, min(64, n // size))
    return [order[(i * size + np.arange(size)) % n] for i in range(count)]


@dataclass
class _Window:
    start: float
    end: float
    latencies: list[float] = field(default_factory=list)
    correct: int = 0
    errors: int = 0


async def run_closed_loop(
    case: str,
    send: Send,
    labels: Labels,
    serving_pids: Sequence[int],
    concurrency: int,
    duration: float,
    warmup: float,
) -> Cell:
    """C workers over ``send`` for ``warmup`` + ``duration`` seconds; the window is the last ``duration``."""
    now = time.perf_counter()
    window = _Window(start=now + warmup, end=now + warmup + duration)

    async def worker(offset: int) -> None:
        index = offset
        while True:
            started = time.perf_counter()
            if started >= window.end:
                return
            digit = await send(index % len(labels))
            ended = time.perf_counter()
            if window.start <= started and ended <= window.end:
                if digit is None:
                    window.errors += 1
                else:
                    window.latencies.append((ended - started) * 1000.0)
                    window.correct += int(digit == labels[index % len(labels)])
            index += concurrency

    async def cpu_at_edges() -> tuple[float, float, float]:
        await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
        serving, client, machine = process_cpu_seconds(serving_pids), time.process_time(), machine_cpu_seconds()
        await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
        return (process_cpu_seconds(serving_pids) - serving, time.process_time() - client,
                machine_cpu_seconds() - machine)

    cpu = asyncio.create_task(cpu_at_edges())
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    serving_cpu, client_cpu, machine_cpu = await cpu
    return Cell(case=case, concurrency=concurrency, predictions=len(window.latencies), errors=window.errors,
                correct=window.correct, seconds=duration, latencies_ms=tuple(window.latencies),
                serving_cpu_s=serving_cpu, client_cpu_s=client_cpu, machine_cpu_s=machine_cpu)


async def run_open_loop(
    case: str,
    send: Send,
    labels: Labels,
    serving_pids: Sequence[int],
    rate: float,
    duration: float,
    warmup: float,
) -> Cell:
    """Send a request every ``1 / rate`` seconds for ``warmup`` + ``duration`` seconds, each on its own task.

    Latency runs from the moment a request was due, not from when the client got round to sending it, so a
    client that falls behind shows up as latency instead of silently sending less (no coordinated omission).
    """
    interval = 1.0 / rate
    now = time.perf_counter()
    window = _Window(start=now + warmup, end=now + warmup + duration)

    async def one(index: int, due: float) -> None:
        digit = await send(index % len(labels))
        ended = time.perf_counter()
        if window.start <= due and ended <= window.end + 30:  # every request due in the window counts
            if digit is None:
                window.errors += 1
            else:
                window.latencies.append((ended - due) * 1000.0)
                window.correct += int(digit == labels[index % len(labels)])

    tasks: list[asyncio.Task[None]] = []
    serving, client, machine = 0.0, 0.0, 0.0
    due, index = now, 0
    while due < window.end:
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        if due >= window.start and not serving:
            serving, client, machine = process_cpu_seconds(serving_pids), time.process_time(), machine_cpu_seconds()
        tasks.append(asyncio.create_task(one(index, due)))
        index += 1
        due = now + index * interval
    serving_cpu = process_cpu_seconds(serving_pids) - serving
    client_cpu, machine_cpu = time.process_time() - client, machine_cpu_seconds() - machine
    await asyncio.gather(*tasks)
    return Cell(case=case, concurrency=0, predictions=len(window.latencies), errors=window.errors,
                correct=window.correct, seconds=duration, latencies_ms=tuple(window.latencies),
                serving_cpu_s=serving_cpu, client_cpu_s=client_cpu, machine_cpu_s=machine_cpu, rate=rate)


def run_cells(coroutine: Any) -> list[Any]:
    """Run a measuring coroutine to the end on uvloop, like the services themselves."""
    import uvloop

    return list(uvloop.run(coroutine))


def add_window_options(parser: argparse.ArgumentParser, *, concurrency: str, data_use: str = "") -> None:
    """The options every load-driving benchmark shares: its windows, its concurrencies, its data and payloads."""
    from bench.model import default_data_spec  # here: bench.model loads scikit-learn, which load need not

    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per window")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each window")
    parser.add_argument("--concurrency", default=concurrency, help="comma-separated concurrencies")
    parser.add_argument("--data", default=default_data_spec(),
                        help="sample, idx:DIR or openml (default: $DIGITS_DATA, else ../shared/data/mnist if present, "
                             f"else sample){data_use}")
    parser.add_argument("--payloads", type=int, default=2000, help="held-out digits sent as requests")
