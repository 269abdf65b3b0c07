"""The fault suite's real stack, started like `make up` starts one, and a way to add a differently
configured gateway in front of it."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator

import grpc
import pytest

from digits.stack.local import REPO, LocalStack, free_ports
from digits.v1 import models_pb2_grpc
from tests.stacks import ADMIN_TOKEN, running_stack

ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)


TRAINING_TOKEN = "test-training-token"


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """One stack for the whole fault suite: every case leaves it recovered for the next."""
    with running_stack(tmp_path_factory.mktemp("faults"), DIGITS_SHUTDOWN_GRACE_SECONDS="5",
                       DIGITS_TRAINING_TOKEN=TRAINING_TOKEN, DIGITS_REGISTRY_KEEP="3") as local:
        yield local


@pytest.fixture(scope="package")
def models(stack: LocalStack) -> Iterator[models_pb2_grpc.ModelsStub]:
    with grpc.insecure_channel(stack.ports.gateway) as channel:
        yield models_pb2_grpc.ModelsStub(channel)


@contextlib.contextmanager
def extra_process(stack: LocalStack, name: str, log_name: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """One more process of the stack's service ``name``, with ``env`` on top of its environment."""
    spec = next(p for p in stack.processes() if p.name == name)
    log = (stack.run_dir / "logs" / f"{log_name}.log").open("ab")
    process = subprocess.Popen(list(spec.argv), env={**spec.env, **env}, cwd=REPO, stdout=log, stderr=log)
    try:
        yield process
    finally:
        process.terminate()
        process.wait(30)
        log.close()


@contextlib.contextmanager
def extra_gateway(stack: LocalStack, **env: str) -> Iterator[tuple[int, int]]:
    """A second gateway on free ports in front of the same stack, configured differently; yields its ports."""
    grpc_port, http_port = free_ports(2)
    ports = {"GATEWAY_GRPC_PORT": str(grpc_port), "GATEWAY_HTTP_PORT": str(http_port)}
    with extra_process(stack, "gateway", f"gateway-extra-{grpc_port}", **ports, **env) as process:
        deadline = time.monotonic() + 30
        while not _listening(http_port):
            assert process.poll() is None, "the extra gateway exited"
            assert time.monotonic() < deadline, "the extra gateway did not start"
            time.sleep(0.1)
        yield grpc_port, http_port


@contextlib.contextmanager
def extra_replica(stack: LocalStack, **env: str) -> Iterator[int]:
    """One more inference replica of the same stack, started now, on a free port; yields its port."""
    port, metrics_port = free_ports(2)
    ports = {"INFERENCE_PORT": str(port), "DIGITS_METRICS_PORT": str(metrics_port)}
    with extra_process(stack, "inference-1", f"inference-extra-{port}", **ports, **env):
        yield port


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
