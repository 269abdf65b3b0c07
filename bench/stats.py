"""Pure statistics over one measured cell: percentiles, throughput, CPU per prediction, ratios."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between order statistics; NaN without samples."""
    if not len(samples):
        return math.nan
    return float(np.percentile(np.asarray(samples, dtype=np.float64), q))


def ratio(value: float, reference: float) -> float:
    """value / reference, NaN when either is missing or the reference is zero."""
    if not (math.isfinite(value) and math.isfinite(reference)) or reference == 0:
        return math.nan
    return value / reference


def per_thousand(cpu_seconds: float, predictions: int) -> float:
    """CPU seconds per 1,000 predictions."""
    return cpu_seconds / predictions * 1000.0 if predictions else math.nan


@dataclass(frozen=True)
class Cell:
    """One case at one concurrency, measured over a fixed window.

    ``latencies_ms`` holds one sample per request (for in-process batches: one per call, every request of the
    call having that latency, so the percentiles are the same). ``serving_cpu_s`` is the CPU time of the
    processes doing the serving work (the stack's inference replicas and gateway, or this process for the
    in-process cases); ``client_cpu_s`` is this process's CPU time for the network cases (0 in-process, where
    client and server are the same process and it is already in ``serving_cpu_s``).
    """

    case: str
    concurrency: int
    predictions: int
    errors: int
    correct: int
    seconds: float
    latencies_ms: tuple[float, ...]
    serving_cpu_s: float
    client_cpu_s: float
    machine_cpu_s: float = math.nan  # busy CPU time of the whole machine (all cores) in the window
    rate: float = math.nan  # open loop: requests sent per second whatever the answers (concurrency is 0 then)

    @property
    def open_loop(self) -> bool:
        return math.isfinite(self.rate)

    @property
    def other_cpu_s(self) -> float:
        """CPU time spent in the window by processes other than the serving ones and this one."""
        return max(0.0, self.machine_cpu_s - self.serving_cpu_s - self.client_cpu_s)

    @property
    def other_cores(self) -> float:
        """How many cores, on average, other work kept busy during the window."""
        return self.other_cpu_s / self.seconds if self.seconds > 0 else math.nan

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 99)

    @property
    def throughput(self) -> float:
        """Predictions answered per second of the window."""
        return self.predictions / self.seconds if self.seconds > 0 else math.nan

    @property
    def cpu_per_1k(self) -> float:
        return per_thousand(self.serving_cpu_s, self.predictions)

    @property
    def client_cpu_per_1k(self) -> float:
        return per_thousand(self.client_cpu_s, self.predictions)

    @property
    def accuracy(self) -> float:
        return self.correct / self.predictions if self.predictions else math.nan

    def summary(self) -> dict[str, Any]:
        """Everything but the raw samples, plus the derived figures."""
        facts: dict[str, Any] = {k: v for k, v in asdict(self).items() if k != "latencies_ms"}
        facts.update(p50_ms=self.p50_ms, p99_ms=self.p99_ms, mean_ms=_mean(self.latencies_ms),
                     min_ms=min(self.latencies_ms, default=math.nan), p90_ms=percentile(self.latencies_ms, 90),
                     max_ms=max(self.latencies_ms, default=math.nan), samples=len(self.latencies_ms),
                     throughput=self.throughput, cpu_s_per_1k=self.cpu_per_1k,
                     client_cpu_s_per_1k=self.client_cpu_per_1k, accuracy=self.accuracy,
                     other_cpu_s=self.other_cpu_s, other_cores=self.other_cores)
        return facts


def _mean(samples: Sequence[float]) -> float:
    return float(np.mean(samples)) if len(samples) else math.nan


def best_throughput(cells: Sequence[Cell], case: str) -> float:
    """The highest throughput ``case`` reached at any concurrency (NaN if it was not measured)."""
    values = [c.throughput for c in cells if c.case == case and not c.open_loop]
    return max(values) if values else math.nan


def find(cells: Sequence[Cell], case: str, concurrency: int) -> Cell | None:
    """The closed-loop cell of ``case`` at ``concurrency``."""
    return next((c for c in cells if c.case == case and c.concurrency == concurrency and not c.open_loop), None)
