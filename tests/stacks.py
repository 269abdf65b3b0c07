"""Real stacks for tests: redis-server, inference replicas, the gateway and a trainer as subprocesses on free
ports, started exactly as `make up` starts them (digits.stack), with a first model trained on the sample."""

from __future__ import annotations

import contextlib
import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from digits.client import RetrainOptions
from digits.stack.local import METRICS_OFFSET, LocalStack

ADMIN_TOKEN = "test-admin-token"
# The stack's first model: the production recipe on 4,000 of the sample's 5,000 digits, so that 1,000 stay unseen
# for the tests (tests/integration/digits_data.py), even after the final fit on everything the job kept.
FIRST_MODEL: RetrainOptions = {"limit": 4000, "seed": 0}
# A metric family is named without the suffixes of its samples: digits_batch_rows holds digits_batch_rows_sum.
_SAMPLE_SUFFIXES = ("_total", "_sum", "_count", "_bucket")


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


def replica_metric(port: int, sample: str, **labels: str) -> float:
    """The sum of ``sample``'s values whose labels include ``labels``, on the inference replica whose gRPC port is
    ``port``, read from its own /metrics.

    The replica must declare the metric: one it does not expose (renamed, dropped, never registered) fails here
    instead of reading as zero, so that a test comparing figures cannot pass on two zeros. A labelled metric with no
    series for ``labels`` yet (a method never called, a failure that never happened) is declared all the same, and
    reads as zero.
    """
    with urllib.request.urlopen(f"http://127.0.0.1:{port + METRICS_OFFSET}/metrics", timeout=5) as response:
        families = list(text_string_to_metric_families(response.read().decode()))
    family = next((f for f in families if sample in {f.name, *(f.name + s for s in _SAMPLE_SUFFIXES)}), None)
    assert family is not None, f"the replica on port {port} exposes no metric {sample}"
    return sum(s.value for s in family.samples if s.name == sample and labels.items() <= s.labels.items())


def replicas_metric(stack: LocalStack, sample: str, **labels: str) -> float:
    """``replica_metric`` summed over the stack's inference replicas."""
    return sum(replica_metric(port, sample, **labels) for port in stack.ports.inference)


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
