"""Pure logic of ``python -m bench.peers``: the cells as JSON between the client and the runner, the open loop's
rate, and the one table where every figure is also a ratio to the best peer at the same load and protocol.

Imported by both venvs (Digits' and .venv-peers): numpy and the standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench.stats import Cell, ratio
from bench.writers import markdown_table, text_table

DIGITS = "digits"
# Lower is better for every figure but throughput.
FIGURES = (("p50 ms", "p50_ms", min), ("p99 ms", "p99_ms", min), ("pred/s", "throughput", max),
           ("CPU ms/pred", "cpu_ms_per_prediction", min), ("server CPU ms/pred", "serving_cpu_ms_per_prediction", min))
HEADER = ("target", "protocol", "load", *(name for name, _, _ in FIGURES), "correct", "errors")


@dataclass(frozen=True)
class PeerCell:
    """One target (Digits or a peer) over one protocol at one load."""

    target: str
    protocol: str  # "grpc" or "rest"
    cell: Cell

    @property
    def load(self) -> str:
        return f"open {self.cell.rate:.0f}/s" if self.cell.open_loop else f"C={self.cell.concurrency}"

    @property
    def p50_ms(self) -> float:
        return self.cell.p50_ms

    @property
    def p99_ms(self) -> float:
        return self.cell.p99_ms

    @property
    def throughput(self) -> float:
        return self.cell.throughput

    @property
    def cpu_ms_per_prediction(self) -> float:
        """Machine CPU per prediction: every server process (their children too) and the client, in ms."""
        cell = self.cell
        return (cell.serving_cpu_s + cell.client_cpu_s) / cell.predictions * 1000.0 if cell.predictions else math.nan

    @property
    def serving_cpu_ms_per_prediction(self) -> float:
        """CPU per prediction of the server processes alone (their children too), in ms."""
        cell = self.cell
        return cell.serving_cpu_s / cell.predictions * 1000.0 if cell.predictions else math.nan

    def record(self) -> dict[str, Any]:
        """JSON for the trip from the client's process to the runner's (the latencies included)."""
        return {"target": self.target, "protocol": self.protocol, "cell": asdict(self.cell)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> PeerCell:
        fields = dict(record["cell"])
        fields["latencies_ms"] = tuple(fields["latencies_ms"])
        return cls(record["target"], record["protocol"], Cell(**fields))


def open_loop_rate(cells: Iterable[PeerCell], share: float) -> float:
    """``share`` of the slowest target's best closed-loop gRPC throughput: a rate every target sustains, so that
    the open loop compares latency below saturation rather than who falls behind first. NaN without cells."""
    best: dict[str, float] = {}
    for c in cells:
        if c.protocol == "grpc" and not c.cell.open_loop and c.cell.predictions:
            best[c.target] = max(best.get(c.target, 0.0), c.throughput)
    return share * min(best.values()) if best else math.nan


def best_peer(cells: Sequence[PeerCell], like: PeerCell, attribute: str) -> float:
    """The best value of ``attribute`` among the peers (every target but Digits) at ``like``'s protocol and load."""
    pick = next(choose for _, name, choose in FIGURES if name == attribute)
    values = [v for c in cells if c.target != DIGITS and c.protocol == like.protocol and c.load == like.load
              and c.cell.predictions and math.isfinite(v := float(getattr(c, attribute)))]
    return pick(values) if values else math.nan


def _figure(value: float, best: float) -> str:
    if not math.isfinite(value):
        return "-"
    shown = f"{value:,.0f}" if value >= 100 else f"{value:.2f}"
    relative = ratio(value, best)
    return f"{shown} ({relative:.2f}x)" if math.isfinite(relative) else shown


def rows(cells: Sequence[PeerCell], labels: Mapping[str, str] | None = None) -> list[list[str]]:
    """One row a cell, in the order given: each figure followed by its ratio to the best peer's."""
    labels = labels or {}
    return [[labels.get(c.target, c.target), c.protocol, c.load,
             *(_figure(float(getattr(c, attribute)), best_peer(cells, c, attribute)) for _, attribute, _ in FIGURES),
             f"{c.cell.accuracy:.1%}" if c.cell.predictions else "-", str(c.cell.errors)] for c in cells]


def ordered(cells: Iterable[PeerCell], targets: Sequence[str]) -> list[PeerCell]:
    """By protocol (gRPC first), then load (closed loop by concurrency, then the open loop), then target order."""
    order = {name: i for i, name in enumerate(targets)}
    return sorted(cells, key=lambda c: (c.protocol != "grpc", c.protocol, c.cell.open_loop, c.cell.concurrency,
                                        order.get(c.target, len(order)), c.target))


def text(cells: Sequence[PeerCell], labels: Mapping[str, str] | None = None) -> str:
    return text_table(HEADER, rows(cells, labels), align="lll")


def markdown(cells: Sequence[PeerCell], labels: Mapping[str, str] | None = None) -> str:
    return markdown_table(HEADER, rows(cells, labels), align="lll")
