"""bench.report: the targets judged from a run's cells, and the table's figures."""

from __future__ import annotations

import math
from dataclasses import replace

from bench.report import CASES, HEADER, Target, markdown_table, number, rows, targets, text_table
from bench.stats import Cell, best_throughput, find


def cell(case: str, concurrency: int, latencies: list[float], predictions: int, seconds: float = 10.0,
         cpu: float = 1.0) -> Cell:
    return Cell(case=case, concurrency=concurrency, predictions=predictions, errors=0, correct=predictions,
                seconds=seconds, latencies_ms=tuple(latencies), serving_cpu_s=cpu, client_cpu_s=0.5, machine_cpu_s=2.0)


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


def test_figures_keep_three_significant_places_and_show_a_missing_one_as_a_dash() -> None:
    assert [number(v) for v in (0.1234, 2.345, 23.45, 2345.6)] == ["0.123", "2.35", "23.4", "2,346"]
    assert number(1234.5, 2) == "1,234.50"
    assert number(math.nan) == number(math.inf) == "-"


def test_each_row_compares_its_cell_with_the_seed_at_the_same_concurrency() -> None:
    cells = [
        cell("a", 1, [8.0], predictions=1250), cell("a", 64, [400.0], predictions=1600),
        cell("d", 1, [2.0], predictions=5000), cell("d", 64, [30.0], predictions=20_000),
        cell("d", 8, [4.0], predictions=8000),
        replace(cell("o", 0, [0.4], predictions=10_000), rate=1000.0),
    ]
    by_case = {(row[0], row[1]): dict(zip(HEADER, row, strict=True)) for row in rows(cells)}
    a1 = by_case[(CASES["a"], "1")]
    assert (a1["p50/a1"], a1["thr/a"], a1["client s/1k"]) == ("1.00", "1.00", "-")  # in-process: no client
    d1 = by_case[(CASES["d"], "1")]
    assert (d1["p50 ms"], d1["pred/s"], d1["p50/a1"], d1["thr/a"]) == ("2.00", "500", "0.25", "4.00")
    assert (d1["client s/1k"], d1["acc"], d1["err"]) == ("0.100", "1.000", "0")
    assert by_case[(CASES["d"], "64")]["thr/a"] == "12.50"  # 2,000 against (a)'s 160 at C=64
    assert by_case[(CASES["d"], "8")]["thr/a"] == "-"  # no (a) at C=8 to compare with
    open_loop = by_case[(CASES["o"], "1000/s")]
    assert open_loop["thr/a"] == "6.25"  # against (a)'s best, 160/s
    assert open_loop["p50/a1"] == "0.050"  # a ratio under 0.1 gets a third place, others two
    assert "| (d) gateway, gRPC | 1 |" in markdown_table(cells)
    assert text_table(cells).splitlines()[0].startswith("case")


def test_a_target_reads_as_a_verdict_and_records_its_comparison() -> None:
    fast = Target("p50", 1.5, 2.0, True, "ms", "0.25 x 8 ms")
    assert fast.line() == "PASS  p50: 1.50 ms <= 2.00 ms  (0.25 x 8 ms)"
    slow = Target("thr", 900.0, 1600.0, False, "pred/s", "10 x 160")
    assert slow.holds is False and slow.line().startswith("FAIL  thr: 900 pred/s >= 1,600 pred/s")
    assert Target("x", math.nan, 1.0, True, "ms", "").line().startswith("n/a   x: - ms")
    assert slow.record() == {"name": "thr", "measured": 900.0, "limit": 1600.0, "comparison": ">=",
                             "unit": "pred/s", "holds": False, "detail": "10 x 160"}
