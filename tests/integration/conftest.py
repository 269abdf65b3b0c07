"""One real stack for the integration tests: redis-server, two inference replicas, the gateway and a
trainer worker as subprocesses on free ports, started exactly as `make up` starts them (digits.stack).
Tests talk to it over gRPC and HTTP, as a client would.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from digits.stack.local import LocalStack
from digits.v1 import models_pb2_grpc, recognizer_pb2_grpc, training_pb2_grpc
from tests.stacks import ADMIN_TOKEN, running_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack(tmp_path_factory.mktemp("stack")) as local:
        yield local


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
