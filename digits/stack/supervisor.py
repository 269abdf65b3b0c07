"""Keeps a set of local processes running: starts them in order, restarts any that dies, and on
SIGTERM stops them in reverse order (each gets its grace period, then SIGKILL) and exits.

Each process runs in its own process group, so stopping it also stops whatever it forked
(an RQ worker's work horse, for one): nothing is left behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

RESTART_BACKOFF_SECONDS = (0.5, 1.0, 2.0, 5.0)


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    stop_grace_seconds: float = 15.0


class Child:
    def __init__(self, spec: ProcessSpec, run_dir: Path, cwd: Path) -> None:
        self.spec = spec
        self._log_path = run_dir / "logs" / f"{spec.name}.log"
        self._pid_path = run_dir / "pids" / f"{spec.name}.pid"
        self._cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._next_start = 0.0

    def start(self) -> None:
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        self._pid_path.parent.mkdir(parents=True, exist_ok=True)
        with self._log_path.open("ab") as out:
            self.process = subprocess.Popen(
                list(self.spec.argv), env=dict(self.spec.env), cwd=self._cwd, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        self._pid_path.write_text(str(self.process.pid))
        log.info("started %s (pid %d)", self.spec.name, self.process.pid)

    def restart_if_dead(self) -> None:
        if self.process is None or self.process.poll() is None:
            return
        now = time.monotonic()
        if self._next_start == 0.0:
            delay = RESTART_BACKOFF_SECONDS[min(self.restarts, len(RESTART_BACKOFF_SECONDS) - 1)]
            log.warning("%s exited with %s; restarting in %.1fs", self.spec.name, self.process.returncode, delay)
            self._next_start = now + delay
        elif now >= self._next_start:
            self._next_start = 0.0
            self.restarts += 1
            self.start()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        _signal_group(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(self.spec.stop_grace_seconds)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0fs; killing it", self.spec.name, self.spec.stop_grace_seconds)
        _signal_group(self.process.pid, signal.SIGKILL)  # and anything it forked
        self.process.wait()
        self._pid_path.unlink(missing_ok=True)
        log.info("stopped %s", self.spec.name)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class Supervisor:
    def __init__(self, specs: Sequence[ProcessSpec], run_dir: Path, cwd: Path) -> None:
        self.children = [Child(spec, run_dir, cwd) for spec in specs]
        self._run_dir = run_dir
        self._stopping = False
        self._last_state = ""

    def run(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._request_stop)
        for child in self.children:
            if not self._stopping:
                child.start()
        self._write_state()
        while not self._stopping:
            for child in self.children:
                child.restart_if_dead()
            self._write_state()
            time.sleep(0.2)
        for child in reversed(self.children):
            child.stop()
        (self._run_dir / "processes.json").unlink(missing_ok=True)

    def _request_stop(self, signum: int, frame: object) -> None:
        self._stopping = True

    def _write_state(self) -> None:
        state = {
            c.spec.name: {"pid": c.process.pid if c.process else None, "restarts": c.restarts,
                          "running": c.process is not None and c.process.poll() is None}
            for c in self.children
        }
        text = json.dumps(state, indent=1)
        if text == self._last_state:
            return
        self._last_state = text
        path = self._run_dir / "processes.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(text)
        temporary.replace(path)
