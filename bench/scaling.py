"""``python -m bench.scaling``: the replicas axis of ``make bench``, on one machine.

    python -m bench.scaling [--replicas 1,2,3] [--workers 1,2] [--duration 10] [--concurrency 64] [--data SPEC]

Inference: for each replica count, a stack with that many inference replicas behind one gateway serves the
benchmark's model (the cached fit of ``bench.model``), and case (d) — gateway, gRPC, closed loop — is measured at
each concurrency: throughput, p50, p99, serving CPU per 1,000 predictions, and how many cores other work took.

Training: on the first stack, one fan-out retrain (``parallel=True``: one RQ job per base candidate plus a fan-in)
is timed with 1 trainer worker (the stack's own), then with more (extra ``python -m services.trainer`` processes
with the stack trainer's environment, stopped afterwards): wall-clock seconds from enqueue to the fan-in's end,
and the speed-up over one worker.

Writes ``bench/results/scaling-<stamp>.json`` and ``.png`` (copied to ``scaling-latest.*``) and prints a table.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
from rq import Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job

from bench import load, report, writers
from bench.model import REPO, train_or_reuse
from bench.report import number
from bench.stack import RunningStack, grpc_requests, grpc_sender, running_stack
from bench.stats import Cell
from digits.client import Job as TrainingJob
from digits.training.jobs import candidate_job_id

# Four base candidates whose fits cost the same order of time at a few thousand digits, so that the fan-out
# shows: two SVCs (libsvm, one core each), logistic regression (lbfgs) and k-NN (cheap fit, costly evaluation).
DEFAULT_CANDIDATES = "svc,svc-deskew,logreg,knn"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", default="1,2,3", help="comma-separated inference replica counts")
    parser.add_argument("--workers", default="1,2", help="comma-separated trainer worker counts ('' or 0: skip)")
    load.add_window_options(parser, concurrency="64", data_use="; the served model's data and the retrain's")
    parser.add_argument("--candidates", default=DEFAULT_CANDIDATES, help="base candidates of the timed retrain")
    parser.add_argument("--limit", type=int, default=6000, help="digits the timed retrain uses (0: all)")
    return parser


@dataclass(frozen=True)
class ReplicaSetting:
    replicas: int
    cells: list[Cell]
    memory: dict[str, dict[str, int]]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    gateway_cores: dict[int, float] = field(default_factory=dict)  # by concurrency: the gateway's CPU / wall time

    def record(self) -> dict[str, Any]:
        return {"replicas": self.replicas, "cells": [c.summary() for c in self.cells],
                "gateway_cores": {str(k): v for k, v in self.gateway_cores.items()},
                "inference_memory": self.memory, "load_before": list(self.load_before),
                "load_after": list(self.load_after)}


@dataclass
class TrainerRun:
    workers: int
    seconds: float
    status: str
    error: str
    candidates: list[dict[str, Any]] = field(default_factory=list)  # per part: name, worker, fit and job seconds
    load_before: tuple[float, float, float] = (math.nan, math.nan, math.nan)

    @property
    def busy_seconds(self) -> float:
        """Sum of the candidate jobs' own durations: what one worker would need for them back to back."""
        return sum(float(c.get("job_seconds") or 0.0) for c in self.candidates)

    def record(self) -> dict[str, Any]:
        return {"workers": self.workers, "seconds": self.seconds, "status": self.status, "error": self.error,
                "candidates": self.candidates, "candidate_job_seconds_sum": self.busy_seconds,
                "load_before": list(self.load_before)}


def _ints(text: str) -> list[int]:
    return sorted({int(v) for v in text.split(",") if v.strip() and int(v) > 0})


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    replica_counts, worker_counts, concurrencies = _ints(args.replicas), _ints(args.workers), _ints(args.concurrency)
    started_at = datetime.now(UTC)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    machine = report.machine()
    print(f"scaling: {machine['cpu_count']} cores ({machine['cpu_model']}), load {_load_text()}", flush=True)
    models = train_or_reuse(args.data)
    production = models.production
    production.model.prepare()
    pixels = models.payload_pixels[: args.payloads]
    labels = models.payload_labels[: args.payloads]
    print(f"scaling: {production.recipe} with {production.n_support_vectors:,} support vectors; replicas "
          f"{replica_counts}, "
          f"C {concurrencies}, {args.duration:g}s cells; trainer workers {worker_counts}", flush=True)

    settings: list[ReplicaSetting] = []
    training: list[TrainerRun] = []
    for index, replicas in enumerate(replica_counts):
        before = os.getloadavg()
        with running_stack(production.model, models.dataset, replicas) as stack:
            print(f"scaling: {replicas} replica(s) up (load {_load_text()})", flush=True)
            gateway_cores: dict[int, float] = {}
            cells = load.run_cells(_measure(stack, pixels, labels, concurrencies, args.duration, args.warmup,
                                        gateway_cores))
            memory = stack.inference_memory()
            settings.append(ReplicaSetting(replicas, cells, memory, before, os.getloadavg(), gateway_cores))
            if index == 0 and worker_counts:
                training = _trainer_axis(stack, worker_counts, _absolute(args.data), args.candidates.split(","),
                                         args.limit)

    load_at_end = os.getloadavg()
    print()
    print(text_table(settings))
    if training:
        print()
        print(trainer_table(training))
    print(f"\nload average at start {_fmt_load(machine['load_average_at_start'])}, at end {_fmt_load(load_at_end)} "
          f"({machine['cpu_count']} cores)")

    record = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": [sys.executable, "-m", "bench.scaling", *(argv if argv is not None else sys.argv[1:])],
        "options": vars(args),
        "machine": machine | {"load_average_at_end": list(load_at_end)},
        "model": {"recipe": production.recipe, "dataset": models.dataset, "train_size": models.train_size,
                  "n_support_vectors": production.n_support_vectors},
        "replicas": [s.record() for s in settings],
        "training": {"candidates": args.candidates.split(","), "limit": args.limit, "data": _absolute(args.data),
                     "runs": [t.record() for t in training]},
        "table_markdown": markdown_table(settings),
        "trainer_table_markdown": trainer_markdown(training) if training else "",
    }
    title = (f"Digits scaling {stamp}: (d) gateway gRPC, {production.recipe}, {production.n_support_vectors:,} SVs, "
             f"{machine['cpu_count']} cores, load at start {machine['load_average_at_start'][0]:.1f}")
    json_path, png_path = write(record, settings, training, stamp, title)
    print(f"scaling: wrote {json_path} and {png_path} (copied to scaling-latest.json / scaling-latest.png)")
    return 0


# -- the inference axis ---------------------------------------------------------------------------


async def _measure(stack: RunningStack, pixels: np.ndarray[Any, Any], labels: np.ndarray[Any, Any],
                   concurrencies: Sequence[int], duration: float, warmup: float,
                   gateway_cores: dict[int, float]) -> list[Cell]:
    cells: list[Cell] = []
    pids = stack.serving_pids()
    gateway = [pid for name, pid in stack.pids().items() if name == "gateway"]
    requests = grpc_requests(pixels)
    for concurrency in concurrencies:
        before, started = load.process_cpu_seconds(gateway), time.perf_counter()
        async with grpc_sender(stack.gateway_grpc, requests) as send:
            cell = await load.run_closed_loop("d", send, labels, pids, concurrency, duration, warmup)
        # Warm-up and window together (the split inside the window is the same): the gateway's cores.
        gateway_cores[concurrency] = (load.process_cpu_seconds(gateway) - before) / (time.perf_counter() - started)
        print(f"  (d) C={concurrency:<3} {cell.throughput:7.0f}/s  p50 {cell.p50_ms:8.1f} ms  p99 {cell.p99_ms:8.1f} ms"
              f"  CPU {cell.cpu_per_1k:5.2f} s/1k (gateway {gateway_cores[concurrency]:.2f} cores, all serving "
              f"{cell.serving_cpu_s / cell.seconds:.2f})  errors {cell.errors}  other {cell.other_cores:.2f} cores",
              flush=True)
        cells.append(cell)
    return cells


# -- the trainer axis -----------------------------------------------------------------------------


def _trainer_axis(stack: RunningStack, worker_counts: Sequence[int], data: str, candidates: list[str],
                  limit: int) -> list[TrainerRun]:
    runs: list[TrainerRun] = []
    with _extra_workers(stack) as start_more:
        for workers in worker_counts:
            start_more(workers - 1)
            _wait_for_workers(stack, workers)
            before = os.getloadavg()
            print(f"scaling: fan-out retrain of {','.join(candidates)} on {limit or 'all'} digits with {workers} "
                  f"worker(s) (load {_load_text()})", flush=True)
            started = time.perf_counter()
            job = stack.stack.retrain(data=data, candidates=candidates, limit=limit, parallel=True, no_activate=True,
                                     seed=0, timeout=3600)
            seconds = time.perf_counter() - started
            run = TrainerRun(workers, seconds, job.status, job.error, _parts(stack, job, candidates), before)
            print(f"  {workers} worker(s): {seconds:.1f}s, {job.status}{' - ' + job.error if job.error else ''}; "
                  f"candidate jobs {run.busy_seconds:.1f}s back to back", flush=True)
            runs.append(run)
    return runs


def _parts(stack: RunningStack, job: TrainingJob, candidates: Sequence[str]) -> list[dict[str, Any]]:
    """Each candidate job's worker and duration, and the fit time the fan-in reports for it."""
    result = job.result
    fits = {row.get("name"): row.get("fit_seconds") for row in result.get("candidates", [])}
    connection = stack.stack.redis_client()
    parts: list[dict[str, Any]] = []
    for name in candidates:
        entry: dict[str, Any] = {"name": name, "fit_seconds": fits.get(name)}
        try:
            part = Job.fetch(candidate_job_id(job.id, name), connection=connection)
        except NoSuchJobError as error:  # a missing part is reported, not fatal
            entry["error"] = str(error)
        else:
            entry["worker"] = part.worker_name
            if part.started_at and part.ended_at:
                entry["job_seconds"] = (part.ended_at - part.started_at).total_seconds()
        parts.append(entry)
    return parts


@contextmanager
def _extra_workers(stack: RunningStack) -> Iterator[Any]:
    """A function topping up extra trainer processes (the stack trainer's argv and env); all stopped on exit."""
    trainer = next(p for p in stack.stack.processes() if p.name == "trainer")
    started: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []

    def start_more(count: int) -> None:
        while len(started) < count:
            log = (stack.run_dir / "logs" / f"trainer-{len(started) + 2}.log").open("ab")
            process = subprocess.Popen(list(trainer.argv), env=dict(trainer.env), cwd=REPO, stdout=log, stderr=log,
                                       stdin=subprocess.DEVNULL)
            started.append((process, log))

    try:
        yield start_more
    finally:
        for process, _ in started:
            process.terminate()
        for process, log in started:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
            log.close()


def _wait_for_workers(stack: RunningStack, count: int) -> None:
    connection = stack.stack.redis_client()
    stack.stack.wait_until(lambda: Worker.count(connection=connection) >= count, f"{count} trainer worker(s)", 120)


def _absolute(spec: str) -> str:
    """``idx:DIR`` with DIR made absolute, so that the trainer reads the same files whatever its directory."""
    if spec.startswith("idx:"):
        return "idx:" + str(Path(spec[4:]).expanduser().resolve())
    return spec


# -- tables, files, plot ----------------------------------------------------------------------------

HEADER = ("replicas", "C", "pred/s", "vs 1 replica", "p50 ms", "p99 ms", "CPU s/1k", "client s/1k", "serving cores",
          "gateway cores", "other cores", "err", "RSS MB/replica")
TRAINER_HEADER = ("workers", "wall s", "speed-up", "candidate jobs s (sum)", "placement", "status")


def rows(settings: Sequence[ReplicaSetting]) -> list[tuple[str, ...]]:
    base = {c.concurrency: c.throughput for c in settings[0].cells} if settings else {}
    table: list[tuple[str, ...]] = []
    for setting in settings:
        rss = max((m["VmRSS"] for m in setting.memory.values()), default=0) / report.MB
        for cell in setting.cells:
            ref = base.get(cell.concurrency, math.nan)
            gain = cell.throughput / ref if ref and math.isfinite(ref) else math.nan
            table.append((str(setting.replicas), str(cell.concurrency), number(cell.throughput, 0), number(gain, 2),
                          number(cell.p50_ms), number(cell.p99_ms), number(cell.cpu_per_1k),
                          number(cell.client_cpu_per_1k),
                          number(cell.serving_cpu_s / cell.seconds, 2),
                          number(setting.gateway_cores.get(cell.concurrency, math.nan), 2), number(cell.other_cores, 2),
                          str(cell.errors), number(rss, 0)))
    return table


def trainer_rows(runs: Sequence[TrainerRun]) -> list[tuple[str, ...]]:
    one = next((r.seconds for r in runs if r.workers == 1), runs[0].seconds if runs else math.nan)
    table: list[tuple[str, ...]] = []
    for run in runs:
        placement = ", ".join(f"{c['name']}@w{_worker_number(runs, c.get('worker'))}" for c in run.candidates)
        table.append((str(run.workers), number(run.seconds, 1), number(one / run.seconds, 2),
                      number(run.busy_seconds, 1), placement, run.status + (f" ({run.error})" if run.error else "")))
    return table


def _worker_number(runs: Sequence[TrainerRun], name: object) -> str:
    names = sorted({str(c.get("worker")) for r in runs for c in r.candidates if c.get("worker")})
    return str(names.index(str(name)) + 1) if name and str(name) in names else "?"


def text_table(settings: Sequence[ReplicaSetting]) -> str:
    return writers.text_table(HEADER, rows(settings))


def markdown_table(settings: Sequence[ReplicaSetting]) -> str:
    return writers.markdown_table(HEADER, rows(settings))


def trainer_table(runs: Sequence[TrainerRun]) -> str:
    return writers.text_table(TRAINER_HEADER, trainer_rows(runs))


def trainer_markdown(runs: Sequence[TrainerRun]) -> str:
    return writers.markdown_table(TRAINER_HEADER, trainer_rows(runs))




def _load_text() -> str:
    return _fmt_load(os.getloadavg())


def _fmt_load(values: Sequence[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def write(record: dict[str, Any], settings: Sequence[ReplicaSetting], training: Sequence[TrainerRun], stamp: str,
          title: str) -> tuple[Path, Path]:
    """scaling-<stamp>.json and .png under bench/results/, copied to scaling-latest.json and .png."""
    return writers.write_run(record, stamp, lambda path: plot(settings, training, path, title), prefix="scaling",
                             latest="scaling-latest")


def plot(settings: Sequence[ReplicaSetting], training: Sequence[TrainerRun], path: Path, title: str) -> None:
    """Throughput and p99 against replicas, one line per concurrency; trainer wall-clock against workers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if training else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4.6))
    throughput, p99 = axes[0], axes[1]
    replicas = [s.replicas for s in settings]
    concurrencies = sorted({c.concurrency for s in settings for c in s.cells})
    for concurrency in concurrencies:
        cells = [next((c for c in s.cells if c.concurrency == concurrency), None) for s in settings]
        xs = [r for r, c in zip(replicas, cells, strict=True) if c]
        throughput.plot(xs, [c.throughput for c in cells if c], "o-", label=f"C={concurrency}")
        p99.plot(xs, [c.p99_ms for c in cells if c], "v--", label=f"C={concurrency}")
    throughput.set_title("(d) throughput, predictions/s")
    p99.set_title("(d) p99 latency, ms")
    for axis in (throughput, p99):
        axis.set_xticks(replicas, [str(r) for r in replicas])
        axis.set_xlabel("inference replicas behind one gateway")
        axis.set_ylim(bottom=0)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    if training:
        trainer = axes[2]
        trainer.bar([str(r.workers) for r in training], [r.seconds for r in training], color="#9467bd")
        for number, run in enumerate(training):
            trainer.annotate(f"{run.seconds:.0f}s", (number, run.seconds), ha="center", xytext=(0, 3),
                             textcoords="offset points", fontsize=8)
        trainer.set_title("fan-out retrain, wall-clock s")
        trainer.set_xlabel("trainer workers")
        trainer.grid(True, axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
