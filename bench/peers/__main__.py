"""``python -m bench.peers`` (``make bench-peers``): Digits against the servers people would pick instead.

    python -m bench.peers [--duration 10] [--concurrency 1,8,64] [--protocols grpc,rest] [--data SPEC]
                          [--peers mlserver-sklearn,mlserver-digits,triton] [--fit all|split]

One run fits (or reuses) the production model as a retrain job promotes it (``--fit all``: refitted on every digit of
the data, as on full MNIST; ``--fit split``: the split fit ``make bench`` serves), measures that model's CPU per
prediction in this process at batch 64 (the yardstick of the servers' CPU), starts Digits' stack serving it and every
peer serving the very same fitted model on free loopback ports, then drives them all with one Open Inference
client (tritonclient's asyncio clients, ``pixels`` UINT8 [1,784], in .venv-peers) at each concurrency over gRPC
and REST and in the open loop. It prints one table, each figure with its ratio to the best peer's, and writes
JSON and a plot under bench/results/ (``peers-latest``). The peers:

- ``mlserver-sklearn``: MLServer's scikit-learn runtime on the bare fitted pipeline saved with joblib, as a user
  deploys it; its SVC answers label 10 ("not a digit") where Digits answers a digit and a verdict;
- ``mlserver-digits``: MLServer with Digits' model code (``bench.peers.runtime``): the server without the arithmetic;
- ``triton``: NVIDIA Triton through pytriton binding the same ``model.predict`` (in .venv-peers-triton);
- ``kserve``: KServe's ``ModelServer`` with the same ``model.predict``, measured in Triton's place if Triton does
  not start here.

MLServer and Triton batch adaptively (64 requests or 2 ms), as Digits' inference does; every server gets one BLAS
thread, as Digits' replicas do.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from threadpoolctl import threadpool_limits

from bench import load, report
from bench.model import REPO, served_after_a_full_retrain, train_or_reuse
from bench.peers import table
from bench.peers.table import DIGITS, PeerCell
from bench.stack import running_stack
from bench.writers import write_run
from digits.settings import process_environment

PEERS_VENV = REPO / ".venv-peers"
TRITON_VENV = REPO / ".venv-peers-triton"
LABELS = {DIGITS: "Digits gateway", "mlserver-sklearn": "MLServer, scikit-learn runtime",
          "mlserver-digits": "MLServer, Digits' model code", "triton": "Triton (pytriton)",
          "kserve": "KServe ModelServer"}
OUTPUTS = {"mlserver-sklearn": ("predict", ["predict"])}  # the answer's output, and the outputs asked for
DEFAULT_OUTPUTS = ("digit", ["digit", "probabilities"])  # what Digits and the peers on its model code answer
OPEN_LOOP_SHARE = 0.5
START_SECONDS = 180.0
# One BLAS thread a server, as Digits' inference replicas have (DIGITS_BLAS_THREADS defaults to 1 there).
ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
YARDSTICK_BATCH = 64
YARDSTICK_SECONDS = 3.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    load.add_window_options(parser, concurrency="1,8,64")
    parser.add_argument("--protocols", default="grpc,rest", help="grpc, rest or both (the open loop is gRPC)")
    parser.add_argument("--peers", default="mlserver-sklearn,mlserver-digits,triton",
                        help="which of mlserver-sklearn, mlserver-digits, triton, kserve to measure")
    parser.add_argument("--fit", choices=("all", "split"), default="all",
                        help="serve the production recipe refitted on every digit (as a retrain job promotes it), "
                             "or its fit on the split's training share")
    parser.add_argument("--no-open-loop", dest="open_loop", action="store_false",
                        help="skip the open loop (every target at half the slowest target's best gRPC throughput)")
    return parser


@dataclass
class Server:
    """A peer's process (its own session, so that its children stop with it), its addresses and its log."""

    name: str
    grpc: str
    http: str
    log: Path
    process: subprocess.Popen[bytes] | None = None
    error: str = ""
    notes: list[str] = field(default_factory=list)

    def target(self) -> dict[str, Any]:
        output, outputs = OUTPUTS.get(self.name, DEFAULT_OUTPUTS)
        pids = [self.process.pid] if self.process else []
        return {"name": self.name, "grpc": self.grpc, "rest": self.http, "output": output, "outputs": outputs,
                "pids": pids}

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in process_environment().items() if not k.startswith(("DIGITS_", "PYTHON"))}
    return env | ONE_THREAD | {"PYTHONPATH": str(REPO)} | extra


def _mlserver(name: str, folder: Path, implementation: str, model_file: Path) -> Server:
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    home = folder / name
    (home / "digits").mkdir(parents=True)
    (home / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port,
        "parallel_workers": 1}))
    (home / "digits" / "model-settings.json").write_text(json.dumps({
        "name": "digits", "implementation": implementation, "parameters": {"uri": str(model_file)},
        "max_batch_size": 64, "max_batch_time": 0.002}))
    server = Server(name, f"127.0.0.1:{grpc_port}", f"127.0.0.1:{http_port}", folder / f"{name}.log")
    command = [str(PEERS_VENV / "bin" / "mlserver"), "start", str(home)]
    server.process = _spawn(command, server.log, _environment(), cwd=home)
    return server


def _python_peer(name: str, folder: Path, model_file: Path) -> Server:
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    server = Server(name, f"127.0.0.1:{grpc_port}", f"127.0.0.1:{http_port}", folder / f"{name}.log")
    if name == "triton":
        python = TRITON_VENV / "bin" / "python"
        # The backend stub links the system's libpython3.11, which must match the interpreter's standard library.
        libdir = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
                                capture_output=True, text=True, check=True).stdout.strip()
        inherited = process_environment().get("LD_LIBRARY_PATH")
        env = _environment(LD_LIBRARY_PATH=":".join(p for p in (libdir, inherited) if p))
        server.notes.append(f"LD_LIBRARY_PATH={libdir}")
        args = [str(grpc_port), str(http_port), str(metrics_port)]
    else:
        python, env, args = PEERS_VENV / "bin" / "python", _environment(), [str(grpc_port), str(http_port)]
    server.process = _spawn([str(python), "-m", "bench.peers.serve", name, str(model_file), *args], server.log, env,
                            cwd=folder)
    return server


def _spawn(command: Sequence[str], log: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)


def wait_ready(servers: Sequence[Server], timeout: float = START_SECONDS) -> None:
    """Until every server's REST readiness answers 200; a server that exits or never gets there keeps its error."""
    waiting = {s.name: s for s in servers}
    until = time.monotonic() + timeout
    while waiting and time.monotonic() < until:
        for name, server in list(waiting.items()):
            if server.process is None or server.process.poll() is not None:
                server.error = f"exited with {server.process and server.process.returncode}: {_tail(server.log)}"
                del waiting[name]
            elif _ready(server.http):
                del waiting[name]
        time.sleep(0.5)
    for server in waiting.values():
        server.error = f"not ready after {timeout:.0f}s: {_tail(server.log)}"
        server.stop()


def _ready(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}/v2/models/digits/ready", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _tail(log: Path, lines: int = 12) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return "\n".join(text.strip().splitlines()[-lines:])


@contextmanager
def peers(names: Sequence[str], folder: Path, digit_model: Path, pipeline: Path) -> Iterator[list[Server]]:
    """Start the peers, wait until they serve, stop them after; Triton's place goes to KServe if it fails."""
    servers: list[Server] = []
    try:
        for name in names:
            if name == "mlserver-sklearn":
                servers.append(_mlserver(name, folder, "mlserver_sklearn.SKLearnModel", pipeline))
            elif name == "mlserver-digits":
                servers.append(_mlserver(name, folder, "bench.peers.runtime.DigitsRuntime", digit_model))
            else:
                servers.append(_python_peer(name, folder, digit_model))
        wait_ready(servers)
        failed = [s for s in servers if s.error]
        if any(s.name == "triton" for s in failed) and "kserve" not in names:
            print("bench.peers: Triton did not start; measuring KServe's ModelServer in its place", flush=True)
            fallback = _python_peer("kserve", folder, digit_model)
            servers.append(fallback)
            wait_ready([fallback])
        yield servers
    finally:
        for server in servers:
            server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = [n.strip() for n in args.peers.split(",") if n.strip()]
    unknown = sorted(set(names) - set(LABELS) - {DIGITS})
    if unknown:
        raise SystemExit(f"bench.peers: unknown peers {unknown}; choose from {sorted(set(LABELS) - {DIGITS})}")
    for venv in (PEERS_VENV, *([TRITON_VENV] if "triton" in names else [])):
        if not (venv / "bin" / "python").exists():
            raise SystemExit(f"bench.peers: {venv} is missing: `make bench-peers` builds it from its lock")
    concurrencies = sorted({int(c) for c in args.concurrency.split(",") if c.strip()})
    protocols = [p for p in ("grpc", "rest") if p in args.protocols.split(",")]
    started_at = datetime.now(UTC)
    stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
    machine = report.machine()
    print(f"bench.peers: {machine['cpu_count']} cores ({machine['cpu_model']}), load "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)

    models = train_or_reuse(args.data)
    served = served_after_a_full_retrain(args.data) if args.fit == "all" else models.production
    production = served.model
    production.prepare()  # the fast path, as Digits serves it (it is derived state: never pickled)
    yardstick = in_process_cpu_ms(production, models.payload_pixels)
    print(f"bench.peers: serving {served.recipe} ({served.n_support_vectors:,} support vectors, fitted on "
          f"{'every digit' if args.fit == 'all' else 'the split'}) from Digits and {', '.join(names)}; in this process "
          f"it costs {yardstick:.3f} ms of CPU a prediction at batch {YARDSTICK_BATCH}; {len(protocols)} protocols x "
          f"{len(concurrencies)} concurrencies x {args.duration:g}s per target", flush=True)
    with tempfile.TemporaryDirectory(prefix="digits-peers-") as scratch, ExitStack() as stack:
        folder = Path(scratch)
        digit_model, pipeline = folder / "digit-model.joblib", folder / "model.joblib"
        joblib.dump(production, digit_model)  # the DigitModel, as Digits stores it (its fast path rebuilt on load)
        joblib.dump(production.estimator, pipeline)  # the bare scikit-learn pipeline, as a user would save it
        np.save(folder / "pixels.npy", models.payload_pixels[: args.payloads].astype(np.uint8))
        np.save(folder / "labels.npy", models.payload_labels[: args.payloads])

        servers = stack.enter_context(peers(names, folder, digit_model, pipeline))
        running = stack.enter_context(running_stack(production, models.dataset, replicas=1))
        digits = {"name": DIGITS, "grpc": running.gateway_grpc, "rest": f"127.0.0.1:{running.stack.ports.gateway_http}",
                  "output": DEFAULT_OUTPUTS[0], "outputs": DEFAULT_OUTPUTS[1], "pids": running.serving_pids()}
        serving = [s for s in servers if not s.error]
        for server in servers:
            if server.error:
                print(f"bench.peers: {server.name} did not run: {server.error}", flush=True)
        plan = {"targets": [digits, *(s.target() for s in serving)], "pixels": str(folder / "pixels.npy"),
                "labels": str(folder / "labels.npy"), "concurrency": concurrencies, "protocols": protocols,
                "duration": args.duration, "warmup": args.warmup,
                "open_loop_share": OPEN_LOOP_SHARE if args.open_loop else 0.0}
        (folder / "plan.json").write_text(json.dumps(plan))
        print(f"bench.peers: all up; measuring {len(plan['targets'])} targets", flush=True)
        subprocess.run([str(PEERS_VENV / "bin" / "python"), "-m", "bench.peers.client", str(folder / "plan.json"),
                        str(folder / "cells.json")], env=_environment(), cwd=REPO, check=True)
        cells = [PeerCell.from_record(r) for r in json.loads((folder / "cells.json").read_text())]
        failures = {s.name: s.error for s in servers if s.error}

    order = [DIGITS, *names, "kserve"]
    cells = table.ordered(cells, order)
    print()
    print(table.text(cells, LABELS))
    other = [c.cell.other_cores for c in cells if c.cell.seconds > 0]
    busy = sum(other) / len(other) if other else 0.0
    print(f"\nRatios: to the best peer at the same protocol and load (lower is better but for pred/s). CPU ms/pred: "
          f"every server process and the client; server CPU: the servers alone. Other processes kept {busy:.2f} of "
          f"{machine['cpu_count']} cores busy on average.")
    busiest = [c for c in cells if c.target == DIGITS and c.protocol == "grpc" and not c.cell.open_loop]
    if busiest:
        top = max(busiest, key=lambda c: c.cell.concurrency)
        print(f"The model in-process: {yardstick:.3f} ms of CPU a prediction at batch {YARDSTICK_BATCH}; Digits' "
              f"servers at gRPC {top.load}: {top.serving_cpu_ms_per_prediction:.3f} ms "
              f"({top.serving_cpu_ms_per_prediction / yardstick:.1f}x).")
    record = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": [sys.executable, "-m", "bench.peers", *(argv if argv is not None else sys.argv[1:])],
        "options": vars(args), "machine": machine, "dataset": models.dataset, "recipe": served.recipe,
        "n_support_vectors": served.n_support_vectors,
        "in_process_cpu_ms_per_prediction": {"batch": YARDSTICK_BATCH, "ms": yardstick},
        "peers": {name: LABELS[name] for name in order if name in LABELS}, "failures": failures,
        "cells": [c.cell.summary() | {"target": c.target, "protocol": c.protocol, "load": c.load,
                                      "cpu_ms_per_prediction": c.cpu_ms_per_prediction,
                                      "serving_cpu_ms_per_prediction": c.serving_cpu_ms_per_prediction}
                  for c in cells],
        "other_cores_mean": busy, "table_markdown": table.markdown(cells, LABELS),
    }
    json_path, png_path = write_run(record, stamp, lambda path: _draw(cells, path), prefix="peers",
                                    latest="peers-latest")
    print(f"bench.peers: wrote {json_path} and {png_path}")
    return 1 if failures and not any(c.target != DIGITS for c in cells) else 0


def in_process_cpu_ms(model: Any, pixels: np.ndarray, batch: int = YARDSTICK_BATCH,
                      seconds: float = YARDSTICK_SECONDS) -> float:
    """CPU ms a prediction of ``model.answer`` on batches of ``batch`` rows in this thread, one BLAS thread, as an
    inference replica runs it: what the servers' CPU per prediction is measured against."""
    rows = np.ascontiguousarray(pixels[:batch], dtype=np.float32)
    with threadpool_limits(1):
        model.answer(rows)
        calls, started, until = 0, time.thread_time(), time.perf_counter() + seconds
        while time.perf_counter() < until or calls < 5:
            model.answer(rows)
            calls += 1
        return (time.thread_time() - started) / (calls * len(rows)) * 1000.0


def _draw(cells: Sequence[PeerCell], path: Path) -> None:
    """Throughput and p50 of every target at each closed-loop load, gRPC and REST side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    closed = [c for c in cells if not c.cell.open_loop]
    loads = sorted({(c.protocol, c.cell.concurrency) for c in closed}, key=lambda k: (k[0] != "grpc", k))
    targets = list(dict.fromkeys(c.target for c in closed))
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / max(len(targets), 1)
    for i, target in enumerate(targets):
        found = {(c.protocol, c.cell.concurrency): c for c in closed if c.target == target}
        xs = [j + i * width for j in range(len(loads))]
        axes[0].bar(xs, [found[k].throughput if k in found else 0 for k in loads], width, label=LABELS.get(target))
        axes[1].bar(xs, [found[k].p50_ms if k in found else 0 for k in loads], width, label=LABELS.get(target))
    for ax, title in zip(axes, ("predictions/s (higher is better)", "p50 ms (lower is better)"), strict=True):
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(loads))], [f"{p} C={c}" for p, c in loads])
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


if __name__ == "__main__":
    started = time.perf_counter()
    code = main()
    print(f"bench.peers: done in {time.perf_counter() - started:.0f}s")
    sys.exit(code)
