"""The benchmark's pure statistics: percentiles, ratios, per-1,000 CPU (no timing here)."""

from __future__ import annotations

import math

from bench.stats import Cell, per_thousand, percentile, ratio


def cell(case: str, concurrency: int, latencies: list[float], predictions: int, seconds: float = 10.0,
         cpu: float = 1.0) -> Cell:
    return Cell(case=case, concurrency=concurrency, predictions=predictions, errors=0, correct=predictions,
                seconds=seconds, latencies_ms=tuple(latencies), serving_cpu_s=cpu, client_cpu_s=0.5, machine_cpu_s=2.0)


def test_percentiles_interpolate_between_order_statistics() -> None:
    samples = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(samples, 50) == 50.5
    assert math.isclose(percentile(samples, 99), 99.01)
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_ratio_and_per_thousand_refuse_missing_references() -> None:
    assert ratio(3.0, 12.0) == 0.25
    assert math.isnan(ratio(1.0, 0.0))
    assert math.isnan(ratio(math.nan, 2.0))
    assert per_thousand(2.0, 4000) == 0.5
    assert math.isnan(per_thousand(1.0, 0))


def test_cell_derives_throughput_cpu_and_other_load() -> None:
    c = cell("d", 8, [1.0, 2.0, 3.0], predictions=2000, seconds=4.0, cpu=1.0)
    assert c.throughput == 500.0
    assert c.cpu_per_1k == 0.5
    assert c.client_cpu_per_1k == 0.25
    assert c.other_cpu_s == 0.5 and c.other_cores == 0.125
    summary = c.summary()
    assert summary["p50_ms"] == 2.0 and "latencies_ms" not in summary
