"""bench.load: batches over the pool, CPU read from /proc, and the three loops on stub predictors (short windows)."""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
import pytest

from bench.load import (
    _batches,
    machine_cpu_seconds,
    process_cpu_seconds,
    run_closed_loop,
    run_in_process,
    run_open_loop,
)


def test_batches_are_fresh_digits_of_the_asked_size_at_most_64_of_them() -> None:
    batches = _batches(100, 10)
    assert len(batches) == 10 and all(len(b) == 10 for b in batches)
    assert sorted(np.concatenate(batches).tolist()) == list(range(100))  # each digit once, in a shuffled order
    assert np.concatenate(batches).tolist() != list(range(100))
    assert [b.tolist() for b in _batches(100, 10)] == [b.tolist() for b in batches]  # the same every run
    assert len(_batches(10_000, 1)) == 64
    (wrapped,) = _batches(5, 8)  # a batch larger than the pool wraps around it
    assert len(wrapped) == 8 and set(wrapped.tolist()) == set(range(5))


def burn(seconds: float) -> None:
    until = time.process_time() + seconds
    while time.process_time() < until:
        pass


def test_cpu_seconds_are_read_from_proc_for_a_process_and_the_machine() -> None:
    mine, machine, own = process_cpu_seconds([os.getpid()]), machine_cpu_seconds(), time.process_time()
    burn(0.2)
    spent = time.process_time() - own
    assert process_cpu_seconds([os.getpid()]) - mine == pytest.approx(spent, abs=0.05)
    assert process_cpu_seconds([os.getpid(), os.getpid()]) == pytest.approx(2 * process_cpu_seconds([os.getpid()]),
                                                                             abs=0.05)
    assert machine_cpu_seconds() - machine >= spent - 0.05  # the machine was busy at least while this one was


def test_in_process_calls_send_whole_batches_and_count_each_right_digit() -> None:
    labels = np.arange(8, dtype=np.int64)
    pixels = np.zeros((8, 784), dtype=np.float32)
    pixels[:, 0] = labels

    def half_right(rows: np.ndarray) -> tuple[np.ndarray, None]:  # right on even digits, wrong on odd ones
        digits = rows[:, 0].astype(np.int64)
        return np.where(digits % 2 == 0, digits, -1), None

    cell = run_in_process("b", half_right, pixels, labels, concurrency=8, duration=0.05, warmup=0.01)
    assert (cell.case, cell.concurrency, cell.errors, cell.client_cpu_s) == ("b", 8, 0, 0.0)
    assert cell.predictions == 8 * len(cell.latencies_ms) > 0  # one latency per call of 8 rows
    assert cell.correct == cell.predictions // 2
    assert cell.seconds >= 0.05
    bare = run_in_process("a", lambda rows: rows[:, 0].astype(np.int64), pixels, labels, 4, 0.02, 0.0)
    assert bare.correct == bare.predictions  # a bare array of digits is an answer too


def test_the_closed_loop_counts_answers_errors_and_right_digits_in_the_window() -> None:
    labels = np.arange(10_000, dtype=np.int64) % 10
    sent: list[int] = []

    async def send(index: int) -> int | None:
        sent.append(index)
        await asyncio.sleep(0.005)
        return None if index % 5 == 0 else int(labels[index]) if index % 5 != 1 else -1

    cell = asyncio.run(run_closed_loop("d", send, labels, [os.getpid()], concurrency=4, duration=0.2, warmup=0.05))
    assert len(sent) == len(set(sent))  # the workers share the payloads out and never send one twice
    assert cell.predictions == len(cell.latencies_ms) > 0 and cell.errors > 0
    assert cell.errors == pytest.approx(cell.predictions / 4, abs=4)  # one in five fails, four in five answer
    assert cell.correct == pytest.approx(cell.predictions * 3 / 4, abs=4)  # and one of those four is wrong
    assert min(cell.latencies_ms) >= 4.9 and cell.seconds == 0.2 and cell.concurrency == 4
    assert cell.predictions + cell.errors < len(sent)  # the warm-up's requests are not counted


def test_the_open_loop_sends_on_schedule_and_times_from_when_each_request_was_due() -> None:
    labels = np.zeros(1000, dtype=np.int64)
    stalled = False

    async def send(index: int) -> int | None:
        nonlocal stalled
        if index == 20 and not stalled:  # one request stalls the whole client for 60 ms
            stalled = True
            time.sleep(0.06)
        await asyncio.sleep(0)
        return 0

    cell = asyncio.run(run_open_loop("o", send, labels, [os.getpid()], rate=200.0, duration=0.2, warmup=0.05))
    assert (cell.concurrency, cell.rate, cell.open_loop) == (0, 200.0, True)
    assert 39 <= cell.predictions <= 41 and cell.errors == 0 and cell.correct == cell.predictions  # 0.2 s at 200/s
    # The requests due while the client stalled (about 11 at 5 ms apart) were sent late, and their latency counts
    # from when they were due; timed from when they were sent, only the stalled one itself would look slow.
    assert sum(latency >= 20.0 for latency in cell.latencies_ms) >= 6
