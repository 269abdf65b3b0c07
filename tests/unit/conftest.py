from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from digits.stack.local import free_ports, redis_server


@pytest.fixture
def redis_client(tmp_path: Path) -> Iterator[redis.Redis]:
    """A real, empty redis-server of its own (the one `make up` would use)."""
    (port,) = free_ports(1)
    server = subprocess.Popen(
        [redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield client
    client.close()
    server.terminate()
    server.wait(10)
