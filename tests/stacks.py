"""Real stacks for tests: redis-server, inference replicas, the gateway and a trainer as subprocesses on free
ports, started exactly as `make up` starts them (digits.stack), with a first model trained on the sample."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from digits.client import RetrainOptions
from digits.stack.local import LocalStack

ADMIN_TOKEN = "test-admin-token"
# The stack's first model: the production recipe on 4,000 of the sample's 5,000 digits, so that 1,000 stay unseen
# for the tests (tests/integration/digits_data.py), even after the final fit on everything the job kept.
FIRST_MODEL: RetrainOptions = {"limit": 4000, "seed": 0}


@contextlib.contextmanager
def running_stack(run_dir: Path, *, first_model: bool = True, **extra_env: str) -> Iterator[LocalStack]:
    """A stack on free ports; with ``first_model`` (the default) a model trained on the sample (FIRST_MODEL) and
    served."""
    stack = LocalStack.isolated(run_dir, admin_token=ADMIN_TOKEN, **extra_env)
    assert stack.start()
    groups: dict[str, int] = {}
    try:
        stack.wait_until_up(timeout=90)
        if first_model:
            job = stack.retrain(**FIRST_MODEL)
            assert job.status == "finished", job.error
            stack.wait_until_serving(timeout=60)
        yield stack
    finally:
        with contextlib.suppress(OSError, ValueError):
            groups = running_process_groups(run_dir)
        stack.stop()
    assert_nothing_left(groups)


def redis_version(stack: LocalStack) -> str:
    """The version of the redis-server a stack runs, as it reports itself (the access-control and persistence
    tests say which one they ran against)."""
    return str(stack.redis_client().info("server")["redis_version"])


def running_process_groups(run_dir: Path) -> dict[str, int]:
    state = json.loads((run_dir / "processes.json").read_text())
    return {name: entry["pid"] for name, entry in state.items() if entry["pid"]}


def children(pid: int) -> list[int]:
    """Direct children of ``pid``, read from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
            state_and_ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(state_and_ppid[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def assert_nothing_left(groups: dict[str, int]) -> None:
    """`make down` must leave no process behind: each service's whole process group is gone."""
    leftovers = [name for name, pid in groups.items() if _group_alive(pid)]
    assert not leftovers, f"still running after stop: {leftovers}"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
