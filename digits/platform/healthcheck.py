"""``python -m digits.platform.healthcheck HOST:PORT [SERVICE]``: exit 0 when the gRPC health of SERVICE is SERVING.

Used by the Docker healthchecks and by the local stack; "" (the default) asks whether the server is alive.

``python -m digits.platform.healthcheck --worker``: exit 0 while this host's trainer worker is alive. The trainer has no
port; its RQ worker renews its registration in Redis (``rq:worker:<name>``, named ``trainer-<hostname>-<pid>``)
on every heartbeat and Redis expires it when the heartbeats stop: every few seconds while a job runs, at least
every 7 minutes while the worker waits for one. So the check is one set read and one EXISTS, as the trainer's own
Redis user. Redis out of reach passes: a restarted trainer would not bring Redis back (Redis has its own probes).
"""

from __future__ import annotations

import socket
import sys

import grpc
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc


def is_serving(address: str, service: str = "", timeout: float = 2.0) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


# How services/trainer names its worker (the check finds this host's by the prefix), its queue
# (digits.training.jobs.QUEUE) and RQ's keys for workers (rq.worker_registration): written out, since importing
# those would make every probe import RQ and scikit-learn (tests/unit/test_deploy.py checks that they agree).
WORKER_NAME_PREFIX = "trainer-{hostname}-"
QUEUE = "training"
RQ_WORKER_KEY_PREFIX = "rq:worker:"
RQ_WORKERS_BY_QUEUE_KEY = "rq:workers:%s"


def worker_alive(connection: redis.Redis, hostname: str) -> bool:
    """Whether an RQ worker of ``hostname`` on the training queue is registered and has not missed its heartbeats."""
    prefix = RQ_WORKER_KEY_PREFIX + WORKER_NAME_PREFIX.format(hostname=hostname)
    keys = [key for key in connection.smembers(RQ_WORKERS_BY_QUEUE_KEY % QUEUE)
            if (key.decode() if isinstance(key, bytes) else str(key)).startswith(prefix)]
    return any(connection.exists(key) for key in keys)


def check_worker() -> int:
    from digits.platform.redis_connection import connect
    from digits.settings import get_settings

    hostname = socket.gethostname()
    try:
        alive = worker_alive(connect(get_settings(), timeout=2.0), hostname)
    except (redis.ConnectionError, redis.TimeoutError) as error:
        print(f"Redis is out of reach ({error}): not judging the worker", file=sys.stderr)
        return 0
    if not alive:
        print(f"no live trainer worker of {hostname} is registered in Redis", file=sys.stderr)
    return 0 if alive else 1


def main(argv: list[str]) -> int:
    if argv == ["--worker"]:
        return check_worker()
    if not 1 <= len(argv) <= 2:
        print("usage: python -m digits.platform.healthcheck HOST:PORT [SERVICE] | --worker", file=sys.stderr)
        return 2
    address, service = argv[0], argv[1] if len(argv) == 2 else ""
    return 0 if is_serving(address, service) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
