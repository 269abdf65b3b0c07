"""digits.stack.supervisor: the state file it keeps, and the restart of a process that died (after its back-off)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from digits.stack import supervisor
from digits.stack.supervisor import Child, ProcessSpec, Supervisor


def test_the_state_file_lists_every_process_and_is_rewritten_only_on_change(tmp_path: Path) -> None:
    specs = [ProcessSpec("redis", ["redis-server"], {}), ProcessSpec("gateway", ["python"], {})]
    watched = Supervisor(specs, tmp_path, tmp_path)
    watched._write_state()
    path = tmp_path / "processes.json"
    assert json.loads(path.read_text()) == {name: {"pid": None, "restarts": 0, "running": False}
                                            for name in ("redis", "gateway")}
    path.write_text("changed by someone else")
    watched._write_state()  # nothing changed since the last write: the file is left alone
    assert path.read_text() == "changed by someone else"
    watched.children[1].restarts = 1
    watched._write_state()
    assert json.loads(path.read_text())["gateway"]["restarts"] == 1


def test_a_process_never_started_is_neither_restarted_nor_stopped(tmp_path: Path) -> None:
    child = Child(ProcessSpec("idle", ["true"], {}), tmp_path, tmp_path)
    child.restart_if_dead()
    child.stop()
    assert child.process is None and child.restarts == 0


def test_a_dead_process_is_restarted_after_its_back_off_with_its_output_appended(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "RESTART_BACKOFF_SECONDS", (0.0,))
    child = Child(ProcessSpec("once", [sys.executable, "-c", "print('ran')"], {}), tmp_path, tmp_path)
    child.start()
    assert child.process is not None
    first = child.process
    assert (tmp_path / "pids" / "once.pid").read_text() == str(first.pid)
    first.wait(30)
    child.restart_if_dead()  # noticed: the restart is scheduled, not done at once
    assert child.process is first and child.restarts == 0
    child.restart_if_dead()  # the back-off has passed
    assert child.process is not first and child.restarts == 1
    child.process.wait(30)
    assert (tmp_path / "logs" / "once.log").read_text() == "ran\nran\n"


def test_stopping_ends_the_process_and_removes_its_pid_file(tmp_path: Path) -> None:
    child = Child(ProcessSpec("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], {},
                              stop_grace_seconds=10), tmp_path, tmp_path)
    child.start()
    assert child.process is not None
    child.stop()
    assert child.process.returncode is not None and not (tmp_path / "pids" / "sleeper.pid").exists()
