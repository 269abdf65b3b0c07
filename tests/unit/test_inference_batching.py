"""The inference micro-batcher with a stand-in model (pure logic): a lone request, coalescing, grouping by model
during a swap, abandoned calls."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import numpy.typing as npt

from digits.modelling.verdicts import Answers
from services.inference.active_model import Loaded
from services.inference.batching import ABANDONED, MicroBatcher


class CountingModel:
    """Answers digit = the row's first pixel; records each call's rows and thread, and can be slow."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[tuple[int, int]] = []  # (rows, thread id)
        self.delay = delay

    def answer(self, pixels: npt.NDArray[np.float32]) -> Answers:
        self.calls.append((len(pixels), threading.get_ident()))
        if self.delay:
            threading.Event().wait(self.delay)
        labels = pixels[:, 0].astype(np.int64)
        return Answers(labels, np.full((len(pixels), 10), 0.1, dtype=np.float32), np.zeros_like(labels))


def loaded(model: CountingModel, version: str = "v1") -> Loaded:
    return Loaded(version, "digest", model)  # type: ignore[arg-type]


def rows(*digits: int) -> npt.NDArray[np.float32]:
    return np.array([[d] + [0] * 783 for d in digits], dtype=np.float32)


def run(test: Any) -> Any:
    return asyncio.run(test())


def test_a_lone_request_runs_inline_on_the_event_loop() -> None:
    model = CountingModel()

    async def lone() -> tuple[int, int]:
        batcher = MicroBatcher(max_size=64, max_wait_seconds=0)
        answers = await batcher.predict(loaded(model), rows(7))
        await batcher.close()
        return int(answers.labels[0]), threading.get_ident()

    digit, loop_thread = run(lone)
    assert digit == 7 and model.calls == [(1, loop_thread)]


def test_requests_arriving_together_share_one_model_call() -> None:
    model = CountingModel(delay=0.02)

    async def together() -> list[int]:
        batcher = MicroBatcher(max_size=64, max_wait_seconds=0)
        served = loaded(model)  # what every request holds between two swaps
        answers = await asyncio.gather(*(batcher.predict(served, rows(i)) for i in range(16)))
        await batcher.close()
        return [int(each.labels[0]) for each in answers]

    assert run(together) == list(range(16))
    assert sum(n for n, _ in model.calls) == 16 and len(model.calls) <= 3  # batches, not 16 calls


def test_a_batch_never_mixes_two_models() -> None:
    old, new = CountingModel(delay=0.02), CountingModel(delay=0.02)

    async def swap() -> list[str]:
        batcher = MicroBatcher(max_size=64, max_wait_seconds=0)
        first, second = loaded(old, "v1"), loaded(new, "v2")
        calls = [batcher.predict(first if i % 2 else second, rows(i)) for i in range(10)]
        answers = await asyncio.gather(*calls)
        await batcher.close()
        return [str(int(each.labels[0])) for each in answers]

    assert run(swap) == [str(i) for i in range(10)]
    assert sum(n for n, _ in old.calls) == 5 and sum(n for n, _ in new.calls) == 5


def test_abandoned_requests_are_dropped_before_the_model_runs() -> None:
    model = CountingModel(delay=0.05)
    before = ABANDONED._value.get()

    async def abandon() -> None:
        batcher = MicroBatcher(max_size=64, max_wait_seconds=0)
        served = loaded(model)
        busy = asyncio.gather(*(batcher.predict(served, rows(*[1] * 5)) for _ in range(2)))  # too many rows to inline
        await asyncio.sleep(0.01)  # the model thread is busy with those two
        gone = [asyncio.ensure_future(batcher.predict(served, rows(2))) for _ in range(5)]
        await asyncio.sleep(0)
        for call in gone:
            call.cancel()
        await busy
        await asyncio.sleep(0.1)
        await batcher.close()

    run(abandon)
    assert ABANDONED._value.get() - before == 5
    assert sum(n for n, _ in model.calls) == 10


def test_a_request_that_finds_the_replica_quiet_runs_without_a_turn_of_the_loop() -> None:
    turns: list[bool] = []

    class Watching(CountingModel):
        def answer(self, pixels: npt.NDArray[np.float32]) -> Answers:
            self.after_a_turn = bool(turns)
            return super().answer(pixels)

    model = Watching()

    async def lone() -> None:
        batcher = MicroBatcher(max_size=64, max_wait_seconds=0)
        asyncio.get_running_loop().call_soon(turns.append, True)  # runs at the loop's next turn
        await batcher.predict(loaded(model), rows(7))
        await batcher.close()

    run(lone)
    assert model.after_a_turn is False and len(model.calls) == 1
