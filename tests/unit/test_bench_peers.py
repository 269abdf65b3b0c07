"""bench.peers' pure logic: ratios to the best peer, the open loop's rate, the order and the JSON round trip."""

from __future__ import annotations

import json
import math

from bench.peers import table
from bench.peers.table import DIGITS, PeerCell
from bench.stats import Cell


def peer(target: str, concurrency: int = 1, *, protocol: str = "grpc", latency: float = 10.0, count: int = 100,
         cpu: float = 0.5, rate: float = math.nan) -> PeerCell:
    cell = Cell(case=target, concurrency=concurrency, predictions=count, errors=0, correct=count - 1, seconds=1.0,
                latencies_ms=(latency,) * count, serving_cpu_s=cpu, client_cpu_s=0.1, machine_cpu_s=1.0, rate=rate)
    return PeerCell(target, protocol, cell)


def test_every_figure_is_a_ratio_to_the_best_peer_at_the_same_protocol_and_load() -> None:
    cells = [peer(DIGITS, latency=3.0, count=300, cpu=0.5), peer("mlserver", latency=6.0, count=150, cpu=0.8),
             peer("triton", latency=5.0, count=120, cpu=0.5), peer("triton", 8, latency=1.0, count=900)]
    digits, mlserver, triton = table.rows(cells, {DIGITS: "Digits gateway"})[:3]
    # the best peer: the lowest latency and CPU, the highest throughput, each chosen on its own
    assert digits[:3] == ["Digits gateway", "grpc", "C=1"]
    assert digits[3] == "3.00 (0.60x)"  # p50 3 ms against Triton's 5
    assert digits[5] == "300 (2.00x)"  # 300/s against MLServer's 150
    assert digits[6] == "2.00 (0.40x)"  # (0.5 + 0.1) s / 300 against Triton's (0.5 + 0.1) s / 120
    assert mlserver[3] == "6.00 (1.20x)" and mlserver[5] == "150 (1.00x)"
    assert digits[7] == "1.67 (0.40x)"  # the servers alone: 0.5 s / 300 against Triton's 0.5 s / 120
    assert triton[3] == "5.00 (1.00x)" and triton[8:] == ["99.2%", "0"]


def test_a_load_with_no_peer_shows_figures_without_ratios() -> None:
    [row] = table.rows([peer(DIGITS, 64, latency=40.0)])
    assert row[2:4] == ["C=64", "40.00"]


def test_cpu_per_prediction_counts_servers_and_client_and_the_servers_alone() -> None:
    assert peer("x", count=200, cpu=0.3).cpu_ms_per_prediction == (0.3 + 0.1) / 200 * 1000
    assert peer("x", count=200, cpu=0.3).serving_cpu_ms_per_prediction == 0.3 / 200 * 1000
    assert math.isnan(peer("x", count=0).cpu_ms_per_prediction)
    assert math.isnan(peer("x", count=0).serving_cpu_ms_per_prediction)


def test_the_open_loop_runs_at_a_share_of_the_slowest_targets_best_grpc_throughput() -> None:
    cells = [peer(DIGITS, 1, count=300), peer(DIGITS, 64, count=1500), peer("mlserver", 64, count=700),
             peer("mlserver", 1, count=130), peer("triton", 64, count=900, protocol="rest")]
    assert table.open_loop_rate(cells, 0.5) == 350.0  # MLServer's best: 700/s (REST cells do not count)
    assert math.isnan(table.open_loop_rate([], 0.5))


def test_order_is_protocol_then_load_then_target() -> None:
    cells = [peer("triton", 8), peer(DIGITS, 8, protocol="rest"), peer("triton", 0, rate=300.0), peer(DIGITS, 8),
             peer("mlserver", 1)]
    order = table.ordered(cells, [DIGITS, "mlserver", "triton"])
    assert [(c.target, c.protocol, c.load) for c in order] == [
        ("mlserver", "grpc", "C=1"), (DIGITS, "grpc", "C=8"), ("triton", "grpc", "C=8"),
        ("triton", "grpc", "open 300/s"), (DIGITS, "rest", "C=8")]


def test_cells_survive_the_trip_between_the_venvs_as_json() -> None:
    sent = peer("triton", 8, latency=2.5, rate=120.0)
    received = PeerCell.from_record(json.loads(json.dumps(sent.record())))
    assert received == sent


def test_the_markdown_table_has_a_row_per_cell() -> None:
    text = table.markdown([peer(DIGITS), peer("mlserver")], {"mlserver": "MLServer"})
    lines = text.splitlines()
    assert lines[0].startswith("| target | protocol | load | p50 ms")
    assert lines[1].startswith("|---|---|---|---:")
    assert len(lines) == 4 and "| MLServer | grpc | C=1 |" in lines[3]
