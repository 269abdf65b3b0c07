"""The benchmark's pure statistics: percentiles, ratios, per-1,000 CPU and the targets (no timing here)."""

from __future__ import annotations

import math
from dataclasses import replace

from bench.report import Target, targets
from bench.stats import Cell, best_throughput, find, per_thousand, percentile, ratio


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


def test_targets_compare_the_gateway_with_the_seed_scikit_learn_predict() -> None:
    cells = [
        cell("a", 1, [8.0], predictions=1250), cell("a", 64, [400.0], predictions=1600),
        cell("b", 1, [1.0], predictions=10_000), cell("b", 64, [20.0], predictions=32_000),
        cell("d", 1, [1.5, 2.0, 2.5], predictions=5000), cell("d", 64, [30.0] * 99 + [9.0], predictions=20_000),
        replace(cell("o", 0, [1.0] * 98 + [7.0, 9.0], predictions=10_000), rate=1000.0),
    ]
    assert best_throughput(cells, "a") == 160.0
    assert find(cells, "b", 64) is cells[3]
    assert find(cells, "o", 0) is None  # the open loop is not a closed-loop cell
    p50, throughput, open_loop, memory = targets(cells, rss_bytes=300_000_000, n_support_vectors=10_000, features=784)
    assert (p50.measured, p50.limit, p50.holds) == (2.0, 2.0, True)
    assert (throughput.measured, throughput.limit, throughput.holds) == (2000.0, 1600.0, True)
    assert open_loop.limit == 6.0 and open_loop.measured > 6.0 and open_loop.holds is False
    assert math.isclose(memory.limit, 1.5 * (10_000 * 784 * 4 / 1e6 + 200))
    assert memory.holds is True


def test_a_target_without_its_measurement_is_not_judged() -> None:
    assert Target("x", math.nan, 1.0, True, "ms", "").holds is None
