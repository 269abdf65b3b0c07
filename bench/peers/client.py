"""The one client of ``python -m bench.peers``, run in .venv-peers: tritonclient's asyncio clients over the Open
Inference Protocol, driving every target in turn with bench.load's closed and open loops.

    python -m bench.peers.client PLAN.json RESULTS.json

The plan names the targets (gRPC and REST addresses, the output that holds the answer, the server processes), the
payloads (``pixels`` UINT8 [1,784] each, and their labels, as .npy), the concurrencies, the window and the open
loop's share. Every window reads the CPU of each server's whole process tree (MLServer's workers, Triton's
backend stubs) and of this process before and after.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import load
from bench.peers.table import PeerCell, open_loop_rate

MODEL = "digits"
# tritonclient's REST client posts its JSON as application/octet-stream; MLServer answers that with 422.
JSON = {"Content-Type": "application/json"}


def process_tree(roots: Sequence[int]) -> list[int]:
    """``roots`` and every process descended from them, now (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


@contextlib.asynccontextmanager
async def sender(target: dict[str, Any], protocol: str, pixels: np.ndarray, concurrency: int
                 ) -> AsyncIterator[load.Send]:
    """``send(index)``: one inference of payload ``index``; the answer's first label, or None on any error."""
    if protocol == "grpc":
        import tritonclient.grpc.aio as client_module
    else:
        import tritonclient.http.aio as client_module
    rest = protocol == "rest"
    output = target["output"]
    inputs = []
    for row in pixels:  # built before the clock starts, as bench.stack builds its requests
        tensor = client_module.InferInput("pixels", [1, row.size], "UINT8")
        if rest:  # JSON: MLServer does not read the binary tensor extension
            tensor.set_data_from_numpy(row.reshape(1, -1), binary_data=False)
        else:
            tensor.set_data_from_numpy(row.reshape(1, -1))
        inputs.append([tensor])
    wanted = [client_module.InferRequestedOutput(name, binary_data=False) if rest
              else client_module.InferRequestedOutput(name) for name in target["outputs"]]
    url = target[protocol]
    client = (client_module.InferenceServerClient(url, conn_limit=max(concurrency, 1)) if rest
              else client_module.InferenceServerClient(url))
    try:
        async def call(index: int) -> int:
            if rest:
                result = await client.infer(MODEL, inputs[index], outputs=wanted, timeout=30, headers=JSON)
            else:
                result = await client.infer(MODEL, inputs[index], outputs=wanted, client_timeout=30)
            return int(result.as_numpy(output).reshape(-1)[0])

        async def send(index: int) -> int | None:
            try:
                return await call(index)
            except Exception:  # every failure is an error of the window, whatever raised it
                return None

        try:
            await call(0)
        except Exception as error:
            raise RuntimeError(f"{target['name']} over {protocol} at {url} does not answer: {error!r}") from error
        yield send
    finally:
        await client.close()


async def measure(plan: dict[str, Any]) -> list[PeerCell]:
    pixels = np.load(plan["pixels"])
    labels = np.load(plan["labels"])
    duration, warmup = float(plan["duration"]), float(plan["warmup"])
    cells: list[PeerCell] = []

    def show(cell: PeerCell) -> PeerCell:
        c = cell.cell
        print(f"  {cell.target:<18} {cell.protocol:<4} {cell.load:<11} p50 {c.p50_ms:8.2f} ms  p99 {c.p99_ms:8.2f} ms"
              f"  {c.throughput:7.0f}/s  CPU {cell.cpu_ms_per_prediction:6.2f} ms/pred  errors {c.errors}"
              f"  other {c.other_cores:.2f} cores", flush=True)
        return cell

    for protocol in plan["protocols"]:
        for concurrency in plan["concurrency"]:
            for target in plan["targets"]:
                pids = process_tree(target["pids"])
                try:
                    async with sender(target, protocol, pixels, concurrency) as send:
                        cell = await load.run_closed_loop(target["name"], send, labels, pids, concurrency,
                                                          duration, warmup)
                except RuntimeError as error:  # a target that stopped answering costs its cells, not the run
                    print(f"  {target['name']:<18} {protocol:<4} C={concurrency:<9} {error}", flush=True)
                    continue
                cells.append(show(PeerCell(target["name"], protocol, cell)))
    rate = open_loop_rate(cells, plan["open_loop_share"]) if plan["open_loop_share"] > 0 else math.nan
    if math.isfinite(rate):
        for target in plan["targets"]:
            pids = process_tree(target["pids"])
            try:
                async with sender(target, "grpc", pixels, 64) as send:
                    cell = await load.run_open_loop(target["name"], send, labels, pids, rate, duration, warmup)
            except RuntimeError as error:
                print(f"  {target['name']:<18} grpc open loop: {error}", flush=True)
                continue
            cells.append(show(PeerCell(target["name"], "grpc", cell)))
    return cells


def main(plan_path: str, results_path: str) -> None:
    plan = json.loads(Path(plan_path).read_text())
    cells = load.run_cells(measure(plan))
    Path(results_path).write_text(json.dumps([c.record() for c in cells]))


if __name__ == "__main__":
    main(*sys.argv[1:])
