"""One real stack for the integration tests: redis-server, two inference replicas, the gateway and a
trainer worker as subprocesses on free ports, started exactly as `make up` starts them (digits.stack).
Tests talk to it over gRPC and HTTP, as a client would.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from digits.stack.local import LocalStack
from digits.v1 import models_pb2_grpc, recognizer_pb2_grpc, training_pb2_grpc
from tests.ports import free_ports

ADMIN_TOKEN = "integration-admin-token"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    redis_port, grpc_port, http_port, inference_port, _ = free_ports(5)
    run_dir = tmp_path_factory.mktemp("stack")
    env = {
        **os.environ,
        "DIGITS_STACK": "local",
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "GATEWAY_GRPC_PORT": str(grpc_port),
        "GATEWAY_HTTP_PORT": str(http_port),
        "INFERENCE_PORT": str(inference_port),  # replicas take inference_port and inference_port + 1
        "DIGITS_DATA": "sample",
        "DIGITS_ADMIN_TOKEN": ADMIN_TOKEN,
        "DIGITS_REGISTRY_KEY": "integration-registry-key",
        "DIGITS_MODEL_POLL_SECONDS": "0.5",
        "DIGITS_CACHE_DIR": str(run_dir / "cache"),
    }
    local = LocalStack.from_environment(run_dir, env)
    assert local.start()
    try:
        local.wait_until_up(timeout=90)
        job = local.train_first_model()
        assert job.status == "finished", job.error
        local.wait_until_serving(timeout=60)
        yield local
    finally:
        groups = running_process_groups(run_dir)
        local.stop()
    assert_nothing_left(groups)


def running_process_groups(run_dir: Path) -> dict[str, int]:
    state = json.loads((run_dir / "processes.json").read_text())
    return {name: entry["pid"] for name, entry in state.items() if entry["pid"]}


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


@pytest.fixture(scope="session")
def channel(stack: LocalStack) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(stack.ports.gateway) as ch:
        yield ch


@pytest.fixture(scope="session")
def recognizer(channel: grpc.Channel) -> recognizer_pb2_grpc.RecognizerStub:
    return recognizer_pb2_grpc.RecognizerStub(channel)


@pytest.fixture(scope="session")
def models(channel: grpc.Channel) -> models_pb2_grpc.ModelsStub:
    return models_pb2_grpc.ModelsStub(channel)


@pytest.fixture(scope="session")
def training(channel: grpc.Channel) -> training_pb2_grpc.TrainingStub:
    return training_pb2_grpc.TrainingStub(channel)


@pytest.fixture(scope="session")
def admin() -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {ADMIN_TOKEN}"),)
