"""What a run found: the machine, the table, the targets, a JSON record and a plot (written by bench.writers)."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import writers
from bench.stats import Cell, best_throughput, find, ratio
from digits.settings import process_environment

CASES: dict[str, str] = {
    "a": "(a) seed svc, scikit-learn predict",
    "b": "(b) production model, in-process",
    "c": "(c) inference, gRPC",
    "d": "(d) gateway, gRPC",
    "e": "(e) gateway, HTTP",
    "o": "(o) gateway, gRPC, open loop",
}
OPEN_LOOP_SHARE = 0.5  # the open loop runs at this share of (d)'s throughput at the top concurrency
MB = 1_000_000
RSS_ALLOWANCE = 200 * MB


def machine() -> dict[str, Any]:
    """Cores, CPU model, memory, load, BLAS and the versions that shape the numbers."""
    import numpy as np
    from threadpoolctl import threadpool_info

    np.ones((2, 2)) @ np.ones((2, 2))  # make sure numpy's BLAS is loaded before asking
    cpuinfo = _read("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "")
    meminfo = _read("/proc/meminfo")
    total = next((int(line.split()[1]) * 1024 for line in meminfo.splitlines() if line.startswith("MemTotal")), 0)
    versions = {"python": platform.python_version()}
    for package in ("numpy", "scipy", "scikit-learn", "grpcio", "protobuf", "aiohttp", "uvloop", "threadpoolctl"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "absent"
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_bytes": total,
        "platform": platform.platform(),
        "load_average_at_start": list(os.getloadavg()),
        "blas": [{k: v for k, v in pool.items() if k != "filepath"} for pool in threadpool_info()],
        "versions": versions,
        "environment": {k: v for k, v in process_environment().items()
                        if k in {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"}
                        or k.startswith("DIGITS_BATCH")},
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


# -- the table ---------------------------------------------------------------------------------------

HEADER = ("case", "C", "p50 ms", "p99 ms", "pred/s", "CPU s/1k", "client s/1k", "p50/a1", "thr/a",
          "other cores", "err", "acc")


def rows(cells: Sequence[Cell]) -> list[tuple[str, ...]]:
    """One row per case and concurrency (or arrival rate). Every ratio is against (a), the seed's scikit-learn
    predict in the same run: p50 against its single-image p50, throughput against its throughput at the same
    concurrency (for the open loop: its best)."""
    a1 = find(cells, "a", 1)
    table: list[tuple[str, ...]] = []
    for cell in cells:
        a = find(cells, "a", cell.concurrency)
        a_throughput = best_throughput(cells, "a") if cell.open_loop else (a.throughput if a else math.nan)
        table.append((
            CASES[cell.case], f"{cell.rate:.0f}/s" if cell.open_loop else str(cell.concurrency),
            number(cell.p50_ms), number(cell.p99_ms), number(cell.throughput, 0),
            number(cell.cpu_per_1k), number(cell.client_cpu_per_1k) if cell.case in "cdeo" else "-",
            _ratio(cell.p50_ms, a1.p50_ms if a1 else math.nan), _ratio(cell.throughput, a_throughput),
            number(cell.other_cores, 2), str(cell.errors), f"{cell.accuracy:.3f}",
        ))
    return table


ALIGN = "l"  # the case's name left, every figure right


def text_table(cells: Sequence[Cell]) -> str:
    return writers.text_table(HEADER, rows(cells), ALIGN)


def markdown_table(cells: Sequence[Cell]) -> str:
    return writers.markdown_table(HEADER, rows(cells), ALIGN)


def number(value: float, digits: int | None = None) -> str:
    if not math.isfinite(value):
        return "-"
    if digits is None:
        digits = 3 if abs(value) < 1 else 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
    return f"{value:,.{digits}f}"


def _ratio(value: float, reference: float) -> str:
    r = ratio(value, reference)
    return "-" if not math.isfinite(r) else f"{r:.3f}" if r < 0.1 else f"{r:.2f}"


# -- the targets -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    measured: float
    limit: float
    at_most: bool  # True: measured <= limit holds; False: measured >= limit holds
    unit: str
    detail: str

    @property
    def holds(self) -> bool | None:
        if not (math.isfinite(self.measured) and math.isfinite(self.limit)):
            return None
        return self.measured <= self.limit if self.at_most else self.measured >= self.limit

    def line(self) -> str:
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[self.holds]
        sign = "<=" if self.at_most else ">="
        figures = f"{number(self.measured)} {self.unit} {sign} {number(self.limit)} {self.unit}"
        return f"{verdict}  {self.name}: {figures}  ({self.detail})"

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "measured": self.measured, "limit": self.limit,
                "comparison": "<=" if self.at_most else ">=", "unit": self.unit, "holds": self.holds,
                "detail": self.detail}


def targets(cells: Sequence[Cell], rss_bytes: int, n_support_vectors: int, features: int) -> list[Target]:
    """The issue's targets, all read from this run and all against (a), the seed's scikit-learn predict."""
    top = max((c.concurrency for c in cells), default=0)
    d1, dtop, a1 = find(cells, "d", 1), find(cells, "d", top), find(cells, "a", 1)
    open_loop = next((c for c in cells if c.case == "o"), None)
    nan = math.nan
    a_single = a1.p50_ms if a1 else nan
    best_a = best_throughput(cells, "a")
    d1_p50 = d1.p50_ms if d1 else nan
    budget = 1.5 * (n_support_vectors * features * 4 + RSS_ALLOWANCE)
    return [
        Target("(d) p50 at C=1 vs (a) single-image predict", d1_p50, 0.25 * a_single, True, "ms",
               f"0.25 x {number(a_single)} ms"),
        Target(f"(d) throughput at C={top} vs (a) batch rate", dtop.throughput if dtop else nan, 10 * best_a, False,
               "pred/s", f"10 x {number(best_a)} pred/s, (a)'s best"),
        Target(f"(o) p99 at {open_loop.rate if open_loop else nan:.0f}/s ({OPEN_LOOP_SHARE:g} x (d) at C={top}) vs "
               "(d) p50 at C=1", open_loop.p99_ms if open_loop else nan, 3 * d1_p50, True, "ms",
               f"3 x {number(d1_p50)} ms"),
        Target("inference resident memory (largest replica, VmRSS)", rss_bytes / MB, budget / MB, True, "MB",
               f"1.5 x ({n_support_vectors:,} SV x {features} features x 4 B + 200 MB); MB = 10^6 bytes"),
    ]


# -- files ---------------------------------------------------------------------------------------------


def write(record: dict[str, Any], cells: Sequence[Cell], stamp: str, title: str,
          lines: Sequence[tuple[str, float]]) -> tuple[Path, Path]:
    """bench-<stamp>.json and .png under bench/results/, copied to latest.json and latest.png."""
    return writers.write_run(record, stamp, lambda path: plot(cells, path, title, lines), prefix="bench",
                             latest="latest")


def plot(cells: Sequence[Cell], path: Path, title: str, lines: Sequence[tuple[str, float]]) -> None:
    """Latency (p50 solid, p99 dashed) and throughput against concurrency, one colour per case."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    concurrencies = sorted({c.concurrency for c in cells})
    fig, (latency, throughput) = plt.subplots(1, 2, figsize=(13, 5.2))
    colours = dict(zip(CASES, ("#7f7f7f", "#2ca02c", "#1f77b4", "#d62728", "#9467bd", "#ff7f0e"), strict=True))
    for case, label in CASES.items():
        mine = sorted((c for c in cells if c.case == case and not c.open_loop), key=lambda c: c.concurrency)
        if not mine:
            continue
        xs = [c.concurrency for c in mine]
        colour = colours[case]
        latency.plot(xs, [c.p50_ms for c in mine], "o-", color=colour)
        latency.plot(xs, [c.p99_ms for c in mine], "v--", color=colour, alpha=0.6)
        throughput.plot(xs, [c.throughput for c in mine], "o-", color=colour, label=label)
    for number, (name, value) in enumerate(sorted(lines, key=lambda line: line[1], reverse=True)):
        if math.isfinite(value):
            throughput.axhline(value, color="black", linestyle=":", linewidth=1)
            throughput.annotate(f"{name} = {value:,.0f}/s", (concurrencies[0], value), textcoords="offset points",
                                xytext=(2, 3 if number == 0 else -10), fontsize=8)
    for axis, ylabel in ((latency, "latency per request, ms (log)"), (throughput, "predictions per second (log)")):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.{0 if value >= 1 else 1}f}"))
        axis.yaxis.set_minor_formatter(FuncFormatter(lambda value, _: ""))
        axis.set_xticks(concurrencies, [str(c) for c in concurrencies])
        axis.set_xlabel("concurrency (requests in flight)")
        axis.set_ylabel(ylabel)
        axis.grid(True, which="both", alpha=0.3)
    latency.set_title("latency per request: p50 (solid, o) and p99 (dashed, v)")
    throughput.set_title("throughput (dotted: the targets for (d) at the top concurrency)")
    handles, names = throughput.get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
