"""Each fault case gets a real stack of its own (faults leave marks), started like `make up` starts one."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from digits.stack.local import LocalStack
from digits.v1 import models_pb2_grpc
from tests.stacks import ADMIN_TOKEN, running_stack

ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack(tmp_path_factory.mktemp("faults"), DIGITS_SHUTDOWN_GRACE_SECONDS="5") as local:
        yield local


@pytest.fixture(scope="module")
def models(stack: LocalStack) -> Iterator[models_pb2_grpc.ModelsStub]:
    with grpc.insecure_channel(stack.ports.gateway) as channel:
        yield models_pb2_grpc.ModelsStub(channel)
