"""``python -m bench``: measure Digits end to end in one run and check the performance targets.

    python -m bench [--duration 10] [--concurrency 1,8,64] [--data SPEC] [--replicas 1] [--payload png]

The stack serves the production recipe (``candidates.DEFAULT``, fitted on the data's training share and cached);
every figure is read as a ratio to the seed recipe's scikit-learn predict, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from bench import load, profile, report
from bench.model import BenchModels, train_or_reuse
from bench.stack import (
    PAYLOADS,
    RunningStack,
    grpc_requests,
    grpc_sender,
    http_requests,
    http_sender,
    png,
    running_stack,
)
from bench.stats import Cell, best_throughput, find
from digits.mnist import N_PIXELS
from digits.settings import Settings

DEFINITIONS = {
    "concurrency": "requests in flight. Network cases: C closed-loop workers (each sends its next request when "
                   "the previous one is answered) over one gRPC channel or one HTTP session. In-process cases: "
                   "one model call on a batch of C rows, every request of it having that call's latency.",
    "open_loop": "(o): requests sent to the gateway at a fixed rate (half of (d)'s throughput at the top "
                 "concurrency) whatever the answers; latency counts from when a request was due",
    "latency": "per request, from send (or due time) to answer, in the client (wall clock)",
    "throughput": "predictions answered within the window / window length",
    "cpu_s_per_1k": "user+system CPU seconds per 1,000 predictions of the serving processes: for (c), (d), (e) "
                    "and (o) the inference replica(s) and the gateway, all threads, from /proc/<pid>/stat (for (c) "
                    "the gateway is idle: health checks only); for (a) and (b) this process",
    "client_cpu_s_per_1k": "the load generator's own CPU per 1,000 predictions (network cases); it shares the "
                           "machine's cores with the stack",
    "other_cores": "average cores kept busy during the window by other processes (machine busy time from "
                   "/proc/stat minus serving and client CPU): work outside the benchmark that competed for the CPU",
    "ratios": "p50/a1: this row's p50 over (a)'s single-image p50; thr/a: this row's throughput over (a)'s at the "
              "same concurrency (the open loop: over (a)'s best)",
    "reference": "(a) is the seed recipe's own predict (scale, then SVC.predict through libsvm, the svc candidate "
                 "fitted on the same digits): labels only, while (b)-(e) also compute the ten probabilities",
    "payload": "what the network cases send: a 28x28 grey PNG of the digit (default), 784 float pixels or 784 "
               "pixel bytes",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    load.add_window_options(parser, concurrency="1,8,64")
    parser.add_argument("--replicas", type=int, default=1, help="inference replicas behind the gateway")
    parser.add_argument("--cases", default="abcde", help="which of (a)..(e) to measure; (a) is the reference")
    parser.add_argument("--payload", choices=PAYLOADS, default="png", help="what the network cases send")
    parser.add_argument("--no-open-loop", dest="open_loop", action="store_false",
                        help="skip (o), the open loop at half of (d)'s top throughput")
    parser.add_argument("--blas-threads", type=int, default=0,
                        help="BLAS threads in this process (threadpoolctl) and in inference (DIGITS_BLAS_THREADS, "
                             "default 1 there); 0: leave both as they are")
    parser.add_argument("--profile-seconds", type=float, default=2.0, help="cProfile time per batch size (0: none)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    concurrencies = sorted({int(c) for c in args.concurrency.split(",") if c.strip()})
    cases = [c for c in "abcde" if c in args.cases]
    started_at = datetime.now(UTC)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    machine = report.machine()
    print(f"bench: {machine['cpu_count']} cores ({machine['cpu_model']}), load {_load()}, "
          f"BLAS {', '.join(p.get('internal_api', '?') + ' x' + str(p.get('num_threads')) for p in machine['blas'])}")

    models = train_or_reuse(args.data)
    production, seed = models.production.model, models.seed.model
    production.prepare()
    pixels = models.payload_pixels[: args.payloads]
    labels = models.payload_labels[: args.payloads]
    n_sv = models.production.n_support_vectors
    print(f"bench: serving {models.production.recipe} ({n_sv:,} support vectors); reference: {models.seed.recipe}'s "
          f"scikit-learn predict; {len(labels):,} held-out digits as {args.payload} payloads; "
          f"{len(cases)} cases x {len(concurrencies)} concurrencies x {args.duration:g}s", flush=True)

    cells: list[Cell] = []
    profiles: dict[str, Any] = {}
    limits = contextlib.nullcontext() if not args.blas_threads else threadpool_limits(args.blas_threads)
    extra_env = {"DIGITS_BLAS_THREADS": str(args.blas_threads)} if args.blas_threads else {}
    with limits, running_stack(production, models.dataset, args.replicas, extra_env) as stack:
        print(f"bench: stack up in {stack.run_dir} (model {stack.version}); load {_load()}", flush=True)
        blas_in_run = _blas_threads()
        in_process: dict[str, Callable[[np.ndarray[Any, Any]], object]] = {
            "a": seed.estimator.predict, "b": production.predict}
        for case in (c for c in cases if c in in_process):
            for concurrency in concurrencies:
                cells.append(_show(load.run_in_process(case, in_process[case], pixels, labels, concurrency,
                                                       args.duration, args.warmup)))
        network = [c for c in cases if c in "cde"]
        if network:
            cells += load.run_cells(_network(stack, network, args.payload, pixels, labels, concurrencies,
                                             args.duration, args.warmup))
        top = find(cells, "d", max(concurrencies))
        if top is not None and args.open_loop:
            rate = report.OPEN_LOOP_SHARE * top.throughput
            cells += load.run_cells(_open_loop(stack, args.payload, pixels, labels, rate, args.duration, args.warmup))
        memory = stack.inference_memory()
        if args.profile_seconds > 0:
            profiles = _profile(models, pixels, concurrencies, args.profile_seconds)

    rss = max((m["VmRSS"] for m in memory.values()), default=0)
    features = int(production.describe().get("n_features", N_PIXELS))
    goals = report.targets(cells, rss, n_sv, features)
    print()
    print(report.text_table(cells))
    print()
    print("Inference memory: " + ", ".join(
        f"{name} VmRSS {m['VmRSS'] / report.MB:.0f} MB (peak {m['VmHWM'] / report.MB:.0f} MB)"
        for name, m in memory.items()))
    other = [c.other_cores for c in cells if c.seconds > 0]
    busy = sum(other) / len(other) if other else 0.0
    if busy > 0.25:
        print(f"Note: other processes kept {busy:.2f} of {machine['cpu_count']} cores busy on average during the "
              "windows (column 'other cores'): the figures include that contention.")
    print("Targets (same run):")
    for goal in goals:
        print("  " + goal.line())

    record = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": [sys.executable, "-m", "bench", *(argv if argv is not None else sys.argv[1:])],
        "options": vars(args),
        "machine": machine | {"load_average_at_end": list(os.getloadavg())},
        "models": {trained.recipe: {"fit_seconds": trained.fit_seconds, "reused_cached_fit": trained.cached,
                                    "describe": trained.model.describe()}
                   for trained in (models.production, models.seed)},
        "dataset": models.dataset, "train_size": models.train_size,
        "blas_threads_in_run": blas_in_run,
        "stack": {"replicas": args.replicas, "batch_max_size": Settings().batch_max_size,
                  "batch_max_wait_ms": Settings().batch_max_wait_ms,
                  "gateway_batches_in_flight": Settings().gateway_batches_in_flight},
        "definitions": DEFINITIONS,
        "cells": [c.summary() | {"label": report.CASES[c.case]} for c in cells],
        "targets": [g.record() for g in goals],
        "inference_memory": memory,
        "other_cores_mean": busy,
        "profile": profiles,
        "table_markdown": report.markdown_table(cells),
    }
    best_a = best_throughput(cells, "a")
    title = (f"Digits bench {stamp}: {models.production.recipe} with {n_sv:,} SVs ({models.dataset['source']}), "
             f"{machine['cpu_count']} cores, load at start {machine['load_average_at_start'][0]:.1f}")
    json_path, png_path = report.write(record, cells, stamp, title, [("10 x (a) best", 10 * best_a)])
    print(f"\nbench: wrote {json_path} and {png_path} (copied to latest.json / latest.png)")
    print("bench: for throughput and p99 against 1, 2 and 3 replicas (and trainer workers): make bench-scaling")
    return 0


def _blas_threads() -> list[dict[str, Any]]:
    from threadpoolctl import threadpool_info

    return [{"internal_api": p.get("internal_api"), "num_threads": p.get("num_threads")} for p in threadpool_info()]


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _show(cell: Cell) -> Cell:
    load_label = f"{cell.rate:.0f}/s" if cell.open_loop else f"C={cell.concurrency:<3}"
    print(f"  {report.CASES[cell.case]:<34} {load_label:<6} p50 {cell.p50_ms:8.2f} ms  "
          f"p99 {cell.p99_ms:8.2f} ms  {cell.throughput:8.0f}/s  errors {cell.errors}  "
          f"other load {cell.other_cores:.2f} cores", flush=True)
    return cell


async def _network(stack: RunningStack, cases: Sequence[str], payload: str, pixels: np.ndarray[Any, Any],
                   labels: np.ndarray[Any, Any], concurrencies: Sequence[int], duration: float,
                   warmup: float) -> list[Cell]:
    cells: list[Cell] = []
    pids = stack.serving_pids()
    requests = grpc_requests(pixels, payload)
    bodies = http_requests(pixels, payload)
    for case in cases:
        for concurrency in concurrencies:
            if case == "e":
                async with http_sender(stack.gateway_http, bodies, concurrency) as send:
                    cell = await load.run_closed_loop(case, send, labels, pids, concurrency, duration, warmup)
            else:
                target = stack.inference if case == "c" else stack.gateway_grpc
                async with grpc_sender(target, requests) as send:
                    cell = await load.run_closed_loop(case, send, labels, pids, concurrency, duration, warmup)
            cells.append(_show(cell))
    return cells


async def _open_loop(stack: RunningStack, payload: str, pixels: np.ndarray[Any, Any], labels: np.ndarray[Any, Any],
                     rate: float, duration: float, warmup: float) -> list[Cell]:
    async with grpc_sender(stack.gateway_grpc, grpc_requests(pixels, payload)) as send:
        return [_show(await load.run_open_loop("o", send, labels, stack.serving_pids(), rate, duration, warmup))]


def _profile(models: BenchModels, pixels: np.ndarray[Any, Any], concurrencies: Sequence[int],
             seconds: float) -> dict[str, Any]:
    """cProfile and per-stage timings of the production model in-process at the smallest and largest batch."""
    model = models.production.model
    found: dict[str, Any] = {"input_decoding_ms": profile.inputs(pixels[0], png(pixels[0]), seconds=seconds / 4)}
    for size in sorted({concurrencies[0], concurrencies[-1]}):
        rows = np.ascontiguousarray(pixels[:size])
        found[f"fast_stages_ms_batch_{size}"] = profile.stages(model, rows, seconds=seconds / 4)
        found[f"fast_cprofile_batch_{size}"] = profile.cprofile(model.predict, rows, seconds)
    found["sklearn_cprofile_batch_1"] = profile.cprofile(models.seed.model.estimator.predict,
                                                         np.ascontiguousarray(pixels[:1]), seconds)
    requests = grpc_requests(pixels)
    for concurrency in sorted({concurrencies[0], concurrencies[-1]}):
        found[f"inference_loop_cprofile_c{concurrency}"] = _run_async_text(
            profile.inference_event_loop(model, requests, concurrency, seconds))
    return found


def _run_async_text(coroutine: Any) -> str:
    try:
        import uvloop
    except ImportError:
        return str(asyncio.run(coroutine))
    return str(uvloop.run(coroutine))


if __name__ == "__main__":
    started = time.perf_counter()
    code = main()
    print(f"bench: done in {time.perf_counter() - started:.0f}s")
    sys.exit(code)
